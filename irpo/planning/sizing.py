"""Memory and cost arithmetic of a run, pure: what each GPU holds while training and while
generating, and what an iteration costs in FLOPs. No config, no torch; `irpo/planning/plan.py` maps a
config onto these functions and prints them. Sizes are bytes; GiB = 2**30.

Training memory per GPU = model states + compute copies + activations + reference:

- Model states of full fine-tuning with AdamW, as irpo/training/precision.py holds them:
  * mixed precision (bf16-mixed, 16-mixed): float32 weights 4, float32 gradients 4, Adam m + v
    8 bytes/param; 32-true the same; bf16-true 2 + 2 + 4 (no master copy).
  * auto, ddp: every rank holds all of them, plus under mixed precision the bf16 copy of every
    weight autocast makes for its matmul, kept for backward (2 bytes/param): 18 in all.
  * fsdp: the float32 states sharded over the N ranks, 16·P/N, plus one FSDP unit (a decoder
    layer, or the root's embeddings + head if larger) gathered unsharded: under mixed
    precision its bf16 weights 2, bf16 gradient 2 and the float32 buffer the gradient is
    reduced in 4 (MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=float32)); otherwise
    weights and gradient in the compute dtype. cpu_offload keeps the sharded states on the
    host (16·P/N per rank there) and only the gathered unit on the GPU.
  * deepspeed_zero3: DeepSpeed's own rule, `estimate_zero3_model_states_mem_needs` in
    deepspeed/runtime/zero/stage3.py (zero_init, additional_buffer_factor 1.5):
    without offload 4·L + 18·P/N per GPU (host 4·L·gpus_per_node·1.5); with the optimizer
    offloaded 4·L + 2·P/N per GPU (host 16·P/nodes·1.5 per node); with parameters offloaded
    too 4·L per GPU (host 18·P/nodes·1.5). L is the largest single module's own parameters
    (for a Llama, the embedding or the head, vocab·hidden), not a decoder layer.
  The two sharded rules differ (18 vs 16 bytes/param, largest module vs decoder layer), so they
  can need different GPU counts: a plan uses the rule of its own strategy and names it.
- LoRA (r > 0): the frozen base in the model dtype (2 bytes/param in bf16, sharded like the
  policy), the adapters' states as above (PEFT keeps them in float32); a live reference is
  the base with the adapters disabled, so it costs nothing.
- Reference: precomputed, nothing during training (its log-probs are computed before, with
  less memory than training); live, another copy in the training dtype, sharded like the policy.
- Activations per rank of a micro-batch of `tokens` (bounded by trainer.micro_batch_tokens, or
  one pair alone if longer; without it micro_batch_size pairs at max_length, the worst case),
  after Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large Transformer
  Models", Sec. 4.1: s·b·h·(34 + 5·a·s/h) bytes per GPT layer with 16-bit activations), adapted
  to a Llama decoder layer with c-byte activations, SDPA/flash attention (no s² scores kept),
  no dropout, GQA and SwiGLU:
      attention  c·(2h + 2q + 2kv)  norm input, q/k/v input, q + k, v (kv each), output input (q)
      MLP        c·(2h + 4i)        norm input, gate/up input, gate, up, silu(gate), silu·up
  i.e. c/2·(8h + 4q + 4kv + 8i) bytes per token per layer (q = heads·head_dim, h unless the
  model sets head_dim itself, as Qwen3 does; kv = kv_heads·head_dim; i the MLP width).
  With activation checkpointing only each layer's input is kept (c·h per token per layer) and
  one layer is recomputed at a time. The LM head keeps its input (c·h per token) and computes
  its logits in chunks of LOGIT_CHUNK_ELEMENTS (irpo/training/scoring.py), recomputed in backward: at
  most a chunk's c-byte logits, their float32 copy and its float32 gradient exist at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Iterable

GiB = 2**30

# Logits the LM head computes at once in training and scoring (irpo/training/scoring.py): 2**26 float32
# values are 256 MiB, 441 positions at a 151,936-token vocabulary.
LOGIT_CHUNK_ELEMENTS = 2**26

# Dense bf16 tensor-core peaks (the datasheets print twice these, "with sparsity"):
# NVIDIA A100 datasheet (SXM): 312 TFLOP/s; NVIDIA H100 datasheet (SXM5): 989 TFLOP/s;
# NVIDIA H200 datasheet: 989 TFLOP/s (the H100's compute with more, faster memory).
PEAK_TFLOPS = {"a100": 312.0, "h100": 989.0, "h200": 989.0}


@dataclass(frozen=True)
class Arch:
    """A Llama-style decoder: the numbers of its config.json. head_dim 0 is hidden / heads,
    what Llama and Qwen2 imply; Qwen3 sets its own (128 at every size) and normalizes q and k
    per head (qk_norm)."""

    params: int
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    head_dim: int = 0
    qk_norm: bool = False

    def __post_init__(self):
        if not self.head_dim:
            object.__setattr__(self, "head_dim", self.hidden // self.heads)

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    @property
    def layer_params(self) -> int:
        """One decoder layer: q (h x q), o (q x h), k, v (h x kv), gate, up, down (h x i), two
        norms, and the q and k norms (head_dim each) where the model has them."""
        h = self.hidden
        qk_norms = 2 * self.head_dim if self.qk_norm else 0
        return 2 * h * self.q_dim + 2 * h * self.kv_dim + 3 * h * self.intermediate + 2 * h + qk_norms

    @property
    def fsdp_unit_params(self) -> int:
        """The largest FSDP unit: a decoder layer, or the root (embeddings, final norm, head)."""
        return max(self.layer_params, self.params - self.layers * self.layer_params)

    @property
    def largest_module_params(self) -> int:
        """DeepSpeed's "largest layer": the most parameters one module holds itself."""
        return max(self.vocab * self.hidden, self.hidden * self.intermediate, self.hidden * self.q_dim)


def count_params(shape: Arch, tied: bool, qkv_bias: bool) -> int:
    """Parameters of a Llama/Qwen decoder of this shape (its `params` is not read): Qwen2 has
    q, k, v biases, small models tie the LM head to the embeddings."""
    per_layer = shape.layer_params + (shape.q_dim + 2 * shape.kv_dim if qkv_bias else 0)
    return shape.layers * per_layer + shape.vocab * shape.hidden * (1 if tied else 2) + shape.hidden


# model_type of the families whose attention normalizes q and k per head (RMSNorm over head_dim)
QK_NORM_TYPES = ("qwen3", "qwen3_moe", "olmo2", "gemma3_text")


def arch_from_hf_config(config: dict) -> Arch:
    """The Arch of a transformers config.json (Llama, Qwen2, Qwen3 and their kin)."""
    shape = Arch(
        params=0,
        layers=config["num_hidden_layers"],
        hidden=config["hidden_size"],
        intermediate=config["intermediate_size"],
        heads=config["num_attention_heads"],
        kv_heads=config.get("num_key_value_heads") or config["num_attention_heads"],
        vocab=config["vocab_size"],
        head_dim=config.get("head_dim") or 0,
        qk_norm=config.get("model_type") in QK_NORM_TYPES,
    )
    qkv_bias = bool(config.get("attention_bias", config.get("model_type") == "qwen2"))
    return replace(
        shape, params=count_params(shape, tied=bool(config.get("tie_word_embeddings", False)), qkv_bias=qkv_bias)
    )


def state_bytes(precision: str) -> tuple[int, int, int]:
    """Bytes per trained parameter of (weights, gradients, AdamW states) under a Lightning
    precision: float32 master weights under mixed precision, no master copy under *-true."""
    if precision.startswith("64"):
        return 8, 8, 16
    if precision.startswith(("bf16", "16")) and not precision.endswith("-mixed"):
        return 2, 2, 4
    return 4, 4, 8


def compute_bytes(precision: str) -> int:
    """Bytes of an activation (and of a gathered weight) under a Lightning precision."""
    return 8 if precision.startswith("64") else 4 if precision.startswith("32") else 2


def autocast_copy_bytes(precision: str) -> int:
    """Bytes per parameter of the half copy autocast makes of a float32 weight for its matmul."""
    return 2 if precision.endswith("-mixed") else 0


def gathered_unit_bytes(precision: str) -> int:
    """Bytes per parameter of the FSDP unit gathered unsharded: its weights and gradient in the
    compute dtype, and under mixed precision the float32 buffer its gradient is reduced in."""
    c = compute_bytes(precision)
    return 2 * c + (4 if precision.endswith("-mixed") else 0)


LORA_SHAPES = {  # (in, out) of each projection a LoRA adapter can target, as functions of the Arch
    "q_proj": lambda a: (a.hidden, a.q_dim),
    "k_proj": lambda a: (a.hidden, a.kv_dim),
    "v_proj": lambda a: (a.hidden, a.kv_dim),
    "o_proj": lambda a: (a.q_dim, a.hidden),
    "gate_proj": lambda a: (a.hidden, a.intermediate),
    "up_proj": lambda a: (a.hidden, a.intermediate),
    "down_proj": lambda a: (a.intermediate, a.hidden),
}


def lora_params(arch: Arch, r: int, targets: tuple[str, ...]) -> int:
    """A (r x in) + B (out x r) per targeted projection per layer; unknown names count nothing."""
    return arch.layers * sum(r * sum(LORA_SHAPES[t](arch)) for t in targets if t in LORA_SHAPES)


def activation_bytes(arch: Arch, tokens: int, c: int, checkpointing: bool) -> int:
    """Activations kept for backward by one rank's forward over `tokens`, and the LM head's
    chunk of logits (module docstring)."""
    h, layer = arch.hidden, c * (8 * arch.hidden + 4 * arch.q_dim + 4 * arch.kv_dim + 8 * arch.intermediate) // 2
    kept = arch.layers * c * h + layer if checkpointing else arch.layers * layer
    logits = min(tokens * arch.vocab, max(arch.vocab, LOGIT_CHUNK_ELEMENTS)) * (c + 8)
    return tokens * (kept + c * h) + logits


def max_tokens(arch: Arch, t: "Training", usable: int) -> int:
    """The most tokens a micro-batch may hold for t's training to fit `usable` bytes (0: none)."""
    fixed = training_memory(arch, replace(t, tokens=0)).total
    logits = max(arch.vocab, LOGIT_CHUNK_ELEMENTS) * (compute_bytes(t.precision) + 8)
    per_token = activation_bytes(arch, 1, compute_bytes(t.precision), t.checkpointing) - min(
        arch.vocab, LOGIT_CHUNK_ELEMENTS
    ) * (compute_bytes(t.precision) + 8)
    return max(0, (usable - fixed - logits) // per_token)


@dataclass(frozen=True)
class Training:
    """How M_θ is trained: what the memory of one rank depends on."""

    trainer: str  # the trainer's name (trainer.strategy), for the rule's words
    sharded: bool  # weights, gradients and optimizer states split over the ranks
    deepspeed: bool  # DeepSpeed ZeRO-3's memory model (its own estimate, the model dtype beside master partitions)
    gpus_per_node: int
    nodes: int
    precision: str
    weight_bytes: int  # of the model dtype (the frozen LoRA base, a live reference)
    tokens: int  # per rank per forward: what a micro-batch holds at most (irpo/planning/capacity.py, micro_tokens)
    checkpointing: bool
    cpu_offload: bool
    live_reference: bool
    lora: int  # adapter parameters (0: full fine-tuning)

    @property
    def world(self) -> int:
        return self.gpus_per_node * self.nodes


@dataclass(frozen=True)
class Memory:
    """Bytes one rank holds at its peak, by kind; `host` is what it keeps in CPU memory instead."""

    weights: int
    gradients: int
    optimizer: int
    gathered: int
    activations: int
    reference: int
    host: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.gathered + self.activations + self.reference


def zero3_model_states(
    params: int, largest: int, gpus_per_node: int, nodes: int, offload_optimizer: bool, offload_params: bool = False
) -> tuple[int, int]:
    """(host bytes per node, GPU bytes per GPU) of DeepSpeed's
    `estimate_zero3_model_states_mem_needs(..., zero_init=True, additional_buffer_factor=1.5)`."""
    gpus, largest_memory = gpus_per_node * nodes, 4 * largest
    if offload_optimizer and offload_params:
        return int(params * 18 / nodes * 1.5), largest_memory
    if offload_optimizer:
        return int(params * 16 / nodes * 1.5), largest_memory + int(2 * params / gpus)
    return int(largest * 4 * gpus_per_node * 1.5), largest_memory + int(18 * params / gpus)


def training_memory(arch: Arch, t: Training) -> Memory:
    """Per-rank memory of training under t's strategy (module docstring)."""
    n = t.world if t.sharded else 1
    c = compute_bytes(t.precision)
    w, g, o = state_bytes(t.precision)
    p = arch.params
    if t.lora:
        trained, frozen = t.lora, p * t.weight_bytes
    else:
        trained, frozen = p, 0
    activations = activation_bytes(arch, t.tokens, c, t.checkpointing)
    reference = 0
    if t.live_reference and not t.lora:
        # held as the policy is: float32 under mixed precision (DeepSpeed: the model dtype)
        held = t.weight_bytes if t.deepspeed else w
        reference = held * (p // n + (arch.fsdp_unit_params if t.sharded else 0))
    if t.deepspeed and not t.lora:
        host, gpu = zero3_model_states(p, arch.largest_module_params, t.gpus_per_node, t.nodes, t.cpu_offload)
        gathered = 4 * arch.largest_module_params
        if t.cpu_offload:
            return Memory(gpu - gathered, 0, 0, gathered, activations, reference, host // t.gpus_per_node)
        half = 2 * p // n  # bf16 weights, bf16 gradients; the rest of the 18 bytes is optimizer state
        return Memory(half, half, gpu - gathered - 2 * half, gathered, activations, reference, 0)
    # compute copies: the FSDP unit gathered unsharded, or autocast's half copy of each weight
    # (a LoRA unit gathers its frozen weights alone: no gradient of them to reduce)
    unit = compute_bytes(t.precision) if t.lora else gathered_unit_bytes(t.precision)
    gathered = unit * arch.fsdp_unit_params if t.sharded else autocast_copy_bytes(t.precision) * trained
    weights, gradients, optimizer = (frozen + w * trained) // n, g * trained // n, o * trained // n
    if t.cpu_offload and t.sharded:
        return Memory(0, 0, 0, gathered, activations, reference, weights + gradients + optimizer)
    return Memory(weights, gradients, optimizer, gathered, activations, reference, 0)


def checkpoint_bytes(arch: Arch, t: Training) -> int:
    """Bytes of one resumable training checkpoint (iter_<t>/train/last.ckpt, all ranks' shards
    together): the policy's weights as training holds them (a LoRA base in the model dtype)
    and their AdamW states, no gradients; DeepSpeed's bf16 copy of each trained weight beside
    its float32 master; a live reference's weights, held as training holds them."""
    w, _, o = state_bytes(t.precision)
    trained = t.lora or arch.params
    frozen = arch.params * t.weight_bytes if t.lora else 0
    zero3_copy = 2 * trained if t.deepspeed else 0
    reference = arch.params * (t.weight_bytes if t.deepspeed else w) if t.live_reference and not t.lora else 0
    return frozen + (w + o) * trained + zero3_copy + reference


def token_table_bytes(prompts: int, samples: int, completion_tokens: int) -> int:
    """Bytes of a token-level method's per-token log-prob table of one iteration (in
    iter_<t>/reference_logps.safetensors): float32 per scored token (the completion and its
    EOS) of every sample, an int64 offset per sample. At the paper's GSM8K scale (7,473
    prompts x N = 30 x ~300 tokens) about 270 MB."""
    items = prompts * samples
    return items * (completion_tokens + 1) * 4 + (items + 1) * 8


def rule(t: Training) -> str:
    """The memory model t's numbers come from, in words."""
    w, g, o = state_bytes(t.precision)
    states = f"{w + g + o} B/param ({t.precision}: weights {w}, gradients {g}, AdamW {o})"
    if t.lora:
        states = f"frozen base {t.weight_bytes} B/param + LoRA adapters {w + g + o} B/param"
    elif not t.sharded and autocast_copy_bytes(t.precision):
        states += f" + {autocast_copy_bytes(t.precision)} B/param of autocast's bf16 copies"
    if t.deepspeed and not t.lora:
        offload = (
            "4 x largest layer + 2 B/param / N, optimizer on the host"
            if t.cpu_offload
            else "4 x largest layer + 18 B/param / N"
        )
        return f"{t.trainer}: DeepSpeed's estimate_zero3_model_states_mem_needs, {offload}"
    if t.sharded:
        where = "on the host" if t.cpu_offload else f"sharded over {t.world} ranks"
        unit = (
            "bf16 weights 2 + gradient 2 + float32 reduce buffer 4"
            if t.precision.endswith("-mixed")
            else "weights + gradient"
        )
        return f"{t.trainer}: {states} {where}, + 1 unit gathered unsharded ({unit} B/param)"
    return f"{t.trainer}: {states} on every rank, not sharded"


def fits(arch: Arch, t: Training, usable: int) -> bool:
    """Whether one rank's training memory fits `usable` bytes (what is offloaded to the host is not counted)."""
    return training_memory(arch, t).total <= usable


def min_nodes(arch: Arch, t: Training, usable: int, counts: Iterable[int] = range(1, 513)) -> int | None:
    """The fewest nodes of t.gpus_per_node GPUs, among `counts`, on which t fits (None: none)."""
    return next((n for n in counts if fits(arch, replace(t, nodes=n), usable)), None)


def min_gpus(arch: Arch, t: Training, usable: int) -> int | None:
    """The fewest GPUs on which t fits, by memory alone (not asking whether the batch splits
    evenly over them); None when no count does: what sharding cannot shrink (a gathered unit,
    a micro-batch's activations) is over `usable` on its own."""
    if not t.sharded:
        return 1 if fits(arch, t, usable) else None
    floor = training_memory(arch, replace(t, gpus_per_node=1, nodes=1 << 40))
    if floor.total >= usable:
        return None
    n = 1
    while not fits(arch, replace(t, gpus_per_node=n, nodes=1), usable):
        n *= 2
    lo = n // 2 + 1
    while lo < n:  # the fewest in (n/2, n]
        mid = (lo + n) // 2
        lo, n = (lo, mid) if fits(arch, replace(t, gpus_per_node=mid, nodes=1), usable) else (mid + 1, n)
    return n


@dataclass(frozen=True)
class Generation:
    """Per-GPU memory of one generation engine; `sequences` is how many of `seq_tokens` tokens
    fit in the KV cache at once."""

    weights: int
    kv_per_token: int
    budget: int  # bytes the engine may use on the GPU
    sequences: int

    @property
    def fits_weights(self) -> bool:
        return self.weights < self.budget


def generation_memory(arch: Arch, weight_bytes: int, tp: int, seq_tokens: int, budget: int) -> Generation:
    """Weights / tensor-parallel size; a KV cache of 2 (K and V) x layers x kv_heads x head_dim x
    bytes per token, the KV heads split over the tp ranks (replicated when tp > kv_heads)."""
    weights = arch.params * weight_bytes // tp
    kv = 2 * arch.layers * math.ceil(arch.kv_heads / tp) * arch.head_dim * weight_bytes
    return Generation(weights, kv, budget, max(0, (budget - weights) // (kv * seq_tokens)))


def vllm_tp(arch: Arch, weight_bytes: int, usable: int) -> int:
    """The smallest power-of-two tensor-parallel size whose weight shard leaves at least half of
    each GPU to the KV cache (room for hundreds of sequences in flight, not just the N of one prompt)."""
    tp = 1
    while arch.params * weight_bytes // tp > usable // 2 and tp < 64:
        tp *= 2
    return tp


@dataclass(frozen=True)
class Cost:
    """One iteration's work in tokens and FLOPs."""

    generated: int  # completion tokens sampled (train) and decoded (evaluation)
    prefilled: int  # prompt tokens, once per prompt (vLLM's prefix cache shares them across samples)
    trained: int  # tokens through the policy's forward and backward
    referenced: int  # tokens through the reference's forward
    generate_flops: float
    train_flops: float


@dataclass(frozen=True)
class Work:
    """What an iteration computes, in sequences and items of typical lengths."""

    gen_sequences: int  # completions generated (samples, evaluation, selection)
    prompts: int  # prompts prefilled
    prompt_tokens: int
    completion_tokens: int
    trained_items: int  # pairs or sequences trained on
    reference_items: int  # items the reference scores
    sequences_per_item: int  # 2 for a pair


def iteration_cost(params: int, w: Work, checkpointing: bool, lora: bool) -> Cost:
    """FLOPs of an iteration: 2·P per generated or prefilled token; per trained token 6·P
    (forward 2·P, backward 4·P; 4·P with LoRA, which computes no weight gradients of the base)
    plus 2·P when activation checkpointing recomputes the forward; 2·P per reference token."""
    generated = w.gen_sequences * w.completion_tokens
    prefilled = w.prompts * w.prompt_tokens
    per_item = w.sequences_per_item * (w.prompt_tokens + w.completion_tokens)
    trained, referenced = w.trained_items * per_item, w.reference_items * per_item
    per_trained = (4 if lora else 6) + (2 if checkpointing else 0)
    return Cost(
        generated,
        prefilled,
        trained,
        referenced,
        2.0 * params * (generated + prefilled),
        float(params) * (per_trained * trained + 2 * referenced),
    )


def gpu_hours(flops: float, peak_tflops: float, utilization: float) -> float:
    return flops / (peak_tflops * 1e12 * utilization) / 3600
