"""HF vs vLLM generation on one model, one prompt set and one length budget, in one run.

Prints each backend's start-up time and generated tokens/s (sampling N per prompt, and
greedy), and vLLM's speed-up over HF. Needs both backends, so run it in the vLLM venv:

    bash .ci/vllm-env.sh && .venv-vllm/bin/python bench/generation.py [--prompts 256 ...]

The model is the shipped tiny M_0 (irpo/models/tiny_m0) unless --model names another; the
prompts are `arith` train problems, and each completion ends where the model stops.

`--workload llama-42m`: train_step.py's 42M Llama with a 32k BPE vocabulary, GSM8K train
questions as prompts, and completions of varied length as GSM8K's are, where continuous
batching pays. A random model does not stop by itself, so each prompt draws its completion
length from a seed (100-300 tokens, all its samples alike) and both backends end it there:
vLLM with that request's `max_tokens` and `ignore_eos`, HF with a logits processor that
forbids EOS before that length and forces it at it. Both generate the same tokens' count.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

from irpo.run.allocator import keep_freed_memory
from irpo.run.threads import set_wait

set_wait()  # as `python -m irpo` does, before torch loads (vLLM's engine inherits it)
keep_freed_memory()  # as `python -m irpo` does (in this process: vLLM's engine has its own)

import torch  # noqa: E402

from irpo.generation.base import Decoding, encode_prompts, render_prompt  # noqa: E402
from irpo.generation.hf import HFGenerator  # noqa: E402
from irpo.generation.vllm import VLLMGenerator  # noqa: E402
from irpo.models.load import load_tokenizer, tiny_m0_dir  # noqa: E402
from irpo.tasks.arith import ArithTask  # noqa: E402


def generated_tokens(tokenizer, completions: list[str]) -> int:
    # Counted from the returned text alike for both backends (EOS and cut stop strings
    # excluded), so the ratio compares equal work.
    return sum(len(ids) for ids in tokenizer(completions, add_special_tokens=False)["input_ids"])


class EndAt:
    """A logits processor: row r may not end before `targets[r]` new tokens and ends at it
    (pad too is forbidden before: HFGenerator counts a row's tokens up to its first pad)."""

    def __init__(self, width: int, targets: list[int], eos: int, pad: int) -> None:
        self.width, self.eos, self.pad = width, eos, pad
        self.targets = torch.tensor(targets)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        made = input_ids.shape[1] - self.width  # tokens generated so far
        end = self.targets.to(scores.device) - 1 == made
        scores[~end, self.eos] = scores[~end, self.pad] = float("-inf")
        scores[end] = float("-inf")
        scores[end, self.eos] = 0.0
        return scores


class HFAtLengths(HFGenerator):
    """irpo's HF generator (its batching and decoding) with every prompt's completions ended
    at the prompt's drawn length."""

    lengths: dict[tuple[int, ...], int] = {}

    def __enter__(self) -> "HFAtLengths":
        super().__enter__()
        generate, eos, pad = self.model.generate, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id

        def at_lengths(input_ids, attention_mask, num_return_sequences=1, **kwargs):
            from transformers import LogitsProcessorList

            rows = [
                tuple(i for i, m in zip(ids.tolist(), mask.tolist()) if m)
                for ids, mask in zip(input_ids, attention_mask)
            ]
            targets = [self.lengths[r] for r in rows for _ in range(num_return_sequences)]
            processor = LogitsProcessorList([EndAt(input_ids.shape[1], targets, eos, pad if pad is not None else eos)])
            return generate(
                input_ids=input_ids,
                attention_mask=attention_mask,
                num_return_sequences=num_return_sequences,
                logits_processor=processor,
                **kwargs,
            )

        self.model.generate = at_lengths
        return self


class VLLMAtLengths(VLLMGenerator):
    """irpo's vLLM generator (its engine process) with each request's `max_tokens` the
    prompt's drawn length and EOS ignored."""

    lengths: dict[tuple[int, ...], int] = {}

    def _generate(self, prompts, params):
        ids = encode_prompts(self.tokenizer, prompts)
        return super()._generate(
            prompts, [p | {"max_tokens": self.lengths[tuple(i)], "ignore_eos": True} for p, i in zip(params, ids)]
        )


def gsm8k_workload(args) -> tuple[str, list[str], dict[tuple[int, ...], int]]:
    """train_step.py's 42M model, GSM8K questions, a completion length per prompt."""
    sys.path.insert(0, str(Path(__file__).parent))
    from train_step import CACHE, DATA, bpe_llama

    CACHE.mkdir(parents=True, exist_ok=True)
    model_dir = bpe_llama(vocab=32768, hidden=512, layers=8, intermediate=1408)
    rows = [json.loads(line) for line in (DATA / "gsm8k/train.jsonl").open()][: args.prompts]
    prompts = [f"Question: {r['question']}\nAnswer:" for r in rows]
    rng = random.Random(args.seed)
    ids = encode_prompts(load_tokenizer(model_dir), prompts)
    return model_dir, prompts, {tuple(i): rng.randint(100, 300) for i in ids}


def run(backend, model_dir: str, prompts: list[str], args) -> dict:
    t0 = time.perf_counter()
    with backend(
        model_dir, Decoding(args.max_new_tokens, tuple(ArithTask.stop) if args.workload == "tiny" else ())
    ) as gen:
        start = time.perf_counter() - t0
        gen.greedy(prompts[:8])  # first-call costs (allocation, kernel selection) untimed
        t = time.perf_counter()
        before = gen.generated_tokens
        sampled = [c for cs in gen.sample(prompts, args.samples, args.temperature, seed=0) for c in cs]
        sample_s, sample_tokens = time.perf_counter() - t, gen.generated_tokens - before
        t, before = time.perf_counter(), gen.generated_tokens
        greedy = gen.greedy(prompts)
        greedy_s, greedy_tokens = time.perf_counter() - t, gen.generated_tokens - before
        if args.workload == "tiny":
            sample_tokens, greedy_tokens = (
                generated_tokens(gen.tokenizer, sampled),
                generated_tokens(gen.tokenizer, greedy),
            )
    return {
        "start": start,
        "sample": sample_tokens / sample_s,
        "greedy": greedy_tokens / greedy_s,
        "sample_tokens": sample_tokens,
        "greedy_tokens": greedy_tokens,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=["tiny", "llama-42m"], default="tiny")
    parser.add_argument("--model", help="with --workload tiny: a checkpoint directory (default: the shipped tiny M_0)")
    parser.add_argument("--prompts", type=int, help="default: 256 (tiny), 16 (llama-42m)")
    parser.add_argument("--samples", type=int, default=8, help="N completions per prompt")
    parser.add_argument(
        "--max-new-tokens", type=int, default=48, help="with --workload tiny (llama-42m: up to 300, drawn per prompt)"
    )
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=0, help="llama-42m: the completion lengths' draw")
    args = parser.parse_args()

    hf_backend, vllm_backend = HFGenerator, VLLMGenerator
    if args.workload == "tiny":
        args.prompts = args.prompts or 256
        model_dir = args.model or tiny_m0_dir()
        tok = load_tokenizer(model_dir)
        prompts = [render_prompt(tok, ArithTask().prompt(ex)) for ex in ArithTask().load("train")[: args.prompts]]
    else:
        args.prompts, args.max_new_tokens = args.prompts or 16, 300
        model_dir, prompts, lengths = gsm8k_workload(args)
        HFAtLengths.lengths = VLLMAtLengths.lengths = lengths
        hf_backend, vllm_backend = HFAtLengths, VLLMAtLengths
        print(
            f"completion lengths drawn per prompt: {min(lengths.values())}-{max(lengths.values())}, mean {sum(lengths.values()) / len(lengths):.0f} tokens"
        )
    print(
        f"model {model_dir}, {len(prompts)} prompts x {args.samples} samples, "
        f"<= {args.max_new_tokens} new tokens, T={args.temperature}, torch threads {torch.get_num_threads()}"
    )
    # HF's OpenMP threads slow down many times over when other work shares the cores.
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs before the run")
    hf = run(hf_backend, model_dir, prompts, args)
    vllm = run(vllm_backend, model_dir, prompts, args)
    if args.workload != "tiny":
        same = hf["sample_tokens"] == vllm["sample_tokens"] and hf["greedy_tokens"] == vllm["greedy_tokens"]
        print(
            f"tokens generated, hf / vllm: sampling {hf['sample_tokens']:,} / {vllm['sample_tokens']:,}, greedy "
            f"{hf['greedy_tokens']:,} / {vllm['greedy_tokens']:,}: {'equal' if same else 'NOT EQUAL'}"
        )

    print(f"{'backend':<10}{'start-up s':>12}{'sample tok/s':>14}{'greedy tok/s':>14}")
    for name, r in (("hf", hf), ("vllm", vllm)):
        print(f"{name:<10}{r['start']:>12.1f}{r['sample']:>14,.0f}{r['greedy']:>14,.0f}")
    print(f"{'vllm/hf':<10}{'':>12}{vllm['sample'] / hf['sample']:>13.2f}x{vllm['greedy'] / hf['greedy']:>13.2f}x")


if __name__ == "__main__":
    main()
