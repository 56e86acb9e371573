"""glibc malloc settings for processes that pass megabytes of output through.

Output moves through parad and its workers in buffers of 64 KiB to 1 MiB
(pipe reads, data frames, batches to clients), allocated and freed by the
thousand. glibc serves buffers above M_MMAP_THRESHOLD with their own mmap and
returns them to the system when freed, but by default it raises that
threshold to the size of each such buffer freed (up to 32 MiB): after the
first megabyte of output, buffers come from the heap, and a heap fragmented
by them keeps its peak resident long after the bytes are gone. Measured on
tests/test_memory.py (200 clients' MB through a slow reader): parad's RSS
peaked at 135-204 MiB by default, 100-125 MiB with these settings.

A fixed threshold (glibc's own initial 128 KiB) keeps big buffers on mmap, so
freeing them frees them; two arenas keep ZeroMQ's I/O threads from each
growing a heap of their own. Set with mallopt(3), not MALLOC_* variables,
which commands would inherit. A value the user set in the environment wins;
on another libc (musl) this does nothing.
"""

from __future__ import annotations

import ctypes
import os

M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8
SETTINGS = {M_MMAP_THRESHOLD: ("MALLOC_MMAP_THRESHOLD_", 128 << 10), M_ARENA_MAX: ("MALLOC_ARENA_MAX", 2)}


def return_freed_buffers() -> bool:
    """Apply SETTINGS not already given in the environment; whether all that were tried took.

    Call before any thread starts (a ZeroMQ context): arenas are made per thread.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    took = True
    for param, (variable, value) in SETTINGS.items():
        if variable not in os.environ:
            took = mallopt(param, value) == 1 and took
    return took
