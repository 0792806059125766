"""The candidate settings' data as GSM8K-format files (train.jsonl, test.jsonl of {"question",
"answer"}, the answer ending in "#### N"), so that every candidate runs as `task=gsm8k
task.data_path=<dir>`: the paper's zero-shot prompt ("Your task is to answer the question below.
... Final answer: ..."), its extraction and its gold_winner rule, with no change to irpo's tasks.

    python docs/real_model/make_data.py gsm8k_steps --max-steps 3 --out docs/real_model/data/gsm8k_le3
    python docs/real_model/make_data.py arith --num-terms 3 --max-operand 20 --operators +- --out docs/real_model/data/arith3

gsm8k_steps: the rows of /work/shared/data/gsm8k whose solution has at most --max-steps lines
before its "####" line (each line one calculation), in file order, unchanged.
arith: integer expressions of --num-terms operands in [0, --max-operand] joined by --operators,
the question "What is 15 + 16 - 13?", the gold chain one operation per line in the usual order
of operations ("15 + 16 = 31" ...), then "#### N"; train and test drawn from disjoint seeded
streams, no question twice.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GSM8K = ROOT.parent / "shared" / "data" / "gsm8k"


def gsm8k_steps(max_steps: int, out: Path) -> None:
    for split in ("train", "test"):
        rows = [json.loads(line) for line in (GSM8K / f"{split}.jsonl").read_text().splitlines() if line.strip()]
        keep = [r for r in rows if len(r["answer"].rpartition("####")[0].strip().splitlines()) <= max_steps]
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in keep))
        print(split, len(keep), "of", len(rows))


def arith_chain(terms: list[int], ops: list[str]) -> tuple[list[str], int]:
    """One line per operation, multiplications first (left to right), then + and - left to right."""
    terms, ops, lines = list(terms), list(ops), []
    while "*" in ops:
        i = ops.index("*")
        value = terms[i] * terms[i + 1]
        lines.append(f"{terms[i]} * {terms[i + 1]} = {value}")
        terms[i : i + 2], ops[i : i + 1] = [value], []
    value = terms[0]
    for op, t in zip(ops, terms[1:]):
        new = value + t if op == "+" else value - t
        lines.append(f"{value} {op} {t} = {new}")
        value = new
    return lines, value


def arith(num_terms: int, max_operand: int, operators: str, sizes: dict[str, int], out: Path) -> None:
    seen: set[str] = set()
    space = (max_operand + 1) ** num_terms * len(operators) ** (num_terms - 1)
    if sum(sizes.values()) > space // 2:
        raise SystemExit(f"only {space} distinct problems with these knobs, asked {sum(sizes.values())}")
    for split, size in sizes.items():
        rng, rows = random.Random(f"real_model/{split}"), []
        while len(rows) < size:
            terms = [rng.randint(0, max_operand) for _ in range(num_terms)]
            ops = [rng.choice(operators) for _ in range(num_terms - 1)]
            expr = str(terms[0]) + "".join(f" {op} {t}" for op, t in zip(ops, terms[1:]))
            if expr in seen:
                continue
            seen.add(expr)
            lines, value = arith_chain(terms, ops)
            assert value == eval(expr)
            rows.append({"question": f"What is {expr}?", "answer": "\n".join(lines) + f"\n#### {value}"})
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(split, len(rows))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=["gsm8k_steps", "arith"])
    p.add_argument("--max-steps", type=int, default=3)
    p.add_argument("--num-terms", type=int, default=3)
    p.add_argument("--max-operand", type=int, default=20)
    p.add_argument("--operators", default="+-")
    p.add_argument("--train", type=int, default=3000)
    p.add_argument("--test", type=int, default=1000)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.kind == "gsm8k_steps":
        gsm8k_steps(args.max_steps, out)
    else:
        arith(args.num_terms, args.max_operand, args.operators, {"test": args.test, "train": args.train}, out)


if __name__ == "__main__":
    main()
