"""What a run would do and whether it fits, without loading any weights: `dry_run=true` and
`plan=true` print it; `check_fits` runs before every run and refuses, in one line, a run whose
plan cannot fit the machine it is on. The arithmetic is irpo/planner.py's.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

from omegaconf import DictConfig

from irpo import planner
from irpo.config import temperature
from irpo.errors import UserError
from irpo.planner import GiB, Arch, Training
from irpo.tasks.base import Task

# Each GPU keeps this share for the CUDA context, NCCL buffers and the allocator's
# fragmentation; the host keeps it for the OS and the data.
HEADROOM = 0.10
DEFAULT_GPU_GIB = 80.0  # A100 / H100 80 GB: what a plan on a machine without GPUs is sized for
GPUS_PER_NODE = 8  # a node, where the config does not name a GPU count

# Split sizes of the hub data (the same files are in ../shared/data, each with its SOURCE.md):
# GSM8K 7,473 / 1,319; ARC-Challenge 1,119 (+ ARC-Easy train 2,251) / 1,172; MATH 7,500 less
# the 4 prompt exemplars and 2 rows without a \boxed answer / 5,000.
SPLIT_SIZES = {"gsm8k": (7473, 1319), "arc": (1119, 1172), "math": (7494, 5000)}
ARC_EASY_TRAIN = 2251

# (prompt, completion) tokens of a typical example, for the cost estimate. Prompts: the mean
# rendered prompt in ../shared/data (GSM8K 419, ARC 436, MATH 4-shot 2,015 characters) at ~3.5
# characters per Llama-2 token (it splits numbers into digits), plus the chat template; arith:
# one character per token. Completions: an assumption, the paper reports no lengths (PAPER.md
# §5.8), about twice the gold solutions (GSM8K 257, MATH 576 characters): chat models explain more.
TYPICAL_TOKENS = {"gsm8k": (130, 256), "arc": (140, 256), "math": (600, 512), "arith": (14, 40)}


@dataclass(frozen=True)
class Machine:
    gpus: int  # on this node
    gpu_bytes: int | None  # per GPU; None without GPUs
    host_bytes: int


@dataclass(frozen=True)
class Target:
    """What a plan is sized against: one GPU, or a rank's share of the host's memory."""

    device: str  # GPU or CPU
    capacity: int  # bytes of one GPU, or of the host
    usable: int  # bytes one rank may use, after HEADROOM

    def engine_budget(self, cfg: DictConfig) -> int:
        """Bytes a generation engine may take: vLLM's gpu_memory_utilization (0.9 by default) of a GPU."""
        if self.device == "GPU" and cfg.generator._target_.endswith("VLLMGenerator"):
            return int(self.capacity * (cfg.generator.gpu_memory_utilization or 0.9))
        return self.usable


def print_plan(cfg: DictConfig, task: Task) -> None:
    """dry_run: loads and formats the data (so a bad path or row fails now) and prints one
    rendered prompt; both: the work each iteration does, its memory and its cost."""
    if cfg.dry_run:
        train, test = task.load("train"), task.load("test")
        prompt = task.prompt(train[0])
        rendered = prompt if isinstance(prompt, str) else "\n".join(f"[{m['role']}] {m['content']}" for m in prompt)
        template = " (the model's chat template is applied at run time)" if cfg.model.chat_template else ""
        print(f"== prompt for train example {train[0].id}{template} ==\n{rendered}")
        print(f"== gold answer: {train[0].answer}")
        n_train, n_test = len(train), len(test)
    else:
        n_train, n_test = prompt_counts(cfg, task)
    n, k, T = cfg.num_samples, cfg.pairs_per_prompt, cfg.iterations
    print("== plan ==")
    print(f"model       {cfg.model.path} ({cfg.model.dtype}), generator {cfg.generator._target_.rsplit('.', 1)[-1]}")
    tr = cfg.trainer
    length = f"{tr.max_steps} steps" if tr.max_steps > 0 else f"{tr.max_epochs} epoch(s)"
    print(f"trainer    {tr.strategy} on {tr.devices} {tr.accelerator} device(s) x {tr.num_nodes} node(s), batch {tr.batch_size} pairs, "
          f"lr {cfg.model.lr}, {length} per iteration")
    print(f"method     {cfg.method.name}: train on {cfg.method.train_on}, alpha={cfg.alpha}, beta={cfg.beta}")
    print(f"data       {n_train} train prompts, {n_test} test problems")
    most = n_train * k if cfg.max_pairs is None else min(n_train * k, cfg.max_pairs)
    for t in range(T):
        print(f"iteration {t}: evaluate M_{t}; sample {n_train} x {n} = {n_train * n} completions at T={temperature(cfg, t)}; "
              f"at most {most} pairs; train M_{t + 1}")
    print(f"iteration {T}: evaluate M_{T} (greedy" + (f", maj@{cfg.eval.maj_k}" if cfg.eval.maj_k else "") + ")")
    print("\n".join(resource_lines(cfg, n_train, n_test)))


def prompt_counts(cfg: DictConfig, task: Task) -> tuple[int, int]:
    """Train prompts and test problems: counted in the data when it is local (a data_path, or a
    generated task), else the hub's known split sizes; nothing is downloaded."""
    if getattr(task, "data_path", "generated") is not None:
        return len(task.load("train")), len(task.load("test"))
    train, test = SPLIT_SIZES[task.name]
    train += ARC_EASY_TRAIN if cfg.task.get("include_easy") else 0
    return min(train, cfg.task.train_size or train), min(test, cfg.task.test_size or test)


def resolve_arch(model: DictConfig) -> Arch | None:
    """model.arch, its unset numbers read from the checkpoint's config.json when it is local;
    None when neither says (a hub id with no arch numbers: nothing is downloaded to plan)."""
    given = {k: v for k, v in model.arch.items() if v is not None}
    names = {"hidden_size": "hidden", "intermediate_size": "intermediate", "vocab_size": "vocab"}
    given = {names.get(k, k): v for k, v in given.items()}
    config = Path(str(model.path)) / "config.json"
    if config.is_file():
        return replace(planner.arch_from_hf_config(json.loads(config.read_text())), **given)
    if len(given) == 7:
        return Arch(**given)
    return None


def machine() -> Machine:
    import torch

    host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    limit = Path("/sys/fs/cgroup/memory.max")  # a container's or a SLURM job's share (cgroup v2)
    if limit.is_file() and limit.read_text().strip().isdigit():
        host = min(host, int(limit.read_text()))
    if not torch.cuda.is_available():
        return Machine(0, None, host)
    return Machine(torch.cuda.device_count(), torch.cuda.get_device_properties(0).total_memory, host)


def target(cfg: DictConfig, found: Machine, per_node: int, planning: bool) -> Target:
    """A GPU when the trainer uses one (on a machine without GPUs, a plan is sized for
    trainer.gpu_memory_gb or DEFAULT_GPU_GIB; a run is not), else the host, shared by the
    ranks on this node."""
    if cfg.trainer.accelerator != "cpu" and (found.gpus or planning):
        gpu = int(cfg.trainer.gpu_memory_gb * GiB) if cfg.trainer.gpu_memory_gb is not None else found.gpu_bytes or int(DEFAULT_GPU_GIB * GiB)
        return Target("GPU", gpu, int(gpu * (1 - HEADROOM)))
    return Target("CPU", found.host_bytes, int(found.host_bytes * (1 - HEADROOM)) // per_node)


def layout(cfg: DictConfig, found: Machine) -> tuple[int, int]:
    """(ranks per node, nodes): as torchrun or srun started them, else as the trainer config says."""
    if "WORLD_SIZE" in os.environ:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("SLURM_NTASKS_PER_NODE", os.environ["WORLD_SIZE"])))
        return local, max(1, int(os.environ["WORLD_SIZE"]) // local)
    devices = cfg.trainer.devices
    if isinstance(devices, int) and devices > 0:
        return devices, cfg.trainer.num_nodes
    if not isinstance(devices, (int, str)):  # a list of device indices
        return len(devices), cfg.trainer.num_nodes
    return max(1, found.gpus if cfg.trainer.accelerator != "cpu" else 1), cfg.trainer.num_nodes


def lengths(cfg: DictConfig) -> tuple[int, int, int]:
    """(prompt, completion, most new) tokens of a typical example."""
    name = cfg.task._target_.rsplit(".", 1)[-1].removesuffix("Task").lower()
    prompt, completion = TYPICAL_TOKENS.get(name, (256, 256))
    most = cfg.generator.max_new_tokens or cfg.task.max_new_tokens
    return cfg.planner.prompt_tokens or prompt, min(most, cfg.planner.completion_tokens or completion), most


def weight_bytes(cfg: DictConfig) -> int:
    return 4 if cfg.model.dtype == "float32" else 2


def training(cfg: DictConfig, arch: Arch, per_node: int, nodes: int) -> Training:
    tr = cfg.trainer
    sequences = 2 if cfg.method.train_on == "pairs" else 1
    lora = planner.lora_params(arch, cfg.model.lora.r, tuple(cfg.model.lora.target_modules)) if cfg.model.lora.r else 0
    return Training(
        strategy=tr.strategy, gpus_per_node=per_node, nodes=nodes, precision=str(tr.precision), weight_bytes=weight_bytes(cfg),
        tokens=sequences * (tr.micro_batch_size or tr.batch_size) * cfg.model.max_length,
        checkpointing=tr.activation_checkpointing, cpu_offload=tr.cpu_offload, live_reference=tr.reference == "live", lora=lora,
    )


def generation(cfg: DictConfig, arch: Arch, budget: int) -> planner.Generation:
    prompt, _, most = lengths(cfg)
    return planner.generation_memory(arch, weight_bytes(cfg), cfg.generator.get("tensor_parallel_size", 1), prompt + most, budget)


def changes_that_fit(cfg: DictConfig, arch: Arch, t: Training, usable: int, gpus: bool = True) -> list[str]:
    """Single changes to the config under which training fits, least disruptive first (without
    GPUs, none that adds nodes)."""
    micro = cfg.trainer.micro_batch_size or cfg.trainer.batch_size
    targets = tuple(cfg.model.lora.target_modules)
    candidates = [
        ("trainer.activation_checkpointing=true", not t.checkpointing and replace(t, checkpointing=True)),
        ("trainer.micro_batch_size=1", micro > 1 and replace(t, tokens=t.tokens // micro)),
        ("trainer.cpu_offload=true", t.sharded and not t.cpu_offload and replace(t, cpu_offload=True)),
        (f"model.lora.r=16 (on {','.join(targets)})", not t.lora and replace(t, lora=planner.lora_params(arch, 16, targets))),
    ]
    out = [change for change, new in candidates if new and planner.fits(arch, new, usable)]
    sharded = t if t.sharded else replace(t, strategy="fsdp")
    nodes = planner.min_nodes(arch, sharded, usable, even_splits(cfg, t.gpus_per_node))
    if gpus and nodes is not None and (nodes > t.nodes or not t.sharded):
        prefix = "" if t.sharded else f"trainer=fsdp trainer.devices={t.gpus_per_node} "
        out.insert(0 if t.sharded else len(out), f"{prefix}trainer.num_nodes={nodes}")
    shortest = sum(lengths(cfg)[:2])
    for max_length in (2048, 1024, 512):
        if shortest <= max_length < cfg.model.max_length and planner.fits(arch, replace(t, tokens=t.tokens * max_length // cfg.model.max_length), usable):
            out.append(f"model.max_length={max_length} (longer pairs are dropped)")
            break
    return out


def even_splits(cfg: DictConfig, per_node: int) -> list[int]:
    """Node counts over whose ranks the batch splits evenly (batch = micro-batch x ranks x accumulation)."""
    micro = cfg.trainer.micro_batch_size or cfg.trainer.batch_size
    return [n for n in range(1, cfg.trainer.batch_size + 1) if cfg.trainer.batch_size % (micro * per_node * n) == 0]


def gpu_plan(cfg: DictConfig, arch: Arch) -> str:
    """Overrides that run cfg on nodes of GPUS_PER_NODE GPUs of DEFAULT_GPU_GIB: fsdp, one item
    per rank, on the fewest nodes the batch splits over, else with cpu_offload on the most
    (the least host memory per node); vLLM at planner.vllm_tp."""
    usable = int(DEFAULT_GPU_GIB * GiB * (1 - HEADROOM))
    sequences = 2 if cfg.method.train_on == "pairs" else 1
    t = replace(training(cfg, arch, GPUS_PER_NODE, 1), strategy="fsdp", precision="bf16-mixed", checkpointing=True,
                weight_bytes=2, tokens=sequences * cfg.model.max_length)
    counts = [n for n in range(1, cfg.trainer.batch_size + 1) if cfg.trainer.batch_size % (GPUS_PER_NODE * n) == 0] or [1]
    nodes, offload = planner.min_nodes(arch, t, usable, counts), ""
    if nodes is None:
        nodes, offload = counts[-1], " trainer.cpu_offload=true"
    return (f"trainer=fsdp trainer.devices={GPUS_PER_NODE} trainer.num_nodes={nodes}{offload} trainer.micro_batch_size=1 "
            f"generator=vllm generator.tensor_parallel_size={planner.vllm_tp(arch, 2, usable)}")


def gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB" if n >= GiB / 10 else f"{n / 2**20:.1f} MiB"


def hours(h: float) -> str:
    return f"{h:,.0f}" if h >= 10 else f"{h:.2g}"


def count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def resource_lines(cfg: DictConfig, n_train: int, n_test: int) -> list[str]:
    """The plan's sections: training memory per rank, generation memory, cost."""
    arch = resolve_arch(cfg.model)
    if arch is None:
        return ["memory      unknown: model.path is not a local checkpoint and model.arch is not set (set model.arch.* to plan)"]
    found = machine()
    per_node, nodes = layout(cfg, found)
    t = training(cfg, arch, per_node, nodes)
    where = target(cfg, found, per_node, planning=True)
    mem = planner.training_memory(arch, t)
    each = f"{gib(where.capacity)} per GPU" if where.device == "GPU" else f"{gib(where.capacity)} of RAM shared by {per_node} rank(s)"
    lines = [f"== training memory per rank: {t.world} rank(s) = {t.nodes} node(s) x {t.gpus_per_node}, {each}, "
             f"{gib(where.usable)} usable per rank ({HEADROOM:.0%} headroom) ==",
             f"model       {count(arch.params)} params, {arch.layers} layers, hidden {arch.hidden}, MLP {arch.intermediate}, "
             f"heads {arch.heads} ({arch.kv_heads} KV), vocab {arch.vocab}",
             f"rule        {planner.rule(t)}"]
    micro = cfg.trainer.micro_batch_size or cfg.trainer.batch_size
    other = planner.activation_bytes(arch, t.tokens, planner.compute_bytes(t.precision), not t.checkpointing)
    notes = {"gathered": " (one layer unsharded while it computes)" if mem.gathered else "",
             "activations": f" ({micro} item(s), {t.tokens} tokens at max_length {cfg.model.max_length}; "
                            f"{gib(other)} {'without' if t.checkpointing else 'with'} activation checkpointing)",
             "reference": " (live)" if t.live_reference else " (precomputed before training)"}
    for name in ("weights", "gradients", "optimizer", "gathered", "activations", "reference"):
        lines.append(f"{name:<12}{gib(getattr(mem, name))}{notes.get(name, '')}")
    if mem.host:
        lines.append(f"host        {gib(mem.host * t.gpus_per_node)} per node in CPU memory (offloaded)")
    lines.append(f"total       {gib(mem.total)} of {gib(where.usable)}: " + ("fits" if mem.total <= where.usable else "does NOT fit"))
    if mem.total > where.usable:
        changes = changes_that_fit(cfg, arch, t, where.usable, gpus=where.device == "GPU")
        otherwise = "no single change: combine more nodes, cpu_offload and LoRA" if where.device == "GPU" else f"run on GPUs: {gpu_plan(cfg, arch)}"
        lines.append("to fit      " + ("; or ".join(changes) or otherwise))
    if where.device == "GPU":
        counts = []
        for strategy, offload in (("fsdp", False), ("deepspeed_zero3", False), ("fsdp", True), ("deepspeed_zero3", True)):
            need = planner.min_gpus(arch, replace(t, strategy=strategy, cpu_offload=offload), where.usable)
            mine = " (this plan's rule)" if (strategy, offload) == (t.strategy, t.cpu_offload) else ""
            host = planner.training_memory(arch, replace(t, strategy=strategy, cpu_offload=offload)).host * t.world if offload else 0
            counts.append(f"{strategy}{' + cpu_offload' if offload else ''}{mine} {need or '> 4096'}" + (f" ({gib(host)} on hosts)" if host else ""))
        lines.append(f"GPUs        this training needs at least, of {gib(where.capacity)}: " + ", ".join(counts))
    return lines + generation_lines(cfg, arch, where, t.world) + cost_lines(cfg, arch, t, n_train, n_test)


def generation_lines(cfg: DictConfig, arch: Arch, where: Target, world: int) -> list[str]:
    prompt, _, most = lengths(cfg)
    g = generation(cfg, arch, where.engine_budget(cfg))
    tp = cfg.generator.get("tensor_parallel_size", 1)
    verdict = "fits" if g.fits_weights and g.sequences >= 1 else "does NOT fit"
    if g.fits_weights and 1 <= g.sequences < cfg.num_samples:
        verdict += f", but fewer than N = {cfg.num_samples}: one prompt's samples wait for each other"
    return [f"== generation memory per {where.device}: {cfg.generator._target_.rsplit('.', 1)[-1]}, tensor_parallel_size {tp}, "
            f"{max(1, world // tp)} replica(s) ==",
            f"weights     {gib(g.weights)} ({cfg.model.dtype} / tp {tp}) of the {gib(g.budget)} the engine may use",
            f"KV cache    {g.kv_per_token / 1024:.0f} KiB per token per {where.device}: room for {g.sequences} sequences of "
            f"{prompt} + {most} tokens (N = {cfg.num_samples} per prompt): {verdict}"]


def cost_lines(cfg: DictConfig, arch: Arch, t: Training, n_train: int, n_test: int) -> list[str]:
    """An iteration's tokens, FLOPs and GPU-hours (planner.iteration_cost), and the run's."""
    prompt, completion, _ = lengths(cfg)
    tr, p = cfg.trainer, cfg.planner
    train_on, sequences = cfg.method.train_on, 2 if cfg.method.train_on == "pairs" else 1
    items = {"pairs": n_train * cfg.pairs_per_prompt, "winners": n_train * cfg.pairs_per_prompt, "gold": n_train, "none": 0}[train_on]
    items = min(items, cfg.max_pairs or items)  # at most: prompts without a winner or a loser make none
    trained = min(items * tr.max_epochs if tr.max_epochs > 0 else 10**12, tr.max_steps * tr.batch_size if tr.max_steps > 0 else 10**12)
    trained = trained if train_on != "none" else 0
    reference = trained if tr.reference == "live" else items if train_on == "pairs" else 0
    evaluated = n_test * (1 + cfg.eval.maj_k)
    cost = planner.iteration_cost(arch.params, n_train * cfg.num_samples + evaluated, n_train + n_test, prompt, completion,
                                  trained, reference, sequences, t.checkpointing, bool(t.lora))
    peak = planner.PEAK_TFLOPS[p.gpu]
    gen_h = planner.gpu_hours(cost.generate_flops, peak, p.generate_utilization)
    train_h = planner.gpu_hours(cost.train_flops, peak, p.train_utilization)
    final = planner.gpu_hours(2.0 * arch.params * (evaluated * completion + n_test * prompt), peak, p.generate_utilization)
    per_token = (4 if t.lora else 6) + (2 if t.checkpointing else 0)
    return [f"== cost per iteration: {p.gpu.upper()} dense bf16 peak {peak:.0f} TFLOP/s; a typical example is {prompt} prompt + "
            f"{completion} completion tokens (planner.*) ==",
            f"generate    {n_train} x {cfg.num_samples} samples + {n_test} x {1 + cfg.eval.maj_k} for evaluation = {cost.generated / 1e6:.1f}M tokens "
            f"+ {cost.prefilled / 1e6:.1f}M prompt tokens, at 2P: {cost.generate_flops:.2e} FLOP = {hours(gen_h)} GPU-hours at "
            f"{p.generate_utilization:.0%} of peak",
            f"train       {trained} {train_on} x {sequences * (prompt + completion)} tokens = {cost.trained / 1e6:.1f}M tokens at {per_token}P"
            f" + reference {cost.referenced / 1e6:.1f}M at 2P: {cost.train_flops:.2e} FLOP = {hours(train_h)} GPU-hours at "
            f"{p.train_utilization:.0%} of peak",
            f"total       {hours(gen_h + train_h)} GPU-hours per iteration ({hours((gen_h + train_h) / t.world)} h on {t.world} GPU(s)); "
            f"{hours(cfg.iterations * (gen_h + train_h) + final)} GPU-hours for {cfg.iterations} iteration(s) and the final evaluation"]


def check_fits(cfg: DictConfig) -> None:
    """Refuses, before any data or weights are read, a run that cannot fit this machine: a GPU
    trainer without a GPU; training or generation over a GPU's memory, or, without GPUs, over
    the host's (each rank on this node holding its share). Its plan is the one plan=true prints."""
    found = machine()
    if cfg.trainer.accelerator in ("gpu", "cuda") and not found.gpus:
        raise UserError(f"trainer.accelerator={cfg.trainer.accelerator} needs a GPU and this machine has none; run trainer=cpu here, "
                        "or add plan=true to size the run for GPUs")
    arch = resolve_arch(cfg.model)
    if arch is None:
        return
    per_node, nodes = layout(cfg, found)
    t = training(cfg, arch, per_node, nodes)
    where = target(cfg, found, per_node, planning=False)
    train = planner.training_memory(arch, t).total if cfg.method.train_on != "none" else 0
    g = generation(cfg, arch, where.engine_budget(cfg))
    if train <= where.usable and g.fits_weights and g.sequences >= 1:
        return
    has = (f"each of its GPUs has {gib(where.capacity)} ({gib(where.usable)} usable)" if where.device == "GPU" else
           f"it has {gib(where.capacity)} of RAM ({gib(where.usable)} usable per rank) and no GPU")
    if train > where.usable:
        mem = planner.training_memory(arch, t)
        need = (f"training needs {gib(train)} per rank: {gib(mem.total - mem.activations)} of model states ({planner.rule(t)}) "
                f"and {gib(mem.activations)} of activations at max_length {cfg.model.max_length}")
    else:
        need = f"generation needs {gib(g.weights)} of weights"
    if where.device == "CPU":
        instead = f"run it on GPUs: {gpu_plan(cfg, arch)}; or here a model that fits (plan=true sizes one)"
    elif train > where.usable:
        changes = changes_that_fit(cfg, arch, t, where.usable)
        instead = f"set {changes[0]}" if changes else f"run it on more GPUs: {gpu_plan(cfg, arch)}"
    else:
        instead = f"set generator=vllm generator.tensor_parallel_size={planner.vllm_tp(arch, weight_bytes(cfg), where.usable)}"
    raise UserError(f"{cfg.model.path} ({count(arch.params)} params) does not fit this machine: {need}, and {has}; {instead}")
