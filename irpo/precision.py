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


def train_dtype(precision: str, model_dtype: str, strategy: str, lora: bool) -> str:
    """The dtype the trained policy's parameters (and so its gradients and AdamW's states) are held in."""
    if strategy == "deepspeed_zero3" or lora:
        return model_dtype
    return "float32" if is_mixed(precision) else compute_dtype(precision)


def policy_dtype(cfg) -> str:
    """train_dtype of a run's config: what the trained policy, a live reference and the
    scoring passes hold M_t in."""
    return train_dtype(cfg.trainer.precision, cfg.model.dtype, cfg.trainer.strategy, cfg.model.lora.r > 0)


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
