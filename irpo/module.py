"""The LightningModule: the policy M_θ (initialised from M_t), the reference M_t, the loss.

One module serves every method (irpo/methods.py): it scores a micro-batch's items under the
policy (and the reference, where the method needs it) and minimises the method's objective.
The reference's log-probs are precomputed once per iteration by default (they do not change
while θ trains, and no second model then sits in memory); `reference="live"` keeps a
frozen copy.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass

import lightning as L
import torch

from irpo.batching import collate, pair_tokens, split_to
from irpo.config import ModelConfig, TrainerConfig
from irpo.distributed import max_over_ranks
from irpo.errors import UserError
from irpo.methods import BatchLogps, Method
from irpo.scoring import batch_logps
from irpo.models.load import load_policy, policy_skeleton
from irpo.models.lora import init_adapters, with_lora
from irpo.strategies import SHARDED, load_sharded, shard_policy


def _frozen(model):
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_policy(model_dir: str, dtype: str, trust_remote_code: bool, sharded: bool = False, lora: dict | None = None,
                 activation_checkpointing: bool = False):
    """M_t as the policy to train: its weights (or, to be sharded, its modules on the meta
    device), activations recomputed in backward if asked, LoRA adapters if lora["r"] > 0."""
    policy = (policy_skeleton if sharded else load_policy)(model_dir, dtype, trust_remote_code)
    if activation_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return with_lora(policy, **(lora or {"r": 0, "alpha": 0, "dropout": 0, "target_modules": []}))


@dataclass(frozen=True)
class PolicyTraining:
    """How M_θ is built and optimized, as the run's config says (train.policy_training)."""

    lr: float
    weight_decay: float = TrainerConfig.weight_decay
    warmup_steps: int = TrainerConfig.warmup_steps
    dtype: str = ModelConfig.dtype  # what the policy is loaded in (irpo/precision.py: float32 under mixed precision)
    reference: str = TrainerConfig.reference  # or live: a frozen copy of M_t scores each batch
    trust_remote_code: bool = ModelConfig.trust_remote_code
    strategy: str = TrainerConfig.strategy
    precision: str = TrainerConfig.precision
    activation_checkpointing: bool = TrainerConfig.activation_checkpointing
    cpu_offload: bool = TrainerConfig.cpu_offload
    adapters: dict | None = None  # peft LoRA arguments (train.lora_args); None: full fine-tuning
    gradient_clip_val: float | None = TrainerConfig.gradient_clip_val


class PreferenceModule(L.LightningModule):
    """One Lightning batch is this rank's share of one optimizer step (`trainer.batch_size`
    pairs over all ranks), already cut into micro-batches bounded in pairs and tokens
    (batching.micro_batches); the step runs forward and backward over each, its loss weighted
    by its share of the step's pairs, then steps the optimizer once: the gradient of the mean
    loss over the step's pairs, however many micro-batches their lengths needed."""

    def __init__(self, method: Method, model_dir: str, training: PolicyTraining, iteration: int = 0) -> None:
        super().__init__()
        # plain values: a checkpoint holds data only (loaded with weights_only)
        self.save_hyperparameters({"model_dir": model_dir, "iteration": iteration, **asdict(training)})
        self.method = method
        tr = training
        self.automatic_optimization = False  # micro-batches of varying count per step
        self.sharded = tr.strategy in SHARDED
        # from_pretrained returns eval mode
        self.policy = build_policy(model_dir, tr.dtype, tr.trust_remote_code, self.sharded, tr.adapters, tr.activation_checkpointing).train()
        self.reference = _frozen(load_policy(model_dir, tr.dtype, tr.trust_remote_code)) if tr.reference == "live" and method.reference else None
        # Pair-tokens trained on (counted as a plain step feeds them, prompt once per
        # sequence) and the last step's metrics, over the whole training: both are kept in
        # its checkpoints, so a resumed training reports what an uninterrupted one does.
        self.pair_tokens, self.last_metrics = 0, {}
        self.resumed_pair_tokens = 0  # of pair_tokens, those trained on before this launch
        self._step_start, self._step_tokens = 0.0, 0

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self._step_start, self._step_tokens = time.perf_counter(), 0

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["irpo"] = {"pair_tokens": self.pair_tokens, "last_metrics": self.last_metrics}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("irpo", {})
        self.pair_tokens = self.resumed_pair_tokens = state.get("pair_tokens", 0)
        self.last_metrics = state.get("last_metrics", {})

    def configure_model(self) -> None:
        """Under a sharded strategy: shard the meta-device policy over the data-parallel
        ranks, then give each rank its part of M_t's weights (Lightning calls this once
        its process group and device mesh exist)."""
        if not self.sharded or any(p.device.type != "meta" for p in self.policy.parameters()):
            return
        hp = self.hparams
        shard_policy(self.policy, self.device_mesh["data_parallel"], hp.precision, hp.cpu_offload)
        load_sharded(self.policy, hp.model_dir, self.trainer.strategy.root_device)
        init_adapters(self.policy)

    def training_step(self, groups: list[list[dict]], batch_idx: int) -> torch.Tensor:
        # Every rank runs as many forwards (each a collective under a sharded policy).
        groups = split_to(groups, max_over_ranks(len(groups)))
        pairs = sum(len(g) for g in groups)
        optimizer, schedule = self.optimizers(), self.lr_schedulers()
        totals: dict[str, torch.Tensor] = {}
        for i, group in enumerate(groups):
            batch = {k: v.to(self.device) for k, v in collate(group).items()}
            self._step_tokens += pair_tokens(batch)
            loss, metrics = self.micro_batch_loss(batch)
            share = len(group) / pairs
            with self._gradient_sync(i == len(groups) - 1):
                self.manual_backward(loss * share)
            for name, value in metrics.items():
                totals[name] = totals.get(name, 0.0) + value.detach() * share
        if self.hparams.gradient_clip_val and self.hparams.strategy != "deepspeed_zero3":  # DeepSpeed clips in its engine
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.gradient_clip_val, gradient_clip_algorithm="norm")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        self.pair_tokens += self._step_tokens
        totals["train/tokens_per_s"] = torch.tensor(self._step_tokens / max(time.perf_counter() - self._step_start, 1e-9), device=self.device)
        self._log(totals)
        return totals["train/loss"]

    @contextmanager
    def _gradient_sync(self, last: bool):
        """Gradients are reduced over the ranks at the step's last backward only."""
        strategy = self.trainer.strategy
        if last:
            yield
        elif self.sharded:
            self.policy.set_requires_gradient_sync(False)
            try:
                yield
            finally:
                self.policy.set_requires_gradient_sync(True)
        elif self.hparams.strategy == "deepspeed_zero3":
            strategy.model.set_gradient_accumulation_boundary(False)
            try:
                yield
            finally:
                strategy.model.set_gradient_accumulation_boundary(True)
        else:  # DDP's no_sync; a single device (SingleDeviceStrategy) has nothing to sync
            with getattr(strategy, "block_backward_sync", nullcontext)():
                yield

    def micro_batch_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The mean loss over a collated micro-batch's items, and what is logged of it."""
        logps, counts = batch_logps(self.policy, batch)
        policy = self._split(logps, counts)._replace(labels=batch.get("label"))
        reference = None
        if self.reference is not None:
            with torch.no_grad():
                reference = self._split(*batch_logps(self.reference, batch))
        elif self.method.reference:
            reference = BatchLogps(batch["ref_chosen"], batch.get("ref_rejected"), policy.chosen_tokens, policy.rejected_tokens)
        loss, metrics = self.method.objective(policy, reference)
        self._check_finite(loss)
        return loss, {f"train/{name}": value for name, value in metrics.items()}

    def _split(self, logps: torch.Tensor, counts: torch.Tensor) -> BatchLogps:
        """A collated batch's log-probs as its items' (winners first, then losers, for pairs)."""
        if not self.method.paired:
            return BatchLogps(logps, None, counts, None)
        (chosen, rejected), (chosen_tokens, rejected_tokens) = logps.chunk(2), counts.chunk(2)
        return BatchLogps(chosen, rejected, chosen_tokens, rejected_tokens)

    def _log(self, metrics: dict[str, torch.Tensor]) -> None:
        """The step's metrics, averaged over the ranks' pairs (one collective), to the
        progress bar and, every log_every_n_steps, to the loggers. The row is handed to them
        here, before Lightning checkpoints this step: logged through self.log, it would
        reach them only after the checkpoint, and a kill in between would lose it for good.
        `step` is the number of optimizer steps before this one, as Lightning counts;
        `iteration` on every row draws all iterations' curves in one W&B run."""
        names = sorted(metrics)
        mean = self.trainer.strategy.reduce(torch.stack([metrics[n].float() for n in names]), reduce_op="mean")
        row = dict(zip(names, mean.tolist())) | {"iteration": float(self.hparams.iteration)}
        self.last_metrics = row
        self.log_dict(row, prog_bar=True, logger=False)
        if self.global_step % self.trainer.log_every_n_steps == 0:
            for logger in self.loggers:
                logger.log_metrics(row | {"epoch": self.current_epoch}, step=self.global_step - 1)

    def _check_finite(self, loss: torch.Tensor) -> None:
        # Stopping here, before backward and before this step's checkpoint, keeps the last
        # checkpoint from before the bad step and leaves no M_{t+1} saved as if trained.
        if not torch.isfinite(loss):
            hp = self.hparams
            raise UserError(
                f"iteration {hp.iteration}, training step {self.global_step}: the loss is {loss.item()}; "
                f"lower model.lr (now {hp.lr:g})"
            )

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for p in self.policy.parameters() if p.requires_grad]
        if hp.strategy == "deepspeed_zero3" and hp.cpu_offload:
            # ZeRO-Offload steps the optimizer on the CPU, with DeepSpeed's own AdamW.
            from deepspeed.ops.adam import DeepSpeedCPUAdam as AdamW
        else:
            AdamW = torch.optim.AdamW
        optimizer = AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        warmup = max(hp.warmup_steps, 1)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
