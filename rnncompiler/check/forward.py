"""The forward pass checked before any gradient: the kernel's outputs and its states after
every step against the numpy reference evaluator (or the float64 twin). Gradients are of
the function the kernel computes; when that function is wrong, no backward can be right,
and the report says where the forward first differs instead of blaming the backward."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class ForwardCheck:
    """The first value of the kernel's forward pass that differs from the reference (by
    step, then outputs before states), or ok: what, step, batch row, unit and both values;
    error is the largest relative difference over the whole run."""
    ok: bool
    error: float
    against: str
    what: str = ""
    step: int = -1
    row: int = -1
    unit: int = -1
    kernel_value: float = 0.0
    reference_value: float = 0.0


def kernel_steps(kern, params, x, state0, lengths):
    """The kernel's outputs (T, B, O) and, per step t, its states after step t (float64),
    from runs over the prefixes x[:t+1] (forward keeps only the final states)."""
    T = x.shape[0]
    outputs = np.asarray(kern.forward(params, x, state0, lengths).outputs, np.float64)
    after = []
    for t in range(T):
        cut = None if lengths is None else np.minimum(np.asarray(lengths), t + 1).astype(np.intc)
        res = kern.forward(params, x[:t + 1], state0, cut)
        after.append({s: np.asarray(v, np.float64) for s, v in res.states.items()})
    return outputs, after


def reference_steps(g, params, x, state0, lengths):
    """The same from the numpy evaluator of the unfused step graph `g`."""
    from ..evaluator import trace
    tr = trace(g, params, x, state0, lengths)
    T = x.shape[0]
    after = [{s: tr.values[t + 1]["state." + s] for s, _ in g.graph["states"]}
             for t in range(T - 1)] + [tr.states]
    return tr.outputs, after


def compare_steps(kernel, reference, rtol, atol, against):
    """A ForwardCheck of (outputs, states after each step) against the reference's."""
    (ky, kafter), (ry, rafter) = kernel, reference
    series = [("outputs", ky, ry)] + [
        ("state %r" % s, np.stack([a[s] for a in kafter]), np.stack([a[s] for a in rafter]))
        for s in rafter[0]]
    worst, first = 0.0, None
    for k, (what, a, b) in enumerate(series):
        scale = max(float(np.max(np.abs(b), initial=0.0)), atol / rtol)
        diff = np.abs(a - b) / scale
        worst = max(worst, float(np.max(diff, initial=0.0)))
        bad = np.argwhere(~(diff <= rtol))         # NaN counts as a difference
        if bad.size and (first is None or (bad[0][0], k) < first[:2]):
            first = (int(bad[0][0]), k, what, tuple(int(i) for i in bad[0]), a, b)
    if first is None:
        return ForwardCheck(True, worst, against)
    t, _, what, index, a, b = first
    return ForwardCheck(False, worst, against, what, t, index[1], index[2],
                        float(a[index]), float(b[index]))


def check_forward(kern, params, x, state0, lengths, rtol, atol, graph=None, twin=None):
    """A ForwardCheck of `kern` against the evaluator of `graph`, else against `twin`."""
    mine = kernel_steps(kern, params, x, state0, lengths)
    if graph is not None:
        return compare_steps(mine, reference_steps(graph, params, x, state0, lengths),
                             rtol, atol, "the numpy reference evaluator")
    return compare_steps(mine, kernel_steps(twin, params, x, state0, lengths), rtol, atol,
                         "the float64 reference kernel")
