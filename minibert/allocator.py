"""Keep freed memory in the process: why a NumPy forward pass can spend 15% of its time in the kernel.

Every layer of the forward makes fresh arrays of a few megabytes (q/k/v, the FFN's (N, 4H)
activations, GELU's temporaries) and frees them a moment later. glibc's malloc, by default,
hands blocks that big back to the operating system when they are freed (munmap, or trimming the
top of the heap), so the next array of that size is fresh memory again: the kernel maps it one
4 KB page at a time, on first touch, each a page fault. Measured on the teacher's inference
forward (B=32, T=64, 2 cores, 2026-11-26): ~11,000 page faults and ~35 ms of system time per
forward (15% of its time); keeping the memory took `minibert bench`'s forward from 0.239 to
0.216 s (-10%). A teacher train step took ~34,000 faults; timed alone it went 1.09 -> 1.00 s.

`keep_freed_memory()` sets two glibc knobs (mallopt) so that freed blocks stay in the process
for the next allocation to reuse:
    M_MMAP_THRESHOLD = 32 MB   blocks below it come from the heap, not from their own mmap
                               (bigger ones, e.g. the 47 MB word-embedding gradient, still do)
    M_TRIM_THRESHOLD = 256 MB  the heap is shrunk only when 256 MB at its top are free
Cost: the process keeps up to 256 MB it could have returned (the teacher train step's peak
RSS went from 949 to 979 MB in the bench). It is a process-wide setting, so the library never applies it on
import: the `minibert` command does (every subcommand, PyTorch in `minibert bench` included),
and so do the lessons. MINIBERT_MALLOC=system in the environment leaves malloc alone. On a C
library without mallopt (macOS, musl's stub) it does nothing.
"""

from __future__ import annotations

import ctypes
import os

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3      # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 256 << 20

_state = {"tuned": False}


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks for reuse instead of returning them to the OS (see above).

    Returns True if the setting is in effect (now or from an earlier call), False if
    MINIBERT_MALLOC=system or the C library has no working mallopt."""
    if _state["tuned"]:
        return True
    if os.environ.get("MINIBERT_MALLOC", "").strip().lower() == "system":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):      # no such symbol (not glibc), or no CDLL(None) (Windows)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # the mmap threshold first: setting either one switches off glibc's dynamic adjustment
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    _state["tuned"] = ok
    return ok


def is_tuned() -> bool:
    """True if keep_freed_memory() has taken effect in this process."""
    return _state["tuned"]
