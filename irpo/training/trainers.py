"""The trainer presets as objects: what the sizing, capacity and training code ask of a way
of spreading M_θ over devices, and its Lightning strategy. `trainer.strategy` names the
class here (TRAINERS); nothing outside this module compares strategy names.

The objects load no torch: the planner and the capacity check ask them questions before
a run starts. How `fsdp` shards the policy is irpo/training/sharding.py's.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Mapping

from irpo.config import TrainerConfig
from irpo.errors import ConfigError

if TYPE_CHECKING:
    import torch

    from irpo.config import ModelConfig


@dataclass
class Trainer(TrainerConfig):
    """`auto`: one process, the whole policy on its device."""

    name: ClassVar[str] = "auto"  # trainer.strategy
    # irpo shards the policy itself (FSDP2 in the module's configure_model)
    shards_policy: ClassVar[bool] = False
    # weights, gradients and optimizer states are split over the ranks (the planner's rule)
    sharded: ClassVar[bool] = False
    # no rank holds the whole trained policy: it is gathered onto rank 0 to be saved
    gathered: ClassVar[bool] = False
    # DeepSpeed ZeRO-3: its engine holds the policy in the model dtype beside float32 master
    # partitions, clips gradients itself and steps the optimizer on the CPU when offloading
    deepspeed: ClassVar[bool] = False

    def check(self, starting: bool) -> None:
        """What this trainer refuses in one line, before any work (`starting`: a run, not a plan)."""

    def lightning_strategy(self) -> Any:
        return "auto"

    def reference_policy(self, model: ModelConfig, dtype: str, model_dir: str, device: torch.device) -> torch.nn.Module:
        """M_t for the passes that score pairs (the reference before training, the log-probs
        after), held in `dtype` as training holds it (the passes score with training's
        numerics): one whole copy per rank."""
        from irpo.models.load import load_policy

        return load_policy(model_dir, dtype, model.trust_remote_code)

    def no_sync(self, module) -> Any:
        """A context in which a backward reduces no gradient over the ranks (all but a step's last);
        one process (Lightning's single-device strategy) has nothing to reduce."""
        strategy = module.trainer.strategy
        return strategy.block_backward_sync() if hasattr(strategy, "block_backward_sync") else nullcontext()

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """The whole policy's weights on rank 0's CPU (empty elsewhere); every rank calls it."""
        return model.state_dict()

    def policy_dtype(self, model_dtype: str, lora: bool) -> str:
        """What the trained policy (so its gradients and AdamW states), a live reference and the
        scoring passes hold M_t in (irpo/training/precision.py)."""
        from irpo.training.precision import train_dtype

        return train_dtype(self.precision, model_dtype, in_model_dtype=self.deepspeed or lora)

    @property
    def timeout(self) -> timedelta:
        return timedelta(minutes=self.timeout_minutes)


@dataclass
class DDP(Trainer):
    """`ddp`: every rank a whole copy of the policy, gradients all-reduced."""

    name: ClassVar[str] = "ddp"

    def lightning_strategy(self) -> Any:
        from lightning.pytorch.strategies import DDPStrategy

        return DDPStrategy(timeout=self.timeout)


@dataclass
class FSDP(Trainer):
    """`fsdp`: FSDP2 `fully_shard` per decoder layer over every rank."""

    name: ClassVar[str] = "fsdp"
    shards_policy: ClassVar[bool] = True
    sharded: ClassVar[bool] = True
    gathered: ClassVar[bool] = True

    def check(self, starting: bool) -> None:
        if self.reference == "live":
            raise ConfigError(
                "trainer.reference=live keeps a whole second model on every rank; with trainer=fsdp use reference=precomputed"
            )

    def lightning_strategy(self) -> Any:
        # With "auto" sizes Lightning makes data parallel = nodes and tensor parallel =
        # processes per node, so that the ranks of one node would all see the same batches.
        from lightning.pytorch.strategies import ModelParallelStrategy

        from irpo.run.distributed import world_size
        from irpo.training.sharding import atomic

        return atomic(ModelParallelStrategy)(
            data_parallel_size=world_size(), tensor_parallel_size=1, timeout=self.timeout
        )

    def reference_policy(self, model: ModelConfig, dtype: str, model_dir: str, device: torch.device) -> torch.nn.Module:
        """Sharded over all ranks as training shards it: no rank can hold a whole 70B model."""
        from irpo.run.distributed import world_size

        if world_size() == 1:
            return super().reference_policy(model, dtype, model_dir, device)
        from torch.distributed.device_mesh import init_device_mesh

        from irpo.models.load import policy_skeleton
        from irpo.training.sharding import load_sharded, shard_policy

        policy = policy_skeleton(model_dir, dtype, model.trust_remote_code)
        shard_policy(policy, init_device_mesh(device.type, (world_size(),)), self.precision, self.cpu_offload)
        load_sharded(policy, model_dir, device)
        return policy

    @contextmanager
    def no_sync(self, module):
        module.policy.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            module.policy.set_requires_gradient_sync(True)

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


@dataclass
class ZeRO3(Trainer):
    """`deepspeed_zero3`: DeepSpeed ZeRO stage 3 (optimizer states offloaded with cpu_offload)."""

    name: ClassVar[str] = "deepspeed_zero3"
    sharded: ClassVar[bool] = True
    gathered: ClassVar[bool] = True
    deepspeed: ClassVar[bool] = True

    def check(self, starting: bool) -> None:
        # A plan needs no DeepSpeed; a run does, and should not find out after hours of generation.
        import importlib.util

        if starting and importlib.util.find_spec("deepspeed") is None:
            raise ConfigError(
                "trainer.strategy=deepspeed_zero3 needs DeepSpeed, which is not installed: pip install -e '.[deepspeed]'"
            )

    def lightning_strategy(self) -> Any:
        from lightning.pytorch.strategies import DeepSpeedStrategy

        from irpo.training.sharding import atomic

        strategy = atomic(DeepSpeedStrategy)(stage=3, offload_optimizer=self.cpu_offload, timeout=self.timeout)
        # under manual optimization Lightning passes no clipping value on: the engine clips
        strategy.config["gradient_clipping"] = self.gradient_clip_val or 0.0
        return strategy

    @contextmanager
    def no_sync(self, module):
        engine = module.trainer.strategy.model
        engine.set_gradient_accumulation_boundary(False)
        try:
            yield
        finally:
            engine.set_gradient_accumulation_boundary(True)

    def full_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """ZeRO-3 partitions every parameter; gathering one at a time keeps a single whole
        parameter on the GPU, never the whole model."""
        import deepspeed

        from irpo.run.distributed import rank

        state = {}
        for name, tensor in model.state_dict(keep_vars=True).items():
            with deepspeed.zero.GatheredParameters([tensor] if hasattr(tensor, "ds_id") else []):
                if rank() == 0:
                    state[name] = tensor.detach().to("cpu", copy=True)
        return state


# trainer.strategy -> the class a trainer preset builds (config.validate checks the name)
TRAINERS: dict[str, type[Trainer]] = {cls.name: cls for cls in (Trainer, DDP, FSDP, ZeRO3)}


def trainer_from(settings: Mapping[str, Any]) -> Trainer:
    """The trainer object a run's `trainer` node describes."""
    names = {f.name for f in fields(TrainerConfig)}
    return TRAINERS[settings["strategy"]](**{k: v for k, v in settings.items() if k in names})
