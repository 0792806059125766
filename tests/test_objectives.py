"""The preference objectives (irpo/loss.py, irpo/methods.py): exact values on hand-computed
log-probs, then the same log-probs through TRL 1.16's own implementations."""

import collections
import math
import types

import pytest
import torch

from irpo.errors import ConfigError
from irpo.loss import dpop_loss, ipo_loss, log_odds_ratio, orpo_loss, robust_loss, sigmoid_loss, simpo_loss
from irpo.methods import CDPO, DPO, DPOP, IPO, ORPO, RDPO, BatchLogps, SimPO, build


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def softplus(x: float) -> float:  # −log σ(−x)
    return math.log1p(math.exp(x))


def test_hand_values():
    # h = 2, β = 0.5: −log σ(1) = log(1 + e⁻¹)
    assert sigmoid_loss(t(2.0), 0.5).item() == pytest.approx(softplus(-1.0), abs=1e-15)
    # cDPO, ε = 0.1: 0.9·(−log σ(1)) + 0.1·(−log σ(−1)) = −log σ(1) + 0.1
    assert sigmoid_loss(t(2.0), 0.5, 0.1).item() == pytest.approx(softplus(-1.0) + 0.1, abs=1e-15)
    # rDPO, ε = 0.1: (0.9·softplus(−1) − 0.1·softplus(1)) / 0.8
    assert robust_loss(t(2.0), 0.5, 0.1).item() == pytest.approx(
        (0.9 * softplus(-1.0) - 0.1 * softplus(1.0)) / 0.8, abs=1e-15
    )
    # IPO: (3 − 1/(2·0.25))² = 1
    assert ipo_loss(t(3.0), 0.25).item() == pytest.approx(1.0, abs=1e-15)
    # DPOP: the winner fell 1 nat below the reference, λ = 2 cancels the margin 2: −log σ(0) = log 2
    assert dpop_loss(t(-1.0), t(-3.0), 0.5, 2.0).item() == pytest.approx(math.log(2), abs=1e-15)
    # ... and a winner above the reference pays nothing: −log σ(0.5·4)
    assert dpop_loss(t(1.0), t(-3.0), 0.5, 2.0).item() == pytest.approx(softplus(-2.0), abs=1e-15)
    # SimPO: β·(−1 − (−2)) − γ = 2·1 − 1
    assert simpo_loss(t(-1.0), t(-2.0), 2.0, 1.0).item() == pytest.approx(softplus(-1.0), abs=1e-15)
    # ORPO: p_w = 0.5 (odds 1), p_l = 0.2 (odds 1/4): log odds ratio log 4; −0.1·log σ(log 4) = −0.1·log 0.8
    assert log_odds_ratio(t(math.log(0.5)), t(math.log(0.2))).item() == pytest.approx(math.log(4), abs=1e-14)
    assert orpo_loss(t(math.log(0.5)), t(math.log(0.2)), 0.1).item() == pytest.approx(-0.1 * math.log(0.8), abs=1e-14)


def logps(chosen, rejected, chosen_tokens, rejected_tokens):
    return BatchLogps(t(*chosen), t(*rejected), t(*chosen_tokens), t(*rejected_tokens))


POLICY = logps([-4.0, -9.0], [-6.0, -7.0], [4, 3], [2, 7])
REFERENCE = logps([-5.0, -8.0], [-5.0, -8.0], [4, 3], [2, 7])


@pytest.mark.parametrize(
    "method, term",
    [
        (DPO("irpo", alpha=0.5, beta=0.1), sigmoid_loss(t(2.0, -2.0), 0.1)),
        (CDPO("cdpo", alpha=0.5, beta=0.1, label_smoothing=0.2), sigmoid_loss(t(2.0, -2.0), 0.1, 0.2)),
        (RDPO("rdpo", alpha=0.5, beta=0.1, epsilon=0.2), robust_loss(t(2.0, -2.0), 0.1, 0.2)),
        (IPO("ipo", alpha=0.5, tau=0.1), ipo_loss(t(1 / 4 + 1 / 2, -1 / 3 - 1 / 7), 0.1)),
        (DPOP("dpop", alpha=0.5, beta=0.1, lam=5.0), dpop_loss(t(1.0, -1.0), t(-1.0, 1.0), 0.1, 5.0)),
        (SimPO("simpo", alpha=0.5, beta=2.0, gamma=1.0), simpo_loss(t(-1.0, -3.0), t(-3.0, -1.0), 2.0, 1.0)),
        (ORPO("orpo", alpha=0.5, lam=0.1), orpo_loss(t(-1.0, -3.0), t(-3.0, -1.0), 0.1)),
    ],
)
def test_each_method_is_its_term_plus_alpha_times_the_winners_nll(method, term):
    loss, metrics = method.objective(POLICY, REFERENCE if method.reference else None)
    nll = (4 / 4 + 9 / 3) / 2  # mean over winners of −log p / |w|
    assert loss.item() == pytest.approx(term.mean().item() + 0.5 * nll, abs=1e-12)
    assert metrics[f"{method.term_name}_loss"].item() == pytest.approx(term.mean().item(), abs=1e-12)
    assert {"reward_accuracy", "reward_margin", "nll_loss", "chosen_logps", "rejected_logps"} <= set(metrics)


def test_reference_free_objectives_ignore_the_reference():
    for method in (SimPO("simpo"), ORPO("orpo")):
        assert not method.reference
        assert torch.equal(method.objective(POLICY, None)[0], method.objective(POLICY, REFERENCE)[0])


@pytest.mark.parametrize(
    "method, message",
    [
        (lambda: CDPO("c", label_smoothing=0.5), "label_smoothing must be in [0, 0.5)"),
        (lambda: RDPO("r", epsilon=-0.1), "epsilon must be in [0, 0.5)"),
        (lambda: IPO("i", tau=0.0), "tau must be > 0 for the IPO term"),
        (lambda: ORPO("o", lam=0.0), "lam must be > 0 for the ORPO term"),
        (lambda: SimPO("s", alpha=-1.0), "alpha must be >= 0"),
    ],
)
def test_a_bad_hyperparameter_is_refused_naming_it(method, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        method()


@pytest.mark.parametrize(
    "name, cls", [("cdpo", CDPO), ("rdpo", RDPO), ("ipo", IPO), ("dpop", DPOP), ("simpo", SimPO), ("orpo", ORPO)]
)
def test_each_objective_yaml_builds(name, cls):
    from irpo import compose

    cfg = compose([f"method={name}"])
    method = build(cfg)
    assert type(method) is cls and method.name == name
    # NLL only where the objective's paper has it (ORPO's own L_SFT); alpha=1 adds it to the others
    assert method.alpha == (1.0 if name == "orpo" else 0.0)
    assert build(compose([f"method={name}", "alpha=1"])).alpha == 1.0


# --- TRL 1.16's own implementations, on the same log-probs -----------------------------------


def trl_dpo_loss(
    loss_type: str,
    beta: float,
    label_smoothing: float,
    per_token: torch.Tensor,
    mask: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
) -> torch.Tensor:
    """DPOTrainer._compute_loss (where TRL 1.16 computes its DPO losses inline) with a stand-in
    model that returns the given per-token log-probs, and the reference's precomputed."""
    from trl import DPOTrainer

    accelerator = types.SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x, gather=lambda x: x)
    trainer = types.SimpleNamespace(
        model=types.SimpleNamespace(training=True),
        accelerator=accelerator,
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
        _metrics={"train": collections.defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    n, length = per_token.shape

    def model(**kwargs):
        zeros = torch.zeros(n, length)
        return types.SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros, is_top1=zeros.bool())

    inputs = {
        "input_ids": torch.zeros_like(mask),
        "attention_mask": torch.ones_like(mask),
        "completion_mask": mask,
        "ref_chosen_logps": ref_chosen,
        "ref_rejected_logps": ref_rejected,
    }
    return DPOTrainer._compute_loss(trainer, model, inputs, False)


@pytest.fixture
def batch():
    """Per-token log-probs of 4 pairs (winners, then losers) of varied lengths, and what irpo
    reads of them: summed log-probs and token counts."""
    g = torch.Generator().manual_seed(0)
    n, length = 8, 6
    lengths = torch.tensor([6, 3, 5, 1, 2, 6, 4, 5])
    mask = torch.zeros(n, length + 1, dtype=torch.long)  # TRL's completion_mask, shifted by one inside
    for i, k in enumerate(lengths):
        mask[i, 1 : 1 + k] = 1
    per_token = -torch.rand(n, length, generator=g) * 2 * mask[:, 1:]
    ref = -torch.rand(n, generator=g) * 6
    sums = per_token.sum(1)
    policy = BatchLogps(*sums.chunk(2), *lengths.chunk(2))
    reference = BatchLogps(*ref.chunk(2), *lengths.chunk(2))
    return per_token, mask, ref, policy, reference


@pytest.mark.parametrize(
    "loss_type, method",
    [
        ("sigmoid", DPO("dpo", alpha=0.0, beta=0.3)),
        ("robust", RDPO("rdpo", alpha=0.0, beta=0.3, epsilon=0.15)),
        ("ipo", IPO("ipo", alpha=0.0, tau=0.3)),  # both per-token means of the log-ratios
    ],
)
def test_dpo_family_equals_trl(batch, loss_type, method):
    per_token, mask, ref, policy, reference = batch
    smoothing = getattr(method, "label_smoothing", getattr(method, "epsilon", 0.0))
    theirs = trl_dpo_loss(
        loss_type, getattr(method, "beta", getattr(method, "tau", None)), smoothing, per_token, mask, *ref.chunk(2)
    )
    ours = method.objective(policy, reference)[0]
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)


def test_cdpo_equals_trl_conservative_sigmoid(batch):
    """TRL 1.16's DPOTrainer no longer smooths its `sigmoid` labels; its CPO `sigmoid` does,
    −(1−ε)·log σ(β·h) − ε·log σ(−β·h) with h the difference of what it is given: given the
    log-ratios, that is cDPO."""
    from trl.experimental.cpo import CPOTrainer

    _, _, _, policy, reference = batch
    trainer = types.SimpleNamespace(
        alpha=0.0,
        loss_type="sigmoid",
        beta=0.3,
        label_smoothing=0.15,
        accelerator=types.SimpleNamespace(device=torch.device("cpu")),
    )
    theirs = CPOTrainer.cpo_loss(trainer, policy.chosen - reference.chosen, policy.rejected - reference.rejected)[
        0
    ].mean()
    ours = CDPO("cdpo", alpha=0.0, beta=0.3, label_smoothing=0.15).objective(policy, reference)[0]
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)


def test_simpo_equals_trl_cpo(batch):
    """TRL's CPO with loss_type="simpo" on per-token mean log-probs (its `average_log_prob`),
    `simpo_gamma` = γ; irpo's SimPO without the NLL term (TRL's `cpo_alpha` = 0)."""
    from trl.experimental.cpo import CPOTrainer

    _, _, _, policy, _ = batch
    trainer = types.SimpleNamespace(
        alpha=0.0,
        loss_type="simpo",
        simpo_gamma=0.8,
        beta=2.5,
        label_smoothing=0.0,
        accelerator=types.SimpleNamespace(device=torch.device("cpu")),
    )
    theirs = CPOTrainer.cpo_loss(
        trainer, policy.chosen / policy.chosen_tokens, policy.rejected / policy.rejected_tokens
    )[0].mean()
    ours = SimPO("simpo", alpha=0.0, beta=2.5, gamma=0.8).objective(policy, None)[0]
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)


def test_orpo_odds_ratio_equals_trl(batch):
    """TRL's ORPOTrainer.odds_ratio_loss returns λ·log σ(log odds ratio), which its loss
    subtracts from the NLL; TRL's NLL is a token mean over the batch, irpo's a per-sequence
    mean (ORPO's Eq. 2), so the terms are compared without it."""
    from trl.experimental.orpo import ORPOTrainer

    _, _, _, policy, _ = batch
    chosen, rejected = policy.chosen / policy.chosen_tokens, policy.rejected / policy.rejected_tokens
    trainer = types.SimpleNamespace(beta=0.25, accelerator=types.SimpleNamespace(device=torch.device("cpu")))
    theirs = -ORPOTrainer.odds_ratio_loss(trainer, chosen, rejected)[0]
    ours, _, _ = ORPO("orpo", alpha=0.0, lam=0.25).term(policy, None)
    assert torch.allclose(ours.float(), theirs, atol=1e-6, rtol=0)


def test_kto_hand_values():
    """KTO Eq. 7: desirable r = 1, z₀ = 0.5, β = 1: λ_D·(1 − σ(0.5)); undesirable r = −1:
    λ_U·(1 − σ(0.5 + 1))."""
    from irpo.loss import kto_loss

    losses = kto_loss(t(1.0, -1.0), t(0.5), torch.tensor([True, False]), 1.0, t(1.2), t(1.0))
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert losses.tolist() == pytest.approx([1.2 * (1 - sig(0.5)), 1 - sig(1.5)], abs=1e-15)


@pytest.mark.parametrize(
    "desirable, undesirable, weight", [(10, 10, 1.0), (12, 10, 1.0), (20, 10, (4 / 3) / 2), (5, 10, 2.0), (0, 3, 1.0)]
)
def test_kto_weights_bring_the_desirable_share_into_1_to_4_thirds(desirable, undesirable, weight):
    from irpo.methods import KTO

    assert KTO.weights(desirable, undesirable) == (pytest.approx(weight), 1.0)
    if desirable and undesirable:
        assert 1 - 1e-12 <= weight * desirable / undesirable <= 4 / 3 + 1e-12


def test_kto_items_are_every_sample_with_a_mismatched_completion():
    from irpo.methods import KTO

    rows = [
        {"prompt_id": p, "sample": j, "prompt": f"Q{p}", "completion": f"{p}{j}", "reward": float(p == "a" and j == 0)}
        for p in "abc"
        for j in range(2)
    ]

    class Data:
        def samples(self):
            return list(reversed(rows))

    prompts, chosen, mismatched, labels = KTO("kto").items(Data())
    assert chosen == ["a0", "a1", "b0", "b1", "c0", "c1"]  # prompts b and c (no winner, so no pair) included
    assert mismatched == ["b0", "b1", "c0", "c1", "a0", "a1"]  # another prompt's sample, fixed
    weight = KTO.weights(1, 5)[0]
    assert labels == [weight, -1.0, -1.0, -1.0, -1.0, -1.0]


def test_kto_equals_trl(batch):
    """KTOTrainer._compute_loss with a stand-in model: the same per-token log-probs for the
    completions and for the mismatched (KL) completions, the reference's precomputed; one
    micro-batch is TRL's batch (its z₀ is the batch's mean KL log-ratio)."""
    from trl import KTOTrainer

    from irpo.methods import KTO

    per_token, mask, ref, policy, reference = batch
    n, length = per_token.shape  # 8 unpaired samples
    kl_per_token = per_token.flip(0)  # the KL completions' log-probs: another row's
    labels = torch.tensor([1, 0, 1, 1, 0, 0, 0, 1], dtype=torch.bool)
    ref_kl = ref.flip(0) - 0.3
    accelerator = types.SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x, gather=lambda x: x)
    trainer = types.SimpleNamespace(
        model=types.SimpleNamespace(training=True),
        accelerator=accelerator,
        aux_loss_enabled=False,
        calculate_KL=True,
        precompute_ref_logps=True,
        loss_type="kto",
        beta=0.4,
        desirable_weight=1.25,
        undesirable_weight=1.0,
        _metrics={"train": collections.defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )
    trainer._compute_kl_logps = lambda model, b: kl_per_token.sum(-1)

    def model(**kwargs):
        zeros = torch.zeros(n, length)
        return types.SimpleNamespace(log_probs=per_token, entropy=zeros, mean_logits=zeros)

    inputs = {
        "input_ids": torch.zeros_like(mask),
        "attention_mask": torch.ones_like(mask),
        "completion_mask": mask,
        "label": labels,
        "ref_logps": ref,
        "ref_KL_logps": ref_kl,
    }
    theirs = KTOTrainer._compute_loss(trainer, model, inputs, False)
    lengths = mask[:, 1:].sum(1)
    signed = torch.where(labels, 1.25, -1.0)
    ours = KTO("kto", beta=0.4).objective(
        BatchLogps(per_token.sum(-1), kl_per_token.sum(-1), lengths, lengths, signed),
        BatchLogps(ref, ref_kl, lengths, lengths),
    )[0]
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["kto", "orpo"])
def test_kto_and_a_reference_free_objective_run_an_iteration(tmp_path, cli, method):
    """KTO trains on every sample, prompts that gave no pair included; a reference-free
    objective runs no reference stage."""
    import json

    from safetensors.torch import load_file

    run = tmp_path / "run"
    proc = cli(
        f"method={method}",
        f"hydra.run.dir={run}",
        "iterations=1",
        "task.train_size=16",
        "task.test_size=8",
        "num_samples=4",
        "eval.maj_k=0",
        "logger=none",
        "trainer.batch_size=8",
        "trainer.progress_bar=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    stages = [json.loads(line).get("stage") for line in (run / "events.jsonl").read_text().splitlines()]
    metrics = json.loads((run / "iter_0" / "metrics.json").read_text())
    if method == "kto":
        assert "iter_0/reference" in stages and "train_kl" in metrics
        scored = load_file(run / "iter_0" / "reference_logps.safetensors")["chosen"]
        assert (
            len(scored) == 16 * 4 > metrics["pairs"] and metrics["prompts_with_pairs"] < 16
        )  # every sample, paired or not
        # the log-prob pass measures the pairs, from their own start, not the KTO items' reference
        moved = load_file(run / "iter_0" / "pair_logps.safetensors")
        assert len(moved["chosen_start"]) == metrics["pairs"] and not moved["chosen_start"].isnan().any()
    else:
        assert "iter_0/reference" not in stages and "train_orpo_loss" in metrics


def test_kto_labels_desirable_from_a_threshold_on_graded_rewards():
    from irpo.methods import KTO

    rows = [
        {"prompt_id": "a", "sample": j, "prompt": "Q", "completion": str(j), "reward": r}
        for j, r in enumerate([1.0, 0.6, 0.2])
    ]

    class Data:
        def samples(self):
            return rows

    assert [label > 0 for label in KTO("kto").items(Data()).labels] == [True, False, False]
    assert [label > 0 for label in KTO("kto", desirable_at=0.5).items(Data()).labels] == [True, True, False]
