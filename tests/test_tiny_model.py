"""The shipped tiny M_0 and the recipe that rebuilds it."""

from __future__ import annotations

import json
import os
import statistics

import pytest

from irpo.models.load import tiny_m0_dir
from irpo.tasks.arith import ArithTask, sft_questions

M0 = tiny_m0_dir()
shipped = pytest.mark.skipif(not os.path.exists(os.path.join(M0, "BUILD.json")), reason="tiny_m0 not built")


@shipped
def test_shipped_m0_loads_as_plain_llama():
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    model = AutoModelForCausalLM.from_pretrained(M0, use_safetensors=True)
    assert type(model) is LlamaForCausalLM
    assert 0.5e6 < sum(p.numel() for p in model.parameters()) < 1.5e6


@shipped
def test_shipped_tokenizer_round_trips_arith_text():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(M0)
    task = ArithTask(train_size=20, test_size=20)
    for ex in task.load("train") + task.load("test"):
        text = task.prompt(ex) + task.gold_completion(ex)
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id
        assert tok.decode(ids, skip_special_tokens=True) == text
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)


@shipped
def test_shipped_build_record_is_in_the_useful_range():
    with open(os.path.join(M0, "BUILD.json")) as f:
        record = json.load(f)
    assert 0.05 <= record["greedy_test_accuracy"] <= 0.6
    assert record["settings"]["steps"] > 0 and record["torch"]


def test_build_m0_writes_a_loadable_directory(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from irpo.tiny_m0 import Recipe, build_m0

    out = tmp_path / "m0"
    out.mkdir()
    (out / "stale.txt").write_text("replaced whole")
    knobs = {"num_terms": 4, "max_operand": 9, "operators": "+-*", "max_new_tokens": 64}  # no shipped M_0's setting
    with pytest.raises(ValueError, match="max_new_tokens 48 cuts this task's gold chains"):
        build_m0(str(out), Recipe(steps=3, problems=16, **{**knobs, "max_new_tokens": 48}))
    record = build_m0(str(out), Recipe(steps=3, batch_size=4, problems=16, hidden=32, layers=1, samples=0, **knobs))
    assert sorted(os.listdir(tmp_path)) == ["m0"]  # no temp dir left behind
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "BUILD.json").read_text()) == record
    assert 0.0 <= record["greedy_test_accuracy"] <= 1.0
    AutoModelForCausalLM.from_pretrained(str(out), use_safetensors=True)
    AutoTokenizer.from_pretrained(str(out))
    assert record["task"] == {**knobs, "seed": 1234}
    # its 16 problems, the train stream's past the loop's 384 prompts, are left out of every
    # split of a task that names it
    tuned = [e.question for e in ArithTask(train_size=400, **knobs).load("train")[384:]]
    assert sft_questions(str(out)) == set(tuned)
    for split in ("train", "test", "validation"):
        clean = ArithTask(train_size=400, test_size=300, validation_size=300, unseen_by=str(out), **knobs).load(split)
        assert len(clean) == (400 if split == "train" else 300) and not {e.question for e in clean} & set(tuned)
    assert sft_questions(str(tmp_path)) == frozenset()  # no BUILD.json: nothing left out


def test_hf_generator_frees_its_model_on_exit_without_a_gc_collection():
    """HFGenerator.__exit__ skips gc.collect() on CPU: that is safe only while dropping the
    references frees the model, i.e. while generation leaves no reference cycle holding it."""
    import gc
    import weakref

    from irpo.generation.base import Decoding
    from irpo.generation.hf import HFGenerator

    gc.disable()
    try:
        with HFGenerator(str(tiny_m0_dir()), Decoding(8)) as gen:
            gen.greedy(["1+2="])
            gen.sample(["3+4="], 2, 0.8, 0)
            model = weakref.ref(gen.model)
        assert model() is None
    finally:
        gc.enable()


def test_chain_stats_on_hand_made_samples():
    from irpo.tasks.base import Example
    from irpo.tiny_m0 import chain_stats

    task = ArithTask()
    a = Example(id="0", question="3+4-2", answer="5", solution="3+4=7, 7-2=5")
    b = Example(id="1", question="1+1+1", answer="3", solution="1+1=2, 2+1=3")
    samples = [
        [
            " 3+4=7, 7-2=5. Final answer: 5\n",  # right chain
            " 3+4=8, 8-2=5. Final answer: 5\n",  # right answer, wrong first step: lucky
            " 3+4=7, 7-2=6. Final answer: 6\n",  # wrong
        ],
        [" 1+1=2, 2+1=4. Final answer: 4\n", " 1+1=3. Final answer: 3\n"],  # wrong; lucky (missing step)
    ]
    stats = chain_stats(task, [a, b], samples)
    # pairs of prompt a: (right, wrong) share 12 characters of 31, (lucky, wrong) 5 of 31;
    # b's pair 5 of 24 (" 1+1=")
    assert stats == {
        "pass_at_n": 1.0,
        "mean_reward": 3 / 5,
        "both_sides_fraction": 1.0,
        "lucky_winners": 2 / 3,
        "first_divergence_chars": 5,
        "first_divergence_share": statistics.median([12 / 31, 5 / 31, 5 / 24]),
    }


def test_the_committed_task_page_regenerates_from_its_build_records(capsys):
    from pathlib import Path

    from irpo.tiny_m0 import main

    docs = Path(__file__).resolve().parents[1] / "docs" / "paper_mini"
    main(["--table", str(docs / "m0")])
    assert capsys.readouterr().out == (docs / "TASK.md").read_text()
    # the miniature's shipped M_0 is the row that was chosen
    assert json.loads((docs / "m0" / "mixed_ops.json").read_text()) == json.loads(
        (Path(M0).parent / "mini_m0" / "BUILD.json").read_text()
    )
