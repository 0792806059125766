"""The batch layout, the reference log-probs and the LightningModule on a small random Llama."""

import math

import pytest
import torch
from transformers import LlamaForCausalLM

from irpo.batching import collate, encode_examples
from irpo.models.tiny_tokenizer import build_tokenizer
from irpo.module import PreferenceModule, batch_logps


@pytest.fixture(scope="module")
def model_dir(random_model_dir):
    return random_model_dir


def test_collate_puts_winners_first_and_masks_only_completions():
    tok = build_tokenizer()
    items, dropped = encode_examples(tok, ["Q: 1+1\nA:", "Q: 2\nA:"], [" 2\n", " 2\n"], [" 3 \n", " 33333\n"], max_length=64)
    assert dropped == 0
    batch = collate(items, pad_id=tok.pad_token_id)
    assert batch["input_ids"].shape[0] == 4
    first = batch["input_ids"][0][batch["completion_mask"][0]].tolist()
    assert tok.decode(first) == " 2\n</s>"
    rejected = batch["input_ids"][3][batch["completion_mask"][3]].tolist()
    assert tok.decode(rejected) == " 33333\n</s>"
    assert not batch["completion_mask"][:, 0].any()  # BOS and prompt never scored
    assert (batch["attention_mask"].bool() >= batch["completion_mask"]).all()


def test_too_long_examples_are_dropped_not_cut():
    tok = build_tokenizer()
    items, dropped = encode_examples(tok, ["Q: 1\nA:", "Q: 1\nA:"], [" 1\n", " 1\n"], [" 2\n", " 2" * 40 + "\n"], max_length=20)
    assert dropped == 1 and [it["index"] for it in items] == [0]


def test_padding_does_not_change_sequence_logps(model_dir):
    tok = build_tokenizer()
    model = LlamaForCausalLM.from_pretrained(model_dir).eval()
    items, _ = encode_examples(tok, ["Q: 1+1\nA:", "Q: 12+1\nA:"], [" 2\n", " 13\n"], [" 3\n", " 1234567\n"], 64)
    together = batch_logps(model, collate(items, tok.pad_token_id))[0]
    alone = torch.cat([batch_logps(model, collate([it], tok.pad_token_id))[0] for it in items])
    # together is [c0, c1, r0, r1]; alone is [c0, r0, c1, r1]
    assert torch.allclose(together, alone[[0, 2, 1, 3]], atol=1e-5)


@pytest.mark.parametrize("reference", ["precomputed", "live"])
def test_first_step_loss_is_log2_plus_alpha_nll(model_dir, reference):
    tok = build_tokenizer()
    module = PreferenceModule(model_dir, "pairs", beta=0.1, alpha=0.5, lr=1e-3, reference=reference)
    module.log_dict = lambda *a, **k: None
    items, _ = encode_examples(tok, ["Q: 1+1\nA:"] * 2, [" 2\n", " 1+1=2\n"], [" 3\n", " 5\n"], 64)
    batch = collate(items, tok.pad_token_id)
    with torch.no_grad():
        logps, counts = batch_logps(module.policy, batch)
    if reference == "precomputed":
        batch["ref_chosen"], batch["ref_rejected"] = logps.chunk(2)
    loss = module.training_step(batch, 0)
    nll = (-logps.chunk(2)[0] / counts.chunk(2)[0]).mean()
    assert loss.item() == pytest.approx(math.log(2) + 0.5 * nll.item(), rel=1e-5)


def test_sft_methods_minimise_the_nll_alone(model_dir):
    tok = build_tokenizer()
    module = PreferenceModule(model_dir, "winners", beta=0.1, alpha=1.0, lr=1e-3)
    module.log_dict = lambda *a, **k: None
    items, _ = encode_examples(tok, ["Q: 1+1\nA:"], [" 2\n"], None, 64)
    batch = collate(items, tok.pad_token_id)
    assert batch["input_ids"].shape[0] == 1
    logps, counts = batch_logps(module.policy, batch)
    assert module.training_step(batch, 0).item() == pytest.approx((-logps / counts).item(), rel=1e-5)
