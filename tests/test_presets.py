"""Every task, model, method and experiment preset composes and passes `validate`, and the
paper presets carry the paper's numbers (PAPER.md §2)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from irpo.cli import register_all
from irpo.config import validate
from irpo.fit import resolve_arch
from irpo.methods import build
from irpo.planner import count_params
from irpo.tasks.base import Task

CONF = Path(__file__).parents[1] / "conf"
METHODS = ("irpo", "dpo", "sft_gold", "sft_chosen", "zero_shot")
MODELS = ("llama2_70b", "llama2_13b", "llama2_7b", "qwen2_5_0_5b", "qwen2_5_1_5b")

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
    assert type(build(cfg)).__name__ == {"irpo": "DPO", "dpo": "DPO", "sft_gold": "GoldSFT", "sft_chosen": "WinnerSFT", "zero_shot": "ZeroShot"}[method]
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
    assert cfg.model.path == "meta-llama/Llama-2-70b-chat-hf" and cfg.model.dtype == "bfloat16" and cfg.model.chat_template
    if paper["task"] == "arc":
        assert cfg.task.include_easy  # "7.7k train Qs (easy + challenge)"


@pytest.mark.parametrize("experiment", sorted(PAPER))
def test_experiments_run_on_the_engines_that_fit_70b(composer, experiment):
    cfg = composer(f"experiment={experiment}")
    assert cfg.generator._target_.endswith("VLLMGenerator") and cfg.generator.tensor_parallel_size == 4
    t = cfg.trainer
    assert (t.strategy, t.activation_checkpointing, t.devices, t.num_nodes, t.micro_batch_size) == ("fsdp", True, 8, 2, 1)
    assert t.batch_size % (t.devices * t.num_nodes * t.micro_batch_size) == 0  # the batch of 16 splits evenly over the ranks


@pytest.mark.parametrize("model", MODELS)
def test_model_presets(composer, model):
    cfg = composer(f"model={model}", "task=gsm8k")
    validate(cfg)
    assert cfg.model.dtype == "bfloat16" and cfg.model.chat_template and cfg.model.max_length == 4096
    assert cfg.model.path.startswith("meta-llama/Llama-2-" if model.startswith("llama") else "Qwen/Qwen2.5-")
    assert cfg.model.path.endswith("-chat-hf" if model.startswith("llama") else "-Instruct")
    # The planner's numbers: each preset's parameter count is the one its config.json shapes give.
    arch = resolve_arch(cfg.model)
    qwen = model.startswith("qwen")
    assert arch.params == count_params(arch.layers, arch.hidden, arch.intermediate, arch.heads, arch.kv_heads, arch.vocab, tied=qwen, qkv_bias=qwen)


@pytest.mark.parametrize("task", ("gsm8k", "arc", "math"))
def test_task_configs_build_tasks_without_reading_data(composer, task):
    cfg = composer(f"task={task}", "task.data_path=/nowhere", "task.train_size=5")
    built = instantiate(cfg.task)
    assert isinstance(built, Task) and built.name == task
    assert built.max_new_tokens == cfg.task.max_new_tokens and built.data_path == "/nowhere"


def test_a_mistyped_task_key_fails_at_compose_time(composer):
    with pytest.raises(Exception, match="include_eazy"):
        composer("task=arc", "task.include_eazy=true")
