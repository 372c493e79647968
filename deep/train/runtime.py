"""Process-level CPU setting for training and evaluation: keep freed memory in the process.

glibc's ``malloc`` hands large freed blocks back to the operating system: blocks above the mmap threshold
are ``munmap``-ed when freed, and free space at the top of the heap is trimmed. A PyTorch step on CPU
allocates and frees the same activation and gradient buffers (megabytes each) every step, so every step
faults those pages in again and the kernel zeroes each one. That cost grows with the number of buffers
a step allocates, so it taxes an MR-VAE (each gate adds a product and its gradients) more than the same
beta-VAE: measured with ``bench/bench_deep.py`` (ResNet, binary MNIST, batch 128, one thread), see
the README's speed section.

:func:`tune_cpu_allocator` raises glibc's thresholds with ``mallopt`` so freed blocks are reused instead:
mmap threshold 32 MiB (glibc's largest allowed value on 64-bit), trim threshold 1 GiB, top pad 64 MiB.
The price is that the process keeps up to about that much freed memory mapped (its resident size stays
near its peak). It is a no-op off glibc (macOS, Windows, musl) and when ``MRVAE_CPU_MALLOC=0``.
:func:`deep.train.train` and :func:`deep.evaluate.evaluate_run` call it when they run on CPU.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["tune_cpu_allocator", "ALLOCATOR_ENV", "MALLOC_SETTINGS"]

#: Set to ``0`` to leave glibc's allocator at its defaults.
ALLOCATOR_ENV = "MRVAE_CPU_MALLOC"
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameter numbers
#: The ``mallopt`` settings applied, in bytes.
MALLOC_SETTINGS = {"mmap_threshold": 32 << 20, "trim_threshold": 1 << 30, "top_pad": 64 << 20}
_STATE: dict | None = None


def tune_cpu_allocator() -> dict:
    """Apply :data:`MALLOC_SETTINGS` once per process; returns what was done (recorded by callers).

    ``{"allocator": "glibc", "applied": True, **settings}`` on glibc; ``{"applied": False, "reason": ...}``
    when switched off by ``MRVAE_CPU_MALLOC=0``, off Linux/glibc, or when ``mallopt`` refuses a value.
    """
    global _STATE
    if _STATE is None:
        _STATE = _apply_settings()
    return dict(_STATE)


def _apply_settings() -> dict:
    switch = os.environ.get(ALLOCATOR_ENV, "1").strip()
    if switch.lower() in ("0", "false", "no", "off"):
        return {"applied": False, "reason": f"{ALLOCATOR_ENV}={switch}"}
    libc = _glibc()
    if libc is None:
        return {"applied": False, "reason": "not glibc"}
    refused = [name for name, param in (("mmap_threshold", _M_MMAP_THRESHOLD), ("trim_threshold", _M_TRIM_THRESHOLD),
                                        ("top_pad", _M_TOP_PAD))
               if libc.mallopt(ctypes.c_int(param), ctypes.c_int(MALLOC_SETTINGS[name])) != 1]
    if refused:
        return {"allocator": "glibc", "applied": False, "reason": f"mallopt refused {', '.join(refused)}"}
    return {"allocator": "glibc", "applied": True, **MALLOC_SETTINGS}


def _glibc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version.restype = ctypes.c_char_p
        libc.gnu_get_libc_version()  # absent on musl: AttributeError
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None
