import math

import pytest
import torch

from irpo.loss import dpo_nll_loss, nll_loss, sequence_logps


def t(*xs):
    return torch.tensor(xs, dtype=torch.float64)


def test_hand_computed_value():
    # chosen log-ratio -1 - (-1.5) = 0.5, rejected -2 - (-1.5) = -0.5, beta 0.1:
    # dpo = -log sigmoid(0.1) = log(1 + e^-0.1); nll = 1/4 (winner logp -1 over 4 tokens)
    parts = dpo_nll_loss(t(-1.0), t(-2.0), t(-1.5), t(-1.5), t(4), beta=0.1, alpha=1.0)
    dpo = math.log1p(math.exp(-0.1))
    assert parts.dpo.item() == pytest.approx(dpo, abs=1e-12)
    assert parts.nll.item() == pytest.approx(0.25, abs=1e-12)
    assert parts.loss.item() == pytest.approx(dpo + 0.25, abs=1e-12)
    assert parts.chosen_rewards.item() == pytest.approx(0.05)
    assert parts.rejected_rewards.item() == pytest.approx(-0.05)


def test_batch_is_mean_over_pairs_with_per_sequence_normalisation():
    # Two winners of different lengths: NLL is mean(-logp/|w|), not sum(-logp)/sum(|w|).
    parts = dpo_nll_loss(t(-2.0, -9.0), t(-3.0, -3.0), t(-2.0, -9.0), t(-3.0, -3.0), t(2, 3), beta=0.5, alpha=2.0)
    assert parts.nll.item() == pytest.approx((1.0 + 3.0) / 2)
    assert parts.nll.item() != pytest.approx(11.0 / 5)
    assert parts.loss.item() == pytest.approx(math.log(2) + 2.0 * 2.0)


def test_policy_equal_to_reference_gives_log2():
    x = torch.randn(7, dtype=torch.float64)
    y = torch.randn(7, dtype=torch.float64)
    parts = dpo_nll_loss(x, y, x.clone(), y.clone(), torch.full((7,), 5), beta=0.1, alpha=0.0)
    assert parts.dpo.item() == pytest.approx(math.log(2), abs=1e-12)
    assert parts.loss.item() == pytest.approx(math.log(2), abs=1e-12)


def test_alpha_zero_is_plain_dpo():
    g = torch.Generator().manual_seed(0)
    args = [torch.randn(5, generator=g, dtype=torch.float64) - 3 for _ in range(4)]
    lengths = torch.tensor([3, 4, 5, 6, 7])
    a0 = dpo_nll_loss(*args, lengths, beta=0.3, alpha=0.0)
    a1 = dpo_nll_loss(*args, lengths, beta=0.3, alpha=1.0)
    expected = (-torch.nn.functional.logsigmoid(0.3 * ((args[0] - args[2]) - (args[1] - args[3])))).mean()
    assert a0.loss.item() == pytest.approx(expected.item(), abs=1e-12)
    assert a1.loss.item() == pytest.approx(expected.item() + nll_loss(args[0], lengths).item(), abs=1e-12)


def test_nll_gradient_reaches_only_the_winner():
    pc, pr = t(-4.0).requires_grad_(), t(-6.0).requires_grad_()
    dpo_nll_loss(pc, pr, t(-4.0), t(-6.0), t(8), beta=0.1, alpha=1.0).nll.backward()
    assert pc.grad.item() == pytest.approx(-1 / 8)
    assert pr.grad is None


def test_sequence_logps_scores_only_masked_completion_tokens():
    # Uniform logits over 4 tokens: every scored token has log-prob -log 4.
    logits = torch.zeros(2, 5, 4)
    ids = torch.tensor([[1, 2, 3, 0, 0], [1, 1, 2, 3, 3]])
    mask = torch.tensor([[0, 1, 1, 0, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    logps, counts = sequence_logps(logits, ids, mask)
    assert counts.tolist() == [2, 3]
    assert logps.tolist() == pytest.approx([-2 * math.log(4), -3 * math.log(4)])


def test_sequence_logps_matches_log_softmax_gather():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 6, 11, generator=g)
    ids = torch.randint(0, 11, (3, 6), generator=g)
    mask = torch.rand(3, 6, generator=g) > 0.3
    logps, counts = sequence_logps(logits, ids, mask)
    ref = logits[:, :-1].log_softmax(-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    assert torch.allclose(logps, (ref * mask[:, 1:]).sum(-1), atol=1e-5)
    assert counts.tolist() == mask[:, 1:].sum(-1).tolist()
