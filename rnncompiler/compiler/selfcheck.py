"""A newly built kernel checks itself before it is cached: its compiled forward and
backward run once on a tiny random input (T=3, two rows, one of them shorter) and are
compared with the numpy reference evaluator of the unfused step graph — the forward value
by value, step by step; each gradient block along a random direction against central
differences of the reference forward in float64 (unless the cell has derivatives of its
own, rc.activation(..., derivative=...), which rc.gradcheck checks). A disagreement names the first value
that differs and the equation that computes it (`rc.compile` raises it as CompileError).
Shared with rc.gradcheck's forward check.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .evaluator import trace

T, LENGTHS = 3, (3, 2)
# (rtol, atol) per kernel dtype: the float64 reference against float32 arithmetic
TOLERANCE = {"float64": (1e-8, 1e-10), "float32": (1e-3, 1e-5)}
EPS = 1e-6


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


def kernel_steps(kern, params, x, state0, lengths, infer=False):
    """The kernel's outputs (T, B, O) and, per step t, its states after step t (float64),
    from runs over the prefixes x[:t+1] (forward keeps only the final states); infer:
    through kern.infer (at batch 1, the batch-1 unit's path) instead of forward."""
    def run(xs, cut):
        if infer:
            return kern.infer(params, xs, state0, cut)
        res = kern.forward(params, xs, state0, cut)
        return res.outputs, res.states
    T = x.shape[0]
    outputs = np.asarray(run(x, lengths)[0], np.float64)
    after = []
    for t in range(T):
        cut = None if lengths is None else np.minimum(np.asarray(lengths), t + 1).astype(np.intc)
        after.append({s: np.asarray(v, np.float64) for s, v in run(x[:t + 1], cut)[1].items()})
    return outputs, after


def reference_steps(g, params, x, state0, lengths, fns=None):
    """The same from the numpy evaluator of the unfused step graph `g` (`fns`: its nodes'
    numpy functions, made once and shared between runs)."""
    tr = trace(g, params, x, state0, lengths, fns)
    T = x.shape[0]
    after = [{s: tr.values[t + 1]["state." + s] for s, _ in g.states}
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
        finite = np.abs(b[np.isfinite(b)])
        scale = max(float(np.max(finite, initial=0.0)), atol / rtol)
        with np.errstate(invalid="ignore"):
            diff = np.abs(a - b) / scale
        # NaN where the reference has NaN, and the same infinity, agree; else NaN differs
        same = (np.isnan(a) & np.isnan(b)) | (np.isinf(a) & (a == b))
        diff = np.where(same, 0.0, diff)
        worst = max(worst, float(np.max(diff, initial=0.0)))
        bad = np.argwhere(~(diff <= rtol))
        if bad.size and (first is None or (bad[0][0], k) < first[:2]):
            first = (int(bad[0][0]), k, what, tuple(int(i) for i in bad[0]), a, b)
    if first is None:
        return ForwardCheck(True, worst, against)
    t, _, what, index, a, b = first
    return ForwardCheck(False, worst, against, what, t, index[1], index[2],
                        float(a[index]), float(b[index]))


def first_problem(kern, g, equations):
    """None if `kern` computes what the unfused step graph `g` means, else a sentence naming
    the first value that differs and its equation (`equations`: kern.equations() as dict)."""
    rtol, atol = TOLERANCE[np.dtype(kern.dtype).name]
    kern = kern.rows()          # the C's own input rows: inputs, contexts and masks
    data, fns = _draw(kern), {}
    fwd = compare_steps(kernel_steps(kern, *data[:4]), reference_steps(g, *data[:4], fns),
                        rtol, atol, "the numpy reference evaluator")
    if not fwd.ok:
        return _forward_problem(fwd, g, equations)
    if kern._batch1:          # inference at batch 1 runs a unit of its own: row 0 alone
        params, x, state0 = data[0], data[1][:, :1], {s: v[:1] for s, v in data[2].items()}
        one = compare_steps(kernel_steps(kern, params, x, state0, None, infer=True),
                            reference_steps(g, params, x, state0, None, fns),
                            rtol, atol, "the numpy reference evaluator")
        if not one.ok:
            return _forward_problem(one, g, equations, "its inference at batch 1")
    if _hand_written_derivatives(g):
        return None        # the user's derivatives may differ: rc.gradcheck names them
    return _backward_problem(kern, g, data, rtol, atol, equations, fns)


def _hand_written_derivatives(g):
    """Whether a node calls an rc.activation with a derivative of the user's own."""
    import sympy
    return any(getattr(f, "_rnnc_has_derivative", False)
               for _, d in g.items() if d.op == "ew" and d.expr is not None
               for f in d.expr.atoms(sympy.Function))


def _draw(kern):
    """float64 parameters, x (T, 2, I), a non-zero state0 and lengths (3, 2); seeded."""
    rng = np.random.default_rng(0)
    params = {k: np.asarray(v, np.float64) for k, v in kern.init_params(seed=0).items()}
    x = rng.standard_normal((T, len(LENGTHS), kern.input_size))
    state0 = {s: 0.5 * rng.standard_normal((len(LENGTHS), n)) for s, n in kern.state_sizes.items()}
    return params, x, state0, np.array(LENGTHS, np.intc), rng


def _forward_problem(fwd, g, equations, run="its forward pass"):
    name = fwd.what[len("state "):].strip("'") if fwd.what.startswith("state ") else \
        _output_name(g)
    where = ("the outputs at step %d" if fwd.what == "outputs" else fwd.what + " after step %d") \
        % fwd.step
    return ("%s differs from the reference evaluator first at %s (batch row %d, "
            "unit %d): the kernel computed %.9g, the reference %.9g; %s"
            % (run, where, fwd.row, fwd.unit, fwd.kernel_value, fwd.reference_value,
               _equations_of(equations["forward"], name + "[t]")))


def _output_name(g):
    out = g.output
    states = {node: s for s, node in g.new_states}
    return states.get(out, "y")


def _backward_problem(kern, g, data, rtol, atol, equations, fns):
    """The first gradient block whose directional derivative along a random direction
    differs from central differences of the reference forward in float64."""
    params, x, state0, lengths, rng = data
    u_y = rng.standard_normal((T, len(LENGTHS), kern.output_size))
    u_s = {s: rng.standard_normal(v.shape) for s, v in state0.items()}
    res = kern.forward(params, x, state0, lengths)
    if not (np.isfinite(res.outputs).all() and all(np.isfinite(v).all() for v in res.states.values())):
        return None        # math that is not finite at these inputs: no differences to take
    grads = kern.backward(res, d_outputs=u_y, d_states=u_s)

    def loss(p, xx, s0):
        tr = trace(g, p, xx, s0, lengths, fns)
        return float(np.sum(u_y * tr.outputs) + sum(np.sum(u_s[s] * tr.states[s]) for s in u_s))

    # constants (trainable=False) have no gradient to check
    blocks = [("grad " + k, "δ" + k, grads.params[k], ("p", k)) for k in params
              if k in grads.params]
    blocks += [("grad x", "δx[t]", grads.x, ("x", None))]
    blocks += [("grad state0[%r]" % s, "δ%s[t-1]" % s, grads.state0[s], ("s", s)) for s in state0]
    for label, lhs, grad, (kind, name) in blocks:
        base = {"p": params[name] if kind == "p" else None, "x": x,
                "s": state0[name] if kind == "s" else None}[kind]
        v = rng.standard_normal(base.shape)
        shifted = [_shift(params, x, state0, kind, name, e * EPS * v) for e in (1, -1)]
        up, down = loss(*shifted[0]), loss(*shifted[1])
        numeric = (up - down) / (2 * EPS)
        analytic = float(np.sum(np.asarray(grad, np.float64) * v))
        scale = float(np.sum(np.abs(np.asarray(grad, np.float64) * v)))
        # central differences: truncation ~EPS^2 and the rounding of the two losses / EPS
        noise = 1e-13 * (abs(up) + abs(down)) / EPS
        if not abs(analytic - numeric) <= atol + noise + max(rtol, 1e-6) * max(abs(numeric), scale):
            return ("its backward pass gives a wrong %s: along a random direction %.9g, where "
                    "central differences of the reference evaluator give %.9g; %s"
                    % (label, analytic, numeric, _equations_of(equations["backward"], lhs)))
    return None


def _shift(params, x, state0, kind, name, delta):
    if kind == "p":
        return dict(params, **{name: params[name] + delta}), x, state0
    if kind == "x":
        return params, x + delta, state0
    return params, x, dict(state0, **{name: state0[name] + delta})


def _equations_of(rows, lhs):
    found = ["%s %s %s" % tuple(r) for r in rows if r[0] == lhs]
    if not found:
        return "no equation of %s is shown" % lhs
    return "computed by " + "; ".join(found)
