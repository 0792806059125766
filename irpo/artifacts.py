"""The run directory: where each stage's files go, atomic writes, and the stage manifest.

A stage's output is written under a temporary name and renamed into place, so a file that
exists is complete; then the stage is recorded in `manifest.json` with the hash of the
config values it depends on. Resuming is reading the manifest.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yields a temporary sibling of `path` (file or directory) to write; renamed onto
    `path` only when the block finishes. A crash leaves a `.tmp-*` name that is never read."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{path.name}-", dir=path.parent)) / path.name
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def config_hash(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


class RunDir:
    """Paths of one run (one Hydra job) and its manifest of finished stages."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.root / "manifest.json"

    def iter_dir(self, t: int) -> Path:
        return self.root / f"iter_{t}"

    def manifest(self) -> dict:
        return read_json(self.manifest_path) if self.manifest_path.exists() else {"stages": {}}

    def stage(self, name: str) -> dict | None:
        return self.manifest()["stages"].get(name)

    def finish_stage(self, name: str, depends_on: dict, **info: Any) -> None:
        manifest = self.manifest()
        manifest["stages"][name] = {"config": depends_on, "hash": config_hash(depends_on), **info}
        write_json(self.manifest_path, manifest)
