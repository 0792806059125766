"""The paper's claims (Pang et al., 2024), each decided on the records as data: a Claim names
what it says, where the paper shows it, and the intervals over seeds that decide it. The
writers print Claims; nothing here is prose a reader has to parse back.

Also the paper's own numbers, quoted from its Table 1, and the comparisons the reports share:
IRPO minus each other arm, and IRPO minus STaR per M_0 (the capacity axis).
"""

from __future__ import annotations

from dataclasses import dataclass

from irpo.analysis.intervals import Interval, paired
from irpo.analysis.records import arms, chosen, difference, m0s, moved, starting_from

# Table 1 of the paper (GSM8K, Llama-2-70b-chat), greedy accuracy in %, by method and by the
# iteration that produced the row (0 = the untrained model); maj@32 where the table gives it.
PAPER_GSM8K = {
    "zero_shot": {0: 55.6},
    "sft_gold": {1: 63.5},
    "sft_chosen": {1: 65.2},
    "dpo": {1: 61.8},
    "irpo": {1: 73.1, 2: 78.0, 3: 81.1, 4: 81.6},
}
PAPER_GSM8K_MAJ = {"zero_shot": {0: 70.7}, "irpo": {3: 88.2, 4: 88.7}}


@dataclass(frozen=True)
class Measured:
    """One quantity a claim is decided by: what was measured, its interval over seeds, and its
    unit: "points" (accuracy, printed x 100) or "nats" (a log-prob)."""

    label: str
    interval: Interval | None
    unit: str = "points"


@dataclass(frozen=True)
class Claim:
    """One of the paper's claims and its verdict on this sweep's records."""

    name: str  # what the claim says, in the words the summary uses
    measured: tuple[Measured, ...] = ()
    source: str | None = None  # where the paper shows it, e.g. "Table 1: 73.1 vs 61.8"
    at_chosen: bool = False  # each arm taken at its validation-chosen iteration
    missing: str | None = None  # why the sweep cannot decide it

    @property
    def reproduced(self) -> bool | None:
        """True when every interval lies above 0, False when one holds 0 or lies below, None
        when the sweep lacks an arm or has one seed."""
        intervals = [m.interval for m in self.measured]
        if self.missing or any(i is None or i.verdict is None for i in intervals):
            return None
        return all(i.verdict for i in intervals)


# The paper's words for IRPO against each arm of its Table 1, and where the table shows it.
_AGAINST = {
    "dpo": ("The NLL term matters: IRPO above DPO", "Table 1: 73.1 vs 61.8"),
    "sft_chosen": ("IRPO above SFT on its own winners, STaR", "Table 1: 73.1 vs 65.2"),
    "sft_gold": ("IRPO above SFT on the gold CoT", "Table 1: 73.1 vs 63.5"),
}


def comparisons(recs: list[dict]) -> list[tuple[str, Interval | None]]:
    """IRPO minus each other trained arm, each at its validation-chosen iteration, paired by seed."""
    irpo = chosen(recs, "irpo")
    return [(m, difference(irpo, chosen(recs, m))) for m in arms(recs) if m not in ("irpo", "zero_shot")]


def verdicts(recs: list[dict]) -> list[Claim]:
    """The paper's claims, each decided by a 95% interval over seeds (a difference paired by
    seed, or a per-seed change): reproduced when the interval lies above 0, not when it holds
    0 or lies below, None where the sweep lacks the arms or has one seed."""
    out = []

    def at(method: str, t: int) -> dict[int, dict]:
        return {r["seed"]: r for r in recs if r["method"] == method and r["iteration"] == t}

    if at("irpo", 2):
        up1, up2 = difference(at("irpo", 1), at("irpo", 0)), difference(at("irpo", 2), at("irpo", 1))
        out.append(
            Claim(
                "IRPO improves over iterations: M_1 above M_0 and M_2 above M_1",
                (Measured("M_1 − M_0", up1), Measured("M_2 − M_1", up2)),
                source="Table 1: 55.6, 73.1, 78.0",
            )
        )
    else:
        out.append(Claim("IRPO improves over iterations", missing="the sweep has no irpo arm with 2 iterations"))
    for other, diff in comparisons(recs):
        name, source = _AGAINST.get(other, (f"IRPO above {other}", None))
        out.append(Claim(name, (Measured(f"irpo − {other}", diff),), source=source, at_chosen=True))

    def change(method: str, side: str, sign: float = 1.0) -> Interval | None:
        return paired(list(moved(recs, method, side, sign).values()))

    dc, ic = change("dpo", "chosen", -1), change("irpo", "chosen")
    if dc and ic:
        out.append(
            Claim(
                "Fig. 3: over the training that made M_1, the chosen log-prob falls under DPO and rises under IRPO",
                (Measured("fall under dpo", dc, "nats"), Measured("rise under irpo", ic, "nats")),
            )
        )
    sr = change("sft_chosen", "rejected")
    if sr:
        out.append(
            Claim(
                "Fig. 2: SFT on the chosen sequences raises the rejected log-probs too",
                (Measured("sft_chosen: rejected rise", sr, "nats"),),
            )
        )
    own, gold = moved(recs, "sft_chosen", "chosen"), moved(recs, "sft_gold", "chosen")
    more = paired([own[s] - gold[s] for s in sorted(own.keys() & gold.keys())])
    if more:
        out.append(
            Claim(
                "Fig. 2: SFT on the gold CoT raises the chosen log-probs less than SFT on the chosen sequences does",
                (Measured("sft_chosen's rise − sft_gold's", more, "nats"),),
            )
        )
    ir = change("irpo", "rejected", -1)
    if ic and ir:
        out.append(
            Claim(
                "Fig. 2: DPO + NLL raises the chosen log-probs and lowers the rejected ones",
                (Measured("irpo: chosen rise", ic, "nats"), Measured("rejected fall", ir, "nats")),
            )
        )
    return out


def capacity(recs: list[dict]) -> dict[str, Interval | None]:
    """Per M_0 (by width, then name): IRPO minus SFT on its own winners, each at its
    validation-chosen iteration, paired by seed."""
    out = {}
    for m0 in m0s(recs):
        own = starting_from(recs, m0)
        out[m0] = difference(chosen(own, "irpo"), chosen(own, "sft_chosen"))
    return out
