"""Bad input never becomes a traceback or silent garbage: a bad data file, a checkpoint
directory missing its weights or tokenizer, an iteration without pairs, a diverging loss
and a full disk each end the run with one line that names the cause, and exit code 2."""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

import irpo.run.artifacts
from irpo.cli import exit_on_user_error
from irpo.models.load import ModelLoadError, load_tokenizer
from irpo.run.artifacts import atomic_path, write_json, write_jsonl

# A normal run at the smallest sizes that still reach every stage.
SMALL = [
    "task.train_size=8",
    "task.test_size=4",
    "num_samples=2",
    "eval.maj_k=0",
    "iterations=1",
    "logger=none",
    "trainer.progress_bar=false",
]


def error_line(proc) -> str:
    """The run's one line of stderr, after checking that it failed the way a user error should."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("irpo: error: "), proc.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def model_dir(random_model_dir):
    return random_model_dir


# --- data files ---------------------------------------------------------------------------
GOOD_ROW = json.dumps({"question": "Tom has 2 apples and buys 3. How many now?", "answer": "2+3=5\n#### 5"})


@pytest.mark.slow
@pytest.mark.parametrize(
    "content,needles",
    [
        (None, ["no such file"]),
        ("", ["empty"]),
        (GOOD_ROW + "\n{not json\n", ["line 2", "not JSON"]),
        (GOOD_ROW + '\n{"question": "What is 1+1?"}\n', ["line 2", "answer"]),
    ],
    ids=["missing", "empty", "not-json", "no-answer"],
)
def test_bad_data_file_is_one_line_naming_file_and_line(cli, tmp_path, content, needles):
    data = tmp_path / "rows.jsonl"
    if content is not None:
        data.write_text(content)
    line = error_line(cli("task=gsm8k", f"task.data_path={data}", "dry_run=true", "logger=none", timeout=120))
    assert str(data) in line
    for needle in needles:
        assert needle in line


# --- model directories --------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    "keep,needle",
    [
        (["config.json"], "no tokenizer files"),
        (["config.json", "tokenizer.json", "tokenizer_config.json"], "no *.safetensors weights"),
    ],
    ids=["no-tokenizer", "no-weights"],
)
def test_checkpoint_without_weights_or_tokenizer_is_one_line(cli, tmp_path, model_dir, keep, needle):
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    for name in keep:
        (ckpt / name).write_bytes((model_dir / name).read_bytes())
    line = error_line(cli(f"model.path={ckpt}", *SMALL, f"hydra.run.dir={tmp_path / 'run'}", timeout=120))
    assert str(ckpt) in line and needle in line


@pytest.mark.slow
def test_missing_model_directory_is_one_line_not_a_hub_lookup(cli, tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    line = error_line(cli(f"model.path={missing}", *SMALL, f"hydra.run.dir={tmp_path / 'run'}", timeout=120))
    assert f"{missing}: no such directory" in line


@pytest.mark.parametrize(
    "path", ["./no_such_model", "../no_such_model", "~/no_such_model", "runs/a/model", "/no_such_model"]
)
def test_paths_that_look_local_are_never_sent_to_the_hub(path, monkeypatch):
    # Only `name` and `owner/name` are hub ids; the hub is never asked about anything else.
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", lambda *a, **k: pytest.fail("sent to the hub"))
    with pytest.raises(ModelLoadError, match="no such directory"):
        load_tokenizer(path)


def test_hub_failure_is_one_line(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError(
            "We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your internet connection."
        )

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", offline)
    with pytest.raises(
        ModelLoadError,
        match=r"^model.path: cannot load owner/name from the Hugging Face hub \(We couldn't connect[^\n]*; "
        r"pass a local path instead: model.path=<checkpoint directory>$",
    ):
        load_tokenizer("owner/name")


# --- an iteration without pairs -----------------------------------------------------------
@pytest.mark.slow
def test_iteration_without_pairs_says_why_and_what_to_change(cli, tmp_path, model_dir):
    line = error_line(cli(f"model.path={model_dir}", *SMALL, f"hydra.run.dir={tmp_path / 'run'}", timeout=120))
    assert "iteration 0 made no pairs" in line and "8 had no correct sample" in line
    for knob in ("num_samples", "temperatures", "gold_winner=true"):
        assert knob in line
    assert not (tmp_path / "run" / "iter_0" / "pairs.jsonl").exists()


# --- a diverging loss ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def diverged(tmp_path_factory, model_dir):
    """A run whose learning rate sends the weights to ~1e30 in one step, checkpointing every step
    (gold_winner: a random model's samples are all wrong, so the gold CoT is the winner)."""
    from conftest import run_cli

    run = tmp_path_factory.mktemp("diverged") / "run"
    proc = run_cli(
        f"model.path={model_dir}",
        *SMALL,
        "gold_winner=true",
        "model.lr=1e30",
        "trainer.batch_size=2",
        "trainer.checkpoint_every_n_steps=1",
        f"hydra.run.dir={run}",
        timeout=180,
    )
    return run, proc


@pytest.mark.slow
def test_non_finite_loss_stops_with_one_line_naming_iteration_and_step(diverged):
    _, proc = diverged
    line = error_line(proc)
    assert re.search(
        r"iteration 0, training step \d+: the loss is (nan|inf|-inf); lower model.lr \(now 1e\+30\)", line
    ), line


@pytest.mark.slow
def test_non_finite_loss_keeps_the_last_checkpoint_and_saves_no_model(diverged):
    run, proc = diverged
    it = run / "iter_0"
    assert not (it / "model").exists() and not (it / "metrics.json").exists()
    assert "iter_0/train" not in json.loads((run / "manifest.json").read_text())["stages"]
    assert not list(run.rglob(".tmp-*"))
    step = int(re.search(r"training step (\d+)", proc.stderr).group(1))
    ckpt = torch.load(it / "train" / "last.ckpt", weights_only=True)
    # The checkpoint is the one written just before the bad step, from finite weights.
    assert ckpt["global_step"] == step
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values())


# --- a full disk --------------------------------------------------------------------------
def _rows_then_disk_full(n: int, code: int = errno.ENOSPC):
    for i in range(n):
        yield {"i": i, "text": "x" * 1000}
    raise OSError(code, "No space left on device" if code == errno.ENOSPC else "Disk quota exceeded")


def _raise(exc: BaseException):
    raise exc


def test_disk_full_mid_jsonl_leaves_no_file(tmp_path):
    path = tmp_path / "iter_0" / "generations.jsonl"
    with pytest.raises(OSError) as info:
        write_jsonl(path, _rows_then_disk_full(100))
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert not path.exists() and not list(tmp_path.rglob(".tmp-*"))


def test_disk_full_keeps_the_previous_complete_file(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_jsonl(path, [{"iteration": 0}])
    with pytest.raises(OSError):
        write_jsonl(path, _rows_then_disk_full(3))
    assert path.read_text() == '{"iteration": 0}\n' and not list(tmp_path.glob(".tmp-*"))


def test_disk_full_when_the_buffer_is_flushed(tmp_path, monkeypatch):
    # A buffered write fails only when flushed, with no file name: /dev/full fails that way.
    path = tmp_path / "pairs.jsonl"
    monkeypatch.setattr(irpo.run.artifacts, "open", lambda file, mode="r": open("/dev/full", mode), raising=False)
    with pytest.raises(OSError) as info:
        write_jsonl(path, [{"iteration": 0}])
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(path)
    assert not path.exists() and not list(tmp_path.glob(".tmp-*"))


def test_disk_full_in_json_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "manifest.json"
    write_json(path, {"stages": {}})
    monkeypatch.setattr(Path, "write_text", lambda self, text: _raise(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(OSError):
        write_json(path, {"stages": {"iter_0/eval": {}}})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"stages": {}} and not list(tmp_path.glob(".tmp-*"))


def test_disk_full_in_a_directory_artifact_leaves_nothing(tmp_path):
    path = tmp_path / "iter_0" / "model"
    with pytest.raises(OSError), atomic_path(path) as tmp:
        tmp.mkdir()
        (tmp / "config.json").write_text("{}")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp / "model.safetensors"))
    assert not path.exists() and not list(tmp_path.rglob(".tmp-*"))


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_disk_full_is_one_line_exit_2(tmp_path, capsys, code):
    path = tmp_path / "iter_0" / "pairs.jsonl"
    with pytest.raises(SystemExit) as info:
        exit_on_user_error(lambda: write_jsonl(path, _rows_then_disk_full(1, code)), full_errors=False)
    assert info.value.code == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"irpo: error: disk full while writing {path} (")


def test_other_os_errors_stay_tracebacks():
    # An I/O error is not the user's to fix; IRPO_FULL_ERROR=1 asks for every traceback.
    with pytest.raises(OSError):
        exit_on_user_error(lambda: _raise(OSError(errno.EIO, "Input/output error")), full_errors=False)
    with pytest.raises(OSError):
        exit_on_user_error(lambda: _raise(OSError(errno.ENOSPC, "No space left on device")), full_errors=True)


@pytest.mark.parametrize(
    "raised",
    [
        RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed: No space left on device"),
        Exception("I/O error: No space left on device (os error 28)"),
    ],
)
def test_library_disk_full_errors_become_enospc_naming_the_artifact(tmp_path, raised):
    # torch.save and safetensors' save_file wrap ENOSPC in their own exception types.
    target = tmp_path / "last.ckpt"
    with pytest.raises(OSError) as info:
        with atomic_path(target):
            raise raised
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(target)
    assert not target.exists() and not list(tmp_path.glob(".tmp-*"))


def test_checkpoints_are_written_beside_their_destination_not_in_tmpdir(tmp_path, monkeypatch):
    """A node-local $TMPDIR too small (here: unusable) for the model states must not stop
    checkpoints that the run's own disk has room for."""
    import tempfile

    import torch

    from irpo.training.train import AtomicCheckpointIO

    not_a_dir = tmp_path / "tmpdir-is-a-file"
    not_a_dir.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(not_a_dir))
    path = tmp_path / "iter_0" / "train" / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"global_step": 3, "w": torch.arange(4.0)}, path)
    assert torch.load(path, weights_only=True)["global_step"] == 3 and not list(path.parent.glob(".tmp-*"))


def test_disk_full_names_the_filesystem(tmp_path, capsys):
    path = tmp_path / "iter_0" / "train" / "last.ckpt"
    with pytest.raises(SystemExit):
        exit_on_user_error(
            lambda: _raise(OSError(errno.ENOSPC, "No space left on device", str(path))), full_errors=False
        )
    line = capsys.readouterr().err.strip()
    mount = tmp_path
    while not os.path.ismount(mount):
        mount = mount.parent
    assert (
        f"disk full while writing {path} (No space left on device, on the filesystem mounted at {mount}, " in line
        and "MiB free" in line
    )
