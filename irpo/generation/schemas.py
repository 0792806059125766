"""Config schemas of the generators: one dataclass per backend, mirroring its constructor
(run-time arguments, `model_dir` and `decoding`, are passed at the call site). A schema also
answers what the rest of irpo asks of a backend (its replica size, its memory budget), so
that nothing outside irpo/generation/ knows which backend a run uses."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, fields
from typing import Any, Optional

from omegaconf import MISSING


@dataclass
class GeneratorConfig:
    _target_: str = MISSING
    top_p: float = 1.0
    max_new_tokens: Optional[int] = None  # None: the task's limit
    dtype: str = "${model.dtype}"
    trust_remote_code: bool = "${model.trust_remote_code}"  # type: ignore[assignment]

    @property
    def backend(self) -> str:
        """The backend's class name, as a plan prints it."""
        return self._target_.rsplit(".", 1)[-1]

    @property
    def replica_size(self) -> int:
        """Ranks one engine spans (each replica samples its own share of the prompts)."""
        return 1

    def engine_budget(self, capacity: int, usable: int, on_gpu: bool) -> int:
        """Bytes an engine may take on a device of `capacity` bytes, `usable` after headroom."""
        return usable

    def open(self, model_dir: str, decoding: Any):
        """The generator over model_dir: the schema's class with its settings (top_p and
        max_new_tokens are the decoding's)."""
        module, _, name = self._target_.rpartition(".")
        settings = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("_target_", "top_p", "max_new_tokens")
        }
        return getattr(importlib.import_module(module), name)(model_dir=model_dir, decoding=decoding, **settings)


@dataclass
class HFGeneratorConfig(GeneratorConfig):
    _target_: str = "irpo.generation.hf.HFGenerator"
    batch_size: int = 512  # sequences decoded together
    device: str = "auto"


@dataclass
class DecodeGeneratorConfig(HFGeneratorConfig):
    _target_: str = "irpo.generation.decode.DecodeGenerator"


@dataclass
class VLLMGeneratorConfig(GeneratorConfig):
    _target_: str = "irpo.generation.vllm.VLLMGenerator"
    tensor_parallel_size: int = 1
    # None: 0.9 with CUDA, 0.5 on CPU (there a share of RAM for the KV cache, used only where
    # VLLM_CPU_KVCACHE_SPACE is set empty: irpo sets it to 1 GiB unless it is set).
    gpu_memory_utilization: Optional[float] = None
    max_model_len: Optional[int] = None  # None: the model's context length
    enforce_eager: Optional[bool] = None  # None: eager on CPU, compiled with CUDA graphs on GPU

    @property
    def replica_size(self) -> int:
        return self.tensor_parallel_size

    def engine_budget(self, capacity: int, usable: int, on_gpu: bool) -> int:
        """vLLM takes gpu_memory_utilization (0.9 by default) of a GPU."""
        return int(capacity * (self.gpu_memory_utilization or 0.9)) if on_gpu else usable


# conf/generator/<name>.yaml starts its defaults list with `<name>_schema`.
GENERATOR_SCHEMAS = {"hf": HFGeneratorConfig, "decode": DecodeGeneratorConfig, "vllm": VLLMGeneratorConfig}


def schema_of(target: str) -> type[GeneratorConfig]:
    """The schema of the backend class `target` names: one of GENERATOR_SCHEMAS, or, for a
    backend of the user's own, the GeneratorConfig subclass its class names as `schema`
    (GeneratorConfig itself where it names none)."""
    shipped = next((schema for schema in GENERATOR_SCHEMAS.values() if schema._target_ == target), None)
    if shipped is not None:
        return shipped
    module, _, name = target.rpartition(".")
    return getattr(getattr(importlib.import_module(module), name), "schema", GeneratorConfig)
