"""How this process's memory allocator hands freed memory back, set once before any stage runs.

glibc's malloc serves blocks above a threshold (128 KiB, rising to the largest freed one)
with their own mmap and returns the top of its heap to the kernel once 128 KiB of it is free.
Every training step, scoring batch and decoding step allocates and frees the same activation
and KV-cache tensors, so the kernel unmaps them and then faults and zeroes them in again, page
by page: the default run took ~3M page faults and ~15 s of system time on 2 cores that way.
Kept in the heap, the next step reuses them (the default run's peak RSS rose by 60-90 MB,
bench/NOTES.md: blocks it held anyway, less what fragmentation keeps). Allocators tuned for PyTorch on CPU do the same (jemalloc with
decay off, as Intel's launcher sets it); this is that, in glibc itself, with no preload."""

from __future__ import annotations

import ctypes
import os
from typing import Mapping

# mallopt parameters (glibc's malloc.h)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
# The largest mmap threshold glibc takes on 64-bit (HEAP_MAX_SIZE / 2): blocks above it,
# model weights, say, still get their own mapping and go back to the kernel when freed.
MMAP_THRESHOLD = 32 << 20
# Free memory at the heap's top kept rather than returned: more than any run here reuses.
TRIM_THRESHOLD = 1 << 30
# Settings a user made for the allocator, which win: glibc's own variables, or another
# allocator preloaded.
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "GLIBC_TUNABLES", "LD_PRELOAD")

# What keep_freed_memory did in this process (None: it did not run), for the launch record.
chosen: str | None = None


def keep_freed_memory(env: Mapping[str, str] = os.environ) -> str:
    """Tells glibc's malloc to keep freed blocks for reuse instead of unmapping them. Returns
    what it did in words."""
    global chosen
    chosen = _keep_freed_memory(env)
    return chosen


def _keep_freed_memory(env: Mapping[str, str]) -> str:
    if any(k in env for k in USER_SETTINGS):
        return f"user's: {' '.join(k for k in USER_SETTINGS if k in env)}"
    libc = _glibc()
    if libc is None:
        return "left as it is (not glibc)"
    if not (libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        return "left as it is (mallopt refused)"
    return f"glibc malloc keeps freed blocks (mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB)"


def _glibc() -> ctypes.CDLL | None:
    """This process's C library where it is glibc (musl and macOS have no mallopt worth
    setting)."""
    try:
        libc = ctypes.CDLL(None)
        for name in ("gnu_get_libc_version", "mallopt"):  # glibc's, or an AttributeError
            getattr(libc, name)
    except (OSError, AttributeError):
        return None
    libc.mallopt.argtypes, libc.mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return libc
