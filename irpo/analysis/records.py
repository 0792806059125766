"""What the comparisons read of a sweep: one record per (method, seed, iteration), written to
reproduction.json, and the questions asked of the records (which arms, which seeds, which M_0s,
mean ± std per iteration, each seed's validation-chosen M_t). Also the name each report gives
an arm, so that a figure's lines and a table's rows read alike.

A record holds greedy_acc, maj_acc, the M_0 it started from (m0, hidden) and, for t >= 1, the
mean summed log-prob of the winners and losers of the training that made M_t under the policy
at its start and its end, its pairs, train pass@N and selected checkpoint. Every number comes
from the jobs' files (metrics.jsonl, events.jsonl, .hydra/).
"""

from __future__ import annotations

import re

from omegaconf import OmegaConf

from irpo.analysis.intervals import Interval, Stat, paired, stat
from irpo.analysis.results import Job, Sweep, comparable
from irpo.run.artifacts import read_jsonl

METHOD_ORDER = ("zero_shot", "sft_gold", "sft_chosen", "dpo", "irpo")
LOGP_KEYS = ("chosen_logp_start", "chosen_logp_end", "rejected_logp_start", "rejected_logp_end")


def records(sweep: Sweep) -> list[dict]:
    """One record per (method, seed, iteration) of the finished and unfinished jobs alike."""
    out = []
    for job in sweep.jobs:
        cfg = job.config
        maj = f"maj@{cfg.eval.maj_k}" if cfg.eval.maj_k else None
        rows = {r["iteration"]: r for r in job.rows}
        start = {"hidden": _hidden(job), "m0": _m0(job)}
        for t, row in sorted(rows.items()):
            rec = {
                "method": cfg.method.name,
                "seed": int(cfg.seed),
                "iteration": t,
                "greedy_acc": row.get("test_accuracy"),
                "maj_acc": row.get(maj) if maj else None,
                **start,
            }
            before = rows.get(t - 1, {})
            if t >= 1:
                rec |= {k: before.get(k) for k in LOGP_KEYS}
                rec |= {
                    k: before.get(src)
                    for k, src in (
                        ("pairs", "pairs"),
                        ("train_pass_at_n", "train_pass_at_n"),
                        ("val_accuracy", "val_accuracy_selected"),
                        ("selected_step", "selected_step"),
                    )
                }
            out.append(rec)
    return out


def _m0(job: Job) -> str:
    """The job's M_0 as its config names it: a shipped one as ${irpo_asset:<name>}, whatever
    checkout ran it, a directory by its path as given."""
    path = OmegaConf.to_container(job.config.model, resolve=False)["path"]  # an override's value, as the job ran it
    return comparable(f"model.path={path}").partition("=")[2]


def _hidden(job: Job) -> int | None:
    """The width of the job's M_0, as its launch recorded the model's shape."""
    events = read_jsonl(job.path / "events.jsonl") if (job.path / "events.jsonl").exists() else []
    return next((e["arch"]["hidden"] for e in events if e.get("event") == "launch" and e.get("arch")), None)


def compares_methods(sweep: Sweep) -> bool:
    return len({OmegaConf.select(job.config, "method.name") for job in sweep.jobs}) > 1


def compares_m0s(recs: list[dict]) -> bool:
    """Whether the sweep starts from several M_0s (widths, or builds of one width): a capacity sweep."""
    return len({r["m0"] for r in recs}) > 1


def compares_objectives(sweep: Sweep) -> bool:
    """Whether the sweep is sweep=objectives (each job's command names it)."""
    return any(job.overrides.get("sweep") == "objectives" for job in sweep.jobs)


def arms(recs: list[dict]) -> list[str]:
    """The methods of the records: the paper's in its order, then the others by name."""
    found = {r["method"] for r in recs}
    return [m for m in METHOD_ORDER if m in found] + sorted(found - set(METHOD_ORDER))


def seed_sets(recs: list[dict], size: int = 6) -> list[list[int]]:
    """The sweep's seeds in sets of `size`, in order: the first decides, the others replicate."""
    seeds = sorted({r["seed"] for r in recs})
    return [seeds[i : i + size] for i in range(0, len(seeds), size)]


def m0s(recs: list[dict]) -> list[str]:
    """The records' M_0s, by width, then name."""
    width = {r["m0"]: r["hidden"] or 0 for r in recs}
    return sorted(width, key=lambda m0: (width[m0], m0))


def starting_from(recs: list[dict], m0: str) -> list[dict]:
    return [r for r in recs if r["m0"] == m0]


def m0_label(m0: str) -> str:
    """An M_0 as the reports name it: a shipped one by its name, any other by its path."""
    shipped = re.fullmatch(r"\$\{irpo_asset:(\w+)\}", m0)
    return f"{shipped[1]} (shipped)" if shipped else m0


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
        out[seed] = (
            max(validated, key=lambda r: (r["val_accuracy"], -r["iteration"]))
            if validated
            else max(runs, key=lambda r: r["iteration"])
        )
    return out


def difference(a: dict[int, dict], b: dict[int, dict], key: str = "greedy_acc") -> Interval | None:
    """`key` of a minus `key` of b, paired by seed over the seeds both have."""
    return paired(
        [
            a[s][key] - b[s][key]
            for s in sorted(set(a) & set(b))
            if a[s].get(key) is not None and b[s].get(key) is not None
        ]
    )


def moved(recs: list[dict], method: str, side: str, sign: float = 1.0) -> dict[int, float]:
    """Per seed, how far the training that made M_1 moved its pairs' `side` log-prob."""
    keys = f"{side}_logp_start", f"{side}_logp_end"
    return {
        r["seed"]: sign * (r[keys[1]] - r[keys[0]])
        for r in recs
        if r["method"] == method and r["iteration"] == 1 and None not in (r.get(keys[0]), r.get(keys[1]))
    }


# The swept keys that pick an arm's recipe, and what the reports' tables call them instead.
_NAMED = {"experiment": "method", "method": "method", "model.path": "M_0"}


def arm_names(sweep: Sweep) -> dict[str, str]:
    """Each configuration's label (Sweep.label) → its name as the reports' tables give it: the
    method its config composed for `experiment=` or `method=`, its M_0 as CAPACITY.md names it
    for `model.path=`, any other swept key as key=value. Where two configurations would share
    a name, each keeps its label."""
    out = {}
    for label, jobs in sweep.configurations().items():
        job, parts = jobs[0], []
        for k in sweep.compared:
            value = job.overrides.get(k, "-")
            name_of = {"method": lambda: OmegaConf.select(job.config, "method.name"), "M_0": lambda: m0_label(value)}
            parts.append(name_of.get(_NAMED.get(k), lambda: f"{k}={value}")())
        out[label] = ", ".join(dict.fromkeys(map(str, parts))) or label  # experiment= and method= name one method
    return out if len(set(out.values())) == len(out) else {label: label for label in out}


def arm_title(sweep: Sweep) -> str | None:
    """What the names of arm_names are: the swept keys, as the tables call them (or as the
    command line does, where the configurations keep their labels)."""
    names = arm_names(sweep)
    kept = all(name == label for label, name in names.items())
    keys = sweep.compared if kept else [_NAMED.get(k, k) for k in sweep.compared]
    return ", ".join(dict.fromkeys(keys)) or None
