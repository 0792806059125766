"""Sharding the policy for training and the reference pass: FSDP2 `fully_shard` per decoder
layer (applied in the LightningModule's `configure_model`), loading each rank's shards of
M_t, and sharded checkpoints written atomically.

`fsdp` is built on Lightning's ModelParallelStrategy (its older FSDPStrategy refuses a CPU
accelerator, and ModelParallelStrategy runs the same code on CPU ranks with gloo). Under
`fsdp` no rank holds the whole policy: it is built on the meta device, sharded, and each
rank reads from the checkpoint's safetensors files only the rows of its own shards.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from irpo.models import shards
from irpo.models.load import weight_files
from irpo.models.lora import checkpoint_key
from irpo.run.artifacts import remove_tree
from irpo.run.distributed import barrier, broadcast, on_rank_zero


class AtomicShardedCheckpoints:
    """ModelParallelStrategy and DeepSpeedStrategy write their sharded checkpoints (a
    directory, a file per rank) in place, past any CheckpointIO: a kill mid-write would
    leave a last.ckpt that does not load. Every rank writes into one temporary directory,
    which rank 0 renames into place."""

    def save_checkpoint(self, checkpoint, filepath, storage_options=None) -> None:
        path = Path(broadcast(str(filepath)))
        tmp = path.parent / f".tmp-{path.name}"
        on_rank_zero(remove_tree, tmp)  # a killed save's leftovers
        super().save_checkpoint(checkpoint, tmp, storage_options)
        on_rank_zero(_replace_dir, tmp, path)


def atomic(strategy: type) -> type:
    """`strategy` whose sharded checkpoints are written atomically (AtomicShardedCheckpoints)."""
    return type(f"Atomic{strategy.__name__}", (AtomicShardedCheckpoints, strategy), {})


def _replace_dir(tmp: Path, path: Path) -> None:
    from irpo.run.failpoints import failpoint

    failpoint(f"before-rename:{path.name}")
    old = path.parent / f".tmp-old-{path.name}"
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    remove_tree(old)


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's repeated blocks, by the class names it declares must not be split
    (`_no_split_modules`, e.g. LlamaDecoderLayer): the unit each rank gathers in turn."""
    names = set(getattr(model, "_no_split_modules", None) or ())
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(
            f"{type(model).__name__} names no decoder layer class (_no_split_modules); fsdp cannot shard it"
        )
    return layers


def shard_policy(model: torch.nn.Module, mesh, precision: str, cpu_offload: bool) -> None:
    """FSDP2: every decoder layer its own shard group, then the rest (embeddings, head)."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    half = {"bf16": torch.bfloat16, "16": torch.float16}.get(precision.split("-")[0])
    options = dict(
        mesh=mesh,
        mp_policy=MixedPrecisionPolicy(param_dtype=half, reduce_dtype=torch.float32)
        if half
        else MixedPrecisionPolicy(),
        offload_policy=CPUOffloadPolicy() if cpu_offload else OffloadPolicy(),
    )
    for layer in decoder_layers(model):
        fully_shard(layer, **options)
    fully_shard(model, **options)


def load_sharded(model: torch.nn.Module, model_dir: str, device: torch.device) -> None:
    """Fill a sharded policy built on the meta device with the checkpoint's weights, each
    rank reading from the safetensors files (one, or many as `model.safetensors.index.json`
    lists them) only the rows of its own shards (irpo/models/shards.py): a rank's memory
    grows by its shards alone. Buffers that no checkpoint holds (the rotary frequencies) are
    computed again, as from_pretrained does."""
    model.to_empty(device=device)
    stored = shards.index(weight_files(model_dir))
    # Under LoRA adapters the names differ; the adapters themselves are not in M_t. A tied
    # head is the embedding's own tensor: filled through the name the checkpoint keeps.
    for key, value in model.state_dict().items():
        if checkpoint_key(key) in stored:
            shards.load_local(value, stored[checkpoint_key(key)], key)
    for module in model.modules():
        if module._non_persistent_buffers_set:
            model._init_weights(module)
    barrier()
