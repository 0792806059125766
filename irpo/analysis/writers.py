"""The paper in miniature: Table 1 and Figures 2-3 of Pang et al. (2024) from a sweep over
methods and seeds (sweeps/paper_mini.yaml), with a verdict per claim.

`python -m irpo.report <sweep dir>` writes, when the sweep compares methods:

    reproduction.json   one record per (method, seed, iteration): greedy_acc, maj_acc, and for
                        t >= 1 the mean summed log-prob of the winners and losers of the
                        training that made M_t, under the policy at its start and its end
    REPRODUCTION.md     Table 1 in miniature beside the paper's GSM8K numbers, the figures,
                        pairs and pass@N per iteration, and a verdict per claim
    fig2_logps.png, fig3_logps.png

and for sweep=objectives (every preference objective beside IRPO and STaR) OBJECTIVES.md and
objectives_logps.png instead; for a sweep over M_0 widths CAPACITY.md and capacity.png.

Every number comes from the jobs' files (metrics.jsonl, events.jsonl, .hydra/); none is
typed here except the paper's own, quoted from its Table 1.
"""

from __future__ import annotations

import math
import re
import statistics
from dataclasses import dataclass

from omegaconf import OmegaConf

from irpo.artifacts import atomic_path, read_jsonl, write_json
from irpo.analysis.results import Sweep, comparable

# Table 1 of the paper (GSM8K, Llama-2-70b-chat), greedy accuracy in %, by method and by the
# iteration that produced the row (0 = the untrained model); maj@32 where the table gives it.
PAPER_GSM8K = {
    "zero_shot": {0: 55.6},
    "sft_gold": {1: 63.5},
    "sft_chosen": {1: 65.2},
    "dpo": {1: 61.8},
    "irpo": {1: 73.1, 2: 78.0, 3: 81.1, 4: 81.6},
}
PAPER_GSM8K_MAJ = {"zero_shot": {0: 70.7}, "irpo": {3: 88.2, 4: 88.7}}
METHOD_ORDER = ("zero_shot", "sft_gold", "sft_chosen", "dpo", "irpo")
LOGP_KEYS = ("chosen_logp_start", "chosen_logp_end", "rejected_logp_start", "rejected_logp_end")
FIGURES = ("fig2_logps.png", "fig3_logps.png")


def compares_methods(sweep: Sweep) -> bool:
    return len({OmegaConf.select(job.config, "method.name") for job in sweep.jobs}) > 1


def records(sweep: Sweep) -> list[dict]:
    """One record per (method, seed, iteration) of the finished and unfinished jobs alike."""
    out = []
    for job in sweep.jobs:
        cfg = job.config
        maj = f"maj@{cfg.eval.maj_k}" if cfg.eval.maj_k else None
        rows = {r["iteration"]: r for r in job.rows}
        start = {"hidden": _hidden(job), "m0": _m0(job)}
        for t, row in sorted(rows.items()):
            rec = {"method": cfg.method.name, "seed": int(cfg.seed), "iteration": t, "greedy_acc": row.get("test_accuracy"),
                   "maj_acc": row.get(maj) if maj else None, **start}
            before = rows.get(t - 1, {})
            if t >= 1:
                rec |= {k: before.get(k) for k in LOGP_KEYS}
                rec |= {k: before.get(src) for k, src in (("pairs", "pairs"), ("train_pass_at_n", "train_pass_at_n"),
                                                          ("val_accuracy", "val_accuracy_selected"), ("selected_step", "selected_step"))}
            out.append(rec)
    return out


def _m0(job) -> str:
    """The job's M_0 as its config names it: a shipped one as ${irpo_asset:<name>}, whatever
    checkout ran it, a directory by its path as given."""
    path = OmegaConf.to_container(job.config.model, resolve=False)["path"]  # an override's value, as the job ran it
    return comparable(f"model.path={path}").partition("=")[2]


def _hidden(job) -> int | None:
    """The width of the job's M_0, as its launch recorded the model's shape."""
    events = read_jsonl(job.path / "events.jsonl") if (job.path / "events.jsonl").exists() else []
    return next((e["arch"]["hidden"] for e in events if e.get("event") == "launch" and e.get("arch")), None)


@dataclass
class Stat:
    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        return f"{100 * self.mean:.1f} ± {100 * self.std:.1f}" if self.n > 1 else f"{100 * self.mean:.1f}"


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile (p in (0.5, 1)), by bisection on its CDF: the CDF is 1/2 plus the
    density integrated from 0 (Simpson's rule; the density is smooth and the interval short)."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)

    def cdf(x: float, steps: int = 2000) -> float:
        h = x / steps
        f = [c * (1 + (i * h) ** 2 / df) ** (-(df + 1) / 2) for i in range(steps + 1)]
        return 0.5 + h / 3 * (f[0] + f[-1] + 4 * sum(f[1:-1:2]) + 2 * sum(f[2:-1:2]))

    lo, hi = 0.0, 1.0
    while cdf(hi) < p:
        lo, hi = hi, 2 * hi
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if cdf(mid) < p else (lo, mid)
    return (lo + hi) / 2


@dataclass
class Interval:
    """A mean difference over paired seeds and its 95% t-interval (none from one seed)."""

    mean: float
    low: float | None
    high: float | None
    n: int

    @property
    def verdict(self) -> bool | None:
        """True when the interval lies above 0, False when it holds 0 or lies below, None
        when there is no interval."""
        return None if self.low is None else self.low > 0


def paired(differences: list[float]) -> Interval | None:
    """The mean of per-seed differences with its 95% interval (t with n - 1 degrees of freedom)."""
    if not differences:
        return None
    n, mean = len(differences), statistics.fmean(differences)
    if n == 1:
        return Interval(mean, None, None, 1)
    half = t_quantile(0.975, n - 1) * statistics.stdev(differences) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def stat(values: list[float]) -> Stat | None:
    values = [v for v in values if isinstance(v, (int, float)) and not math.isnan(v)]
    if not values:
        return None
    return Stat(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))


def by_iteration(recs: list[dict], method: str, key: str) -> dict[int, Stat]:
    """Mean ± std over seeds of `key`, per iteration, for one method."""
    out = {}
    for t in sorted({r["iteration"] for r in recs if r["method"] == method}):
        s = stat([r.get(key) for r in recs if r["method"] == method and r["iteration"] == t])
        if s:
            out[t] = s
    return out


def chosen(recs: list[dict], method: str) -> dict[int, dict]:
    """Each seed's M_t of `method` as a user would deploy it: the iteration whose selected
    checkpoint has the best validation accuracy (the earliest on a tie), the last iteration
    where the run had no validation; never picked on the test set."""
    out = {}
    for seed in sorted({r["seed"] for r in recs if r["method"] == method}):
        runs = [r for r in recs if r["method"] == method and r["seed"] == seed]
        validated = [r for r in runs if r.get("val_accuracy") is not None]
        out[seed] = max(validated, key=lambda r: (r["val_accuracy"], -r["iteration"])) if validated else max(runs, key=lambda r: r["iteration"])
    return out


def difference(a: dict[int, dict], b: dict[int, dict], key: str = "greedy_acc") -> Interval | None:
    """`key` of a minus `key` of b, paired by seed over the seeds both have."""
    return paired([a[s][key] - b[s][key] for s in sorted(set(a) & set(b)) if a[s].get(key) is not None and b[s].get(key) is not None])


def _pts(i: Interval | None, scale: float = 100.0, unit: str = " points") -> str:
    if i is None:
        return "not measured"
    if i.low is None:
        return f"{scale * i.mean:+.{1 if scale == 100 else 3}f}{unit} (one seed: no interval)"
    f = 1 if scale == 100 else 3
    return f"{scale * i.mean:+.{f}f}{unit}, 95% interval [{scale * i.low:+.{f}f}, {scale * i.high:+.{f}f}], {i.n} seeds"


def comparisons(recs: list[dict]) -> list[tuple[str, Interval | None]]:
    """IRPO minus each other trained arm, each at its validation-chosen iteration, paired by seed."""
    irpo = chosen(recs, "irpo")
    return [(m, difference(irpo, chosen(recs, m))) for m in _arms(recs) if m not in ("irpo", "zero_shot")]


def verdicts(recs: list[dict]) -> list[dict]:
    """The paper's claims, each decided by a 95% interval over seeds (a difference paired by
    seed, or a per-seed change): reproduced when the interval lies above 0, not when it holds
    0 or lies below, None where the sweep lacks the arms or has one seed."""
    out = []

    def claim(text: str, intervals: list[Interval | None], numbers: str) -> None:
        ok = None if any(i is None or i.verdict is None for i in intervals) else all(i.verdict for i in intervals)
        out.append({"claim": text, "reproduced": ok, "numbers": numbers})

    def at(method: str, t: int) -> dict[int, dict]:
        return {r["seed"]: r for r in recs if r["method"] == method and r["iteration"] == t}

    if at("irpo", 2):
        up1, up2 = difference(at("irpo", 1), at("irpo", 0)), difference(at("irpo", 2), at("irpo", 1))
        claim("IRPO improves over iterations: M_1 above M_0 and M_2 above M_1 (Table 1: 55.6, 73.1, 78.0)", [up1, up2],
              f"M_1 − M_0 {_pts(up1)}; M_2 − M_1 {_pts(up2)}")
    else:
        claim("IRPO improves over iterations", [None], "the sweep has no irpo arm with 2 iterations")
    paper = {"dpo": "The NLL term matters: IRPO above DPO (Table 1: 73.1 vs 61.8)",
             "sft_chosen": "IRPO above SFT on its own winners, STaR (Table 1: 73.1 vs 65.2)",
             "sft_gold": "IRPO above SFT on the gold CoT (Table 1: 73.1 vs 63.5)"}
    for other, diff in comparisons(recs):
        claim(paper.get(other, f"IRPO above {other}") + ", each at its validation-chosen iteration", [diff], f"irpo − {other} {_pts(diff)}")

    def moved(method: str, side: str, sign: float = 1.0) -> dict[int, float]:
        return _moved(recs, method, side, sign)

    nats = dict(scale=1.0, unit=" nats")
    dc, ic = paired(list(moved("dpo", "chosen", -1).values())), paired(list(moved("irpo", "chosen").values()))
    if dc and ic:
        claim("Fig. 3: over the training that made M_1, the chosen log-prob falls under DPO and rises under IRPO", [dc, ic],
              f"fall under dpo {_pts(dc, **nats)}; rise under irpo {_pts(ic, **nats)}")
    sr = paired(list(moved("sft_chosen", "rejected").values()))
    if sr:
        claim("Fig. 2: SFT on the chosen sequences raises the rejected log-probs too", [sr], f"sft_chosen: rejected rise {_pts(sr, **nats)}")
    own, gold = moved("sft_chosen", "chosen"), moved("sft_gold", "chosen")
    more = paired([own[s] - gold[s] for s in sorted(own.keys() & gold.keys())])
    if more:
        claim("Fig. 2: SFT on the gold CoT raises the chosen log-probs less than SFT on the chosen sequences does", [more],
              f"sft_chosen's rise − sft_gold's {_pts(more, **nats)}")
    ir = paired(list(moved("irpo", "rejected", -1).values()))
    if ic and ir:
        claim("Fig. 2: DPO + NLL raises the chosen log-probs and lowers the rejected ones", [ic, ir],
              f"irpo: chosen rise {_pts(ic, **nats)}; rejected fall {_pts(ir, **nats)}")
    return out


def _moved(recs: list[dict], method: str, side: str, sign: float = 1.0) -> dict[int, float]:
    """Per seed, how far the training that made M_1 moved its pairs' `side` log-prob."""
    keys = f"{side}_logp_start", f"{side}_logp_end"
    return {r["seed"]: sign * (r[keys[1]] - r[keys[0]]) for r in recs
            if r["method"] == method and r["iteration"] == 1 and None not in (r.get(keys[0]), r.get(keys[1]))}


def seed_sets(recs: list[dict], size: int = 6) -> list[list[int]]:
    """The sweep's seeds in sets of `size`, in order: the first decides, the others replicate."""
    seeds = sorted({r["seed"] for r in recs})
    return [seeds[i : i + size] for i in range(0, len(seeds), size)]


def _arms(recs: list[dict]) -> list[str]:
    found = {r["method"] for r in recs}
    return [m for m in METHOD_ORDER if m in found] + sorted(found - set(METHOD_ORDER))


def compares_m0s(recs: list[dict]) -> bool:
    """Whether the sweep starts from several M_0s (widths, or builds of one width): a capacity sweep."""
    return len({r["m0"] for r in recs}) > 1


def compares_objectives(sweep: Sweep) -> bool:
    """Whether the sweep is sweep=objectives (each job's command names it)."""
    return any(job.overrides.get("sweep") == "objectives" for job in sweep.jobs)


def outputs(sweep: Sweep) -> list[str]:
    """The files `write` makes for this sweep."""
    if compares_objectives(sweep):
        return ["reproduction.json", "OBJECTIVES.md", OBJECTIVES_FIGURE]
    return ["reproduction.json", *(("CAPACITY.md", CAPACITY_FIGURE) if compares_m0s(records(sweep)) else ("REPRODUCTION.md", *FIGURES))]


def write(sweep: Sweep) -> None:
    recs = records(sweep)
    write_json(sweep.root / "reproduction.json", recs)
    if compares_objectives(sweep):
        files = {OBJECTIVES_FIGURE: objectives_figure(recs), "OBJECTIVES.md": objectives_markdown(sweep, recs)}
    elif compares_m0s(recs):
        files = {CAPACITY_FIGURE: capacity_figure(recs), "CAPACITY.md": capacity_markdown(sweep, recs)}
    else:
        files = dict(zip(FIGURES, (
            logp_figure(recs, ("sft_chosen", "sft_gold", "irpo"), "Fig. 2 in miniature: winners and losers under SFT (own winners, gold CoT) and IRPO"),
            logp_figure(recs, ("dpo", "irpo"), "Fig. 3 in miniature: winners and losers under DPO (alpha = 0) and IRPO (alpha = 1)"))))
        files["REPRODUCTION.md"] = markdown(sweep, recs)
    for name, content in files.items():
        with atomic_path(sweep.root / name) as tmp:
            if isinstance(content, str):
                tmp.write_text(content)
            else:
                content.savefig(tmp, dpi=110, format="png")


CAPACITY_FIGURE = "capacity.png"
OBJECTIVES_FIGURE = "objectives_logps.png"


def capacity(recs: list[dict]) -> dict[str, Interval | None]:
    """Per M_0 (by width, then name): IRPO minus SFT on its own winners, each at its
    validation-chosen iteration, paired by seed."""
    return {m0: difference(chosen(_from(recs, m0), "irpo"), chosen(_from(recs, m0), "sft_chosen")) for m0 in _m0s(recs)}


def _from(recs: list[dict], m0: str) -> list[dict]:
    return [r for r in recs if r["m0"] == m0]


def _m0s(recs: list[dict]) -> list[str]:
    width = {r["m0"]: r["hidden"] or 0 for r in recs}
    return sorted(width, key=lambda m0: (width[m0], m0))


def _m0_label(m0: str) -> str:
    shipped = re.fullmatch(r"\$\{irpo_asset:(\w+)\}", m0)
    return f"{shipped[1]} (shipped)" if shipped else m0


def capacity_markdown(sweep: Sweep, recs: list[dict]) -> str:
    seeds = sorted({r["seed"] for r in recs})
    found = capacity(recs)
    width = {m0: _from(recs, m0)[0]["hidden"] for m0 in found}
    start = {m0: statistics.mean(r["greedy_acc"] for r in _from(recs, m0) if r["iteration"] == 0) for m0 in found}
    lines = ["# The miniature's capacity axis", "", *_provenance(sweep, seeds), "",
             "## IRPO minus SFT on its own winners (STaR), by M_0", "",
             "Greedy test accuracy, each arm at the iteration its validation accuracy picks; a 95% interval over seeds paired by seed.", "",
             "| M_0 | width | M_0 accuracy | irpo | sft_chosen | irpo − sft_chosen | IRPO above STaR |", "|---|---|---|---|---|---|---|"]
    for m0, diff in found.items():
        arms = [stat([r["greedy_acc"] for r in chosen(_from(recs, m0), m).values()]) for m in ("irpo", "sft_chosen")]
        lines.append(f"| `{_m0_label(m0)}` | {width[m0]} | {100 * start[m0]:.1f} | {arms[0] or ''} | {arms[1] or ''} | {_pts(diff)} | "
                     f"{_word(diff.verdict if diff else None)} |")
    widths = sorted({w for w in width.values() if w is not None})
    for h in widths:
        builds = [m0 for m0 in found if width[m0] == h]
        if len(builds) > 1:
            sides = [_side(found[m0]) for m0 in builds]
            lines += ["", f"Width {h}, {len(builds)} builds of M_0 by one recipe: IRPO is "
                      + "; ".join(f"{side} STaR from `{_m0_label(m0)}` (M_0 {100 * start[m0]:.1f}; {_pts(found[m0])})" for side, m0 in zip(sides, builds))
                      + (". The build does not change where IRPO lies." if len(set(sides)) == 1 else ". Where IRPO lies against STaR depends on the build of M_0.")]
    by_width = {h: statistics.mean(start[m] for m in found if width[m] == h) for h in widths}
    if list(by_width.values()) != sorted(by_width.values()):
        lines += ["", "M_0's own accuracy does not rise with its width (" + ", ".join(f"{h}: {100 * a:.1f}" for h, a in by_width.items())
                  + "): one build recipe trained the widths unequally, so this axis mixes capacity with how well each M_0 was trained."]
    lines += ["", f"![capacity]({CAPACITY_FIGURE})", "", "Per-record numbers: reproduction.json."]
    return "\n".join(lines) + "\n"


def capacity_figure(recs: list[dict]):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    seen: dict[int, int] = {}
    for m0, d in capacity(recs).items():
        h = _from(recs, m0)[0]["hidden"]
        if d is None or h is None:
            continue
        k = seen[h] = seen.get(h, -1) + 1
        ax.errorbar([h * 1.06 ** k], [100 * d.mean], marker="o", capsize=4, color=f"C{k}",
                    yerr=[[100 * (d.mean - d.low) if d.low is not None else 0], [100 * (d.high - d.mean) if d.high is not None else 0]])
        if k:
            ax.annotate(_m0_label(m0), (h * 1.06 ** k, 100 * d.mean), fontsize="x-small", xytext=(4, 4), textcoords="offset points")
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


def logp_figure(recs: list[dict], methods: tuple[str, ...], title: str):
    """Mean summed log-prob of each training's winners (solid) and losers (dashed) at its
    start and its end, M_t → M_t+1, per method (mean ± std over seeds)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    handles = [(Line2D([], [], color=_color(m)), m) for m in methods if _draw_logps(ax, recs, m, _color(m))]
    ax.set_xlabel("training M_t → M_t+1 (each segment: the iteration's pairs scored at the start and at the end)")
    ax.set_ylabel("mean summed log-prob of the sequence (nats)")
    styles = [(Line2D([], [], color="black"), "winners (chosen)"), (Line2D([], [], color="black", linestyle="--"), "losers (rejected)")]
    ax.legend(*zip(*(handles + styles)), fontsize="small", loc="best")
    if not handles:
        ax.text(0.5, 0.5, "no log-prob pass in these jobs", transform=ax.transAxes, ha="center")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _color(method: str) -> str:
    return f"C{METHOD_ORDER.index(method)}" if method in METHOD_ORDER else "C0"


def _draw_logps(ax, recs: list[dict], method: str, color: str) -> bool:
    """One method's winners (solid) and losers (dashed) per training on `ax`; whether any."""
    drawn = False
    for side, style in (("chosen", "-"), ("rejected", "--")):
        start, end = by_iteration(recs, method, f"{side}_logp_start"), by_iteration(recs, method, f"{side}_logp_end")
        for t in sorted(set(start) & set(end)):
            ax.errorbar([t - 1, t], [start[t].mean, end[t].mean], yerr=[start[t].std, end[t].std], color=color, linestyle=style, marker="o", capsize=3)
            drawn = True
    ax.set_xticks(sorted({t for r in recs for t in (r["iteration"] - 1, r["iteration"]) if r["iteration"] >= 1 and r.get("chosen_logp_end") is not None}))
    ax.set_xticklabels([f"M_{int(t)}" for t in ax.get_xticks()])
    ax.grid(alpha=0.3)
    return drawn


def markdown(sweep: Sweep, recs: list[dict]) -> str:
    methods = _arms(recs)
    iterations = sorted({r["iteration"] for r in recs})
    seeds = sorted({r["seed"] for r in recs})
    lines = [f"# The paper in miniature: {sweep.root.name}", ""]
    lines += _provenance(sweep, seeds)
    head = "| method | " + " | ".join(f"M_{t}" for t in iterations) + " | validation-chosen M_t | {} |"
    rule = "|---" * (len(iterations) + 3) + "|"
    lines += ["", "## Table 1 in miniature: greedy test accuracy (%), mean ± std over seeds", "",
              "Validation-chosen: each seed's M_t at the iteration its validation accuracy picks (the iterations picked, seed by seed).", "",
              head.format("paper (GSM8K, 70B)"), rule]
    for key, paper in (("greedy_acc", PAPER_GSM8K), ("maj_acc", PAPER_GSM8K_MAJ)):
        if key == "maj_acc":
            if not any(r.get("maj_acc") is not None for r in recs):
                break
            lines += ["", "Majority vote over the evaluation samples (maj@k, %):", "", head.format("paper maj@32"), rule]
        for m in methods:
            points = by_iteration(recs, m, key)
            picked = chosen(recs, m)
            at = f"{stat([r.get(key) for r in picked.values()]) or ''} (M_{', M_'.join(str(r['iteration']) for r in picked.values())})"
            quoted = ", ".join(f"M_{t} {v}" for t, v in paper.get(m, {}).items())
            lines.append(f"| {m} | " + " | ".join(str(points[t]) if t in points else "" for t in iterations) + f" | {at} | {quoted} |")
    lines += ["", "![accuracy](accuracy.png)", ""]
    sets = seed_sets(recs)
    first = [r for r in recs if r["seed"] in sets[0]]
    found = verdicts(first)
    lines += [f"## Verdicts (seeds {_seeds(sets[0])})", "",
              "Each claim is decided by a 95% interval over seeds: a difference paired by seed (each arm at the iteration its "
              "validation accuracy picks), or a per-seed change; reproduced when the interval lies above 0.", "",
              "| claim | reproduced | numbers |", "|---|---|---|"]
    lines += [f"| {v['claim']} | {_word(v['reproduced'])} | {v['numbers']} |" for v in found]
    lines += ["", summary(found)]
    for other in sets[1:]:
        again = verdicts([r for r in recs if r["seed"] in other])
        lines += ["", f"### The same claims on seeds {_seeds(other)}", "", "| claim | reproduced | agrees with seeds " + _seeds(sets[0]) + " | numbers |", "|---|---|---|---|"]
        for v, w in zip(found, again):
            lines.append(f"| {w['claim']} | {_word(w['reproduced'])} | {'yes' if w['reproduced'] == v['reproduced'] else '**no**'} | {w['numbers']} |")
    lines += ["", "## IRPO minus each arm, each at its validation-chosen iteration (greedy test accuracy, points)", "",
              "| arm | " + " | ".join(f"seeds {_seeds(ss)}" for ss in sets) + " |", "|---" * (len(sets) + 1) + "|"]
    for m in _arms(recs):
        if m not in ("irpo", "zero_shot"):
            cells = [_pts(difference(chosen([r for r in recs if r["seed"] in ss], "irpo"), chosen([r for r in recs if r["seed"] in ss], m)))
                     for ss in sets]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += _logp_table(recs, methods, "method")
    lines += ["", "![Fig. 2 in miniature](fig2_logps.png)", "", "![Fig. 3 in miniature](fig3_logps.png)", "",
              "## Samples of M_t: pairs and train pass@N per iteration (mean over seeds)", "",
              "| method | " + " | ".join(f"M_{t - 1} pairs / pass@N" for t in iterations if t >= 1) + " |", "|---" * len(iterations) + "|"]
    for m in methods:
        pairs, passed = by_iteration(recs, m, "pairs"), by_iteration(recs, m, "train_pass_at_n")
        if pairs:
            lines.append(f"| {m} | " + " | ".join(f"{pairs[t].mean:.0f} / {passed[t].mean:.3f}" if t in pairs and t in passed else ""
                                                 for t in iterations if t >= 1) + " |")
    if any(r.get("val_accuracy") is not None for r in recs):
        lines += ["", "## Checkpoint selection: validation accuracy of the selected M_t (%) and the step chosen, seed by seed", "",
                  "| method | " + " | ".join(f"M_{t}" for t in iterations if t >= 1) + " |", "|---" * len(iterations) + "|"]
        for m in methods:
            val = by_iteration(recs, m, "val_accuracy")
            steps = {t: [r["selected_step"] for r in sorted(recs, key=lambda r: r["seed"]) if r["method"] == m and r["iteration"] == t] for t in val}
            if val:
                lines.append(f"| {m} | " + " | ".join(f"{val[t]} (steps {', '.join(map(str, steps[t]))})" if t in val else ""
                                                     for t in iterations if t >= 1) + " |")
    lines += ["", "Per-record numbers: reproduction.json; per job and iteration: summary.csv."]
    return "\n".join(lines + _unfinished(sweep)) + "\n"


def _unfinished(sweep: Sweep) -> list[str]:
    unfinished = [j.name for j in sweep.unfinished] + sweep.missing
    return ["", f"Unfinished or not started jobs (their finished iterations are counted): {', '.join(unfinished)}"] if unfinished else []


def _logp_table(recs: list[dict], methods: list[str], label: str) -> list[str]:
    lines = ["", "## Log-probs of the winners and losers, start and end of each training (nats, mean ± std over seeds)", "",
             f"| {label} | training | chosen start → end | rejected start → end |", "|---|---|---|---|"]
    for m in methods:
        cols = {k: by_iteration(recs, m, k) for k in LOGP_KEYS}
        for t in sorted(cols["chosen_logp_end"]):
            lines.append(f"| {m} | M_{t - 1} → M_{t} | {_nats(cols['chosen_logp_start'].get(t))} → {_nats(cols['chosen_logp_end'].get(t))} | "
                         f"{_nats(cols['rejected_logp_start'].get(t))} → {_nats(cols['rejected_logp_end'].get(t))} |")
    return lines


def _word(reproduced: bool | None) -> str:
    return {True: "**yes**", False: "**no**", None: "not measured"}[reproduced]


def _seeds(seeds: list[int]) -> str:
    return ", ".join(map(str, seeds))


def summary(found: list[dict]) -> str:
    """One paragraph, computed from the verdicts: which claims hold in this regime."""
    said = {True: "Holds here", False: "Does not hold here", None: "Not measured"}
    parts = []
    for ok in (True, False, None):
        claims = [v["claim"].split(" (Table")[0].split(", each at")[0] for v in found if v["reproduced"] is ok]
        if claims:
            parts.append(f"{said[ok]}: " + "; ".join(claims) + ".")
    return " ".join(parts)


def _nats(s: Stat | None) -> str:
    return "" if s is None else f"{s.mean:.3f}" + (f" ± {s.std:.3f}" if s.n > 1 else "")


def _busy(events: list[dict]) -> float:
    """Seconds a job ran: from each launch to its last event before the next launch (a job
    launched again later, to resume or to find itself finished, does not count the wait)."""
    total, start, last = 0.0, None, None
    for e in events:
        if e.get("event") == "launch":
            total += (last - start) if start is not None else 0.0
            start = e["time"]
        last = e["time"]
    return total + ((last - start) if start is not None else 0.0)


def _provenance(sweep: Sweep, seeds: list[int]) -> list[str]:
    """The command(s) that made the sweep (each launch's, as recorded), the commit(s) they ran,
    and how long the jobs took: wall-clock, and summed over jobs (what one command running
    them one after another takes)."""
    per_job = [read_jsonl(job.path / "events.jsonl") for job in sweep.jobs if (job.path / "events.jsonl").exists()]
    launches = [e for events in per_job for e in events if e.get("event") == "launch"]
    commits = sorted({e["commit"][:12] + (" (with uncommitted changes)" if e.get("dirty") else "") for e in launches if e.get("commit")})
    spans: dict[str, list[float]] = {}  # per command: the times of the events its launches led to
    for events in per_job:
        command = None
        for e in events:
            if e.get("event") == "launch" and "argv" in e:
                command = "python -m irpo " + " ".join(e["argv"])
            if command:
                spans.setdefault(command, []).append(e["time"])
    commands = sorted(spans, key=lambda c: min(spans[c]))  # in the order they were first launched
    out = ["Command" + ("s" if len(commands) > 1 else "") + ": " + ("; ".join(f"`{c}`" for c in commands) or "not recorded"), "",
           f"Commit: {', '.join(commits) or 'not recorded'}", "", f"Jobs: {len(sweep.jobs)}, seeds {', '.join(map(str, seeds))}"]
    if spans:
        summed = sum(_busy(events) for events in per_job)
        walls = ", ".join(f"{(max(spans[c]) - min(spans[c])) / 60:.1f}" for c in commands)
        out[-1] += (f"; wall-clock{' of each command' if len(spans) > 1 else ''} from its first job's start to its last job's end: {walls} min; "
                    f"the jobs' own times summed: {summed / 60:.1f} min, {summed / 60 / len(per_job):.1f} min per job")
    return out


def _side(i: Interval | None) -> str:
    """Where an interval of a difference lies: the word for the objective against the other."""
    if i is None or i.verdict is None:
        return "not measured against"
    return "above" if i.low > 0 else "below" if i.high < 0 else "not separated from"


def settings(sweep: Sweep) -> dict[str, str]:
    """Each arm's recipe as its jobs ran it: learning rate, alpha and the objective's own fields."""
    out = {}
    for job in sweep.jobs:
        cfg = job.config
        fields = OmegaConf.to_container(cfg.method, resolve=True)
        own = [f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in fields.items() if k not in ("_target_", "name", "alpha", "sample")]
        out.setdefault(cfg.method.name, ", ".join([f"lr {float(cfg.model.lr):g}", f"α {float(cfg.alpha):g}", *own]))
    return out


def objectives_markdown(sweep: Sweep, recs: list[dict]) -> str:
    """sweep=objectives: accuracy by objective and iteration, each objective against IRPO and
    against STaR (paired by seed, each at its validation-chosen iteration), the log-prob moves,
    and one computed sentence per objective."""
    arms = [m for m in _arms(recs) if m != "zero_shot"]
    iterations = sorted({r["iteration"] for r in recs})
    seeds = sorted({r["seed"] for r in recs})
    recipe = settings(sweep)
    lines = ["# Preference objectives inside the loop, on the miniature", "", *_provenance(sweep, seeds), "",
             "## Greedy test accuracy (%), mean ± std over seeds", "",
             "Validation-chosen: each seed's M_t at the iteration its validation accuracy picks.", "",
             "| objective | setting | " + " | ".join(f"M_{t}" for t in iterations) + " | validation-chosen |", "|---" * (len(iterations) + 3) + "|"]
    for m in arms:
        points = by_iteration(recs, m, "greedy_acc")
        lines.append(f"| {m} | {recipe.get(m, '')} | " + " | ".join(str(points.get(t, "")) for t in iterations)
                     + f" | {stat([r['greedy_acc'] for r in chosen(recs, m).values()]) or ''} |")
    lines += ["", "![accuracy](accuracy.png)", "", "## Each objective against IRPO and against STaR (SFT on its own winners)", "",
              "A difference in greedy test accuracy paired by seed, each arm at its validation-chosen iteration, with its 95% interval; "
              "above or below when the interval excludes 0.", "",
              "| objective | − irpo | against irpo | − sft_chosen | against sft_chosen |", "|---|---|---|---|---|"]
    versus = {m: {o: difference(chosen(recs, m), chosen(recs, o)) for o in ("irpo", "sft_chosen")} for m in arms}
    for m in arms:
        cells = [f"{_pts(versus[m][o])} | {_side(versus[m][o])}" if o != m else "— | —" for o in ("irpo", "sft_chosen")]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "## What each objective does here", ""]
    lines += [f"- {_sentence(recs, m, recipe.get(m, ''), versus[m])}" for m in arms]
    lines += _logp_table(recs, arms, "objective")
    lines += ["", f"![log-probs per objective]({OBJECTIVES_FIGURE})", "", "Per-record numbers: reproduction.json; per job and iteration: summary.csv."]
    return "\n".join(lines + _unfinished(sweep)) + "\n"


def _sentence(recs: list[dict], method: str, recipe: str, versus: dict[str, Interval | None]) -> str:
    """One objective in one sentence, every number from the records."""
    acc = stat([r["greedy_acc"] for r in chosen(recs, method).values()])
    text = f"**{method}** ({recipe}): {acc or 'not measured'} at its validation-chosen iteration"
    against = [f"{_side(i)} {o} ({_pts(i)})" for o, i in versus.items() if o != method]
    if against:
        text += "; " + " and ".join(against)
    moves = []
    for side, name in (("chosen", "winners'"), ("rejected", "losers'")):
        d = paired(list(_moved(recs, method, side).values()))
        if d is not None:
            moves.append(f"its {name} log-prob {'rose' if d.mean > 0 else 'fell'} by {abs(d.mean):.3f} nats")
    if moves:
        text += "; over the training that made M_1 " + " and ".join(moves)
    return text + "."


def objectives_figure(recs: list[dict]):
    """One panel per objective: its winners' and losers' log-probs at the start and end of
    each training (mean ± std over seeds), on one shared scale."""
    from matplotlib.figure import Figure

    arms = [m for m in _arms(recs) if m != "zero_shot" and by_iteration(recs, m, "chosen_logp_end")]
    cols = min(5, max(1, len(arms)))
    rows = max(1, math.ceil(len(arms) / cols))
    fig = Figure(figsize=(3 * cols, 2.8 * rows))
    axes = fig.subplots(rows, cols, sharey=True, squeeze=False).ravel()
    for ax, m in zip(axes, arms):
        _draw_logps(ax, recs, m, "C0")
        ax.set_title(m, fontsize="medium")
    for ax in axes[len(arms):]:
        ax.set_visible(False)
    fig.suptitle("Winners (solid) and losers (dashed): mean summed log-prob (nats) at the start and end of each training")
    fig.tight_layout()
    return fig
