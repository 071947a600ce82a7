"""Giving the memory of a full pod list, or of a burst of watch events, back to the operating system.

A full list of a node's pods (10,000 pods: tens of MB of JSON and the dicts parsed from it) is
freed as soon as it is reconciled, and so is what a burst of watch events allocated, but glibc's
allocator keeps the freed pages mapped, so the producer's RSS would stay at the high-water mark
for its whole life. :mod:`producer.pods` calls :func:`release_freed` after each full list and
every thousand watch events; it runs a full collection and then glibc's ``malloc_trim(0)``, which
unmaps them (measured with ``bench/bench_producer_memory.py``). Written by hand: no maintained
library wraps one libc call; on a C library without ``malloc_trim`` (musl) only the collection runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):  # no glibc here
        return None
    return trim


def release_freed() -> None:
    """Collect garbage, then return the allocator's free pages to the operating system."""
    gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
