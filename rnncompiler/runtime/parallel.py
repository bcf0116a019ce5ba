"""Splitting the batch over threads. The rows of a batch are independent sequences, so n
threads can each run the whole forward, and then the whole backward, of a slice of the
rows at once through the same compiled functions (cffi releases the GIL); the weight
gradients are the sums of the slices'. The time loop itself then runs in parallel, not
only the big GEMMs — what pays on an idle multi-core machine. On a busy shared one, use
rc.set_num_threads(1) (DESIGN decision 9).
"""
from __future__ import annotations

import concurrent.futures
import threading

import numpy as np

MIN_ROWS = 8          # narrower slices make the per-step products inefficient
MIN_WORK = 4096       # batch rows x hidden units below which threads cost more than they give

_EXECUTOR = None
_LOCK = threading.Lock()


def _executor(n):
    """A process-wide pool of at least n worker threads."""
    global _EXECUTOR
    with _LOCK:
        if _EXECUTOR is None or _EXECUTOR._max_workers < n:
            _EXECUTOR = concurrent.futures.ThreadPoolExecutor(max_workers=n,
                                                              thread_name_prefix="rnnc")
        return _EXECUTOR


def spans(B, hidden_size, n_threads):
    """[(lo, hi), ...] row slices for n_threads, or None when one thread is better."""
    n = min(n_threads, B // MIN_ROWS)
    if n < 2 or B * hidden_size < MIN_WORK:
        return None
    edges = np.linspace(0, B, n + 1).astype(int)
    return list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))


def slice_args(args, lo, hi):
    """(T, B, params, x, lengths, state rows) of batch rows lo..hi-1, contiguous."""
    T, _, flat, x, lengths, rows = args
    return (T, hi - lo, flat, np.ascontiguousarray(x[:, lo:hi]),
            None if lengths is None else np.ascontiguousarray(lengths[lo:hi]),
            None if rows is None else np.ascontiguousarray(rows[lo:hi]))


def _each(fn, items):
    """fn over items at once, on the pool (the first in this thread); results in order."""
    pool = _executor(max(len(items) - 1, 1))
    futures = [pool.submit(fn, *item) for item in items[1:]]
    first = fn(*items[0])
    return [first] + [f.result() for f in futures]


def forward(kern, args, row_spans, keep):
    """Outputs and final state rows of the whole batch, and [(slice args, workspace)]."""
    T = args[0]
    parts = [slice_args(args, lo, hi) for lo, hi in row_spans]
    works = [kern._pool.take(kern._workspace_size(keep, T, p[1]), kern.dtype) for p in parts]
    results = _each(lambda p, w: kern._run_rows(keep, p, w, threads=1), list(zip(parts, works)))
    y = np.concatenate([r[0] for r in results], axis=1)
    rows = np.concatenate([r[1] for r in results], axis=0)
    return y, rows, list(zip(parts, works, strict=True))


def backward(kern, parts, row_spans, dy, dstate_T, with_states):
    """(dparams, dx, dstate0, dstates or None) of the whole batch from its slices' tapes."""
    def one(part, span):
        (args, work), (lo, hi) = part, span
        return kern._backward_pass(
            args, work, None if dy is None else np.ascontiguousarray(dy[:, lo:hi]),
            None if dstate_T is None else np.ascontiguousarray(dstate_T[lo:hi]), with_states,
            threads=1)
    results = _each(one, list(zip(parts, row_spans, strict=True)))
    dparams = np.sum([r[0] for r in results], axis=0, dtype=kern.dtype)
    dx = np.concatenate([r[1] for r in results], axis=1)
    dstate0 = np.concatenate([r[2] for r in results], axis=0)
    dstates = np.concatenate([r[3] for r in results], axis=1) if with_states else None
    return dparams, dx, dstate0, dstates
