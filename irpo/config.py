"""Typed configuration: dataclass schemas registered with Hydra's ConfigStore, and value checks.

Types are enforced by OmegaConf when Hydra composes (so `alpha=abc` fails at compose time);
values that types cannot express (`num_samples=0`) are checked by `validate` before any work.
Each default lives here once; `conf/*.yaml` only chooses among them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from irpo import methods
from irpo.errors import ConfigError
from irpo.generation.schemas import GENERATOR_SCHEMAS, GeneratorConfig
from irpo.run.distributed import launch_size
from irpo.tasks.schemas import TASK_SCHEMAS


@dataclass
class LoraConfig:
    """PEFT LoRA adapters on the policy; merged into M_{t+1} after each iteration's training."""

    r: int = 0  # adapter rank; 0 = full fine-tuning (the paper's)
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class ArchConfig:
    """What the planner needs to size a run without downloading anything (the Llama-2 hub
    repositories are gated); None: read from the checkpoint's config.json when it is local."""

    params: Optional[int] = None
    layers: Optional[int] = None
    hidden_size: Optional[int] = None
    intermediate_size: Optional[int] = None
    heads: Optional[int] = None
    kv_heads: Optional[int] = None
    vocab_size: Optional[int] = None
    head_dim: Optional[int] = None  # None: hidden_size / heads (Llama, Qwen2); Qwen3 sets 128
    qk_norm: Optional[bool] = None  # per-head RMSNorm of q and k (Qwen3)


@dataclass
class ModelConfig:
    path: str = MISSING  # a checkpoint directory or a hub id
    # A GGUF file in model.path's directory (as transformers' `gguf_file`): M_0, its tokenizer
    # and chat template come from it, converted once into <run dir>/m0/ (irpo/models/gguf.py).
    gguf_file: Optional[str] = None
    # What the checkpoint, the generators and the reference files are read in; a trainer with
    # mixed precision trains float32 master weights whatever this says (irpo/training/precision.py).
    dtype: str = "float32"
    save_dtype: Optional[str] = None  # M_{t+1}'s weights on disk; None: model.dtype
    # On a CPU trainer: "auto" computes in bfloat16 where the CPU has bf16 units (AMX-BF16 or
    # AVX512-BF16): generation in bf16, training bf16-mixed over float32 master weights; float32
    # elsewhere. The choice is made at a run's first launch and kept (irpo/training/precision.py).
    cpu_bf16: str = "never"
    lr: float = 1e-6
    max_length: int = 1024  # prompt + completion tokens; longer pairs are dropped, not cut
    chat_template: bool = True  # render prompts through the tokenizer's template when it has one
    # Variables the template reads (Qwen3: enable_thinking; Llama-3.x: date_string, which
    # otherwise puts today's date into every prompt).
    chat_template_kwargs: Dict[str, Any] = field(default_factory=dict)
    trust_remote_code: bool = False
    lora: LoraConfig = field(default_factory=LoraConfig)
    arch: ArchConfig = field(default_factory=ArchConfig)


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"  # auto (one process), ddp, fsdp, deepspeed_zero3
    precision: str = "32-true"
    activation_checkpointing: bool = False  # recompute each decoder layer's activations in backward
    cpu_offload: bool = False  # fsdp: parameters and optimizer states on the CPU; deepspeed_zero3: optimizer states
    gpu_memory_gb: Optional[float] = None  # per GPU, for the planner's fit check; None: detected (80 without a GPU)
    timeout_minutes: int = 720  # collectives between stages wait through hours of generation on other ranks
    # A rank whose heartbeat stopped (frozen, dead) or a launcher gone ends the launch after this (irpo.run.liveness)
    liveness_seconds: float = 300.0
    batch_size: int = 16  # pairs per optimizer step (the paper's 16)
    micro_batch_size: Optional[int] = None  # pairs per forward at most; None: a rank's whole share of a step
    # Packed tokens (prompt once, both completions) per forward at most, so activation and
    # logits memory is bounded whatever lengths the samples come out at; a longer pair goes
    # alone. None: no bound. The optimizer step still sees batch_size pairs.
    micro_batch_tokens: Optional[int] = None
    max_epochs: int = 1
    max_steps: int = -1
    warmup_steps: int = 0
    weight_decay: float = 0.0
    gradient_clip_val: Optional[float] = 1.0
    log_every_n_steps: int = 5
    checkpoint_every_n_steps: int = 50  # Lightning checkpoints in iter_<t>/train/ to resume from
    # and one at the first step's end after this many seconds since the last (rank 0's clock
    # decides for every rank); None: by steps only
    checkpoint_every_seconds: Optional[float] = None
    keep_checkpoints: bool = (
        False  # keep them once the iteration's M_{t+1} is saved and recorded (resuming no longer needs them)
    )
    progress_bar: bool = True  # Lightning's training bar, drawn only where stderr is a terminal
    # precomputed: reference log-probs of M_t computed once before training (no second model
    # in memory); live: a frozen copy of M_t scores each batch.
    reference: str = "precomputed"


@dataclass
class WandbConfig:
    enabled: bool = True
    mode: str = "offline"  # offline needs no key and no network; online, disabled
    project: str = "irpo"
    entity: Optional[str] = None
    group: Optional[str] = None  # None: the sweep directory's name in a multirun, none in a single run
    tags: list[str] = field(default_factory=list)  # besides task:<name>, model:<name>, method:<name>
    table_prompts: int = 4  # train prompts (and test problems) whose samples are logged as tables


@dataclass
class TensorBoardConfig:
    enabled: bool = False  # writes <run dir>/tensorboard; needs the `tensorboard` extra


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)
    tensorboard: TensorBoardConfig = field(default_factory=TensorBoardConfig)


@dataclass
class SelectionConfig:
    """Checkpoint selection on train prompts held out as a validation split, and a stop rule
    (the paper's GSM8K recipe, Sec. 3.1: the best of the checkpoints saved while training,
    picked on 1k held-out train prompts). Off while val_size is 0."""

    val_size: int = 0  # validation problems to pick M_{t+1} with
    # train: val_size train prompts held out, never trained on (the paper's GSM8K rule);
    # validation: drawn from the task's own validation split (ARC's dev set, which the paper
    # tunes on; arith's problems that neither the loop nor M_0's fine-tuning saw).
    val_from: str = "train"
    val_every_n_steps: int = 50  # a candidate every n optimizer steps; the last step is always one
    patience: Optional[int] = None  # stop after this many iterations without a better validation accuracy
    min_delta: float = 0.0  # a validation gain of at most this is no improvement


@dataclass
class EvalConfig:
    maj_k: int = 8  # samples per test problem for maj@k (0 turns it off)
    maj_temperature: float = 0.8  # the paper's maj@32 temperature


@dataclass
class PlannerConfig:
    """Assumptions of the memory and cost planner (irpo/planning/sizing.py, printed by plan=true); they
    change no stage."""

    gpu: str = "h100"  # whose dense bf16 peak prices GPU-hours: a100, h100, h200
    train_utilization: float = 0.4  # achieved / peak FLOP/s in training (FSDP on Llama-2-70B: 0.35-0.45 is usual)
    generate_utilization: float = 0.15  # in vLLM sampling: decoding reads every weight per step, far below peak
    prompt_tokens: Optional[int] = None  # mean prompt length; None: the task's typical (irpo/planning/plan.py)
    completion_tokens: Optional[int] = (
        None  # mean completion length; None: the task's typical, capped by max_new_tokens
    )


@dataclass
class IrpoConfig:
    # a task's node is typed by its schema where it has one (conf/task/<name>.yaml starts from
    # <name>_schema); a task of the user's own is checked by its constructor
    task: Any = MISSING
    model: ModelConfig = MISSING
    # typed by its backend's schema (conf/generator/<name>.yaml starts from <name>_schema); a
    # backend of the user's own by the schema its class names (irpo.generation.schemas.schema_of)
    generator: Any = MISSING
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    # A Method's fields (irpo/methods.py), typed by its class and checked by `validate`.
    method: Any = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    planner: PlannerConfig = field(default_factory=PlannerConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    alpha: float = 1.0  # weight of the winner NLL term (Eq. 1, v3); 0 is plain DPO
    beta: float = 0.1
    num_samples: int = 8  # N completions per train prompt
    pairs_per_prompt: int = 4  # K
    max_pairs: Optional[int] = None  # cap per iteration, drawn at random (paper footnote 4)
    gold_winner: bool = False  # add the gold CoT as a winner when no sample is correct (GSM8K)
    # Graded rewards: a loser's reward is below the winner's 1 by at least this; None: 0 (any
    # reward below 1), the binary split (None, not 0, so that runs recorded before it resume).
    pair_margin: Optional[float] = None
    iterations: int = 3  # T
    temperatures: list[float] = field(default_factory=lambda: [0.8])  # per iteration; last repeats
    seed: int = 0
    # torch threads for training, HF generation and the reference pass: a count; None: the
    # cores this process may run on, shared by a node's ranks; "adaptive": fewer when other
    # processes keep cores busy at start (irpo.run.threads). A resumed run keeps its first
    # launch's count unless given one.
    num_threads: Optional[str] = None
    shard_size: int = 256  # prompts per generation shard: the unit a killed generation resumes from
    dry_run: bool = False  # compose, load data, print a prompt and the plan; no weights
    plan: bool = False
    # auto: skip finished stages, refuse if the config changed under one; overwrite: redo
    # the first changed stage and everything after it.
    resume: str = "auto"


# What a stage's output depends on, in config keys (a key, or every key under a prefix ending
# in "."): the groups the stages' declarations (irpo.run.artifacts.Stage, each beside its
# code) are made of. A key no stage names is no stage's dependency, so a new key invalidates
# no finished run until a stage declares it; changing a declared key is refused on resume
# (resume=overwrite redoes the stage and what follows). Checkpoints and data are recorded by
# content (irpo/run/fingerprints.py), so a moved checkout or run directory still resumes.
# a model's outputs: the task (its prompts, answers, data) and how the checkpoint is read
READS_MODEL = (
    "task.",
    "model.path",
    "model.gguf_file",
    "model.dtype",
    "model.trust_remote_code",
    "model.chat_template",
    "model.chat_template_kwargs.",
)
# how a completion is decoded (not how fast: batch sizes, memory shares)
DECODES = (
    "generator._target_",
    "generator.top_p",
    "generator.max_new_tokens",
    "generator.dtype",
    "generator.trust_remote_code",
    "generator.tensor_parallel_size",
    "generator.max_model_len",
    "generator.enforce_eager",
)
# an iteration's samples of M_t, rewarded
SAMPLES = (*READS_MODEL, *DECODES, "seed", "num_samples", "shard_size", "selection.val_size", "selection.val_from")
# what a method trains on and how its items are labelled; its loss's own knobs are TRAINS'
ITEMS = (
    *SAMPLES,
    "method._target_",
    "method.name",
    "method.sample",
    "method.desirable_at",
    "pairs_per_prompt",
    "max_pairs",
    "gold_winner",
    "pair_margin",
)
# how M_θ is trained from its items
TRAINS = (
    "method.",
    "model.max_length",
    "model.lr",
    "model.lora.",
    "model.save_dtype",
    "alpha",
    "beta",
    "trainer.accelerator",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.strategy",
    "trainer.precision",
    "trainer.activation_checkpointing",
    "trainer.cpu_offload",
    "trainer.batch_size",
    "trainer.micro_batch_size",
    "trainer.micro_batch_tokens",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.warmup_steps",
    "trainer.weight_decay",
    "trainer.gradient_clip_val",
    "trainer.reference",
    "selection.val_every_n_steps",
)


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="irpo_schema", node=IrpoConfig)
    for group, name, node in [
        *(("task", f"{name}_schema", node) for name, node in TASK_SCHEMAS.items()),
        *(("generator", f"{name}_schema", node) for name, node in GENERATOR_SCHEMAS.items()),
        ("model", "model_schema", ModelConfig),
        ("trainer", "trainer_schema", TrainerConfig),
        ("logger", "logger_schema", LoggerConfig),
    ]:
        cs.store(group=group, name=name, node=node)


_CHOICES = {
    "trainer.reference": ("precomputed", "live"),
    "trainer.precision": ("32-true", "bf16-mixed", "16-mixed", "bf16-true", "16-true"),
    "model.dtype": ("float32", "bfloat16", "float16"),
    "model.cpu_bf16": ("never", "auto"),
    "trainer.strategy": ("auto", "ddp", "fsdp", "deepspeed_zero3"),
    "logger.wandb.mode": ("offline", "online", "disabled"),
    "resume": ("auto", "overwrite"),
    "planner.gpu": ("a100", "h100", "h200"),
    "selection.val_from": ("train", "validation"),
}


def validate(cfg: DictConfig) -> None:
    """Value checks that the schema's types cannot express; each error names its key."""
    positive = {
        "num_samples": cfg.num_samples,
        "pairs_per_prompt": cfg.pairs_per_prompt,
        "iterations": cfg.iterations,
        "trainer.batch_size": cfg.trainer.batch_size,
        "trainer.liveness_seconds": cfg.trainer.liveness_seconds,
        "model.max_length": cfg.model.max_length,
        "shard_size": cfg.shard_size,
    }
    # A size of 0 would run a loop that measures or learns nothing (a test accuracy of 0
    # every iteration, or no pairs found only after generation): refused at start.
    for key in ("task.train_size", "task.test_size", "task.validation_size", "max_pairs"):
        value = OmegaConf.select(cfg, key)
        if value is not None and value < 1:
            raise ConfigError(f"{key} must be >= 1 or null, got {value}")
    if cfg.num_threads not in (None, "adaptive") and not (str(cfg.num_threads).isdigit() and int(cfg.num_threads) >= 1):
        raise ConfigError(f"num_threads must be a count >= 1, adaptive or null, got {cfg.num_threads}")
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key} must be >= 1, got {value}")
    if cfg.trainer.checkpoint_every_seconds is not None and cfg.trainer.checkpoint_every_seconds <= 0:
        raise ConfigError(
            f"trainer.checkpoint_every_seconds must be > 0 or null, got {cfg.trainer.checkpoint_every_seconds}"
        )
    for key, value in {"alpha": cfg.alpha, "beta": cfg.beta, "model.lr": cfg.model.lr}.items():
        if value < 0:
            raise ConfigError(f"{key} must be >= 0, got {value}")
    method = methods.build(cfg)
    if cfg.trainer.reference == "live" and method.paired and not method.reference:
        raise ConfigError(
            f"trainer.reference=live keeps a reference model that method {method.name} never asks for; use trainer.reference=precomputed"
        )
    if method.token_level and (cfg.num_samples < 2 or any(t <= 0 for t in cfg.temperatures)):
        raise ConfigError(
            f"method {method.name} compares each prompt's samples, drawn at a temperature it scores them at: "
            f"it needs num_samples >= 2 and temperatures > 0, got num_samples={cfg.num_samples}, "
            f"temperatures={list(cfg.temperatures)}"
        )
    if method.sample is False and method.uses_samples:
        raise ConfigError(f"method.sample=false: method {method.name} trains on the iteration's samples")
    if cfg.pair_margin is not None and not 0 <= cfg.pair_margin <= 1:
        raise ConfigError(f"pair_margin must be in [0, 1] or null, got {cfg.pair_margin}")
    if not cfg.temperatures or any(t < 0 for t in cfg.temperatures):
        raise ConfigError(f"temperatures must be a non-empty list of values >= 0, got {list(cfg.temperatures)}")
    top_p = OmegaConf.select(cfg, "generator.top_p", default=GeneratorConfig.top_p)
    if not 0 < top_p <= 1:
        raise ConfigError(f"generator.top_p must be in (0, 1], got {top_p}")
    for key in ("train_utilization", "generate_utilization"):
        if not 0 < cfg.planner[key] <= 1:
            raise ConfigError(f"planner.{key} must be in (0, 1], got {cfg.planner[key]}")
    if cfg.logger.wandb.table_prompts < 0:
        raise ConfigError(f"logger.wandb.table_prompts must be >= 0, got {cfg.logger.wandb.table_prompts}")
    if cfg.eval.maj_k < 0:
        raise ConfigError(f"eval.maj_k must be >= 0, got {cfg.eval.maj_k}")
    ranks = launch_size()
    for key in ("micro_batch_size", "micro_batch_tokens"):
        if cfg.trainer[key] is not None and cfg.trainer[key] < 1:
            raise ConfigError(f"trainer.{key} must be >= 1 or null, got {cfg.trainer[key]}")
    if cfg.trainer.batch_size % ranks:
        raise ConfigError(
            f"trainer.batch_size={cfg.trainer.batch_size} must be a multiple of the {ranks} ranks: each optimizer step takes as many pairs from every rank"
        )
    if (
        not (cfg.plan or cfg.dry_run)
        and (str(cfg.trainer.devices) not in ("1", "auto") or cfg.trainer.num_nodes > 1)
        and ranks == 1
    ):
        raise ConfigError(
            f"trainer.devices={cfg.trainer.devices} x trainer.num_nodes={cfg.trainer.num_nodes} in one process: start one process "
            "per device with torchrun --nproc-per-node=<devices> -m irpo ... (or srun), which sets both"
        )
    sel = cfg.selection
    if sel.val_size < 0:
        raise ConfigError(f"selection.val_size must be >= 0 (0 = no selection), got {sel.val_size}")
    if sel.val_every_n_steps < 1:
        raise ConfigError(f"selection.val_every_n_steps must be >= 1, got {sel.val_every_n_steps}")
    if sel.patience is not None and (sel.patience < 1 or sel.val_size == 0):
        raise ConfigError(
            f"selection.patience must be >= 1 and needs selection.val_size > 0, got patience={sel.patience}, val_size={sel.val_size}"
        )
    if cfg.model.lora.r < 0:
        raise ConfigError(f"model.lora.r must be >= 0 (0 = no LoRA), got {cfg.model.lora.r}")
    if cfg.model.save_dtype not in (None, *_CHOICES["model.dtype"]):
        raise ConfigError(
            f"model.save_dtype must be one of {', '.join(_CHOICES['model.dtype'])} or null; got {cfg.model.save_dtype!r}"
        )
    for key, allowed in _CHOICES.items():
        value = cfg
        for part in key.split("."):
            value = value[part]
        if value not in allowed:
            raise ConfigError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")


def flat_config(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as dotted keys (W&B's filterable columns)."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{prefix}{k}.")
        else:
            out[prefix[:-1]] = node

    walk(OmegaConf.to_container(cfg, resolve=True), "")
    return out


# Keys that change how a run is watched, never what it computes: no stage depends on them, and
# two jobs of a sweep that differ in them alone are one configuration.
WATCHES = ("logger", "trainer.progress_bar", "trainer.log_every_n_steps")
