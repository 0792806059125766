"""HF vs vLLM generation on one model, one prompt set and one length budget, in one run.

Prints each backend's start-up time and generated tokens/s (sampling N per prompt, and
greedy), and vLLM's speed-up over HF. Needs both backends, so run it in the vLLM venv:

    bash .ci/vllm-env.sh && .venv-vllm/bin/python bench/generation.py [--prompts 256 ...]

The model is the shipped tiny M_0 (irpo/models/tiny_m0) unless --model names another; the
prompts are `arith` train problems.
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from irpo.generation.base import render_prompt
from irpo.generation.hf import HFGenerator
from irpo.generation.vllm import VLLMGenerator
from irpo.models.load import load_tokenizer, tiny_m0_dir
from irpo.tasks.arith import ArithTask


def generated_tokens(tokenizer, completions: list[str]) -> int:
    # Counted from the returned text alike for both backends (EOS and cut stop strings
    # excluded), so the ratio compares equal work.
    return sum(len(ids) for ids in tokenizer(completions, add_special_tokens=False)["input_ids"])


def run(backend, model_dir: str, prompts: list[str], args) -> dict:
    t0 = time.perf_counter()
    with backend(model_dir, args.max_new_tokens, ArithTask.stop) as gen:
        start = time.perf_counter() - t0
        gen.greedy(prompts[:8])  # first-call costs (allocation, kernel selection) untimed
        t = time.perf_counter()
        sampled = [c for cs in gen.sample(prompts, args.samples, args.temperature, seed=0) for c in cs]
        sample_s = time.perf_counter() - t
        t = time.perf_counter()
        greedy = gen.greedy(prompts)
        greedy_s = time.perf_counter() - t
        tok = gen.tokenizer
    return {
        "start": start,
        "sample": generated_tokens(tok, sampled) / sample_s,
        "greedy": generated_tokens(tok, greedy) / greedy_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a checkpoint directory (default: the shipped tiny M_0)")
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--samples", type=int, default=8, help="N completions per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--temperature", type=float, default=0.8)
    args = parser.parse_args()

    model_dir = args.model or tiny_m0_dir()
    tok = load_tokenizer(model_dir)
    prompts = [render_prompt(tok, ArithTask().prompt(ex)) for ex in ArithTask().load("train")[: args.prompts]]
    print(
        f"model {model_dir}, {len(prompts)} prompts x {args.samples} samples, "
        f"<= {args.max_new_tokens} new tokens, T={args.temperature}, torch threads {torch.get_num_threads()}"
    )
    # HF's OpenMP threads slow down many times over when other work shares the cores.
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs before the run")
    hf = run(HFGenerator, model_dir, prompts, args)
    vllm = run(VLLMGenerator, model_dir, prompts, args)

    print(f"{'backend':<10}{'start-up s':>12}{'sample tok/s':>14}{'greedy tok/s':>14}")
    for name, r in (("hf", hf), ("vllm", vllm)):
        print(f"{name:<10}{r['start']:>12.1f}{r['sample']:>14,.0f}{r['greedy']:>14,.0f}")
    print(f"{'vllm/hf':<10}{'':>12}{vllm['sample'] / hf['sample']:>13.2f}x{vllm['greedy'] / hf['greedy']:>13.2f}x")


if __name__ == "__main__":
    main()
