"""Evaluation of M_t on a split (the test split each iteration, the validation split to select
M_{t+1}): greedy accuracy and majority vote over k samples (maj@k), and the eval stage."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Sequence

from irpo.config import DECODES, READS_MODEL
from irpo.generation.base import Generator
from irpo.run.artifacts import Stage, merge_shards, read_jsonl, shard_seed, write_json, write_shards
from irpo.run.distributed import on_rank_zero, replica_shards
from irpo.tasks.base import Example, Task, check, correct, reward

if TYPE_CHECKING:
    from irpo.spec import RunSpec


class ResultFiles(NamedTuple):
    """What evaluating a split writes in its directory."""

    metrics: str  # <name>.json
    records: str  # <name>_generations.jsonl: one record per problem
    shards: str  # <name>_shards/: an unfinished evaluation's finished shards


def result_files(name: str) -> ResultFiles:
    return ResultFiles(f"{name}.json", f"{name}_generations.jsonl", f"{name}_shards")


# M_t's test accuracy and maj@k (the loop adds the temperatures M_t was sampled at)
EVAL = Stage("eval", tuple(result_files("eval")), (*READS_MODEL, *DECODES, "seed", "eval."), shareable=True)


def majority_vote(answers: Sequence[str | None]) -> str | None:
    """The most frequent extracted answer; unanswered samples do not vote. Ties go to the
    answer that appeared first, so the vote never depends on hashing or set order."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    first = {}
    for i, a in enumerate(answers):
        first.setdefault(a, i)
    return max(counts, key=lambda a: (counts[a], -first[a]))


def evaluate(
    generator: Generator,
    task: Task,
    examples: Sequence[Example],
    prompts: Sequence[str],
    maj_k: int,
    maj_temperature: float,
    seed: int,
) -> list[dict]:
    """One record per test problem: the greedy completion, its answer and reward, and
    (maj_k > 0) the majority answer over maj_k samples and its reward."""
    records = []
    for ex, completion in zip(examples, generator.greedy(prompts)):
        answer, r = reward(task, completion, ex)
        records.append({"prompt_id": ex.id, "gold": ex.answer, "greedy": completion, "answer": answer, "reward": r})
    if maj_k > 0:
        for rec, ex, samples in zip(records, examples, generator.sample(prompts, maj_k, maj_temperature, seed)):
            rec["maj_answer"] = majority_vote([reward(task, s, ex)[0] for s in samples])
            rec["maj_reward"] = check(task, rec["maj_answer"], ex.answer)
    return records


def summarize(records: Sequence[dict], maj_k: int, split: str = "test") -> dict[str, float]:
    """{"<split>_accuracy", "maj@k", "<split>_size"} of evaluate()'s records."""
    n = max(len(records), 1)
    metrics = {f"{split}_accuracy": sum(correct(r["reward"]) for r in records) / n, f"{split}_size": len(records)}
    if maj_k > 0:
        metrics[f"maj@{maj_k}"] = sum(r["maj_reward"] for r in records) / n
    return metrics


@dataclass(frozen=True)
class Problems:
    """A split's examples and their prompts as the model reads them, in one order."""

    split: str  # train, test, val
    examples: list
    prompts: list[str]

    @property
    def files(self) -> ResultFiles:
        return result_files("eval" if self.split == "test" else self.split)


def evaluate_into(
    out: Path, problems: Problems, generator, shard_dir: Path, spec: RunSpec, t: int, maj_k: int | None = None
) -> None:
    """A model's metrics on the problems into out/<name>.json (name: eval for the test split,
    val for the validation split), one record per problem beside it in
    <name>_generations.jsonl; the problems are evaluated in shards so that a killed
    evaluation resumes too."""
    maj_k, seed, task, files = spec.eval.maj_k if maj_k is None else maj_k, spec.loop.seed, spec.task, problems.files
    examples, prompts = problems.examples, problems.prompts

    def shard(lo: int, hi: int, s: int) -> list[dict]:
        # seed + 1: the maj@k samples are not drawn from the same streams as training samples.
        return evaluate(
            generator(),
            task,
            examples[lo:hi],
            prompts[lo:hi],
            maj_k,
            spec.eval.maj_temperature,
            shard_seed(seed + 1, t, s),
        )

    records = out / files.records
    shards = write_shards(
        shard_dir,
        len(examples),
        spec.loop.shard_size,
        shard,
        partial(replica_shards, replica_size=spec.generator.replica_size),
    )
    on_rank_zero(merge_shards, records, shards)
    on_rank_zero(lambda: write_json(out / files.metrics, summarize(read_jsonl(records), maj_k, problems.split)))
