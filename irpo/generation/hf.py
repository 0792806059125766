"""The `hf` generator: batched `transformers` generate on CPU or one GPU."""

from __future__ import annotations

import gc
from typing import Sequence

import torch

from irpo.generation.base import Decoding, encode_prompts, truncate_at_stop
from irpo.generation.kv_cache import generate_kwargs as cache_kwargs
from irpo.generation.schemas import HFGeneratorConfig
from irpo.models.load import load_policy, load_tokenizer
from irpo.run.progress import Progress


class HFGenerator:
    def __init__(
        self,
        model_dir: str,
        decoding: Decoding,
        batch_size: int = HFGeneratorConfig.batch_size,
        dtype: str = "float32",
        device: str = HFGeneratorConfig.device,
        trust_remote_code: bool = False,
    ) -> None:
        self.model_dir, self.decoding = model_dir, decoding
        self.batch_size, self.dtype, self.trust_remote_code = batch_size, dtype, trust_remote_code
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
        self.model = self.tokenizer = None
        self.generated_tokens = 0  # over this generator's life: the stages' tokens/s

    def __enter__(self) -> "HFGenerator":
        self.tokenizer = load_tokenizer(self.model_dir, self.trust_remote_code, self.decoding.chat_template)
        self.model = load_policy(self.model_dir, self.dtype, self.trust_remote_code).to(self.device).eval()
        return self

    def __exit__(self, *exc: object) -> None:
        self.model = self.tokenizer = None
        # Dropping the references frees the model (it holds no reference cycle); a full
        # collection, 0.25 s in a loaded process, is paid only where the model sat on a GPU,
        # whose caching allocator must get the memory back before training loads the next one.
        if torch.device(self.device).type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()

    def sample(self, prompts: Sequence[str], n: int, temperature: float, seed: int) -> list[list[str]]:
        torch.manual_seed(seed)
        # top_k=0 and no repetition penalty: transformers would otherwise apply its own
        # top_k=50 (or the model's generation_config), and samples would not be drawn from
        # the distribution the config names, nor match the vLLM backend's.
        sampling = dict(
            do_sample=True, temperature=temperature, top_p=self.decoding.top_p, top_k=0, repetition_penalty=1.0
        )
        flat = self._generate(prompts, n, sampling, f"sampling {n}/prompt")
        return [flat[i * n : (i + 1) * n] for i in range(len(prompts))]

    def greedy(self, prompts: Sequence[str]) -> list[str]:
        return self._generate(prompts, 1, dict(do_sample=False), "greedy")

    @torch.inference_mode()
    def _generate(self, prompts: Sequence[str], n: int, sampling: dict, desc: str) -> list[str]:
        if self.model is None:
            raise RuntimeError("HFGenerator is used outside its `with` block")
        tok = self.tokenizer
        pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
        ids = encode_prompts(tok, prompts)
        # Long prompts together waste less padding; results go back to prompt order.
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        per_batch = max(1, self.batch_size // n)
        out: list[list[str] | None] = [None] * len(ids)
        progress = Progress(len(ids), desc)
        for start in range(0, len(order), per_batch):
            batch = [ids[i] for i in order[start : start + per_batch]]
            width = max(map(len, batch))
            input_ids = torch.tensor([[pad] * (width - len(x)) + x for x in batch], device=self.device)
            mask = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in batch], device=self.device)
            generated = self.model.generate(
                input_ids=input_ids,
                attention_mask=mask,
                max_new_tokens=self.decoding.max_new_tokens,
                num_return_sequences=n,
                pad_token_id=pad,
                eos_token_id=self._eos_ids(),
                stop_strings=list(self.decoding.stop) or None,
                tokenizer=tok if self.decoding.stop else None,
                **cache_kwargs(self.model, width + self.decoding.max_new_tokens),
                **sampling,
            )
            new = generated[:, width:]
            # tokens up to and including each row's first EOS or pad (what was generated)
            ended = (new == pad) | torch.isin(new, torch.tensor(self._eos_ids(), device=new.device))
            lengths = torch.where(ended.any(1), ended.int().argmax(1) + 1, torch.full_like(new[:, 0], new.shape[1]))
            progress.update(len(batch), int(lengths.sum()))
            texts = tok.batch_decode(new, skip_special_tokens=True)
            for j, i in enumerate(order[start : start + per_batch]):
                out[i] = [truncate_at_stop(t, self.decoding.stop) for t in texts[j * n : (j + 1) * n]]
        progress.close()
        self.generated_tokens += progress.tokens
        return [c for group in out for c in group]

    def _eos_ids(self) -> list[int]:
        """The model's generation_config EOS ids (some models have several) and the
        tokenizer's end of turn, which training appends (irpo.models.load.load_tokenizer)."""
        eos = self.model.generation_config.eos_token_id
        eos = [eos] if isinstance(eos, int) else list(eos or [])
        return eos + [i for i in (self.tokenizer.eos_token_id,) if i is not None and i not in eos]
