"""The LightningModule: the policy M_θ (initialised from M_t), the reference M_t, the loss.

One module serves every method (irpo/methods.py): it scores a micro-batch's items under the
policy (and the reference, where the method needs it) and minimises the method's objective.
The reference's log-probs are precomputed once per iteration by default (they do not change
while θ trains, and no second model then sits in memory); `reference="live"` keeps a
frozen copy.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field

import lightning as L
import torch

from irpo.config import ModelConfig
from irpo.errors import UserError
from irpo.methods import BatchLogps, Method
from irpo.models.load import load_policy, policy_skeleton
from irpo.models.lora import init_adapters, with_lora
from irpo.run.distributed import max_over_ranks, sum_over_ranks, world_size
from irpo.training.batching import collate, pair_tokens, scored_tokens, split_to
from irpo.training.scoring import batch_logps, batch_token_logps, padded
from irpo.training.sharding import load_sharded, shard_policy
from irpo.training.trainers import Trainer


def _frozen(model):
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def build_policy(
    model_dir: str,
    dtype: str,
    trust_remote_code: bool,
    sharded: bool = False,
    lora: dict | None = None,
    activation_checkpointing: bool = False,
):
    """M_t as the policy to train: its weights (or, to be sharded, its modules on the meta
    device), activations recomputed in backward if asked, LoRA adapters if lora["r"] > 0."""
    policy = (policy_skeleton if sharded else load_policy)(model_dir, dtype, trust_remote_code)
    if activation_checkpointing:
        policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return with_lora(policy, **(lora or {"r": 0, "alpha": 0, "dropout": 0, "target_modules": []}))


@dataclass(frozen=True)
class PolicyTraining:
    """How M_θ is built and optimized (a part of the run spec, irpo/spec.py)."""

    lr: float
    trainer: Trainer = field(default_factory=Trainer)  # its preset: strategy, precision, steps, clipping, reference
    dtype: str = ModelConfig.dtype  # what the policy is loaded in (trainer.policy_dtype: float32 under mixed precision)
    trust_remote_code: bool = ModelConfig.trust_remote_code
    adapters: dict | None = None  # peft LoRA arguments; None: full fine-tuning


class PreferenceModule(L.LightningModule):
    """One Lightning batch is this rank's share of one optimizer step (`trainer.batch_size`
    pairs over all ranks), already cut into micro-batches bounded in pairs and tokens
    (batching.micro_batches); the step runs forward and backward over each, its loss weighted
    by its share of the step's pairs, then steps the optimizer once: the gradient of the mean
    loss over the step's pairs, however many micro-batches their lengths needed."""

    def __init__(
        self, method: Method, model_dir: str, training: PolicyTraining, iteration: int = 0, temperature: float = 1.0
    ) -> None:
        super().__init__()
        # plain values: a checkpoint holds data only (loaded with weights_only)
        self.save_hyperparameters({"model_dir": model_dir, "iteration": iteration, **asdict(training)})
        self.method = method
        # a token-level method scores at the iteration's sampling temperature (Method.token_level)
        self.temperature = temperature if method.token_level else 1.0
        tr, self.settings = training, training.trainer
        self.automatic_optimization = False  # micro-batches of varying count per step
        self.sharded = tr.trainer.shards_policy
        # from_pretrained returns eval mode
        self.policy = build_policy(
            model_dir, tr.dtype, tr.trust_remote_code, self.sharded, tr.adapters, tr.trainer.activation_checkpointing
        ).train()
        self.reference = (
            _frozen(load_policy(model_dir, tr.dtype, tr.trust_remote_code))
            if tr.trainer.reference == "live" and method.reference
            else None
        )
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
        shard_policy(self.policy, self.device_mesh["data_parallel"], self.settings.precision, self.settings.cpu_offload)
        load_sharded(self.policy, self.hparams.model_dir, self.trainer.strategy.root_device)
        init_adapters(self.policy)

    def training_step(self, groups: list[list[dict]], batch_idx: int) -> torch.Tensor:
        # Every rank runs as many forwards (each a collective under a sharded policy).
        groups = split_to(groups, max_over_ranks(len(groups)))
        optimizer, schedule = self.optimizers(), self.lr_schedulers()
        totals: dict[str, torch.Tensor] = {}
        for i, (group, share) in enumerate(zip(groups, self.shares(groups))):
            batch = {k: v.to(self.device) for k, v in collate(group).items()}
            self._step_tokens += pair_tokens(batch)
            loss, metrics = self.micro_batch_loss(batch)
            with self._gradient_sync(i == len(groups) - 1):
                self.manual_backward(loss * share)
            for name, value in metrics.items():
                totals[name] = totals.get(name, 0.0) + value.detach() * share
        clip = self.settings.gradient_clip_val
        if clip and not self.settings.deepspeed:  # DeepSpeed clips in its engine
            self.clip_gradients(optimizer, gradient_clip_val=clip, gradient_clip_algorithm="norm")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
        self.pair_tokens += self._step_tokens
        totals["train/tokens_per_s"] = torch.tensor(
            self._step_tokens / max(time.perf_counter() - self._step_start, 1e-9), device=self.device
        )
        self._log(totals)
        return totals["train/loss"]

    def shares(self, groups: list[list[dict]]) -> list[float]:
        """Each micro-batch's weight in this rank's step: its share of the rank's items (every
        rank holds as many, and the ranks' gradients are averaged), or, for a method whose loss
        is a mean over the step's tokens (Method.token_mean), its tokens over the step's
        tokens on every rank, times the ranks (whose gradients are averaged): either way the
        step's gradient is the same however micro-batches and ranks cut it."""
        if self.method.token_mean:
            sizes = [scored_tokens(g) for g in groups]
            return step_shares(sizes, sum_over_ranks(sum(sizes)), world_size())
        return step_shares([len(g) for g in groups], sum(len(g) for g in groups))

    def _gradient_sync(self, last: bool):
        """Gradients are reduced over the ranks at the step's last backward only."""
        return nullcontext() if last else self.settings.no_sync(self)

    def micro_batch_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The mean loss over a collated micro-batch's items, and what is logged of it."""
        if self.method.token_level:
            return self._token_level_loss(batch)
        logps, counts = batch_logps(self.policy, batch)
        policy = self._split(logps, counts)._replace(labels=batch.get("label"))
        reference = None
        if self.reference is not None:
            with torch.no_grad():
                reference = self._split(*batch_logps(self.reference, batch))
        elif self.method.reference:
            reference = BatchLogps(
                batch["ref_chosen"], batch.get("ref_rejected"), policy.chosen_tokens, policy.rejected_tokens
            )
        loss, metrics = self.method.objective(policy, reference)
        self._check_finite(loss)
        return loss, {f"train/{name}": value for name, value in metrics.items()}

    def _token_level_loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """A token-level method's loss: the policy's per-token log-probs at the sampling
        temperature against M_t's, from the reference pass's stored table (or a live M_t)."""
        seq, n_seq = batch["score_seq"], int(batch["n_seq"])
        policy = self._tokens(batch_token_logps(self.policy, batch, temperature=self.temperature), seq, n_seq)
        if self.reference is not None:
            with torch.no_grad():
                reference = batch_token_logps(self.reference, batch, temperature=self.temperature)
        else:
            reference = batch["ref_tokens"]
        loss, metrics = self.method.objective(
            policy._replace(labels=batch.get("label")), self._tokens(reference.detach(), seq, n_seq)
        )
        self._check_finite(loss)
        return loss, {f"train/{name}": value for name, value in metrics.items()}

    @staticmethod
    def _tokens(flat: torch.Tensor, seq: torch.Tensor, n_seq: int) -> BatchLogps:
        """Unpaired items' log-probs, summed and per token, from the batch's flat ones."""
        summed = flat.new_zeros(n_seq).index_add(0, seq, flat)
        token_logps, mask = padded(flat, seq, n_seq)
        counts = torch.bincount(seq, minlength=n_seq)
        return BatchLogps(summed, None, counts, None, None, token_logps, mask)

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
        if self.settings.deepspeed and self.settings.cpu_offload:
            # ZeRO-Offload steps the optimizer on the CPU, with DeepSpeed's own AdamW.
            from deepspeed.ops.adam import DeepSpeedCPUAdam as AdamW
        else:
            AdamW = torch.optim.AdamW
        optimizer = AdamW(params, lr=hp.lr, weight_decay=self.settings.weight_decay)
        warmup = max(self.settings.warmup_steps, 1)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def step_shares(sizes: list[int], total: int, world: int = 1) -> list[float]:
    """Weights of a rank's micro-batches of `sizes` (items or tokens) in a step of `total`
    over `world` ranks whose gradients are averaged: size·world/total each."""
    return [size * world / max(total, 1) for size in sizes]
