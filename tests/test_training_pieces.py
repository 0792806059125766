"""The batch layout, the reference log-probs and the LightningModule on a small random Llama."""

import math

import pytest
import torch
from transformers import LlamaForCausalLM

from irpo.loss import dpo_nll_loss, sequence_logps
from irpo.methods import DPO, WinnerSFT
from irpo.models.tiny_tokenizer import build_tokenizer
from irpo.training.batching import collate, encode_examples, pair_tokens
from irpo.training.module import PolicyTraining, PreferenceModule
from irpo.training.packed_attention import packed_inputs, pairwise_attention
from irpo.training.scoring import batch_logps
from irpo.training.trainers import Trainer


@pytest.fixture(scope="module")
def model_dir(random_model_dir):
    return random_model_dir


def test_collate_packs_the_prompt_once_and_scores_only_completions():
    tok = build_tokenizer()
    items, dropped = encode_examples(
        tok, ["Q: 1+1\nA:", "Q: 2\nA:"], [" 2\n", " 2\n"], [" 3 \n", " 33333\n"], max_length=64
    )
    assert dropped == 0
    batch = collate(items)
    lengths = [len(it["prompt_ids"]) + len(it["chosen_ids"]) + len(it["rejected_ids"]) for it in items]
    assert batch["input_ids"].shape == (1, sum(lengths)) and int(batch["n_seq"]) == 4  # no padding
    assert batch["pair_bounds"].tolist() == [0, lengths[0], sum(lengths)]
    targets = batch["score_target"]
    assert tok.decode(targets[batch["score_seq"] == 0].tolist()) == " 2\n</s>"
    assert tok.decode(targets[batch["score_seq"] == 3].tolist()) == " 33333\n</s>"
    a, b = lengths[0], sum(lengths)
    row, seg, pos = batch["input_ids"][0, a:b], batch["segment_ids"][0, a:b], batch["position_ids"][0, a:b]
    assert tok.decode(row[seg == 0].tolist()).endswith("Q: 2\nA:")
    # the loser's positions continue from the prompt's end, not from the winner's
    p = int((seg == 0).sum())
    assert pos[seg == 2].tolist() == list(range(p, p + 8))
    # the first scored token of each completion is predicted from its prompt's last position
    first_loser = (batch["score_seq"] == 3).nonzero()[0, 0]
    assert int(batch["score_index"][first_loser]) == a + p - 1
    assert pair_tokens(batch) == sum(
        2 * len(it["prompt_ids"]) + len(it["chosen_ids"]) + len(it["rejected_ids"]) for it in items
    )


def shared_prompt_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """What a pair's attention must be: causal, and a completion sees the prompt and itself,
    never the other completion ([n, n], True: attend)."""
    q, k = segment_ids[:, None], segment_ids[None, :]
    causal = torch.ones(len(segment_ids), len(segment_ids), dtype=torch.bool).tril()
    return causal & ((k == 0) | (k == q))


def test_shared_prompt_mask_keeps_the_completions_apart():
    m = shared_prompt_mask(torch.tensor([0, 0, 1, 1, 2, 2]))
    assert m[4].tolist() == [True, True, False, False, True, False]  # loser sees prompt + itself
    assert m[3].tolist() == [True, True, True, True, False, False]
    assert m[1].tolist() == [True, True, False, False, False, False]


def test_pairwise_attention_equals_masked_attention_pair_by_pair():
    # a pair with no prompt, an SFT item (no loser), a full pair: outputs and gradients of the
    # two causal calls per pair against one SDPA over each pair's span under the mask
    tok = build_tokenizer()
    items, _ = encode_examples(
        tok, ["Q: 1\nA:", "Q: 12+139\nA:", "Q: 7\nA:"], [" 2\n", " 151\n", " 7 7 7 7\n"], [" 3\n", " 1\n", " 8\n"], 64
    )
    items[0]["prompt_ids"], items[1]["rejected_ids"] = [], None
    batch = collate(items)
    layout = packed_inputs(batch)["pair_layout"]
    assert [(p, c, r) for _, p, c, r in layout] == [
        (len(it["prompt_ids"]), len(it["chosen_ids"]), len(it["rejected_ids"] or [])) for it in items
    ]
    n = batch["input_ids"].shape[1]
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 4, n, 8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    module = torch.nn.Module()
    module.is_causal, module.num_key_value_groups, module.training = True, 1, False
    fast = pairwise_attention(module, q, k, v, None, pair_layout=layout)[0]
    bounds, segments = batch["pair_bounds"].tolist(), batch["segment_ids"][0]
    masked = torch.cat(
        [
            torch.nn.functional.scaled_dot_product_attention(
                q[:, :, a:b], k[:, :, a:b], v[:, :, a:b], attn_mask=shared_prompt_mask(segments[a:b])
            )
            for a, b in zip(bounds[:-1], bounds[1:])
        ],
        dim=2,
    ).transpose(1, 2)
    torch.testing.assert_close(fast, masked, rtol=0, atol=1e-12)
    w = torch.randn(fast.shape, generator=g, dtype=torch.float64)
    grads_fast = torch.autograd.grad((fast * w).sum(), (q, k, v))
    grads_masked = torch.autograd.grad((masked * w).sum(), (q, k, v))
    for a, b in zip(grads_fast, grads_masked):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def plain_logps(model, items):
    """The plain step's log-probs: each [prompt, completion] alone through the full model
    and `sequence_logps` over its full logits (winners, then losers)."""
    logps, counts = [], []
    for side in ("chosen_ids", "rejected_ids"):
        for it in items:
            ids = torch.tensor([it["prompt_ids"] + it[side]])
            mask = torch.zeros_like(ids, dtype=torch.bool)
            mask[0, len(it["prompt_ids"]) :] = True
            lp, n = sequence_logps(model(input_ids=ids).logits, ids, mask)
            logps.append(lp)
            counts.append(n)
    return torch.cat(logps), torch.cat(counts)


@pytest.mark.parametrize("chunk_positions", [None, 3])
def test_fast_step_equals_plain_step_in_loss_and_gradients(model_dir, chunk_positions):
    # chunk_positions=3: the LM head and its log-softmax over 3 scored positions at a time,
    # each chunk recomputed in backward; None: the whole batch in one chunk.
    tok = build_tokenizer()
    # two copies: batch_logps switches its model's attention to the pairwise kind
    model = LlamaForCausalLM.from_pretrained(model_dir).train()
    plain = LlamaForCausalLM.from_pretrained(model_dir).train()
    items, _ = encode_examples(
        tok,
        ["Q: 1+1\nA:", "Q: 12+139\nA:", "Q: 7\nA:"],
        [" 2\n", " 151\n", " 7 7 7 7\n"],
        [" 3\n", " 1234567\n", " 8\n"],
        64,
    )
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(6, generator=g) - 20

    def loss_and_grads(m, logps, counts):
        parts = dpo_nll_loss(*logps.chunk(2), *ref.chunk(2), counts.chunk(2)[0], beta=0.1, alpha=1.0)
        parts.loss.backward()
        return parts.loss.detach(), [p.grad for p in m.parameters()]

    chunk = {} if chunk_positions is None else {"chunk_elements": chunk_positions * model.config.vocab_size}
    fast_loss, fast_grads = loss_and_grads(model, *batch_logps(model, collate(items), **chunk))
    plain_loss, plain_grads = loss_and_grads(plain, *plain_logps(plain, items))
    assert abs(fast_loss.item() - plain_loss.item()) <= 1e-5
    for f, p in zip(fast_grads, plain_grads):
        assert torch.allclose(f, p, atol=1e-5, rtol=0)


def test_too_long_examples_are_dropped_not_cut():
    tok = build_tokenizer()
    items, dropped = encode_examples(
        tok, ["Q: 1\nA:", "Q: 1\nA:"], [" 1\n", " 1\n"], [" 2\n", " 2" * 40 + "\n"], max_length=20
    )
    assert dropped == 1 and [it["index"] for it in items] == [0]


def test_padding_does_not_change_sequence_logps(model_dir):
    tok = build_tokenizer()
    model = LlamaForCausalLM.from_pretrained(model_dir).eval()
    items, _ = encode_examples(tok, ["Q: 1+1\nA:", "Q: 12+1\nA:"], [" 2\n", " 13\n"], [" 3\n", " 1234567\n"], 64)
    together = batch_logps(model, collate(items))[0]
    alone = torch.cat([batch_logps(model, collate([it]))[0] for it in items])
    # together is [c0, c1, r0, r1]; alone is [c0, r0, c1, r1]
    assert torch.allclose(together, alone[[0, 2, 1, 3]], atol=1e-5)


@pytest.mark.parametrize("reference", ["precomputed", "live"])
def test_first_step_loss_is_log2_plus_alpha_nll(model_dir, reference):
    tok = build_tokenizer()
    module = PreferenceModule(
        DPO("irpo", alpha=0.5, beta=0.1), model_dir, PolicyTraining(lr=1e-3, trainer=Trainer(reference=reference))
    )
    items, _ = encode_examples(tok, ["Q: 1+1\nA:"] * 2, [" 2\n", " 1+1=2\n"], [" 3\n", " 5\n"], 64)
    batch = collate(items)
    with torch.no_grad():
        logps, counts = batch_logps(module.policy, batch)
    if reference == "precomputed":
        batch["ref_chosen"], batch["ref_rejected"] = logps.chunk(2)
    loss, _ = module.micro_batch_loss(batch)
    nll = (-logps.chunk(2)[0] / counts.chunk(2)[0]).mean()
    assert loss.item() == pytest.approx(math.log(2) + 0.5 * nll.item(), rel=1e-5)


def test_sft_methods_minimise_the_nll_alone(model_dir):
    tok = build_tokenizer()
    module = PreferenceModule(WinnerSFT("sft_chosen"), model_dir, PolicyTraining(lr=1e-3))
    items, _ = encode_examples(tok, ["Q: 1+1\nA:"], [" 2\n"], None, 64)
    batch = collate(items)
    assert batch["input_ids"].shape[0] == 1
    logps, counts = batch_logps(module.policy, batch)
    assert module.micro_batch_loss(batch)[0].item() == pytest.approx((-logps / counts).item(), rel=1e-5)


def test_pairwise_attention_survives_activation_checkpointing(model_dir):
    # checkpointed layers are recomputed in backward, outside batch_logps: same gradients
    tok = build_tokenizer()
    items, _ = encode_examples(tok, ["Q: 1+1\nA:", "Q: 12+139\nA:"], [" 2\n", " 151\n"], [" 3\n", " 1234567\n"], 64)
    grads = []
    for checkpointing in (False, True):
        model = LlamaForCausalLM.from_pretrained(model_dir).train()
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        batch_logps(model, collate(items))[0].sum().backward()
        grads.append([p.grad for p in model.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))


def test_micro_batches_are_bounded_in_items_and_tokens():
    from irpo.training.batching import micro_batches, packed_tokens, split_to

    items = [
        {"prompt_ids": [0] * p, "chosen_ids": [1] * c, "rejected_ids": [2] * r}
        for p, c, r in [(4, 3, 3), (4, 10, 2), (2, 1, 1), (30, 30, 30), (1, 1, 1), (3, 3, 3)]
    ]
    sizes = [packed_tokens(it) for it in items]
    assert sizes == [10, 16, 4, 90, 3, 9]
    groups = micro_batches(items, max_items=3, max_tokens=30)
    assert [[sizes[items.index(it)] for it in g] for g in groups] == [[10, 16, 4], [90], [3, 9]]  # the long one alone
    assert micro_batches(items, max_items=4) == [items[:4], items[4:]]
    assert micro_batches(items) == [items]
    split = split_to(groups, 5)
    assert len(split) == 5 and [it for g in split for it in g] == items  # order kept, each bound still holds
    with pytest.raises(ValueError):
        split_to([[items[0]], [items[1]]], 3)


def test_a_step_in_token_bounded_micro_batches_is_the_step_in_one(model_dir):
    # The optimizer step's gradient is that of the mean loss over its pairs, however many
    # micro-batches their lengths needed (each loss weighted by its share of the pairs).
    from types import SimpleNamespace

    from irpo.training.batching import micro_batches

    tok = build_tokenizer()
    items, _ = encode_examples(
        tok,
        ["Q: 1+1\nA:", "Q: 12+139\nA:", "Q: 7\nA:", "Q: 9\nA:"],
        [" 2\n", " 151\n", " 7 7 7 7\n", " 9\n"],
        [" 3\n", " 1234567\n", " 8\n", " 99\n"],
        64,
    )
    g = torch.Generator().manual_seed(0)
    for it in items:
        it["ref_chosen"], it["ref_rejected"] = (torch.randn(2, generator=g) - 20).tolist()
    grads, logged = [], []
    for max_tokens in (None, 40):
        module = PreferenceModule(
            DPO("irpo", alpha=1.0, beta=0.1), model_dir, PolicyTraining(lr=0.0, trainer=Trainer(gradient_clip_val=None))
        )  # no Trainer to clip
        optimizer = torch.optim.SGD(module.parameters(), lr=0.0)
        module.optimizers = lambda: optimizer
        module.lr_schedulers = lambda: SimpleNamespace(step=lambda: None)
        module.manual_backward = lambda loss: loss.backward()
        module._gradient_sync = lambda last: torch.autocast("cpu", enabled=False)
        module._log = logged.append  # the step's metrics, before they are averaged over ranks and logged
        groups = micro_batches(items, max_tokens=max_tokens)
        assert len(groups) == (1 if max_tokens is None else 3)  # unequal micro-batches: 1 pair, 1, 2
        optimizer.zero_grad = lambda set_to_none=True: None  # keep the step's gradient to compare
        module.training_step(groups, 0)
        grads.append(torch.cat([p.grad.flatten() for p in module.policy.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], atol=1e-6, rtol=1e-5)
    assert logged[1]["train/loss"] == pytest.approx(logged[0]["train/loss"].item(), rel=1e-6)
