"""How many threads the kernels use. By default the big GEMMs (the products hoisted over
chunks of T·B rows, and the weight gradients after them) use every core and the time loop
runs on one thread: in-loop work threaded on a shared 2-core machine collapses when the
other core is busy. Setting a count — rc.set_num_threads(n) or $RNNC_NUM_THREADS — also
splits large batches over n threads, each running the whole loop for its rows
(parallel.py): what pays on an idle machine.
"""
from __future__ import annotations

import functools
import os

from .. import options

_num_threads = None      # set by rc.set_num_threads


@functools.lru_cache(maxsize=None)
def _cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def set_num_threads(n):
    """Use n threads: for the big GEMMs, and for slices of large batches; 1 means no
    threads at all (no BLAS threads either)."""
    global _num_threads
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError("n: expected an int >= 1, got %r" % (n,))
    _num_threads = n


def get_num_threads():
    """The current setting: rc.set_num_threads, else $RNNC_NUM_THREADS, else all cores."""
    return _num_threads or options.num_threads() or _cores()


def loop_threads():
    """Threads for the time loop (batch slices): the count set by the user, else 1."""
    return _num_threads or options.num_threads() or 1
