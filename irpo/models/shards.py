"""Reading a rank's shards of a safetensors checkpoint, and nothing else of it.

A safetensors file is an 8-byte header length, a JSON header (each tensor's dtype, shape and
byte range), then the tensors' bytes, row-major. FSDP2 shards every parameter by rows
(`Shard(0)`, `torch.chunk` over the ranks), so a rank's part of a tensor is one contiguous
byte range: it is read with `readinto` straight into the rank's local tensor. No file is
memory-mapped (mapped pages a process touched count in its resident memory until unmapped),
and no whole tensor is materialized; a dtype conversion or a copy to an accelerator goes
through a bounded host buffer.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import torch

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
BUFFER_BYTES = 64 * 2**20  # the most a conversion or device copy stages on the host at once


@dataclass(frozen=True)
class Stored:
    """Where one tensor's bytes are in its file."""

    file: Path
    start: int  # absolute byte offsets of row 0 and of the tensor's end
    end: int
    dtype: torch.dtype
    shape: tuple[int, ...]

    @property
    def row_bytes(self) -> int:
        rows = self.shape[0] if self.shape else 1
        return (self.end - self.start) // rows if rows else 0


def index(files: list[str]) -> dict[str, Stored]:
    """Every tensor of the checkpoint's files, by name, from their headers alone."""
    found = {}
    for name in files:
        with open(name, "rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        for key, meta in header.items():
            if key == "__metadata__":
                continue
            begin, end = meta["data_offsets"]
            found[key] = Stored(
                Path(name), 8 + size + begin, 8 + size + end, DTYPES[meta["dtype"]], tuple(meta["shape"])
            )
    return found


def read_rows(stored: Stored, first: int, out: torch.Tensor) -> None:
    """Rows first .. first + len(out) of a stored tensor into `out` (any dtype, any device)."""
    rows, row_bytes = (out.shape[0] if out.dim() else 1), stored.row_bytes
    with open(stored.file, "rb", buffering=0) as f:
        f.seek(stored.start + first * row_bytes)
        if out.device.type == "cpu" and out.dtype == stored.dtype and out.is_contiguous():
            _fill(f, out.reshape(-1).view(torch.uint8), rows * row_bytes)
            return
        step = max(1, BUFFER_BYTES // max(row_bytes, 1))
        flat = out.view(rows, -1)  # a view: what is copied into it lands in `out`
        for at in range(0, rows, step):
            n = min(step, rows - at)
            staged = torch.empty((n, flat.shape[1]), dtype=stored.dtype)
            _fill(f, staged.reshape(-1).view(torch.uint8), n * row_bytes)
            flat[at : at + n].copy_(staged)


def _fill(f, into: torch.Tensor, length: int) -> None:
    view, done = memoryview(into.numpy()), 0
    while done < length:
        got = f.readinto(view[done:length])
        if not got:
            raise EOFError(f"{f.name}: ends {length - done} bytes short of a tensor")
        done += got


def load_local(tensor: torch.Tensor, stored: Stored, name: str) -> None:
    """Fill a parameter or buffer from its stored tensor: a DTensor sharded by rows (FSDP2)
    with its rank's rows alone, a plain tensor whole."""
    from torch.distributed.tensor import DTensor, Replicate, Shard

    if tuple(tensor.shape) != stored.shape:
        raise ValueError(f"{name}: the checkpoint holds {list(stored.shape)}, the model {list(tensor.shape)}")
    if not isinstance(tensor, DTensor):
        read_rows(stored, 0, tensor.detach())
        return
    local = tensor.to_local()
    if all(isinstance(p, Replicate) for p in tensor.placements):
        read_rows(stored, 0, local)
        return
    if tensor.placements != (Shard(0),):
        raise ValueError(f"{name}: sharded as {tensor.placements}; irpo reads rows of tensors sharded by Shard(0) only")
    # torch.chunk's split, as FSDP2 shards: ceil(rows / ranks) rows each, the last ranks fewer
    per_rank = -(-stored.shape[0] // tensor.device_mesh.size())
    first = min(tensor.device_mesh.get_local_rank() * per_rank, stored.shape[0])
    if local.shape[0] != min(per_rank, stored.shape[0] - first):
        raise ValueError(
            f"{name}: rank's shard has {local.shape[0]} rows, torch.chunk gives {min(per_rank, stored.shape[0] - first)}"
        )
    if local.numel():
        read_rows(stored, first, local)
