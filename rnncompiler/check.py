"""rc.gradcheck: compare a kernel's gradients with central finite differences of a random
linear functional of its outputs and final states (float64), or with a float64 twin.
Uses only the kernel's public attributes, so it also checks duck-typed kernels.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class GradcheckReport:
    """ok, max_rel_error and errors per block (params, x, state0.<s>)."""
    ok: bool
    max_rel_error: float
    errors: dict
    passed: dict = field(default_factory=dict)
    rtol: float = 1e-5
    atol: float = 1e-8
    reference: str = "central finite differences"

    def __str__(self):
        width = max([len(k) for k in self.errors] + [5])
        lines = ["gradcheck against %s (rtol=%g, atol=%g): %s"
                 % (self.reference, self.rtol, self.atol, "OK" if self.ok else "FAILED"),
                 "  %-*s  %12s  %s" % (width, "block", "rel. error", "")]
        for name, e in self.errors.items():
            lines.append("  %-*s  %12.3e  %s" % (width, name, e,
                                                 "ok" if self.passed.get(name, True) else "FAIL"))
        return "\n".join(lines)


def _loss(res, u_y, u_s):
    total = float(np.sum(res.outputs.astype(np.float64) * u_y))
    for s, u in u_s.items():
        total += float(np.sum(res.states[s].astype(np.float64) * u))
    return total


def _numeric(fn, arr, eps):
    """Central differences of fn() with respect to every element of arr (in place)."""
    out = np.zeros(arr.shape)
    flat, grad = arr.reshape(-1), out.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = fn()
        flat[i] = old - eps
        down = fn()
        flat[i] = old
        grad[i] = (up - down) / (2 * eps)
    return out


def _draw(kern, T, B, seed, lengths):
    rng = np.random.default_rng(seed)
    params = {k: np.asarray(v, np.float64) for k, v in kern.init_params(seed=seed).items()}
    x = rng.standard_normal((T, B, kern.input_size))
    state0 = {s: 0.5 * rng.standard_normal((B, n)) for s, n in kern.state_sizes.items()}
    u_y = rng.standard_normal((T, B, kern.output_size))
    u_s = {s: rng.standard_normal((B, n)) for s, n in kern.state_sizes.items()}
    lengths = None if lengths is None else np.asarray(lengths)
    return params, x, state0, u_y, u_s, lengths


def _compare(analytic, numeric, rtol, atol):
    errors, passed = {}, {}
    for name, a in analytic.items():
        n = numeric[name]
        diff = float(np.max(np.abs(np.asarray(a, np.float64) - n))) if n.size else 0.0
        scale = float(np.max(np.abs(n))) if n.size else 0.0
        errors[name] = diff / max(scale, atol / rtol)
        passed[name] = diff <= atol + rtol * scale
    return errors, passed


def gradcheck_kernel(kern, T=5, B=2, seed=0, lengths=None, rtol=1e-5, atol=1e-8,
                     reference=None, eps=1e-6):
    """Check a compiled kernel; float32 kernels need reference=<float64 kernel>."""
    if np.dtype(kern.dtype) != np.float64 and reference is None:
        raise ValueError("reference: a %s kernel is checked against a float64 kernel of the "
                         "same cell (reference=kern64), not finite differences"
                         % np.dtype(kern.dtype).name)
    params, x, state0, u_y, u_s, lengths = _draw(reference or kern, T, B, seed, lengths)
    res = kern.forward(params, x, state0, lengths)
    g = kern.backward(res, d_outputs=u_y, d_states=u_s)
    analytic = {k: v for k, v in g.params.items()}
    analytic["x"] = g.x
    analytic.update({"state0." + s: v for s, v in g.state0.items()})
    if reference is not None:
        res64 = reference.forward(params, x, state0, lengths)
        g64 = reference.backward(res64, d_outputs=u_y, d_states=u_s)
        expected = dict(g64.params, x=g64.x)
        expected.update({"state0." + s: v for s, v in g64.state0.items()})
        errors, passed = _compare(analytic, expected, rtol, atol)
        return _report(errors, passed, rtol, atol, "the float64 reference kernel")

    def loss():
        return _loss(kern.forward(params, x, state0, lengths), u_y, u_s)

    numeric = {k: _numeric(loss, params[k], eps) for k in params}
    numeric["x"] = _numeric(loss, x, eps)
    numeric.update({"state0." + s: _numeric(loss, state0[s], eps) for s in state0})
    errors, passed = _compare(analytic, numeric, rtol, atol)
    return _report(errors, passed, rtol, atol, "central finite differences")


def _report(errors, passed, rtol, atol, reference):
    return GradcheckReport(all(passed.values()), max(errors.values(), default=0.0), errors,
                           passed, rtol, atol, reference)


def gradcheck(cell_or_kernel, input_size=3, hidden_size=4, T=5, B=2, seed=0, sizes=None,
              lengths=None, rtol=1e-5, atol=1e-8, reference=None):
    """rc.gradcheck(cell, ...) compiles in float64 and checks every gradient; or
    rc.gradcheck(kern, T=5, B=2) checks an already compiled kernel."""
    from .dsl import Cell
    if isinstance(cell_or_kernel, Cell):
        from .pipeline import compile as compile_cell
        kern = compile_cell(cell_or_kernel, input_size, hidden_size, "float64", sizes=sizes)
    else:
        kern = cell_or_kernel
    return gradcheck_kernel(kern, T=T, B=B, seed=seed, lengths=lengths, rtol=rtol,
                            atol=atol, reference=reference)
