"""Setting probes for the real-model comparison (docs/real_model/SETTING.md): SmolLM2-135M-Instruct's
M_0 on a candidate task, measured as the loop would see it, on problems no test or validation
set of the comparison uses.

    python docs/real_model/probe.py --problems 64 --samples 8 --max-new-tokens 256 --out <dir>
    python docs/real_model/probe.py --data docs/real_model/data/arith3 ...   a candidate's GSM8K-format files (make_data.py)

Every arithmetic candidate is `task=gsm8k` over a data directory (docs/real_model/make_data.py writes
them): the paper's zero-shot prompt and "Final answer:" extraction whatever the problems.
`--task arc --data <dir>`: ARC (the paper's Sec. 3.2 prompt, letters), ARC-Challenge's files or ARC-Easy's.

Per candidate: greedy accuracy; pass@N (a problem has a correct sample among N at T); the mean
reward; the share of problems with both a correct and an incorrect sample (those that give
pairs); the share of samples (and of greedy answers) with no extractable answer; the share of
lucky winners, correct samples whose chain holds a false equation ("a op b = c" that does not
evaluate to c; the chain's arithmetic checked, not its logic, so this is a lower bound).

Problems: the data's train split (the comparison's test set is drawn from the test split), the
`--problems` train problems ranked *last* by irpo's subset hash at task.seed 0, so that a
train subset (`task.train_size`, drawn from the first ranks) and its held-out validation
never reach them while train_size <= the split's size - problems.

It uses irpo's own generator (generator=decode, bf16 where the CPU has bf16 units), prompt
rendering (the chat template), answer extraction and reward, as `python -m irpo` does.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from irpo.run.allocator import keep_freed_memory  # noqa: E402
from irpo.run.threads import set_wait  # noqa: E402

set_wait()
keep_freed_memory()

import torch  # noqa: E402

from irpo.generation.base import Decoding, render_prompt  # noqa: E402
from irpo.generation.decode import DecodeGenerator  # noqa: E402
from irpo.models.load import load_tokenizer  # noqa: E402
from irpo.training.precision import BF16_UNITS, cpu_flags  # noqa: E402
from irpo.tasks.base import reward  # noqa: E402
from irpo.tasks.subsets import _rank  # noqa: E402

GSM8K = ROOT.parent / "shared" / "data" / "gsm8k"
M0 = ROOT.parent / "main" / "bench" / ".cache" / "smollm2_m0"  # bench/real_model.py's conversion of the preset's GGUF

_NUM = r"\$?\d[\d,]*(?:\.\d+)?"
# "a op b (op c ...) = d", found at every start so that chains ("2 + 3 = 5 * 4 = 20") are read link by link
_EQUATION = re.compile(rf"(?=(?<![\d.,])({_NUM}(?:\s*[-+*/x\u00d7\u00f7]\s*{_NUM})+)\s*=\s*(-?{_NUM}))")


def false_equation(text: str) -> bool:
    """Whether the text holds an equation "a op b ... = c" whose left side does not evaluate to c."""
    for m in _EQUATION.finditer(text):
        left, right = m.group(1), m.group(2)
        expr = re.sub(r"[$,]", "", left).replace("x", "*").replace("\u00d7", "*").replace("\u00f7", "/")
        try:
            value = eval(expr, {"__builtins__": {}})  # digits, . and + - * / only (the pattern's)
            want = float(re.sub(r"[$,]", "", right))
        except (SyntaxError, ZeroDivisionError, ValueError):
            continue
        if abs(value - want) > 1e-6 * max(1.0, abs(want)) and round(value, 2) != round(want, 2):
            return True
    return False


def problems(args) -> tuple[object, list]:
    if args.task == "arc":
        from irpo.tasks.arc import ARCTask

        task = ARCTask(data_path=str(args.data), max_new_tokens=args.max_new_tokens)
    else:
        from irpo.tasks.gsm8k import GSM8KTask

        task = GSM8KTask(data_path=str(args.data), max_new_tokens=args.max_new_tokens)
    ranked = sorted(task.load("train"), key=lambda ex: (_rank(ex, 0), ex.id))
    return task, ranked[-args.problems:]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", choices=["gsm8k", "arc"], default="gsm8k", help="arc: ARC's prompt and letter extraction over --data")
    p.add_argument("--data", default=str(GSM8K), help="a directory of GSM8K-format train.jsonl and test.jsonl")
    p.add_argument("--problems", type=int, default=64)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    task, exs = problems(args)
    tok = load_tokenizer(str(M0), chat_template=True)
    texts = [render_prompt(tok, task.prompt(ex)) for ex in exs]
    dtype = "bfloat16" if cpu_flags().intersection(BF16_UNITS) else "float32"
    start = time.perf_counter()
    with DecodeGenerator(str(M0), Decoding(args.max_new_tokens, tuple(task.stop), 1.0, True), dtype=dtype, device="cpu") as gen:
        greedy = gen.greedy(texts)
        t_greedy = time.perf_counter() - start
        samples = gen.sample(texts, args.samples, args.temperature, args.seed) if args.samples else [[] for _ in texts]
        tokens = gen.generated_tokens
    seconds = time.perf_counter() - start
    records, hits, lucky, winners, unanswered, both = [], [], 0, 0, 0, 0
    for ex, g, ss in zip(exs, greedy, samples):
        g_answer, g_reward = reward(task, g, ex)
        rs = [reward(task, s, ex) for s in ss]
        right = [r >= 1 for _, r in rs]
        hits.append(right)
        for s, (a, r) in zip(ss, rs):
            unanswered += a is None
            if r >= 1:
                winners += 1
                lucky += false_equation(s)
        both += any(right) and not all(right)
        records.append({"id": ex.id, "question": ex.question, "gold": ex.answer, "greedy": g, "greedy_answer": g_answer, "greedy_reward": g_reward,
                        "samples": ss, "answers": [a for a, _ in rs], "rewards": [r for _, r in rs]})
    n, n_samples = len(exs), sum(len(s) for s in samples) or 1
    summary = {
        "task": args.task, "data": args.data, "args": vars(args), "problems": n, "ids": [ex.id for ex in exs], "dtype": dtype,
        "greedy_accuracy": sum(r["greedy_reward"] >= 1 for r in records) / n,
        "greedy_no_answer": sum(r["greedy_answer"] is None for r in records) / n,
        "pass_at_n": sum(map(any, hits)) / n,
        "mean_reward": sum(map(sum, hits)) / n_samples,
        "prompts_with_pairs": both / n,
        "samples_no_answer": unanswered / n_samples,
        "lucky_winners": lucky / winners if winners else None, "winners": winners,
        "greedy_mean_chars": sum(len(r["greedy"]) for r in records) / n,
        "seconds": seconds, "greedy_seconds": t_greedy, "generated_tokens": tokens,
    }
    (out / "probe.json").write_text(json.dumps(summary, indent=1) + "\n")
    with open(out / "records.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    print(json.dumps({k: v for k, v in summary.items() if k not in ("ids", "args")}, indent=1))


if __name__ == "__main__":
    main()
