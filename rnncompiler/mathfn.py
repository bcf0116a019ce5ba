"""The elementwise function table: each activation as a sympy function with a stable
derivative, its C form and its numpy form (one row each).

Sympy would differentiate 1/(1+exp(-u)) into exp(-u)/(1+exp(-u))**2, which overflows to
NaN for u <= -89 in float32; so the activations are sympy Functions of their own whose
derivatives are written through their outputs (sigma' = sigma(1 - sigma)) or as stable
closed forms, and whose C forms are numerically stable.
"""
from __future__ import annotations

import numpy as np
import sympy
from sympy.core.function import AppliedUndef
from sympy.printing.c import C99CodePrinter
from sympy.codegen.ast import real, float32, float64

from .errors import CellError


def _step(u, strict_lo, lo=0, hi=None):
    """Indicator of lo < u (or lo <= u), optionally u <= hi, as a Piecewise."""
    cond = (u > lo) if strict_lo else (u >= lo)
    if hi is not None:
        cond = sympy.And(cond, u <= hi)
    return sympy.Piecewise((1, cond), (0, True))


class Sigmoid(sympy.Function):
    """sigma(u) = 1 / (1 + exp(-u)); sigma' = sigma (1 - sigma)."""
    nargs = 1

    def fdiff(self, argindex=1):
        return self * (1 - self)

    def _latex(self, printer):
        return r"\sigma\left(%s\right)" % printer._print(self.args[0])

    def _sympystr(self, printer):
        return "σ(%s)" % printer._print(self.args[0])


class Softplus(sympy.Function):
    """softplus(u) = log(1 + exp(u)), computed as max(u, 0) + log1p(exp(-|u|))."""
    nargs = 1

    def fdiff(self, argindex=1):
        return Sigmoid(self.args[0])

    def _latex(self, printer):
        return r"\operatorname{softplus}\left(%s\right)" % printer._print(self.args[0])


class Softsign(sympy.Function):
    """softsign(u) = u / (1 + |u|); derivative 1 / (1 + |u|)^2."""
    nargs = 1

    def fdiff(self, argindex=1):
        return 1 / (1 + sympy.Abs(self.args[0])) ** 2


class HardSigmoid(sympy.Function):
    """PyTorch's hardsigmoid: clip(u/6 + 1/2, 0, 1); derivative 1/6 on (-3, 3), else 0."""
    nargs = 1

    def fdiff(self, argindex=1):
        u = self.args[0]
        return sympy.Piecewise((sympy.Rational(1, 6), sympy.And(u > -3, u < 3)), (0, True))


class Relu(sympy.Function):
    """relu(u) = max(u, 0); relu'(0) = 0 as in PyTorch."""
    nargs = 1

    def fdiff(self, argindex=1):
        return _step(self.args[0], strict_lo=True)


class Clip(sympy.Function):
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
                "return u >= 0 ? 1 / (1 + EXP(-u)) : EXP(u) / (1 + EXP(u));",
                lambda u: np.where(u >= 0, 1 / (1 + np.exp(-np.abs(u))),
                                   np.exp(-np.abs(u)) / (1 + np.exp(-np.abs(u))))),
    "Softplus": (Softplus,
                 "return FMAX(u, 0) + LOG1P(EXP(-FABS(u)));",
                 lambda u: np.maximum(u, 0) + np.log1p(np.exp(-np.abs(u)))),
    "Softsign": (Softsign,
                 "return u / (1 + FABS(u));",
                 lambda u: u / (1 + np.abs(u))),
    "HardSigmoid": (HardSigmoid,
                    "return FMIN(FMAX(u / 6 + (real)0.5, 0), 1);",
                    lambda u: np.clip(u / 6 + 0.5, 0, 1)),
    "Relu": (Relu,
             "return u > 0 ? u : 0;",
             lambda u: np.where(u > 0, u, 0 * u)),
}


def _np_clip(u, lo, hi):
    return np.minimum(np.maximum(u, lo), hi)


NUMPY_FUNCTIONS = {name: row[2] for name, row in FUNCTIONS.items()}
NUMPY_FUNCTIONS["Clip"] = _np_clip


def c_helpers(dtype):
    """The C definitions of the activation helpers for one dtype ("float32"/"float64")."""
    f = dtype == "float32"
    suffix = "f" if f else ""
    ctype = "float" if f else "double"
    macros = {"EXP": "exp", "LOG1P": "log1p", "FABS": "fabs", "FMAX": "fmax", "FMIN": "fmin"}
    out = []
    for name, (_, body, _) in FUNCTIONS.items():
        for macro, fn in macros.items():
            body = body.replace(macro + "(", fn + suffix + "(")
        body = body.replace("(real)", "(%s)" % ctype)
        out.append("static inline %s rnnc_%s%s(%s u) { %s }"
                   % (ctype, name.lower(), suffix, ctype, body))
    out.append("static inline %s rnnc_clip%s(%s u, %s lo, %s hi) "
               "{ return fmin%s(fmax%s(u, lo), hi); }"
               % (ctype, suffix, ctype, ctype, ctype, suffix, suffix))
    return "\n".join(out)


class CPrinter(C99CodePrinter):
    """C99 printer for one real type: the activation helpers, x*x for small powers."""

    def __init__(self, dtype="float64"):
        alias = float32 if dtype == "float32" else float64
        super().__init__({"type_aliases": {real: alias}, "strict": True})
        self._suffix = "f" if dtype == "float32" else ""

    def _print_Function(self, expr):
        name = type(expr).__name__
        if name in FUNCTIONS or name == "Clip":
            args = ", ".join(self._print(a) for a in expr.args)
            return "rnnc_%s%s(%s)" % (name.lower(), self._suffix, args)
        return super()._print_Function(expr)

    def _print_Pow(self, expr):
        base, e = expr.args
        if e.is_Integer and 2 <= int(e) <= 4:
            b = self.parenthesize(base, 100)  # always parenthesised
            return "(" + "*".join([b] * int(e)) + ")"
        if e.is_Integer and -4 <= int(e) <= -1:
            one = "1.0F" if self._suffix else "1.0"
            return "(%s/%s)" % (one, self._print(base ** (-e)))
        return super()._print_Pow(expr)

    def _print_Piecewise(self, expr):
        # one line: (c0 ? e0 : (c1 ? e1 : e2))
        *pieces, (last, _) = expr.args
        text = self._print(last)
        for value, cond in reversed(pieces):
            text = "(%s ? %s : %s)" % (self._print(cond), self._print(value), text)
        return text


def check_expression(expr, where):
    """Raise CellError unless `expr` is real elementwise math that C and numpy can compute."""
    undefined = sorted(str(f.func) for f in expr.atoms(AppliedUndef))
    if undefined:
        raise CellError("%s: the function %s has no definition (an undefined sympy Function "
                        "cannot be differentiated or printed as C); give it an expression, "
                        "e.g. with rc.activation(name, forward=lambda u: ...)"
                        % (where, ", ".join(undefined)))
    if expr.has(sympy.I) or expr.has(sympy.zoo) or expr.has(sympy.nan):
        raise CellError("%s: the expression %s is not real-valued" % (where, expr))
    try:
        CPrinter().doprint(expand_activations(expr))
    except Exception as exc:  # sympy raises several types for unprintable math
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CellError("%s: %s cannot be written as C (%s); use functions such as exp, "
                        "log, tanh, Abs, Piecewise or rc.activation" % (where, expr, first))


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
            return sympy.diff(forward(u), u).xreplace({u: self.args[0]})
        return sympy.sympify(derivative(self.args[0], self))

    def rnnc_forward(self, u):
        return sympy.sympify(forward(u))

    return type("Act_" + name, (sympy.Function,), {
        "nargs": 1, "fdiff": fdiff, "_rnnc_forward": rnnc_forward,
        "_rnnc_name": name, "_rnnc_has_derivative": derivative is not None,
        "_latex": lambda self, printer: r"\operatorname{%s}\left(%s\right)"
        % (name.replace("_", r"\_"), printer._print(self.args[0])),
    })
