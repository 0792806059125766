"""GRPO, Dr. GRPO and RLOO (irpo/methods.py, irpo/loss.py): advantages on hand numbers, the loss
and its gradient against TRL 1.16's installed trainers, a step's gradient however it is cut,
the first update's ratio of 1 against the reference pass's table, and one loop iteration each."""

import csv
import json
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaForCausalLM

from irpo.loss import aggregate, clipped_ratio_loss, group_advantages, leave_one_out_advantages
from irpo.methods import GRPO, RLOO, BatchLogps, DrGRPO
from irpo.models.tiny_tokenizer import build_tokenizer
from irpo.training.batching import MicroBatching, collate, encode_examples, scored_tokens
from irpo.training.module import PolicyTraining, PreferenceModule, step_shares
from irpo.training.scoring import padded, score_pairs

REWARDS = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0], [0.9, 0.0, 0.3, 1.0]], dtype=torch.float64)


def test_advantages_on_hand_numbers():
    grpo = group_advantages(REWARDS)
    # [1, 0, 0, 1]: mean 0.5, sample std sqrt(1/3)
    std = (1 / 3) ** 0.5
    assert torch.allclose(grpo.advantages[0], torch.tensor([0.5, -0.5, -0.5, 0.5], dtype=torch.float64) / (std + 1e-4))
    assert grpo.advantages[1].eq(0).all() and grpo.equal.tolist() == [False, True, False]
    dr = group_advantages(REWARDS, scale=False)
    assert torch.allclose(dr.advantages[2], torch.tensor([0.35, -0.55, -0.25, 0.45], dtype=torch.float64))
    rloo = leave_one_out_advantages(REWARDS)
    # sample 0 of prompt 0: 1 − (0 + 0 + 1)/3
    assert torch.allclose(rloo.advantages[0], torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3], dtype=torch.float64))
    assert rloo.advantages[1].eq(0).all()


def test_grpo_advantage_uses_trls_group_std():
    from trl.trainer.utils import nanstd

    std = nanstd(REWARDS, dim=1).repeat_interleave(4).view(3, 4)
    expected = (REWARDS - REWARDS.mean(1, keepdim=True)) / (std + 1e-4)
    assert torch.allclose(group_advantages(REWARDS).advantages, expected, atol=1e-6, rtol=0)


# --- TRL 1.16's own loss code on identical inputs, float64 ---------------------------------


class _Accelerator:
    num_processes = 1

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x


def _inputs(seed: int = 0, b: int = 6, t: int = 7):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([7, 3, 5, 1, 6, 4])[:b]
    mask = torch.arange(t)[None, :] < lengths[:, None]
    old = -torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    # ratios well outside [0.8, 1.28], so that both sides of the clip are hit
    logps = (old + torch.randn(b, t, generator=g, dtype=torch.float64) * 0.4).requires_grad_(True)
    ref = old + torch.randn(b, t, generator=g, dtype=torch.float64) * 0.1
    rewards = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.3, 1.0]], dtype=torch.float64)[: b // 3]
    return logps, old.where(mask, 0), ref.where(mask, 0), mask, rewards


def _trl_grpo(loss_type: str, eps: float, eps_high: float, beta: float, max_completion_length: int):
    from trl import GRPOTrainer

    trainer = GRPOTrainer.__new__(GRPOTrainer)
    trainer.__dict__.update(
        loss_type=loss_type,
        epsilon_low=eps,
        epsilon_high=eps_high,
        beta=beta,
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        importance_sampling_level="token",
        use_vllm=False,
        vllm_importance_sampling_correction=False,
        _entropy_bonus_enabled=False,
        aux_loss_enabled=False,
        current_gradient_accumulation_steps=1,
        max_completion_length=max_completion_length,
        accelerator=_Accelerator(),
        model=SimpleNamespace(training=True),
        args=SimpleNamespace(delta=None, use_bias_correction_kl=False, steps_per_generation=1),
        _metrics={"train": defaultdict(list)},
    )
    return trainer


@pytest.mark.parametrize("beta_kl", [0.0, 0.04])
@pytest.mark.parametrize("eps, eps_high", [(0.2, 0.2), (0.2, 0.28)])
@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo", "dapo"])
def test_grpo_loss_and_gradient_equal_trls(loss_type, eps, eps_high, beta_kl):
    logps, old, ref, mask, rewards = _inputs()
    advantages = group_advantages(rewards, scale=loss_type != "dr_grpo").advantages.reshape(-1)
    trainer = _trl_grpo(loss_type, eps, eps_high, beta_kl, max_completion_length=7)
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (logps, torch.zeros_like(logps), None)
    b, t = mask.shape
    inputs = {
        "prompt_ids": torch.zeros(b, 2, dtype=torch.long),
        "prompt_mask": torch.ones(b, 2, dtype=torch.long),
        "completion_ids": torch.zeros(b, t, dtype=torch.long),
        "completion_mask": mask.long(),
        "advantages": advantages,
        "old_per_token_logps": old,
        "ref_per_token_logps": ref,
        "num_items_in_batch": mask.sum(),
    }
    theirs = trainer._compute_loss(None, inputs)
    (their_grad,) = torch.autograd.grad(theirs, logps)

    aggregation = {"grpo": "sequence", "dr_grpo": "constant", "dapo": "token"}[loss_type]
    method = GRPO("grpo", epsilon=eps, epsilon_high=eps_high, beta_kl=beta_kl, aggregation=aggregation, constant=7)
    parts = clipped_ratio_loss(logps, old, advantages, mask, eps, eps_high, beta_kl, ref)
    ours = aggregate(parts.per_token, mask, method.aggregation, method.constant)
    (our_grad,) = torch.autograd.grad(ours, logps)
    assert abs(ours.item() - theirs.item()) < 1e-6
    assert (our_grad - their_grad).abs().max() < 1e-6
    # the clip fractions TRL logs are the ones irpo logs
    n = mask.sum()
    assert abs(parts.low_clipped.sum() / n - trainer._metrics["train"]["clip_ratio/low_mean"][0]) < 1e-12
    assert abs(parts.high_clipped.sum() / n - trainer._metrics["train"]["clip_ratio/high_mean"][0]) < 1e-12
    assert parts.low_clipped.any() or parts.high_clipped.any()
    if beta_kl:
        assert abs(parts.kl.sum() / n - trainer._metrics["train"]["kl"][0]) < 1e-12


@pytest.mark.parametrize("eps, eps_high", [(0.2, 0.2), (0.2, 0.28)])
def test_rloo_loss_and_gradient_equal_trls(eps, eps_high):
    from trl import RLOOTrainer

    token_logps, old, _, mask, rewards = _inputs(seed=1)
    token_logps = token_logps.detach() * 0.05  # summed log-ratios near the clip, not far beyond it
    old = old * 0.05
    token_logps.requires_grad_(True)
    advantages = leave_one_out_advantages(rewards).advantages.reshape(-1)
    trainer = RLOOTrainer.__new__(RLOOTrainer)
    trainer.__dict__.update(
        epsilon_low=eps,
        epsilon_high=eps_high,
        aux_loss_enabled=False,
        accelerator=_Accelerator(),
        model=SimpleNamespace(training=True),
        _metrics={"train": defaultdict(list)},
    )
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (token_logps, torch.zeros_like(token_logps), None)
    b, t = mask.shape
    inputs = {
        "prompt_ids": torch.zeros(b, 2, dtype=torch.long),
        "prompt_mask": torch.ones(b, 2, dtype=torch.long),
        "completion_ids": torch.zeros(b, t, dtype=torch.long),
        "completion_mask": mask.to(torch.float64),
        "advantages": advantages,
        "old_logps": (old * mask).sum(1),
    }
    theirs = trainer._compute_loss(None, inputs)
    (their_grad,) = torch.autograd.grad(theirs, token_logps)

    method = RLOO("rloo", epsilon=eps, epsilon_high=eps_high)
    summed = (token_logps * mask).sum(1)
    policy = BatchLogps(summed, None, mask.sum(1), None, advantages)
    reference = BatchLogps((old * mask).sum(1), None, mask.sum(1), None)
    ours, metrics = method.objective(policy, reference)
    (our_grad,) = torch.autograd.grad(ours, token_logps)
    assert abs(ours.item() - theirs.item()) < 1e-6
    assert (our_grad - their_grad).abs().max() < 1e-6
    assert abs(metrics["clip_low"] - trainer._metrics["train"]["clip_ratio/low_mean"][0]) < 1e-12
    assert abs(metrics["clip_high"] - trainer._metrics["train"]["clip_ratio/high_mean"][0]) < 1e-12


# --- a step's gradient however micro-batches and ranks cut it --------------------------------

METHODS = {
    "grpo": GRPO("grpo", epsilon=0.2, epsilon_high=0.28, beta_kl=0.05),
    "grpo_token": GRPO("grpo", aggregation="token", beta_kl=0.05),
    "dr_grpo": DrGRPO("dr_grpo", constant=9),
    "rloo": RLOO("rloo"),
}


def _objective(method, logps, old, mask, advantages, rows):
    """The method's loss on the step's rows `rows`, as the module hands it a micro-batch."""
    rows = torch.tensor(rows)
    width = int(mask[rows].sum(1).max())
    lp, od, m = logps[rows, :width], old[rows, :width], mask[rows, :width]
    policy = BatchLogps((lp * m).sum(1), None, m.sum(1), None, advantages[rows], lp, m)
    reference = BatchLogps((od * m).sum(1), None, m.sum(1), None, None, od, m)
    return method.objective(policy, reference)[0]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_a_steps_gradient_is_the_same_however_it_is_cut(name):
    method = METHODS[name]
    g = torch.Generator().manual_seed(2)
    b, t = 8, 9
    lengths = torch.tensor([9, 2, 5, 7, 1, 3, 8, 4])
    mask = torch.arange(t)[None, :] < lengths[:, None]
    old = (-torch.rand(b, t, generator=g) * 2).where(mask, 0)
    logps = (old + torch.randn(b, t, generator=g) * 0.1).where(mask, 0).double().requires_grad_(True)
    advantages = torch.randn(b, generator=g).double()
    whole = _objective(method, logps, old.double(), mask, advantages, range(b))
    (expected,) = torch.autograd.grad(whole, logps)

    def cut(ranks: list[list[list[int]]]) -> torch.Tensor:
        """ranks[r] is rank r's micro-batches (row lists); the ranks' gradients are averaged."""
        total = 0.0
        step_tokens = int(mask.sum())
        for micro_batches in ranks:
            if method.token_mean:
                shares = step_shares([int(mask[m].sum()) for m in micro_batches], step_tokens, len(ranks))
            else:
                shares = step_shares([len(m) for m in micro_batches], sum(map(len, micro_batches)))
            for rows, share in zip(micro_batches, shares):
                total = total + share * _objective(method, logps, old.double(), mask, advantages, rows) / len(ranks)
        return torch.autograd.grad(total, logps)[0]

    for ranks in (
        [[[0, 1, 2, 3, 4, 5, 6, 7]]],
        [[[0], [1, 2, 3], [4, 5, 6, 7]]],
        [[[0, 2, 4, 6]], [[1, 3, 5, 7]]],  # two ranks, as data.EpochSampler deals the items
        [[[0, 2], [4, 6]], [[1], [3, 5, 7]]],
    ):
        assert (cut(ranks) - expected).abs().max() < 1e-12, ranks


# --- the reference pass's table and the first update, on a small random Llama ----------------

PROMPTS = ["Q: 1+1\nA:", "Q: 1+1\nA:", "Q: 12+139\nA:", "Q: 12+139\nA:", "Q: 7\nA:", "Q: 7\nA:"]
COMPLETIONS = [" 2\n", " 3 3\n", " 151\n", " 1234567\n", " 7 7 7 7\n", " 8\n"]


@pytest.fixture(scope="module")
def scored(random_model_dir):
    """The six samples encoded, with M_t's table from the reference pass at temperature 0.7."""
    items, dropped = encode_examples(build_tokenizer(), PROMPTS, COMPLETIONS, None, 64)
    batching = MicroBatching(6, 4)
    (chosen, _), _, table = score_pairs(
        items,
        dropped,
        lambda: LlamaForCausalLM.from_pretrained(random_model_dir),
        "cpu",
        "32-true",
        batching,
        temperature=0.7,
        tokens=True,
    )
    for it, label in zip(items, [1.0, -1.0, 0.5, -0.5, 0.0, 0.0]):
        it["label"] = label
        it["ref_chosen"], it["ref_rejected"] = chosen[it["index"]].item(), float("nan")
        it["ref_tokens"] = table.values[table.offsets[it["index"]] : table.offsets[it["index"] + 1]]
    return items, chosen, table


def test_the_reference_table_sums_to_the_stored_logps(scored):
    items, chosen, table = scored
    assert len(table.values) == scored_tokens(items) and not table.values.isnan().any()
    sums = torch.stack([table.values[a:b].sum() for a, b in zip(table.offsets[:-1], table.offsets[1:])])
    assert torch.allclose(sums, chosen, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo"])
def test_first_update_ratio_is_one_and_nothing_is_clipped(random_model_dir, scored, name):
    items, _, _ = scored
    method = {"grpo": GRPO("grpo"), "dr_grpo": DrGRPO("dr_grpo"), "rloo": RLOO("rloo")}[name]
    module = PreferenceModule(method, str(random_model_dir), PolicyTraining(lr=1e-3), temperature=0.7)
    # the step's items in another order and other micro-batches than the reference pass's
    for group in ([items[5], items[0], items[3]], [items[1], items[4], items[2]]):
        loss, metrics = module.micro_batch_loss(collate(group))
        assert metrics["train/ratio_deviation"].dtype == torch.float32
        assert metrics["train/ratio_deviation"] < 1e-5, metrics
        assert metrics["train/clip_low"] == 0 and metrics["train/clip_high"] == 0
        assert torch.isfinite(loss)


def test_module_gradient_is_the_same_however_micro_batches_cut_a_step(random_model_dir, scored):
    items, _, _ = scored
    method = GRPO("grpo", aggregation="token", beta_kl=0.1)

    def grads(groups):
        torch.manual_seed(0)
        module = PreferenceModule(method, str(random_model_dir), PolicyTraining(lr=1e-3), temperature=0.7)
        for group, share in zip(groups, module.shares(groups)):
            (module.micro_batch_loss(collate(group))[0] * share).backward()
        return torch.cat([p.grad.flatten() for p in module.policy.parameters()])

    whole = grads([items])
    assert whole.abs().max() > 0
    assert (grads([items[:1], items[1:4], items[4:]]) - whole).abs().max() < 1e-6


# --- one loop iteration each ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "rloo"])
def test_each_method_runs_an_iteration(tmp_path, cli, name):
    run = tmp_path / "run"
    proc = cli(
        f"method={name}",
        f"hydra.run.dir={run}",
        "task.train_size=16",
        "task.test_size=16",
        "iterations=1",
        "num_samples=4",
        "trainer.max_steps=2",
        "trainer.batch_size=8",
        "trainer.micro_batch_size=3",
        "eval.maj_k=0",
        "logger=none",
        "trainer.progress_bar=false",
        "trainer.log_every_n_steps=1",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run / "iter_0" / "metrics.json").read_text())
    assert metrics["samples"] == 64 and 0 <= metrics["prompts_all_equal"] <= 16
    assert {"train_clip_low", "train_clip_high", "train_ratio", "train_kl"} <= set(metrics)
    rows = list(csv.DictReader((run / "iter_0" / "train" / "metrics.csv").open()))
    first = next(r for r in rows if r["step"] == "0")
    assert float(first["train/ratio_deviation"]) < 1e-5 and float(first["train/clip_low"]) == 0
    from safetensors.torch import load_file

    table = load_file(run / "iter_0" / "reference_logps.safetensors")
    assert table["token_offsets"].shape == (65,) and len(table["tokens"]) == int(table["token_offsets"][-1])


def test_padded_lays_flat_tokens_out_per_sequence():
    flat, seq = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]), torch.tensor([0, 0, 0, 1, 2, 2])
    values, mask = padded(flat, seq, 3)
    assert values.tolist() == [[1, 2, 3], [4, 0, 0], [5, 6, 0]]
    assert mask.sum(1).tolist() == [3, 1, 2]


def test_grpo_under_ddp_and_fsdp_trains_as_one_process(tmp_path):
    """Two CPU ranks (gloo) with each strategy against one process on the same global batch:
    the same per-token table, and the same step losses, with the token mean over both ranks."""
    import os
    import subprocess
    import sys

    from conftest import ROOT
    from safetensors.torch import load_file

    small = [
        "method=grpo",
        "method.aggregation=token",
        "method.beta_kl=0.05",
        "iterations=1",
        "task.train_size=16",
        "task.test_size=8",
        "num_samples=4",
        "eval.maj_k=0",
        "trainer.batch_size=8",
        "trainer.max_steps=3",
        "trainer.micro_batch_size=2",
        "trainer.precision=32-true",  # the ddp and fsdp presets' bf16-mixed rounds otherwise
        "trainer.log_every_n_steps=1",
        "trainer.progress_bar=false",
        "logger=none",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}

    def launch(run, *launcher):
        cmd = [sys.executable, *launcher, "-m", "irpo", *small, f"hydra.run.dir={run}"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        table = load_file(run / "iter_0" / "reference_logps.safetensors")
        steps = list(csv.DictReader((run / "iter_0" / "train" / "metrics.csv").open()))
        # each launch's first update against its own reference pass: a ratio of 1
        assert float(steps[0]["train/ratio_deviation"]) < 1e-5 and float(steps[0]["train/clip_low"]) == 0
        return table, [float(r["train/loss"]) for r in steps]

    one = launch(tmp_path / "one")
    for strategy in ("ddp", "fsdp"):
        small.append(f"trainer={strategy}")
        table, losses = launch(tmp_path / strategy, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2")
        small.pop()
        assert torch.equal(table["token_offsets"], one[0]["token_offsets"])
        # one thread per rank and other micro-batches than one process's: float32 rounding only
        difference = (table["tokens"] - one[0]["tokens"]).abs().max()
        assert difference < 1e-4, (strategy, difference)
        assert len(losses) == len(one[1]) == 3
        assert max(abs(a - b) for a, b in zip(losses, one[1])) < 1e-4, (strategy, losses, one[1])


def test_grpo_killed_mid_training_resumes_from_the_stored_table(tmp_path, cli):
    """SIGKILL after the second optimizer step; the same command trains on from the last
    checkpoint against the table the reference stage stored, and its steps are an
    uninterrupted run's."""
    args = [
        "method=grpo",
        "task.train_size=16",
        "task.test_size=8",
        "iterations=1",
        "num_samples=4",
        "trainer.max_steps=4",
        "trainer.batch_size=8",
        "trainer.checkpoint_every_n_steps=1",
        "eval.maj_k=0",
        "logger=none",
        "trainer.progress_bar=false",
        "trainer.log_every_n_steps=1",
    ]

    def losses(run):
        rows = list(csv.DictReader((run / "iter_0" / "train" / "metrics.csv").open()))
        return [float(r["train/loss"]) for r in rows]

    whole = cli(*args, f"hydra.run.dir={tmp_path / 'whole'}", "trainer.keep_checkpoints=true")
    assert whole.returncode == 0, whole.stderr[-3000:]
    run = tmp_path / "killed"
    killed = cli(*args, f"hydra.run.dir={run}", "trainer.keep_checkpoints=true", env={"IRPO_FAILPOINT": "train-step:2"})
    assert killed.returncode != 0 and (run / "iter_0" / "reference_logps.safetensors").exists()
    resumed = cli(*args, f"hydra.run.dir={run}", "trainer.keep_checkpoints=true")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(losses(run)) == 4 and max(abs(a - b) for a, b in zip(losses(run), losses(tmp_path / "whole"))) < 1e-6


def test_the_plan_prices_the_per_token_table(cli):
    from irpo.planning.sizing import token_table_bytes

    assert 265e6 < token_table_bytes(7473, 30, 300) < 275e6  # the paper's GSM8K scale
    proc = cli("method=grpo", "plan=true")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "storage    1 MB per iteration: M_t's per-token log-probs of the 3072 samples" in proc.stdout
    assert "storage" not in cli("method=irpo", "plan=true").stdout
