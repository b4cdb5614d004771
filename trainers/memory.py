"""Keep freed memory in the process, so big tensors do not page-fault on every step.

glibc hands blocks above its mmap threshold straight back to the kernel when they
are freed (and trims the heap top above its trim threshold), so a CPU training
step that allocates the same few megabytes of batch and activations each time
takes fresh zeroed pages each time: ~7 page faults per augmented 32x32 image,
which cost more than the augmentation's arithmetic on a virtual machine
(benchmarks/RESULTS.md). Raising both thresholds makes the allocator reuse those
blocks; the process keeps its peak heap instead. It is the usual advice for CPU
training (jemalloc or tcmalloc via LD_PRELOAD do the same), done in-process.
"""

from __future__ import annotations

import ctypes
import functools
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@functools.cache
def keep_freed_memory() -> bool:
    """Sets glibc's mmap and trim thresholds high, once per process; False where not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc: nothing to tune
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30) and mallopt(_M_TRIM_THRESHOLD, 1 << 30))
