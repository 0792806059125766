"""trainer=fsdp loads M_t shard by shard: two gloo ranks under torchrun fill a policy built
on the meta device from a multi-file safetensors checkpoint of 530 MB, each reading only its
own rows, so neither rank's memory grows by much more than its half."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from safetensors.torch import save_file

from irpo.models import shards


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    path = tmp_path_factory.mktemp("big")
    config = LlamaConfig(
        vocab_size=32000,
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=4,
        num_attention_heads=16,
        num_key_value_heads=4,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path, max_shard_size="200MB")
    return path


@pytest.mark.slow
def test_each_rank_reads_only_its_shards(checkpoint, tmp_path):
    files = list(checkpoint.glob("*.safetensors"))
    size = sum(f.stat().st_size for f in files)
    assert len(files) >= 3 and size >= 400e6 and (checkpoint / "model.safetensors.index.json").exists()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            str(ROOT / "tests/load_shards_rank.py"),
            str(checkpoint),
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r, got in enumerate(ranks):
        assert got["differ"] == [], f"rank {r}: {got['differ'][:5]}"
        assert got["local"] < 0.55 * size  # its half of every tensor (dim-0 chunks)
        assert got["rise"] < 0.6 * size, f"rank {r} grew by {got['rise'] / size:.2f} x the checkpoint while loading"


def test_rows_read_from_a_file_convert_through_a_bounded_buffer(tmp_path, monkeypatch):
    table = torch.arange(60, dtype=torch.float32).reshape(10, 6) / 7
    save_file(
        {"a": table.to(torch.bfloat16), "b": table, "s": torch.tensor(3.5)},
        tmp_path / "m.safetensors",
        metadata={"format": "pt"},
    )
    stored = shards.index([str(tmp_path / "m.safetensors")])
    monkeypatch.setattr(shards, "BUFFER_BYTES", 2 * 6 * 2)  # two bf16 rows a step: four steps for rows 3..9
    out = torch.empty(7, 6)
    shards.read_rows(stored["a"], 3, out)
    assert torch.equal(out, table[3:].to(torch.bfloat16).float())
    same = torch.empty(4, 6)
    shards.read_rows(stored["b"], 6, same)  # straight into the tensor's memory
    assert torch.equal(same, table[6:])
    scalar = torch.empty(())
    shards.load_local(scalar, stored["s"], "s")
    assert scalar.item() == 3.5
    with pytest.raises(ValueError, match=r"b: the checkpoint holds \[10, 6\], the model \[6, 10\]"):
        shards.load_local(torch.empty(6, 10), stored["b"], "b")
