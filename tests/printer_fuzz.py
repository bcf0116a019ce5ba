"""Differential testing of the C printer: random sympy expressions over everything the
cell language accepts, printed to C the way the kernels print them (sympy.cse, then
mathfn.CPrinter, with the kernels' helpers and compiler flags), compiled once per batch
and compared with sympy.lambdify in numpy (the reference evaluator's definition).

A disagreement counts only when it is not rounding: where the two differ by more than
the tolerance, the value is recomputed with mpmath at 50 digits and the C must be the
one that is far from it; NaN against a number, or infinities of other signs, always
count (numpy's semantics are the definition).
"""
from __future__ import annotations

import ctypes
import functools
import os
import random
import signal
import subprocess
import tempfile
from dataclasses import dataclass

import numpy as np
import sympy
from sympy.printing.codeprinter import PrintMethodNotImplementedError

from rnncompiler.compiler import build, mathfn
from rnncompiler.compiler.autodiff import Y, local_partials
from rnncompiler.compiler.codegen.elementwise import cse_lines
from rnncompiler.errors import CellError
from rnncompiler.compiler.evaluator import lambdify_node, partial

A = [sympy.Symbol("a%d" % k, real=True) for k in range(3)]
SOFTSIGN_BY_HAND = mathfn.make_activation("softsign_by_hand", lambda u: u / (1 + sympy.Abs(u)),
                                          lambda u, y: 1 / (1 + sympy.Abs(u)) ** 2)
SWISH = mathfn.make_activation("swish", lambda u: u / (1 + sympy.exp(-u)), None)

# unary forms: activations, sympy's math, and the powers users write
UNARY = [
    mathfn.Sigmoid, sympy.tanh, mathfn.Relu, sympy.exp, mathfn.Softplus, mathfn.Softsign,
    mathfn.HardSigmoid, sympy.Abs, sympy.sign, sympy.floor, sympy.ceiling, sympy.erf,
    sympy.atan, sympy.sin, sympy.cos, sympy.asinh, sympy.cbrt, sympy.Heaviside,
    SOFTSIGN_BY_HAND, SWISH,
    lambda u: sympy.log(1 + u ** 2), lambda u: sympy.sqrt(1 + u ** 2),
    lambda u: sympy.log(sympy.Abs(u) + sympy.Rational(1, 10)),
    lambda u: -u, lambda u: 1 / u, lambda u: u ** -1, lambda u: u ** -2, lambda u: u ** -3,
    lambda u: u ** 2, lambda u: u ** 3, lambda u: u ** 5, lambda u: sympy.Abs(u) ** sympy.Rational(3, 2),
    lambda u: (1 + u ** 2) ** sympy.Rational(-1, 2), lambda u: sympy.Abs(u) ** 0.75,
    lambda u: 1 / (1 + sympy.exp(-u)), lambda u: 1 / (1 + sympy.exp(u)),
    lambda u: u / (1 + sympy.Abs(u)), lambda u: 0.5 * sympy.tanh(u) + 0.5,
    lambda u: (u + 1) / 2, lambda u: mathfn.Clip(u, -1, sympy.Rational(1, 2)),
    lambda u: sympy.pi * u, lambda u: sympy.E ** u / 3,
    lambda u: sympy.Piecewise((u, u > 0), (sympy.Rational(1, 5) * u, True)),
    lambda u: sympy.Piecewise((1, u > 1), (u, u > -1)),           # no default: NaN below -1
]
BINARY = [
    lambda u, v: u + v, lambda u, v: u - v, lambda u, v: u * v, lambda u, v: u / v,
    lambda u, v: u / (1 + v ** 2), lambda u, v: sympy.Max(u, v), lambda u, v: sympy.Min(u, v, 0),
    lambda u, v: sympy.Mod(u, 1 + v ** 2), lambda u, v: sympy.atan2(u, v),
    lambda u, v: sympy.Piecewise((u, u > v), (v, True)),
    lambda u, v: sympy.Piecewise((u * v, sympy.And(u > 0, v < 1)), (u - v, True)),
    lambda u, v: 1 / (1 + sympy.exp(-u * v)), lambda u, v: (u - v) ** 2 / (1 + u ** 2),
    lambda u, v: u * sympy.exp(-v ** 2), lambda u, v: sympy.Abs(u) ** sympy.Abs(v / 4),
]
CONSTANTS = [sympy.Integer(2), sympy.Rational(1, 3), sympy.Rational(-7, 4), sympy.Float(0.1),
             sympy.pi, sympy.E, sympy.Integer(2) ** 40, sympy.Float(1e-20)]


def random_expression(rng, depth):
    """A random expression in a0, a1, a2 whose root sits at `depth`: leaves are symbols
    (sometimes constants), inner nodes the forms above."""
    if depth == 0 or rng.random() < 0.2:
        return rng.choice(A) if rng.random() < 0.85 else rng.choice(CONSTANTS) * rng.choice(A)
    if rng.random() < 0.55:
        return rng.choice(UNARY)(random_expression(rng, depth - 1))
    return rng.choice(BINARY)(random_expression(rng, depth - 1), random_expression(rng, depth - 1))


def _fixed():
    """The forms every batch starts with (random trees rarely keep them at the top: sympy
    refuses to nest a Piecewise without a default in most functions)."""
    a0, a1, a2 = A
    return [sympy.Piecewise((a0, a0 > 0), (a1, a0 < -1)), sympy.Max(sympy.log(a0), a1, a2),
            sympy.Min(sympy.log(a1), a0), sympy.Mod(a0 * 3, a1 + 4), 1 / (1 + sympy.exp(a0 * a1)),
            sympy.tanh(1 / (1 + a2 ** 2)), sympy.sign(sympy.log(a0)) + a1,
            sympy.Heaviside(sympy.log(a2)) * a0, sympy.cbrt(a0 - a1) * sympy.pi]


def expressions(seed, count, depth=4, derivatives=True):
    """`count` random expressions with their operands' derivatives as the compiler derives
    them (through y where it can), each as (what, printed form, reference form)."""
    rng = random.Random(seed)
    out, fixed = [], _fixed()
    while len(out) < count:
        try:
            e = mathfn.real_roots(sympy.sympify(fixed.pop(0) if fixed else random_expression(rng, depth)))
        except (ValueError, TypeError, NotImplementedError):
            continue      # sympy refuses to build it (a Piecewise condition it cannot fold)
        if not e.free_symbols or _not_finite(e):
            continue
        out.append(("f = %s" % e, e, e))
        if derivatives:
            try:
                partials = [(k, p.xreplace({Y: e}), partial(e, k))
                            for k, p in enumerate(local_partials(e, 3)) if p != 0]
            except (CellError, ValueError, NotImplementedError):
                continue      # e.g. Mod in its divisor: not differentiable
            out += [("d/da%d of %s" % (k, e), p, q) for k, p, q in partials
                    if not _not_finite(p) and not _not_finite(q) and _printable(p)]
    return out[:count]


def _printable(e):
    """Whether the compiler takes it (a power sympy cannot prove real differentiates
    through re() and im(): rc.compile refuses that with a CellError)."""
    try:
        mathfn.check_expression(e, "")
    except CellError:
        return False
    return True


def _not_finite(e):
    return e.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo, sympy.I)


@dataclass
class Batch:
    """The compiled C of a batch of expressions for one dtype."""
    lib: object
    dtype: np.dtype
    count: int
    skipped: frozenset = frozenset()     # expressions the printer refused


def compile_batch(exprs, dtype, workdir):
    """One shared library evaluating every expression over arrays: eval_k(n, a0, a1, a2, out)."""
    ctype = "float" if dtype == "float32" else "double"
    printer = mathfn.CPrinter(dtype, fast=True)
    parts = ["#include <math.h>\n#include <stddef.h>\n#include <stdint.h>\n#include <string.h>",
             mathfn.c_helpers(dtype, fast=True)]
    skipped = set()
    for k, (what, printed, _) in enumerate(exprs):
        try:
            lines, (value,) = cse_lines([printed], printer, ctype, "        ")
        except PrintMethodNotImplementedError:   # re() after cse: rc.compile refuses it too
            lines, value = [], "NAN"
            skipped.add(k)
        parts.append("\n".join(
            ["/* %s */" % what.replace("*/", "* /").replace("σ", "sigmoid"),
             "void eval_%d(ptrdiff_t n, const %s *A0, const %s *A1, const %s *A2, %s *out)"
             % (k, ctype, ctype, ctype, ctype), "{",
             "    for (ptrdiff_t i = 0; i < n; ++i) {",
             "        const %s a0 = A0[i], a1 = A1[i], a2 = A2[i];" % ctype]
            + lines + ["        out[i] = %s;" % value, "    }", "}"]))
    c_file = os.path.join(workdir, "exprs_%s.c" % dtype)
    with open(c_file, "w") as f:
        f.write("\n\n".join(parts) + "\n")
    so = c_file[:-2] + ".so"
    cmd = build.compiler_command(c_file, so, 1, False)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, "the printed C does not compile:\n%s" % proc.stderr[-3000:]
    return Batch(ctypes.CDLL(so), np.dtype(dtype), len(exprs), frozenset(skipped))


def run(batch, k, points):
    n = points.shape[1]
    pts = [np.ascontiguousarray(p, dtype=batch.dtype) for p in points]
    out = np.empty(n, batch.dtype)
    ptr = lambda arr: arr.ctypes.data_as(ctypes.c_void_p)  # noqa: E731
    getattr(batch.lib, "eval_%d" % k)(ctypes.c_ssize_t(n), *[ptr(p) for p in pts], ptr(out))
    return out


ORDINARY = np.random.default_rng(0).uniform(-3, 3, size=(3, 64))


def _grid(edges):
    return np.array(np.meshgrid(edges[::3], edges[1::3], edges[2::3])).reshape(3, -1)


# zeros, tiny and huge values, where exp and the powers overflow or underflow in each type
EXTREMES = {"float64": _grid([0.0, -0.0, 1e-30, -1e-30, 0.5, -1.5, 40.0, -40.0, 100.0, -100.0,
                              1e10, -1e10, 1e30, -1e30, 1e200, -1e200, 800.0, -800.0]),
            "float32": _grid([0.0, -0.0, 1e-20, -1e-20, 0.5, -1.5, 10.0, -10.0, 50.0, -50.0,
                              100.0, -100.0, 1e10, -1e10, 1e30, -1e30, 1e37, -1e37])}


@functools.lru_cache(maxsize=None)
def numpy_function(expr):
    return lambdify_node(expr, 3)          # slow (sympy prints Piecewise carefully): once


def reference(expr, points, dtype=np.float64):
    """numpy's value of expr in the C's type (float32 math where numpy keeps it)."""
    with np.errstate(all="ignore"):
        out = numpy_function(expr)(*points.astype(dtype))
    return np.broadcast_to(np.asarray(out, dtype=np.float64), points.shape[1:])


_MP = None


def _mpmath_functions():
    """The cell language's functions in mpmath, at the working precision."""
    import mpmath as mp
    return {"Sigmoid": lambda u: 1 / (1 + mp.exp(-u)), "Softplus": lambda u: mp.log1p(mp.exp(u)),
            "Softsign": lambda u: u / (1 + abs(u)), "Relu": lambda u: u if u > 0 else mp.mpf(0),
            "HardSigmoid": lambda u: min(max(u / 6 + mp.mpf(1) / 2, mp.mpf(0)), mp.mpf(1)),
            "Clip": lambda u, lo, hi: min(max(u, lo), hi),
            "Cbrt": lambda u: mp.sign(u) * mp.cbrt(abs(u)),
            "Heaviside": lambda u, h=mp.mpf(1) / 2: mp.mpf(0) if u < 0 else (mp.mpf(1) if u > 0 else h),
            "sign": mp.sign}


@functools.lru_cache(maxsize=None)
def mpmath_function(expr):
    return sympy.lambdify(A, mathfn.expand_activations(expr), modules=[_mpmath_functions(), "mpmath"])


class _TooSlow(Exception):
    pass


def _too_slow(signum, frame):
    raise _TooSlow()


def precise(expr, point, seconds=0.5):
    """expr at one point with mpmath at 50 digits: NaN where it is not real and finite,
    None where it takes longer than `seconds` (exp(exp(1e200)) would need 10^200 digits)."""
    import mpmath as mp
    old = signal.signal(signal.SIGALRM, _too_slow)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        with mp.workdps(50):
            v = complex(mpmath_function(expr)(*[mp.mpf(float(p)) for p in point]))
    except _TooSlow:
        return None                        # unknown: never counted against the C
    except (TypeError, ValueError, ZeroDivisionError, OverflowError, NameError, KeyError,
            AttributeError):
        return float("nan")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    return v.real if abs(v.imag) <= 1e-30 * max(1.0, abs(v.real)) else float("nan")


def disagreements(batch, exprs, points, rtol, kind):
    """(what, point, C value, numpy value) where the C is wrong beyond rounding: against
    numpy's value of the printed expression itself, or (kind "derivative") of the same
    derivative taken by the reference evaluator, which may be written otherwise."""
    found = []
    cast = points.astype(batch.dtype).astype(np.float64)   # the points the C really sees
    for k, (what, printed, truth) in enumerate(exprs):
        if kind == "derivative" and truth is printed or k in batch.skipped:
            continue
        if batch.dtype == np.float32 and printed.has(*_JUMPS):
            # float32 rounds erf(5) to 1, and floor(...) or a branch (x < 1) then jumps
            # where numpy, computing erf in double, does not: jumps are checked in float64
            continue
        if kind == "extreme" and not what.startswith("f = "):
            # a derivative's formula cancels at tiny and huge inputs (d/da of x/a0 at
            # a0 = 1e-30): the C's rounding, amplified, is no printer fault
            continue
        with np.errstate(all="ignore"):
            c = run(batch, k, cast).astype(np.float64)
        try:
            r = reference(truth if kind == "derivative" else printed, cast, batch.dtype)
        except (ValueError, TypeError, KeyError, NotImplementedError):
            # sympy's numpy printer cannot write it (a Max of an unevaluated activation of
            # a number is "not comparable"): nothing to compare the C with
            continue
        wrong = [i for i in np.flatnonzero(~_close(c, r, rtol))
                 if _c_is_wrong(c[i], r[i], printed, cast[:, i], rtol, batch.dtype, kind, what)]
        # a fault of the printer shows at many points; rounding amplified by a step
        # function (floor of a tanh that rounds to 1 in float32) or an overflow inside a
        # formula at the extreme points shows at one or two
        if len(wrong) >= (1 if batch.dtype == np.float64 and kind != "extreme" else 3):
            i = wrong[0]
            found.append((what, cast[:, i].tolist(), c[i], r[i], len(wrong)))
    return found


def _ill_conditioned(expr, point, m, rtol, dtype):
    """Whether moving the inputs by a few units in the last place of the C's type moves
    the exact value by more than the tolerance (sin of a huge exp, say): then no printer
    can be judged at this point."""
    eps = 4 * float(np.finfo(dtype).eps)
    for sign in (1, -1):
        moved = precise(expr, point * (1 + sign * eps))
        if m is None or moved is None or not abs(moved - m) <= rtol * max(abs(m), 1.0):
            return True
    return False


_JUMPS = (sympy.floor, sympy.ceiling, sympy.sign, sympy.Heaviside, sympy.Piecewise, sympy.Mod)


def _close(c, r, rtol):
    both_nan = np.isnan(c) & np.isnan(r)
    same_inf = np.isinf(c) & (c == r)
    with np.errstate(all="ignore"):
        near = np.abs(c - r) <= rtol * np.maximum(np.abs(r), 1.0)
    return both_nan | same_inf | near


def _c_is_wrong(c, r, expr, point, rtol, dtype, kind, what="f = "):
    """Whether C's c is wrong where numpy gave r: judged against the exact value. Where
    either is not finite, only at ordinary points (at extreme ones an overflow inside an
    expression gives NaN or inf depending on how a formula is arranged) and only where
    the exact value is far from overflow; a derivative numpy cannot evaluate is skipped."""
    if np.isnan(r) and np.isfinite(c):
        # a number where numpy says undefined: wrong if the math is undefined there too
        # (a Piecewise with no branch that holds, a NaN that Max dropped)
        # (not for derivatives: at a kink their formulas meet 0 * inf, exactly as well)
        m = precise(expr, point)
        return kind == "ordinary" and what.startswith("f = ") and m is not None and np.isnan(m)
    if not (np.isfinite(c) and np.isfinite(r)) and (kind != "ordinary" or not np.isfinite(r)):
        return False
    m = precise(expr, point)
    if m is None or not np.isfinite(m) or abs(m) > float(np.finfo(dtype).max) / 1e8:
        return False                          # no real value to arbitrate with
    if _ill_conditioned(expr, point, m, rtol, dtype):
        return False
    if not np.isfinite(c):
        return abs(r - m) <= rtol * max(abs(m), 1.0)
    slack = 10 if dtype == np.float64 else 100
    return abs(c - m) > slack * max(abs(r - m), rtol * max(abs(m), 1.0))


def check(seed, count, dtypes=("float64", "float32"), depth=4):
    """Every disagreement found over `count` expressions and derivatives, per dtype."""
    exprs = expressions(seed, count, depth)
    found = []
    with tempfile.TemporaryDirectory() as tmp:
        for dtype in dtypes:
            batch = compile_batch(exprs, dtype, tmp)
            rtol = 1e-9 if dtype == "float64" else 1e-3
            # extreme points in float64 only: numpy's float32 math turns double wherever a
            # numpy scalar meets it (exp(-2)/a0**2 overflows in float32, not there)
            kinds = [("ordinary", ORDINARY), ("derivative", ORDINARY)]
            kinds += [("extreme", EXTREMES[dtype])] if dtype == "float64" else []
            for kind, points in kinds:
                found += [(dtype, kind) + d for d in disagreements(batch, exprs, points, rtol, kind)]
    return exprs, found
