"""How many threads the kernels use for their big GEMMs (the products hoisted over chunks
of T·B rows, and the weight gradients after them). The time loop itself always runs on
one thread: small in-loop GEMMs on a shared 2-core machine collapse when threaded."""
from __future__ import annotations

import os

_num_threads = None


def _default():
    value = os.environ.get("RNNC_NUM_THREADS")
    if value:
        try:
            n = int(value)
        except ValueError:
            raise ValueError("RNNC_NUM_THREADS: expected an int >= 1, got %r" % value) from None
        if n < 1:
            raise ValueError("RNNC_NUM_THREADS: expected an int >= 1, got %r" % value)
        return n
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_num_threads(n):
    """Threads for the hoisted GEMMs; 1 means no BLAS threads at all."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError("n: expected an int >= 1, got %r" % (n,))
    _num_threads = n


def get_num_threads():
    """The current setting: rc.set_num_threads, else $RNNC_NUM_THREADS, else all cores."""
    global _num_threads
    if _num_threads is None:
        _num_threads = _default()
    return _num_threads
