"""`dry_run=true` / `plan=true`: what a run would do, without loading any weights: the work of
each iteration, the memory of a training rank and of a generation engine, and the cost of an
iteration (irpo/planning/sizing.py's arithmetic on irpo/planning/capacity.py's view of the config).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from irpo.planning import capacity, sizing
from irpo.planning.sizing import Arch, Training
from irpo.tasks import subsets
from irpo.training.precision import compute_dtype, half_ulp, is_mixed
from irpo.training.trainers import FSDP, ZeRO3

if TYPE_CHECKING:
    from irpo.spec import RunSpec
    from irpo.tasks.base import Task

# Split sizes of the hub data (the same files are in ../shared/data, each with its SOURCE.md):
# GSM8K 7,473 / 1,319; ARC-Challenge 1,119 (+ ARC-Easy train 2,251) / 1,172; MATH 7,500 less
# the 4 prompt exemplars and 2 rows without a \boxed answer / 5,000.
SPLIT_SIZES = {"gsm8k": (7473, 1319), "arc": (1119, 1172), "math": (7494, 5000)}
ARC_EASY_TRAIN = 2251


def print_plan(spec: RunSpec) -> None:
    """dry_run: loads and formats the data (so a bad path or row fails now) and prints one
    rendered prompt; both: the work each iteration does, its memory and its cost."""
    task = spec.task
    splits = local_splits(spec, task)
    if spec.loop.dry_run:
        splits = splits or (task.load("train"), task.load("test"))
        train = splits[0]
        prompt = task.prompt(train[0])
        rendered = prompt if isinstance(prompt, str) else "\n".join(f"[{m['role']}] {m['content']}" for m in prompt)
        template = " (the model's chat template is applied at run time)" if spec.model.chat_template else ""
        print(f"== prompt for train example {train[0].id}{template} ==\n{rendered}")
        print(f"== gold answer: {train[0].answer}")
    n_train, n_test = prompt_counts(spec, task, splits)
    n, k, T = spec.loop.num_samples, spec.loop.pair_rule.per_prompt, spec.loop.iterations
    print("== plan ==")
    print(f"model      {spec.model.path} ({spec.model.dtype}), generator {spec.generator.backend}")
    tr = spec.trainer
    length = f"{tr.max_steps} steps" if tr.max_steps > 0 else f"{tr.max_epochs} epoch(s)"
    print(
        f"trainer    {tr.strategy} on {tr.devices} {tr.accelerator} device(s) x {tr.num_nodes} node(s), batch {tr.batch_size} pairs, "
        f"lr {spec.model.lr}, {length} per iteration"
    )
    method = spec.method
    trains = f"trains on {method.items_name}" if method.trains else "trains nothing"
    print(
        f"method     {method.name} ({type(method).__name__}): {trains}"
        + "".join(f", {k}={v}" for k, v in method.hyperparameters().items())
    )
    print(f"data       {n_train} train prompts, {n_test} test problems")
    sel = spec.selection
    held_out = sel.val_size if sel.val_from == "train" else 0  # "validation": the task's own split, not train prompts
    for line in precision_lines(spec, n_train - held_out):
        print(line)
    if splits is not None:
        print(subsets.describe(spec.task_settings, train=splits[0], test=splits[1]))
    if sel.val_size:
        n_train -= held_out
        stop = (
            f"; stop after {sel.patience} iteration(s) whose M_t+1 does not beat the best validation accuracy by more than {sel.min_delta}"
            if sel.patience
            else ""
        )
        source = (
            "train prompts held out as the validation split" if held_out else "problems of the task's validation split"
        )
        print(
            f"selection  {sel.val_size} {source}; a candidate every {sel.val_every_n_steps} steps "
            f"and at the last, each evaluated greedily on it; M_t+1 = the most accurate{stop}"
        )
    most = n_train * k if spec.loop.pair_rule.max_pairs is None else min(n_train * k, spec.loop.pair_rule.max_pairs)
    pick = " (the best candidate on the validation split)" if sel.val_size else ""
    T = T if method.trains else 0
    for t in range(T):
        sample = (
            f"sample {n_train} x {n} = {n_train * n} completions at T={spec.loop.temperature(t)}; at most {most} pairs; "
            if method.samples
            else ""
        )
        print(f"iteration {t}: evaluate M_{t}; {sample}train M_{t + 1} on {method.items_name}{pick}")
    print(f"iteration {T}: evaluate M_{T} (greedy" + (f", maj@{spec.eval.maj_k}" if spec.eval.maj_k else "") + ")")
    if method.token_level:
        _, completion, _ = capacity.lengths(spec)
        table = sizing.token_table_bytes(n_train, n, completion)
        print(
            f"storage    {table / 1e6:,.0f} MB per iteration: M_t's per-token log-probs of the {n_train * n} samples "
            f"(~{completion} tokens each) in iter_<t>/reference_logps.safetensors, {table * T / 1e6:,.0f} MB over {T}"
        )
    print("\n".join(resource_lines(spec, n_train, n_test)))


def local_splits(spec: RunSpec, task: Task):
    """(train, test) examples when the data is local (a data_path, or a generated task): the
    plan counts them and shows the subset drawn; None for hub data, which is not downloaded."""
    if getattr(task, "data_path", "generated") is None and task.name in SPLIT_SIZES:
        return None
    return task.load("train"), task.load("test")


def prompt_counts(spec: RunSpec, task: Task, splits) -> tuple[int, int]:
    """Train prompts and test problems: counted in local data (`splits`), else the hub's known
    split sizes cut by task.*_size; nothing is downloaded."""
    if splits is not None:
        return len(splits[0]), len(splits[1])
    train, test = SPLIT_SIZES[task.name]
    train += ARC_EASY_TRAIN if spec.task_settings.get("include_easy") else 0
    return min(train, spec.task_settings.get("train_size") or train), min(
        test, spec.task_settings.get("test_size") or test
    )


def trained_items(spec: RunSpec, n_train: int) -> tuple[int, int]:
    """(items an iteration makes at most, items it trains on at most, epochs and max_steps applied)."""
    tr, method = spec.trainer, spec.method
    items = n_train * method.items_per_prompt(spec.loop.num_samples, spec.loop.pair_rule.per_prompt)
    items = (
        min(items, spec.loop.pair_rule.max_pairs or items) if method.from_pairs else items
    )  # at most: prompts without a winner or a loser make none
    trained = min(
        items * tr.max_epochs if tr.max_epochs > 0 else 10**12,
        tr.max_steps * tr.batch_size if tr.max_steps > 0 else 10**12,
    )
    return items, trained if method.trains else 0


def precision_lines(spec: RunSpec, n_train: int) -> list[str]:
    """What the trainer's precision keeps of an update (irpo/training/precision.py): bf16-true keeps no
    float32 master weights; a half save_dtype rounds an iteration's progress away when steps x
    lr is below half an ulp of a typical weight (the median |w| of the checkpoint's init,
    0.674 x initializer_range, read from a local config.json, else 0.02)."""
    tr, lines = spec.trainer, []
    if not spec.trainer.deepspeed and not is_mixed(tr.precision) and compute_dtype(tr.precision) != "float32":
        lines.append(
            f"precision   {tr.precision}: the policy trains in {compute_dtype(tr.precision)} with no float32 master weights: an update below "
            f"half an ulp of its weight ({half_ulp(0.02, compute_dtype(tr.precision)):.1e} at |w| = 0.02) is lost at every step; bf16-mixed keeps them"
        )
    save = spec.model.save_dtype or spec.model.dtype
    config = Path(str(spec.model.path)) / "config.json"
    init = json.loads(config.read_text()).get("initializer_range", 0.02) if config.is_file() else 0.02
    steps = -(-trained_items(spec, n_train)[1] // tr.batch_size)
    weight, move = 0.674 * init, steps * spec.model.lr
    if save != "float32" and 0 < move < half_ulp(weight, save):
        lines.append(
            f"warning     {steps} steps x lr {spec.model.lr:g} = {move:.1e} per iteration, below half a {save} ulp of the median weight "
            f"(~{weight:.3g}: {half_ulp(weight, save):.1e}): M_t+1 saved in {save} rounds most of an iteration's progress away; "
            "raise model.lr or the steps, or set model.save_dtype=float32"
        )
    return lines


def hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 10 else f"{h:.2g}"


def resource_lines(spec: RunSpec, n_train: int, n_test: int) -> list[str]:
    """The plan's sections: training memory per rank, generation memory, cost."""
    arch = capacity.resolve_arch(spec.model)
    if arch is None:
        return [
            "memory      unknown: model.path is not a local checkpoint and model.arch is not set (set model.arch.* to plan)"
        ]
    found = capacity.machine()
    per_node, nodes = capacity.layout(spec.trainer, found)
    t = capacity.training(spec, arch, per_node, nodes)
    where = capacity.target(spec.trainer, found, per_node, planning=True)
    mem = sizing.training_memory(arch, t)
    each = (
        f"{capacity.gib(where.capacity)} per GPU"
        if where.device == "GPU"
        else f"{capacity.gib(where.capacity)} of RAM shared by {per_node} rank(s)"
    )
    lines = [
        f"== training memory per rank: {t.world} rank(s) = {t.nodes} node(s) x {t.gpus_per_node}, {each}, "
        f"{capacity.gib(where.usable)} usable per rank ({capacity.HEADROOM:.0%} headroom) ==",
        f"model       {capacity.count(arch.params)} params, {arch.layers} layers, hidden {arch.hidden}, MLP {arch.intermediate}, "
        f"heads {arch.heads} ({arch.kv_heads} KV) x {arch.head_dim}{', q/k norms' if arch.qk_norm else ''}, vocab {arch.vocab}",
        f"rule        {sizing.rule(t)}",
    ]
    tr = spec.trainer
    other = sizing.activation_bytes(arch, t.tokens, sizing.compute_bytes(t.precision), not t.checkpointing)
    bound = (
        f"{tr.micro_batch_size or max(1, tr.batch_size // t.world)} item(s) of up to {capacity.pair_tokens(spec)} tokens"
        + (f", trainer.micro_batch_tokens={tr.micro_batch_tokens}" if tr.micro_batch_tokens else "")
    )
    copies = "one layer unsharded while it computes" if t.sharded else "autocast's bf16 copies of the float32 weights"
    notes = {
        "gathered": f" ({copies})" if mem.gathered else "",
        "activations": f" (at most {t.tokens} tokens a micro-batch: {bound}; "
        f"{capacity.gib(other)} {'without' if t.checkpointing else 'with'} activation checkpointing)",
        "reference": " (live)" if t.live_reference else " (precomputed before training)",
    }
    for name in ("weights", "gradients", "optimizer", "gathered", "activations", "reference"):
        lines.append(f"{name:<12}{capacity.gib(getattr(mem, name))}{notes.get(name, '')}")
    if mem.host:
        lines.append(f"host        {capacity.gib(mem.host * t.gpus_per_node)} per node in CPU memory (offloaded)")
    lines.append(
        f"total       {capacity.gib(mem.total)} of {capacity.gib(where.usable)}: "
        + ("fits" if mem.total <= where.usable else "does NOT fit")
    )
    every = f"every {tr.checkpoint_every_n_steps} steps" + (
        f" and {tr.checkpoint_every_seconds:g} s" if tr.checkpoint_every_seconds else ""
    )
    lines.append(
        f"checkpoint  {capacity.gib(sizing.checkpoint_bytes(arch, t))} a save in iter_<t>/train/ (weights and AdamW states"
        f"{f', over {t.world} ranks' if t.sharded else ''}), {every} and on a stop signal"
    )
    if mem.total > where.usable:
        changes = capacity.changes_that_fit(spec, arch, t, where.usable, gpus=where.device == "GPU")
        otherwise = (
            "no single change: combine more nodes, cpu_offload and LoRA"
            if where.device == "GPU"
            else f"run on GPUs: {capacity.gpu_plan(spec, arch)}"
        )
        lines.append("to fit      " + ("; or ".join(changes) or otherwise))
    if where.device == "GPU":
        counts = []
        for trainer, offload in ((FSDP, False), (ZeRO3, False), (FSDP, True), (ZeRO3, True)):
            other = replace(capacity.as_trained_by(t, trainer), cpu_offload=offload)
            need = sizing.min_gpus(arch, other, where.usable)
            mine = " (this plan's rule)" if (type(spec.trainer), offload) == (trainer, t.cpu_offload) else ""
            host = sizing.training_memory(arch, other).host * need if offload and need else 0
            counts.append(
                f"{trainer.name}{' + cpu_offload' if offload else ''}{mine} {need or 'none'}"
                + (f" ({capacity.gib(host)} on hosts)" if host else "")
            )
        lines.append(
            f"GPUs        this training needs at least, of {capacity.gib(where.capacity)}: " + ", ".join(counts)
        )
        if "none" in lines[-1]:
            lines.append(
                f"            none: what no sharding shrinks (one gathered unit, {t.tokens} tokens of activations) is over "
                f"{capacity.gib(where.usable)} alone; lower trainer.micro_batch_tokens or model.max_length"
            )
    return lines + generation_lines(spec, arch, where, t.world) + cost_lines(spec, arch, t, n_train, n_test)


def generation_lines(spec: RunSpec, arch: Arch, where: capacity.Target, world: int) -> list[str]:
    prompt, _, most = capacity.lengths(spec)
    g = capacity.generation(spec, arch, where.engine_budget(spec.generator))
    tp = spec.generator.replica_size
    verdict = "fits" if g.fits_weights and g.sequences >= 1 else "does NOT fit"
    if g.fits_weights and 1 <= g.sequences < spec.loop.num_samples:
        verdict += f", but fewer than N = {spec.loop.num_samples}: one prompt's samples wait for each other"
    return [
        f"== generation memory per {where.device}: {spec.generator.backend}, tensor_parallel_size {tp}, "
        f"{max(1, world // tp)} replica(s) ==",
        f"weights     {capacity.gib(g.weights)} ({spec.generator.dtype} / tp {tp}) of the {capacity.gib(g.budget)} the engine may use",
        f"KV cache    {g.kv_per_token / 1024:.0f} KiB per token per {where.device}: room for {g.sequences} sequences of "
        f"{prompt} + {most} tokens (N = {spec.loop.num_samples} per prompt): {verdict}",
    ]


def cost_lines(spec: RunSpec, arch: Arch, t: Training, n_train: int, n_test: int) -> list[str]:
    """An iteration's tokens, FLOPs and GPU-hours (sizing.iteration_cost), and the run's."""
    prompt, completion, _ = capacity.lengths(spec)
    tr, p = spec.trainer, spec.planner
    method = spec.method
    sequences = 2 if method.paired else 1
    items, trained = trained_items(spec, n_train)
    # The reference scores pairs only: each pair once before training, or every trained pair when live.
    reference = 0 if not method.reference else trained if tr.reference == "live" else items
    evaluated = n_test * (1 + spec.eval.maj_k)
    sel = spec.selection
    # each candidate, greedily on the validation problems
    validated = (
        sel.val_size * -(-(trained // tr.batch_size) // sel.val_every_n_steps) if sel.val_size and method.trains else 0
    )
    work = sizing.Work(
        n_train * spec.loop.num_samples + evaluated + validated,
        n_train + n_test + validated,
        prompt,
        completion,
        trained,
        reference,
        sequences,
    )
    cost = sizing.iteration_cost(arch.params, work, t.checkpointing, bool(t.lora))
    peak = sizing.PEAK_TFLOPS[p.gpu]
    gen_h = sizing.gpu_hours(cost.generate_flops, peak, p.generate_utilization)
    train_h = sizing.gpu_hours(cost.train_flops, peak, p.train_utilization)
    final = sizing.gpu_hours(
        2.0 * arch.params * (evaluated * completion + n_test * prompt), peak, p.generate_utilization
    )
    per_token = (4 if t.lora else 6) + (2 if t.checkpointing else 0)
    return [
        f"== cost per iteration: {p.gpu.upper()} dense bf16 peak {peak:.0f} TFLOP/s; a typical example is {prompt} prompt + "
        f"{completion} completion tokens (planner.*) ==",
        f"generate    {n_train} x {spec.loop.num_samples} samples + {n_test} x {1 + spec.eval.maj_k} for evaluation"
        + (f" + {validated} for selection" if validated else "")
        + f" = {cost.generated / 1e6:.1f}M tokens "
        f"+ {cost.prefilled / 1e6:.1f}M prompt tokens, at 2P: {cost.generate_flops:.2e} FLOP = {hours(gen_h)} GPU-hours at "
        f"{p.generate_utilization:.0%} of peak",
        f"train       {trained} {method.items_name} x {sequences * (prompt + completion)} tokens = {cost.trained / 1e6:.1f}M tokens at {per_token}P"
        f" + reference {cost.referenced / 1e6:.1f}M at 2P: {cost.train_flops:.2e} FLOP = {hours(train_h)} GPU-hours at "
        f"{p.train_utilization:.0%} of peak",
        f"total       {hours(gen_h + train_h)} GPU-hours per iteration ({hours((gen_h + train_h) / t.world)} h on {t.world} GPU(s)); "
        f"{hours(spec.loop.iterations * (gen_h + train_h) + final)} GPU-hours for {spec.loop.iterations} iteration(s) and the final evaluation",
    ]
