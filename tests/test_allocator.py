"""irpo.run.allocator: freed blocks stay in glibc's heap for the next step, unless the user chose."""

import json
import os
import subprocess
import sys

import pytest

from irpo.run import allocator

# A training step's shape: the batch's activations allocated and written together, then
# freed, step after step. Prints the page faults of the second round of steps, which a heap
# that kept the first round's blocks avoids.
STEPS = """
import ctypes, json, resource, sys
from irpo.run import allocator
chosen = allocator.keep_freed_memory() if sys.argv[1] == "keep" else None
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_size_t], [ctypes.c_void_p]
def steps():
    for _ in range(4):
        live = [libc.malloc(mib << 20) for mib in (4, 8, 12, 16)]
        for p, mib in zip(live, (4, 8, 12, 16)):
            ctypes.memset(p, 1, mib << 20)
        for p in live:
            libc.free(p)
steps()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
steps()
print(json.dumps({"faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, "chosen": chosen}))
"""
PAGES_WRITTEN = 4 * (4 + 8 + 12 + 16) * 256  # 4 KiB pages in the second round


def second_round(mode: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in allocator.USER_SETTINGS}
    out = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout)


@pytest.mark.skipif(allocator._glibc() is None, reason="glibc's malloc only")
def test_freed_blocks_are_reused_instead_of_faulted_in_again():
    kept, default = second_round("keep"), second_round("default")
    assert kept["chosen"].startswith("glibc malloc keeps freed blocks")
    # glibc's default unmaps the blocks and faults every page in again (40,832 of 40,960 here)
    assert default["faults"] > PAGES_WRITTEN / 2
    assert kept["faults"] < PAGES_WRITTEN / 20


@pytest.mark.parametrize("name", allocator.USER_SETTINGS)
def test_a_users_allocator_setting_wins(monkeypatch, name):
    monkeypatch.setattr(allocator, "chosen", None)
    called = []
    monkeypatch.setattr(allocator, "_glibc", lambda: called.append(1))
    assert allocator.keep_freed_memory({name: "x"}) == f"user's: {name}"
    assert allocator.chosen == f"user's: {name}" and not called


def test_without_glibc_it_leaves_the_allocator_alone(monkeypatch):
    monkeypatch.setattr(allocator, "chosen", None)
    monkeypatch.setattr(allocator, "_glibc", lambda: None)
    assert allocator.keep_freed_memory({}) == "left as it is (not glibc)"
