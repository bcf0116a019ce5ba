"""The elementwise vocabulary in sympy, C and numpy: the sympy functions, C helpers and
numpy forms of the activation table's rows (activations.py), the C printer, and the
checks on user math.

Sympy would differentiate 1/(1+exp(-u)) into exp(-u)/(1+exp(-u))**2, which overflows to
NaN for u <= -89 in float32; so the activations are sympy Functions of their own whose
derivatives are their rows' (written through their outputs, sigma' = sigma(1 - sigma), or
as stable closed forms), and whose C forms are numerically stable.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import sympy
from sympy.core.function import AppliedUndef
from sympy.printing.c import C99CodePrinter
from sympy.printing.precedence import PRECEDENCE
from sympy.codegen.ast import real, float32, float64

from ..errors import CellError
from . import csrc
from .activations import BY_SYMPY_NAME, TABLE


def _latex_call(head, f, printer, exp=None):
    """LaTeX of f(u), or f^{exp}(u) when sympy prints a power of it."""
    power = "^{%s}" % exp if exp is not None else ""
    return r"%s%s\left(%s\right)" % (head, power, printer._print(f.args[0]))


class RealFunction(sympy.Function):
    """A function real on real arguments: sympy then differentiates |f(u)| as
    sign(f(u)) f'(u), not through re() and im(), which have no C form."""

    def _eval_is_real(self):
        return self.args[0].is_real


class TableFunction(RealFunction):
    """A function of the activation table (activations.py), made by _function_class: its
    derivative is its row's, parsed when sympy first asks for it."""
    activation = None       # its row

    def fdiff(self, argindex=1):
        if argindex != 1:
            return sympy.S.Zero             # the bounds are constants
        return _derivative(self.activation, self)


def _row_names(row, args, value=None):
    """The names a row's sympy texts read: the table's functions, u, the bounds, y (the
    value, when given) and the row's `where` subexpressions, in order."""
    names = dict(SYMPY_FUNCTIONS, u=args[0])
    names.update(zip((b for b, _ in row.bounds), args[1:]))
    if value is not None:
        names["y"] = value
    for name, text in row.where:
        names[name] = sympy.sympify(text, locals=names)
    return names


def forward_expression(row, *args):
    """The row's value as a sympy expression of its arguments (u, then the bounds)."""
    return sympy.sympify(row.forward, locals=_row_names(row, args))


def _derivative(row, f):
    """d f/du of f, an applied function of the row, from the row's text (y is f itself)."""
    return _parsed_derivative(row.sympy_name, f)


@functools.lru_cache(maxsize=4096)
def _parsed_derivative(name, f):
    row = BY_SYMPY_NAME[name]
    return sympy.sympify(row.derivative, locals=_row_names(row, f.args, value=f))


def derivative_expression(row, *args):
    """The row's derivative as a sympy expression of its arguments (y written out)."""
    f = SYMPY_FUNCTIONS[row.sympy_name](*args)
    return f.diff(args[0]) if row.builtin else _derivative(row, f)


def _function_class(row):
    """The sympy function of a row: sympy's own for a builtin row, else a TableFunction
    named row.sympy_name with the row's printed forms."""
    if row.builtin:
        return getattr(sympy, row.sympy_name)
    attrs = {"nargs": 1 + len(row.bounds), "activation": row, "__doc__": row.doc,
             "__module__": __name__, "__qualname__": row.sympy_name}
    if row.latex is not None:
        attrs["_latex"] = lambda self, printer, exp=None: row.latex % {
            "arg": printer._print(self.args[0]), "power": "^{%s}" % exp if exp is not None else ""}
    if row.text is not None:
        attrs["_sympystr"] = lambda self, printer: row.text % {"arg": printer._print(self.args[0])}
    elif row.symbol is not None:
        attrs["_sympystr"] = lambda self, printer: "%s(%s)" % (
            row.symbol, ", ".join(printer._print(a) for a in self.args))
    return type(row.sympy_name, (TableFunction,), attrs)


# sympy name -> sympy function of every row; the table's own functions are also this
# module's attributes (mathfn.Sigmoid, mathfn.Clip, ...), as rc.elementwise uses them
SYMPY_FUNCTIONS = {row.sympy_name: _function_class(row) for row in TABLE}
globals().update({name: f for name, f in SYMPY_FUNCTIONS.items() if not BY_SYMPY_NAME[name].builtin})
Cbrt = SYMPY_FUNCTIONS["Cbrt"]


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


def _numpy_form(row):
    """The row's numpy form; without one, its forward expression lambdified (the table's
    functions inside it by their numpy forms), made on first use."""
    if row.numpy is not None:
        return row.numpy
    made = []

    def evaluate(*args):
        if not made:
            syms = [sympy.Dummy(real=True) for _ in range(1 + len(row.bounds))]
            made.append(sympy.lambdify(syms, forward_expression(row, *syms),
                                       modules=[NUMPY_FUNCTIONS, "numpy"]))
        return made[0](*args)
    evaluate.__name__ = row.sympy_name
    return evaluate


NUMPY_FUNCTIONS = {row.sympy_name: _numpy_form(row) for row in TABLE if not row.builtin}
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
    # EXP_NONPOS: e^x of an x <= 0 (fastmath.h's has fewer clamps and tests)
    macros = {"EXP": exp, "EXP_NONPOS": "rnnc_exp_nonpos" if fast else "exp",
              "LOG1P": "rnnc_log1p" if fast else "log1p", "FABS": "fabs",
              "FMAX": "fmax", "FMIN": "fmin", "CBRT": "cbrt"}
    out = []
    for row in TABLE:
        if row.c_body is None:
            continue
        body = row.c_body
        for macro, fn in macros.items():
            body = body.replace(macro + "(", fn + suffix + "(")
        body = body.replace("(real)", "(%s)" % ctype).replace("real ", ctype + " ")
        out.append("static inline %s %s%s(%s u) { %s }"
                   % (ctype, row.helper, suffix, ctype, body))
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
        if isinstance(expr, TableFunction):          # C helpers: the table's and Clip's
            return self._helper(type(expr).__name__.lower(), expr.args)
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


def rename_symbols(expr, names):
    """expr with its symbols renamed (names: symbol -> symbol, one to one). Unlike
    xreplace, it does not run the functions' simplifications again on their renamed
    arguments (nothing new to simplify; sympy's assumption queries there cost time
    quadratic in the nesting depth), and it rebuilds a shared subexpression once."""
    done = {}

    def walk(e):
        if e in names:
            return names[e]
        if not e.args:
            return e
        if e not in done:
            args = tuple(walk(a) for a in e.args)
            if args == e.args:
                done[e] = e
            elif isinstance(e, sympy.Function):
                done[e] = e.func(*args, evaluate=False)
            else:
                done[e] = e.func(*args)
        return done[e]
    return walk(expr)
