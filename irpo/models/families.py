"""Small random-weight checkpoints of the model families irpo's presets name, built offline.

Each family's architecture comes from its transformers configuration class with shrunk
sizes (what makes the family itself kept: Llama-3's grouped KV heads and rope scaling,
Qwen2's q/k/v biases and tied embeddings, Qwen3's q/k norms and explicit head_dim); its
tokenizer is a byte-level BPE trained here on the caller's text, with the family's special
tokens in the roles its instruct tokenizer gives them; its chat template is written to the
family's documented format. What tests and the GPU check run the whole loop on, no hub.

Templates (the parts irpo depends on: turn markers, end of turn, generation prompt, the
variables they read):
- Llama-2-chat: `<s>[INST] {user} [/INST] {assistant} </s>`
  (https://huggingface.co/blog/llama2#how-to-prompt-llama-2)
- Llama-3.x: header ids, `<|eot_id|>` after each turn, a system turn with the knowledge
  cutoff and `Today Date:` from `date_string`, or today's date where it is not given, as
  Llama-3.2's template does (https://www.llama.com/docs/model-cards-and-prompt-formats/llama3_2/)
- Qwen2 / Qwen2.5: ChatML, `<|im_start|>{role}\\n{content}<|im_end|>\\n`, with a default system
  turn (https://qwen.readthedocs.io/en/latest/getting_started/concepts.html#control-tokens-chat-template)
- Qwen3: ChatML; `enable_thinking=false` writes an empty `<think>\\n\\n</think>\\n\\n` after the
  generation prompt (https://huggingface.co/Qwen/Qwen3-8B#switching-between-thinking-and-non-thinking-mode)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

LLAMA2_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{{ bos_token + '[INST] ' + message['content'] | trim + ' [/INST]' }}"
    "{%- elif message['role'] == 'assistant' %}{{ ' ' + message['content'] | trim + ' ' + eos_token }}"
    "{%- endif %}{%- endfor %}"
)

LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}{%- set date_string = strftime_now('%d %b %Y') %}{%- endif %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\nToday Date: ' + date_string + '\\n\\n<|eot_id|>' }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

QWEN2_TEMPLATE = (
    "{%- if messages[0]['role'] != 'system' %}{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{%- endif %}"
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

QWEN3_TEMPLATE = (
    "{%- for message in messages %}{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)


@dataclass(frozen=True)
class Shape:
    """The sizes a family is shrunk to; head_dim None: hidden / heads."""

    hidden: int = 64
    layers: int = 2
    intermediate: int = 128
    heads: int = 4
    kv_heads: int = 2
    head_dim: int | None = None
    vocab: int = 512


@dataclass(frozen=True)
class Family:
    config_class: str  # in transformers
    specials: tuple[str, ...]  # every special token, in id order after the BPE merges' bytes
    bos: str | None
    eos: str  # the instruct tokenizer's eos_token: its end of turn
    pad: str | None
    stops: tuple[str, ...]  # generation_config.eos_token_id
    template: str | None
    # what the family fixes whatever its size
    config: dict = field(default_factory=dict)


FAMILIES = {
    "llama2": Family("LlamaConfig", ("<unk>", "<s>", "</s>"), "<s>", "</s>", None, ("</s>",), LLAMA2_TEMPLATE),
    "llama3": Family(
        "LlamaConfig",
        ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        "<|begin_of_text|>",
        "<|eot_id|>",
        None,
        ("<|end_of_text|>", "<|eot_id|>"),
        LLAMA3_TEMPLATE,
        dict(
            rope_scaling=dict(
                rope_type="llama3",
                factor=32.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=8192,
            ),
            rope_theta=500000.0,
            max_position_embeddings=131072,
        ),
    ),
    "qwen2": Family(
        "Qwen2Config",
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        None,
        "<|im_end|>",
        "<|endoftext|>",
        ("<|im_end|>", "<|endoftext|>"),
        QWEN2_TEMPLATE,
        dict(tie_word_embeddings=True, max_position_embeddings=4096),
    ),
    "qwen3": Family(
        "Qwen3Config",
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"),
        None,
        "<|im_end|>",
        "<|endoftext|>",
        ("<|im_end|>", "<|endoftext|>"),
        QWEN3_TEMPLATE,
        dict(tie_word_embeddings=True, max_position_embeddings=4096),
    ),
}
# Qwen3's <think> and </think> are ordinary added tokens: decoded with the text, not skipped.
NOT_SPECIAL = ("<think>", "</think>")


def build_tokenizer(family: str, corpus: Iterable[str], vocab: int):
    """A byte-level BPE of `vocab` tokens trained on `corpus`, with the family's specials."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    f = FAMILIES[family]
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=[AddedToken(s, special=s not in NOT_SPECIAL) for s in f.specials],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(corpus, trainer)
    if f.bos is not None:  # Llama tokenizers add BOS to plain text; Qwen's add nothing
        core.post_processor = processors.TemplateProcessing(
            single=f"{f.bos} $A", special_tokens=[(f.bos, core.token_to_id(f.bos))]
        )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=f.bos,
        eos_token=f.eos,
        pad_token=f.pad,
        unk_token="<unk>" if "<unk>" in f.specials else None,
    )
    if f.template is not None:
        tok.chat_template = f.template
    return tok


def build(
    family: str, path: Path, corpus: Iterable[str], shape: Shape = Shape(), seed: int = 0, dtype: str = "float32"
) -> Path:
    """A random-weight checkpoint of `family` at `shape`, with its tokenizer and template."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig

    f = FAMILIES[family]
    tok = build_tokenizer(family, corpus, shape.vocab)
    ids = {s: tok.convert_tokens_to_ids(s) for s in f.specials}
    config = getattr(transformers, f.config_class)(
        vocab_size=len(tok),
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        initializer_range=0.02,
        bos_token_id=ids.get(f.bos),
        eos_token_id=ids[f.eos],
        pad_token_id=ids.get(f.pad),
        **({"head_dim": shape.head_dim} if shape.head_dim else {}),
        **f.config,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).to(getattr(torch, dtype))
    model.generation_config = GenerationConfig(
        bos_token_id=ids.get(f.bos), eos_token_id=[ids[s] for s in f.stops], pad_token_id=ids.get(f.pad)
    )
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
