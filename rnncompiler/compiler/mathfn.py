"""The elementwise function table: each activation as a sympy function with a stable
derivative, its C form and its numpy form (one row each).

Sympy would differentiate 1/(1+exp(-u)) into exp(-u)/(1+exp(-u))**2, which overflows to
NaN for u <= -89 in float32; so the activations are sympy Functions of their own whose
derivatives are written through their outputs (sigma' = sigma(1 - sigma)) or as stable
closed forms, and whose C forms are numerically stable.
"""
from __future__ import annotations

import math

import numpy as np
import sympy
from sympy.core.function import AppliedUndef
from sympy.printing.c import C99CodePrinter
from sympy.printing.precedence import PRECEDENCE
from sympy.codegen.ast import real, float32, float64

from ..errors import CellError
from . import csrc


def _step(u, strict_lo, lo=0, hi=None):
    """Indicator of lo < u (or lo <= u), optionally u <= hi, as a Piecewise."""
    cond = (u > lo) if strict_lo else (u >= lo)
    if hi is not None:
        cond = sympy.And(cond, u <= hi)
    return sympy.Piecewise((1, cond), (0, True))


def _latex_call(head, f, printer, exp=None):
    """LaTeX of f(u), or f^{exp}(u) when sympy prints a power of it."""
    power = "^{%s}" % exp if exp is not None else ""
    return r"%s%s\left(%s\right)" % (head, power, printer._print(f.args[0]))


class RealFunction(sympy.Function):
    """A function real on real arguments: sympy then differentiates |f(u)| as
    sign(f(u)) f'(u), not through re() and im(), which have no C form."""

    def _eval_is_real(self):
        return self.args[0].is_real


class Sigmoid(RealFunction):
    """sigma(u) = 1 / (1 + exp(-u)); sigma' = sigma (1 - sigma)."""
    nargs = 1

    def fdiff(self, argindex=1):
        return self * (1 - self)

    def _latex(self, printer, exp=None):
        return _latex_call(r"\sigma", self, printer, exp)

    def _sympystr(self, printer):
        return "σ(%s)" % printer._print(self.args[0])


class Softplus(RealFunction):
    """softplus(u) = log(1 + exp(u)), computed as max(u, 0) + log1p(exp(-|u|))."""
    nargs = 1

    def fdiff(self, argindex=1):
        return Sigmoid(self.args[0])

    def _latex(self, printer, exp=None):
        return _latex_call(r"\operatorname{softplus}", self, printer, exp)


class Softsign(RealFunction):
    """softsign(u) = u / (1 + |u|); derivative 1 / (1 + |u|)^2."""
    nargs = 1

    def fdiff(self, argindex=1):
        return 1 / (1 + sympy.Abs(self.args[0])) ** 2


class HardSigmoid(RealFunction):
    """PyTorch's hardsigmoid: clip(u/6 + 1/2, 0, 1); derivative 1/6 on (-3, 3), else 0."""
    nargs = 1

    def fdiff(self, argindex=1):
        u = self.args[0]
        return sympy.Piecewise((sympy.Rational(1, 6), sympy.And(u > -3, u < 3)), (0, True))


class Relu(RealFunction):
    """relu(u) = max(u, 0); relu'(0) = 0 as in PyTorch."""
    nargs = 1

    def fdiff(self, argindex=1):
        return _step(self.args[0], strict_lo=True)


class Cbrt(RealFunction):
    """The real cube root (-2 at -8), as C's cbrt and numpy's cbrt; derivative
    1 / (3 cbrt(u)^2). sympy's u**(1/3) is the principal (complex) root: real_roots()
    rewrites it into this function, so that the value, its derivative, the C and the
    reference agree on negative u."""
    nargs = 1

    def fdiff(self, argindex=1):
        return 1 / (3 * self ** 2)

    def _latex(self, printer, exp=None):
        return r"\sqrt[3]{%s}" % printer._print(self.args[0]) + ("^{%s}" % exp if exp else "")

    def _sympystr(self, printer):
        return "cbrt(%s)" % printer._print(self.args[0])


class Clip(RealFunction):
    """clip(u, lo, hi) with constant bounds; derivative 1 on [lo, hi] as torch.clamp."""
    nargs = 3

    def fdiff(self, argindex=1):
        if argindex != 1:
            return sympy.S.Zero
        u, lo, hi = self.args
        return _step(u, strict_lo=False, lo=lo, hi=hi)


# name -> (sympy class, C body over `u` with F the literal suffix, numpy function).
# The C helpers are static inline functions named rnnc_<name> (double) / rnnc_<name>f.
FUNCTIONS = {
    "Sigmoid": (Sigmoid,
                "const real e = EXP(-FABS(u)), s = 1 / (1 + e); return u >= 0 ? s : e * s;",
                lambda u: np.where(u >= 0, 1 / (1 + np.exp(-np.abs(u))),
                                   np.exp(-np.abs(u)) / (1 + np.exp(-np.abs(u))))),
    "Softplus": (Softplus,
                 "return (u > 0 ? u : 0) + LOG1P(EXP(-FABS(u)));",
                 lambda u: np.maximum(u, 0) + np.log1p(np.exp(-np.abs(u)))),
    "Softsign": (Softsign,
                 "return u / (1 + FABS(u));",
                 lambda u: u / (1 + np.abs(u))),
    "HardSigmoid": (HardSigmoid,
                    "const real v = u / 6 + (real)0.5; return v < 0 ? 0 : (v > 1 ? 1 : v);",
                    lambda u: np.clip(u / 6 + 0.5, 0, 1)),
    "Relu": (Relu,
             "return u <= 0 ? 0 : u;",        # NaN stays NaN, as in numpy and torch
             lambda u: np.where(u > 0, u, np.where(u != u, u, 0.0))),   # +0 below, as C
    "Cbrt": (Cbrt, "return CBRT(u);", np.cbrt),
}


def mod_derivatives(expr):
    """expr with sympy's unevaluated derivatives of Mod(u, v) = u - v floor(u/v) written
    out: du - floor(u/v) dv, PyTorch's choice for remainder (floor's jumps count 0)."""
    def is_mod_derivative(e):
        return isinstance(e, sympy.Derivative) and isinstance(e.expr, sympy.Mod)

    def written_out(e):
        (u, v), s = e.expr.args, e.variables
        return sympy.diff(u, *s) - sympy.floor(u / v) * sympy.diff(v, *s)
    return expr.replace(is_mod_derivative, written_out)


def real_roots(expr):
    """expr with every u**(p/3) written as cbrt(u)**p: the cell language means the real
    cube root, which C's cbrt computes, where sympy's power is the principal root."""
    def is_cube_root(e):
        return e.is_Pow and e.exp.is_Rational and e.exp.q == 3

    return expr.replace(is_cube_root, lambda e: Cbrt(e.base) ** e.exp.p)


def _np_clip(u, lo, hi):
    return np.minimum(np.maximum(u, lo), hi)


NUMPY_FUNCTIONS = {name: row[2] for name, row in FUNCTIONS.items()}
NUMPY_FUNCTIONS["Clip"] = _np_clip
# C99 functions numpy lacks: the reference evaluator takes them from math, element by element
for _name in ("erf", "erfc", "gamma"):
    NUMPY_FUNCTIONS[_name] = np.vectorize(getattr(math, _name), otypes=[float])
NUMPY_FUNCTIONS["loggamma"] = np.vectorize(math.lgamma, otypes=[float])
# numpy's own step function: sympy's numpy printer would rewrite Heaviside into a Piecewise,
# which fails on conditions in several variables
NUMPY_FUNCTIONS["Heaviside"] = lambda u, h=0.5: np.heaviside(u, h)


def c_helpers(dtype, fast=False, prelude=True):
    """The C definitions of the elementwise helpers for one dtype ("float32"/"float64"):
    one per activation row of FUNCTIONS and the NaN-keeping ones (csrc/nan_keeping.h);
    fast: exp, tanh, log and log1p of csrc/fastmath.h instead of libm's; prelude: with the
    #defines that choose the real type first (render_c emits them itself)."""
    f = dtype == "float32"
    suffix = "f" if f else ""
    ctype = "float" if f else "double"
    exp = "rnnc_exp" if fast else "exp"
    macros = {"EXP": exp, "LOG1P": "rnnc_log1p" if fast else "log1p", "FABS": "fabs",
              "FMAX": "fmax", "FMIN": "fmin", "CBRT": "cbrt"}
    out = []
    for name, (_, body, _) in FUNCTIONS.items():
        for macro, fn in macros.items():
            body = body.replace(macro + "(", fn + suffix + "(")
        body = body.replace("(real)", "(%s)" % ctype).replace("real ", ctype + " ")
        out.append("static inline %s rnnc_%s%s(%s u) { %s }"
                   % (ctype, name.lower(), suffix, ctype, body))
    parts = [csrc.real(dtype)] if prelude else []
    parts += [csrc.source("inline.h")] + ([csrc.source("fastmath.h")] if fast else [])
    parts += ["\n".join(out).replace("static inline ", "RNNC_INLINE "), csrc.source("nan_keeping.h")]
    return "\n".join(parts)


class CPrinter(C99CodePrinter):
    """C99 printer for one real type, with the semantics of numpy (the reference): every
    number a literal of that type (no integer division, no M_PI outside POSIX), a
    quotient's denominator parenthesised, Max/Min/sign/Heaviside keeping NaN, Mod the
    floored modulo, a Piecewise without a default NaN where no branch holds, and
    u**(1/3) the principal root (NaN below 0; the cell language's cube root is Cbrt)."""

    def __init__(self, dtype="float64", fast=False):
        alias = float32 if dtype == "float32" else float64
        suffix = "f" if dtype == "float32" else ""
        user = {f: "rnnc_" + f + suffix for f in ("exp", "tanh", "log", "log1p")} if fast else {}
        super().__init__({"type_aliases": {real: alias}, "strict": True, "user_functions": user,
                          "math_macros": {}})
        self._suffix = suffix
        self._dtype = np.float32 if dtype == "float32" else np.float64

    def _helper(self, name, args):
        return "rnnc_%s%s(%s)" % (name, self._suffix, ", ".join(self._print(a) for a in args))

    def _print_Function(self, expr):
        name = type(expr).__name__
        if name in FUNCTIONS or name == "Clip":
            return self._helper(name.lower(), expr.args)
        return super()._print_Function(expr)

    def _literal(self, value):
        """A real literal of the kernel's type: INFINITY/NAN where the type has no such
        finite number, 0 where it underflows."""
        v = self._dtype(value)
        if v != v:
            return "NAN"
        if np.isinf(v):
            return "INFINITY" if v > 0 else "-INFINITY"
        text = repr(float(v)) if self._dtype is np.float64 else str(v)   # shortest round trip
        if "e" not in text and "." not in text:
            text += ".0"
        return text + ("F" if self._suffix else "")

    def _print_Integer(self, expr):
        return self._literal(float(expr) if abs(expr) < 2**1000 else math.copysign(math.inf, expr))

    def _print_Float(self, expr):
        return self._literal(float(expr))

    def _print_Rational(self, expr):
        p, q = int(expr.p), int(expr.q)
        if abs(p) < 2**24 and q < 2**24:       # exact in both types: one rounding
            return "%s/%s" % (self._literal(p), self._literal(q))
        return self._literal(float(expr))

    def _print_NumberSymbol(self, expr):
        return self._literal(float(expr.evalf(20)))

    _print_Pi = _print_Exp1 = _print_EulerGamma = _print_Catalan = _print_GoldenRatio = \
        _print_TribonacciConstant = _print_NumberSymbol

    def _print_Pow(self, expr):
        base, e = expr.args
        if e.is_Integer and 2 <= int(e) <= 4:
            b = self.parenthesize(base, 100)  # always parenthesised
            return "(" + "*".join([b] * int(e)) + ")"
        if e.is_Integer and -4 <= int(e) <= -1:
            # the denominator as one operand: 1/(1 + exp(u)), not 1/1 + exp(u)
            den = self.parenthesize(base ** (-e), PRECEDENCE["Mul"])
            return "(%s/%s)" % (self._literal(1), den)
        # u**0.5 is sqrt in numpy too (NaN at -inf, where pow gives inf)
        if e.is_Number and float(e) == 0.5:
            return "sqrt%s(%s)" % (self._suffix, self._print(base))
        if e.is_Number and float(e) == -0.5:
            return "(%s/sqrt%s(%s))" % (self._literal(1), self._suffix, self._print(base))
        if base == sympy.E:
            return self._print(sympy.exp(e, evaluate=False))
        # pow: NaN for a negative base and a fractional exponent, as numpy (not cbrt)
        return "pow%s(%s, %s)" % (self._suffix, self._print(base), self._print(e))

    def _print_Mod(self, expr):
        return self._helper("mod", expr.args)

    def _nested(self, name, args):
        text = self._print(args[-1])
        for a in reversed(args[:-1]):
            text = "rnnc_%s%s(%s, %s)" % (name, self._suffix, self._print(a), text)
        return text

    def _print_Max(self, expr):
        return self._nested("max", expr.args)

    def _print_Min(self, expr):
        return self._nested("min", expr.args)

    def _print_Abs(self, expr):
        # sympy writes C's integer abs() for integer-valued arguments (|sign(u)|), which
        # truncates a double; the kernels compute in the real type throughout
        return "fabs%s(%s)" % (self._suffix, self._print(expr.args[0]))

    def _print_sign(self, expr):
        return self._helper("sign", expr.args)

    def _print_Heaviside(self, expr):
        u, *h = expr.args
        return self._helper("heaviside", [u, h[0] if h else sympy.Rational(1, 2)])

    def _print_BooleanTrue(self, expr):
        return "1"                  # sympy's `true` needs <stdbool.h>

    def _print_BooleanFalse(self, expr):
        return "0"

    def _print_Piecewise(self, expr):
        # one line: (c0 ? e0 : (c1 ? e1 : e2)); NaN where no condition holds, as numpy
        pieces = list(expr.args)
        text = "NAN"
        if pieces[-1].cond == True:  # noqa: E712 (sympy's true)
            text = self._print(pieces.pop().expr)
        for value, cond in reversed(pieces):
            text = "(%s ? %s : %s)" % (self._print(cond), self._print(value), text)
        return text


def check_expression(expr, where, what=None):
    """Raise CellError unless `expr` is real elementwise math that C and numpy can compute."""
    undefined = sorted(str(f.func) for f in expr.atoms(AppliedUndef))
    if undefined:
        raise CellError("%s: the function %s has no definition (an undefined sympy Function "
                        "cannot be differentiated or printed as C); give it an expression, "
                        "e.g. with rc.activation(name, forward=lambda u: ...)"
                        % (where, ", ".join(undefined)))
    if expr.has(sympy.I) or expr.has(sympy.zoo) or expr.has(sympy.nan):
        raise CellError("%s: %s is not real-valued" % (where, _describe(expr, what)))
    try:
        CPrinter().doprint(expand_activations(expr))
    except Exception as exc:  # sympy raises several types for unprintable math
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CellError("%s: %s cannot be written as C (%s); use functions such as exp, "
                        "log, tanh, Abs, Piecewise, or rc.activation with a derivative"
                        % (where, _describe(expr, what), first)) from None


def _describe(expr, what):
    return str(expr) if what is None else "%s, %s," % (what, expr)


def expand_activations(expr):
    """Replace user activations (rc.activation) by their forward expressions."""
    targets = [f for f in expr.atoms(sympy.Function) if hasattr(f, "_rnnc_forward")]
    if not targets:
        return expr
    return expand_activations(expr.xreplace({f: f._rnnc_forward(f.args[0]) for f in targets}))


def make_activation(name, forward, derivative):
    """A sympy Function class for a user activation; derivative(u, y) is hand-written."""
    def fdiff(self, argindex=1):
        if derivative is None:
            u = sympy.Dummy("u", real=True)
            return sympy.diff(real_roots(sympy.sympify(forward(u))), u).xreplace({u: self.args[0]})
        return real_roots(sympy.sympify(derivative(self.args[0], self)))

    def rnnc_forward(self, u):
        return real_roots(sympy.sympify(forward(u)))

    return type("Act_" + name, (RealFunction,), {
        "nargs": 1, "fdiff": fdiff, "_rnnc_forward": rnnc_forward,
        "_rnnc_name": name, "_rnnc_has_derivative": derivative is not None,
        "_latex": lambda self, printer, exp=None: _latex_call(
            r"\operatorname{%s}" % name.replace("_", r"\_"), self, printer, exp),
    })
