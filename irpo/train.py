"""Training M_{t+1}: a fresh Lightning Trainer and optimizer per iteration, the policy
initialised from M_t, and M_{t+1} saved in Hugging Face format for the next generator."""

from __future__ import annotations

import pickle
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig

from irpo.artifacts import atomic_path
from irpo.data import IterationData
from irpo.errors import UserError
from irpo.module import PreferenceModule


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning writes checkpoints in place; a kill mid-write would leave a truncated
    last.ckpt that the resumed run then fails to load. Write aside, then rename."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)


def train_policy(cfg: DictConfig, data: IterationData, model_dir: str, out: Path, ckpt_dir: Path, loggers: list) -> dict[str, float]:
    """Fits M_θ on the iteration's data, resuming from ckpt_dir/last.ckpt if a killed run
    left one; saves M_{t+1} to `out` and returns the last logged training metrics and the pair-tokens trained on in this process."""
    t = cfg.trainer
    module = PreferenceModule(
        model_dir=model_dir, train_on=cfg.method.train_on, beta=cfg.beta, alpha=cfg.alpha, lr=cfg.model.lr,
        weight_decay=t.weight_decay, warmup_steps=t.warmup_steps, dtype=cfg.model.dtype, reference=t.reference,
        trust_remote_code=cfg.model.trust_remote_code, iteration=data.iteration,
    )
    trainer = L.Trainer(
        accelerator=t.accelerator, devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy, precision=t.precision,
        max_epochs=t.max_epochs, max_steps=t.max_steps, accumulate_grad_batches=t.batch_size // data.micro_batch_size,
        gradient_clip_val=t.gradient_clip_val, log_every_n_steps=t.log_every_n_steps, logger=loggers,
        callbacks=[ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_train_steps=t.checkpoint_every_n_steps)],
        plugins=[AtomicCheckpointIO()], enable_progress_bar=t.progress_bar, enable_model_summary=False, default_root_dir=str(ckpt_dir),
    )
    last = ckpt_dir / "last.ckpt"
    try:
        # weights_only: a checkpoint is data, never code to run on load.
        trainer.fit(module, datamodule=data, ckpt_path=str(last) if last.exists() else None, weights_only=True)
    except pickle.UnpicklingError as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise UserError(f"{last}: not a checkpoint irpo loads safely ({first}); delete it to retrain this iteration from M_t") from exc
    with atomic_path(out) as tmp:
        module.policy.save_pretrained(tmp, safe_serialization=True)
        data.tokenizer.save_pretrained(tmp)
    logged = {k.removeprefix("train/"): float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
    return logged | {"pair_tokens": module.pair_tokens}
