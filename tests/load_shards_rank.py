"""One rank of tests/test_sharded_loading.py under torchrun: builds the policy on the meta
device, shards it as trainer=fsdp does, loads the checkpoint, and writes to OUT/rank<r>.json
how much its resident memory rose at its peak while loading and which parameters differ
from the checkpoint."""

import json
import re
import sys
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors import safe_open
from torch.distributed.device_mesh import init_device_mesh

from irpo.models.load import policy_skeleton
from irpo.training.sharding import load_sharded, shard_policy


def status(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024


def main(checkpoint: str, out: str) -> None:
    dist.init_process_group("gloo")
    model = policy_skeleton(checkpoint, "float32")
    shard_policy(model, init_device_mesh("cpu", (dist.get_world_size(),)), "32-true", cpu_offload=False)
    dist.barrier()
    before = status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS: the peak from here on
    load_sharded(model, checkpoint, torch.device("cpu"))
    peak = status("VmHWM")
    stored = {}
    for f in Path(checkpoint).glob("*.safetensors"):
        with safe_open(f, "pt") as st:
            stored |= {key: (f, key) for key in st.keys()}
    differ = []
    for name, param in model.named_parameters():
        full = param.full_tensor()  # a collective: every rank, in the same order
        f, key = stored[name if name in stored else "model.embed_tokens.weight"]  # the tied head
        with safe_open(f, "pt") as st:
            if not torch.equal(full, st.get_tensor(key)):
                differ.append(name)
    local = sum(p.to_local().numel() * p.element_size() for p in model.parameters())
    Path(out, f"rank{dist.get_rank()}.json").write_text(
        json.dumps(dict(rise=peak - before, local=local, differ=differ))
    )
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
