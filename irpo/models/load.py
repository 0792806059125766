"""Loading policies and tokenizers from a checkpoint directory or hub id.

Weights are read as safetensors only (`use_safetensors=True`): a pickled checkpoint from an
untrusted source is refused rather than executed. Remote code runs only when the model
config asks for it explicitly.

`model.path` is a directory when it exists, starts with `/`, `.` or `~`, or has more than one
`/` (a hub id is `name` or `owner/name`); otherwise it is a hub id. A directory that is not
there is reported as such instead of being sent to the hub, and a hub id that cannot be
fetched (a typo, no network) is reported in one line.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from importlib.resources import files
from pathlib import Path

from irpo.run import hub

# torch loads with the first model, not with this module: configs resolve `ASSETS` and the
# CLI's error handling names `ModelLoadError` before any model is needed.
DTYPES = ("float32", "bfloat16", "float16")


class ModelLoadError(RuntimeError):
    """A checkpoint that cannot be opened; the message names the path and what is missing."""


def tiny_m0_dir() -> str:
    """The built-in M_0 shipped inside the package (rebuilt by `python -m irpo.tiny_m0`)."""
    return str(files("irpo.models") / "tiny_m0")


def mini_m0_dir() -> str:
    """The miniature's M_0 (sweeps/paper_mini.yaml): the same recipe on arith with + - *."""
    return str(files("irpo.models") / "mini_m0")


# Files shipped in the package, by the name configs use (`${irpo_asset:tiny_m0}`); a run's
# manifest records them by name and content, not by where the package is installed.
ASSETS = {"tiny_m0": tiny_m0_dir, "mini_m0": mini_m0_dir}


def is_local(path: str) -> bool:
    return os.path.exists(path) or path.startswith(("/", ".", "~")) or path.count("/") > 1


def _check_local(path: str, need: str) -> None:
    if not is_local(path):
        return
    if not os.path.isdir(path):
        raise ModelLoadError(
            f"{path}: no such directory (model.path: a checkpoint directory, or a hub id 'owner/name')"
        )
    names = os.listdir(path)
    if need == "weights" and not any(n.endswith(".safetensors") for n in names):
        raise ModelLoadError(f"{path}: no *.safetensors weights (irpo loads safetensors only)")
    if need == "tokenizer" and not any(
        n in names for n in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
    ):
        raise ModelLoadError(f"{path}: no tokenizer files (tokenizer.json / tokenizer_config.json)")


@contextmanager
def _hub_errors(path: str):
    offline = None if is_local(path) else hub.unreachable()
    try:
        yield
    except OSError as exc:
        if is_local(path):
            raise
        raise ModelLoadError(hub.failure("model.path", path, exc, offline, "checkpoint directory")) from exc


def load_tokenizer(path: str, trust_remote_code: bool = False, chat_template: bool = False):
    """The checkpoint's tokenizer. With `chat_template` (prompts rendered through the
    template), its eos_token is the template's end of turn: what training appends to every
    completion and both generators stop on. A base tokenizer carrying a chat template often
    names end-of-text there (Qwen2.5's `<|endoftext|>` beside ChatML's `<|im_end|>`); trained
    on it, a model learns to end answers with a token no chat turn ends with. TRL's
    `eos_token` setting does the same by hand."""
    from transformers import AutoTokenizer

    _check_local(path, "tokenizer")
    with _hub_errors(path):
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if chat_template and getattr(tok, "chat_template", None):
        end = end_of_turn(tok)
        if end is not None and end != tok.eos_token:
            tok.eos_token = end
    return tok


def end_of_turn(tokenizer) -> str | None:
    """The special token a chat template writes after an assistant's turn (`<|im_end|>`,
    `<|eot_id|>`, Llama-2's `</s>`), read off the template itself; None where it writes none."""
    probe = "IRPO-END-OF-TURN-PROBE"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "?"}, {"role": "assistant", "content": probe}], tokenize=False
    )
    if probe not in text:
        return None
    special = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    after = tokenizer(text[text.rindex(probe) + len(probe) :], add_special_tokens=False)["input_ids"]
    return next((tokenizer.convert_ids_to_tokens(i) for i in after if i in special), None)


def load_policy(path: str, dtype: str = "float32", trust_remote_code: bool = False):
    import torch
    from transformers import AutoModelForCausalLM

    _check_local(path, "weights")
    if dtype not in DTYPES:
        raise ModelLoadError(f"model.dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    with _hub_errors(path):
        return AutoModelForCausalLM.from_pretrained(
            path, dtype=getattr(torch, dtype), use_safetensors=True, trust_remote_code=trust_remote_code
        )


def policy_skeleton(path: str, dtype: str = "float32", trust_remote_code: bool = False):
    """The policy's modules on the meta device, no weights read: what a sharded strategy
    shards before each rank receives only its part of the weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    _check_local(path, "weights")
    with _hub_errors(path):
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(
            config, dtype=getattr(torch, dtype), trust_remote_code=trust_remote_code
        )


def weight_files(path: str) -> list[str]:
    """The checkpoint's safetensors files, from the hub cache (downloaded once) for a hub id."""
    if not is_local(path):
        from huggingface_hub import snapshot_download

        with _hub_errors(path):
            path = snapshot_download(path, allow_patterns=["*.safetensors"])
    return sorted(str(f) for f in Path(path).glob("*.safetensors"))
