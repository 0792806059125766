"""The comparison reports, as markdown: each writer takes the records (records.py) and the
Claims decided on them (claims.py) and returns the text; irpo/analysis/report.py writes it.

    REPRODUCTION.md   the paper in miniature (sweeps/paper_mini.yaml): Table 1 beside the
                      paper's GSM8K numbers, a verdict per claim and its replication on further
                      seeds, the log-prob moves of Figs. 2-3, pairs and pass@N per iteration
    OBJECTIVES.md     sweep=objectives: every preference objective against IRPO and STaR
    CAPACITY.md       a sweep over M_0s: IRPO minus STaR, M_0 by M_0

Every number comes from the jobs' files (metrics.jsonl, events.jsonl, .hydra/); none is
typed here except the paper's own, quoted from its Table 1 (claims.py).
"""

from __future__ import annotations

import statistics

from omegaconf import OmegaConf

from irpo.analysis.claims import PAPER_GSM8K, PAPER_GSM8K_MAJ, Claim, capacity, verdicts
from irpo.analysis.intervals import Interval, Stat, paired, stat
from irpo.analysis.records import (
    LOGP_KEYS,
    arms,
    by_iteration,
    chosen,
    difference,
    m0_label,
    moved,
    seed_sets,
    starting_from,
)
from irpo.analysis.results import Sweep
from irpo.run.artifacts import read_jsonl

# The figures each report shows, drawn by irpo/analysis/figures.py.
REPRODUCTION_FIGURES = ("fig2_logps.png", "fig3_logps.png")
CAPACITY_FIGURE = "capacity.png"
OBJECTIVES_FIGURE = "objectives_logps.png"
UNITS = {"points": (100.0, " points"), "nats": (1.0, " nats")}


def _pts(i: Interval | None, unit: str = "points") -> str:
    """An interval as the tables print it: points of accuracy to 0.1, nats to 0.001."""
    if i is None:
        return "not measured"
    (scale, word), f = UNITS[unit], 1 if unit == "points" else 3
    if i.low is None:
        return f"{scale * i.mean:+.{f}f}{word} (one seed: no interval)"
    return f"{scale * i.mean:+.{f}f}{word}, 95% interval [{scale * i.low:+.{f}f}, {scale * i.high:+.{f}f}], {i.n} seeds"


def statement(claim: Claim) -> str:
    """A claim as the verdict tables state it: what it says, where the paper shows it, and how
    its arms were taken."""
    text = claim.name + (f" ({claim.source})" if claim.source else "")
    return text + (", each at its validation-chosen iteration" if claim.at_chosen else "")


def numbers(claim: Claim) -> str:
    """What decided a claim: each quantity measured and its interval, or why there is none."""
    return claim.missing or "; ".join(f"{m.label} {_pts(m.interval, m.unit)}" for m in claim.measured)


def capacity_markdown(sweep: Sweep, recs: list[dict]) -> str:
    """CAPACITY.md: IRPO minus STaR for each M_0, by width; builds of one width side by side."""
    seeds = sorted({r["seed"] for r in recs})
    found = capacity(recs)
    width = {m0: starting_from(recs, m0)[0]["hidden"] for m0 in found}
    start = {
        m0: statistics.mean(r["greedy_acc"] for r in starting_from(recs, m0) if r["iteration"] == 0) for m0 in found
    }
    lines = [
        "# The miniature's capacity axis",
        "",
        *_provenance(sweep, seeds),
        "",
        "## IRPO minus SFT on its own winners (STaR), by M_0",
        "",
        "Greedy test accuracy, each arm at the iteration its validation accuracy picks; a 95% interval over seeds paired by seed.",
        "",
        "| M_0 | width | M_0 accuracy | irpo | sft_chosen | irpo − sft_chosen | IRPO above STaR |",
        "|---|---|---|---|---|---|---|",
    ]
    for m0, diff in found.items():
        accs = [
            stat([r["greedy_acc"] for r in chosen(starting_from(recs, m0), m).values()]) for m in ("irpo", "sft_chosen")
        ]
        lines.append(
            f"| `{m0_label(m0)}` | {width[m0]} | {100 * start[m0]:.1f} | {accs[0] or ''} | {accs[1] or ''} | {_pts(diff)} | "
            f"{_word(diff.verdict if diff else None)} |"
        )
    widths = sorted({w for w in width.values() if w is not None})
    for h in widths:
        builds = [m0 for m0 in found if width[m0] == h]
        if len(builds) > 1:
            sides = [_side(found[m0]) for m0 in builds]
            lines += [
                "",
                f"Width {h}, {len(builds)} builds of M_0 by one recipe: IRPO is "
                + "; ".join(
                    f"{side} STaR from `{m0_label(m0)}` (M_0 {100 * start[m0]:.1f}; {_pts(found[m0])})"
                    for side, m0 in zip(sides, builds)
                )
                + (
                    ". The build does not change where IRPO lies."
                    if len(set(sides)) == 1
                    else ". Where IRPO lies against STaR depends on the build of M_0."
                ),
            ]
    by_width = {h: statistics.mean(start[m] for m in found if width[m] == h) for h in widths}
    if list(by_width.values()) != sorted(by_width.values()):
        lines += [
            "",
            "M_0's own accuracy does not rise with its width ("
            + ", ".join(f"{h}: {100 * a:.1f}" for h, a in by_width.items())
            + "): one build recipe trained the widths unequally, so this axis mixes capacity with how well each M_0 was trained.",
        ]
    lines += ["", f"![capacity]({CAPACITY_FIGURE})", "", "Per-record numbers: reproduction.json."]
    return "\n".join(lines) + "\n"


def reproduction_markdown(sweep: Sweep, recs: list[dict]) -> str:
    """REPRODUCTION.md: Table 1 in miniature, the verdicts (replicated on each further set of
    seeds), IRPO minus each arm, the log-prob moves, pairs and pass@N, checkpoint selection."""
    methods = arms(recs)
    iterations = sorted({r["iteration"] for r in recs})
    seeds = sorted({r["seed"] for r in recs})
    lines = [f"# The paper in miniature: {sweep.root.name}", ""]
    lines += _provenance(sweep, seeds)
    head = "| method | " + " | ".join(f"M_{t}" for t in iterations) + " | validation-chosen M_t | {} |"
    rule = "|---" * (len(iterations) + 3) + "|"
    lines += [
        "",
        "## Table 1 in miniature: greedy test accuracy (%), mean ± std over seeds",
        "",
        "Validation-chosen: each seed's M_t at the iteration its validation accuracy picks (the iterations picked, seed by seed).",
        "",
        head.format("paper (GSM8K, 70B)"),
        rule,
    ]
    for key, paper in (("greedy_acc", PAPER_GSM8K), ("maj_acc", PAPER_GSM8K_MAJ)):
        if key == "maj_acc":
            if not any(r.get("maj_acc") is not None for r in recs):
                break
            lines += [
                "",
                "Majority vote over the evaluation samples (maj@k, %):",
                "",
                head.format("paper maj@32"),
                rule,
            ]
        for m in methods:
            points = by_iteration(recs, m, key)
            picked = chosen(recs, m)
            at = f"{stat([r.get(key) for r in picked.values()]) or ''} (M_{', M_'.join(str(r['iteration']) for r in picked.values())})"
            quoted = ", ".join(f"M_{t} {v}" for t, v in paper.get(m, {}).items())
            lines.append(
                f"| {m} | "
                + " | ".join(str(points[t]) if t in points else "" for t in iterations)
                + f" | {at} | {quoted} |"
            )
    lines += ["", "![accuracy](accuracy.png)", ""]
    sets = seed_sets(recs)
    first = [r for r in recs if r["seed"] in sets[0]]
    found = verdicts(first)
    lines += [
        f"## Verdicts (seeds {_seeds(sets[0])})",
        "",
        "Each claim is decided by a 95% interval over seeds: a difference paired by seed (each arm at the iteration its "
        "validation accuracy picks), or a per-seed change; reproduced when the interval lies above 0.",
        "",
        "| claim | reproduced | numbers |",
        "|---|---|---|",
    ]
    lines += [f"| {statement(v)} | {_word(v.reproduced)} | {numbers(v)} |" for v in found]
    lines += ["", summary(found)]
    for other in sets[1:]:
        again = verdicts([r for r in recs if r["seed"] in other])
        lines += [
            "",
            f"### The same claims on seeds {_seeds(other)}",
            "",
            "| claim | reproduced | agrees with seeds " + _seeds(sets[0]) + " | numbers |",
            "|---|---|---|---|",
        ]
        for v, w in zip(found, again):
            lines.append(
                f"| {statement(w)} | {_word(w.reproduced)} | {'yes' if w.reproduced == v.reproduced else '**no**'} | {numbers(w)} |"
            )
    lines += [
        "",
        "## IRPO minus each arm, each at its validation-chosen iteration (greedy test accuracy, points)",
        "",
        "| arm | " + " | ".join(f"seeds {_seeds(ss)}" for ss in sets) + " |",
        "|---" * (len(sets) + 1) + "|",
    ]
    for m in arms(recs):
        if m not in ("irpo", "zero_shot"):
            cells = [
                _pts(
                    difference(
                        chosen([r for r in recs if r["seed"] in ss], "irpo"),
                        chosen([r for r in recs if r["seed"] in ss], m),
                    )
                )
                for ss in sets
            ]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += _logp_table(recs, methods, "method")
    lines += [
        "",
        "![Fig. 2 in miniature](fig2_logps.png)",
        "",
        "![Fig. 3 in miniature](fig3_logps.png)",
        "",
        "## Samples of M_t: pairs and train pass@N per iteration (mean over seeds)",
        "",
        "| method | " + " | ".join(f"M_{t - 1} pairs / pass@N" for t in iterations if t >= 1) + " |",
        "|---" * len(iterations) + "|",
    ]
    for m in methods:
        pairs, passed = by_iteration(recs, m, "pairs"), by_iteration(recs, m, "train_pass_at_n")
        if pairs:
            lines.append(
                f"| {m} | "
                + " | ".join(
                    f"{pairs[t].mean:.0f} / {passed[t].mean:.3f}" if t in pairs and t in passed else ""
                    for t in iterations
                    if t >= 1
                )
                + " |"
            )
    if any(r.get("val_accuracy") is not None for r in recs):
        lines += [
            "",
            "## Checkpoint selection: validation accuracy of the selected M_t (%) and the step chosen, seed by seed",
            "",
            "| method | " + " | ".join(f"M_{t}" for t in iterations if t >= 1) + " |",
            "|---" * len(iterations) + "|",
        ]
        for m in methods:
            val = by_iteration(recs, m, "val_accuracy")
            steps = {
                t: [
                    r["selected_step"]
                    for r in sorted(recs, key=lambda r: r["seed"])
                    if r["method"] == m and r["iteration"] == t
                ]
                for t in val
            }
            if val:
                lines.append(
                    f"| {m} | "
                    + " | ".join(
                        f"{val[t]} (steps {', '.join(map(str, steps[t]))})" if t in val else ""
                        for t in iterations
                        if t >= 1
                    )
                    + " |"
                )
    lines += ["", "Per-record numbers: reproduction.json; per job and iteration: summary.csv."]
    return "\n".join(lines + _unfinished(sweep)) + "\n"


def _unfinished(sweep: Sweep) -> list[str]:
    unfinished = [j.name for j in sweep.unfinished] + sweep.missing
    return (
        ["", f"Unfinished or not started jobs (their finished iterations are counted): {', '.join(unfinished)}"]
        if unfinished
        else []
    )


def _logp_table(recs: list[dict], methods: list[str], label: str) -> list[str]:
    lines = [
        "",
        "## Log-probs of the winners and losers, start and end of each training (nats, mean ± std over seeds)",
        "",
        f"| {label} | training | chosen start → end | rejected start → end |",
        "|---|---|---|---|",
    ]
    for m in methods:
        cols = {k: by_iteration(recs, m, k) for k in LOGP_KEYS}
        for t in sorted(cols["chosen_logp_end"]):
            lines.append(
                f"| {m} | M_{t - 1} → M_{t} | {_nats(cols['chosen_logp_start'].get(t))} → {_nats(cols['chosen_logp_end'].get(t))} | "
                f"{_nats(cols['rejected_logp_start'].get(t))} → {_nats(cols['rejected_logp_end'].get(t))} |"
            )
    return lines


def _word(reproduced: bool | None) -> str:
    return {True: "**yes**", False: "**no**", None: "not measured"}[reproduced]


def _seeds(seeds: list[int]) -> str:
    return ", ".join(map(str, seeds))


def summary(found: list[Claim]) -> str:
    """One paragraph, computed from the verdicts: which claims hold in this regime."""
    said = {True: "Holds here", False: "Does not hold here", None: "Not measured"}
    parts = []
    for ok in (True, False, None):
        claims = [v.name for v in found if v.reproduced is ok]
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
    commits = sorted(
        {
            e["commit"][:12] + (" (with uncommitted changes)" if e.get("dirty") else "")
            for e in launches
            if e.get("commit")
        }
    )
    spans: dict[str, list[float]] = {}  # per command: the times of the events its launches led to
    for events in per_job:
        command = None
        for e in events:
            if e.get("event") == "launch" and "argv" in e:
                command = "python -m irpo " + " ".join(e["argv"])
            if command:
                spans.setdefault(command, []).append(e["time"])
    commands = sorted(spans, key=lambda c: min(spans[c]))  # in the order they were first launched
    out = [
        "Command"
        + ("s" if len(commands) > 1 else "")
        + ": "
        + ("; ".join(f"`{c}`" for c in commands) or "not recorded"),
        "",
        f"Commit: {', '.join(commits) or 'not recorded'}",
        "",
        f"Jobs: {len(sweep.jobs)}, seeds {', '.join(map(str, seeds))}",
    ]
    if spans:
        summed = sum(_busy(events) for events in per_job)
        walls = ", ".join(f"{(max(spans[c]) - min(spans[c])) / 60:.1f}" for c in commands)
        out[-1] += (
            f"; wall-clock{' of each command' if len(spans) > 1 else ''} from its first job's start to its last job's end: {walls} min; "
            f"the jobs' own times summed: {summed / 60:.1f} min, {summed / 60 / len(per_job):.1f} min per job"
        )
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
        own = [
            f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
            for k, v in fields.items()
            if k not in ("_target_", "name", "alpha", "sample")
        ]
        out.setdefault(cfg.method.name, ", ".join([f"lr {float(cfg.model.lr):g}", f"α {float(cfg.alpha):g}", *own]))
    return out


def objectives_markdown(sweep: Sweep, recs: list[dict]) -> str:
    """sweep=objectives: accuracy by objective and iteration, each objective against IRPO and
    against STaR (paired by seed, each at its validation-chosen iteration), the log-prob moves,
    and one computed sentence per objective."""
    objectives = [m for m in arms(recs) if m != "zero_shot"]
    iterations = sorted({r["iteration"] for r in recs})
    seeds = sorted({r["seed"] for r in recs})
    recipe = settings(sweep)
    lines = [
        "# Preference objectives inside the loop, on the miniature",
        "",
        *_provenance(sweep, seeds),
        "",
        "## Greedy test accuracy (%), mean ± std over seeds",
        "",
        "Validation-chosen: each seed's M_t at the iteration its validation accuracy picks.",
        "",
        "| objective | setting | " + " | ".join(f"M_{t}" for t in iterations) + " | validation-chosen |",
        "|---" * (len(iterations) + 3) + "|",
    ]
    for m in objectives:
        points = by_iteration(recs, m, "greedy_acc")
        lines.append(
            f"| {m} | {recipe.get(m, '')} | "
            + " | ".join(str(points.get(t, "")) for t in iterations)
            + f" | {stat([r['greedy_acc'] for r in chosen(recs, m).values()]) or ''} |"
        )
    lines += [
        "",
        "![accuracy](accuracy.png)",
        "",
        "## Each objective against IRPO and against STaR (SFT on its own winners)",
        "",
        "A difference in greedy test accuracy paired by seed, each arm at its validation-chosen iteration, with its 95% interval; "
        "above or below when the interval excludes 0.",
        "",
        "| objective | − irpo | against irpo | − sft_chosen | against sft_chosen |",
        "|---|---|---|---|---|",
    ]
    versus = {m: {o: difference(chosen(recs, m), chosen(recs, o)) for o in ("irpo", "sft_chosen")} for m in objectives}
    for m in objectives:
        cells = [f"{_pts(versus[m][o])} | {_side(versus[m][o])}" if o != m else "— | —" for o in ("irpo", "sft_chosen")]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines += ["", "## What each objective does here", ""]
    lines += [f"- {_sentence(recs, m, recipe.get(m, ''), versus[m])}" for m in objectives]
    lines += _logp_table(recs, objectives, "objective")
    lines += [
        "",
        f"![log-probs per objective]({OBJECTIVES_FIGURE})",
        "",
        "Per-record numbers: reproduction.json; per job and iteration: summary.csv.",
    ]
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
        d = paired(list(moved(recs, method, side).values()))
        if d is not None:
            moves.append(f"its {name} log-prob {'rose' if d.mean > 0 else 'fell'} by {abs(d.mean):.3f} nats")
    if moves:
        text += "; over the training that made M_1 " + " and ".join(moves)
    return text + "."
