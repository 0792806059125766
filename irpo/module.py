"""The LightningModule: the policy M_θ (initialised from M_t), the reference M_t, the loss.

One module serves every method: `train_on="pairs"` minimises Eq. 1 (DPO + α·NLL; α = 0 is
DPO), the SFT baselines minimise the NLL term alone on their sequences. The reference's
log-probs are precomputed once per iteration by default (they do not change while θ
trains, and no second model then sits in memory); `reference="live"` keeps a frozen copy.
"""

from __future__ import annotations

import time

import lightning as L
import torch

from irpo.batching import pair_tokens
from irpo.errors import UserError
from irpo.loss import batch_logps, dpo_nll_loss, nll_loss
from irpo.models.load import load_policy


def _frozen(model):
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class PreferenceModule(L.LightningModule):
    def __init__(
        self,
        model_dir: str,
        train_on: str,
        beta: float,
        alpha: float,
        lr: float,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        dtype: str = "float32",
        reference: str = "precomputed",
        trust_remote_code: bool = False,
        iteration: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.policy = load_policy(model_dir, dtype, trust_remote_code).train()  # from_pretrained returns eval mode
        self.reference = _frozen(load_policy(model_dir, dtype, trust_remote_code)) if reference == "live" and train_on == "pairs" else None
        self.pair_tokens = 0  # trained on so far, counted as a plain step feeds them (prompt once per sequence)
        self._step_start, self._step_tokens = 0.0, 0

    def on_train_batch_start(self, batch: dict, batch_idx: int) -> None:
        self._step_start, self._step_tokens = time.perf_counter(), 0

    def on_train_batch_end(self, outputs, batch: dict, batch_idx: int) -> None:
        rate = self._step_tokens / max(time.perf_counter() - self._step_start, 1e-9)
        self.log("train/tokens_per_s", rate, prog_bar=True)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        hp = self.hparams
        tokens = pair_tokens(batch)
        self.pair_tokens += tokens
        self._step_tokens += tokens
        logps, counts = batch_logps(self.policy, batch)
        if hp.train_on != "pairs":
            loss = nll_loss(logps, counts)
            self._check_finite(loss)
            self._log({"train/loss": loss, "train/nll_loss": loss, "train/chosen_logps": logps.detach().mean()})
            return loss
        chosen, rejected = logps.chunk(2)
        if self.reference is not None:
            with torch.no_grad():
                ref_chosen, ref_rejected = batch_logps(self.reference, batch)[0].chunk(2)
        else:
            ref_chosen, ref_rejected = batch["ref_chosen"], batch["ref_rejected"]
        parts = dpo_nll_loss(chosen, rejected, ref_chosen, ref_rejected, counts.chunk(2)[0], hp.beta, hp.alpha)
        self._check_finite(parts.loss)
        margin = parts.chosen_rewards - parts.rejected_rewards
        self._log(
            {
                "train/loss": parts.loss,
                "train/dpo_loss": parts.dpo,
                "train/nll_loss": parts.nll,
                "train/reward_accuracy": (margin > 0).float().mean(),
                "train/reward_margin": margin.mean(),
                "train/chosen_logps": chosen.detach().mean(),
                "train/rejected_logps": rejected.detach().mean(),
            }
        )
        return parts.loss

    def _log(self, metrics: dict) -> None:
        # `iteration` on every row: W&B and metrics.csv curves of all iterations in one run.
        self.log_dict({**metrics, "iteration": float(self.hparams.iteration)}, prog_bar=True)

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
        optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        warmup = max(hp.warmup_steps, 1)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
