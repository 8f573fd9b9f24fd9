"""Keep the C allocator from holding on to the memory of freed large arrays.

glibc serves allocations above its *mmap threshold* with their own mappings, returned to the
system when freed. The threshold starts at 128 KiB but rises (up to 32 MiB) each time such a
block is freed, after which arrays of up to 32 MiB come from the heap instead, where freeing
leaves holes the process keeps. Host statistics allocate and free arrays of tens to hundreds of MB
at every fold; with the rising threshold the resident size stayed near its peak for good.
Setting the threshold explicitly turns the adjustment off (``mallopt(3)``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
MMAP_THRESHOLD_BYTES = 1 << 20  # smaller blocks (per-batch columns) stay on the fast heap path


def fix_mmap_threshold(threshold_bytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """Pin glibc's mmap threshold; False where there is no glibc ``mallopt`` (nothing changes)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    done = bool(mallopt(M_MMAP_THRESHOLD, threshold_bytes))
    if not done:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused")
    return done
