"""Config schemas of the generators: one dataclass per backend, mirroring its constructor
(run-time arguments, `model_dir` and `stop`, are passed at the call site)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from omegaconf import MISSING


@dataclass
class GeneratorConfig:
    _target_: str = MISSING
    top_p: float = 1.0
    max_new_tokens: Optional[int] = None  # None: the task's limit
    dtype: str = "${model.dtype}"
    trust_remote_code: bool = "${model.trust_remote_code}"  # type: ignore[assignment]


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


# conf/generator/<name>.yaml starts its defaults list with `<name>_schema`.
GENERATOR_SCHEMAS = {"hf": HFGeneratorConfig, "decode": DecodeGeneratorConfig, "vllm": VLLMGeneratorConfig}
