"""Workspaces: allocated on cache lines, and reused once their results are freed."""
from __future__ import annotations

import threading

import numpy as np

_POOL_BYTES = 1 << 30     # workspaces kept for reuse: fresh pages cost ~10 % of a forward


def aligned_empty(n, dtype, align=64):
    """An uninitialised array of n scalars (at least 1) starting on an `align`-byte
    boundary (numpy gives 16): the kernels lay the packed weights out on cache lines of
    their workspace, and a panel read across lines costs a step at batch 1 up to half
    again its time."""
    dtype = np.dtype(dtype)
    nbytes = max(n, 1) * dtype.itemsize
    raw = np.empty(nbytes + align, np.uint8)
    skip = -raw.ctypes.data % align
    return raw[skip:skip + nbytes].view(dtype)


class WorkspacePool:
    """Reuses workspaces of freed results: the kernel's tapes are large and the kernel
    zeroes nothing it reads, so recycled memory is as good as new and skips page faults."""

    def __init__(self):
        self._free, self._lock = {}, threading.Lock()
        self._held = 0           # bytes in self._free

    def take(self, n, dtype):
        with self._lock:
            free = self._free.get(n)
            if free:
                arr = free.pop()
                self._held -= arr.nbytes
                return arr
        return aligned_empty(n, dtype)

    def give(self, arr):
        with self._lock:
            if self._held + arr.nbytes <= _POOL_BYTES and not self._free.get(arr.size):
                self._free.setdefault(arr.size, []).append(arr)
                self._held += arr.nbytes
