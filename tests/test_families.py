"""The model families irpo's presets name (Llama-2, Llama-3, Qwen2, Qwen3) through the loop,
each a small random-weight model built from its transformers configuration class, with a
BPE tokenizer trained here and its family's chat template (irpo.models.families).

Checked for each: the prompt tokens training scores are the tokens generation conditioned
on; the template's end-of-turn token stops generation and is what training appends;
`model.chat_template_kwargs` reaches the template; one iteration of the loop runs."""

from __future__ import annotations

import datetime
import json

import pytest
import torch

from irpo.generation.base import Decoding, render_prompt
from irpo.generation.hf import HFGenerator
from irpo.models.families import FAMILIES, Shape, build
from irpo.models.load import load_tokenizer
from irpo.run.artifacts import read_jsonl
from irpo.tasks.arith import ArithTask
from irpo.training.batching import encode_examples

# Qwen3's head_dim is set apart from hidden / heads (64 vs 32), as Qwen3-0.6B's is (128 vs 64).
SHAPES = {
    "llama2": Shape(hidden=128, heads=4, kv_heads=4),
    "llama3": Shape(hidden=128, heads=4, kv_heads=2),
    "qwen2": Shape(hidden=128, heads=4, kv_heads=2),
    "qwen3": Shape(hidden=128, heads=4, kv_heads=2, head_dim=64),
}
END_OF_TURN = {"llama2": "</s>", "llama3": "<|eot_id|>", "qwen2": "<|im_end|>", "qwen3": "<|im_end|>"}
PINNED = {"llama3": {"date_string": "26 Jul 2024"}, "qwen3": {"enable_thinking": False}}
# What a prompt rendered through the family's template (with PINNED) holds.
MARKERS = {
    "llama2": "[/INST]",
    "llama3": "Today Date: 26 Jul 2024",
    "qwen2": "<|im_start|>assistant\n",
    "qwen3": "</think>",
}


def corpus() -> list[str]:
    task = ArithTask()
    examples = task.load("train")[:400]
    return [task.prompt(ex) for ex in examples] + [task.gold_completion(ex) for ex in examples]


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    text = corpus()
    return {name: build(name, root / name, text, SHAPES[name]) for name in FAMILIES}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_family_is_what_its_presets_load(family, family_dirs):
    config = json.loads((family_dirs[family] / "config.json").read_text())
    tok = load_tokenizer(str(family_dirs[family]), chat_template=True)
    assert tok.eos_token == END_OF_TURN[family]
    if family == "llama3":
        assert (
            config["num_key_value_heads"] < config["num_attention_heads"]
            and config["rope_parameters"]["rope_type"] == "llama3"
        )
    if family == "qwen2":
        assert config["tie_word_embeddings"] and config["model_type"] == "qwen2"  # q/k/v biases are Qwen2's own
    if family == "qwen3":
        assert config["head_dim"] * config["num_attention_heads"] != config["hidden_size"]
        from transformers import AutoModelForCausalLM

        names = dict(AutoModelForCausalLM.from_pretrained(family_dirs[family]).named_parameters())
        assert "model.layers.0.self_attn.q_norm.weight" in names


@pytest.mark.parametrize("family", list(FAMILIES))
def test_training_scores_the_prompt_tokens_generation_conditioned_on(family, family_dirs):
    path = str(family_dirs[family])
    tok = load_tokenizer(path, chat_template=True)
    prompts = [
        render_prompt(tok, ArithTask().prompt(ex), True, PINNED.get(family)) for ex in ArithTask().load("test")[:3]
    ]
    seen = []
    with HFGenerator(path, Decoding(4, chat_template=True)) as gen:
        generate = gen.model.generate

        def recording(input_ids, attention_mask, **kw):
            seen.extend(ids[mask.bool()].tolist() for ids, mask in zip(input_ids, attention_mask))
            return generate(input_ids=input_ids, attention_mask=attention_mask, **kw)

        gen.model.generate = recording
        completions = gen.greedy(prompts)
    items, dropped = encode_examples(tok, prompts, completions, None, 4096)
    assert dropped == 0
    assert sorted(seen) == sorted(it["prompt_ids"] for it in items)
    for text, it in zip(prompts, items):
        # the template's own BOS once, not the tokenizer's again
        assert tok.decode(it["prompt_ids"]) == text and it["prompt_ids"].count(tok.bos_token_id) <= 1
        assert it["chosen_ids"][-1] == tok.convert_tokens_to_ids(END_OF_TURN[family])


def chained(src, dst, start: int, chain: list[int]):
    """The model of `src` made to emit `chain` after token `start`, one token at a time
    whatever came before: attention and MLP outputs zeroed, each chain token's embedding
    its own direction, the LM head mapping a token's direction to the next token. The
    chain's last token repeats itself, so a run that does not stop shows it."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(src)
    model.config.tie_word_embeddings = False
    hidden = model.config.hidden_size
    emb, head = (
        torch.zeros_like(model.get_input_embeddings().weight),
        torch.zeros_like(model.get_input_embeddings().weight),
    )
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("o_proj.weight", "down_proj.weight", "o_proj.bias", "down_proj.bias")):
                p.zero_()
        order = [start, *chain]
        for j, (a, b) in enumerate(zip(order, order[1:] + order[-1:])):
            emb[a, j % hidden] = 1.0
            head[b, j % hidden] = 30.0
        model.get_input_embeddings().weight = torch.nn.Parameter(emb)
        model.lm_head.weight = torch.nn.Parameter(head)
    model.save_pretrained(dst)
    load_tokenizer(str(src)).save_pretrained(dst)
    return dst


@pytest.fixture(scope="module")
def stopping(family_dirs, tmp_path_factory):
    """Per family: a chained model that writes three digits, the end of turn, then `7`s."""
    out = {}
    for family, path in family_dirs.items():
        tok = load_tokenizer(str(path), chat_template=True)
        prompt = render_prompt(tok, "Q: 1+1", True, PINNED.get(family))
        start = tok(prompt, add_special_tokens=False)["input_ids"][-1]
        digits = [tok.convert_tokens_to_ids(c) for c in "321"]
        chain = digits + [tok.eos_token_id, tok.convert_tokens_to_ids("7")]
        out[family] = (chained(path, tmp_path_factory.mktemp(f"chain_{family}"), start, chain), prompt)
    return out


@pytest.mark.parametrize("family", list(FAMILIES))
def test_the_end_of_turn_stops_generation_and_ends_what_training_scores(family, stopping):
    path, prompt = stopping[family]
    with HFGenerator(str(path), Decoding(12, chat_template=True)) as gen:
        assert gen.greedy([prompt]) == ["321"] and gen.sample([prompt], 2, 1.0, seed=0) == [["321", "321"]]
        assert gen.generated_tokens == 3 * 4  # three digits and the end of turn, each time
    tok = load_tokenizer(str(path), chat_template=True)
    (item,), _ = encode_examples(tok, [prompt], ["321"], None, 4096)
    assert item["chosen_ids"] == tok("321", add_special_tokens=False)["input_ids"] + [
        tok.convert_tokens_to_ids(END_OF_TURN[family])
    ]
    # Without the template the prompt is plain text and the tokenizer's own EOS ends it.
    assert load_tokenizer(str(path), chat_template=False).eos_token == FAMILIES[family].eos


def test_a_base_tokenizer_ends_a_chat_turn_as_its_template_does(family_dirs, tmp_path):
    # Qwen2.5's base tokenizers name <|endoftext|> their EOS and carry the ChatML template.
    tok = load_tokenizer(str(family_dirs["qwen2"]))
    tok.eos_token = "<|endoftext|>"
    tok.save_pretrained(tmp_path)
    assert load_tokenizer(str(tmp_path)).eos_token == "<|endoftext|>"
    assert load_tokenizer(str(tmp_path), chat_template=True).eos_token == "<|im_end|>"


def test_template_variables_reach_the_template(family_dirs):
    llama3 = load_tokenizer(str(family_dirs["llama3"]), chat_template=True)
    today = datetime.date.today().strftime("%d %b %Y")
    assert f"Today Date: {today}" in render_prompt(llama3, "Q", True)
    fixed = render_prompt(llama3, "Q", True, {"date_string": "26 Jul 2024"})
    assert "Today Date: 26 Jul 2024\n" in fixed and today not in fixed
    qwen3 = load_tokenizer(str(family_dirs["qwen3"]), chat_template=True)
    assert render_prompt(qwen3, "Q", True).endswith("<|im_start|>assistant\n")
    assert render_prompt(qwen3, "Q", True, {"enable_thinking": False}).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )


def test_a_model_without_a_template_sees_the_plain_prompt(family_dirs, tmp_path):
    tok = load_tokenizer(str(family_dirs["llama2"]))
    tok.chat_template = None
    tok.save_pretrained(tmp_path)
    base = load_tokenizer(str(tmp_path), chat_template=True)
    assert render_prompt(base, "Q: 1+1\nA:", True) == "Q: 1+1\nA:" and base.eos_token == "</s>"


def pinned(family: str) -> list[str]:
    """PINNED's template settings of a family as command-line overrides."""
    return [
        f"+model.chat_template_kwargs.{k}={str(v).lower() if isinstance(v, bool) else repr(v)}"
        for k, v in PINNED.get(family, {}).items()
    ]


ONE_ITERATION = [
    "iterations=1",
    "task.train_size=16",
    "task.test_size=4",
    "num_samples=2",
    "pairs_per_prompt=1",
    "gold_winner=true",
    "eval.maj_k=0",
    "trainer.batch_size=4",
    "generator.max_new_tokens=8",
    "model.max_length=256",
    "model.chat_template=true",
    "logger=none",
    "trainer.progress_bar=false",
]


@pytest.mark.slow
@pytest.mark.parametrize("family", list(FAMILIES))
def test_one_iteration_of_the_loop(family, family_dirs, tmp_path):
    from conftest import run_cli

    proc = run_cli(f"model.path={family_dirs[family]}", *ONE_ITERATION, *pinned(family), f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "iter_0" / "metrics.json").read_text())
    assert metrics["pairs"] > 0 and metrics["train_loss"] == metrics["train_loss"]
    pairs = read_jsonl(tmp_path / "iter_0" / "pairs.jsonl")
    assert pairs and all(MARKERS[family] in p["prompt"] for p in pairs)
