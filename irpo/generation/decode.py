"""`generator=decode`: the `hf` generator's model and batching with irpo's own decoding loop,
a speed path for real models on a CPU (bench/NOTES.md has the measurements).

transformers' `generate` spends a 135M model's CPU time on work the loop does not need:
- it copies each prompt N times before the prefill, so a prompt is encoded N times; here it
  is encoded once and its keys and values are copied to its N rows;
- it keeps decoding a row after its end of turn until the batch's longest row ends; here
  finished rows leave the batch (when a quarter of it has finished, so that the cache is
  copied a few times a batch, not once per row);
- its sampler draws one exponential per vocabulary entry per row (`torch.multinomial`),
  60 ms a step for 64 rows of a 49k vocabulary; here one uniform per row, placed on the
  cumulative distribution (the same distribution, other draws).

Samples are therefore not those of `generator=hf` for a seed, though drawn from the same
distribution; greedy decoding picks the same argmax (up to rounding where two logits tie).
Stop strings are looked for every STOP_EVERY steps in the decoded text, and the completion is
cut at the first one as `hf` cuts it.
"""

from __future__ import annotations

from typing import Sequence

import torch

from irpo.generation.base import encode_prompts, truncate_at_stop
from irpo.generation.hf import HFGenerator
from irpo.generation.kv_cache import generate_kwargs as cache_kwargs
from irpo.run.progress import Progress

DROP_SHARE = 0.25  # finished rows leave the batch once they are this share of it
STOP_EVERY = 8  # steps between looks for a stop string in the rows' text


class DecodeGenerator(HFGenerator):
    @torch.inference_mode()
    def _generate(self, prompts: Sequence[str], n: int, sampling: dict, desc: str) -> list[str]:
        if self.model is None:
            raise RuntimeError("DecodeGenerator is used outside its `with` block")
        ids = encode_prompts(self.tokenizer, prompts)
        temperature = sampling["temperature"] if sampling.get("do_sample") else None
        draws = torch.Generator().manual_seed(torch.initial_seed())  # HFGenerator.sample seeded torch
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        per_batch = max(1, self.batch_size // n)
        out: list[list[str]] = [[] for _ in ids]
        progress = Progress(len(ids), desc)
        for start in range(0, len(order), per_batch):
            batch = order[start : start + per_batch]
            rows = self._decode([ids[i] for i in batch], n, temperature, draws)
            progress.update(len(batch), sum(map(len, rows)))
            texts = self.tokenizer.batch_decode(rows, skip_special_tokens=True)
            for j, i in enumerate(batch):
                out[i] = [truncate_at_stop(t, self.decoding.stop) for t in texts[j * n : (j + 1) * n]]
        progress.close()
        self.generated_tokens += progress.tokens
        return [c for group in out for c in group]

    def _decode(
        self, prompts: list[list[int]], n: int, temperature: float | None, draws: torch.Generator
    ) -> list[list[int]]:
        """The completions' token ids (each with its end of turn, when it ended), n rows per
        prompt in prompt order."""
        pad, eos = self.tokenizer.pad_token_id, torch.tensor(self._eos_ids())
        width, most = max(map(len, prompts)), self.decoding.max_new_tokens
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs = cache_kwargs(self.model, width + most)
        cache = next(iter(kwargs.values()))
        logits = self.model(
            input_ids=input_ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            logits_to_keep=1,
            use_cache=True,
            **kwargs,
        ).logits[:, -1]
        # each prompt's keys and values, copied to its n rows
        cache.batch_repeat_interleave(n)
        logits, mask = logits.repeat_interleave(n, 0), mask.repeat_interleave(n, 0).to(self.device)
        position = positions[:, -1].repeat_interleave(n).to(self.device) + 1
        live = torch.arange(len(prompts) * n)  # the row each live batch entry writes
        made: list[list[int]] = [[] for _ in range(len(prompts) * n)]
        finished = torch.zeros(len(live), dtype=torch.bool)
        for step in range(most):
            token = _pick(logits, temperature, self.decoding.top_p, draws).cpu()
            for row, t, done in zip(live.tolist(), token.tolist(), finished.tolist()):
                if not done:
                    made[row].append(t)
            finished |= torch.isin(token, eos)
            if self.decoding.stop and step % STOP_EVERY == STOP_EVERY - 1:
                finished |= self._stopped(made, live)
            if step == most - 1 or bool(finished.all()):
                break
            if finished.sum() >= DROP_SHARE * len(live):
                keep = (~finished).nonzero().squeeze(1)
                cache.batch_select_indices(keep.to(self.device))
                live, token, finished, mask, position = (
                    live[keep],
                    token[keep],
                    finished[keep],
                    mask[keep],
                    position[keep],
                )
            mask = torch.cat([mask, mask.new_ones(len(live), 1)], 1)
            logits = self.model(
                input_ids=token[:, None].to(self.device),
                attention_mask=mask,
                position_ids=position[:, None],
                use_cache=True,
                **kwargs,
            ).logits[:, -1]
            position = position + 1
        return made

    def _stopped(self, made: list[list[int]], live: torch.Tensor) -> torch.Tensor:
        texts = self.tokenizer.batch_decode([made[row] for row in live.tolist()], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.decoding.stop) for t in texts])


def _pick(logits: torch.Tensor, temperature: float | None, top_p: float, draws: torch.Generator) -> torch.Tensor:
    """Each row's next token: the argmax without a temperature, else a draw from
    softmax(logits / temperature) restricted to its top-p nucleus, by inverse CDF."""
    if temperature is None or temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, -1)
    index = None
    if top_p < 1:
        probs, index = probs.sort(-1, descending=True)
        # the smallest prefix whose mass reaches top_p (its first token always kept)
        probs = probs.masked_fill(probs.cumsum(-1) - probs >= top_p, 0.0)
    cdf = probs.cumsum(-1)
    u = torch.rand(len(cdf), 1, generator=draws, device="cpu").to(cdf.device) * cdf[:, -1:]
    picked = torch.searchsorted(cdf, u).squeeze(1).clamp_(max=cdf.shape[-1] - 1)
    return picked if index is None else index.gather(1, picked[:, None]).squeeze(1)
