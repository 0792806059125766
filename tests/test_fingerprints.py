"""The manifest records checkpoints and data by what they hold: a packaged asset by name
and content, a local path with a content fingerprint, a hub id as it is."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import pytest

from irpo.loop import iteration_stages, stage_config
from irpo.models.load import tiny_m0_dir
from irpo.run import fingerprints
from irpo.run.artifacts import RunDir, Stages, StaleStageError
from irpo.run.fingerprints import describe_files, fingerprint
from irpo.spec import build


def config(model_path: str):
    import irpo

    return irpo.compose([f"model.path={model_path}", "eval.maj_k=0"])


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    path = tmp_path / "ckpt"
    path.mkdir()
    (path / "config.json").write_text('{"hidden_size": 8}')
    (path / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    (path / ".lock").write_text("not content")
    return path


def test_same_content_same_fingerprint_wherever_it_lies(checkpoint, tmp_path):
    copy = Path(shutil.copytree(checkpoint, tmp_path / "elsewhere" / "ckpt"))
    assert fingerprint(copy) == fingerprint(checkpoint)
    (copy / ".lock").write_text("hidden files are not content")
    assert fingerprint(copy) == fingerprint(checkpoint)
    (copy / "model.safetensors").write_bytes(bytes(range(256)) * 3 + bytes(256))
    assert fingerprint(copy) != fingerprint(checkpoint)
    (copy / "model.safetensors").write_bytes(bytes(range(256)) * 4)
    (copy / "extra.json").write_text("{}")
    assert fingerprint(copy) != fingerprint(checkpoint)


def test_a_large_file_is_sampled_header_and_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(fingerprints, "WHOLE_FILE_BYTES", 1000)
    monkeypatch.setattr(fingerprints, "BLOCK_BYTES", 100)
    monkeypatch.setattr(fingerprints, "BLOCKS", 5)
    header = b'{"w":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}'
    weights = bytearray(8 + len(header) + 4000)
    weights[:8] = len(header).to_bytes(8, "little")
    weights[8 : 8 + len(header)] = header
    path = tmp_path / "model.safetensors"
    path.write_bytes(weights)
    before = fingerprint(path)
    for where in (8 + 2, len(weights) - 1, len(weights) // 2):  # the header, the last block, a middle block
        changed = bytearray(weights)
        changed[where] ^= 0xFF
        path.write_bytes(changed)
        assert fingerprint(path) != before, where
    path.write_bytes(weights)
    assert fingerprint(path) == before


def test_the_packaged_m0_is_recorded_by_name_and_content():
    described = describe_files({"model.path": tiny_m0_dir(), "task.data_path": None})
    assert described == {
        "model.path": {"asset": "tiny_m0", "sha256": fingerprint(Path(tiny_m0_dir()))},
        "task.data_path": None,
    }


def test_local_paths_keep_their_path_and_hub_ids_stay(checkpoint):
    described = describe_files({"model.path": str(checkpoint), "task.data_path": str(checkpoint / "config.json")})
    assert described["model.path"] == {"path": str(checkpoint), "sha256": fingerprint(checkpoint)}
    assert described["task.data_path"] == {
        "path": str(checkpoint / "config.json"),
        "sha256": fingerprint(checkpoint / "config.json"),
    }
    assert (
        describe_files({"model.path": "Qwen/Qwen2.5-0.5B", "task.data_path": None})["model.path"] == "Qwen/Qwen2.5-0.5B"
    )
    assert describe_files({"model.path": "./not_there"})["model.path"] == {"path": "./not_there", "sha256": None}


def test_a_checkpoint_changed_in_place_is_refused_naming_model_path(checkpoint, tmp_path):
    cfg = config(str(checkpoint))
    stages = Stages(RunDir(tmp_path / "run"), iteration_stages(), partial(stage_config, build(cfg)))
    stages.finish(0, "eval", 1.0, None)
    stages.check(overwrite=False)  # unchanged: nothing to refuse
    (checkpoint / "model.safetensors").write_bytes(bytes(1024))
    with pytest.raises(StaleStageError, match=r"stage iter_0/eval made with other values of model.path;"):
        stages.check(overwrite=False)


def test_partial_work_survives_a_new_unset_key_and_goes_with_a_changed_one(tmp_path):
    values = {"a": 1}
    stages = Stages(RunDir(tmp_path / "run"), iteration_stages(), lambda t, kind: dict(values))
    shards = stages.partial_dir(0, "generate", "generations")
    (shards / "shard_00000.jsonl").write_text("{}\n")
    values["b"] = None  # a key added to the schema since, unset: the shards still hold
    assert (stages.partial_dir(0, "generate", "generations") / "shard_00000.jsonl").exists()
    values["a"] = 2
    assert not (stages.partial_dir(0, "generate", "generations") / "shard_00000.jsonl").exists()
