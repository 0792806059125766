"""The shared loader (irpo/tasks/loading.py) through the real tasks: local files and
directories in every format, bad files reported by file and line, and the hub path with
`datasets.load_dataset` replaced (no network in tests)."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

from irpo.errors import UserError
from irpo.tasks.arc import ARCTask
from irpo.tasks.gsm8k import GSM8KTask
from irpo.tasks.math import SUBJECTS, MATHTask

FIXTURES = Path(__file__).parent / "fixtures"
GSM8K_ROW = {"question": "What is 2+2?", "answer": "2+2=<<2+2=4>>4\n#### 4"}


def write_lines(path: Path, *lines: str) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def test_construction_reads_no_data():
    task = GSM8KTask(data_path="/does/not/exist")
    with pytest.raises(UserError, match="/does/not/exist: no such file or directory"):
        task.load("train")


def test_a_file_serves_every_split_and_a_directory_its_split_files():
    by_file = GSM8KTask(data_path=str(FIXTURES / "gsm8k" / "test.jsonl"))
    by_dir = GSM8KTask(data_path=str(FIXTURES / "gsm8k"))
    assert [e.question for e in by_file.load("train")] == [e.question for e in by_dir.load("test")]
    assert by_file.load("test") == by_dir.load("test")
    assert len(by_dir.load("train")) == 35 and len(by_dir.load("test")) == 25


def test_json_array_and_parquet_read_like_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (FIXTURES / "gsm8k" / "test.jsonl").read_text().splitlines()]
    (tmp_path / "rows.json").write_text(json.dumps(rows, indent=1))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    expected = GSM8KTask(data_path=str(FIXTURES / "gsm8k" / "test.jsonl")).load("test")
    for name in ("rows.json", "rows.parquet"):
        assert GSM8KTask(data_path=str(tmp_path / name)).load("test") == expected


def test_a_json_file_may_hold_json_lines(tmp_path):
    path = write_lines(tmp_path / "train.json", json.dumps(GSM8K_ROW), json.dumps(GSM8K_ROW))
    assert len(GSM8KTask(data_path=str(path)).load("train")) == 2


@pytest.mark.parametrize(
    "content, message",
    [
        ("", r"train.jsonl: no rows \(empty file\)"),
        ("\n\n", r"train.jsonl: no rows"),
        (json.dumps(GSM8K_ROW) + "\n{oops\n", r"train.jsonl line 2: not JSON"),
        ("[1, 2]\n", r"train.jsonl line 1: expected a JSON object, got list"),
        (json.dumps({"question": "q"}) + "\n", r"train.jsonl line 1: no field 'answer'"),
        (
            json.dumps({"question": "q", "answer": 4}) + "\n",
            r"train.jsonl line 1: field 'answer' should be str, not int",
        ),
        (
            json.dumps({"question": "q", "answer": "4"}) + "\n",
            r"train.jsonl line 1: field 'answer' does not end in a '#### <number>'",
        ),
    ],
)
def test_bad_files_name_the_file_and_line(tmp_path, content, message):
    (tmp_path / "train.jsonl").write_text(content)
    with pytest.raises(UserError, match=message):
        GSM8KTask(data_path=str(tmp_path)).load("train")


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("train.json", b'[{"question": "q",\n "answer": }]', r"train.json line 2: not JSON"),
        ("train.json", b'[{"question": "q"}]', r"train.json row 1: no field 'answer'"),
        ("train.parquet", b"not parquet", r"train.parquet: not a readable parquet file"),
        ("train.csv", b"question,answer", r"train.csv: a data file must end in .jsonl, .json or .parquet"),
        ("train.jsonl", b"\xff\xfe\x00", r"train.jsonl: not UTF-8 text"),
    ],
)
def test_bad_files_of_other_kinds(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=message):
        GSM8KTask(data_path=str(tmp_path / name)).load("train")


def test_a_directory_without_the_split_file(tmp_path):
    with pytest.raises(UserError, match=r"no test.jsonl, test.json or test.parquet in this directory"):
        GSM8KTask(data_path=str(tmp_path)).load("test")


def test_an_unknown_split_is_a_programming_error():
    with pytest.raises(ValueError, match="gsm8k has splits"):
        GSM8KTask().load("validation")


@pytest.fixture
def hub(monkeypatch):
    """`datasets.load_dataset` replaced by the fixture files; records the calls."""
    calls = []

    def load_dataset(hub_id, config, split):
        calls.append((hub_id, config, split))
        folder = {"openai/gsm8k": "gsm8k", "allenai/ai2_arc": "arc", "EleutherAI/hendrycks_math": "math"}[hub_id]
        name = "easy_train" if config == "ARC-Easy" else split
        lines = (FIXTURES / folder / f"{name}.jsonl").read_text().splitlines()
        if folder == "math":  # one config per subject: that subject's rows
            lines = [line for line in lines if json.loads(line)["unique_id"].split("/")[1] == config]
        return [json.loads(line) for line in lines]

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def test_hub_ids_configs_and_splits(hub):
    assert len(GSM8KTask().load("test")) == 25
    assert len(ARCTask(include_easy=True).load("train")) == 20 + 16
    assert len(ARCTask().load("validation")) == 15
    assert len(MATHTask().load("test")) == 34
    assert hub == [
        ("openai/gsm8k", "main", "test"),
        ("allenai/ai2_arc", "ARC-Challenge", "train"),
        ("allenai/ai2_arc", "ARC-Easy", "train"),
        ("allenai/ai2_arc", "ARC-Challenge", "validation"),
        *(("EleutherAI/hendrycks_math", subject, "test") for subject in SUBJECTS),
    ]


def test_hub_rows_are_named_in_errors(monkeypatch):
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: [{"question": "q"}])
    with pytest.raises(UserError, match=r"openai/gsm8k \(main\) train row 1: no field 'answer'"):
        GSM8KTask().load("train")


def test_hub_failure_is_one_line_pointing_to_data_path(monkeypatch):
    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)\nmore detail")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        UserError,
        match=r"^task.data_path: cannot load openai/gsm8k \(main, test\).*Couldn't reach.*task.data_path=<file or directory>$",
    ) as err:
        GSM8KTask().load("test")
    assert "\n" not in str(err.value)
