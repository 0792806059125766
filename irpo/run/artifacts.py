"""The run directory: where each stage's files go, atomic writes, and the stage manifest.

A stage's output is written under a temporary name and renamed into place, so a file that
exists is complete; then the stage is recorded in `manifest.json` with the hash of the
config values it depends on. Resuming is reading the manifest.

Everything here is one process's code: under several ranks, the caller runs what writes or
decides on rank 0, visibly (`distributed.on_rank_zero`), and every rank gets its answer.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from irpo.run import compat, preemption
from irpo.run.failpoints import failpoint


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
        failpoint(f"before-rename:{path.name}")
        if path.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as exc:
        # A failed write (a full disk) names the temporary file, or no file: name the artifact.
        if exc.filename is None or str(exc.filename).startswith(str(tmp.parent)):
            exc.filename = str(path)
        raise
    except Exception as exc:
        # torch.save and safetensors report a full disk in their own exception types.
        if "No space left on device" in str(exc):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from exc
        raise
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def remove_tree(path: Path) -> None:
    """Delete a file or a directory tree, if it is there."""
    shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)


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


def shard_seed(seed: int, iteration: int, shard: int) -> int:
    """A sampling seed per (run seed, iteration, shard): a resumed shard draws what an
    uninterrupted run would have drawn."""
    return (seed * 1_000_003 + iteration * 10_007 + shard) % (2**31 - 1)


def write_shards(
    shard_dir: Path,
    size: int,
    shard_size: int,
    make_rows: Callable[[int, int, int], list[dict]],
    owned: Callable[[int], list[int]],
) -> list[Path]:
    """The rows of items [0, size), made `shard_size` items at a time by make_rows(lo, hi,
    shard) and each shard written as it finishes, so that a process killed half-way through
    a long generation resumes at its last finished shard. This process makes the shards
    owned(n_shards) names that are not there yet (its replica's, irpo.run.distributed); returns
    every shard's path, in order, for merge_shards. A stop signal ends the shards here, once
    every rank is done with the shard it was making (irpo.run.preemption)."""
    paths = [shard_dir / f"shard_{s:05d}.jsonl" for s in range(math.ceil(size / shard_size))]
    for s in owned(len(paths)):
        if preemption.noted():
            break
        if not paths[s].exists():
            failpoint(f"shard:{shard_dir.name}:{s}")
            write_jsonl(paths[s], make_rows(s * shard_size, min((s + 1) * shard_size, size), s))
    signum, _ = preemption.agreed()
    if signum:  # counted once every rank has left its loop: the shards on disk are all there are
        raise preemption.Interrupted(signum, shards=sum(p.exists() for p in paths), of=len(paths))
    return paths


def merge_shards(path: Path, shards: list[Path]) -> None:
    """The shards' rows, in order, into `path` (the file one process would have written); the
    shards' directory goes."""
    write_jsonl(path, (row for shard in shards for row in read_jsonl(shard)))
    for directory in dict.fromkeys(shard.parent for shard in shards):
        shutil.rmtree(directory)


def config_hash(values: dict) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:16]


def source_revision() -> dict[str, Any]:
    """The git commit irpo runs from (and whether its checkout has uncommitted changes), so a
    result can name the code that made it; {} for an installed copy outside a checkout."""
    import subprocess

    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        status = subprocess.run(
            ["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if commit.returncode != 0:
        return {}
    return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}


class RunDir:
    """Paths of one run (one Hydra job) and its manifest of finished stages."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.manifest_path = self.root / "manifest.json"
        self._lock = None

    def lock(self) -> None:
        """Hold the run directory for this process: a second process in the same directory
        would write the same files and delete the first one's half-written ones."""
        import fcntl

        self._lock = open(self.root / ".lock", "a")  # "a": a refused launch does not even truncate it
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirBusyError(
                f"{self.root} is in use by another irpo process; wait for it or choose another hydra.run.dir"
            ) from None

    def remove_partial_writes(self) -> None:
        """Delete what a killed process left half-written (`.tmp-*`, never read); a run
        directory has one writer at a time."""
        for tmp in sorted(self.root.rglob(".tmp-*"), reverse=True):
            remove_tree(tmp)

    def recorded(self, key: str) -> Any:
        """What the run's first launch chose for `key` and every later launch keeps: the
        thread count (threads.choose_threads), the CPU precision (precision.choose_cpu_bf16)."""
        return self.manifest().get(key)

    def record_once(self, key: str, value: Any) -> None:
        manifest = self.manifest()
        if key not in manifest:
            write_json(self.manifest_path, manifest | {key: value})

    def iter_dir(self, t: int) -> Path:
        return self.root / f"iter_{t}"

    def manifest(self) -> dict:
        return read_json(self.manifest_path) if self.manifest_path.exists() else {"stages": {}}

    def event(self, **row: Any) -> None:
        """Append to events.jsonl, the run's history across restarts (stage starts and ends)."""
        with open(self.root / "events.jsonl", "a") as f:
            f.write(json.dumps({"time": time.time(), **row}) + "\n")

    def stage(self, name: str) -> dict | None:
        return self.manifest()["stages"].get(name)

    def finish_stage(self, name: str, depends_on: dict, **info: Any) -> None:
        manifest = self.manifest()
        manifest["stages"][name] = {"config": depends_on, "hash": config_hash(depends_on), **info}
        write_json(self.manifest_path, manifest)


@dataclass(frozen=True)
class Stage:
    """A stage of an iteration, declared once beside its code: its kind, what it writes in
    iter_<t>/ (files and directories), the config keys its output depends on (a key, or every
    key under a prefix ending in "."), and whether the jobs of a sweep may copy it from each
    other (a stage whose files are all it leaves: no partial work, no model)."""

    kind: str
    files: tuple[str, ...]
    depends_on: tuple[str, ...]
    shareable: bool = False


class RunDirBusyError(RuntimeError):
    """Another process holds the run directory."""


class StaleStageError(RuntimeError):
    """A finished stage was made with other config values than the current run's."""


class Stages:
    """The manifest seen as a sequence of stages `iter_<t>/<kind>`, each finished under the
    hash of the config values it depends on (`depends_on(t, kind)`). `upgrade` reads a
    record's values in today's keys, where a key was renamed since it was written."""

    def __init__(
        self,
        run: RunDir,
        declared: Sequence[Stage],
        depends_on,
        upgrade: Callable[[dict], dict] = lambda values: values,
    ) -> None:
        self.run, self.depends_on, self.upgrade = run, depends_on, upgrade
        self.declared = {stage.kind: stage for stage in declared}  # in the order they run
        self.order = {kind: i for i, kind in enumerate(self.declared)}

    def _record(self, name: str, run: RunDir | None = None) -> dict | None:
        record = (run or self.run).stage(name)
        if record is None:
            return None
        config = self.upgrade(record["config"])
        return record if config is record["config"] else record | {"config": config, "hash": config_hash(config)}

    def done(self, t: int, kind: str) -> bool:
        record = self._record(f"iter_{t}/{kind}")
        return record is not None and _holds(record, self.depends_on(t, kind))

    def start(self, t: int, kind: str) -> None:
        self.run.event(stage=f"iter_{t}/{kind}", event="start")

    def finish(self, t: int, kind: str, seconds: float, tokens: int | None) -> None:
        """Records the stage as finished, with its seconds and its token count (None: a stage
        with no tokens to count)."""
        info = {"seconds": round(seconds, 3)} | (
            {"tokens": tokens, "tokens_per_s": round(tokens / max(seconds, 1e-9), 1)} if tokens is not None else {}
        )
        self.run.finish_stage(f"iter_{t}/{kind}", self.depends_on(t, kind), **info)
        self.run.event(stage=f"iter_{t}/{kind}", event="finish", **info)

    def interrupted(self, t: int, kind: str, signal: str, **kept: int) -> None:
        """A stop signal ended the stage; `kept`: what of it stays (irpo.run.preemption.Interrupted)."""
        self.run.event(stage=f"iter_{t}/{kind}", event="interrupted", signal=signal, **kept)

    def reuse(self, t: int, kind: str) -> bool:
        """Copies stage `iter_<t>/<kind>` from a finished job of the same sweep (a sibling run
        directory) that made it under the same config values: the arms of a sweep share M_0,
        so its evaluation, and its samples wherever sampling does not depend on what is
        swept, are computed once. Only self-contained stages (evaluation, generation) are
        shared; a run outside a sweep has no siblings."""
        other = self._sibling_with(t, kind)
        if other is None:
            return False
        info = {"seconds": self._copy_stage(t, kind, Path(other)), "reused_from": Path(other).name}
        self.run.finish_stage(f"iter_{t}/{kind}", self.depends_on(t, kind), **info)
        self.run.event(stage=f"iter_{t}/{kind}", event="reused", **info)
        return True

    def _sibling_with(self, t: int, kind: str) -> str | None:
        sweep = self.run.root.parent
        if not self.declared[kind].shareable or not (sweep / "multirun.yaml").exists():
            return None
        now = self.depends_on(t, kind)
        for other in sorted(d for d in sweep.iterdir() if d != self.run.root and (d / "manifest.json").is_file()):
            record = self._record(f"iter_{t}/{kind}", RunDir(other))
            if record is not None and _holds(record, now):
                return str(other)
        return None

    def _copy_stage(self, t: int, kind: str, other: Path) -> float:
        start = time.perf_counter()
        for f in self.declared[kind].files:
            if (other / f"iter_{t}" / f).is_file():
                with atomic_path(self.run.iter_dir(t) / f) as tmp:
                    shutil.copyfile(other / f"iter_{t}" / f, tmp)
        return round(time.perf_counter() - start, 3)

    def timings(self, t: int) -> dict[str, float]:
        """`<stage>_seconds` and `<stage>_tokens_per_s` of iteration t's finished stages, as
        recorded when each one ran (a stage finished by an earlier process keeps its numbers)."""
        out = {}
        for kind in self.declared:
            record = self.run.stage(f"iter_{t}/{kind}") or {}
            out |= {f"{kind}_{k}": record[k] for k in ("seconds", "tokens_per_s") if k in record}
        return out

    def check(self, overwrite: bool) -> None:
        """Before any work: every finished stage must still hold under the current config.
        Otherwise refuse, naming the changed keys, or (overwrite) delete that stage and
        everything after it so that it is redone."""
        stale = None
        for name in self.run.manifest()["stages"]:
            record, (t, kind) = self._record(name), _parse(name)
            now = self.depends_on(t, kind)
            if not _holds(record, now) and (stale is None or (t, self.order[kind]) < stale[0]):
                stale = ((t, self.order[kind]), name, _changed(record["config"], now))
        if stale is None:
            return
        (t0, k0), name, changed = stale
        if not overwrite:
            raise StaleStageError(
                f"{self.run.root} holds stage {name} made with other values of {', '.join(changed)}; "
                "rerun with the old values, use another run directory, or add resume=overwrite to redo it and what follows"
            )
        self._drop_from(t0, k0)

    def _drop_from(self, t0: int, k0: int) -> None:
        manifest = self.run.manifest()
        for name in list(manifest["stages"]):
            t, kind = _parse(name)
            if (t, self.order[kind]) >= (t0, k0):
                del manifest["stages"][name]
        write_json(self.run.manifest_path, manifest)
        for it in self.run.root.glob("iter_*"):
            t = int(it.name.split("_")[1])
            for kind, stage in self.declared.items():
                if (t, self.order[kind]) >= (t0, k0):
                    for f in stage.files:
                        remove_tree(it / f)

    def partial_dir(self, t: int, kind: str, name: str) -> Path:
        """A directory for an unfinished stage's partial work (generation shards, Lightning
        checkpoints), kept across restarts only while the stage's config is unchanged."""
        path = self.run.iter_dir(t) / name
        stamp = path / "stage_config.json"
        now = self.depends_on(t, kind)
        if path.exists() and not (stamp.exists() and self._stamp_holds(read_json(stamp), now)):
            shutil.rmtree(path)
        if not path.exists():
            path.mkdir(parents=True)
            write_json(stamp, {"hash": config_hash(now), "config": now})
        return path

    def _stamp_holds(self, stamp: dict, now: dict) -> bool:
        if compat.hash_only(stamp):
            return stamp["hash"] == config_hash(now)
        config = self.upgrade(stamp["config"])
        return _holds({"config": config, "hash": config_hash(config)}, now)


def _parse(name: str) -> tuple[int, str]:
    it, kind = name.split("/")
    return int(it.split("_")[1]), kind


def _holds(record: dict, now: dict) -> bool:
    """Whether a finished stage's record still holds: every key the stage depends on now has
    its recorded value. A key the record lacks (added to the schema, or declared by the
    stage, after it was recorded) holds while unset (None); a recorded key the stage no
    longer depends on is not compared."""
    return not _changed(record["config"], now)


def _changed(old: dict, new: dict) -> list[str]:
    """The keys of `new` whose value differs from `old`'s (absent counts as None)."""
    return sorted(k for k, v in new.items() if old.get(k) != v)
