"""The in-place KV cache: DynamicCache's contents without its per-step copy, and generate's
tokens unchanged."""

from __future__ import annotations

import pytest
import torch

from irpo.generation.kv_cache import InPlaceLayer, generate_kwargs
from irpo.models.load import load_policy, load_tokenizer, tiny_m0_dir


def steps(layer, lengths, batch=3, heads=2, dim=4, seed=0):
    """Feeds `layer` steps of the given lengths; returns everything fed, concatenated."""
    g = torch.Generator().manual_seed(seed)
    keys, values = [], []
    for n in lengths:
        k, v = torch.randn(batch, heads, n, dim, generator=g), torch.randn(batch, heads, n, dim, generator=g)
        out_k, out_v = layer.update(k, v)
        keys.append(k)
        values.append(v)
    return torch.cat(keys, -2), torch.cat(values, -2), out_k, out_v


def test_the_cache_holds_what_was_appended_in_one_buffer():
    layer = InPlaceLayer(capacity=16)
    layer.update(torch.zeros(3, 2, 5, 4), torch.zeros(3, 2, 5, 4))
    start = layer.keys.data_ptr()
    keys, values, out_k, out_v = steps(layer, [1] * 7)
    assert torch.equal(out_k[..., 5:, :], keys) and torch.equal(out_v[..., 5:, :], values)
    assert out_k.shape == (3, 2, 12, 4) and layer.get_seq_length() == 12
    assert layer.keys.data_ptr() == start  # written in place: no step copied the cache


def test_past_its_capacity_it_grows_and_keeps_its_contents():
    layer = InPlaceLayer(capacity=4)
    keys, values, out_k, out_v = steps(layer, [3, 1, 1, 1, 6])
    assert torch.equal(out_k, keys) and torch.equal(out_v, values)


def test_crop_then_append_overwrites_the_cropped_positions():
    layer = InPlaceLayer(capacity=32)
    keys, _, _, _ = steps(layer, [6, 1, 1])
    layer.crop(-3)
    new_k, new_v = torch.ones(3, 2, 2, 4), torch.ones(3, 2, 2, 4)
    out_k, _ = layer.update(new_k, new_v)
    assert torch.equal(out_k, torch.cat([keys[..., :5, :], new_k], -2))


def test_after_batch_selection_it_appends_to_the_selected_rows():
    layer = InPlaceLayer(capacity=32)
    keys, _, _, _ = steps(layer, [4, 1])
    layer.batch_select_indices(torch.tensor([2, 0]))
    new = torch.full((2, 2, 1, 4), 7.0)
    out_k, _ = layer.update(new, new)
    assert torch.equal(out_k, torch.cat([keys[[2, 0]], new], -2))
    layer.reset()
    assert layer.get_seq_length() == 0


@pytest.mark.parametrize(
    "decoding", [dict(do_sample=False), dict(do_sample=True, temperature=0.8, top_k=0, num_return_sequences=4)]
)
def test_generate_gives_the_same_tokens_as_with_transformers_own_cache(decoding):
    tok = load_tokenizer(str(tiny_m0_dir()), False)
    model = load_policy(str(tiny_m0_dir()), "float32", False).eval()
    prompts = [tok.encode(p) for p in ["Q: 3 + 4 - 2 = ?\nA:", "Q: 17 - 9 + 12 = ?\nA:", "Q: 1 + 1 = ?\nA:"]]
    width = max(map(len, prompts))
    input_ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    mask = (torch.arange(width) >= torch.tensor([width - len(p) for p in prompts])[:, None]).long()

    def generate(cache: dict):
        torch.manual_seed(0)
        return model.generate(
            input_ids=input_ids, attention_mask=mask, max_new_tokens=24, pad_token_id=0, **cache, **decoding
        )

    in_place = generate_kwargs(model, width + 24)
    assert torch.equal(generate(in_place), generate({}))
    assert all(isinstance(layer, InPlaceLayer) for layer in next(iter(in_place.values())).layers)
