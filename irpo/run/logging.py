"""Where metrics go: `metrics.jsonl` in the run directory, W&B (offline by default) or
TensorBoard, and a table on the terminal. Every row carries `iteration`, the x-axis of the
loop's metrics in both."""

from __future__ import annotations

import hashlib
import logging
import os
from typing import TYPE_CHECKING, Any, Sequence

from irpo.analysis.results import eval_samples, generation_samples
from irpo.run.artifacts import RunDir, read_jsonl, write_jsonl
from irpo.run.distributed import on_rank_zero

if TYPE_CHECKING:
    from irpo.spec import RunSpec

log = logging.getLogger("irpo")

TABLE_COLUMNS = [
    ("iteration", "iteration"),
    ("train_pass_at_n", "train pass@N"),
    ("pairs", "pairs"),
    ("test_accuracy", "test accuracy"),
]


class RunLogger:
    """prompts: train and test prompt text by example id, for the W&B tables of samples."""

    def __init__(self, spec: RunSpec, run: RunDir, kinds: Sequence[str], prompts: dict[str, dict[str, str]]) -> None:
        self.run, self.path, self.kinds = run, run.root / "metrics.jsonl", tuple(kinds)
        self.rows = read_jsonl(self.path) if self.path.exists() else []
        self.maj_key = f"maj@{spec.eval.maj_k}" if spec.eval.maj_k > 0 else None
        self.prompts, self.table_prompts = prompts, spec.logger.wandb.table_prompts
        self.wandb = self.tensorboard = None
        self._wandb_mode = os.environ.get("WANDB_MODE")
        w = spec.logger.wandb
        if w.enabled and w.mode != "disabled":
            from lightning.pytorch.loggers import WandbLogger

            # One W&B run per run directory: a resumed run appends to the same W&B run.
            run_id = hashlib.sha1(str(run.root.resolve()).encode()).hexdigest()[:12]
            import wandb

            # quiet: W&B's own end-of-run history and summary stay in its files, not irpo's output.
            self.wandb = WandbLogger(
                save_dir=str(run.root),
                offline=w.mode == "offline",
                mode=w.mode,
                project=w.project,
                entity=w.entity,
                id=run_id,
                resume="allow",
                config=dict(spec.values),
                settings=wandb.Settings(quiet=True),
                **wandb_identity(spec),
            )
            # Lightning passes anonymous=None, which W&B warns about on every run ("has no effect").
            self.wandb._wandb_init.pop("anonymous", None)
            self.wandb.experiment.define_metric("iteration")
            self.wandb.experiment.define_metric("iter/*", step_metric="iteration")
            self.wandb.experiment.define_metric("samples/*", step_metric="iteration")
        if spec.logger.tensorboard.enabled:
            from lightning.pytorch.loggers import TensorBoardLogger

            self.tensorboard = TensorBoardLogger(
                save_dir=str(run.root), name="tensorboard", version="", default_hp_metric=False
            )
            self.tensorboard.log_hyperparams(dict(spec.values))

    def lightning_loggers(self) -> list:
        """The shared W&B or TensorBoard run, for the per-step training metrics (besides
        train.StepCSV's iter_<t>/train/metrics.csv)."""
        return [x for x in (self.wandb, self.tensorboard) if x]

    def log_iteration(self, iteration: int, metrics: dict[str, float]) -> None:
        """Records iteration t's row (metrics.jsonl, W&B, TensorBoard) and says it in one line
        as it finishes: at the paper's scale the table at the end comes days later."""
        row = {"iteration": iteration, **metrics}
        on_rank_zero(log.info, iteration_line(row, self.maj_key, self.kinds))
        self.rows = [r for r in self.rows if r["iteration"] != iteration] + [row]
        self.rows.sort(key=lambda r: r["iteration"])
        on_rank_zero(write_jsonl, self.path, self.rows)
        if self.wandb is not None:
            self.wandb.experiment.log(
                {
                    **{f"iter/{k}": v for k, v in metrics.items()},
                    **self._sample_tables(iteration),
                    "iteration": iteration,
                }
            )
        if self.tensorboard is not None:
            for key, value in metrics.items():
                if isinstance(value, (int, float)):
                    self.tensorboard.experiment.add_scalar(f"iter/{key}", value, global_step=iteration)

    def _sample_tables(self, iteration: int) -> dict[str, Any]:
        """The samples of the same few train prompts, and the greedy answers to the same few
        test problems, every iteration: how the answers to one question change."""
        import wandb

        it = self.run.iter_dir(iteration)
        tables = {}
        for key, rows in (
            ("samples/generations", generation_samples(it, self.prompts["train"], self.table_prompts)),
            ("samples/eval", eval_samples(it, self.prompts["test"], self.table_prompts)),
        ):
            if rows:
                # rows=, not data=: for data= W&B imports pandas to ask whether it is a
                # DataFrame (~2 s, once per run)
                tables[key] = wandb.Table(columns=list(rows[0]), rows=[list(r.values()) for r in rows])
        return tables

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
            # Lightning's WandbLogger leaves WANDB_MODE set for the process; the next job of a
            # sweep run in the same process chooses its own mode.
            if self._wandb_mode is None:
                os.environ.pop("WANDB_MODE", None)
            else:
                os.environ["WANDB_MODE"] = self._wandb_mode
        if self.tensorboard is not None:
            self.tensorboard.finalize("success")


def wandb_identity(spec: RunSpec) -> dict[str, Any]:
    """Where a job's W&B run sits among the others: grouped by sweep (the sweep directory's
    name unless logger.wandb.group is set), job_type = method, named by the job's overrides
    (`alpha=0`), tagged with task, model and method."""
    w, paths, name = spec.logger.wandb, spec.paths, spec.method.name
    group = w.group if w.group is not None or paths.sweep_dir is None else paths.sweep_dir.name
    tags = [f"task:{paths.choices.get('task')}", f"model:{paths.choices.get('model')}", f"method:{name}", *w.tags]
    return {"group": group, "job_type": name, "name": paths.override_dirname or None, "tags": tags}


def iteration_line(row: dict[str, Any], maj_key: str | None, kinds: Sequence[str]) -> str:
    """`iteration 1: M_1 test accuracy 0.435 (maj@8 0.470); train pass@N 0.612, 96 pairs; 57 s`."""
    t = row["iteration"]
    parts = [
        f"iteration {t}: M_{t} test accuracy {_fmt(row.get('test_accuracy'))}"
        + (f" ({maj_key} {_fmt(row.get(maj_key))})" if maj_key else "")
    ]
    if "pairs" in row or "train_pass_at_n" in row:
        parts.append(f"train pass@N {_fmt(row.get('train_pass_at_n'))}, {row.get('pairs', 0)} pairs")
    seconds = sum(v for k, v in row.items() if k.endswith("_seconds") and k.removesuffix("_seconds") in kinds)
    return "; ".join(parts) + f"; {seconds:.0f} s"


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)
