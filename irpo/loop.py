"""The Iterative RPO loop (Pang et al., 2024, Sec. 2), one iteration t = M_t → M_{t+1}:

    evaluate M_t → generate N samples per train prompt with M_t → reward → pairs →
    reference log-probs of M_t → train M_θ from M_t against reference M_t → M_{t+1}

and finally evaluate M_T. Each stage writes its files under iter_<t>/ and is recorded in
the run manifest; rerunning the same command in the same run directory skips finished
stages and picks unfinished ones up where they stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from irpo import methods
from irpo.analysis.report import report_at_end
from irpo.config import validate
from irpo.errors import UserError
from irpo.evaluate import EVAL, Problems, evaluate_into
from irpo.generation.base import Decoding, LazyGenerator, render_prompt
from irpo.models.load import load_tokenizer
from irpo.planning.capacity import check_fits, resolve_arch
from irpo.planning.plan import print_plan
from irpo.run import allocator, compat, preemption, progress, threads
from irpo.run.artifacts import (
    RunDir,
    Stage,
    Stages,
    atomic_path,
    read_json,
    read_jsonl,
    remove_tree,
    source_revision,
    write_json,
    write_jsonl,
)
from irpo.run.distributed import close as close_process_group
from irpo.run.distributed import init as init_process_group
from irpo.run.distributed import on_rank_zero, rank
from irpo.run.failpoints import failpoint
from irpo.run.fingerprints import describe_files
from irpo.run.logging import RunLogger
from irpo.spec import RunSpec, run_root
from irpo.spec import build as build_spec
from irpo.tasks.subsets import validation_split
from irpo.training.selection import MODEL, SELECT, SELECTION, VAL_START, select, stop_now
from irpo.training.selection import history as selection_history

if TYPE_CHECKING:
    from irpo.config import ModelConfig
    from irpo.training.data import DataSettings, IterationData


def iteration_stages() -> tuple[Stage, ...]:
    """The stages of one iteration in the order they run, each declared beside its code."""
    from irpo.training.data import GENERATE, LOGPS, PAIRS, REFERENCE
    from irpo.training.train import TRAIN

    return EVAL, GENERATE, PAIRS, REFERENCE, TRAIN, SELECT, LOGPS


def stage_config(spec: RunSpec, iteration: int, kind: str) -> dict:
    """The config values stage `kind` of iteration t depends on, for the run manifest: its
    own (its declaration's), with what made M_t from t = 1 on (the select stage's, which
    are the train stage's and the decoding's), and the temperatures M_t was sampled at
    (and, sampling, this iteration's). Raising `iterations` extends a finished run."""
    flat = describe_files(dict(spec.values))
    flat = {k: v for k, v in flat.items() if not k.startswith("method.")} | methods.described(spec.method)
    declared = {stage.kind: stage.depends_on for stage in iteration_stages()}
    keys = declared[kind] + (declared[SELECT.kind] if iteration else ())
    keep = {k: v for k, v in flat.items() if any(k == p or (p.endswith(".") and k.startswith(p)) for p in keys)}
    keep["temperatures"] = [spec.loop.temperature(i) for i in range(iteration + (kind != EVAL.kind))]
    return json.loads(json.dumps(keep, default=str))


def run(cfg) -> float | None:
    """Runs the loop on a composed config; returns M_T's greedy test accuracy (the number a
    sweep optimises). The config is read once, into the run spec (irpo/spec.py)."""
    root = run_root()
    try:
        validate(cfg)
        return run_loop(build_spec(cfg))
    finally:
        close_process_group()
        if rank() == 0:
            remove_if_empty(root)


def remove_if_empty(root: Path) -> None:
    """Hydra creates the run directory before irpo runs: a launch that never owned it (a
    plan, a dry run, a refusal before the lock) leaves it empty, and removes it, and the
    `outputs/<task>/` above it if that is empty too."""
    with contextlib.suppress(OSError):  # not empty (rmdir refuses), or already gone
        root.rmdir()
        outputs = Path.cwd() / "outputs"
        if root.parent.parent == outputs:
            root.parent.rmdir()
            outputs.rmdir()


def run_loop(spec: RunSpec) -> float | None:
    quiet_libraries()
    task, method, model, loop = spec.task, spec.method, spec.model, spec.loop
    if loop.dry_run or loop.plan:
        print_plan(spec)
        return None
    check_fits(spec)
    # The training stack loads only once a run starts, so that plan=true, dry_run=true and
    # the one-line errors before a run answer in seconds.
    import lightning as L
    import torch

    from irpo.training.data import GENERATE, GENERATION_SHARDS, LOGPS, PAIRS, REFERENCE, IterationData
    from irpo.training.train import CHECKPOINTS, METRICS, TRAIN, train_policy

    init_process_group(spec.trainer.timeout_minutes, spec.trainer.accelerator, spec.trainer.liveness_seconds)
    run_dir = RunDir(spec.paths.root)
    # Rank 0 holds the directory for the launch's ranks (a lock per rank would refuse the
    # others; flock is unreliable across nodes on network file systems) and writes nothing
    # in it until the finished stages are found still valid.
    on_rank_zero(run_dir.lock)
    stages = Stages(run_dir, iteration_stages(), partial(stage_config, spec), compat.recorded_values)
    on_rank_zero(stages.check, overwrite=loop.resume == "overwrite")
    on_rank_zero(own_run_directory, run_dir, spec)
    num_threads, threads_from = threads.choose_threads(loop.num_threads, on_rank_zero(run_dir.recorded, "num_threads"))
    torch.set_num_threads(num_threads)
    on_rank_zero(run_dir.record_once, "num_threads", num_threads)
    if spec.cpu_bf16 is not None:
        on_rank_zero(run_dir.record_once, "cpu_bf16", dict(spec.cpu_bf16))
    arch = resolve_arch(model)  # the model's shape, for reports that compare runs by it
    on_rank_zero(
        run_dir.event,
        event="launch",
        argv=sys.argv[1:],
        threads=num_threads,
        threads_from=threads_from,
        omp_wait=threads.chosen_wait,
        allocator=allocator.chosen,
        arch=dataclasses.asdict(arch) if arch else None,
        cpu_bf16=spec.cpu_bf16 and dict(spec.cpu_bf16),
        precision=spec.trainer.precision,
        generator_dtype=spec.generator.dtype,
        **source_revision(),
    )
    L.seed_everything(loop.seed, workers=True, verbose=False)
    m0 = on_rank_zero(m0_dir, model, run_dir)
    tokenizer = load_tokenizer(m0, model.trust_remote_code, model.chat_template)
    train, test = task.load("train"), task.load("test")
    train, val = validation_split(
        task, train, spec.selection.val_size, spec.selection.val_from, spec.task_settings.get("seed") or 0
    )

    def render(split: str, examples) -> Problems:
        return Problems(
            split,
            examples,
            [
                render_prompt(tokenizer, task.prompt(ex), model.chat_template, model.chat_template_kwargs)
                for ex in examples
            ],
        )

    test, val = render("test", test), render("val", val)
    selecting = bool(val.examples)
    train_prompts = render("train", train).prompts
    sample = method.samples
    last = loop.iterations if method.trains else 0
    logger = RunLogger(
        spec,
        run_dir,
        stages.order,
        {
            "train": {ex.id: p for ex, p in zip(train, train_prompts)},
            "test": {ex.id: p for ex, p in zip(test.examples, test.prompts)},
        },
    )
    model_dir = m0
    device = torch.device("cuda" if spec.trainer.accelerator != "cpu" and torch.cuda.is_available() else "cpu")
    # a model to score pairs with: M_t whole, or its shard, held as training holds it
    scorer = partial(spec.trainer.reference_policy, model, spec.training.dtype)
    precision = spec.trainer.precision
    try:
        for t in range(last + 1):
            it = run_dir.iter_dir(t)

            stage = partial(run_stage, stages, t)
            with LazyGenerator(lambda: open_generator(spec, model_dir)) as generator:
                stage(
                    EVAL.kind,
                    counted(
                        generator,
                        lambda: evaluate_into(
                            it, test, generator, partial_dir(stages, t, EVAL.kind, test.files.shards), spec, t
                        ),
                    ),
                )
                metrics = read_json(it / test.files.metrics)
                if t == last:
                    logger.log_iteration(
                        t, metrics | stages.timings(t) | ({"stopped_early": 1.0} if t < loop.iterations else {})
                    )
                    break
                data = IterationData(task, train, train_prompts, it, t, tokenizer, method, data_settings(spec, t))
                if sample:
                    replicas = spec.generator.replica_size
                    stage(
                        GENERATE.kind,
                        counted(
                            generator,
                            lambda: data.generate(
                                generator, partial_dir(stages, t, GENERATE.kind, GENERATION_SHARDS), replicas
                            ),
                        ),
                    )
            if sample:
                pairs, stats = data.make_pairs(read_jsonl(data.generations_path))
                if method.from_pairs:
                    require_pairs(stats, t)
                stage(PAIRS.kind, lambda: on_rank_zero(write_jsonl, data.pairs_path, [vars(p) for p in pairs]))
                metrics |= stats
            if method.reference and spec.trainer.reference == "precomputed":
                stage(
                    REFERENCE.kind, lambda: data.reference_logps(partial(scorer, model_dir, device), device, precision)
                )

            def train_stage():
                ckpt_dir = partial_dir(stages, t, TRAIN.kind, CHECKPOINTS)
                trained = train_policy(
                    spec, data, model_dir, it / MODEL, ckpt_dir, logger.lightning_loggers(), it if selecting else None
                )
                launch_tokens = trained.pop(
                    "launch_pair_tokens"
                )  # the stage's tokens/s: this launch's work over its seconds
                on_rank_zero(
                    write_json,
                    it / METRICS,
                    {
                        "iteration": t,
                        **metrics,
                        "dropped_too_long": data.dropped_too_long,
                        **{f"train_{k}": v for k, v in trained.items()},
                    },
                )
                return launch_tokens

            stage(TRAIN.kind, train_stage)
            if not spec.trainer.keep_checkpoints:  # M_{t+1} is saved and recorded: a resume starts from it
                on_rank_zero(remove_checkpoints, it / CHECKPOINTS)
            if selecting:
                stage(SELECT.kind, lambda: select_into(it, spec, stages, t, val, model_dir))
            if sample:
                stage(
                    LOGPS.kind,
                    lambda: data.pair_logps(
                        partial(scorer, model_dir, device), partial(scorer, str(it / MODEL), device), device, precision
                    ),
                )
            # the stages' seconds and tokens/s, the train stage's own included once it is finished
            on_rank_zero(
                write_json,
                it / METRICS,
                read_json(it / METRICS) | stages.timings(t) | after_training(it, data, selecting, sample),
            )
            logger.log_iteration(t, read_json(it / METRICS))
            model_dir = str(it / MODEL)  # M_{t+1}: the next policy and the next reference
            if selecting and stop_now(
                selection_history(run_dir.root, t), spec.selection.patience, spec.selection.min_delta
            ):
                last = t + 1  # evaluate M_{t+1} on the test split, then stop
        logger.table()
        on_rank_zero(print_stage_times, stages.order, [stages.timings(t) for t in range(last + 1)])
    finally:
        logger.finish()
    report_at_end(run_dir.root)
    return logger.rows[-1]["test_accuracy"]


def run_stage(stages: Stages, t: int, kind: str, fn) -> None:
    """fn(), every rank, unless stage `iter_<t>/<kind>` is finished, or another job of the
    same sweep finished it under the same config values (then its files are copied); then
    it is recorded as finished, with its seconds and the token count fn returns. Rank 0
    decides and records, so every rank skips or runs the stage alike. A stop signal noted
    before the stage starts, or at a safe point inside it, ends it with its `interrupted`
    event (irpo.run.preemption)."""
    if on_rank_zero(stages.done, t, kind):
        return
    try:
        preemption.stop_if_signalled()
        with progress.stage(f"iter {t} · {kind}", runs=True):
            if on_rank_zero(stages.reuse, t, kind):
                return
            on_rank_zero(stages.start, t, kind)
            failpoint(f"stage:iter_{t}/{kind}")
            start = time.perf_counter()
            tokens = fn()
            on_rank_zero(stages.finish, t, kind, time.perf_counter() - start, tokens)
    except preemption.Interrupted as stop:
        stop.stage, stop.run_dir = f"iter_{t}/{kind}", str(stages.run.root)
        on_rank_zero(stages.interrupted, t, kind, stop.signal_name, **stop.kept)
        raise


def partial_dir(stages: Stages, t: int, kind: str, name: str) -> Path:
    """Stages.partial_dir, made by rank 0, its path on every rank."""
    return on_rank_zero(stages.partial_dir, t, kind, name)


def m0_dir(model: ModelConfig, run_dir: RunDir) -> str:
    """The checkpoint M_0 is read from: model.path, or the run's conversion of its GGUF file."""
    if model.gguf_file is None:
        return str(model.path)
    from irpo.models import gguf

    return str(gguf.materialize(gguf.source(model.path, model.gguf_file), run_dir.root / "m0", model.dtype))


def remove_checkpoints(train_dir: Path) -> None:
    for ckpt in train_dir.glob("*.ckpt"):  # a file, or a directory of shards under fsdp
        remove_tree(ckpt)


def own_run_directory(run_dir: RunDir, spec: RunSpec) -> None:
    """What the launch that holds the run directory, and found its finished stages still
    valid, writes first (on rank 0): it clears what a killed launch left half-written,
    records the config it runs under (`.hydra/`, as Hydra would have, read by irpo.report)
    and opens the job log. Hydra is told to write none of these itself, since it would
    before irpo's lock and stale-config check."""
    import logging

    run_dir.remove_partial_writes()
    for name, text in spec.paths.recorded.items():
        with atomic_path(run_dir.root / ".hydra" / name) as tmp:
            tmp.write_text(text)
    root = logging.getLogger()
    log = logging.FileHandler(run_dir.root / f"{spec.paths.job_name}.log")
    log.setFormatter(next((h.formatter for h in root.handlers if h.formatter), None))  # the console's, as conf/ sets it
    root.addHandler(log)


def select_into(it: Path, spec: RunSpec, stages: Stages, t: int, val: Problems, model_dir: str) -> None:
    """M_{t+1} = the candidate of iteration t most accurate on the validation split (greedy,
    by the run's Generator); each candidate's result is kept, so a killed selection resumes."""

    def accuracy(d: Path, checkpoint: str) -> float:
        if not on_rank_zero((d / val.files.metrics).exists):
            shards = partial_dir(stages, t, SELECT.kind, str((d / val.files.shards).relative_to(it)))
            with LazyGenerator(lambda: open_generator(spec, checkpoint)) as generator:
                evaluate_into(d, val, generator, shards, spec, t, maj_k=0)
        return read_json(d / val.files.metrics)["val_accuracy"]

    start = (
        accuracy(it / VAL_START, model_dir)
        if t == 0
        else read_json(it.parent / f"iter_{t - 1}" / SELECTION)["val_accuracy"]
    )
    record = select(it, lambda d: accuracy(d, str(d / MODEL)), start)
    on_rank_zero(
        print,
        f"iteration {t}: M_{t + 1} = candidate step {record['selected_step']} of {record['last_step']}, "
        f"validation accuracy {record['val_accuracy']:.3f} (M_{t}: {start:.3f}, last step: {record['val_accuracy_last']:.3f})",
    )


def after_training(it: Path, data: IterationData, selected: bool, sampled: bool) -> dict:
    """What the select and log-prob stages add to the iteration's metrics.json."""
    out = {}
    if selected:
        record = read_json(it / SELECTION)
        out |= {
            "selected_step": record["selected_step"],
            "last_step": record["last_step"],
            "val_accuracy_start": record["val_accuracy_start"],
            "val_accuracy_selected": record["val_accuracy"],
            "val_accuracy_last": record["val_accuracy_last"],
        }
    if sampled:
        out |= data.pair_logp_means()
    return out


def quiet_libraries() -> None:
    """Lightning prints through its own handler and Hydra's root handler (every line twice),
    transformers draws a progress bar per model load: keep one copy and no bars. Warnings
    that are false alarms for irpo are dropped: the advice to make the dataloader resumable
    (data.EpochSampler resumes mid-epoch), the note that a live reference model is in eval
    mode (it is frozen on purpose), and the note that a checkpoint under manual
    optimization holds the weights after the step (as irpo resumes from them)."""
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    logging.getLogger("lightning.pytorch").propagate = False
    hf_logging.disable_progress_bar()
    warnings.filterwarnings(
        "ignore",
        message=r".*(litlogger|LeafSpec|log_every_n_steps|does not have many workers|dataloader is not resumable|in eval mode|"
        r"manual optimization and every_n_train_steps).*",
    )


def counted(generator: LazyGenerator, fn):
    """fn as a stage that reports the tokens the generator produced while it ran."""

    def stage() -> int:
        before = generator.generated_tokens
        fn()
        return generator.generated_tokens - before

    return stage


def print_stage_times(kinds: Sequence[str], timings: list[dict[str, float]]) -> None:
    """Where the run's time went: each stage's seconds over all iterations, its share, and
    its mean tokens/s (stages finished by an earlier process count with their own times)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="time per stage")
    for column in ("stage", "seconds", "share", "tokens/s"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    total = sum(v for row in timings for k, v in row.items() if k.endswith("_seconds")) or 1.0
    for kind in kinds:
        seconds = [row[f"{kind}_seconds"] for row in timings if f"{kind}_seconds" in row]
        rates = [row[f"{kind}_tokens_per_s"] for row in timings if f"{kind}_tokens_per_s" in row]
        if seconds:
            table.add_row(
                kind,
                f"{sum(seconds):.1f}",
                f"{sum(seconds) / total:.0%}",
                f"{sum(rates) / len(rates):,.0f}" if rates else "",
            )
    Console().print(table)


def data_settings(spec: RunSpec, t: int) -> "DataSettings":
    """Iteration t's data settings."""
    from irpo.training.data import DataSettings
    from irpo.training.train import micro_batching

    loop = spec.loop
    return DataSettings(
        loop.num_samples,
        loop.temperature(t),
        loop.pair_rule,
        loop.seed,
        spec.model.max_length,
        micro_batching(spec.trainer),
        loop.shard_size,
    )


def open_generator(spec: RunSpec, model_dir: str):
    """The run's generator over model_dir: how a completion is decoded from the task (its stop
    strings, its length unless generator.max_new_tokens is set), the model (its chat
    template) and generator.top_p."""
    g, task = spec.generator, spec.task
    return g.open(
        model_dir,
        Decoding(g.max_new_tokens or task.max_new_tokens, tuple(task.stop), g.top_p, spec.model.chat_template),
    )


def require_pairs(metrics: dict, t: int) -> None:
    if metrics["pairs"] > 0:
        return
    raise UserError(
        f"iteration {t} made no pairs: of {metrics['prompts']} prompts, {metrics['prompts_no_winner']} had no correct "
        f"sample and {metrics['prompts_no_loser']} had no incorrect one; raise num_samples, or the temperature "
        "(temperatures=[...]) for more varied samples"
        + (", or set gold_winner=true" if metrics["prompts_no_winner"] else "")
    )
