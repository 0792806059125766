"""The reader of what runs leave on disk: a run or sweep directory as Jobs (each one's
overrides, config, per-iteration metrics and how far it got), training curves, samples and
pairs. The report (report.py), the comparisons (records.py and the modules beside it), the
dashboard, the notebook and any other comparison read runs through it; it writes nothing.

Read: each job's `.hydra/overrides.yaml` and `config.yaml`, `metrics.jsonl`, `events.jsonl`,
`iter_<t>/train/metrics.csv`, `iter_<t>/pairs.jsonl`, `generations.jsonl`,
`eval_generations.jsonl`; the sweep's `multirun.yaml`.
"""

from __future__ import annotations

import csv
import os
import shutil
import statistics
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from irpo.config import WATCHES
from irpo.errors import ConfigError, UserError
from irpo.evaluate import result_files
from irpo.run import compat
from irpo.run.artifacts import read_jsonl

# Overrides that name the sweep, place its files or say how a job is watched: never a compared value.
_NOT_COMPARED = ("sweep", "hydra.", *WATCHES)


@dataclass
class Job:
    """One run directory: its overrides, its per-iteration metrics, and how far it got."""

    name: str
    path: Path
    overrides: dict[str, str]
    rows: list[dict]  # metrics.jsonl, one row per finished iteration
    last_iteration: int  # the iteration whose evaluation ends the run
    stopped_in: str | None = None  # the last stage started (events.jsonl), for an unfinished job

    @property
    def finished(self) -> bool:
        return any(r["iteration"] == self.last_iteration for r in self.rows)

    @cached_property
    def config(self) -> Any:
        """The config the job ran under, as its launch recorded it (.hydra/config.yaml, read with
        OmegaConf: attribute access, interpolations unresolved until read)."""
        return OmegaConf.load(self.path / ".hydra" / "config.yaml")


@dataclass
class Sweep:
    """A sweep directory's jobs (a lone run is a sweep of one) and the jobs it never started."""

    root: Path
    jobs: list[Job]
    missing: list[str] = field(default_factory=list)  # overrides of jobs never started

    @property
    def overridden(self) -> list[str]:
        """The keys the jobs' command lines set (a sweep's axes among them)."""
        return list(dict.fromkeys(k for job in self.jobs for k in job.overrides if not k.startswith(_NOT_COMPARED)))

    @property
    def swept(self) -> list[str]:
        """The override keys whose values differ between jobs: a multirun's axes (none for a
        lone run, whose overrides are only overrides)."""
        return [k for k in self.overridden if len({job.overrides.get(k) for job in self.jobs}) > 1]

    @property
    def columns(self) -> list[str]:
        """The keys a summary row names its job by: the swept ones, or a lone run's overrides."""
        return self.swept if len(self.jobs) > 1 else self.overridden

    @property
    def compared(self) -> list[str]:
        """The swept keys that tell configurations apart: all but the seed, which repeats one;
        none for a lone run."""
        return [k for k in self.swept if k != "seed"]

    def label(self, job: Job) -> str:
        return ", ".join(f"{k}={job.overrides.get(k, '-')}" for k in self.compared) or self.root.name

    @property
    def unfinished(self) -> list[Job]:
        return [job for job in self.jobs if not job.finished]

    def configurations(self) -> dict[str, list[Job]]:
        """Jobs by configuration label, in job order; the seeds of one configuration together."""
        groups: dict[str, list[Job]] = {}
        for job in self.jobs:
            groups.setdefault(self.label(job), []).append(job)
        return groups

    def table(self) -> list[dict]:
        """One row per job x iteration: job, swept values, then every per-iteration metric."""
        return [
            {"job": job.name, **{k: job.overrides.get(k) for k in self.columns}, **row}
            for job in self.jobs
            for row in job.rows
        ]

    def aggregate(self, metric: str) -> dict[str, list[tuple[int, float, float, int]]]:
        """Per configuration: (iteration, mean, std, seeds) of a metric over the jobs that
        reached the iteration; std is 0 for one seed."""
        out = {}
        for label, jobs in self.configurations().items():
            by_iter: dict[int, list[float]] = {}
            for job in jobs:
                for row in job.rows:
                    if isinstance(row.get(metric), (int, float)):
                        by_iter.setdefault(row["iteration"], []).append(float(row[metric]))
            points = [
                (t, statistics.fmean(v), statistics.stdev(v) if len(v) > 1 else 0.0, len(v))
                for t, v in sorted(by_iter.items())
            ]
            if points:
                out[label] = points
        return out

    def metrics(self) -> list[str]:
        """Every numeric per-iteration metric any job logged, in first-seen order."""
        keys = dict.fromkeys(
            k
            for job in self.jobs
            for row in job.rows
            for k, v in row.items()
            if k != "iteration" and isinstance(v, (int, float))
        )
        return list(keys)


def load(path: str | os.PathLike) -> Sweep:
    """A run directory (it has .hydra/) or a sweep directory (jobs in subdirectories)."""
    root = Path(path)
    if (root / ".hydra").is_dir():
        return Sweep(root, [read_job(root, root.name)])
    if not root.is_dir():
        raise UserError(f"{root} is not a directory")
    dirs = sorted(
        (d for d in root.iterdir() if (d / ".hydra").is_dir()),
        key=lambda d: (not d.name.isdigit(), int(d.name) if d.name.isdigit() else 0, d.name),
    )
    if not dirs and not (root / "multirun.yaml").exists():
        raise UserError(f"{root} holds neither an irpo run (.hydra/) nor a sweep (multirun.yaml)")
    jobs = [read_job(d, d.name) for d in dirs]
    started = {tuple(sorted(map(comparable, _overrides_list(j.path)))) for j in jobs}
    missing = [" ".join(o) for o in expected_jobs(root) if tuple(sorted(map(comparable, o))) not in started]
    return Sweep(root, jobs, missing)


def read_job(path: Path, name: str) -> Job:
    cfg = OmegaConf.load(path / ".hydra" / "config.yaml")
    try:
        trains = compat.recorded_method(cfg).trains
    except ConfigError:  # a method of the user's whose module is not importable here
        trains = True
    last = int(cfg.iterations) if trains else 0
    rows = read_jsonl(path / "metrics.jsonl") if (path / "metrics.jsonl").exists() else []
    job = Job(name, path, dict(_split(comparable(o)) for o in _overrides_list(path)), rows, last)
    if not job.finished and (path / "events.jsonl").exists():
        starts = [e["stage"] for e in read_jsonl(path / "events.jsonl") if e.get("event") == "start"]
        job.stopped_in = starts[-1] if starts else None
    return job


def _overrides_list(path: Path) -> list[str]:
    return [str(o) for o in OmegaConf.load(path / ".hydra" / "overrides.yaml")]


def comparable(override: str) -> str:
    """An override as the sweep file wrote it and as its job recorded it, made equal: Hydra
    records `${irpo_asset:mini_m0}` as the path it resolved to in that checkout, and its
    parser escapes the interpolation's braces; both become `key=${irpo_asset:mini_m0}`."""
    from irpo.models.load import ASSETS

    key, _, value = override.partition("=")
    value = value.replace("\\", "")
    parts = Path(value).parts
    if len(parts) >= 3 and parts[-3:-1] == ("irpo", "models") and parts[-1] in ASSETS:
        value = f"${{irpo_asset:{parts[-1]}}}"
    return f"{key}={value}"


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


# What the reports read of a job (its config, overrides, per-iteration metrics, events and
# training curves): a sweep's record without weights or samples.
RECORD_FILES = (
    ".hydra/config.yaml",
    ".hydra/overrides.yaml",
    "metrics.jsonl",
    "events.jsonl",
    "iter_*/train/metrics.csv",
)


def copy_records(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copies a sweep's record (each job's RECORD_FILES and the sweep's multirun.yaml) from
    src into dst, so that its reports regenerate there: what a committed report keeps."""
    src, dst = Path(src), Path(dst)
    sweep = load(src)
    for job in sweep.jobs:
        for pattern in RECORD_FILES:
            for f in sorted(job.path.glob(pattern)):
                target = dst / job.path.relative_to(src) / f.relative_to(job.path)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f, target)
    if (src / "multirun.yaml").exists():
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / "multirun.yaml", dst / "multirun.yaml")


def expected_jobs(root: Path) -> list[list[str]]:
    """The jobs a sweep defines (its multirun.yaml: the sweeper's params and the command
    line), expanded as Hydra's basic sweeper does; [] when another sweeper made it."""
    path = root / "multirun.yaml"
    if not path.exists():
        return []
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = OmegaConf.load(path)
    if "BasicSweeper" not in str(OmegaConf.select(cfg, "hydra.sweeper._target_")):
        return []
    # unresolved: a value such as ${irpo_asset:mini_m0} is an override's text, as typed
    params = OmegaConf.select(cfg, "hydra.sweeper.params") or OmegaConf.create()
    args = [f"{k}={v}" for k, v in params.items_ex(resolve=False)] + list(
        OmegaConf.select(cfg, "hydra.overrides.task") or []
    )
    batches = BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)
    return [list(job) for batch in batches for job in batch]


def train_steps(job: Job) -> list[dict]:
    """The rows of every iteration's iter_<t>/train/metrics.csv end to end: `step` counts on
    across iterations (each iteration's trainer starts again at 0), `iteration` says which,
    and `progress` = t + the fraction of iteration t's logged steps done, which lines up
    runs whose iterations have different numbers of steps."""
    from irpo.training.train import CHECKPOINTS

    out, offset = [], 0
    for t in range(job.last_iteration):
        path = job.path / f"iter_{t}" / CHECKPOINTS / "metrics.csv"
        if not path.exists():
            continue
        rows = [
            r
            for r in ({k: _number(v) for k, v in r.items() if v != ""} for r in csv.DictReader(path.open()))
            if "step" in r
        ]
        steps = max((int(r["step"]) for r in rows), default=0) + 1
        out += [
            {**r, "iteration": t, "step": offset + int(r["step"]), "progress": t + (int(r["step"]) + 1) / steps}
            for r in rows
        ]
        offset += steps
    return out


def _number(value: str) -> Any:
    try:
        return float(value)
    except ValueError:
        return value


def _pair_roles(it: Path) -> dict[tuple[str, str], str]:
    from irpo.training.data import PAIRS_FILE

    roles: dict[tuple[str, str], str] = {}
    if (it / PAIRS_FILE).exists():
        for p in read_jsonl(it / PAIRS_FILE):
            roles.setdefault((p["prompt_id"], p["rejected"]), "loser")
            roles[(p["prompt_id"], p["chosen"])] = "winner"
    return roles


def generation_samples(it: Path, prompts: dict[str, str], n_prompts: int) -> list[dict]:
    """The samples of the first n_prompts train prompts of iteration dir `it` (the same
    prompts every iteration): prompt, completion, extracted answer, reward, and whether the
    sample became a winner, a loser or neither."""
    from irpo.training.data import GENERATIONS

    if not (it / GENERATIONS).exists() or n_prompts == 0:
        return []
    gens = read_jsonl(it / GENERATIONS)
    ids = list(dict.fromkeys(g["prompt_id"] for g in gens))[:n_prompts]
    roles = _pair_roles(it)
    return [
        {
            "iteration": int(it.name.split("_")[1]),
            "prompt_id": g["prompt_id"],
            "prompt": prompts.get(g["prompt_id"], ""),
            "completion": g["completion"],
            "answer": g["answer"],
            "reward": g["reward"],
            "role": roles.get((g["prompt_id"], g["completion"]), ""),
        }
        for g in gens
        if g["prompt_id"] in ids
    ]


EVAL_FILES = result_files("eval")


def eval_samples(it: Path, prompts: dict[str, str], n: int) -> list[dict]:
    """M_t's greedy answers to the first n test problems."""
    records = it / EVAL_FILES.records
    if not records.exists() or n == 0:
        return []
    return [
        {
            "iteration": int(it.name.split("_")[1]),
            "prompt_id": r["prompt_id"],
            "prompt": prompts.get(r["prompt_id"], ""),
            "gold": r["gold"],
            "completion": r["greedy"],
            "answer": r["answer"],
            "reward": r["reward"],
        }
        for r in read_jsonl(records)[:n]
    ]


def pairs_across_iterations(job: Job, prompt_id: str | None = None, per_iteration: int = 1) -> list[dict]:
    """The (winner, loser) pairs of one train question in each iteration (by default the
    first question that has pairs in every iteration that made pairs)."""
    from irpo.training.data import PAIRS_FILE

    by_iter = {
        t: read_jsonl(p) for t in range(job.last_iteration) if (p := job.path / f"iter_{t}" / PAIRS_FILE).exists()
    }
    if prompt_id is None:
        common = (
            set.intersection(*({p["prompt_id"] for p in pairs} for pairs in by_iter.values())) if by_iter else set()
        )
        first = next(iter(by_iter.values()), [])
        prompt_id = next((p["prompt_id"] for p in first if p["prompt_id"] in common), None)
    return [
        {
            "iteration": t,
            "prompt_id": p["prompt_id"],
            "prompt": p["prompt"],
            "winner": p["chosen"],
            "loser": p["rejected"],
        }
        for t, pairs in by_iter.items()
        for p in [q for q in pairs if q["prompt_id"] == prompt_id][:per_iteration]
    ]
