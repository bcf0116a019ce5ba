"""check_finite=True: find the first value of a forward or backward pass that is not
finite and name it — the variable, the step and the batch row — so that a user sees where
a cell overflows instead of a NaN at the end. Part of the runtime: numpy only.

Forward order: the inputs (params, state0, x), then the states after each step and the
outputs, earliest step first. Backward order: the seeds (d_outputs, d_states), then the
adjoints of the states and of x going back from step T-1, then the parameter gradients.
"""
from __future__ import annotations

import numpy as np

from ..errors import NonFiniteError


def first_bad_row(arr):
    """(t, b, rest of the index) of the first non-finite element of a (T, B, ...) array by
    step, then row; None if all are finite."""
    bad = ~np.isfinite(arr)
    if not bad.any():
        return None
    per_step = bad.reshape(bad.shape[0], -1).any(axis=1)
    t = int(np.argmax(per_step))
    index = tuple(int(i) for i in np.argwhere(bad[t])[0])
    return (t,) + index


def last_bad_step(arr):
    """Like first_bad_row, but the latest step first (backward runs from T-1 down)."""
    hit = first_bad_row(arr[::-1])
    return None if hit is None else (arr.shape[0] - 1 - hit[0],) + hit[1:]


def _raise(what, value, where, note=""):
    raise NonFiniteError("%s is not finite (%s)%s%s" % (what, float(value), where, note))


def check_blocks(blocks):
    """Raise for the first non-finite element of (label, array) blocks with no time axis;
    arrays of shape (B, n) name the batch row."""
    for label, arr in blocks:
        bad = np.argwhere(~np.isfinite(arr))
        if bad.size:
            index = tuple(int(i) for i in bad[0])
            where = (" at batch row %d, unit %d" % index if arr.ndim == 2 and label.startswith(
                ("state0", "d_states", "grad state0")) else " at element %s" % (index,))
            _raise(label, arr[index], where)


def check_timed(label, arr, note=""):
    """Raise for the first non-finite element of a (T, B, n) array, earliest step first."""
    hit = first_bad_row(arr)
    if hit is not None:
        _raise(label, arr[hit], " at step %d, batch row %d, unit %d" % hit, note)


def valid_steps(arr, lengths):
    """arr (T, B, ...) with the steps past each row's length set to 0: the padding, which
    the kernels never let into a result, is not checked."""
    if lengths is None:
        return arr
    keep = np.arange(arr.shape[0])[:, None] < np.asarray(lengths)[None, :]
    return np.where(keep.reshape(keep.shape + (1,) * (arr.ndim - 2)), arr, 0)


def check_forward(params, state0, x, history, outputs, lengths=None):
    """history: state name -> (T+1, B, size) states before step 0 .. after step T-1."""
    check_blocks([("params[%r]" % k, v) for k, v in params.items()])
    check_blocks([("state0[%r]" % k, v) for k, v in state0.items()])
    check_timed("x", valid_steps(x, lengths))
    hits = []
    for k, (s, hist) in enumerate(history.items()):
        hit = first_bad_row(hist[1:])
        if hit is not None:
            hits.append((hit[0], k, "state %r" % s, " after step", hist[1:], hit))
    hit = first_bad_row(outputs)
    if hit is not None:
        hits.append((hit[0], len(history), "outputs", " at step", outputs, hit))
    if hits:
        _, _, label, when, arr, hit = min(hits, key=lambda h: h[:2])
        _raise(label, arr[hit], when + " %d, batch row %d, unit %d" % hit,
               " — the first non-finite value of the forward pass; its inputs are finite")


def check_backward(d_outputs, d_states, state_adjoints, dx, grads, lengths=None):
    """state_adjoints: state name -> (T, B, size) dL/d(state after step t)."""
    if d_outputs is not None:
        check_timed("d_outputs", valid_steps(d_outputs, lengths))
    check_blocks([("d_states[%r]" % k, v) for k, v in (d_states or {}).items()])
    hits = []
    for k, (s, adj) in enumerate(state_adjoints.items()):
        hit = last_bad_step(adj)
        if hit is not None:
            hits.append((-hit[0], k, "the adjoint dL/d%s" % s, adj, hit))
    hit = last_bad_step(dx)
    if hit is not None:
        hits.append((-hit[0], len(state_adjoints), "the gradient dL/dx", dx, hit))
    if hits:
        _, _, label, arr, hit = min(hits, key=lambda h: h[:2])
        _raise(label, arr[hit], " at step %d, batch row %d, unit %d" % hit,
               " — the first non-finite adjoint going back from the last step; the seeds "
               "are finite")
    check_blocks([("grad %s" % k, v) for k, v in grads.items()])
