"""Peak memory of one training step against completion length, at Qwen's 151,936-token
vocabulary: the step as it was (one micro-batch of the step's pairs, the LM head and its
float32 log-softmax over every scored position at once) against the step as irpo runs it
(micro-batches bounded by `trainer.micro_batch_tokens`, the head in chunks recomputed in
backward: irpo/training/scoring.py).

    python bench/logits_memory.py              # completions of 256 .. 4,096 tokens
    python bench/logits_memory.py --quick      # a small model and short completions (the test)

The model is Qwen2-shaped with random weights (tied embeddings, q/k/v biases) built here,
with float32 weights and AdamW states, and computes in float32 (this CPU has no fast bf16
matmul; under bf16 autocast the logits' own share halves, their float32 copies stay). Each row runs in its own subprocess (peak RSS cannot be reset within one);
`peak` is the process's peak RSS over the step, `step rise` its rise over the RSS before it
(the weights, AdamW states and the libraries were loaded then). A "before" row whose logits
alone would not fit in the host's memory is not run, and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VOCAB = 151_936


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def step(spec: dict) -> dict:
    """One optimizer step over `pairs` pairs of a `prompt`-token prompt and two `completion`-token
    completions; spec["after"] picks irpo's bounded micro-batches and chunked head."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from irpo.loss import dpo_nll_loss
    from irpo.training.batching import collate, micro_batches
    from irpo.training.scoring import LOGIT_CHUNK_ELEMENTS, batch_logps

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=spec["vocab"],
        hidden_size=spec["hidden"],
        intermediate_size=2 * spec["hidden"],
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
        max_position_embeddings=16384,
    )
    model = Qwen2ForCausalLM(config).train()  # float32 master weights
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    g = torch.Generator().manual_seed(1)

    def ids(n: int) -> list[int]:
        return torch.randint(3, spec["vocab"], (n,), generator=g).tolist()

    items = [
        {
            "index": i,
            "prompt_ids": ids(spec["prompt"]),
            "chosen_ids": ids(spec["completion"]),
            "rejected_ids": ids(spec["completion"]),
            "ref_chosen": -20.0,
            "ref_rejected": -20.0,
        }
        for i in range(spec["pairs"])
    ]
    groups = micro_batches(items, max_tokens=spec["micro_batch_tokens"] if spec["after"] else None)
    chunk = LOGIT_CHUNK_ELEMENTS if spec["after"] else 2**62
    # AdamW's states exist before the measured step, as in every step after the first
    model(input_ids=torch.tensor([ids(8)])).logits.float().mean().backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    before = rss_mib()
    for group in groups:
        batch = collate(group)
        logps, counts = batch_logps(model, batch, chunk_elements=chunk)
        loss = dpo_nll_loss(
            *logps.chunk(2), batch["ref_chosen"], batch["ref_rejected"], counts.chunk(2)[0], 0.1, 1.0
        ).loss
        (loss * len(group) / len(items)).backward()
    optimizer.step()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"before_mib": before, "peak_mib": peak, "micro_batches": len(groups)}


def host_mib() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(step(json.loads(args.worker))))
        return
    base = (
        dict(vocab=4096, hidden=64, prompt=32, pairs=2, micro_batch_tokens=512)
        if args.quick
        else dict(vocab=VOCAB, hidden=64, prompt=128, pairs=2, micro_batch_tokens=2048)
    )
    lengths = [64, 256] if args.quick else [256, 512, 1024, 2048, 4096]
    print(
        f"one training step: {base['pairs']} pairs of a {base['prompt']}-token prompt and two completions, vocabulary {base['vocab']:,}, "
        f"hidden {base['hidden']}, 2 layers, float32; after: micro_batch_tokens={base['micro_batch_tokens']}, "
        f"the head in chunks",
        flush=True,
    )
    print(f"{'completion':>10} {'side':>6} {'micro-batches':>13} {'peak MiB':>9} {'step rise MiB':>14}", flush=True)
    rows = []
    for length in lengths:
        for after in (False, True):
            spec = {**base, "completion": length, "after": after}
            side = "after" if after else "before"
            # float32 logits, log-softmax's intermediates and the gradient: ~16 bytes a logit
            logits_mib = base["pairs"] * (base["prompt"] + 2 * length) * base["vocab"] * 16 / 2**20
            if not after and logits_mib > 0.6 * host_mib():
                print(
                    f"{length:>10} {side:>6} {'':>13} not run: ~{logits_mib / 1024:.0f} GiB of logits on a {host_mib() / 1024:.0f} GiB host",
                    flush=True,
                )
                continue
            proc = subprocess.run(
                [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, cwd=ROOT
            )
            if proc.returncode != 0:
                print(f"{length:>10} {side:>6} failed: {proc.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append((length, side, r))
            print(
                f"{length:>10} {side:>6} {r['micro_batches']:>13} {r['peak_mib']:>9,.0f} {r['peak_mib'] - r['before_mib']:>14,.0f}",
                flush=True,
            )
    after = [r["peak_mib"] for _, side, r in rows if side == "after"]
    if after:
        print(
            f"after: peak from {lengths[0]} to {lengths[-1]} completion tokens within {max(after) / min(after) - 1:.0%} of the smallest"
        )


if __name__ == "__main__":
    main()
