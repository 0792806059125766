"""Loading policies and tokenizers from a checkpoint directory or hub id.

Weights are read as safetensors only (`use_safetensors=True`): a pickled checkpoint from an
untrusted source is refused rather than executed. Remote code runs only when the model
config asks for it explicitly.
"""

from __future__ import annotations

import os
from importlib.resources import files

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ModelLoadError(RuntimeError):
    """A checkpoint that cannot be opened; the message names the path and what is missing."""


def tiny_m0_dir() -> str:
    """The built-in M_0 shipped inside the package (rebuilt by `python -m irpo.models.tiny`)."""
    return str(files("irpo.models") / "tiny_m0")


def _check_local(path: str, need: str) -> None:
    if not os.path.isdir(path):
        return  # a hub id: transformers reports its own errors
    names = os.listdir(path)
    if need == "weights" and not any(n.endswith(".safetensors") for n in names):
        raise ModelLoadError(f"{path}: no *.safetensors weights (irpo loads safetensors only)")
    if need == "tokenizer" and not any(n in names for n in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        raise ModelLoadError(f"{path}: no tokenizer files (tokenizer.json / tokenizer_config.json)")


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    _check_local(path, "tokenizer")
    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_policy(path: str, dtype: str = "float32", trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM

    _check_local(path, "weights")
    if dtype not in DTYPES:
        raise ModelLoadError(f"model.dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    return AutoModelForCausalLM.from_pretrained(
        path, dtype=DTYPES[dtype], use_safetensors=True, trust_remote_code=trust_remote_code
    )
