"""The paper in miniature: Table 1 and Figures 2-3 of Pang et al. (2024) from a sweep over
methods and seeds (sweeps/paper_mini.yaml), with a verdict per claim.

`python -m irpo.report <sweep dir>` writes, when the sweep compares methods:

    reproduction.json   one record per (method, seed, iteration): greedy_acc, maj_acc, and for
                        t >= 1 the mean summed log-prob of the winners and losers of the
                        training that made M_t, under the policy at its start and its end
    REPRODUCTION.md     Table 1 in miniature beside the paper's GSM8K numbers, the figures,
                        pairs and pass@N per iteration, and a verdict per claim
    fig2_logps.png, fig3_logps.png

Every number comes from the jobs' files (metrics.jsonl, events.jsonl, .hydra/); none is
typed here except the paper's own, quoted from its Table 1.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from omegaconf import OmegaConf

from irpo.artifacts import atomic_path, read_jsonl, write_json
from irpo.results import Sweep

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
        for t, row in sorted(rows.items()):
            rec = {"method": cfg.method.name, "seed": int(cfg.seed), "iteration": t, "greedy_acc": row.get("test_accuracy"),
                   "maj_acc": row.get(maj) if maj else None}
            before = rows.get(t - 1, {})
            if t >= 1:
                rec |= {k: before.get(k) for k in LOGP_KEYS}
                rec |= {k: before.get(src) for k, src in (("pairs", "pairs"), ("train_pass_at_n", "train_pass_at_n"),
                                                          ("val_accuracy", "val_accuracy_selected"), ("selected_step", "selected_step"))}
            out.append(rec)
    return out


@dataclass
class Stat:
    mean: float
    std: float
    n: int

    def __str__(self) -> str:
        return f"{100 * self.mean:.1f} ± {100 * self.std:.1f}" if self.n > 1 else f"{100 * self.mean:.1f}"


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


def verdicts(recs: list[dict]) -> list[dict]:
    """The paper's claims, each checked on the sweep's records: claim, reproduced (True,
    False, or None where the sweep lacks the arms), and the numbers behind it."""
    acc = {m: by_iteration(recs, m, "greedy_acc") for m in METHOD_ORDER}
    out = []

    def claim(text: str, ok: bool | None, numbers: str) -> None:
        out.append({"claim": text, "reproduced": ok, "numbers": numbers})

    irpo = acc["irpo"]
    if {0, 1, 2} <= set(irpo):
        spread = max(s.std for s in irpo.values())
        ok = irpo[0].mean < irpo[1].mean < irpo[2].mean and irpo[2].mean - irpo[0].mean > 2 * spread
        claim("IRPO improves over iterations: M_0 < M_1 < M_2, and M_2 − M_0 above twice the largest per-iteration std over seeds",
              ok, f"M_0 {irpo[0]}, M_1 {irpo[1]}, M_2 {irpo[2]}; M_2 − M_0 = {100 * (irpo[2].mean - irpo[0].mean):.1f}, 2 × max std = {200 * spread:.1f}")
    else:
        claim("IRPO improves over iterations", None, "the sweep has no irpo arm with 2 iterations")
    if 1 in irpo and 1 in acc["dpo"]:
        d = acc["dpo"][1]
        claim("The NLL term matters: IRPO above DPO at M_1 (Table 1: 73.1 vs 61.8)", irpo[1].mean > d.mean, f"irpo {irpo[1]}, dpo {d}")
    for other, paper in (("sft_chosen", "65.2"), ("sft_gold", "63.5")):
        if irpo and acc[other]:
            bi, bo = _best(irpo), _best(acc[other])
            margin = max(irpo[bi].std, acc[other][bo].std)
            claim(f"IRPO's best iteration above {other}'s best by more than the seeds' std (Table 1: 73.1+ vs {paper})",
                  irpo[bi].mean - acc[other][bo].mean > margin,
                  f"irpo best M_{bi} {irpo[bi]}, {other} best M_{bo} {acc[other][bo]}; difference {100 * (irpo[bi].mean - acc[other][bo].mean):.1f}, std {100 * margin:.1f}")
    moves = {m: {k: by_iteration(recs, m, k).get(1) for k in LOGP_KEYS} for m in METHOD_ORDER}

    def change(m: str, side: str) -> float | None:
        start, end = moves[m][f"{side}_logp_start"], moves[m][f"{side}_logp_end"]
        return None if start is None or end is None else end.mean - start.mean

    dc, ic = change("dpo", "chosen"), change("irpo", "chosen")
    if dc is not None and ic is not None:
        claim("Fig. 3: over the training that made M_1, the chosen log-prob falls under DPO and rises under IRPO", dc < 0 < ic,
              f"mean change of the chosen log-prob: dpo {dc:+.3f}, irpo {ic:+.3f} nats")
    sr, sc = change("sft_chosen", "rejected"), change("sft_chosen", "chosen")
    if sr is not None and sc is not None:
        claim("Fig. 2: SFT on the chosen sequences raises the rejected log-probs too", sr > 0,
              f"sft_chosen: chosen {sc:+.3f}, rejected {sr:+.3f} nats")
    gc = change("sft_gold", "chosen")
    if gc is not None and sc is not None:
        claim("Fig. 2: SFT on the gold CoT barely raises the chosen log-probs (less than SFT on the chosen sequences does)", gc < sc,
              f"chosen: sft_gold {gc:+.3f}, sft_chosen {sc:+.3f} nats")
    ir = change("irpo", "rejected")
    if ic is not None and ir is not None:
        claim("Fig. 2: DPO + NLL raises the chosen log-probs and lowers the rejected ones", ic > 0 > ir,
              f"irpo: chosen {ic:+.3f}, rejected {ir:+.3f} nats")
    return out


def _best(points: dict[int, Stat]) -> int:
    """The iteration with the highest mean (M_0 excluded when any trained iteration exists)."""
    trained = {t: s for t, s in points.items() if t > 0} or points
    return max(trained, key=lambda t: trained[t].mean)


def write(sweep: Sweep) -> None:
    recs = records(sweep)
    write_json(sweep.root / "reproduction.json", recs)
    for name, fig in zip(FIGURES, (logp_figure(recs, ("sft_chosen", "sft_gold", "irpo"), "Fig. 2 in miniature: winners and losers under SFT (own winners, gold CoT) and IRPO"),
                                   logp_figure(recs, ("dpo", "irpo"), "Fig. 3 in miniature: winners and losers under DPO (alpha = 0) and IRPO (alpha = 1)"))):
        with atomic_path(sweep.root / name) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    with atomic_path(sweep.root / "REPRODUCTION.md") as tmp:
        tmp.write_text(markdown(sweep, recs))


def logp_figure(recs: list[dict], methods: tuple[str, ...], title: str):
    """Mean summed log-prob of each training's winners (solid) and losers (dashed) at its
    start and its end, M_t → M_t+1, per method (mean ± std over seeds)."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(8, 5))
    ax = fig.subplots()
    handles = []
    for i, method in enumerate(methods):
        color = f"C{METHOD_ORDER.index(method)}"
        drawn = False
        for side, style in (("chosen", "-"), ("rejected", "--")):
            start, end = by_iteration(recs, method, f"{side}_logp_start"), by_iteration(recs, method, f"{side}_logp_end")
            for t in sorted(set(start) & set(end)):
                x, y, e = [t - 1, t], [start[t].mean, end[t].mean], [start[t].std, end[t].std]
                ax.errorbar(x, y, yerr=e, color=color, linestyle=style, marker="o", capsize=3)
                drawn = True
        if drawn:
            handles.append((Line2D([], [], color=color), method))
    ax.set_xlabel("training M_t → M_t+1 (each segment: the iteration's pairs scored at the start and at the end)")
    ax.set_ylabel("mean summed log-prob of the sequence (nats)")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xticks(sorted({t for r in recs for t in (r["iteration"] - 1, r["iteration"]) if r["iteration"] >= 1 and r.get("chosen_logp_end") is not None}))
    ax.set_xticklabels([f"M_{int(t)}" for t in ax.get_xticks()])
    ax.grid(alpha=0.3)
    styles = [(Line2D([], [], color="black"), "winners (chosen)"), (Line2D([], [], color="black", linestyle="--"), "losers (rejected)")]
    ax.legend(*zip(*(handles + styles)), fontsize="small", loc="best")
    if not handles:
        ax.text(0.5, 0.5, "no log-prob pass in these jobs", transform=ax.transAxes, ha="center")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def markdown(sweep: Sweep, recs: list[dict]) -> str:
    methods = [m for m in METHOD_ORDER if any(r["method"] == m for r in recs)]
    iterations = sorted({r["iteration"] for r in recs})
    seeds = sorted({r["seed"] for r in recs})
    lines = [f"# The paper in miniature: {sweep.root.name}", ""]
    lines += _provenance(sweep, seeds)
    lines += ["", "## Table 1 in miniature: greedy test accuracy (%), mean ± std over seeds", "",
              "| method | " + " | ".join(f"M_{t}" for t in iterations) + " | paper (GSM8K, 70B) |", "|---" * (len(iterations) + 2) + "|"]
    for key, paper in (("greedy_acc", PAPER_GSM8K), ("maj_acc", PAPER_GSM8K_MAJ)):
        if key == "maj_acc":
            if not any(r.get("maj_acc") is not None for r in recs):
                break
            lines += ["", "Majority vote over the evaluation samples (maj@k, %):", "",
                      "| method | " + " | ".join(f"M_{t}" for t in iterations) + " | paper maj@32 |", "|---" * (len(iterations) + 2) + "|"]
        for m in methods:
            points = by_iteration(recs, m, key)
            quoted = ", ".join(f"M_{t} {v}" for t, v in paper.get(m, {}).items())
            lines.append(f"| {m} | " + " | ".join(str(points[t]) if t in points else "" for t in iterations) + f" | {quoted} |")
    lines += ["", "![accuracy](accuracy.png)", "", "## Verdicts", "", "| claim | reproduced | numbers |", "|---|---|---|"]
    for v in verdicts(recs):
        word = {True: "**yes**", False: "**no**", None: "not measured"}[v["reproduced"]]
        lines.append(f"| {v['claim']} | {word} | {v['numbers']} |")
    lines += ["", "## Log-probs of the winners and losers, start and end of each training (nats, mean ± std over seeds)", "",
              "| method | training | chosen start → end | rejected start → end |", "|---|---|---|---|"]
    for m in methods:
        cols = {k: by_iteration(recs, m, k) for k in LOGP_KEYS}
        for t in sorted(cols["chosen_logp_end"]):
            lines.append(f"| {m} | M_{t - 1} → M_{t} | {_nats(cols['chosen_logp_start'].get(t))} → {_nats(cols['chosen_logp_end'].get(t))} | "
                         f"{_nats(cols['rejected_logp_start'].get(t))} → {_nats(cols['rejected_logp_end'].get(t))} |")
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
    unfinished = [j.name for j in sweep.unfinished] + sweep.missing
    if unfinished:
        lines += ["", f"Unfinished or not started jobs (their finished iterations are counted): {', '.join(unfinished)}"]
    return "\n".join(lines) + "\n"


def _nats(s: Stat | None) -> str:
    return "" if s is None else f"{s.mean:.3f}" + (f" ± {s.std:.3f}" if s.n > 1 else "")


def _provenance(sweep: Sweep, seeds: list[int]) -> list[str]:
    """The command that made the sweep, the commit(s) it ran, and how long its jobs took."""
    events = [e for job in sweep.jobs if (job.path / "events.jsonl").exists() for e in read_jsonl(job.path / "events.jsonl")]
    commits = sorted({e["commit"][:12] + (" (with uncommitted changes)" if e.get("dirty") else "")
                      for e in events if e.get("event") == "launch" and e.get("commit")})
    times = [e["time"] for e in events]
    multirun = sweep.root / "multirun.yaml"
    command = "python -m irpo.report " + str(sweep.root)
    if multirun.exists():
        overrides = [str(o) for o in OmegaConf.select(OmegaConf.load(multirun), "hydra.overrides.task") or []]
        command = "python -m irpo -m " + " ".join(overrides)
    out = [f"Command: `{command}`", "", f"Commit: {', '.join(commits) or 'not recorded'}", "",
           f"Jobs: {len(sweep.jobs)}, seeds {', '.join(map(str, seeds))}"]
    if times:
        out[-1] += f"; wall-clock from the first job's start to the last job's end: {(max(times) - min(times)) / 60:.1f} min"
    return out
