"""Training M_{t+1}: a fresh Lightning Trainer and optimizer per iteration, the policy
initialised from M_t, and M_{t+1} saved in Hugging Face format for the next generator."""

from __future__ import annotations

import csv
import pickle
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.loggers import Logger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.trainer.connectors.signal_connector import _SignalConnector
from lightning.pytorch.utilities import rank_zero_only

from irpo.config import ITEMS, TRAINS
from irpo.errors import UserError
from irpo.models.load import policy_skeleton
from irpo.models.lora import merged, with_lora
from irpo.run.artifacts import Stage, atomic_path
from irpo.run.distributed import devices_per_node, launched, nodes, on_rank_zero, world_size
from irpo.run.failpoints import failpoint
from irpo.run.preemption import Interrupted, agreed
from irpo.training.batching import MicroBatching
from irpo.training.data import IterationData
from irpo.training.module import PolicyTraining, PreferenceModule
from irpo.training.selection import CANDIDATES, MODEL, candidate_dir, candidate_steps
from irpo.training.trainers import Trainer

if TYPE_CHECKING:
    from irpo.spec import RunSpec


CHECKPOINTS = "train"  # Lightning checkpoints to resume from, and the per-step metrics.csv
METRICS = "metrics.json"  # the iteration's numbers (the loop adds the later stages' as they finish)
# M_{t+1} trained from M_t on the iteration's items
TRAIN = Stage("train", (CHECKPOINTS, CANDIDATES, MODEL, METRICS), (*ITEMS, *TRAINS))


class AtomicCheckpointIO(TorchCheckpointIO):
    """A checkpoint written beside its destination and renamed into place, so that a kill
    mid-write leaves no truncated last.ckpt. Lightning's own writer serialises the whole
    checkpoint into memory, then stages the file in $TMPDIR (fsspec's transaction): a copy
    of the model states in RAM and a node-local $TMPDIR too small for them."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


class StepCSV(Logger):
    """iter_<t>/train/metrics.csv, a row per logged training step, that survives a resume:
    the rows of an earlier launch up to the step this one starts from are kept (Lightning's
    CSVLogger deletes them), the ones it logged after its last checkpoint are dropped (this
    launch logs those steps again). Each row is appended and flushed as it comes; a row
    half-written by a kill is discarded on reading."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path, self._fields = path, None

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> str:
        return ""

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass  # the run's config is in .hydra/config.yaml

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if rank_zero_only.rank != 0:
            return
        row = {"step": step, **{k: float(v) for k, v in metrics.items()}}
        if self._fields is None or set(row) - set(self._fields):
            kept = [r for r in self.rows() if int(r["step"]) < step] if self._fields is None else self.rows()
            self._fields = sorted(set(row).union(*kept))
            with atomic_path(self.path) as tmp, open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self._fields)
                writer.writeheader()
                writer.writerows(kept)
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._fields).writerow(row)

    def rows(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        text = self.path.read_text()
        complete = text[: text.rfind("\n") + 1]
        return list(csv.DictReader(complete.splitlines()))


class CandidateCheckpoints(Callback):
    """Saves the policy as candidate `step_<n>` after every n-th optimizer step. A resumed
    training skips the steps whose candidates exist; the set is read once, at the start, so
    that every rank takes the same decisions (saving a sharded policy is collective)."""

    def __init__(self, it: Path, every_n_steps: int, save: Callable[[Path], None]) -> None:
        self.it, self.every, self.save = it, every_n_steps, save
        self.saved = set(candidate_steps(it))

    def save_step(self, step: int) -> None:
        if step not in self.saved:
            self.save(candidate_dir(self.it, step) / MODEL)
            self.saved.add(step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        # global_step holds still where a step ends no batch (a resumed epoch's skipped
        # ones): the set keeps each step to one save.
        if trainer.global_step and trainer.global_step % self.every == 0:
            self.save_step(trainer.global_step)


class StopAtStep(Callback):
    """At each optimizer step's end every rank agrees, in one all-reduce, whether a stop
    signal reached any rank and whether `every_seconds` have passed on rank 0's clock since
    the last checkpoint; either way the step is checkpointed to `last` (a collective save
    under a sharded strategy), and a signal then ends training (irpo.run.preemption). Listed
    after the candidates' callback, so that a step's candidate is saved before its checkpoint,
    as ModelCheckpoint (which Lightning runs last) saves."""

    def __init__(self, last: Path, every_seconds: float | None) -> None:
        self.last, self.every = last, every_seconds
        self.saved_at = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        failpoint(f"train-step:{trainer.global_step}")
        signum, save = agreed(self.every is not None and time.monotonic() - self.saved_at >= self.every)
        if save:
            trainer.save_checkpoint(self.last)
        if signum:
            raise Interrupted(signum, step=trainer.global_step)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        self.saved_at = time.monotonic()  # any checkpoint, ModelCheckpoint's too, restarts the clock


class LeaveSignalsAlone(_SignalConnector):
    """Lightning's own signal handling, off (irpo.run.preemption handles every signal for the
    whole loop): its SIGTERM handler runs a broadcast inside the handler, a collective that
    can cross the one the main thread is in, and leaves without a checkpoint; under SLURM
    its SIGUSR1 handler requeues the job on its own."""

    def register_signal_handlers(self) -> None:
        pass

    def teardown(self) -> None:
        pass


def train_policy(
    spec: RunSpec,
    data: IterationData,
    model_dir: str,
    out: Path,
    ckpt_dir: Path,
    loggers: list,
    candidates_in: Path | None = None,
) -> dict[str, float]:
    """Fits M_θ on the iteration's data, resuming from ckpt_dir/last.ckpt if a killed run
    left one; saves M_{t+1} to `out`, or, when selecting (`candidates_in`: the iteration's
    directory), a candidate every selection.val_every_n_steps and at the last step there.
    Returns the last step's training metrics and the pair-tokens trained on, in all (a
    resumed training counts those before its checkpoint) and by this launch."""
    t = spec.trainer
    module = PreferenceModule(spec.method, model_dir, spec.training, data.iteration, data.settings.temperature)
    devices, num_nodes = processes()
    save = partial(save_policy, module, spec, model_dir, data.tokenizer)
    last = ckpt_dir / "last.ckpt"
    candidates = (
        CandidateCheckpoints(candidates_in, spec.selection.val_every_n_steps, save)
        if candidates_in is not None
        else None
    )
    callbacks = [
        *([candidates] if candidates else []),
        StopAtStep(last, t.checkpoint_every_seconds),
        ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_train_steps=t.checkpoint_every_n_steps),
    ]
    trainer = L.Trainer(
        accelerator=t.accelerator,
        devices=devices,
        num_nodes=num_nodes,
        strategy=t.lightning_strategy(),
        precision=t.precision,
        max_epochs=t.max_epochs,
        max_steps=t.max_steps,
        log_every_n_steps=t.log_every_n_steps,
        logger=[StepCSV(ckpt_dir / "metrics.csv"), *loggers],
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=t.progress_bar and sys.stderr.isatty(),
        enable_model_summary=False,
        default_root_dir=str(ckpt_dir),
        use_distributed_sampler=False,  # data.EpochSampler splits the batches over the ranks itself
    )
    trainer._signal_connector = LeaveSignalsAlone(trainer)
    try:
        # weights_only: a checkpoint is data, never code to run on load.
        trainer.fit(module, datamodule=data, ckpt_path=str(last) if last.exists() else None, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(
            f"{last}: not a checkpoint irpo loads safely ({first}); delete it to retrain this iteration from M_t"
        ) from exc
    if candidates:
        candidates.save_step(trainer.global_step)
    else:
        save(out)
    logged = {k.removeprefix("train/"): v for k, v in module.last_metrics.items() if k.startswith("train/")}
    return logged | {
        "pair_tokens": module.pair_tokens,
        "launch_pair_tokens": module.pair_tokens - module.resumed_pair_tokens,
    }


def processes() -> tuple[int, int]:
    """(devices, num_nodes) for Lightning: under torchrun or srun the launch's own (Lightning
    refuses any other), else one device (config.validate refuses more: Lightning would start
    copies of the whole loop)."""
    return (devices_per_node(), nodes()) if launched() else (1, 1)


def micro_batching(t: Trainer) -> MicroBatching:
    """Each rank's share of an optimizer step (batch_size pairs spread over all ranks:
    config.validate checks that they divide), cut into forwards of at most micro_batch_size
    pairs (default: the whole share) and micro_batch_tokens tokens."""
    share = max(1, t.batch_size // world_size())
    return MicroBatching(share, min(t.micro_batch_size or share, share), t.micro_batch_tokens)


def save_policy(module: PreferenceModule, spec: RunSpec, model_dir: str, tokenizer, out: Path) -> None:
    """M_{t+1} as a Hugging Face safetensors checkpoint (adapters merged in), written by
    rank 0; a sharded policy is first gathered whole onto rank 0's CPU."""
    dtype = spec.model.save_dtype or spec.model.dtype
    if spec.trainer.gathered:
        state = spec.trainer.full_state_dict(module.policy)
        on_rank_zero(_save_gathered, state, spec.training, model_dir, tokenizer, out, dtype)
    else:
        on_rank_zero(_save, merged(module.policy), tokenizer, out, dtype)


def _save(policy, tokenizer, out: Path, dtype: str) -> None:
    """The policy in `dtype` (its float32 master weights rounded once, here), tokenizer beside."""
    state = {k: v.to(getattr(torch, dtype)) for k, v in policy.state_dict().items()}
    with atomic_path(out) as tmp:
        policy.save_pretrained(tmp, state_dict=state, safe_serialization=True)
        # save_pretrained records the dtype of the module, not of the state it was given
        config = policy.config.__class__.from_pretrained(tmp)
        config.dtype = dtype
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def _save_gathered(state: dict, training: PolicyTraining, model_dir: str, tokenizer, out: Path, dtype: str) -> None:
    policy = with_lora(policy_skeleton(model_dir, dtype, training.trust_remote_code), **training.adapters)
    policy.load_state_dict(state, assign=True)
    policy.tie_weights()  # assign= gave tied embeddings two tensors
    _save(merged(policy), tokenizer, out, dtype)
