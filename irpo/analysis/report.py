"""`python -m irpo.report <run or sweep dir>`: the jobs of a sweep side by side.

Reads only what runs leave on disk (each job's `.hydra/overrides.yaml` and `config.yaml`,
`metrics.jsonl`, `iter_<t>/train/metrics.csv`, `iter_<t>/pairs.jsonl`, `generations.jsonl`,
`eval_generations.jsonl`; the sweep's `multirun.yaml`) and writes into the directory:

    summary.csv, summary.json   one row per job x iteration: the job, its swept values, then
                                every per-iteration metric (summary.json also lists the jobs,
                                unfinished ones included, and the mean and std over seeds)
    accuracy.png                test accuracy (and maj@k) against iteration, one line per
                                configuration; mean +- std over seeds when the seed is swept
    train.png                   train pass@N and pairs per iteration
    logps.png                   chosen and rejected log-probs over training steps, iterations
                                end to end

It runs by itself at the end of every run and every multirun; by hand it also reads a
partial sweep and names the jobs that did not finish. It reads runs through irpo/results.py,
as notebooks/compare_iterations.ipynb and any other comparison do.
"""

from __future__ import annotations

import csv
import io
import math
import os
import statistics
import sys
import textwrap
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from irpo.artifacts import atomic_path, write_json
from irpo.errors import ArgumentParser
from irpo.analysis import results
from irpo.analysis.results import Sweep, load, train_steps

FIGURES = ("accuracy.png", "train.png", "logps.png")
def moving_average(values: list[float], window: int) -> list[float]:
    """The mean of each value and up to window - 1 values before it."""
    return [statistics.fmean(values[max(0, i - window + 1):i + 1]) for i in range(len(values))]


def write_report(path: str | os.PathLike) -> Sweep:
    """summary.csv, summary.json and the figures, into the run or sweep directory."""
    sweep = load(path)
    rows = sweep.table()
    columns = list(dict.fromkeys(k for row in rows for k in row)) or ["job", *sweep.columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(sweep.root / "summary.csv") as tmp:
        tmp.write_text(buf.getvalue())
    write_json(sweep.root / "summary.json", {
        "directory": str(sweep.root),
        "swept": sweep.swept,
        "jobs": [{"job": j.name, "overrides": j.overrides, "finished": j.finished, "iterations_logged": len(j.rows),
                  "stopped_in": j.stopped_in} for j in sweep.jobs],
        "unfinished": [j.name for j in sweep.unfinished],
        "not_started": sweep.missing,
        "rows": rows,
        "seed_mean_std": _seed_table(sweep) if "seed" in sweep.swept else [],
    })
    plot(sweep)
    from irpo.analysis import writers as reproduction

    if reproduction.compares_methods(sweep):
        reproduction.write(sweep)
    return sweep


def _seed_table(sweep: Sweep) -> list[dict]:
    out: dict[tuple[str, int], dict] = {}
    for metric in sweep.metrics():
        for label, points in sweep.aggregate(metric).items():
            for t, mean, std, n in points:
                row = out.setdefault((label, t), {"configuration": label, "iteration": t, "seeds": n})
                row[f"{metric}_mean"], row[f"{metric}_std"] = mean, std
    return list(out.values())


def plot(sweep: Sweep) -> None:
    """The figures of FIGURES, into the sweep directory."""
    for name, fig in zip(FIGURES, (accuracy_figure(sweep), train_figure(sweep), logps_figure(sweep))):
        with atomic_path(sweep.root / name) as tmp:
            fig.savefig(tmp, dpi=110, format="png")


def _seeds(sweep: Sweep) -> str:
    return " (mean ± std over seeds)" if "seed" in sweep.swept else ""


def accuracy_figure(sweep: Sweep):
    """Test accuracy (greedy, and maj@k when evaluated) against iteration, per configuration."""
    maj = [m for m in sweep.metrics() if m.startswith("maj@")]
    return _iteration_figure(sweep, [("test_accuracy", "test accuracy (greedy)"), *[(m, f"test {m}") for m in maj]],
                             f"{sweep.root.name}: test accuracy of M_t{_seeds(sweep)}")


def train_figure(sweep: Sweep):
    """Train pass@N and the number of pairs per iteration, per configuration."""
    return _iteration_figure(sweep, [("train_pass_at_n", "train pass@N (a prompt has a correct sample)"), ("pairs", "pairs")],
                             f"{sweep.root.name}: samples of M_t{_seeds(sweep)}")


def _legend(fig, sweep: Sweep, handles: list, labels: list[str], **kwargs: Any) -> None:
    """One legend under the axes, titled with the swept keys: long labels never cover data."""
    fig.legend(handles, labels, title=", ".join(sweep.compared) or None, loc="lower center", fontsize="small",
               ncol=max(1, min(len(labels), 3)), frameon=False, **kwargs)


def _finish(fig, n_legend_rows: int, title: str):
    """The title, and room under the axes for the legend."""
    fig.suptitle(textwrap.fill(title, 90))
    fig.tight_layout(rect=(0, min(0.45, 0.03 + 0.05 * n_legend_rows), 1, 1))
    return fig


def _iteration_figure(sweep: Sweep, metrics: list[tuple[str, str]], title: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.5, 5.5 * len(metrics)), 4.8))
    axes = fig.subplots(1, len(metrics), squeeze=False)
    for ax, (metric, ylabel) in zip(axes[0], metrics):
        for label, points in sweep.aggregate(metric).items():
            t, mean, std = [p[0] for p in points], [p[1] for p in points], [p[2] for p in points]
            line, = ax.plot(t, mean, marker="o", label=label)
            if any(std):
                ax.fill_between(t, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], color=line.get_color(), alpha=0.2)
        ax.set_xlabel("iteration t (M_t)")
        ax.set_ylabel(ylabel)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        if not ax.lines:
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center")
    handles, labels = axes[0][0].get_legend_handles_labels()
    _legend(fig, sweep, handles, labels)
    return _finish(fig, math.ceil(len(labels) / 3) + bool(sweep.compared), title)


def logps_figure(sweep: Sweep, window: int = 5):
    """Chosen and rejected log-probs while training, iterations end to end, one colour per
    configuration (each seed its own line): the paper's case for the NLL term, without
    which the winners' log-probs fall along with the losers'. Batch means are noisy, so
    each line is a moving average over `window` logged batches of one iteration."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    title = f"{sweep.root.name}: log-probs of winners and losers while training"
    fig = Figure(figsize=(10, 5.2))
    ax = fig.subplots()
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
                    ax.plot(x, moving_average([r["train/rejected_logps"] for r in part], window), color=color, linewidth=1.5, linestyle="--")
                last = max(last, t + 1)
        if any(line.get_color() == color for line in ax.lines):
            configs.append((Line2D([], [], color=color), label))
    ax.set_xticks(range(last + 1))
    ax.set_xticklabels([f"M_{t}" for t in range(last + 1)])
    ax.set_xlabel("training M_t → M_t+1: iterations end to end, each from its first step to its last")
    ax.set_ylabel(f"log-prob of the sequence\n(batch mean, moving average of {window})")
    ax.grid(alpha=0.3)
    if not configs:
        ax.text(0.5, 0.5, "no training steps logged", transform=ax.transAxes, ha="center")
    styles = [(Line2D([], [], color="black"), "winner (chosen)"), (Line2D([], [], color="black", linestyle="--"), "loser (rejected)")]
    ax.legend(*zip(*styles), loc="best", fontsize="small")
    if configs:
        _legend(fig, sweep, *map(list, zip(*configs)))
    return _finish(fig, math.ceil(len(configs) / 3) + bool(sweep.compared), title)


def describe(sweep: Sweep) -> str:
    """What the report found, for the terminal."""
    keys = f"swept: {', '.join(sweep.swept) or 'nothing'}" if len(sweep.jobs) > 1 else f"overrides: {', '.join(sweep.overridden) or 'none'}"
    lines = [f"irpo report: {sweep.root}: {len(sweep.jobs)} job(s), {keys}"]
    for label, points in sweep.aggregate("test_accuracy").items():
        accs = " ".join(f"{m:.3f}" + (f"±{s:.3f}" if n > 1 else "") for _, m, s, n in points)
        lines.append(f"  {label}: test accuracy by iteration {accs}")
    for job in sweep.unfinished:
        where = f", stopped in {job.stopped_in}" if job.stopped_in else ""
        lines.append(f"  unfinished: job {job.name} ({' '.join(f'{k}={v}' for k, v in job.overrides.items())}): "
                     f"{len(job.rows)} of {job.last_iteration + 1} iterations logged{where}")
    for overrides in sweep.missing:
        lines.append(f"  not started: {overrides}")
    from irpo.analysis import writers as reproduction

    wrote = [*FIGURES, *reproduction.outputs(sweep)] if reproduction.compares_methods(sweep) else FIGURES
    lines.append(f"  wrote summary.csv, summary.json, {', '.join(wrote)}")
    return "\n".join(lines)


def report_at_end(path: str | os.PathLike) -> None:
    """The report a run writes when it ends: by one process only when a run has several
    ranks. A report that fails leaves the run's results as they are and says so."""
    from irpo.distributed import rank

    if rank() != 0:  # the launcher's rank (srun sets no RANK)
        return
    try:
        print(describe(write_report(path)))
    except Exception as exc:  # the results are on disk already; the report can be redone by hand
        print(f"irpo: warning: the report failed ({type(exc).__name__}: {exc}); rerun: python -m irpo.report {path}", file=sys.stderr)


class ReportCallback(Callback):
    """Hydra calls this when every job of a multirun has ended (and not when one failed, so
    a partial sweep's report is written by hand: `python -m irpo.report <sweep dir>`)."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not (config.get("plan") or config.get("dry_run")):  # those jobs print a plan, they log nothing
            report_at_end(config.hydra.sweep.dir)


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m irpo.report", description="Summary tables and figures of an irpo run or sweep directory.")
    parser.add_argument("directory", help="a run directory (outputs/...) or a sweep directory (multirun/...)")
    parser.add_argument("--copy-to", metavar="DIR", help="copy the sweep's record (configs, metrics, events; no weights or samples) to DIR "
                        "and write the report there, from the copy")
    args = parser.parse_args(argv)
    from irpo.cli import exit_on_user_error, full_errors_requested

    def report() -> Sweep:
        if args.copy_to:
            results.copy_records(args.directory, args.copy_to)
        return write_report(args.copy_to or args.directory)

    exit_on_user_error(lambda: print(describe(report())), full_errors_requested())


if __name__ == "__main__":
    main()
