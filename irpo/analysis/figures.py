"""Every figure the reports draw (matplotlib, no display needed), each returned as a Figure for
its caller to save or show:

    accuracy_figure, train_figure, logps_figure   a sweep's summary (accuracy.png, train.png,
                                                  logps.png): one line per configuration
    logp_figure                                   Figs. 2-3 in miniature (fig2_logps.png, fig3_logps.png)
    objectives_figure                             one panel per objective (objectives_logps.png)
    capacity_figure                               IRPO minus STaR by the width of M_0 (capacity.png)

Each line is named as the reports' tables name its arm (`irpo`, `dpo`, an M_0 by its name:
records.arm_names), and every legend is measured and placed inside the canvas.
"""

from __future__ import annotations

import math
import statistics
import textwrap

from irpo.analysis.claims import capacity
from irpo.analysis.records import METHOD_ORDER, arm_names, arm_title, arms, by_iteration, m0_label, starting_from
from irpo.analysis.results import Sweep, train_steps


def moving_average(values: list[float], window: int) -> list[float]:
    """The mean of each value and up to window - 1 values before it."""
    return [statistics.fmean(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]


def _figure(width: float, height: float):
    """A Figure with its own Agg canvas, so that text can be measured before it is saved."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def legend_below(fig, handles: list, labels: list[str], title: str | None, most_columns: int = 5) -> float:
    """One legend centred under the axes, in as many columns as the canvas's width holds, rows
    filled evenly (the canvas widens when even one column does not fit); returns the height it
    takes, as a fraction of the figure's."""
    renderer = fig.canvas.get_renderer()

    def place(ncol: int):
        return fig.legend(handles, labels, title=title, loc="lower center", fontsize="small", ncol=ncol, frameon=False)

    fits = 1
    for ncol in range(max(1, min(len(labels), most_columns)), 0, -1):
        legend = place(ncol)
        width = legend.get_window_extent(renderer).width
        legend.remove()
        if width <= 0.98 * fig.bbox.width:
            fits = ncol
            break
    rows = math.ceil(len(labels) / fits)
    legend = place(math.ceil(len(labels) / rows))
    width = legend.get_window_extent(renderer).width
    if width > 0.98 * fig.bbox.width:
        fig.set_figwidth(width / 0.98 / fig.dpi)
    return legend.get_window_extent(renderer).height / fig.bbox.height


def _finish(fig, legend_height: float, title: str):
    """The title, and room under the axes for the legend."""
    fig.suptitle(textwrap.fill(title, 90))
    fig.tight_layout(rect=(0, min(0.6, legend_height + 0.02), 1, 1))
    return fig


def _seeds(sweep: Sweep) -> str:
    return " (mean ± std over seeds)" if "seed" in sweep.swept else ""


def accuracy_figure(sweep: Sweep):
    """Test accuracy (greedy, and maj@k when evaluated) against iteration, per configuration."""
    maj = [m for m in sweep.metrics() if m.startswith("maj@")]
    return _iteration_figure(
        sweep,
        [("test_accuracy", "test accuracy (greedy)"), *[(m, f"test {m}") for m in maj]],
        f"{sweep.root.name}: test accuracy of M_t{_seeds(sweep)}",
    )


def train_figure(sweep: Sweep):
    """Train pass@N and the number of pairs per iteration, per configuration."""
    return _iteration_figure(
        sweep,
        [("train_pass_at_n", "train pass@N (a prompt has a correct sample)"), ("pairs", "pairs")],
        f"{sweep.root.name}: samples of M_t{_seeds(sweep)}",
    )


def _iteration_figure(sweep: Sweep, metrics: list[tuple[str, str]], title: str):
    fig = _figure(max(6.5, 5.5 * len(metrics)), 4.8)
    axes = fig.subplots(1, len(metrics), squeeze=False)
    names = arm_names(sweep)
    colors = {label: f"C{i % 10}" for i, label in enumerate(names)}  # one colour per configuration, in every panel
    for ax, (metric, ylabel) in zip(axes[0], metrics):
        for label, points in sweep.aggregate(metric).items():
            t, mean, std = [p[0] for p in points], [p[1] for p in points], [p[2] for p in points]
            ax.plot(t, mean, marker="o", label=names[label], color=colors[label])
            if any(std):
                ax.fill_between(
                    t,
                    [m - s for m, s in zip(mean, std)],
                    [m + s for m, s in zip(mean, std)],
                    color=colors[label],
                    alpha=0.2,
                )
        ax.set_xlabel("iteration t (M_t)")
        ax.set_ylabel(ylabel)
        ax.set_xticks(sorted({t for line in ax.lines for t in line.get_xdata()}))  # iterations only, however few
        ax.grid(alpha=0.3)
        if not ax.lines:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center")
    named = {
        label: handle for ax in axes[0] for handle, label in zip(*ax.get_legend_handles_labels())
    }  # any panel's lines
    handles, labels = list(named.values()), list(named)
    height = legend_below(fig, handles, labels, arm_title(sweep)) if labels else 0.0
    return _finish(fig, height, title)


def logps_figure(sweep: Sweep, window: int = 5):
    """Chosen and rejected log-probs while training, iterations end to end, one colour per
    configuration (each seed its own line): the paper's case for the NLL term, without
    which the winners' log-probs fall along with the losers'. Batch means are noisy, so
    each line is a moving average over `window` logged batches of one iteration."""
    from matplotlib.lines import Line2D

    title = f"{sweep.root.name}: log-probs of winners and losers while training"
    fig = _figure(10, 5.2)
    ax = fig.subplots()
    names = arm_names(sweep)
    configs, last = [], 0
    for i, (label, jobs) in enumerate(sweep.configurations().items()):
        color = f"C{i % 10}"
        for job in jobs:
            rows = [r for r in train_steps(job) if "train/chosen_logps" in r]
            for t in sorted({r["iteration"] for r in rows}):
                part = [r for r in rows if r["iteration"] == t]
                x = [r["progress"] for r in part]
                ax.plot(x, moving_average([r["train/chosen_logps"] for r in part], window), color=color, linewidth=1.5)
                if all("train/rejected_logps" in r for r in part):  # SFT trains on winners alone
                    ax.plot(
                        x,
                        moving_average([r["train/rejected_logps"] for r in part], window),
                        color=color,
                        linewidth=1.5,
                        linestyle="--",
                    )
                last = max(last, t + 1)
        if any(line.get_color() == color for line in ax.lines):
            configs.append((Line2D([], [], color=color), names[label]))
    ax.set_xticks(range(last + 1))
    ax.set_xticklabels([f"M_{t}" for t in range(last + 1)])
    ax.set_xlabel("training M_t → M_t+1: iterations end to end, each from its first step to its last")
    ax.set_ylabel(f"log-prob of the sequence\n(batch mean, moving average of {window})")
    ax.grid(alpha=0.3)
    if not configs:
        ax.text(0.5, 0.5, "no training steps logged", transform=ax.transAxes, ha="center")
    styles = [
        (Line2D([], [], color="black"), "winner (chosen)"),
        (Line2D([], [], color="black", linestyle="--"), "loser (rejected)"),
    ]
    ax.legend(*zip(*styles), loc="best", fontsize="small")
    height = legend_below(fig, *map(list, zip(*configs)), arm_title(sweep)) if configs else 0.0
    return _finish(fig, height, title)


def _color(method: str) -> str:
    return f"C{METHOD_ORDER.index(method)}" if method in METHOD_ORDER else "C0"


def _draw_logps(ax, recs: list[dict], method: str, color: str) -> bool:
    """One method's winners (solid) and losers (dashed) per training on `ax`; whether any."""
    drawn = False
    for side, style in (("chosen", "-"), ("rejected", "--")):
        start, end = by_iteration(recs, method, f"{side}_logp_start"), by_iteration(recs, method, f"{side}_logp_end")
        for t in sorted(set(start) & set(end)):
            ax.errorbar(
                [t - 1, t],
                [start[t].mean, end[t].mean],
                yerr=[start[t].std, end[t].std],
                color=color,
                linestyle=style,
                marker="o",
                capsize=3,
            )
            drawn = True
    ax.set_xticks(
        sorted(
            {
                t
                for r in recs
                for t in (r["iteration"] - 1, r["iteration"])
                if r["iteration"] >= 1 and r.get("chosen_logp_end") is not None
            }
        )
    )
    ax.set_xticklabels([f"M_{int(t)}" for t in ax.get_xticks()])
    ax.grid(alpha=0.3)
    return drawn


def logp_figure(recs: list[dict], methods: tuple[str, ...], title: str):
    """Mean summed log-prob of each training's winners (solid) and losers (dashed) at its
    start and its end, M_t → M_t+1, per method (mean ± std over seeds)."""
    from matplotlib.lines import Line2D

    fig = _figure(8, 5)
    ax = fig.subplots()
    handles = [(Line2D([], [], color=_color(m)), m) for m in methods if _draw_logps(ax, recs, m, _color(m))]
    ax.set_xlabel("training M_t → M_t+1 (each segment: the iteration's pairs scored at the start and at the end)")
    ax.set_ylabel("mean summed log-prob of the sequence (nats)")
    styles = [
        (Line2D([], [], color="black"), "winners (chosen)"),
        (Line2D([], [], color="black", linestyle="--"), "losers (rejected)"),
    ]
    ax.legend(*zip(*(handles + styles)), fontsize="small", loc="best")
    if not handles:
        ax.text(0.5, 0.5, "no log-prob pass in these jobs", transform=ax.transAxes, ha="center")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def objectives_figure(recs: list[dict]):
    """One panel per objective: its winners' and losers' log-probs at the start and end of
    each training (mean ± std over seeds), on one shared scale."""
    drawn = [m for m in arms(recs) if m != "zero_shot" and by_iteration(recs, m, "chosen_logp_end")]
    cols = min(5, max(1, len(drawn)))
    rows = max(1, math.ceil(len(drawn) / cols))
    fig = _figure(3 * cols, 2.8 * rows)
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False).ravel()
    for ax, m in zip(axes, drawn):
        _draw_logps(ax, recs, m, "C0")
        ax.set_title(m, fontsize="medium")
    for ax in axes[len(drawn) :]:
        ax.set_visible(False)
    fig.suptitle(
        "Winners (solid) and losers (dashed): mean summed log-prob (nats) at the start and end of each training"
    )
    fig.tight_layout()
    return fig


def capacity_figure(recs: list[dict]):
    """IRPO minus STaR (mean, 95% interval over seeds) against the width of M_0; a second build
    of one width beside the first, named as CAPACITY.md names it."""
    fig = _figure(6, 4)
    ax = fig.subplots()
    seen: dict[int, int] = {}
    for m0, d in capacity(recs).items():
        h = starting_from(recs, m0)[0]["hidden"]
        if d is None or h is None:
            continue
        k = seen[h] = seen.get(h, -1) + 1
        ax.errorbar(
            [h * 1.06**k],
            [100 * d.mean],
            marker="o",
            capsize=4,
            color=f"C{k}",
            yerr=[
                [100 * (d.mean - d.low) if d.low is not None else 0],
                [100 * (d.high - d.mean) if d.high is not None else 0],
            ],
        )
        if k:
            ax.annotate(
                m0_label(m0), (h * 1.06**k, 100 * d.mean), fontsize="x-small", xytext=(4, 4), textcoords="offset points"
            )
    xs = sorted(seen)
    ax.axhline(0, color="grey", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.set_xticks(xs)
    ax.set_xticklabels([str(x) for x in xs])
    ax.set_xlabel("hidden size of M_0")
    ax.set_ylabel("irpo − sft_chosen, greedy test accuracy (points)")
    ax.set_title("IRPO vs STaR by model width (mean, 95% interval over seeds)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
