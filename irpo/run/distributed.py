"""What differs by rank when torchrun or srun starts one process per device (SPMD).

Every rank runs the same loop. A stage's work is either split (generation shards over
*replicas*, reference log-probs over ranks, training batches through the Lightning
strategy) or done once by rank 0 (every write to the run directory's bookkeeping:
manifest, events, pairs, metrics, merged files), the others waiting for it. One process
is world size 1: no process group, every function here a plain call.

A replica is `replica_size` consecutive ranks serving one generation engine (a vLLM
engine with that tensor-parallel size, started by the replica's first rank; 1 for the
`hf` generator); shard s of a sharded file belongs to replica s % replicas.
"""

from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta
from typing import Any, Callable, TypeVar

from irpo.errors import UserError

T = TypeVar("T")


def _group():
    """torch.distributed once this process joined a group, else None. Without torch loaded
    there is no group, and the config's checks and one-line errors (which run here) answer
    without loading torch (2-3 s of a 4-s refusal)."""
    if "torch" not in sys.modules:
        return None
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


def launcher_env():
    """Lightning's view of the launcher that started this process (torchrun or srun), or
    None for a plain `python -m irpo`; the same check Lightning makes, so that it sees an
    external launcher and starts no processes of its own. A layout Lightning refuses (srun
    --ntasks without --ntasks-per-node) is a UserError, at start."""
    if _launcher() is None:
        # Lightning (seconds to import) need not load for a plan, a dry run or an error before the run
        return None
    from lightning.fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    for env in (SLURMEnvironment, TorchElasticEnvironment):
        if env.detect():
            try:
                return env()
            except RuntimeError as exc:
                raise UserError(f"this launch's layout cannot train: {exc}") from None
    return None


def _launcher() -> str | None:
    """ "srun", "torchrun" or None, as Lightning's detect() decides it (srun first; a SLURM
    job named bash or interactive is a shell that started this process by hand)."""
    if "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        return "srun"
    return "torchrun" if "TORCHELASTIC_RUN_ID" in os.environ else None


def _launcher_value(torchrun: str, srun: str) -> int:
    """A rank number as the launcher set it, before any process group exists: srun sets no
    RANK, torchrun no SLURM_PROCID."""
    return int(os.environ.get({"srun": srun, "torchrun": torchrun, None: ""}[_launcher()], 0))


def launched() -> bool:
    return launch_size() > 1


def launch_size() -> int:
    """Processes the launcher started (1 without one); known before the process group is."""
    env = launcher_env()
    return env.world_size() if env is not None else 1


def ranks_per_node() -> int:
    """Processes the launcher started on each node (1 without one); known before the
    process group is."""
    if not launched():
        return 1
    return int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("SLURM_NTASKS_PER_NODE", launch_size())))


def ranks_sharing_cores() -> int:
    """Processes of this launch that share this process's cores: torchrun's ranks on this
    node all see every core (srun binds each task to its own cores, so its affinity is
    already this task's share)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def restart_attempt() -> int:
    """Which start of the workers this is: torchrun's agent restarts them (and outlives
    them, with its store) up to --max-restarts times."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def slurm_job() -> str | None:
    """The SLURM job this process runs in, as `scontrol requeue` names it (an array's task
    as <array job>_<task>), or None outside SLURM."""
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        return f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID") or None


def rank() -> int:
    if (dist := _group()) is not None:
        return dist.get_rank()
    return _launcher_value("RANK", "SLURM_PROCID")


def world_size() -> int:
    return dist.get_world_size() if (dist := _group()) is not None else 1


def local_rank() -> int:
    return _launcher_value("LOCAL_RANK", "SLURM_LOCALID")


def nodes() -> int:
    """Nodes in the job; with the ranks per node, what Lightning's `devices` x `num_nodes`
    must equal under an external launcher (it refuses anything else)."""
    if not launched():
        return 1
    if "LOCAL_WORLD_SIZE" in os.environ:  # torchrun
        return world_size() // int(os.environ["LOCAL_WORLD_SIZE"])
    return int(os.environ.get("SLURM_NNODES", os.environ.get("SLURM_JOB_NUM_NODES", "1")))  # srun sets the step's


def devices_per_node() -> int:
    return world_size() // nodes()


# This rank's liveness.Watchdog while it is in a process group.
_watchdog = None


def init(timeout_minutes: int, accelerator: str, liveness_seconds: float) -> None:
    """Joins the process group once, when a launcher started several processes: gloo on
    CPU, nccl on GPUs (one per local rank). The timeout covers the longest wait between
    stages, which is another replica's generation (hours at scale), not the 30 minutes
    torch assumes; a rank or launcher that is gone ends the launch after liveness_seconds
    instead (irpo.run.liveness)."""
    global _watchdog
    env = launcher_env()
    if _group() is not None or env is None or env.world_size() <= 1:
        return
    import torch
    import torch.distributed as dist

    from irpo.run.liveness import Watchdog

    gpu = accelerator != "cpu" and torch.cuda.is_available()
    if gpu:
        torch.cuda.set_device(env.local_rank())
    os.environ["MASTER_ADDR"] = env.main_address
    os.environ["MASTER_PORT"] = str(env.main_port)
    _watchdog = Watchdog(
        env.main_address, env.main_port, env.global_rank(), env.world_size(), liveness_seconds, restart_attempt()
    ).start()
    dist.init_process_group(
        "nccl" if gpu else "gloo",
        rank=env.global_rank(),
        world_size=env.world_size(),
        timeout=timedelta(minutes=timeout_minutes),
    )


def close() -> None:
    """Leaves the process group (this rank's watchdog first, so that the others stop
    watching it). Left to interpreter exit, gloo's threads are torn down while still
    joinable and the process can abort (SIGABRT) after a finished run."""
    global _watchdog
    if _watchdog is not None:
        _watchdog.stop()
        _watchdog = None
    if (dist := _group()) is not None:
        dist.destroy_process_group()


def barrier() -> None:
    if (dist := _group()) is not None:
        dist.barrier()


def broadcast(obj: T) -> T:
    """Rank 0's value of obj on every rank."""
    if (dist := _group()) is None:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any) -> list[Any]:
    """Every rank's obj, in rank order, on rank 0 (an empty list elsewhere)."""
    if (dist := _group()) is None:
        return [obj]
    out = [None] * world_size() if rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out or []


def max_over_ranks(n: int) -> int:
    """The largest of every rank's n (n itself in one process)."""
    if (dist := _group()) is None:
        return n
    import torch

    value = torch.tensor([n], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return int(value.item())


def sum_over_ranks(n: int) -> int:
    """The sum of every rank's n (n itself in one process)."""
    if (dist := _group()) is None:
        return n
    import torch

    value = torch.tensor([n], device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return int(value.item())


def on_rank_zero(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """fn(*args) on rank 0 once every rank got here (so it sees their files), its result
    on every rank when it is done; an error there is raised on every rank, so that no rank
    waits for a write that never comes."""
    if (dist := _group()) is None:
        return fn(*args, **kwargs)
    dist.barrier()
    outcome: tuple[bool, Any] = (True, None)
    error = None
    if rank() == 0:
        try:
            outcome = (True, fn(*args, **kwargs))
        except Exception as exc:
            error = exc
            outcome = (False, exc if _picklable(exc) else RuntimeError(f"rank 0: {type(exc).__name__}: {exc}"))
    ok, value = broadcast(outcome)
    if error is not None:
        raise error
    if not ok:
        raise value
    return value


def _picklable(obj: Any) -> bool:
    import pickle

    try:
        pickle.loads(pickle.dumps(obj))
        return True
    except Exception:
        return False


def replica_shards(n_shards: int, replica_size: int) -> list[int]:
    """The shards this rank makes (see owned_shards)."""
    return owned_shards(n_shards, replica_size, rank(), world_size())


def owned_shards(n_shards: int, replica_size: int, rank: int, world: int) -> list[int]:
    """Shard s belongs to replica s % replicas and is made by the replica's first rank (the
    one that drives its engine); the other ranks of a replica make none."""
    if rank % replica_size:
        return []
    return list(range(rank // replica_size, n_shards, max(1, world // replica_size)))


def rank_slice(items: list[T]) -> list[T]:
    """This rank's share of items (every world_size-th one), as many on every rank (the
    list padded from its start), since a sharded model's forward is a collective."""
    per_rank = -(-len(items) // world_size())
    return (items * world_size())[: per_rank * world_size()][rank() :: world_size()]


def run_name() -> str:
    """The run directory's name, the same on every rank: the start time for one process;
    under a launcher the job's id (ranks start seconds apart, so a clock would give each
    its own directory), which a requeued SLURM job keeps and so resumes in."""
    if not launched():
        return datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    if os.environ.get("SLURM_JOB_ID"):
        return f"slurm-{os.environ['SLURM_JOB_ID']}"
    run_id = os.environ.get("TORCHELASTIC_RUN_ID", "none")
    if run_id == "none":
        raise UserError(
            "torchrun without --standalone or --rdzv-id gives the ranks no shared run name; set hydra.run.dir=..."
        )
    return f"torchrun-{run_id}"


# What torchrun and srun tell a rank about its process group; an engine's own processes
# (vLLM's tensor-parallel workers) form a group of their own and must not read them.
_LAUNCHER_VARS = (
    "RANK",
    "LOCAL_RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "ROLE_RANK",
    "ROLE_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_NTASKS",
)


def engine_env(replica_size: int) -> dict[str, str | None]:
    """Environment changes for the generation engine a replica's first rank starts: the
    GPUs of the replica's ranks (this local rank's and the next replica_size - 1), and no
    launcher variables (None: unset). Empty for one process."""
    if not launched():
        return {}
    if devices_per_node() % replica_size:
        raise UserError(
            f"generator.tensor_parallel_size={replica_size} must divide the {devices_per_node()} ranks per node (an engine stays on one node)"
        )
    env: dict[str, str | None] = dict.fromkeys(_LAUNCHER_VARS)
    import torch

    if torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", ",".join(map(str, range(torch.cuda.device_count())))).split(
            ","
        )
        env["CUDA_VISIBLE_DEVICES"] = ",".join(visible[local_rank() : local_rank() + replica_size])
    return env
