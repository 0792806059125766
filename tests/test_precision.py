"""Mixed precision: float32 master weights under bf16 compute, the reference pass scored with
training's numerics, M_{t+1} saved in model.save_dtype; and one iteration of a bf16
checkpoint that moves as many weights as float32 training does (one process and FSDP2)."""

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, run_cli
from lightning.pytorch.plugins.precision import MixedPrecision
from safetensors.torch import load_file

from irpo.loss import dpo_nll_loss
from irpo.models.load import load_policy
from irpo.models.tiny_tokenizer import build_tokenizer
from irpo.training.batching import collate, encode_examples
from irpo.training.precision import half_ulp, numerics, train_dtype
from irpo.training.scoring import batch_logps
from irpo.training.trainers import trainer_from


def test_mixed_precision_trains_float32_master_weights():
    trainer = lambda strategy: trainer_from({"strategy": strategy, "precision": "bf16-mixed"})  # noqa: E731
    assert trainer("auto").policy_dtype("bfloat16", lora=False) == "float32"
    assert trainer("fsdp").policy_dtype("bfloat16", lora=False) == "float32"
    assert trainer_from({"strategy": "ddp", "precision": "32-true"}).policy_dtype("bfloat16", lora=False) == "float32"
    assert (
        trainer_from({"strategy": "auto", "precision": "bf16-true"}).policy_dtype("float32", lora=False) == "bfloat16"
    )  # named: no master copy
    assert trainer("deepspeed_zero3").policy_dtype("bfloat16", lora=False) == "bfloat16"  # DeepSpeed keeps its own
    assert trainer("auto").policy_dtype("bfloat16", lora=True) == "bfloat16"  # the frozen base


def test_half_ulp_is_where_a_bf16_weight_stops_moving():
    w = torch.tensor(0.02).to(torch.bfloat16).float()  # a weight a bf16 checkpoint holds
    assert half_ulp(0.02) == 2.0**-6 * 2.0**-7 / 2  # 6.1e-5
    assert (w + 0.9 * half_ulp(0.02)).to(torch.bfloat16) == w.to(torch.bfloat16)
    assert (w + 1.1 * half_ulp(0.02)).to(torch.bfloat16) != w.to(torch.bfloat16)


def pairs(tok):
    items, _ = encode_examples(
        tok,
        ["Q: 1+1\nA:", "Q: 12+139\nA:", "Q: 7\nA:"],
        [" 2\n", " 151\n", " 7 7 7 7\n"],
        [" 3\n", " 1234567\n", " 8\n"],
        64,
    )
    return collate(items)


def test_bf16_mixed_step_is_the_float32_step_within_bf16_rounding(bf16_qwen2_dir):
    # The same float32 master weights (a bf16 checkpoint read in float32), the step once in
    # float32 and once under Lightning's bf16 autocast: log-probs and the loss stay float32,
    # and the loss and gradients agree to bf16's resolution (8 bits: ~0.4% per operation).
    batch, ref = pairs(build_tokenizer()), torch.full((6,), -20.0)
    results = []
    for context in (torch.autocast("cpu", enabled=False), MixedPrecision("bf16-mixed", "cpu").forward_context()):
        model = load_policy(str(bf16_qwen2_dir), "float32").train()
        with context:
            logps, counts = batch_logps(model, batch)
            parts = dpo_nll_loss(*logps.chunk(2), *ref.chunk(2), counts.chunk(2)[0], beta=0.1, alpha=1.0)
        assert logps.dtype == parts.loss.dtype == torch.float32
        parts.loss.backward()
        assert all(p.dtype == p.grad.dtype == torch.float32 for p in model.parameters())
        results.append((parts.loss.item(), torch.cat([p.grad.flatten() for p in model.parameters()])))
    (loss32, grad32), (loss16, grad16) = results
    assert loss16 == pytest.approx(loss32, rel=1e-2)
    assert torch.nn.functional.cosine_similarity(grad16, grad32, dim=0) > 0.999
    assert (grad16 - grad32).norm() <= 0.05 * grad32.norm()


def test_reference_pass_scores_as_the_first_training_step(bf16_qwen2_dir):
    # Step 0's policy is M_t: the reference log-probs, scored with training's numerics, make
    # every sequence's log-ratio ~0. Scored in the checkpoint's bf16 without autocast (as the
    # pass did before master weights), they are off by far more.
    batch = pairs(build_tokenizer())
    policy = load_policy(str(bf16_qwen2_dir), "float32").train()
    with MixedPrecision("bf16-mixed", "cpu").forward_context():
        trained = batch_logps(policy, batch)[0].detach()
    with torch.no_grad(), numerics("bf16-mixed", "cpu"):
        reference = batch_logps(load_policy(str(bf16_qwen2_dir), "float32").eval(), batch)[0]
    with torch.no_grad():
        plain_bf16 = batch_logps(load_policy(str(bf16_qwen2_dir), "bfloat16").eval(), batch)[0]
    assert (trained - reference).abs().max() <= 1e-5
    assert (trained - plain_bf16).abs().max() > 1e-4


def test_saved_model_is_the_master_weights_rounded_once(bf16_qwen2_dir, tmp_path):
    from irpo.training.train import _save

    policy = load_policy(str(bf16_qwen2_dir), "float32")
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(1e-5 * torch.randn_like(p))  # below a bf16 ulp: what a few steps move
    _save(policy, build_tokenizer(), tmp_path / "m1", "bfloat16")
    saved = load_file(tmp_path / "m1" / "model.safetensors")
    state = policy.state_dict()
    assert all(v.dtype == torch.bfloat16 and torch.equal(v, state[k].to(torch.bfloat16)) for k, v in saved.items())
    assert json.loads((tmp_path / "m1" / "config.json").read_text())["dtype"] == "bfloat16"
    reloaded = load_policy(str(tmp_path / "m1"), "bfloat16")
    assert all(torch.equal(p, state[k].to(torch.bfloat16)) for k, p in reloaded.state_dict().items())


ONE_ITERATION = [
    "iterations=1",
    "task.train_size=48",
    "task.test_size=8",
    "num_samples=2",
    "pairs_per_prompt=1",
    "gold_winner=true",
    "eval.maj_k=0",
    "trainer.batch_size=4",
    "model.lr=2e-5",
    "logger=none",
    "trainer.progress_bar=false",
]


def moved(m0_dir, run) -> float:
    """The share of M_0's weights that differ in the saved M_1, both read in bf16."""
    m0, m1 = load_file(m0_dir / "model.safetensors"), load_file(run / "iter_0/model/model.safetensors")
    changed = sum(int((m1[k].to(torch.bfloat16) != v).sum()) for k, v in m0.items())
    return changed / sum(v.numel() for v in m0.values())


@pytest.mark.slow
def test_a_bf16_checkpoint_learns_as_float32_does(bf16_qwen2_dir, tmp_path):
    # 48 pairs (gold winners: a random model is never right), 12 optimizer steps at lr 2e-5.
    runs = {}
    for name, overrides in {
        "float32": ["model.dtype=float32", "trainer.precision=32-true"],
        "bf16-mixed": ["model.dtype=bfloat16", "trainer.precision=bf16-mixed"],
        "bf16-true": ["model.dtype=bfloat16", "trainer.precision=bf16-true"],
    }.items():
        runs[name] = tmp_path / name
        proc = run_cli(f"model.path={bf16_qwen2_dir}", *ONE_ITERATION, *overrides, f"hydra.run.dir={runs[name]}")
        assert proc.returncode == 0, proc.stderr[-3000:]
    # FSDP2 over 2 CPU ranks, each pair (~90 tokens) its own micro-batch of at most 64 tokens
    fsdp = runs["fsdp"] = tmp_path / "fsdp"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "-m",
            "irpo",
            f"model.path={bf16_qwen2_dir}",
            *ONE_ITERATION,
            "model.dtype=bfloat16",
            "trainer=fsdp",
            "trainer.micro_batch_tokens=64",
            f"hydra.run.dir={fsdp}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((runs["bf16-mixed"] / "iter_0/metrics.json").read_text())["pairs"] == 48  # 12 steps of 4
    share = {name: moved(bf16_qwen2_dir, run) for name, run in runs.items()}
    assert json.loads((fsdp / "iter_0/model/config.json").read_text())["dtype"] == "bfloat16"
    assert share["float32"] > 0.5, share
    assert share["bf16-mixed"] >= 0.9 * share["float32"], share
    assert share["fsdp"] >= 0.9 * share["float32"], share
    # without master weights most steps round away: what every GPU preset did before
    assert share["bf16-true"] < 0.5 * share["float32"], share


@pytest.mark.parametrize("precision,lora", [("bf16-mixed", 0), ("32-true", 0), ("bf16-true", 0), ("bf16-mixed", 8)])
def test_planner_model_states_are_what_training_allocates(bf16_qwen2_dir, precision, lora):
    # One optimizer step of a policy built as module.py builds it (model.dtype bfloat16):
    # weights, gradients and AdamW states counted tensor by tensor, and the half copies autocast
    # makes of weights for their matmuls (saved for backward, so held through it), against
    # the planner's rule for a single-device trainer.
    from lightning.pytorch.plugins.precision import HalfPrecision

    from irpo.planning import sizing
    from irpo.training.module import build_policy

    lora_cfg = {"r": lora, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    policy = build_policy(
        str(bf16_qwen2_dir), train_dtype(precision, "bfloat16", in_model_dtype=lora > 0), False, lora=lora_cfg
    ).train()
    trained = [p for p in policy.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=1e-3)
    sizes, own = {p.numel() for p in policy.parameters()}, {p.untyped_storage().data_ptr() for p in policy.parameters()}
    copies = {}

    def pack(t):  # a bf16 tensor of a parameter's size that is no parameter: a weight's cast (or its transpose)
        storage = t.untyped_storage()
        if (
            t.dtype == torch.bfloat16
            and t.numel() in sizes
            and storage.data_ptr() not in own
            and storage.nbytes() == 2 * t.numel()
        ):
            copies[storage.data_ptr()] = storage.nbytes()
        return t

    context = (
        MixedPrecision(precision, "cpu")
        if precision.endswith("mixed")
        else HalfPrecision(precision)
        if "bf16" in precision
        else None
    )
    with (
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
        context.forward_context() if context else torch.autocast("cpu", enabled=False),
    ):
        logps, counts = batch_logps(policy, pairs(build_tokenizer()))
        loss = dpo_nll_loss(*logps.chunk(2), *torch.full((6,), -20.0).chunk(2), counts.chunk(2)[0], 0.1, 1.0).loss
    loss.backward()
    optimizer.step()
    nbytes = lambda tensors: sum(t.numel() * t.element_size() for t in tensors)  # noqa: E731
    measured = dict(
        weights=nbytes(policy.parameters()),
        gradients=nbytes(p.grad for p in trained),
        optimizer=nbytes(v for state in optimizer.state.values() for k, v in state.items() if k != "step"),
    )
    arch = sizing.arch_from_hf_config(json.loads((bf16_qwen2_dir / "config.json").read_text()))
    assert arch.params == sum(p.numel() for p in load_policy(str(bf16_qwen2_dir)).parameters())
    adapters = sizing.lora_params(arch, lora, ("q_proj", "v_proj")) if lora else 0
    rule = sizing.training_memory(
        arch, sizing.Training("auto", False, False, 1, 1, precision, 2, 0, False, False, False, adapters)
    )
    assert measured == dict(weights=rule.weights, gradients=rule.gradients, optimizer=rule.optimizer), (measured, rule)
    # autocast's copies: every weight a matmul reads (all but the norms' and the embedding's own
    # lookup; the tied head is a matmul) is cast once; the rule counts every trained parameter.
    # Under LoRA the base is bf16 already (no copy) and the adapters' copies are a bound only.
    assert (0 if lora else 0.9 * rule.gathered) <= sum(copies.values()) <= rule.gathered, (
        sum(copies.values()),
        rule.gathered,
    )
