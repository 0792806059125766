"""The built-in tiny model and the recipe that makes its M_0.

M_0 is a ~0.9M-parameter character-level Llama given a short SFT warm-up on gold arith chains
of thought: long enough to learn the answer format and get some problems right, short enough
that IRPO has room to improve it and that sampling yields both winners and losers per prompt.
Rebuild the shipped checkpoint with `python -m irpo.tiny_m0`; the same arguments give the
same weights on the same torch build and CPU (BUILD.json records the settings and results).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from irpo.errors import ArgumentParser
from irpo.generation.base import Decoding
from irpo.generation.hf import HFGenerator
from irpo.models.load import tiny_m0_dir
from irpo.models.tiny_tokenizer import SPECIALS, build_tokenizer
from irpo.tasks.arith import ArithTask, sft_problems, steps_right
from irpo.tasks.base import Example

# conf/task/arith.yaml's train_size: the loop samples from the first LOOP_PROMPTS train
# problems, so SFT draws from the same stream past them and those prompts stay unseen.
LOOP_PROMPTS = 384


def build_config(vocab_size: int, hidden: int = 128, layers: int = 4) -> LlamaConfig:
    # A plain LlamaForCausalLM, no custom code, so vLLM and transformers both load it.
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=3 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=SPECIALS.index("<pad>"),
        bos_token_id=SPECIALS.index("<s>"),
        eos_token_id=SPECIALS.index("</s>"),
    )


def _sft_rows(task: ArithTask, tok, problems: list[Example]) -> list[tuple[list[int], list[int]]]:
    rows = []
    for ex in problems:
        prompt = tok(task.prompt(ex))["input_ids"]  # BOS + prompt, as the generators encode it
        completion = tok(task.gold_completion(ex), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append((prompt + completion, [-100] * len(prompt) + completion))
    return rows


def _collate(rows: list[tuple[list[int], list[int]]], pad: int) -> dict[str, torch.Tensor]:
    width = max(len(ids) for ids, _ in rows)
    return {
        "input_ids": torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows]),
        "attention_mask": torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows]),
        "labels": torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows]),
    }


def probe(model_dir: str, task: ArithTask, samples: int = 8, temperature: float = 0.8, seed: int = 0) -> dict:
    """Greedy test accuracy and, when samples > 0, what sampling on the loop's prompts yields
    (`chain_stats`)."""
    test = task.load("test")
    with HFGenerator(model_dir, Decoding(task.max_new_tokens, tuple(task.stop))) as gen:
        greedy = gen.greedy([task.prompt(ex) for ex in test])
        right = [task.is_correct(task.extract_answer(c), ex.answer) for c, ex in zip(greedy, test)]
        stats = {"greedy_test_accuracy": sum(right) / len(test)}
        if samples:
            train = task.load("train")[:LOOP_PROMPTS]
            outs = gen.sample([task.prompt(ex) for ex in train], samples, temperature, seed)
            stats.update(
                sample_prompts=len(train),
                sample_temperature=temperature,
                samples=samples,
                **chain_stats(task, train, outs),
            )
    return stats


def chain_stats(task: ArithTask, examples: list[Example], samples: list[list[str]]) -> dict:
    """What N samples per prompt give the loop, and whether the answers need their chains:
    pass@N; the mean reward; the share of prompts with both a correct and an incorrect sample
    (the ones that give pairs); `lucky_winners`, the share of correct samples that reach the
    answer through a wrong or missing step (a pair that rewards a wrong chain); and where a
    prompt's correct and incorrect samples first differ, the median over all such pairs in
    characters and as a share of the winner's length."""
    hits = [[task.is_correct(task.extract_answer(c), ex.answer) for c in cs] for cs, ex in zip(samples, examples)]
    winners = [(c, ex) for cs, hs, ex in zip(samples, hits, examples) for c, h in zip(cs, hs) if h]
    lucky = [steps_right(c, ex)[0] < steps_right(c, ex)[1] for c, ex in winners]
    split = [
        (len(os.path.commonprefix([w, l])), len(w))
        for cs, hs in zip(samples, hits)
        for w in (c for c, h in zip(cs, hs) if h)
        for l in (c for c, h in zip(cs, hs) if not h)
    ]
    return {
        "pass_at_n": sum(map(any, hits)) / len(hits),
        "mean_reward": sum(map(sum, hits)) / sum(map(len, hits)),
        "both_sides_fraction": sum(any(h) and not all(h) for h in hits) / len(hits),
        "lucky_winners": sum(lucky) / len(lucky) if lucky else None,
        "first_divergence_chars": statistics.median(p for p, _ in split) if split else None,
        "first_divergence_share": statistics.median(p / n for p, n in split) if split else None,
    }


@dataclass(frozen=True)
class Recipe:
    """How M_0 is trained (the command line's flags; BUILD.json's settings)."""

    steps: int = 500
    batch_size: int = 64
    lr: float = 2e-3
    problems: int = 16000
    hidden: int = 128
    layers: int = 4
    seed: int = 0
    threads: int = 1
    samples: int = 8  # per probe prompt, for the record's pass@N
    # the arith setting it is fine-tuned on (conf/task/arith.yaml's knobs)
    num_terms: int = 3
    max_operand: int = 20
    operators: str = "+-"
    max_new_tokens: int = 48  # the task's, for the probe: a gold chain must fit


def build_m0(out_dir: str, r: Recipe = Recipe()) -> dict:
    """Train M_0 by the recipe, save it to out_dir (replaced whole, never left half-written)
    and return the BUILD.json record."""
    start = time.time()
    knobs = {
        "num_terms": r.num_terms,
        "max_operand": r.max_operand,
        "operators": r.operators,
        "max_new_tokens": r.max_new_tokens,
    }
    task = ArithTask(**knobs)
    # BUILD.json records the draw; arith's splits regenerate it from there to leave it out.
    draw = {
        "settings": {
            "steps": r.steps,
            "batch_size": r.batch_size,
            "lr": r.lr,
            "problems": r.problems,
            "first_problem": LOOP_PROMPTS,
            "hidden": r.hidden,
            "layers": r.layers,
            "seed": r.seed,
            "threads": r.threads,
        },
        "task": {**knobs, "seed": task.seed},
    }
    tok = build_tokenizer()
    rows = _sft_rows(task, tok, sft_problems(draw))
    longest = max(
        len(tok(task.gold_completion(ex), add_special_tokens=False)["input_ids"]) + 1 for ex in task.load("test")
    )
    if longest > r.max_new_tokens:
        raise ValueError(
            f"--max_new_tokens {r.max_new_tokens} cuts this task's gold chains, which take up to {longest} tokens"
        )
    # CPU float sums depend on the thread count (2 threads give other weights than 1), so it is
    # pinned: one thread gives the same M_0 whatever the core count, and it slows down far less
    # than two when other jobs share the cores (measured: 205 s vs 889 s of training under load).
    old_threads, old_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(r.threads)
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(r.seed)
        model = LlamaForCausalLM(build_config(len(tok), r.hidden, r.layers))
        opt = torch.optim.AdamW(model.parameters(), lr=r.lr, weight_decay=0.01)
        # Accuracy is still climbing steeply when training stops; decaying the rate to 10% lets
        # the last steps settle instead of leaving M_0 wherever the final large step put it.
        warmup = max(1, r.steps // 20)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min((s + 1) / warmup, 0.1 + 0.45 * (1 + math.cos(math.pi * s / r.steps)))
        )
        rng, order, losses = random.Random(r.seed), [], []
        model.train()
        for _ in range(r.steps):
            if len(order) < r.batch_size:
                order += rng.sample(range(len(rows)), len(rows))
            batch, order = [rows[i] for i in order[: r.batch_size]], order[r.batch_size :]
            loss = model(**_collate(batch, tok.pad_token_id)).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            losses.append(loss.item())
        train_s = time.time() - start

        out_dir = os.path.abspath(out_dir)
        parent = os.path.dirname(out_dir)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}-", dir=parent)
        try:
            model.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
            record = {
                **draw,
                "parameters": sum(p.numel() for p in model.parameters()),
                "torch": torch.__version__,
                "final_sft_loss": sum(losses[-20:]) / len(losses[-20:]),
                "train_seconds": round(train_s, 1),
                **probe(tmp, task, samples=r.samples, seed=r.seed),
            }
            record["build_seconds"] = round(time.time() - start, 1)
            with open(os.path.join(tmp, "BUILD.json"), "w") as f:
                json.dump(record, f, indent=2)
            # mkdtemp makes the directory private; a shipped checkpoint must be world-readable.
            os.chmod(tmp, 0o755)
            for name in os.listdir(tmp):
                os.chmod(os.path.join(tmp, name), 0o644)
            # rename(2) cannot replace a non-empty directory: move the old one aside first.
            old = tmp + ".old"
            if os.path.exists(out_dir):
                os.rename(out_dir, old)
            os.rename(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)
    return record


# What a task setting must give for a miniature whose answers need their chains (#30 in the
# project's issues): few winners through a wrong step, and a pass@N that leaves pairs to make.
MAX_LUCKY = 0.10
PASS_AT_N = (0.4, 0.9)


def settings_table(records: dict[str, dict]) -> str:
    """A markdown table of M_0 build records (BUILD.json) by name, and which settings give
    lucky winners under MAX_LUCKY with pass@N within PASS_AT_N."""
    lines = [
        "# M_0 build records: does the answer need its chain of thought?",
        "",
        "Each row is an M_0 made by `python -m irpo.tiny_m0` (the same recipe: 500 steps of SFT on 16,000 gold chains) and "
        "probed as its build does: greedy accuracy on 200 test problems, then 8 samples at T = 0.8 on the loop's 384 train "
        "prompts. Lucky winners: correct samples with a wrong or missing step. First divergence: where a prompt's correct and "
        "incorrect samples first differ (median over pairs). This page: `python -m irpo.tiny_m0 --table <dir of BUILD.json "
        "copies>`.",
        "",
        "| M_0 | terms | max operand | operators | hidden | seed | greedy test | pass@N | mean reward | prompts with pairs "
        "| lucky winners | first divergence (chars, share of winner) |",
        "|---" * 12 + "|",
    ]
    fits = []
    for name, r in records.items():
        t, s = r["task"], r["settings"]
        lines.append(
            f"| {name} | {t['num_terms']} | {t['max_operand']} | `{t['operators']}` | {s['hidden']} | {s['seed']} | "
            f"{r['greedy_test_accuracy']:.3f} | {r['pass_at_n']:.3f} | {r['mean_reward']:.3f} | {r['both_sides_fraction']:.3f} | "
            f"{r['lucky_winners']:.3f} | {r['first_divergence_chars']:g}, {r['first_divergence_share']:.2f} |"
        )
        if r["lucky_winners"] < MAX_LUCKY and PASS_AT_N[0] <= r["pass_at_n"] <= PASS_AT_N[1]:
            fits.append(name)
    rule = f"lucky winners under {MAX_LUCKY:.0%} and pass@N within [{PASS_AT_N[0]}, {PASS_AT_N[1]}]"
    lines += ["", f"Meet {rule}: {', '.join(fits)}." if fits else f"None meets {rule}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    p = ArgumentParser(description="Rebuild the built-in tiny M_0 and report what IRPO starts from.")
    p.add_argument("--out", default=tiny_m0_dir())
    p.add_argument(
        "--table",
        metavar="DIR",
        help="print the table of the build records DIR/*.json (by file name) and build nothing",
    )
    for f in fields(Recipe):
        p.add_argument(f"--{f.name}", type=type(f.default), default=f.default)
    args = vars(p.parse_args(argv))
    if args["table"]:
        paths = sorted(Path(args["table"]).glob("*.json"))
        print(settings_table({path.stem: json.loads(path.read_text()) for path in paths}), end="")
        return
    del args["table"]
    record = build_m0(args.pop("out"), Recipe(**args))
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
