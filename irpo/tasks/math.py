"""`math`: competition mathematics (Hendrycks et al. 2021), the paper's Sec. 3.3.

4-shot prompt (fixed train exemplars, irpo/tasks/math_shots.py) whose solutions end in
\\boxed{...} and a "Final answer: ..." line, the format the paper asks for. The gold answer
is the last \\boxed{} of the solution (the dataset's own convention); the gold completion
is the solution followed by that line.

Extraction: the last "Final answer:" line that holds something (inside a \\boxed{} there if
it has one, without $...$ delimiters or a closing period), else the last \\boxed{} anywhere.
Checking: equal after removing spaces, else `math-verify` decides LaTeX equivalence
(\\frac vs \\dfrac vs 0.5, \\sqrt{12} vs 2\\sqrt{3}, intervals, sets, units, degrees), with
a time limit per parse and per comparison. math-verify's limit is SIGALRM, which only the
main thread may set; elsewhere (a thread pool) the check runs without a limit rather than
fail. DataLoader workers are processes, whose main thread does have it.
"""

from __future__ import annotations

import logging
import re
import threading
from functools import lru_cache

from irpo.errors import UserError
from irpo.tasks import loading
from irpo.tasks.answers import STOP, answer_lines, instruction
from irpo.tasks.base import Example
from irpo.tasks.math_shots import SHOTS
from irpo.tasks.schemas import MATHTaskConfig
from irpo.tasks.subsets import subset

log = logging.getLogger(__name__)
HUB_ID = "EleutherAI/hendrycks_math"  # one config per subject
SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)
_BOX = re.compile(r"\\(?:boxed|fbox)\s*(\{)?")
_SPACES = re.compile(r"\s+|\\[,;:! ]|\\(?:left|right)(?![a-zA-Z])")  # "\," "\!" are spacing


def last_boxed(text: str) -> str | None:
    """The content of the last \\boxed{...} (braces balanced) or `\\boxed 5` in `text`."""
    for match in reversed(list(_BOX.finditer(text))):
        start = match.end()
        if match.group(1) is None:  # "\boxed 2": one token
            token = re.match(r"[^\s$.,]+", text[start:])
            if token:
                return token.group()
            continue
        depth = 1
        for i in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                return text[start:i].strip()
    return None


def unwrap(line: str) -> str:
    """An answer without what surrounds it, on one line: "$\\frac12$." -> "\\frac12". Repeated
    until nothing changes, so that unwrapping an unwrapped answer leaves it as it is."""
    while True:
        inner = last_boxed(line) if "\\boxed" in line or "\\fbox" in line else None
        # Also markdown's "**" and leading colons, which the "Final answer:" anchor skips too.
        new = _without_delimiters(
            " ".join((inner if inner else line).split()).rstrip(".").strip(" *").lstrip(":\uff1a ")
        )
        if new == line:
            return new
        line = new


def _without_delimiters(text: str) -> str:
    """Without enclosing math delimiters: "$5$" -> "5", but not "$5$ and $6$" (two formulas) nor "$5\\$" (an escaped dollar)."""
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        inside = text[len(left) : len(text) - len(right)]
        enclosed = text.startswith(left) and text.endswith(right) and len(text) >= len(left) + len(right)
        if enclosed and not inside.endswith("\\") and left not in inside.replace("\\$", ""):
            return inside.strip()
    return text


_SHOTS = tuple((problem, solution, unwrap(last_boxed(solution) or "")) for problem, solution in SHOTS)


class MATHTask:
    name = "math"
    stop = STOP

    def __init__(
        self,
        data_path: str | None = MATHTaskConfig.data_path,
        train_size: int | None = MATHTaskConfig.train_size,
        test_size: int | None = MATHTaskConfig.test_size,
        max_new_tokens: int = MATHTaskConfig.max_new_tokens,
        check_timeout_s: int = MATHTaskConfig.check_timeout_s,
        seed: int = MATHTaskConfig.seed,
    ) -> None:
        self.data_path, self.max_new_tokens, self.check_timeout_s = data_path, max_new_tokens, check_timeout_s
        self.seed = seed
        self.sizes = {"train": train_size, "test": test_size}

    def load(self, split: str) -> list[Example]:
        if split not in self.sizes:
            raise ValueError(f"math has splits {sorted(self.sizes)}, not {split!r}")
        found = loading.rows(self.data_path, split, HUB_ID, SUBJECTS)
        shots = {problem for problem, _, _ in _SHOTS}
        examples, unanswered = [], []
        for i, row in enumerate(found):
            problem, solution = row.get("problem"), row.get("solution")
            answer = unwrap(last_boxed(solution) or "")  # "30^\\circ." -> "30^\\circ", on one line
            if not answer:
                unanswered.append(row.where)  # MATH has two: train/number_theory/7115 and 7117
                continue
            if split == "train" and problem in shots:
                continue  # the prompt's exemplars are not also training prompts
            uid = row.data.get("unique_id") or f"{split}/{row.data.get('type', 'math')}/{i}"
            subject = row.data.get("type") or row.data.get("subject")  # MATH's field; MATH-500's
            examples.append(
                Example(
                    id=str(uid), question=problem, answer=answer, solution=solution, subject=subject and str(subject)
                )
            )
        if unanswered:
            if not examples:
                raise UserError(f"{unanswered[0]} (and every other row): the solution has no \\boxed{{...}} answer")
            log.warning(
                "math %s: skipped %d rows whose solution has no \\boxed{...} answer (%s, ...)",
                split,
                len(unanswered),
                unanswered[0],
            )
        return subset(examples, self.sizes[split], self.seed)

    def prompt(self, example: Example) -> str:
        # Sec. 3.3: 4 fixed train examples as Question / Solution / Final answer, then the problem.
        shots = "".join(f"Question: {p}\nSolution: {s}\nFinal answer: ${a}$\n\n" for p, s, a in _SHOTS)
        return f"{instruction()}\n{shots}Question: {example.question}\nSolution:"

    def gold_completion(self, example: Example) -> str:
        return f" {example.solution}\nFinal answer: ${example.answer}$"

    def extract_answer(self, completion: str) -> str | None:
        for line in answer_lines(completion):
            answer = unwrap(line)
            if answer:
                return answer
        return unwrap(last_boxed(completion) or "") or None

    def is_correct(self, answer: str | None, gold: str) -> bool:
        if answer is None:
            return False
        if _canonical(answer) == _canonical(gold):
            return True
        from math_verify import parse, verify

        limit = self.check_timeout_s if threading.current_thread() is threading.main_thread() else None
        target = parse(_as_boxed(answer), parsing_timeout=limit)
        return bool(target) and verify(_parsed_gold(gold, limit), target, timeout_seconds=limit)


def _canonical(answer: str) -> str:
    """Without spacing and percent signs (neither changes the value), for a quick string match."""
    return _SPACES.sub("", _without_percent(answer))


def _without_percent(answer: str) -> str:
    return answer.replace("\\%", "").replace("%", "")


def _as_boxed(answer: str) -> str:
    # math-verify reads \boxed{} first, so the whole answer is parsed, not a number inside it.
    return f"\\boxed{{{_without_percent(answer)}}}"


@lru_cache(maxsize=4096)
def _parsed_gold(gold: str, limit: int | None) -> list:
    # Every sample of a prompt is checked against the same gold: parse it once.
    from math_verify import parse

    return parse(_as_boxed(gold), parsing_timeout=limit)
