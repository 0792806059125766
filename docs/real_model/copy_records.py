"""Copies the real-model sweep's records (no weights, no training samples) into docs/real_model/:

    python docs/real_model/copy_records.py [multirun/real_model] [docs/real_model]

For every job directory of the sweep with a logged iteration (its `metrics.jsonl`): its `.hydra/` config and overrides, `events.jsonl`,
`metrics.jsonl`, `manifest.json`, and under each `iter_<t>/` the JSON, JSONL and CSV records:
the test evaluation with its per-problem greedy answers (`eval.json`, `eval_generations.jsonl`,
what a paired-by-problem interval needs), the iteration's metrics, the selection and its
validation answers, the training curve (`train/metrics.csv`). Left out: the model weights and
checkpoints (`m0/`, `model/`, `*.safetensors`, `*.ckpt`), the shards a killed stage resumes
from, and the training samples and pairs (`generations.jsonl`, `pairs.jsonl`: ~1 MB an
iteration; they stay in the sweep directory). The sweep's own `multirun.yaml` and report files
(`summary.*`) are copied beside the jobs.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

KEEP = {".json", ".jsonl", ".yaml", ".csv"}
SKIP_DIRS = {"m0", "model", "generations"}
SKIP_FILES = {"generations.jsonl", "pairs.jsonl", "hydra.yaml"}


def records(job: Path):
    for path in sorted(job.rglob("*")):
        rel = path.relative_to(job)
        if not path.is_file() or path.suffix not in KEEP or path.name in SKIP_FILES:
            continue
        if any(part in SKIP_DIRS or part.endswith("_shards") for part in rel.parts[:-1]):
            continue
        yield rel


def main(argv: list[str] | None = None) -> None:
    args = (argv if argv is not None else sys.argv[1:]) + [None, None]
    sweep = Path(args[0] or "multirun/real_model")
    out = Path(args[1] or Path(__file__).parent)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("multirun.yaml", "summary.csv", "summary.json"):
        if (sweep / name).is_file():
            shutil.copyfile(sweep / name, out / name)
    for job in sorted(d for d in sweep.iterdir() if (d / "metrics.jsonl").is_file()):  # an iteration logged
        n = 0
        for rel in records(job):
            (out / job.name / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(job / rel, out / job.name / rel)
            n += 1
        print(f"{job.name}: {n} files")


if __name__ == "__main__":
    main()
