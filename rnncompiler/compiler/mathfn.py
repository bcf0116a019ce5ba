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
    if row.symbol is not None:
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


# Vectorisable exp, expm1 (of arguments <= 0) and tanh (log and log1p below): Cody-Waite
# range reduction x = n ln2 + r, |r| <= ln2/2, a Taylor polynomial for e^r (or e^r - 1), and 2^n built in
# the exponent bits (as two factors, so results down to the subnormals are right). No
# branches or libm calls, so gcc vectorises the loops around them; glibc's expf/tanhf are
# vectorised only under -ffast-math, which the kernels never use. Accuracy, checked
# against libm over the whole range by the tests: <= 2 ulp (float), <= 1 ulp (double).
_FAST = {
    "float32": dict(T="float", I="int32_t", F="f", MAGIC="12582912.0f", LOG2E="1.44269504088896341f",
                    LN2HI="0.693359375f", LN2LO="-2.12194440e-4f", LO="-104.0f", HI="89.0f",
                    M1LO="-30.0f", SH="23", BIAS="127", DEG=7, DEGM1=8,
                    ONE="0x3f800000", SQRTH="0x3f3504f3", MANT="0x007fffff",
                    MINNORM="1.17549435e-38f", SCALE="33554432.0f", SCALEK="25",
                    MAXV="3.40282347e+38f"),
    "float64": dict(T="double", I="int64_t", F="", MAGIC="6755399441055744.0",
                    LOG2E="1.4426950408889634074", LN2HI="6.93147180369123816490e-01",
                    LN2LO="1.90821492927058770002e-10", LO="-746.0", HI="710.0",
                    M1LO="-40.0", SH="52", BIAS="1023", DEG=13, DEGM1=15,
                    ONE="0x3ff0000000000000", SQRTH="0x3fe6a09e667f3bcd",
                    MANT="0x000fffffffffffff", MINNORM="2.2250738585072014e-308",
                    SCALE="18014398509481984.0", SCALEK="54", MAXV="1.7976931348623157e+308"),
}


def _horner(T, F, first, last, var):
    """1/k! coefficients from k = last down to first, as nested products in var."""
    from math import factorial
    expr = "%r%s" % (1.0 / factorial(last), F)
    for k in range(last - 1, first - 1, -1):
        expr = "%r%s + %s * (%s)" % (1.0 / factorial(k), F, var, expr)
    return expr


def fast_math_helpers(dtype):
    """C source of rnnc_exp, rnnc_expm1_neg, rnnc_tanh, rnnc_log and rnnc_log1p (suffix f
    for float32)."""
    c = _FAST[dtype]
    T, I, F = c["T"], c["I"], c["F"]
    sub = dict(c, P_EXP=_horner(T, F, 0, c["DEG"], "r"),
               P_M1=_horner(T, F, 1, c["DEGM1"], "r"))
    text = """static inline T rnnc_pow2iF(I n) { T v; I bits = (n + BIAS) << SH; memcpy(&v, &bits, sizeof v); return v; }
/* e^x for all x: inf above the range, subnormals and 0 below, NaN kept */
static inline T rnnc_expF(T x)
{
    const T xc = x < LO ? LO : (x > HI ? HI : x);    /* ternaries vectorise, fmin does not */
    const T n = (xc * LOG2E + MAGIC) - MAGIC;
    const T r = (xc - n * LN2HI) - n * LN2LO;
    const T p = P_EXP;
    const I ni = (I)n, n1 = ni / 2, n2 = ni - n1;
    const T y = p * rnnc_pow2iF(n1) * rnnc_pow2iF(n2);
    return x != x ? x : y;
}
/* e^y - 1 for y <= 0, without cancellation near 0 */
static inline T rnnc_expm1_negF(T y)
{
    const T yc = y < M1LO ? M1LO : y;
    const T n = (yc * LOG2E + MAGIC) - MAGIC;
    const T r = (yc - n * LN2HI) - n * LN2LO;
    const T p = r * (P_M1);
    const T s = rnnc_pow2iF((I)n);
    return s * p + (s - 1);
}
/* tanh x = -expm1(-2|x|) / (2 + expm1(-2|x|)), sign of x; NaN kept */
static inline T rnnc_tanhF(T x)
{
    const T e = rnnc_expm1_negF(-2 * fabsF(x));
    const T t = -e / (2 + e);
    return x != x ? x : copysignF(t, x);
}"""
    if dtype == "float64":
        text = text[:text.index("/* tanh x = -expm1")] + _TANH_DOUBLE.replace("P_TANH", _tanh_taylor(23))
    lg = ["%r%s" % (v, F) for v in _LG]
    text += "\n" + _LOG % dict(c, F=F, LG1=lg[0], LG2=lg[1], LG3=lg[2], LG4=lg[3], LG5=lg[4],
                               LG6=lg[5], LG7=lg[6])
    for key in ("P_EXP", "P_M1", "MAGIC", "LOG2E", "LN2HI", "LN2LO", "M1LO", "LO", "HI",
                "BIAS", "SH"):
        text = text.replace(key, str(sub[key]))
    return text.replace("T ", T + " ").replace("(T)", "(%s)" % T).replace("I ", I + " ") \
        .replace("(I)", "(%s)" % I).replace("sizeof v", "sizeof v").replace("F(", F + "(")


# In double the division after expm1 above would cost up to 3 ulp; this form stays within
# 1: a series where tanh is near x, and above it the rounding of e^{2|x|} + 1 and the
# remainder of the division (exact with fma) folded back into 1 - 2/(e^{2|x|} + 1).
_TANH_DOUBLE = """/* tanh x: below |x| = 0.625 the Taylor series x + x^3 P(x^2); above,
   1 - 2/(e^{2|x|} + 1) with E + 1 = d + dlo, 2 = q d + r and 1 - q = hi + lo exactly;
   sign of x; NaN kept */
static inline T rnnc_tanhF(T x)
{
    const T a = fabsF(x), a2 = a * a;
    const T small = a + a * a2 * (P_TANH);
    const T E = rnnc_expF(2 * (a < 20 ? a : 20));
    const T d = E + 1, dlo = 1 - (d - E);
    const T q = 2 / d;
    const T r = fmaF(-q, d, 2) - q * dlo;
    const T hi = 1 - q, lo = (1 - hi) - q;
    const T big = hi + (lo - r * q * (T)0.5);
    const T t = a < (T)0.625 ? small : big;
    return x != x ? x : copysignF(t, x);
}"""


# log after fdlibm: x = 2^k m with m in [sqrt(2)/2, sqrt(2)), f = m - 1, s = f/(2 + f) and
# log m = f - f^2/2 + s (f^2/2 + R(s^2)), R fdlibm's minimax polynomial (the same seven
# coefficients serve float); k ln2 in two parts. Integer steps and ternaries only, so it
# vectorises; log1p(x) = log(1 + x) + the rounding of 1 + x divided by it.
_LG = (6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01,
       2.222219843214978396e-01, 1.818357216161805012e-01, 1.531383769920937332e-01,
       1.479819860511658591e-01)
_LOG = """/* log x: -inf at 0, NaN below 0 and for NaN, inf at inf; subnormals scaled first */
static inline T rnnc_log%(F)s(T x)
{
    const int sub = x < %(MINNORM)s;
    const T xs = sub ? x * %(SCALE)s : x;
    I ix;
    memcpy(&ix, &xs, sizeof ix);
    ix += (I)%(ONE)s - (I)%(SQRTH)s;
    const I k = (ix >> %(SH)s) - %(BIAS)s - (sub ? %(SCALEK)s : 0);
    ix = (ix & (I)%(MANT)s) + (I)%(SQRTH)s;
    T m;
    memcpy(&m, &ix, sizeof m);
    const T f = m - 1, s = f / (2 + f), z = s * s, w = z * z;
    const T R = z * (%(LG1)s + w * (%(LG3)s + w * (%(LG5)s + w * %(LG7)s)))
              + w * (%(LG2)s + w * (%(LG4)s + w * %(LG6)s));
    const T hfsq = (T)0.5 * f * f, dk = (T)k;
    const T y = s * (hfsq + R) + dk * %(LN2LO)s - hfsq + f + dk * %(LN2HI)s;
    return (x > 0) & (x <= %(MAXV)s) ? y : (x == 0 ? -INFINITY : (x > 0 ? x : NAN));
}
/* log(1 + x): the rounding of u = 1 + x corrected by (x - (u - 1)) / u; -inf at -1 */
static inline T rnnc_log1p%(F)s(T x)
{
    const T u = 1 + x;
    const T c = (u > 0) & (u != 1) & (u <= %(MAXV)s) ? (x - (u - 1)) / u : 0;
    const T y = u == 1 ? x : rnnc_log%(F)s(u) + c;
    return x != x ? x : y;
}"""


def _tanh_taylor(terms):
    """Horner form in a2 of the Taylor coefficients of tanh for x^3, x^5, ... (`terms` of
    them): 2^{2n} (2^{2n} - 1) B_{2n} / (2n)! for x^{2n-1}."""
    coef = [sympy.Integer(2) ** (2 * n) * (2 ** (2 * n) - 1) * sympy.bernoulli(2 * n)
            / sympy.factorial(2 * n) for n in range(2, terms + 2)]
    expr = repr(float(coef[-1]))
    for c in reversed(coef[:-1]):
        expr = "%r + a2 * (%s)" % (float(c), expr)
    return expr


def c_helpers(dtype, fast=False):
    """The C definitions of the activation helpers for one dtype ("float32"/"float64");
    fast: exp, tanh, log and log1p from fast_math_helpers instead of libm."""
    f = dtype == "float32"
    suffix = "f" if f else ""
    ctype = "float" if f else "double"
    exp = "rnnc_exp" if fast else "exp"
    macros = {"EXP": exp, "LOG1P": "rnnc_log1p" if fast else "log1p", "FABS": "fabs",
              "FMAX": "fmax", "FMIN": "fmin", "CBRT": "cbrt"}
    out = [fast_math_helpers(dtype)] if fast else []
    for row in TABLE:
        if row.c_body is None:
            continue
        body = row.c_body
        for macro, fn in macros.items():
            body = body.replace(macro + "(", fn + suffix + "(")
        body = body.replace("(real)", "(%s)" % ctype).replace("real ", ctype + " ")
        out.append("static inline %s %s%s(%s u) { %s }"
                   % (ctype, row.helper, suffix, ctype, body))
    # ternaries, not fmin/fmax: they vectorise and keep NaN, as torch.clamp and numpy do
    out += [line.replace("T ", ctype + " ").replace("F(", suffix + "(") for line in _NAN_KEEPING]
    return _ALWAYS_INLINE + "\n".join(out).replace("static inline ", "RNNC_INLINE ")


# Every helper inlined, whatever gcc's size limits say: a helper called out of line in a
# big cell's backward loop stops that loop from vectorising (a 4-layer LSTM written as one
# cell lost 2.5x). Plain `static inline` for compilers without the attribute (C99).
_ALWAYS_INLINE = """#if defined(__GNUC__)
#define RNNC_INLINE static inline __attribute__((always_inline))
#else
#define RNNC_INLINE static inline
#endif
"""


# Elementwise helpers that keep NaN as numpy does (C's fmax, fmin and comparisons drop it)
_NAN_KEEPING = (
    "static inline T rnnc_clipF(T u, T lo, T hi) { return u < lo ? lo : (u > hi ? hi : u); }",
    "static inline T rnnc_maxF(T a, T b) { return a > b || a != a ? a : b; }",
    "static inline T rnnc_minF(T a, T b) { return a < b || a != a ? a : b; }",
    # numpy's and Python's modulo: the divisor's sign (C's fmod keeps the dividend's),
    # exact as fmod is, NaN for a zero divisor
    "static inline T rnnc_modF(T a, T b) "
    "{ const T m = fmodF(a, b); return m != 0 ? ((b < 0) != (m < 0) ? m + b : m) : copysignF(0, b); }",
    "static inline T rnnc_signF(T u) { return u > 0 ? 1 : (u < 0 ? -1 : u); }",
    "static inline T rnnc_heavisideF(T u, T h) "
    "{ return u < 0 ? 0 : (u > 0 ? 1 : (u == 0 ? h : u)); }",
)


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
