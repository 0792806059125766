"""The planner's arithmetic (irpo/planning/sizing.py) against hand-computed Llama-2-7B and -70B cases,
and the plan and fit check a config gets (irpo/planning/plan.py) without loading weights or data."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from irpo.cli import register_all
from irpo.errors import UserError
from irpo.models.load import tiny_m0_dir
from irpo.planning import capacity, sizing
from irpo.planning import plan as plan_report
from irpo.planning.sizing import Arch, GiB, Training
from irpo.spec import build
from irpo.training.trainers import TRAINERS

ROOT = Path(__file__).parents[1]
CONF = ROOT / "conf"
SHARED = Path(__file__).parents[2] / "shared" / "data"

# Llama-2 config.json shapes. 7B: 32 layers x (q, k, v, o 4 x 4096^2 = 67,108,864 + gate, up,
# down 3 x 4096 x 11008 = 135,266,304 + norms 2 x 4096) = 32 x 202,383,360 = 6,476,267,520,
# + embeddings and head 2 x 32000 x 4096 = 262,144,000, + final norm 4096 = 6,738,415,616.
L7 = Arch(6_738_415_616, 32, 4096, 11008, 32, 32, 32000)
# 70B (GQA, 8 KV heads of 128): q, o 2 x 8192^2 = 134,217,728; k, v 2 x 8192 x 1024 = 16,777,216;
# MLP 3 x 8192 x 28672 = 704,643,072; norms 16,384: 855,654,400 per layer, x 80 = 68,452,352,000,
# + 2 x 32000 x 8192 = 524,288,000, + 8192 = 68,976,648,192.
L70 = Arch(68_976_648_192, 80, 8192, 28672, 64, 8, 32000)


def train(arch: Arch = L70, strategy: str = "fsdp", **kw) -> Training:
    cls = TRAINERS[strategy]
    base = dict(
        trainer=cls.name,
        sharded=cls.sharded,
        deepspeed=cls.deepspeed,
        gpus_per_node=8,
        nodes=2,
        precision="bf16-mixed",
        weight_bytes=2,
        tokens=0,
        checkpointing=True,
        cpu_offload=False,
        live_reference=False,
        lora=0,
    )
    return Training(**{**base, **kw})


def shape(layers, hidden, intermediate, heads, kv_heads, vocab, head_dim=0, qk_norm=False) -> Arch:
    return Arch(0, layers, hidden, intermediate, heads, kv_heads, vocab, head_dim, qk_norm)


def test_parameter_counts_are_the_published_ones():
    assert sizing.count_params(shape(32, 4096, 11008, 32, 32, 32000), tied=False, qkv_bias=False) == 6_738_415_616
    assert sizing.count_params(shape(40, 5120, 13824, 40, 40, 32000), tied=False, qkv_bias=False) == 13_015_864_320
    assert sizing.count_params(shape(80, 8192, 28672, 64, 8, 32000), tied=False, qkv_bias=False) == 68_976_648_192
    # Qwen2.5-0.5B / 1.5B: tied embeddings, q/k/v biases; the model cards' 0.49B / 1.54B.
    assert sizing.count_params(shape(24, 896, 4864, 14, 2, 151936), tied=True, qkv_bias=True) == 494_032_768
    assert sizing.count_params(shape(28, 1536, 8960, 12, 2, 151936), tied=True, qkv_bias=True) == 1_543_714_304
    # Qwen3-0.6B: 16 heads of 128 (q 2048 wide over hidden 1024), q/k norms of 128 each:
    # 28 x (q, o 2 x 1024 x 2048 + k, v 2 x 1024 x 1024 + MLP 3 x 1024 x 3072 + norms 2 x 1024
    # + q/k norms 2 x 128) = 28 x 15,730,944 = 440,466,432, + tied 151936 x 1024 + 1024 = 596,049,920.
    assert (
        sizing.count_params(shape(28, 1024, 3072, 16, 8, 151936, 128, True), tied=True, qkv_bias=False) == 596_049_920
    )
    assert (L7.layer_params, L70.layer_params) == (202_383_360, 855_654_400)


def test_an_explicit_head_dim_sizes_attention_kv_and_lora():
    qwen3 = sizing.arch_from_hf_config(
        dict(
            model_type="qwen3",
            num_hidden_layers=28,
            hidden_size=1024,
            intermediate_size=3072,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
            vocab_size=151936,
            tie_word_embeddings=True,
            attention_bias=False,
        )
    )
    assert (qwen3.head_dim, qwen3.q_dim, qwen3.kv_dim, qwen3.qk_norm, qwen3.params) == (
        128,
        2048,
        1024,
        True,
        596_049_920,
    )
    # K and V of 28 layers x 8 heads x 128 in bf16: 114,688 bytes a token (hidden / heads would say half)
    assert sizing.generation_memory(qwen3, 2, 1, 100, 80 * GiB).kv_per_token == 2 * 28 * 8 * 128 * 2
    assert sizing.lora_params(qwen3, 8, ("q_proj", "o_proj")) == 28 * 2 * 8 * (1024 + 2048)
    # attention keeps q (2048 wide) where the hidden-size rule would keep 1024 a token per layer
    wide, narrow = (sizing.activation_bytes(a, 1000, 2, False) for a in (qwen3, replace(qwen3, head_dim=64)))
    assert wide - narrow == 1000 * 28 * 2 * (4 * 2048 + 4 * 1024 - 4 * 1024 - 4 * 512) // 2
    # what the config does not set is hidden / heads, as Llama and Qwen2 imply
    assert (
        sizing.arch_from_hf_config(
            dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4, vocab_size=10)
        ).head_dim
        == 16
    )


def test_tiny_models_arch_from_its_config_counts_its_parameters():
    from transformers import AutoModelForCausalLM

    arch = sizing.arch_from_hf_config(json.loads((Path(tiny_m0_dir()) / "config.json").read_text()))
    model = AutoModelForCausalLM.from_pretrained(tiny_m0_dir())
    assert arch.params == sum(p.numel() for p in model.parameters())  # tied: the head is the embedding


def test_ddp_holds_18_bytes_per_parameter_on_every_gpu():
    m = sizing.training_memory(L7, train(L7, strategy="ddp", nodes=1))
    # float32 weights and gradients 4 x 6,738,415,616 = 26,953,662,464 each; AdamW m, v 8 x =
    # 53,907,324,928; autocast's bf16 copies 2 x = 13,476,831,232; 18 x = 121,291,481,088
    assert (m.weights, m.gradients, m.optimizer, m.gathered) == (
        26_953_662_464,
        26_953_662_464,
        53_907_324_928,
        13_476_831_232,
    )
    assert m.total == 121_291_481_088
    # 32-true makes no copy (16 B/param); bf16-true keeps no master weights (2 + 2 + 4)
    assert sizing.training_memory(L7, train(L7, strategy="ddp", nodes=1, precision="32-true")).total == 16 * L7.params
    assert sizing.training_memory(L7, train(L7, strategy="ddp", nodes=1, precision="bf16-true")).total == 8 * L7.params


def test_fsdp_shards_16_bytes_per_parameter_and_gathers_one_unit():
    m = sizing.training_memory(L70, train())  # 16 ranks
    # float32 shards: 4P/16 = 275,906,592,768 / 16 = 17,244,162,048 (weights, gradients); 8P/16 = 34,488,324,096
    assert (m.weights, m.gradients, m.optimizer) == (17_244_162_048, 17_244_162_048, 34_488_324_096)
    assert m.weights + m.gradients + m.optimizer == L70.params  # 16 B/param over 16 ranks
    # The unit is a decoder layer (855,654,400 > root 524,296,192), gathered as bf16 weights 2 +
    # bf16 gradient 2 + the float32 buffer its gradient is reduced in 4: 8 x.
    assert m.gathered == 6_845_235_200
    # 7B: the root (embeddings + head + norm, 262,148,096) outgrows a layer (202,383,360).
    assert sizing.training_memory(L7, train(L7, nodes=1)).gathered == 8 * 262_148_096
    offloaded = sizing.training_memory(L70, train(cpu_offload=True))
    assert (offloaded.total, offloaded.host) == (6_845_235_200, 68_976_648_192)  # 16P/16 per rank on the host


def test_a_checkpoint_holds_weights_and_adamw_states_not_gradients():
    # 70B under bf16-mixed: float32 weights 4 + AdamW 8 = 12 x 68,976,648,192, over all shards
    assert sizing.checkpoint_bytes(L70, train()) == 827_719_778_304
    # DeepSpeed keeps a bf16 copy beside its float32 master (14 B/param); a live reference adds its float32 copy
    assert sizing.checkpoint_bytes(L70, train(strategy="deepspeed_zero3")) == 14 * L70.params
    assert sizing.checkpoint_bytes(L7, train(L7, strategy="ddp", live_reference=True)) == 16 * L7.params
    # LoRA: the frozen bf16 base and the adapters' float32 weights and AdamW states
    assert sizing.checkpoint_bytes(L7, train(L7, lora=4_194_304)) == 2 * L7.params + 12 * 4_194_304


def test_zero3_is_deepspeeds_estimate_with_and_without_offload():
    # DeepSpeed estimate_zero3_model_states_mem_needs (zero_init, buffer factor 1.5); largest
    # module of 7B: the embedding, 32000 x 4096 = 131,072,000 (4 x = 524,288,000).
    # No offload, 8 GPUs: 524,288,000 + 18 x 6,738,415,616 / 8 (15,161,435,136); host 131,072,000 x 4 x 8 x 1.5.
    assert sizing.zero3_model_states(L7.params, L7.largest_module_params, 8, 1, False) == (
        6_291_456_000,
        15_685_723_136,
    )
    # Optimizer offloaded: 524,288,000 + 2P/8 (1,684,603,904); host 16P x 1.5 = 161,721,974,784.
    assert sizing.zero3_model_states(L7.params, L7.largest_module_params, 8, 1, True) == (
        161_721_974_784,
        2_208_891_904,
    )
    # Parameters offloaded too: 4 x largest alone; host 18P x 1.5 = 181,937,221,632.
    assert sizing.zero3_model_states(L7.params, L7.largest_module_params, 8, 1, True, True) == (
        181_937_221_632,
        524_288_000,
    )
    # 70B on 2 nodes x 8: 4 x 262,144,000 + 18 x 68,976,648,192 / 16 (77,598,729,216).
    m = sizing.training_memory(L70, train(strategy="deepspeed_zero3"))
    assert m.total == 78_647_305_216 and m.gathered == 1_048_576_000
    off = sizing.training_memory(L70, train(strategy="deepspeed_zero3", cpu_offload=True))
    # 1,048,576,000 + 2P/16 (8,622,081,024); host 16P / 2 nodes x 1.5 = 827,719,778,304 per node.
    assert off.total == 9_670_657_024 and off.host * 8 == 827_719_778_304


def test_the_two_sharded_rules_need_different_gpu_counts_for_70b():
    usable = 72 * GiB  # 80 GiB less 10%: 77,309,411,328
    # fsdp: 16P/N + 6,845,235,200 <= usable -> N >= 1,103,626,371,072 / 70,464,176,128 = 15.7 -> 16
    assert sizing.min_gpus(L70, train(), usable) == 16
    # zero3: 18P/N + 1,048,576,000 <= usable -> N >= 1,241,579,667,456 / 76,260,835,328 = 16.3 -> 17
    assert sizing.min_gpus(L70, train(strategy="deepspeed_zero3"), usable) == 17


def test_activations_per_korthikanti_adapted_to_llama():
    # 70B, bf16, per token per layer: 12 x 8192 + 4 x 1024 + 8 x 28672 = 331,776; the head's input
    # 2 x 8192. Checkpointed, 1 pair x 1024 = 2048 tokens: (80 x 2 x 8192 + 331,776 + 16,384) x 2048,
    # and the logits of 2048 positions x 32000 (65,536,000, one chunk: under 2**26) x (2 + 8).
    assert sizing.activation_bytes(L70, 2048, 2, True) == 1_658_880 * 2048 + 655_360_000 == 4_052_746_240
    assert (
        sizing.activation_bytes(L70, 2048, 2, False) == (80 * 331_776 + 16_384) * 2048 + 655_360_000 == 55_047_094_272
    )
    # 7B (no GQA): 12 x 4096 + 4 x 4096 + 8 x 11008 = 153,600 per layer; 8192 tokens, not
    # checkpointed: 262,144,000 logits, of which a chunk of 2**26 exist at once.
    assert sizing.activation_bytes(L7, 8192, 2, False) == (32 * 153_600 + 8_192) * 8192 + 2**26 * 10 == 41_003_515_904
    # fp32 doubles the layers' share; the logits take 4 + 8 bytes per entry.
    assert sizing.activation_bytes(L7, 1, 4, False) == 32 * 307_200 + 4 * 4096 + 32000 * 12
    # the logits' share is bounded: twice the tokens, twice the layers' share, the same chunk
    assert sizing.activation_bytes(L7, 16384, 2, False) - 2 * sizing.activation_bytes(L7, 8192, 2, False) == -(
        2**26 * 10
    )


def test_lora_trains_adapters_over_a_frozen_bf16_base():
    # r=16 on q, k, v, o: 16 x ((8192+8192) x 2 + (8192+1024) x 2) = 819,200 per layer, x 80 = 65,536,000.
    adapters = sizing.lora_params(L70, 16, ("q_proj", "k_proj", "v_proj", "o_proj"))
    assert adapters == 65_536_000
    m = sizing.training_memory(L70, train(lora=adapters, live_reference=True))
    # (2P + 4A) / 16 (adapters in float32), 4A / 16, 8A / 16; a unit gathers its bf16 weights
    # alone (2 x 855,654,400); the live reference is the base with adapters disabled.
    assert (m.weights, m.gradients, m.optimizer, m.gathered, m.reference) == (
        8_638_465_024,
        16_384_000,
        32_768_000,
        1_711_308_800,
        0,
    )


def test_a_live_reference_is_another_copy_sharded_like_the_policy():
    # held as the policy is, float32 under mixed precision: scored with training's numerics
    assert (
        sizing.training_memory(L7, train(L7, strategy="ddp", nodes=1, live_reference=True)).reference == 4 * L7.params
    )
    # 4P/16 + 4 x 855,654,400 (its gathered layer)
    assert sizing.training_memory(L70, train(live_reference=True)).reference == 17_244_162_048 + 3_422_617_600


def test_vllm_shards_weights_and_kv_heads_over_tensor_parallel_ranks():
    g = sizing.generation_memory(L70, 2, 4, 642, 72 * GiB)
    # 137,953,296,384 / 4; KV 2 x 80 layers x 2 of 8 KV heads x 128 x 2 bytes = 81,920 per token
    assert (g.weights, g.kv_per_token) == (34_488_324_096, 81_920)
    assert g.sequences == (77_309_411_328 - 34_488_324_096) // (81_920 * 642) == 814
    assert sizing.generation_memory(L70, 2, 16, 642, 72 * GiB).kv_per_token == 40_960  # KV heads replicated past 8
    assert sizing.generation_memory(L7, 2, 1, 642, 72 * GiB).kv_per_token == 524_288
    assert not sizing.generation_memory(L70, 2, 1, 642, 72 * GiB).fits_weights
    assert (sizing.vllm_tp(L70, 2, 72 * GiB), sizing.vllm_tp(L7, 2, 72 * GiB)) == (4, 1)


def test_cost_of_a_paper_gsm8k_iteration():
    # 7473 x 30 + 1319 x 33 = 267,717 sequences x 256 tokens; (7473 + 1319) x 130 prompt tokens;
    # 80,000 pairs trained (5000 steps x 16) and 60,000 scored by the reference, 2 x (130 + 256) tokens each.
    c = sizing.iteration_cost(L70.params, sizing.Work(267_717, 8792, 130, 256, 80_000, 60_000, 2), True, False)
    assert (c.generated, c.prefilled, c.trained, c.referenced) == (68_535_552, 1_142_960, 61_760_000, 46_320_000)
    assert c.generate_flops == 2 * L70.params * 69_678_512 == 9_612_380_417_532_100_608
    assert (
        c.train_flops == L70.params * (8 * 61_760_000 + 2 * 46_320_000) == 40_469_979_027_210_240_000
    )  # 6P + recompute 2P
    assert sizing.gpu_hours(c.train_flops, 989.0, 0.4) == pytest.approx(28.4167, abs=1e-4)


# --- the plan a config gets --------------------------------------------------------------------


@pytest.fixture(scope="module")
def composer():
    register_all()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        yield lambda *overrides: build(compose("config", overrides=list(overrides)))  # the run spec


NO_GPU = capacity.Machine(gpus=0, gpu_bytes=None, host_bytes=24 * GiB)
H100S = capacity.Machine(gpus=8, gpu_bytes=80 * GiB, host_bytes=2048 * GiB)


@pytest.fixture
def on(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    return lambda found: monkeypatch.setattr(capacity, "machine", lambda: found)


@pytest.mark.parametrize("experiment", ("paper_gsm8k", "paper_arc", "paper_math"))
def test_paper_presets_fit_their_gpus(composer, on, experiment):
    cfg = composer(f"experiment={experiment}")
    on(H100S)
    capacity.check_fits(cfg)  # a node of the preset's 8 x 80 GiB GPUs: nothing refused
    lines = plan_report.resource_lines(cfg, 7473, 1319)
    assert any(line.startswith("total") and line.endswith("fits") for line in lines)
    assert any(line.startswith("KV cache") and line.endswith("fits") for line in lines)


def test_a_70b_run_on_this_kind_of_machine_is_refused_with_what_to_run_instead(composer, on):
    on(NO_GPU)
    with pytest.raises(
        UserError,
        match=r"68.98B params\) does not fit this machine: training needs .* no GPU; "
        r"here, a smaller model \(plan=true sizes one\); or run it on GPUs: trainer=fsdp",
    ):
        capacity.check_fits(composer("task=arc", "model=llama2_70b"))


def test_a_small_model_on_this_kind_of_machine_is_told_what_fits_here(composer, on):
    on(NO_GPU)
    with pytest.raises(
        UserError, match=r"no GPU; here, set model.max_length=\d+ trainer.micro_batch_tokens=\d+ .*; or run it on GPUs"
    ):
        capacity.check_fits(composer("model=qwen2_5_0_5b"))


def test_too_few_gpus_are_refused_with_the_smallest_change(composer, on):
    on(H100S)
    # 16 ranks hold 16P/16 of float32 states + a gathered layer + activations: 74.4 of 72 GiB;
    # the batch of 16 splits over no more ranks, so the optimizer states go to the host
    with pytest.raises(UserError, match=r"each of its GPUs has 80.0 GiB .*; set trainer.cpu_offload=true"):
        capacity.check_fits(composer("experiment=paper_gsm8k", "trainer.cpu_offload=false"))


def test_a_gpu_trainer_without_a_gpu_is_refused(composer, on):
    on(NO_GPU)
    with pytest.raises(UserError, match="trainer.accelerator=gpu needs a GPU"):
        capacity.check_fits(composer("trainer=gpu"))


def test_the_default_run_and_unknown_models_pass(composer, on):
    on(NO_GPU)
    capacity.check_fits(composer())
    cfg = composer("model.path=someone/some-model")  # a hub id without arch numbers: nothing to plan with
    assert capacity.resolve_arch(cfg.model) is None
    capacity.check_fits(cfg)


def test_prompt_counts_without_data_are_the_known_split_sizes(composer):
    for overrides, counts in (
        (("task=gsm8k",), (7473, 1319)),
        (("task=arc", "task.include_easy=true"), (3370, 1172)),
        (("task=math", "task.train_size=100"), (100, 5000)),
        (("task=arith",), (384, 200)),
    ):
        cfg = composer(*overrides)
        task = cfg.task
        assert plan_report.prompt_counts(cfg, task, plan_report.local_splits(cfg, task)) == counts


@pytest.mark.skipif(not SHARED.is_dir(), reason="needs ../shared/data")
def test_known_split_sizes_match_the_data(composer):
    for task, extra in (("gsm8k", ()), ("arc", ("task.include_easy=true",)), ("math", ())):
        cfg = composer(f"task={task}", f"task.data_path={SHARED / task}", *extra)
        local = cfg.task
        hub_cfg = composer(f"task={task}", *extra)
        assert plan_report.prompt_counts(cfg, local, plan_report.local_splits(cfg, local)) == plan_report.prompt_counts(
            hub_cfg, hub_cfg.task, None
        )


def test_changes_that_fit_are_checked_by_the_planner(composer):
    cfg = composer(
        "experiment=paper_gsm8k", "trainer.num_nodes=1", "trainer.cpu_offload=false", "model.max_length=4096"
    )
    t = capacity.training(cfg, L70, 8, 1)
    usable = int(72 * GiB)
    changes = capacity.changes_that_fit(cfg, L70, t, usable)
    # 2 nodes (the batch of 16 splits over 8 or 16 ranks) do not fit 4096-token pairs; no max_length <= 2048 fits 8 GPUs.
    assert changes == ["trainer.cpu_offload=true", "model.lora.r=16 (on q_proj,k_proj,v_proj,o_proj)"]
    assert sizing.fits(L70, replace(t, cpu_offload=True), usable) and not sizing.fits(L70, t, usable)


@pytest.mark.slow
def test_cli_refuses_70b_here_and_plans_the_paper(cli):
    refused = cli("task=arc", "model=llama2_70b", "alpha=1.0")
    assert (
        refused.returncode == 2
        and refused.stderr.startswith("irpo: error: ")
        and len(refused.stderr.strip().splitlines()) == 1
    )
    planned = cli("experiment=paper_gsm8k", "plan=true", "trainer.gpu_memory_gb=80")
    assert planned.returncode == 0, planned.stderr
    assert "16 rank(s) = 2 node(s) x 8" in planned.stdout and "GPU-hours per iteration" in planned.stdout


FIXTURES = Path(__file__).parent / "fixtures"


def gpu_commands() -> list[tuple[str, list[str], int, int]]:
    """Every GPU run the README and docs/ show, as (where, overrides, ranks per node, nodes):
    a `python -m irpo`, torchrun or srun line (continuations joined) naming a GPU trainer or
    a paper preset; torchrun's --nproc-per-node/--nnodes and an sbatch block's --nodes and
    --ntasks-per-node give the layout it names."""
    found = []
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        text = doc.read_text().replace("\\\n", " ")
        for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S):
            sbatch = dict(re.findall(r"#SBATCH --(nodes|ntasks-per-node)=(\d+)", block))
            for line in block.splitlines():
                if "-m irpo" not in line or "..." in line or "<" in line:
                    continue
                args = line.split("-m irpo", 1)[1].split()
                if not any(re.match(r"(trainer=(gpu|ddp|fsdp|deepspeed_zero3)|experiment=paper_)", a) for a in args):
                    continue
                launcher = dict(re.findall(r"--(nproc-per-node|nnodes)[= ](\d+)", line))
                per_node = int(launcher.get("nproc-per-node", sbatch.get("ntasks-per-node", 0)))
                nodes = int(launcher.get("nnodes", sbatch.get("nodes", 1)))
                overrides = [a for a in args if not a.startswith(("hydra.run.dir=", "dry_run=", "plan="))]
                overrides = [
                    f"task.data_path={FIXTURES / a.split('/')[-1]}" if a.startswith("task.data_path=") else a
                    for a in overrides
                ]
                found.append((f"{doc.name}: {line.strip()[:60]}", overrides, per_node, nodes))
    return found


def test_every_gpu_command_in_the_docs_fits_the_machine_it_names(composer, on, monkeypatch):
    commands = gpu_commands()
    assert any(
        "trainer=gpu" in " ".join(o) and "model=qwen2_5_1_5b" in o for _, o, _, _ in commands
    )  # the one-GPU command
    on(NO_GPU)  # planned for the GPUs each command names (trainer.gpu_memory_gb, else 80 GiB)
    for where, overrides, per_node, nodes in commands:
        if per_node:  # as torchrun would start it
            torchrun_env(monkeypatch, per_node, nodes)
        else:
            for name in ("WORLD_SIZE", "LOCAL_WORLD_SIZE", "TORCHELASTIC_RUN_ID"):
                monkeypatch.delenv(name, raising=False)
        cfg = composer(*overrides, "plan=true")
        lines = plan_report.resource_lines(cfg, 7473, 1319)
        assert any(line.startswith("total") and line.endswith("fits") for line in lines), (where, lines)
        assert any(line.startswith("KV cache") and "does NOT fit" not in line for line in lines), (where, lines)
        assert not any(line.startswith("GPUs") and "none" in line for line in lines), (where, lines)


def torchrun_env(monkeypatch, per_node: int, nodes: int) -> None:
    for name, value in {
        "TORCHELASTIC_RUN_ID": "t",
        "RANK": "0",
        "GROUP_RANK": "0",
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": str(per_node),
        "WORLD_SIZE": str(per_node * nodes),
    }.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("launcher", ["torchrun", "srun"])
def test_the_layout_is_the_launchers_own(composer, monkeypatch, request, launcher):
    """16 ranks, 8 a node, as each launcher says it (srun sets no WORLD_SIZE)."""
    if launcher == "torchrun":
        request.getfixturevalue("launched_on_16_ranks")
    else:
        for name, value in {
            "SLURM_NTASKS": "16",
            "SLURM_NTASKS_PER_NODE": "8",
            "SLURM_PROCID": "0",
            "SLURM_LOCALID": "0",
            "SLURM_NODEID": "0",
            "SLURM_JOB_NAME": "irpo",
        }.items():
            monkeypatch.setenv(name, value)
    assert capacity.layout(composer("trainer=fsdp").trainer, H100S) == (8, 2)


@pytest.mark.parametrize("val_from,sampled", [("train", 284), ("validation", 384)])
def test_the_plan_takes_validation_problems_from_train_prompts_only_when_they_come_from_there(
    composer, capsys, val_from, sampled
):
    from irpo.planning.plan import print_plan

    cfg = composer("plan=true", "selection.val_size=100", f"selection.val_from={val_from}")
    print_plan(cfg)
    out = capsys.readouterr().out
    assert f"iteration 0: evaluate M_0; sample {sampled} x 8 = {sampled * 8} completions" in out
    assert f"\ngenerate    {sampled} x 8 samples" in out
