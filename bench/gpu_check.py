"""The one prepared GPU check: irpo's loop and training step on one GPU, bounded to a few
minutes, each row printed as soon as it is measured.

    python bench/gpu_check.py                  # on a GPU machine
    python bench/gpu_check.py --cpu --quick    # the same steps, small, on this CPU (the suite runs it)

A GPU machine that has torch, transformers, lightning and peft but not irpo's other
dependencies takes them as wheels brought along (pure Python, a few MB), fetched here with
`pip download --no-deps -d bench/.wheels hydra-core omegaconf antlr4-python3-runtime==4.9.3
math-verify latex2sympy2_extended trl datasets rich` and installed there with `pip install
--no-deps bench/.wheels/*.whl`.

Rows:
  machine     the device, library versions, the bf16 matmul peak (measured) and the datasheet's
  tiny loop   `python -m irpo trainer=gpu iterations=1`: the shipped M_0 on arith, M_0 -> M_1
  qwen2 loop  one iteration of a random Qwen2 model at Qwen2.5-0.5B's layer shapes (24 x 896,
              14 heads / 2 KV, MLP 4864, tied; a byte-level BPE trained here on the task's own
              text), gsm8k, gold_winner=true, 256 new tokens, HF generation: its tokens/s and
              the train stage's pair-tokens/s, with MFU against the bf16 peak (2 FLOPs per
              parameter per generated token, 6 per trained token; the stage's model loading
              and set-up included)
  train step  bench/train_step.py --model <that model> --bf16: irpo against TRL's DPOTrainer

Numbers are not asserted anywhere: bench/NOTES.md records what a run printed and where.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "gsm8k"
DATA = (
    SHARED if SHARED.exists() else ROOT / "tests" / "fixtures" / "gsm8k"
)  # the shared data does not travel to a GPU machine
CACHE = ROOT / "bench" / ".cache"
sys.path.insert(0, str(ROOT / "bench"))  # train_step's matmul peak


def row(name: str, text: str) -> None:
    print(f"{name:<12}{text}", flush=True)


def peaks(device: str) -> tuple[float, float | None]:
    """(measured bf16 matmul TFLOP/s, the datasheet's dense bf16 TFLOP/s where known)."""
    import torch
    from train_step import matmul_peak

    from irpo.planning.sizing import PEAK_TFLOPS

    measured = matmul_peak(torch.get_num_threads(), 1024, device, "bfloat16") / 1e3

    name = torch.cuda.get_device_name().lower() if device == "cuda" else ""
    return measured, next((v for k, v in PEAK_TFLOPS.items() if k in name), None)


def irpo(run: Path, overrides: list[str], timeout: int) -> dict:
    """`python -m irpo` into `run`; its iteration-0 metrics row and iteration-1 accuracy."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "irpo", *overrides, "logger=none", "trainer.progress_bar=false", f"hydra.run.dir={run}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "WANDB_SILENT": "true"},
    )
    if proc.returncode:
        raise SystemExit(f"gpu_check: python -m irpo {' '.join(overrides)} failed:\n{proc.stderr[-3000:]}")
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return rows[0] | {"after": rows[-1]["test_accuracy"], "wall": time.perf_counter() - start}


def qwen2_model(quick: bool) -> tuple[Path, int]:
    """The Qwen2 checkpoint (cached) and its parameter count."""
    from irpo.models.families import Shape, build

    shape = (
        Shape(hidden=64, layers=2, intermediate=128, heads=4, kv_heads=2, vocab=2048)
        if quick
        else Shape(hidden=896, layers=24, intermediate=4864, heads=14, kv_heads=2, vocab=151936)
    )
    path = CACHE / f"qwen2_h{shape.hidden}_l{shape.layers}"
    if not (path / "config.json").exists():
        corpus = [
            json.loads(line)["question"] + "\n" + json.loads(line)["answer"]
            for f in ("train.jsonl", "test.jsonl")
            for line in (DATA / f).read_text().splitlines()
        ]
        tmp = Path(tempfile.mkdtemp(dir=CACHE))
        build("qwen2", tmp, corpus, shape)
        tmp.rename(path)
    from irpo.planning.sizing import arch_from_hf_config

    return path, arch_from_hf_config(json.loads((path / "config.json").read_text())).params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="run on the CPU (trainer=cpu)")
    ap.add_argument(
        "--quick", action="store_true", help="small sizes: a tiny Qwen2, a few prompts and tokens (what the suite runs)"
    )
    args = ap.parse_args()
    import torch

    device = "cpu" if args.cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit(
            "gpu_check: no GPU here (torch.cuda.is_available() is False); --cpu runs the same steps on the CPU"
        )
    CACHE.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    import lightning
    import transformers

    measured, datasheet = peaks(device)
    peak = datasheet or measured
    name = torch.cuda.get_device_name() if device == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    row(
        "machine",
        f"{name}; torch {torch.__version__}, transformers {transformers.__version__}, lightning {lightning.__version__}; "
        f"bf16 matmul {measured:.1f} TFLOP/s measured"
        + (f", {datasheet:.0f} datasheet (the MFU denominator)" if datasheet else " (the MFU denominator)"),
    )
    trainer = "trainer=cpu" if args.cpu else "trainer=gpu"
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        small = ["task.train_size=16", "task.test_size=16", "num_samples=2"] if args.quick else []
        tiny = irpo(Path(work) / "tiny", [trainer, "iterations=1", *small], timeout=900)
        row(
            "tiny loop",
            f"M_0 {tiny['test_accuracy']:.3f} -> M_1 {tiny['after']:.3f} ({tiny['pairs']} pairs) in {tiny['wall']:.0f} s; "
            f"generate {tiny['generate_tokens_per_s']:,.0f} tokens/s, train {tiny['train_tokens_per_s']:,.0f} pair-tokens/s",
        )

        model, params = qwen2_model(args.quick)
        sizes = (
            ["task.train_size=8", "task.test_size=4", "task.max_new_tokens=32", "num_samples=2"]
            if args.quick
            else ["task.train_size=64", "task.test_size=32", "task.max_new_tokens=256", "num_samples=4"]
        )
        qwen = irpo(
            Path(work) / "qwen2",
            [
                trainer,
                "iterations=1",
                "task=gsm8k",
                f"task.data_path={DATA}",
                f"model.path={model}",
                "model.chat_template=true",
                "model.dtype=bfloat16",
                "model.lr=1e-6",
                "model.max_length=2048",
                "gold_winner=true",
                "eval.maj_k=0",
                *sizes,
            ],
            timeout=1200,
        )
        gen, train = qwen["generate_tokens_per_s"], qwen["train_tokens_per_s"]
        row(
            "qwen2 loop",
            f"{params / 1e6:,.1f}M params: generate {gen:,.0f} tokens/s (MFU {2 * params * gen / (peak * 1e12):.1%}), "
            f"train {train:,.0f} pair-tokens/s (MFU {6 * params * train / (peak * 1e12):.1%}) on {qwen['pairs']} pairs; "
            f"M_0 {qwen['test_accuracy']:.3f} -> M_1 {qwen['after']:.3f} in {qwen['wall']:.0f} s",
        )

    proc = subprocess.run(
        [
            sys.executable,
            "bench/train_step.py",
            "--model",
            str(model),
            "--bf16",
            "--repeats",
            "1",
            *(["--quick"] if args.quick else []),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
        env={**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if args.cpu else {})},
    )
    if proc.returncode:
        raise SystemExit(f"gpu_check: bench/train_step.py failed:\n{proc.stderr[-3000:]}")
    lines = proc.stdout.splitlines()
    table = next(i for i, line in enumerate(lines) if line.startswith("side"))
    for line in lines[table - 1 : table + 5]:
        row("train step" if line.startswith("==") else "", line)
    row("total", f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
