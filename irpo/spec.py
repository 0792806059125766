"""The run spec: a run's composed config resolved once, right after validation, into the typed
objects the loop, its stages, the planner and the capacity check take. After `build`, nothing
reads the DictConfig: only the entry points, irpo/config.py and this module touch it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from omegaconf import DictConfig, OmegaConf

from irpo import methods
from irpo.config import EvalConfig, LoggerConfig, ModelConfig, PlannerConfig, SelectionConfig, flat_config
from irpo.generation.schemas import GeneratorConfig, schema_of
from irpo.methods import Method
from irpo.pairs import PairRule
from irpo.run.artifacts import RunDir
from irpo.tasks.base import Task
from irpo.training.precision import apply_cpu_bf16, choose_cpu_bf16

if TYPE_CHECKING:
    from irpo.training.module import PolicyTraining
    from irpo.training.trainers import Trainer


@dataclass(frozen=True)
class LoopSettings:
    """The loop's scalars (conf/config.yaml's root keys)."""

    iterations: int
    temperatures: tuple[float, ...]
    seed: int
    num_samples: int
    pair_rule: PairRule
    shard_size: int
    num_threads: str | None
    resume: str
    dry_run: bool
    plan: bool

    def temperature(self, iteration: int) -> float:
        """The sampling temperature of iteration t (0-based); the schedule's last value repeats,
        as the paper raises it in later iterations (Sec. 3.1: 0.8, then 1.3)."""
        return float(self.temperatures[min(iteration, len(self.temperatures) - 1)])


@dataclass(frozen=True)
class RunPaths:
    """Where the run writes and how it is named; the .hydra/ files the launch that owns the
    run directory records (Hydra writes none itself: irpo.loop.own_run_directory)."""

    root: Path
    job_name: str
    choices: Mapping[str, Any]  # the config groups chosen (task, model, ...): W&B tags
    override_dirname: str  # a multirun job's overrides as one string: its W&B name
    sweep_dir: Path | None  # a multirun's directory (its W&B group); None in a single run
    recorded: Mapping[str, str]  # .hydra/<name> -> YAML text


@dataclass(frozen=True)
class RunSpec:
    task: Task
    task_settings: Mapping[str, Any]  # the task node as given (sizes, seed, max_new_tokens): what a plan describes
    method: Method
    model: ModelConfig
    trainer: Trainer
    training: PolicyTraining
    generator: GeneratorConfig
    loop: LoopSettings
    eval: EvalConfig
    selection: SelectionConfig
    planner: PlannerConfig
    logger: LoggerConfig
    values: Mapping[str, Any]  # every resolved value by dotted key: the manifest's and W&B's view
    cpu_bf16: Mapping[str, Any] | None  # the CPU's bf16 choice (irpo/training/precision.py); None on GPUs or when off
    paths: RunPaths | None  # None: composed outside a Hydra app, to plan or to test


def run_root() -> Path:
    """The run directory Hydra made for this launch (before irpo owns it)."""
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def build(cfg: DictConfig) -> RunSpec:
    """cfg, validated (irpo.config.validate), resolved into the run spec. The CPU's bf16 choice is made here
    (a run directory's first launch made it for every later one), so that a plan sizes the
    run as it will compute."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from hydra.utils import instantiate

    from irpo.training.module import PolicyTraining
    from irpo.training.trainers import trainer_from

    hydra = (
        HydraConfig.get() if HydraConfig.initialized() else None
    )  # None: composed outside a Hydra app (tests, notebooks)
    root = Path(hydra.runtime.output_dir) if hydra else None
    recorded = None if cfg.dry_run or cfg.plan or root is None else RunDir(root).recorded("cpu_bf16")
    cpu_bf16 = choose_cpu_bf16(cfg.model.cpu_bf16, cfg.trainer.accelerator, recorded)
    apply_cpu_bf16(cfg, cpu_bf16)
    model = typed(cfg.model, ModelConfig)
    trainer = trainer_from(OmegaConf.to_container(cfg.trainer, resolve=True))
    trainer.check(starting=not (cfg.plan or cfg.dry_run))
    lora = model.lora
    adapters = {"r": lora.r, "alpha": lora.alpha, "dropout": lora.dropout, "target_modules": list(lora.target_modules)}
    training = PolicyTraining(
        lr=model.lr,
        trainer=trainer,
        dtype=trainer.policy_dtype(model.dtype, lora.r > 0),
        trust_remote_code=model.trust_remote_code,
        adapters=adapters,
    )
    loop = LoopSettings(
        iterations=cfg.iterations,
        temperatures=tuple(float(t) for t in cfg.temperatures),
        seed=cfg.seed,
        num_samples=cfg.num_samples,
        pair_rule=PairRule(cfg.pairs_per_prompt, cfg.max_pairs, cfg.gold_winner, cfg.pair_margin or 0.0),
        shard_size=cfg.shard_size,
        num_threads=cfg.num_threads,
        resume=cfg.resume,
        dry_run=cfg.dry_run,
        plan=cfg.plan,
    )
    paths = None
    if hydra is not None:
        hydra_cfg = HydraConfig.instance().cfg
        paths = RunPaths(
            root=root,
            job_name=hydra.job.name,
            choices=dict(hydra.runtime.choices),
            override_dirname=hydra.job.override_dirname,
            sweep_dir=Path(hydra.sweep.dir) if hydra.mode == RunMode.MULTIRUN else None,
            recorded={
                "config.yaml": OmegaConf.to_yaml(cfg),
                "hydra.yaml": OmegaConf.to_yaml(hydra_cfg),
                "overrides.yaml": OmegaConf.to_yaml(hydra_cfg.hydra.overrides.task),
            },
        )
    return RunSpec(
        task=instantiate(cfg.task),
        task_settings=OmegaConf.to_container(cfg.task, resolve=True),
        method=methods.build(cfg),
        model=model,
        trainer=trainer,
        training=training,
        generator=typed(cfg.generator, GeneratorConfig),
        loop=loop,
        eval=typed(cfg.eval, EvalConfig),
        selection=typed(cfg.selection, SelectionConfig),
        planner=typed(cfg.planner, PlannerConfig),
        logger=typed(cfg.logger, LoggerConfig),
        values=flat_config(cfg),
        cpu_bf16=cpu_bf16,
        paths=paths,
    )


def typed(node: DictConfig, schema: type) -> Any:
    """A config node as its schema's object: the schema it was composed from (a generator's
    own backend schema), else `schema` (for a generator: the schema its class names), its
    values merged in; a schema's interpolated defaults (`${model.dtype}`) read the run's."""
    kind = OmegaConf.get_type(node)
    if isinstance(kind, type) and issubclass(kind, schema):
        return OmegaConf.to_object(node)
    if schema is GeneratorConfig:
        schema = schema_of(str(node.get("_target_", "")))
    root = node._get_root()
    holder = OmegaConf.create(
        {
            k: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v
            for k, v in root.items_ex(resolve=False)
            if k != node._key()
        }
    )
    holder[node._key()] = OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.to_container(node, resolve=True))
    return OmegaConf.to_object(holder[node._key()])
