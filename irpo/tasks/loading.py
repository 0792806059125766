"""Rows of a task's split, from the Hugging Face hub or from local files: one loader for
GSM8K, ARC and MATH.

`data_path` is a file (used for every split: quick runs on a file of one's own) or a
directory holding one file per split, `<name>.jsonl`, `<name>.json` or `<name>.parquet`.
Local files are read here rather than through `datasets` so that a bad row is reported by
file and line, in one line, as a `UserError`; the hub goes through `datasets.load_dataset`
(and its cache, so a run that has downloaded once also works offline).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, NoReturn, Sequence

from irpo.errors import UserError
from irpo.run import hub

EXTENSIONS = (".jsonl", ".json", ".parquet")


@dataclass(frozen=True)
class Row:
    """One record and where it came from ("data/train.jsonl line 12"), for error messages."""

    data: Mapping[str, Any]
    where: str

    def get(self, *keys: str, kind: type | tuple[type, ...] = str) -> Any:
        """The value at a (nested) key, e.g. `row.get("question", "stem")`; of type `kind`."""
        value: Any = self.data
        for key in keys:
            if not isinstance(value, Mapping) or key not in value:
                self.fail(f"no field {'.'.join(keys)!r}")
            value = value[key]
        if not isinstance(value, kind):
            self.fail(f"field {'.'.join(keys)!r} should be {_names(kind)}, not {type(value).__name__}")
        return value

    def fail(self, problem: str) -> NoReturn:
        raise UserError(f"{self.where}: {problem}")


def rows(
    data_path: str | None, name: str, hub_id: str, hub_configs: Sequence[str], hub_split: str | None = None
) -> list[Row]:
    """The rows of split file `name` under `data_path`; with no path, those of split
    `hub_split` (default `name`) of `hub_id`, over each of `hub_configs` in turn (MATH keeps
    one config per subject)."""
    if data_path is None:
        return [row for config in hub_configs for row in hub_rows(hub_id, config, hub_split or name)]
    return read_file(split_file(Path(data_path), name))


def split_file(path: Path, name: str) -> Path:
    """`path` itself if it is a file, else the first of `<name>.jsonl/.json/.parquet` in it."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise UserError(f"{path}: no such file or directory (task.data_path)")
    for ext in EXTENSIONS:
        if (path / f"{name}{ext}").is_file():
            return path / f"{name}{ext}"
    raise UserError(f"{path}: no {name}.jsonl, {name}.json or {name}.parquet in this directory (task.data_path)")


def read_file(path: Path) -> list[Row]:
    if path.suffix not in EXTENSIONS:
        raise UserError(f"{path}: a data file must end in .jsonl, .json or .parquet")
    if path.suffix == ".parquet":
        found = _read_parquet(path)
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
        # `.json` is a JSON array or, as `datasets` also accepts, JSON lines.
        array = path.suffix == ".json" and text.lstrip().startswith("[")
        found = _read_array(path, text) if array else _read_lines(path, text)
    if not found:
        raise UserError(f"{path}: no rows (empty file)")
    return found


def _read_lines(path: Path, text: str) -> list[Row]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path} line {number}: not JSON ({exc.msg} at column {exc.colno})") from exc
        found.append(_row(data, f"{path} line {number}"))
    return found


def _read_array(path: Path, text: str) -> list[Row]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path} line {exc.lineno}: not JSON ({exc.msg} at column {exc.colno})") from exc
    return [_row(item, f"{path} row {i}") for i, item in enumerate(data, 1)]


def _read_parquet(path: Path) -> list[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise UserError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0]})") from exc
    return [Row(data, f"{path} row {i}") for i, data in enumerate(table.to_pylist(), 1)]


def _row(data: Any, where: str) -> Row:
    if not isinstance(data, dict):
        raise UserError(f"{where}: expected a JSON object, got {type(data).__name__}")
    return Row(data, where)


def hub_rows(hub_id: str, config: str, split: str) -> list[Row]:
    import datasets

    offline = hub.unreachable()
    try:
        dataset = datasets.load_dataset(hub_id, config, split=split)
    except Exception as exc:  # noqa: BLE001 - network, auth and missing-dataset errors have many types
        raise UserError(
            hub.failure("task.data_path", f"{hub_id} ({config}, {split})", exc, offline, "file or directory")
        ) from exc
    return [Row(data, f"{hub_id} ({config}) {split} row {i}") for i, data in enumerate(dataset, 1)]


def _names(kind: type | tuple[type, ...]) -> str:
    return " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
