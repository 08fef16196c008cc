"""Keep freed memory in the process heap on Linux/glibc for CPU runs.

By default glibc serves every block above its mmap threshold (at most 32 MiB) with a fresh ``mmap``
and returns it to the operating system on ``free``. A stacked tensor of that size (the CIFAR-10 CNN's
[R, 512, 8192] weights and their Adam moments from R = 2 on) then page-faults on every allocation and
is zeroed by the kernel: on this project's 2-core machine RBP at R = 3, batch 50 cost 8.9 s per batch
with the default and 3.3 s with the heap kept (``benchmarks/cnn_speed.py --mallopt``). The command
line (``run_paradigm.py``, ``run-paradigm``: :func:`pcneuro.cli.console_main`) calls
:func:`keep_freed_memory` once at start; ``PCNEURO_MALLOPT=0`` leaves glibc's defaults alone. It is
not applied to in-process callers of the runner (an allocator setting belongs to the program).
Elsewhere (macOS, musl, Windows) it does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's <malloc.h> parameter numbers
MMAP_THRESHOLD = 1 << 30  # blocks up to 1 GiB come from the heap
TRIM_THRESHOLD = (1 << 31) - 1  # and the heap is not trimmed below 2 GiB of free space at its top

_applied = None


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (once per process); True if they are set now."""
    global _applied
    if _applied is not None:
        return _applied
    _applied = False
    if os.environ.get("PCNEURO_MALLOPT", "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _applied
