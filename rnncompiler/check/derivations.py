"""Per-equation checks: every derived partial ∂f/∂a of every fused elementwise node, and
every hand-written activation derivative, evaluated at sampled points and compared with
central differences of the forward expression (and, for hand-written derivatives, with
sympy's own derivative). A wrong one is named with its equation, its derivative as
derived, and a numeric estimate.

The partials are those the compiled kernel uses: `autodiff.differentiate` of the fused
step graph. The sample points are the values the operands take in a run of the cell, so
they lie where the cell works (and inside the domain of logs and roots).
"""
from __future__ import annotations

import numpy as np
import sympy

from ..compiler import mathfn
from ..compiler.evaluator import lambdify_node, partial, trace
from .report import ActivationCheck, PartialCheck

MAX_POINTS = 24
SMOOTH = 1e-5       # two step sizes must agree this well, or the point is near a kink


def central(f, args, k, h):
    """(f(.., a_k + h, ..) - f(.., a_k - h, ..)) / 2h, vectorised over points."""
    up = list(args)
    down = list(args)
    up[k] = args[k] + h
    down[k] = args[k] - h
    return (np.asarray(f(*up), np.float64) - np.asarray(f(*down), np.float64)) / (2 * h)


def smooth_estimate(f, args, k):
    """Central differences in a_k and a mask of the points where f is smooth enough there
    for them to mean something (two step sizes agree; kinks of relu, clip, |u| are not)."""
    h = 1e-6 * np.maximum(1.0, np.abs(args[k]))
    with np.errstate(all="ignore"):
        d1 = central(f, args, k, h)
        d2 = central(f, args, k, 4 * h)
    ok = np.isfinite(d1) & np.isfinite(d2) & (np.abs(d1 - d2) <= SMOOTH * np.maximum(1, np.abs(d1)))
    return d1, ok


def _sample(values, n, rng):
    """Up to n indices of a flat array of points, chosen without replacement."""
    return np.sort(rng.choice(values, size=min(n, values), replace=False))


def _rel(derived, numeric, rtol, atol):
    diff = np.abs(derived - numeric)
    scale = float(np.max(np.abs(numeric), initial=0.0))
    worst = int(np.argmax(np.where(np.isfinite(diff), diff, np.inf)))
    d = float(diff[worst]) if np.isfinite(diff[worst]) else float("inf")
    return d / max(scale, atol / rtol), d <= atol + rtol * scale, worst


def _names(g):
    from ..compiler.equations import display_names
    return {n: v[0] for n, v in display_names(g).items()}


def _text(expr, args=(), names=None, node=None):
    """An expression in the names of the docs: operands a_k by their values (c[t-1]),
    y by the node's name, named activations by their names."""
    from ..compiler import autodiff
    named = {f: sympy.Function(f._rnnc_name)(*f.args) for f in expr.atoms(sympy.Function)
             if hasattr(f, "_rnnc_name")}
    subs = {sympy.Symbol("a%d" % k, real=True): sympy.Symbol(names[a], real=True)
            for k, a in enumerate(args)}
    if node is not None:
        subs[autodiff.Y] = sympy.Symbol(names[node], real=True)
    return str(expr.xreplace(named).xreplace(subs))


def _operand_points(g, tr, node, rng):
    """Operand values (one flat array each) and the node's values at sampled points."""
    d = g[node]
    B = tr.valid.shape[1]
    cols = [[] for _ in d.args]
    ys = []
    for t, val in enumerate(tr.values):
        for k, a in enumerate(d.args):
            cols[k].append(np.broadcast_to(np.asarray(val[a], np.float64), (B, d.size)).ravel())
        ys.append(val[node].ravel())
    cols = [np.concatenate(c) for c in cols]
    pick = _sample(cols[0].size if cols else 0, MAX_POINTS, rng)
    return [c[pick] for c in cols], np.concatenate(ys)[pick]


def check_partials(g, params, x, state0, lengths, rtol, atol, rng):
    """A PartialCheck for every operand of every fused elementwise node of `g` (the
    unfused step graph)."""
    from ..compiler import autodiff  # the graph stages load only when a check needs them
    from ..compiler.graph import fuse_elementwise
    fg = fuse_elementwise(g)
    bwd = autodiff.differentiate(fg)
    names = _names(fg)
    fns = {}                       # the numpy function of each fused node, made by trace
    tr = trace(fg, params, x, state0, lengths, fns)
    out = []
    for op in bwd.ops:
        if not isinstance(op, autodiff.EwGrad):
            continue
        d = fg[op.node]
        args, expr = d.args, d.expr
        ops, y = _operand_points(fg, tr, op.node, rng)
        f = fns[op.node]
        given = {k: c.xreplace({autodiff.G: sympy.S.One}) for k, c in op.contributions}
        equation = "%s = %s" % (names[op.node], _text(expr, args, names))
        for k, a in enumerate(args):
            if fg[a].op == "param" and fg[a].frozen:
                continue        # a constant (trainable=False): its partial is never derived
            p = given.get(k, sympy.S.Zero)
            fn = lambdify_node(p, len(args), extra=(autodiff.Y,))
            with np.errstate(all="ignore"):
                derived = np.broadcast_to(np.asarray(fn(*ops, y), np.float64), y.shape)
            numeric, smooth = smooth_estimate(f, ops, k)
            keep = np.flatnonzero(smooth)
            check = PartialCheck(op.node, d.where, equation, names[op.node], names[a],
                                 _text(p, args, names, op.node), 0.0, True, int(keep.size))
            if keep.size:
                err, ok, w = _rel(derived[keep], numeric[keep], rtol, atol)
                i = keep[w]
                check.error, check.ok = err, bool(ok)
                check.at = {names[b]: float(ops[j][i]) for j, b in enumerate(args)}
                check.derived_value, check.numeric_value = float(derived[i]), float(numeric[i])
            out.append(check)
    return out


# ---------------------------------------------------------------- hand-written derivatives

def _hand_written(g):
    """name -> (activation class, [argument expressions with their nodes]) for every named
    activation with a hand-written derivative in the unfused graph."""
    found = {}
    for n in g:
        expr = g[n].expr
        if expr is None:
            continue
        for f in sorted(expr.atoms(sympy.Function), key=str):
            if getattr(f, "_rnnc_has_derivative", False):
                found.setdefault(f._rnnc_name, (type(f), []))[1].append((n, f.args[0]))
    return found


def _arguments(g, tr, uses):
    """The values each activation's argument takes in the run (a flat array)."""
    out = []
    for node, arg in uses:
        d = g[node]
        fn = lambdify_node(arg, len(d.args))
        for val in tr.values:
            shape = (val["x"].shape[0], d.size)
            ops = [np.broadcast_to(np.asarray(val[a], np.float64), shape) for a in d.args]
            with np.errstate(all="ignore"):
                out.append(np.broadcast_to(np.asarray(fn(*ops), np.float64), shape).ravel())
    return np.concatenate(out) if out else np.zeros(0)


def check_activations(g, params, x, state0, lengths, rtol, atol, rng):
    """An ActivationCheck per named activation with a hand-written derivative."""
    found = _hand_written(g)
    if not found:
        return []
    tr = trace(g, params, x, state0, lengths)
    u = sympy.Symbol("a0", real=True)
    out = []
    for name, (cls, uses) in sorted(found.items()):
        fu = cls(u)
        forward = mathfn.expand_activations(sympy.sympify(fu._rnnc_forward(u)))
        given = mathfn.expand_activations(sympy.sympify(fu.fdiff()))
        truth = partial(forward, 0)
        seen = _arguments(g, tr, uses)
        pts = np.concatenate([np.linspace(-3, 3, 13), seen[_sample(seen.size, MAX_POINTS, rng)]])
        f, fg, ft = (lambdify_node(e, 1) for e in (forward, given, truth))
        with np.errstate(all="ignore"):
            gv = np.broadcast_to(np.asarray(fg(pts), np.float64), pts.shape)
            tv = np.broadcast_to(np.asarray(ft(pts), np.float64), pts.shape)
        numeric, smooth = smooth_estimate(f, [pts], 0)
        keep = np.flatnonzero(smooth & np.isfinite(tv))
        rename = {u: sympy.Symbol("u", real=True)}
        check = ActivationCheck(name, str(forward.xreplace(rename)), str(given.xreplace(rename)),
                                str(truth.xreplace(rename)), 0.0, True, int(keep.size))
        if keep.size:
            e1, ok1, w1 = _rel(gv[keep], numeric[keep], rtol, atol)
            e2, ok2, w2 = _rel(gv[keep], tv[keep], rtol, atol)
            i = keep[w1 if e1 >= e2 else w2]
            check.error, check.ok = max(e1, e2), bool(ok1 and ok2)
            check.at, check.given_value = float(pts[i]), float(gv[i])
            check.sympy_value, check.numeric_value = float(tv[i]), float(numeric[i])
        out.append(check)
    return out
