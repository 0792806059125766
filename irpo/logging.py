"""Where metrics go: `metrics.jsonl` in the run directory, W&B (offline by default), and a
table on the terminal. Every row carries `iteration`, W&B's x-axis for the loop's metrics."""

from __future__ import annotations

import hashlib
from typing import Any

from omegaconf import DictConfig

from irpo.artifacts import RunDir, read_jsonl, write_jsonl
from irpo.config import flat_config
from irpo.distributed import on_rank_zero

TABLE_COLUMNS = [
    ("iteration", "iteration"),
    ("train_pass_at_n", "train pass@N"),
    ("pairs", "pairs"),
    ("test_accuracy", "test accuracy"),
]


class RunLogger:
    def __init__(self, cfg: DictConfig, run: RunDir) -> None:
        self.run, self.path = run, run.root / "metrics.jsonl"
        self.rows = read_jsonl(self.path) if self.path.exists() else []
        self.maj_key = f"maj@{cfg.eval.maj_k}" if cfg.eval.maj_k > 0 else None
        self.wandb = None
        w = cfg.logger.wandb
        if w.enabled and w.mode != "disabled":
            from lightning.pytorch.loggers import WandbLogger

            # One W&B run per run directory: a resumed run appends to the same W&B run.
            run_id = hashlib.sha1(str(run.root.resolve()).encode()).hexdigest()[:12]
            self.wandb = WandbLogger(
                save_dir=str(run.root), offline=w.mode == "offline", project=w.project, entity=w.entity,
                group=w.group, tags=list(w.tags), id=run_id, resume="allow", config=flat_config(cfg),
            )
            self.wandb.experiment.define_metric("iteration")
            self.wandb.experiment.define_metric("iter/*", step_metric="iteration")

    def lightning_loggers(self, iter_dir) -> list:
        """Per-step training metrics: a CSV in iter_<t>/train/ and the shared W&B run."""
        from lightning.pytorch.loggers import CSVLogger

        return [CSVLogger(save_dir=str(iter_dir), name="train", version="")] + ([self.wandb] if self.wandb else [])

    def log_iteration(self, iteration: int, metrics: dict[str, float]) -> None:
        row = {"iteration": iteration, **metrics}
        self.rows = [r for r in self.rows if r["iteration"] != iteration] + [row]
        self.rows.sort(key=lambda r: r["iteration"])
        on_rank_zero(write_jsonl, self.path, self.rows)
        if self.wandb is not None:
            self.wandb.experiment.log({**{f"iter/{k}": v for k, v in metrics.items()}, "iteration": iteration})

    def table(self) -> None:
        from rich.console import Console
        from rich.table import Table

        columns = TABLE_COLUMNS + ([(self.maj_key, self.maj_key)] if self.maj_key else [])
        table = Table(title=f"irpo: {self.run.root}")
        for _, title in columns:
            table.add_column(title, justify="right")
        for row in self.rows:
            table.add_row(*(_fmt(row.get(key)) for key, _ in columns))
        on_rank_zero(Console().print, table)

    def finish(self) -> None:
        if self.wandb is not None:
            import wandb

            wandb.finish()


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
