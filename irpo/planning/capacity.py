"""Whether a run fits the machine it is on, before it reads any data or weights: a config and
the machine mapped onto the planner's arithmetic (irpo/planning/sizing.py), the smallest change that
would fit, and `check_fits`, which refuses a run that cannot, in one line. irpo/planning/plan.py prints the
same numbers.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from irpo.errors import UserError
from irpo.planning import sizing
from irpo.planning.sizing import Arch, GiB, Training
from irpo.run.distributed import launch_size, launched, ranks_per_node
from irpo.training.trainers import FSDP, Trainer

if TYPE_CHECKING:
    from irpo.config import ModelConfig
    from irpo.generation.schemas import GeneratorConfig
    from irpo.spec import RunSpec

# Each GPU keeps this share for the CUDA context, NCCL buffers and the allocator's
# fragmentation; the host keeps it for the OS and the data.
HEADROOM = 0.10
DEFAULT_GPU_GIB = 80.0  # A100 / H100 80 GB: what a plan on a machine without GPUs is sized for
GPUS_PER_NODE = 8  # a node, where the config does not name a GPU count

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

    def engine_budget(self, generator: GeneratorConfig) -> int:
        """Bytes a generation engine may take here (the backend says)."""
        return generator.engine_budget(self.capacity, self.usable, on_gpu=self.device == "GPU")


def resolve_arch(model: ModelConfig) -> Arch | None:
    """model.arch, its unset numbers read from the checkpoint's config.json when it is local;
    None when neither says (a hub id with no arch numbers: nothing is downloaded to plan)."""
    given = {k: v for k, v in asdict(model.arch).items() if v is not None}
    names = {"hidden_size": "hidden", "intermediate_size": "intermediate", "vocab_size": "vocab"}
    given = {names.get(k, k): v for k, v in given.items()}
    config = Path(str(model.path)) / "config.json"
    if config.is_file():
        return replace(sizing.arch_from_hf_config(json.loads(config.read_text())), **given)
    if {"params", "layers", "hidden", "intermediate", "heads", "kv_heads", "vocab"} <= given.keys():
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


def target(trainer: Trainer, found: Machine, per_node: int, planning: bool) -> Target:
    """A GPU when the trainer uses one (on a machine without GPUs, a plan is sized for
    trainer.gpu_memory_gb or DEFAULT_GPU_GIB; a run is not), else the host, shared by the
    ranks on this node."""
    if trainer.accelerator != "cpu" and (found.gpus or planning):
        gpu = (
            int(trainer.gpu_memory_gb * GiB)
            if trainer.gpu_memory_gb is not None
            else found.gpu_bytes or int(DEFAULT_GPU_GIB * GiB)
        )
        return Target("GPU", gpu, int(gpu * (1 - HEADROOM)))
    return Target("CPU", found.host_bytes, int(found.host_bytes * (1 - HEADROOM)) // per_node)


def layout(trainer: Trainer, found: Machine) -> tuple[int, int]:
    """(ranks per node, nodes): as torchrun or srun started them, else as the trainer config says."""
    if launched():  # srun sets no WORLD_SIZE: the launcher's own view
        local = ranks_per_node()
        return local, max(1, launch_size() // local)
    devices = trainer.devices
    if isinstance(devices, int) and devices > 0:
        return devices, trainer.num_nodes
    if not isinstance(devices, (int, str)):  # a list of device indices
        return len(devices), trainer.num_nodes
    return max(1, found.gpus if trainer.accelerator != "cpu" else 1), trainer.num_nodes


def lengths(spec: RunSpec) -> tuple[int, int, int]:
    """(prompt, completion, most new) tokens of a typical example."""
    name = spec.task_settings["_target_"].rsplit(".", 1)[-1].removesuffix("Task").lower()
    prompt, completion = TYPICAL_TOKENS.get(name, (256, 256))
    most = (
        spec.generator.max_new_tokens or spec.task_settings.get("max_new_tokens") or 256
    )  # a task of the user's own may not say
    return spec.planner.prompt_tokens or prompt, min(most, spec.planner.completion_tokens or completion), most


def weight_bytes(dtype: str) -> int:
    return 4 if dtype == "float32" else 2


def pair_tokens(spec: RunSpec) -> int:
    """The most tokens one training item packs: prompt + chosen + rejected of a pair, each
    sequence at most model.max_length (an SFT item: one sequence)."""
    return (2 if spec.method.paired else 1) * spec.model.max_length


def micro_tokens(spec: RunSpec, ranks: int) -> int:
    """The most tokens one forward holds: micro_batch_size items (default a rank's share of a
    step) of at most pair_tokens each, and at most micro_batch_tokens unless one item alone is
    longer (batching.micro_batches)."""
    tr = spec.trainer
    items = (tr.micro_batch_size or max(1, tr.batch_size // ranks)) * pair_tokens(spec)
    return min(items, max(tr.micro_batch_tokens, pair_tokens(spec))) if tr.micro_batch_tokens else items


def training(spec: RunSpec, arch: Arch, per_node: int, nodes: int) -> Training:
    tr, lora = spec.trainer, spec.model.lora
    return Training(
        trainer=tr.name,
        sharded=tr.sharded,
        deepspeed=tr.deepspeed,
        gpus_per_node=per_node,
        nodes=nodes,
        precision=str(tr.precision),
        weight_bytes=weight_bytes(spec.model.dtype),
        tokens=micro_tokens(spec, per_node * nodes),
        checkpointing=tr.activation_checkpointing,
        cpu_offload=tr.cpu_offload,
        live_reference=tr.reference == "live" and spec.method.reference,
        lora=sizing.lora_params(arch, lora.r, tuple(lora.target_modules)) if lora.r else 0,
    )


def as_trained_by(t: Training, trainer: Trainer | type[Trainer]) -> Training:
    """t under another trainer (an object or a class of irpo/training/trainers.py)."""
    return replace(t, trainer=trainer.name, sharded=trainer.sharded, deepspeed=trainer.deepspeed)


def generation(spec: RunSpec, arch: Arch, budget: int) -> sizing.Generation:
    prompt, _, most = lengths(spec)
    return sizing.generation_memory(
        arch, weight_bytes(spec.generator.dtype), spec.generator.replica_size, prompt + most, budget
    )


def changes_that_fit(spec: RunSpec, arch: Arch, t: Training, usable: int, gpus: bool = True) -> list[str]:
    """Single changes to the config under which training fits, least disruptive first (without
    GPUs, none that adds nodes)."""
    targets = tuple(spec.model.lora.target_modules)
    most = sizing.max_tokens(arch, t, usable) // 1024 * 1024
    bound = most >= pair_tokens(spec) and most < t.tokens and replace(t, tokens=most)
    candidates = [
        (f"trainer.micro_batch_tokens={most}", bound),
        ("trainer.activation_checkpointing=true", not t.checkpointing and replace(t, checkpointing=True)),
        ("trainer.cpu_offload=true", t.sharded and not t.cpu_offload and replace(t, cpu_offload=True)),
        (
            f"model.lora.r=16 (on {','.join(targets)})",
            not t.lora and replace(t, lora=sizing.lora_params(arch, 16, targets)),
        ),
    ]
    out = [change for change, new in candidates if new and sizing.fits(arch, new, usable)]
    sharded = t if t.sharded else as_trained_by(t, FSDP)
    nodes = sizing.min_nodes(arch, sharded, usable, even_splits(spec.trainer, t.gpus_per_node))
    if gpus and nodes is not None and (nodes > t.nodes or not t.sharded):
        prefix = "" if t.sharded else f"trainer={FSDP.name} trainer.devices={t.gpus_per_node} "
        out.insert(0 if t.sharded else len(out), f"{prefix}trainer.num_nodes={nodes}")
    shortest, longest, pair = sum(lengths(spec)[:2]), spec.model.max_length, pair_tokens(spec)
    for max_length in (2048, 1024, 512):
        if shortest <= max_length < longest and sizing.fits(
            arch, replace(t, tokens=min(t.tokens, pair * max_length // longest)), usable
        ):
            out.append(
                f"model.max_length={max_length} trainer.micro_batch_tokens={pair * max_length // longest} (longer pairs are dropped)"
            )
            break
    return out


def even_splits(trainer: Trainer, per_node: int, micro: int | None = None) -> list[int]:
    """Node counts over whose ranks the batch splits evenly (batch = micro-batch x ranks x accumulation)."""
    batch = trainer.batch_size
    micro = micro or trainer.micro_batch_size or batch
    return [n for n in range(1, batch + 1) if batch % (micro * per_node * n) == 0]


def gpu_plan(spec: RunSpec, arch: Arch) -> str:
    """Overrides that run cfg on nodes of GPUS_PER_NODE GPUs of DEFAULT_GPU_GIB: fsdp, one item
    per rank, on the fewest nodes the batch splits over, else with cpu_offload on the most
    (the least host memory per node); vLLM at sizing.vllm_tp."""
    usable = int(DEFAULT_GPU_GIB * GiB * (1 - HEADROOM))
    t = replace(
        as_trained_by(training(spec, arch, GPUS_PER_NODE, 1), FSDP),
        precision="bf16-mixed",
        checkpointing=True,
        weight_bytes=2,
        tokens=pair_tokens(spec),
    )
    counts = even_splits(spec.trainer, GPUS_PER_NODE, micro=1) or [1]
    nodes, offload = sizing.min_nodes(arch, t, usable, counts), ""
    if nodes is None:
        nodes, offload = counts[-1], " trainer.cpu_offload=true"
    return (
        f"trainer={FSDP.name} trainer.devices={GPUS_PER_NODE} trainer.num_nodes={nodes}{offload} trainer.micro_batch_size=1 "
        f"generator=vllm generator.tensor_parallel_size={sizing.vllm_tp(arch, 2, usable)}"
    )


def gib(n: float) -> str:
    return "0 GiB" if n == 0 else f"{n / GiB:.1f} GiB" if n >= GiB / 10 else f"{n / 2**20:.1f} MiB"


def count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def check_fits(spec: RunSpec) -> None:
    """Refuses, before any data or weights are read, a run that cannot fit this machine: a GPU
    trainer without a GPU; training or generation over a GPU's memory, or, without GPUs, over
    the host's (each rank on this node holding its share). Its plan is the one plan=true prints."""
    found = machine()
    if spec.trainer.accelerator in ("gpu", "cuda") and not found.gpus:
        raise UserError(
            f"trainer.accelerator={spec.trainer.accelerator} needs a GPU and this machine has none; run trainer=cpu here, "
            "or add plan=true to size the run for GPUs"
        )
    arch = resolve_arch(spec.model)
    if arch is None:
        return
    per_node, nodes = layout(spec.trainer, found)
    t = training(spec, arch, per_node, nodes)
    where = target(spec.trainer, found, per_node, planning=False)
    train = sizing.training_memory(arch, t).total if spec.method.trains else 0
    g = generation(spec, arch, where.engine_budget(spec.generator))
    if train <= where.usable and g.fits_weights and g.sequences >= 1:
        return
    has = (
        f"each of its GPUs has {gib(where.capacity)} ({gib(where.usable)} usable)"
        if where.device == "GPU"
        else f"it has {gib(where.capacity)} of RAM ({gib(where.usable)} usable per rank) and no GPU"
    )
    if train > where.usable:
        mem = sizing.training_memory(arch, t)
        need = (
            f"training needs {gib(train)} per rank: {gib(mem.total - mem.activations)} of weights, gradients and optimizer states ({sizing.rule(t)}) "
            f"and {gib(mem.activations)} of activations ({t.tokens} tokens a micro-batch)"
        )
    else:
        need = f"generation needs {gib(g.weights)} of weights"
    if where.device == "CPU":
        changes = changes_that_fit(spec, arch, t, where.usable, gpus=False) if train > where.usable else []
        here = f"here, set {changes[0]}" if changes else "here, a smaller model (plan=true sizes one)"
        instead = f"{here}; or run it on GPUs: {gpu_plan(spec, arch)}"
    elif train > where.usable:
        changes = changes_that_fit(spec, arch, t, where.usable)
        instead = f"set {changes[0]}" if changes else f"run it on more GPUs: {gpu_plan(spec, arch)}"
    else:
        instead = f"set generator=vllm generator.tensor_parallel_size={sizing.vllm_tp(arch, weight_bytes(spec.model.dtype), where.usable)}"
    raise UserError(
        f"{spec.model.path} ({count(arch.params)} params) does not fit this machine: {need}, and {has}; {instead}"
    )
