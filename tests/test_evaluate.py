from irpo.evaluate import evaluate, majority_vote, summarize
from irpo.tasks.arith import ArithTask


def test_majority_vote_ignores_unanswered_and_breaks_ties_by_first_seen():
    assert majority_vote(["3", None, "4", "4", None, None]) == "4"
    assert majority_vote(["5", "3", "3", "5"]) == "5"
    assert majority_vote(["3", "5", "5", "3"]) == "3"
    assert majority_vote([None, None]) is None and majority_vote([]) is None


class ScriptedGenerator:
    """Answers from a script: greedy gets `greedy`, sampling gets `samples` per prompt."""

    def __init__(self, greedy, samples):
        self._greedy, self._samples, self.calls = greedy, samples, []

    def greedy(self, prompts):
        return self._greedy[: len(prompts)]

    def sample(self, prompts, n, temperature, seed):
        self.calls.append((n, temperature, seed))
        return [s[:n] for s in self._samples[: len(prompts)]]


def test_evaluate_greedy_and_maj_at_k():
    task = ArithTask(test_size=3)
    ex = task.load("test")
    fa = lambda v: f" x. Final answer: {v}\n"  # noqa: E731
    gen = ScriptedGenerator(
        greedy=[fa(ex[0].answer), fa(999), "no answer"],
        samples=[[fa(1), fa(1), fa(ex[0].answer)], [fa(ex[1].answer), fa(ex[1].answer), fa(7)], ["?", "?", "?"]],
    )
    records = evaluate(gen, task, ex, ["p"] * 3, maj_k=3, maj_temperature=0.8, seed=5)
    metrics = summarize(records, maj_k=3)
    assert metrics["test_accuracy"] == 1 / 3 and metrics["maj@3"] == 1 / 3 and metrics["test_size"] == 3
    assert [r["reward"] for r in records] == [1.0, 0.0, 0.0]
    assert [r["maj_answer"] for r in records] == ["1", ex[1].answer, None]
    assert gen.calls == [(3, 0.8, 5)]
    records = evaluate(gen, task, ex, ["p"] * 3, maj_k=0, maj_temperature=0.8, seed=5)
    assert "maj_answer" not in records[0] and "maj@0" not in summarize(records, maj_k=0) and len(gen.calls) == 1
