import math

import pytest

from irpo.pairs import cap_pairs, cycle_pairs, pair_stats, prompt_pairs


@pytest.mark.parametrize("nw,nl", [(1, 1), (2, 2), (2, 4), (3, 5), (4, 6), (6, 4), (1, 7), (5, 1)])
def test_cycle_pairs_are_distinct_balanced_and_exhaustive(nw, nl):
    allpairs = cycle_pairs(nw, nl, nw * nl + 10)
    assert len(allpairs) == nw * nl == len(set(allpairs))
    for k in range(1, nw * nl + 1):
        head = allpairs[:k]
        uses_w = [sum(w == i for w, _ in head) for i in range(nw)]
        uses_l = [sum(l == j for _, l in head) for j in range(nl)]
        assert max(uses_w) - min(uses_w) <= 1 and max(uses_l) - min(uses_l) <= 1
        assert cycle_pairs(nw, nl, k) == head


def test_cycle_pairs_start_as_the_paper_cycles():
    # Walking both sets at once, cycling the shorter: (0,0), (1,1), (0,2), (1,3), ...
    assert cycle_pairs(2, 5, 5) == [(0, 0), (1, 1), (0, 2), (1, 3), (0, 4)]
    assert cycle_pairs(3, 0, 4) == [] and cycle_pairs(0, 3, 4) == [] and cycle_pairs(2, 2, 0) == []


def test_prompt_pairs_skip_rules_and_k_cap():
    comps = ["a", "b", "c", "d"]
    assert prompt_pairs("p", "x", comps, [1, 1, 1, 1], k=3, seed=0) == []
    assert prompt_pairs("p", "x", comps, [0, 0, 0, 0], k=3, seed=0) == []
    pairs = prompt_pairs("p", "x", comps, [1, 0, 1, 0], k=3, seed=0)
    assert len(pairs) == 3 and len({(p.chosen, p.rejected) for p in pairs}) == 3
    assert all(p.chosen in "ac" and p.rejected in "bd" for p in pairs)
    assert len(prompt_pairs("p", "x", comps, [1, 0, 1, 0], k=10, seed=0)) == 4


def test_duplicate_completions_count_once():
    pairs = prompt_pairs("p", "x", ["a", "a", "a", "b"], [1, 1, 1, 0], k=10, seed=0)
    assert [(p.chosen, p.rejected) for p in pairs] == [("a", "b")]


def test_gold_joins_winners_only_when_no_sample_is_correct():
    pairs = prompt_pairs("p", "x", ["b", "c"], [0, 0], k=5, seed=0, gold="G")
    assert {(p.chosen, p.rejected) for p in pairs} == {("G", "b"), ("G", "c")} and all(p.chosen_is_gold for p in pairs)
    pairs = prompt_pairs("p", "x", ["a", "c"], [1, 0], k=5, seed=0, gold="G")
    assert [(p.chosen, p.chosen_is_gold) for p in pairs] == [("a", False)]


def test_pairs_are_seeded_per_prompt():
    comps, rewards = [str(i) for i in range(8)], [1, 0] * 4
    a = prompt_pairs("p1", "x", comps, rewards, k=3, seed=7)
    assert a == prompt_pairs("p1", "x", comps, rewards, k=3, seed=7)
    others = {
        tuple((p.chosen, p.rejected) for p in prompt_pairs("p1", "x", comps, rewards, k=3, seed=s)) for s in range(20)
    }
    assert len(others) > 1


def test_cap_and_stats():
    pairs = [p for i in range(10) for p in prompt_pairs(str(i), "x", ["a", "b"], [1, 0], k=1, seed=0)]
    capped = cap_pairs(pairs, 4, seed=0)
    assert len(capped) == 4 and capped == [p for p in pairs if p in capped]
    assert cap_pairs(pairs, None, 0) == pairs and cap_pairs(pairs, 50, 0) == pairs
    stats = pair_stats([[1, 0], [1, 1], [0, 0]], pairs[:1])
    assert stats["prompts"] == 3 and stats["samples"] == 6
    assert stats["train_pass_at_n"] == pytest.approx(2 / 3) and stats["train_mean_reward"] == pytest.approx(0.5)
    assert (stats["prompts_no_winner"], stats["prompts_no_loser"], stats["pairs"]) == (1, 1, 1)
    assert math.isclose(stats["prompts_with_pairs"], 1)


def test_graded_rewards_pair_a_correct_winner_with_losers_trailing_by_the_margin():
    comps, rewards = ["right", "close", "half", "wrong"], [1.0, 0.8, 0.5, 0.0]
    pairs = prompt_pairs("p", "x", comps, rewards, k=10, seed=0, margin=0.5)
    assert {(p.chosen, p.rejected) for p in pairs} == {("right", "half"), ("right", "wrong")}
    # no correct sample, no winner, however high the partial credit
    assert prompt_pairs("p", "x", ["close", "wrong"], [0.99, 0.0], k=5, seed=0) == []
    # margin 0: every sample below 1 is a loser, as with binary rewards
    assert len(prompt_pairs("p", "x", comps, rewards, k=10, seed=0)) == 3
    stats = pair_stats([rewards, [0.9, 0.4]], pairs)
    assert (
        stats["train_pass_at_n"] == 0.5
        and stats["prompts_no_winner"] == 1
        and stats["train_mean_reward"] == pytest.approx(3.6 / 6)
    )
