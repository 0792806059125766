"""Every task, model, method and experiment preset composes and passes `validate`, and the
paper presets carry the paper's numbers (PAPER.md §2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from irpo.cli import register_all
from irpo.config import validate
from irpo.methods import build
from irpo.planning.capacity import count, resolve_arch
from irpo.planning.sizing import arch_from_hf_config
from irpo.spec import build as build_spec
from irpo.tasks.base import Task

CONF = Path(__file__).parents[1] / "conf"
METHODS = ("irpo", "dpo", "sft_gold", "sft_chosen", "zero_shot")
# preset: (hub id, transformers config class, tied LM head)
MODELS = {
    "llama2_70b": ("meta-llama/Llama-2-70b-chat-hf", "LlamaConfig", False),
    "llama2_13b": ("meta-llama/Llama-2-13b-chat-hf", "LlamaConfig", False),
    "llama2_7b": ("meta-llama/Llama-2-7b-chat-hf", "LlamaConfig", False),
    "qwen2_5_0_5b": ("Qwen/Qwen2.5-0.5B-Instruct", "Qwen2Config", True),
    "qwen2_5_1_5b": ("Qwen/Qwen2.5-1.5B-Instruct", "Qwen2Config", True),
    "qwen2_5_math_1_5b": ("Qwen/Qwen2.5-Math-1.5B-Instruct", "Qwen2Config", True),
    "qwen3_0_6b": ("Qwen/Qwen3-0.6B", "Qwen3Config", True),
    "qwen3_1_7b": ("Qwen/Qwen3-1.7B", "Qwen3Config", True),
    "qwen3_8b": ("Qwen/Qwen3-8B", "Qwen3Config", False),
    "llama3_2_1b": ("meta-llama/Llama-3.2-1B-Instruct", "LlamaConfig", True),
    "llama3_1_8b": ("meta-llama/Llama-3.1-8B-Instruct", "LlamaConfig", False),
}

# N, K, temperature schedule, iterations T, max steps, gold winner, pair cap (PAPER.md §2 table)
PAPER = {
    "paper_gsm8k": dict(task="gsm8k", N=30, K=10, temps=[0.8, 0.8, 1.3, 1.3], T=4, steps=5000, gold=True, cap=60000),
    "paper_arc": dict(task="arc", N=30, K=20, temps=[0.8, 0.8, 1.3], T=3, steps=4000, gold=False, cap=None),
    "paper_math": dict(task="math", N=20, K=15, temps=[0.8, 0.8, 1.0], T=3, steps=5000, gold=False, cap=None),
}


@pytest.fixture(scope="module")
def composer():
    register_all()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        yield lambda *overrides: compose("config", overrides=list(overrides))


@pytest.mark.parametrize("experiment", sorted(PAPER))
@pytest.mark.parametrize("method", METHODS)
def test_experiment_and_method_compose(composer, experiment, method, launched_on_16_ranks):
    cfg = composer(f"experiment={experiment}", f"method={method}")
    validate(cfg)
    assert cfg.method.name == method
    assert (
        type(build(cfg)).__name__
        == {"irpo": "DPO", "dpo": "DPO", "sft_gold": "GoldSFT", "sft_chosen": "WinnerSFT", "zero_shot": "ZeroShot"}[
            method
        ]
    )
    # alpha is left to the method: the paper's 1 for IRPO, 0 for the plain-DPO ablation.
    assert cfg.alpha == (0.0 if method == "dpo" else 1.0)


@pytest.mark.parametrize("experiment", sorted(PAPER))
def test_experiment_values_are_the_papers(composer, experiment):
    paper = PAPER[experiment]
    cfg = composer(f"experiment={experiment}")
    assert instantiate(cfg.task).name == paper["task"]
    assert (cfg.num_samples, cfg.pairs_per_prompt, cfg.iterations) == (paper["N"], paper["K"], paper["T"])
    assert list(cfg.temperatures) == paper["temps"] and len(cfg.temperatures) == cfg.iterations
    assert (cfg.gold_winner, cfg.max_pairs, cfg.trainer.max_steps) == (paper["gold"], paper["cap"], paper["steps"])
    assert (cfg.alpha, cfg.beta, cfg.model.lr, cfg.trainer.batch_size) == (1.0, 0.1, 7e-7, 16)
    assert (cfg.eval.maj_k, cfg.eval.maj_temperature) == (32, 0.8)
    assert (
        cfg.model.path == "meta-llama/Llama-2-70b-chat-hf" and cfg.model.dtype == "bfloat16" and cfg.model.chat_template
    )
    if paper["task"] == "arc":
        assert cfg.task.include_easy  # "7.7k train Qs (easy + challenge)"


@pytest.mark.parametrize("experiment", sorted(PAPER))
def test_experiments_run_on_the_engines_that_fit_70b(composer, experiment):
    cfg = composer(f"experiment={experiment}")
    assert cfg.generator._target_.endswith("VLLMGenerator") and cfg.generator.tensor_parallel_size == 4
    t = cfg.trainer
    assert (t.strategy, t.activation_checkpointing, t.devices, t.num_nodes, t.micro_batch_size) == (
        "fsdp",
        True,
        8,
        2,
        1,
    )
    assert (
        t.batch_size % (t.devices * t.num_nodes * t.micro_batch_size) == 0
    )  # the batch of 16 splits evenly over the ranks


def test_every_model_preset_is_listed():
    assert set(MODELS) == {p.stem for p in (CONF / "model").glob("*.yaml")} - {
        "tiny",
        "smollm2_135m",
    }  # CPU presets: tests/test_real_model.py


@pytest.mark.parametrize("model", sorted(MODELS))
def test_model_presets(composer, model):
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    cfg = composer(f"model={model}", "task=gsm8k")
    validate(cfg)
    hub, config_class, tied = MODELS[model]
    assert (cfg.model.path, cfg.model.dtype, cfg.model.chat_template, cfg.model.max_length) == (
        hub,
        "bfloat16",
        True,
        4096,
    )
    # The planner's numbers: the preset's shapes, built by transformers' own class on the meta
    # device, have exactly the parameters the preset states, and read back as the same Arch.
    arch = resolve_arch(build_spec(cfg).model)
    config = getattr(transformers, config_class)(
        num_hidden_layers=arch.layers,
        hidden_size=arch.hidden,
        intermediate_size=arch.intermediate,
        num_attention_heads=arch.heads,
        num_key_value_heads=arch.kv_heads,
        vocab_size=arch.vocab,
        head_dim=arch.head_dim,
        tie_word_embeddings=tied,
    )
    with torch.device("meta"):
        built = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in built.parameters()) == arch.params
    assert arch_from_hf_config(config.to_dict()) == arch


@pytest.mark.parametrize("model", sorted(MODELS))
def test_chat_template_settings_of_the_2026_families(composer, model):
    kwargs = dict(composer(f"model={model}").model.chat_template_kwargs)
    if model.startswith("qwen3"):  # the paper's CoT is the completion, not a thinking trace
        assert kwargs == {"enable_thinking": False}
    elif model.startswith("llama3"):  # the date line renders the same every day
        assert kwargs == {"date_string": "26 Jul 2024"}
    else:
        assert kwargs == {}


@pytest.mark.parametrize("task", ("gsm8k", "arc", "math"))
def test_task_configs_build_tasks_without_reading_data(composer, task):
    cfg = composer(f"task={task}", "task.data_path=/nowhere", "task.train_size=5")
    built = instantiate(cfg.task)
    assert isinstance(built, Task) and built.name == task
    assert built.max_new_tokens == cfg.task.max_new_tokens and built.data_path == "/nowhere"


def test_a_mistyped_task_key_fails_at_compose_time(composer):
    with pytest.raises(Exception, match="include_eazy"):
        composer("task=arc", "task.include_eazy=true")


def test_the_presets_table_in_docs_matches_the_files(composer):
    rows = {
        row.split("|")[1].strip(" `"): [c.strip(" `") for c in row.split("|")[1:-1]]
        for row in (CONF.parent / "docs" / "presets.md").read_text().splitlines()
        if row.startswith("| `")
    }
    assert set(rows) == set(MODELS)
    for model, (_name, hub, _, params, lr, *_) in rows.items():
        cfg = build_spec(composer(f"model={model}")).model
        assert (hub, params, float(lr)) == (cfg.path, count(resolve_arch(cfg).params), cfg.lr), model
