"""The LightningDataModule of one iteration: regenerate → reward → pair → reference log-probs,
then batches. It is the one place where training data is made; the passes that run a model
over the pairs are irpo/training/scoring.py's.

Each stage reads the files the previous one wrote in `iter_<t>/` and writes its own
(generations.jsonl, pairs.jsonl, reference_logps.safetensors); the loop records finished
stages in the run manifest. Generation is written in shards of prompts so that a long
sampling job killed half-way resumes at its last finished shard, and the batch order is
a function of (seed, iteration, epoch) so that training resumed mid-epoch sees the
batches an uninterrupted run would have.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

import lightning as L
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, Sampler

from irpo.config import ITEMS, SAMPLES, TRAINS
from irpo.errors import UserError
from irpo.generation.base import Generator
from irpo.methods import Items, Method
from irpo.pairs import Pair, PairRule, cap_pairs, pair_stats, prompt_pairs
from irpo.run.artifacts import Stage, atomic_path, merge_shards, read_jsonl, shard_seed, write_shards
from irpo.run.distributed import on_rank_zero, rank, replica_shards, world_size
from irpo.tasks.base import Example, Task, reward
from irpo.training.batching import MicroBatching, encode_examples
from irpo.training.scoring import score_pairs

GENERATIONS, GENERATION_SHARDS = "generations.jsonl", "generations"
PAIRS_FILE = "pairs.jsonl"
REFERENCE_LOGPS, PAIR_LOGPS = "reference_logps.safetensors", "pair_logps.safetensors"
# samples of M_t at iteration t's temperature, rewarded (the loop adds the temperatures)
GENERATE = Stage("generate", (GENERATIONS, GENERATION_SHARDS), SAMPLES, shareable=True)
PAIRS = Stage("pairs", (PAIRS_FILE,), ITEMS)
# M_t's log-probs of the items, before training
REFERENCE = Stage("reference", (REFERENCE_LOGPS,), (*ITEMS, *TRAINS))
# M_t's and M_{t+1}'s log-probs of the pairs, after training (the paper's Figs. 2-3)
LOGPS = Stage("logps", (PAIR_LOGPS,), (*ITEMS, *TRAINS))


@dataclass(frozen=True)
class DataSettings:
    """How an iteration's data is drawn and cut, as the run's config says (built once per
    iteration by the loop)."""

    num_samples: int  # N per train prompt
    temperature: float
    pair_rule: PairRule
    seed: int
    max_length: int  # prompt + completion tokens an item may hold
    batching: MicroBatching
    shard_size: int  # prompts per generation shard


class IterationData(L.LightningDataModule):
    def __init__(
        self,
        task: Task,
        examples: Sequence[Example],
        prompts: Sequence[str],
        out_dir: Path,
        iteration: int,
        tokenizer,
        method: Method,
        settings: DataSettings,
    ) -> None:
        super().__init__()
        self.task, self.examples, self.prompts, self.out = task, list(examples), list(prompts), Path(out_dir)
        self.iteration, self.tokenizer, self.method, self.settings = iteration, tokenizer, method, settings
        self.items: list[dict] = []
        self.dropped_too_long = 0

    # --- generate and reward -------------------------------------------------------------
    @property
    def generations_path(self) -> Path:
        return self.out / GENERATIONS

    def generate(self, open_generator: Callable[[], Generator], shard_dir: Path, replica_size: int = 1) -> None:
        """N samples per train prompt with M_t, each with its extracted answer and reward,
        into generations.jsonl; finished shards in shard_dir are not sampled again. Each
        generation replica of `replica_size` ranks samples its own shards."""

        def shard(lo: int, hi: int, s: int) -> list[dict]:
            seed = shard_seed(self.settings.seed, self.iteration, s)
            return self._rewarded(
                self.examples[lo:hi],
                open_generator().sample(
                    self.prompts[lo:hi], self.settings.num_samples, self.settings.temperature, seed
                ),
            )

        shards = write_shards(
            shard_dir,
            len(self.prompts),
            self.settings.shard_size,
            shard,
            partial(replica_shards, replica_size=replica_size),
        )
        on_rank_zero(merge_shards, self.generations_path, shards)

    def _rewarded(self, examples: Sequence[Example], samples: list[list[str]]) -> list[dict]:
        rows = []
        for ex, completions in zip(examples, samples):
            for j, completion in enumerate(completions):
                answer, r = reward(self.task, completion, ex)
                rows.append({"prompt_id": ex.id, "sample": j, "completion": completion, "answer": answer, "reward": r})
        return rows

    # --- pairs ---------------------------------------------------------------------------
    @property
    def pairs_path(self) -> Path:
        return self.out / PAIRS_FILE

    def make_pairs(self, generations: list[dict]) -> tuple[list[Pair], dict[str, float]]:
        """(winner, loser) pairs per prompt (irpo.pairs) and the iteration's data numbers."""
        by_prompt: dict[str, list[dict]] = {ex.id: [] for ex in self.examples}
        for row in generations:
            by_prompt[row["prompt_id"]].append(row)
        pairs: list[Pair] = []
        for ex, prompt in zip(self.examples, self.prompts):
            rows = by_prompt[ex.id]
            rule = self.settings.pair_rule
            gold = self.task.gold_completion(ex) if rule.gold_winner else None
            pairs += prompt_pairs(
                ex.id,
                prompt,
                [r["completion"] for r in rows],
                [r["reward"] for r in rows],
                rule.per_prompt,
                self.settings.seed,
                gold,
                rule.margin,
            )
        pairs = cap_pairs(pairs, self.settings.pair_rule.max_pairs, self.settings.seed + self.iteration)
        return pairs, pair_stats([[r["reward"] for r in by_prompt[ex.id]] for ex in self.examples], pairs)

    # --- what a method chooses its training items from (irpo.methods.TrainingData) --------
    def pairs(self) -> Items:
        pairs = read_jsonl(self.pairs_path)
        return Items([p["prompt"] for p in pairs], [p["chosen"] for p in pairs], [p["rejected"] for p in pairs])

    def samples(self) -> list[dict]:
        prompts = {ex.id: p for ex, p in zip(self.examples, self.prompts)}
        return [row | {"prompt": prompts[row["prompt_id"]]} for row in read_jsonl(self.generations_path)]

    def golds(self) -> Items:
        golds = [(p, self.task.gold_completion(ex)) for ex, p in zip(self.examples, self.prompts)]
        golds = [(p, g) for p, g in golds if g is not None]
        return Items([p for p, _ in golds], [g for _, g in golds], None)

    @property
    def reference_path(self) -> Path:
        return self.out / REFERENCE_LOGPS

    def setup(self, stage: str | None = None) -> None:
        """Token ids of the method's training items (encoded once), with the reference
        log-probs attached once they exist."""
        if not self.items:
            prompts, chosen, rejected, labels = self.method.items(self)
            self.items, self.dropped_too_long = encode_examples(
                self.tokenizer, prompts, chosen, rejected, self.settings.max_length
            )
            for it in self.items if labels is not None else ():
                it["label"] = labels[it["index"]]
            if not self.items:
                why = (
                    f"all {self.dropped_too_long} are longer than model.max_length={self.settings.max_length}"
                    if prompts
                    else f"task {self.task.name} gave none"
                )
                raise UserError(
                    f"iteration {self.iteration} has no {self.method.items_name} to train on ({self.method.name}): {why}"
                )
        if self.method.reference and self.reference_path.exists():
            ref = load_file(self.reference_path)
            for it in self.items:
                it["ref_chosen"], it["ref_rejected"] = (
                    ref["chosen"][it["index"]].item(),
                    ref["rejected"][it["index"]].item(),
                )
            if "tokens" in ref:  # a token-level method's table: a view of it per item
                table, offsets = ref["tokens"], ref["token_offsets"].tolist()
                for it in self.items:
                    it["ref_tokens"] = table[offsets[it["index"]] : offsets[it["index"] + 1]]

    def reference_logps(
        self, load_model: Callable[[], torch.nn.Module], device: str, precision: str = "32-true"
    ) -> int:
        """log M_t(w|x) and log M_t(l|x) of every pair, once, before θ moves (the DPO
        denominator of Eq. 1). Rows are aligned with pairs.jsonl; dropped pairs hold NaN.
        Scored under the trainer's `precision` as training's first step scores them.
        A token-level method's items (every sample) are scored at the iteration's sampling
        temperature, and their per-token table is stored too (`tokens`, ragged, with
        `token_offsets`; scoring.TokenTable): M_t is both the sampling policy π_old of the
        ratio and the reference, so one table serves both.
        Returns the pair-tokens this rank scored (batching.pair_tokens), for the stage's
        tokens/s."""
        self.setup()
        by_token = self.method.token_level
        scored = score_pairs(
            self.items,
            self.dropped_too_long,
            load_model,
            device,
            precision,
            self.settings.batching,
            self.settings.temperature if by_token else 1.0,
            tokens=by_token,
        )
        (chosen, rejected), tokens = scored[:2]
        tensors = {"chosen": chosen, "rejected": rejected}
        if by_token:
            tensors |= {"tokens": scored[2].values, "token_offsets": scored[2].offsets}
        on_rank_zero(self._write, self.reference_path, tensors)
        self.setup()
        return tokens

    @property
    def pair_logps_path(self) -> Path:
        return self.out / PAIR_LOGPS

    def pair_logps(
        self,
        load_start: Callable[[], torch.nn.Module],
        load_end: Callable[[], torch.nn.Module],
        device: str,
        precision: str = "32-true",
    ) -> int:
        """The summed log-probs of every pair's winner and loser under M_t (the start of
        training) and M_{t+1} (its end), whatever the method trained on: how training moved
        the chosen and the rejected sequences (the paper's Figs. 2 and 3). The start is the
        reference pass's when it scored these pairs. Returns the pair-tokens this rank scored."""
        pairs = self.pairs()
        if not pairs.prompts:  # a method that trains without pairs (KTO, SFT on gold) may have none
            on_rank_zero(self._write, self.pair_logps_path, {})
            return 0
        items, dropped = encode_examples(
            self.tokenizer, pairs.prompts, pairs.chosen, pairs.rejected, self.settings.max_length
        )
        tokens = 0
        if self.reference_path.exists() and self.method.items(self)[:3] == pairs[:3]:
            ref = load_file(self.reference_path)
            start = ref["chosen"], ref["rejected"]
        else:
            start, tokens = score_pairs(items, dropped, load_start, device, precision, self.settings.batching)
        end, scored = score_pairs(items, dropped, load_end, device, precision, self.settings.batching)
        scores = {"chosen_start": start[0], "rejected_start": start[1], "chosen_end": end[0], "rejected_end": end[1]}
        on_rank_zero(self._write, self.pair_logps_path, scores)
        return tokens + scored

    def pair_logp_means(self) -> dict[str, float]:
        """`chosen_logp_start`, ... `rejected_logp_end`: the pass's means over its pairs."""
        scores = load_file(self.pair_logps_path)
        return {
            f"{side}_logp_{when}": scores[f"{side}_{when}"].nanmean().item()
            for side in ("chosen", "rejected")
            for when in ("start", "end")
            if scores
        }

    @staticmethod
    def _write(path: Path, tensors: dict[str, torch.Tensor]) -> None:
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp))

    def train_dataloader(self) -> DataLoader:
        """This rank's share of each optimizer step, cut into micro-batches (module.py)."""
        done = 0
        if self.trainer is not None:
            # A mid-epoch checkpoint is restored before this is called: skip what was trained
            # on. `processed`, not `completed`: checkpoints are written in on_train_batch_end,
            # after a batch is processed and before Lightning counts it completed.
            done = self.trainer.fit_loop.epoch_loop.batch_progress.current.processed * self.settings.batching.step_items
        sampler = EpochSampler(
            len(self.items),
            shard_seed(self.settings.seed, self.iteration, -1),
            skip=done,
            rank=rank(),
            world=world_size(),
        )
        return DataLoader(
            self.items,
            batch_size=self.settings.batching.step_items,
            sampler=sampler,
            collate_fn=self.settings.batching.split,
        )


class EpochSampler(Sampler[int]):
    """A permutation per epoch drawn from (seed, epoch) alone, so any epoch's order can be
    rebuilt after a restart; `skip` drops the first items of the first epoch served (the
    ones a resumed run already trained on). Its length stays the full epoch's, which is
    what Lightning counts a resumed epoch's batches against.

    With several ranks, rank r takes every world-th item from r on: the first k items of
    every rank together are the first k·world of the one-process order, so that an
    optimizer step sees the same pairs at any world size. The order is padded from its
    start to a multiple of world, as every rank must run as many steps."""

    def __init__(self, size: int, seed: int, skip: int = 0, rank: int = 0, world: int = 1) -> None:
        self.size, self.seed, self.skip, self.epoch = size, seed, skip, None
        self.rank, self.world = rank, world

    def set_epoch(self, epoch: int) -> None:  # called by Lightning at each epoch start
        if self.epoch is not None and epoch != self.epoch:
            self.skip = 0
        self.epoch = epoch

    def __iter__(self):
        order = torch.randperm(
            self.size, generator=torch.Generator().manual_seed(self.seed * 1_000 + (self.epoch or 0))
        ).tolist()
        order = (order * self.world)[: len(self) * self.world]
        yield from order[self.rank :: self.world][self.skip :]

    def __len__(self) -> int:
        return -(-self.size // self.world)
