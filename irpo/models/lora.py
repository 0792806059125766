"""LoRA adapters (PEFT) on the policy: only the adapters train; after training they are
merged into the weights, so that M_{t+1} is a plain full checkpoint the generators load
and the next iteration's reference (M_t) is never an adapter."""

from __future__ import annotations

import sys

import torch


def with_lora(
    model: torch.nn.Module, r: int, alpha: float, dropout: float, target_modules: list[str]
) -> torch.nn.Module:
    """model with trainable LoRA adapters of rank r on target_modules (r = 0: model as it is)."""
    if r == 0:
        return model
    from peft import LoraConfig, get_peft_model

    return get_peft_model(
        model,
        LoraConfig(
            r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(target_modules), task_type="CAUSAL_LM"
        ),
    )


def merged(model: torch.nn.Module) -> torch.nn.Module:
    """The plain model with any adapters added into its weights."""
    # A model with adapters was wrapped by peft, so peft is loaded: a run without LoRA does
    # not pay its import (~0.5 s) to learn that its model has none.
    peft = sys.modules.get("peft")
    return model.merge_and_unload() if peft is not None and isinstance(model, peft.PeftModel) else model


def init_adapters(model: torch.nn.Module) -> None:
    """Initialise the adapters again, as PEFT does (B = 0: the wrapped model starts as M_t):
    built on the meta device, they hold no values after a sharded policy is materialised."""
    for module in model.modules():
        if hasattr(module, "reset_lora_parameters"):
            for adapter in module.lora_A:
                module.reset_lora_parameters(adapter, True)


def checkpoint_key(key: str) -> str:
    """The name a parameter of a (possibly) adapter-wrapped model has in M_t's checkpoint."""
    return key.removeprefix("base_model.model.").replace(".base_layer.", ".")
