"""Prompts reach the model through the tokenizer's chat template when it has one."""

from irpo.generation.base import encode_prompts, render_prompt
from irpo.models.tiny_tokenizer import build_tokenizer

TEMPLATE = "{{ bos_token }}{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}[assistant]"


def test_raw_text_without_a_template():
    tok = build_tokenizer()
    assert render_prompt(tok, "Q: 1+1\nA:") == "Q: 1+1\nA:"
    assert render_prompt(tok, [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]) == "a\n\nb"


def test_chat_template_is_applied_and_bos_not_doubled():
    tok = build_tokenizer()
    tok.chat_template = TEMPLATE
    text = render_prompt(tok, "Q: 1+1")
    assert text == "<s>[user] Q: 1+1\n[assistant]"
    assert render_prompt(tok, "Q: 1+1", use_chat_template=False) == "Q: 1+1"
    ids = encode_prompts(tok, [text])[0]
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert encode_prompts(tok, ["Q"])[0][0] == tok.bos_token_id  # raw text gets its BOS added
