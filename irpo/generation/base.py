"""The Generator interface: sampling and greedy decoding from one checkpoint directory.

Backends (`hf`, `vllm`) implement it; nothing else knows which one runs. A generator is a
context manager so that leaving the block gives its memory back before training starts.
Prompts arrive already rendered (chat template applied) and are encoded by
`encode_prompts`, the one encoding shared with training, so the tokens a completion was
sampled after are the tokens it is scored after.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Protocol, Sequence

from irpo.generation.schemas import GeneratorConfig
from irpo.tasks.base import Messages


@dataclass(frozen=True)
class Decoding:
    """What the task and the model fix about a completion, whichever backend draws it."""

    max_new_tokens: int
    stop: tuple[str, ...] = ()  # strings that end a completion (cut off, not kept)
    top_p: float = GeneratorConfig.top_p
    chat_template: bool = False  # the model's end of turn ends a completion (load_tokenizer)


class Generator(Protocol):
    generated_tokens: int  # completion tokens generated so far (a stage's tokens/s)

    def __enter__(self) -> "Generator": ...

    def __exit__(self, *exc: object) -> None: ...

    def sample(self, prompts: Sequence[str], n: int, temperature: float, seed: int) -> list[list[str]]:
        """n completions for each prompt, in prompt order."""
        ...

    def greedy(self, prompts: Sequence[str]) -> list[str]: ...


def render_prompt(
    tokenizer, prompt: str | Messages, use_chat_template: bool = True, template_kwargs: Mapping | None = None
) -> str:
    """A task's prompt as the text the model sees: chat messages through the tokenizer's
    template (Llama-2-chat and other chat models) with the model's template variables
    (`model.chat_template_kwargs`: Qwen3's enable_thinking, Llama-3's date_string), raw text
    as it is."""
    if isinstance(prompt, str):
        if use_chat_template and getattr(tokenizer, "chat_template", None):
            prompt = [{"role": "user", "content": prompt}]
        else:
            return prompt
    if not getattr(tokenizer, "chat_template", None):
        # A chat-style prompt for a base model: the turns, plainly joined.
        return "\n\n".join(m["content"] for m in prompt)
    return tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True, **(template_kwargs or {}))


def encode_prompts(tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of rendered prompts. A chat template already writes the BOS token into the
    text; adding it again would shift every position the model was tuned on."""
    bos = tokenizer.bos_token
    return [tokenizer(t, add_special_tokens=not (bos and t.startswith(bos)))["input_ids"] for t in texts]


def truncate_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut a completion before its first stop string. A stop string marks where the answer
    is over (e.g. a few-shot prompt's next "Question:"); it is not part of what the model
    is rewarded or trained on, and training appends EOS there instead."""
    cut = min((i for i in (text.find(s) for s in stop) if i != -1), default=len(text))
    return text[:cut]


class LazyGenerator:
    """Opens a generator on first use and closes it on leaving the block: a stage whose
    files already exist (a resumed run) never pays for loading a model or starting an engine."""

    def __init__(self, factory) -> None:
        self.factory, self.generator = factory, None

    def __enter__(self) -> "LazyGenerator":
        return self

    def __call__(self) -> Generator:
        if self.generator is None:
            self.generator = self.factory().__enter__()
        return self.generator

    @property
    def generated_tokens(self) -> int:
        return self.generator.generated_tokens if self.generator is not None else 0

    def __exit__(self, *exc: object) -> None:
        if self.generator is not None:
            self.generator.__exit__(*exc)
            self.generator = None
