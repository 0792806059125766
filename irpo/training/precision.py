"""Which dtype each copy of the policy holds, and which dtype its arithmetic runs in.

Under a mixed-precision trainer (`bf16-mixed`, `16-mixed`) the trained parameters, their
gradients and AdamW's states are float32 (master weights) and the matmuls run in the half
dtype: Lightning's autocast, and under `fsdp` FSDP2's MixedPrecisionPolicy (half parameters
in compute, float32 gradient reduction) over float32 shards. An AdamW step moves a weight
by about the learning rate, and a half-precision weight keeps no step below half its ulp
(a bf16 weight of 0.02 has an ulp of 1.2e-4): at the paper's 7e-7, a policy held in bf16
would not move. `model.dtype` is what the checkpoint, the generators and the reference
files are read in; M_{t+1} is saved in `model.save_dtype` (default `model.dtype`).

`*-true` precisions train in their own dtype and keep no master copy (`bf16-true` only when
named: the plan then says that updates below bf16 resolution are lost). DeepSpeed keeps its
own float32 master copy of a half model; a LoRA base is frozen, so it stays in model.dtype
(PEFT keeps the adapters in float32).
"""

from __future__ import annotations

from contextlib import nullcontext

DTYPE_OF = {"64": "float64", "32": "float32", "bf16": "bfloat16", "16": "float16"}


def compute_dtype(precision: str) -> str:
    """The dtype matmuls run in under a Lightning precision flag ("bf16-mixed" → bfloat16)."""
    return DTYPE_OF[str(precision).split("-")[0]]


def is_mixed(precision: str) -> bool:
    return str(precision).endswith("-mixed")


def train_dtype(precision: str, model_dtype: str, in_model_dtype: bool) -> str:
    """The dtype the trained policy's parameters (and so its gradients and AdamW's states) are
    held in: the model's own where the trainer keeps it so (DeepSpeed's engine, a LoRA base),
    else float32 master weights under mixed precision."""
    if in_model_dtype:
        return model_dtype
    return "float32" if is_mixed(precision) else compute_dtype(precision)


def numerics(precision: str, device_type: str):
    """The autocast the training forward runs under (Lightning's MixedPrecision plugin: no
    weight-cast cache), for passes that must score as training does: the reference pass's
    log-probs are then those of the first training step, so step-0 log-ratios are ~0."""
    if not is_mixed(precision):
        return nullcontext()
    import torch

    return torch.autocast(device_type, dtype=getattr(torch, compute_dtype(precision)), cache_enabled=False)


def half_ulp(value: float, dtype: str = "bfloat16") -> float:
    """Half the spacing of `dtype` numbers at |value|: a smaller change to a weight of that
    size rounds away when the weight is stored in `dtype`."""
    import math

    mantissa = {"bfloat16": 7, "float16": 10, "float32": 23}[dtype]
    return 2.0 ** (math.floor(math.log2(abs(value))) - mantissa) / 2 if value else 0.0


# CPU flags (as /proc/cpuinfo names them) of units that run bfloat16 matmuls natively. Without
# them a bf16 matmul is emulated in float32 and runs no faster (bench/NOTES.md has both cases).
BF16_UNITS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as the kernel reports them. IRPO_CPU_FLAGS (space-separated)
    stands in for them: a machine whose hypervisor hides flags the CPU has, and tests that
    fake a CPU with or without bf16 units."""
    import os

    given = os.environ.get("IRPO_CPU_FLAGS")
    if given is not None:
        return frozenset(given.split())
    try:
        with open("/proc/cpuinfo") as f:
            line = next((line for line in f if line.startswith("flags")), "")
    except OSError:  # not Linux: no flags known, so no bf16 chosen
        return frozenset()
    return frozenset(line.partition(":")[2].split())


def choose_cpu_bf16(setting: str, accelerator: str, recorded: dict | None) -> dict | None:
    """`model.cpu_bf16` resolved for this launch, as the manifest records it: None where it
    does not apply (never, or a GPU trainer). A run keeps its first launch's choice: a resume on a
    CPU that lacks the units a bf16 run was started with is refused, since continuing in
    float32 would change what every later stage computes."""
    from irpo.errors import UserError

    if setting == "never" or accelerator != "cpu":
        return None
    units = sorted(cpu_flags().intersection(BF16_UNITS))
    if recorded is not None:
        if recorded["bf16"] and not units:
            raise UserError(
                f"this run computes in bfloat16 (chosen at its first launch, on a CPU with {', '.join(recorded['units'])}), "
                f"and this CPU has no bf16 units ({' or '.join(BF16_UNITS)}): resume it on such a CPU, or start a new run"
            )
        return recorded
    return {"bf16": bool(units), "units": units}


def apply_cpu_bf16(cfg, choice: dict | None) -> None:
    """The config as the choice makes it: bf16 generation, and bf16-mixed training over
    float32 master weights where the trainer said 32-true (reference and log-prob passes
    follow the trainer's precision)."""
    if choice is None or not choice["bf16"]:
        return
    cfg.generator.dtype = "bfloat16"
    if cfg.trainer.precision == "32-true":
        cfg.trainer.precision = "bf16-mixed"
