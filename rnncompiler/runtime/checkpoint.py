"""Checkpointed BPTT (Chen et al. 2016, "training deep nets with sublinear memory"):
`forward` keeps only the states at the start of every segment of k steps; `backward`
recomputes each segment's tape from its checkpoint, latest segment first, and runs BPTT
over it with the adjoint carried back from the segment after it. The tape then holds
T/k state rows and one segment's values instead of T steps' values, for one more forward
pass. Each segment is one call of the same compiled forward and backward, so the
gradients are the plain kernel's (up to the order in which float sums are added).
"""
from __future__ import annotations

import numpy as np


def segments(T, k):
    """[(t0, t1), ...] covering 0..T-1 in steps of k."""
    return [(t0, min(T, t0 + k)) for t0 in range(0, T, k)]


def segment_args(args, t0, t1, state_rows):
    """The (T, B, params, x, lengths, state rows) of steps t0..t1-1 alone: a row's length
    counts from t0 and ends within the segment."""
    T, B, flat, x, lengths, _ = args
    if lengths is not None:
        lengths = np.ascontiguousarray(np.clip(lengths - t0, 0, t1 - t0), dtype=np.intc)
    return t1 - t0, B, flat, x[t0:t1], lengths, state_rows


def forward(kern, args, k, work):
    """Outputs, final state rows and the state rows at the start of every segment, from
    tape-free runs of k steps."""
    T, B = args[0], args[1]
    y = np.empty((T, B, kern.output_size), kern.dtype)
    state = args[5] if args[5] is not None else np.zeros((B, kern._S), kern.dtype)
    checkpoints = []
    for t0, t1 in segments(T, k):
        checkpoints.append(state)
        y[t0:t1], state = kern._run_rows(0, segment_args(args, t0, t1, state), work)
    return y, state, checkpoints


def backward(kern, args, checkpoints, k, dy, dstate_T, with_states, work):
    """BPTT segment by segment, latest first: (dparams, dx, dstate0, dstates or None)."""
    T, B, flat = args[0], args[1], args[2]
    dparams = np.zeros(flat.size, kern.dtype)
    dx = np.empty((T, B, kern.columns.width), kern.dtype)
    dstates = np.empty((T, B, kern._S), kern.dtype) if with_states else None
    carry = dstate_T
    spans = segments(T, k)
    for (t0, t1), rows in zip(reversed(spans), reversed(checkpoints), strict=True):
        seg = segment_args(args, t0, t1, rows)
        kern._run_rows(1, seg, work)                      # the segment's tape, again
        dp, dx[t0:t1], carry, ds = kern._backward_pass(
            seg, work, None if dy is None else dy[t0:t1], carry, with_states)
        dparams += dp
        if with_states:
            dstates[t0:t1] = ds
    return dparams, dx, carry, dstates
