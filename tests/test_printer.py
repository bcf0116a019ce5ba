"""The C printer on its own: exact C for the forms whose precedence or type is easy to get
wrong, numpy's meaning where C's differs (NaN, modulo, cube roots, a Piecewise without a
default), and a differential test over random expressions and their derivatives
(tests/printer_fuzz.py): RNNC_PRINTER_EXAMPLES of them (`make fuzz` runs 10 000)."""
import os

import numpy as np
import pytest
import sympy

import rnncompiler as rc
from rnncompiler.compiler import mathfn

import printer_fuzz

u, v = sympy.symbols("a0 a1", real=True)
F32, F64 = mathfn.CPrinter("float32", fast=True), mathfn.CPrinter("float64")


@pytest.mark.parametrize("expr, c32, c64", [
    # a reciprocal standing alone: its denominator is one operand
    (1 / (1 + sympy.exp(-u * v)), "(1.0F/(1.0F + rnnc_expf(-a0*a1)))",
     "(1.0/(1.0 + exp(-a0*a1)))"),
    (sympy.tanh(1 / (1 + u)), "rnnc_tanhf((1.0F/(a0 + 1.0F)))", "tanh((1.0/(a0 + 1.0)))"),
    (v + 1 / (1 + sympy.exp(u)), "a1 + (1.0F/(rnnc_expf(a0) + 1.0F))", "a1 + (1.0/(exp(a0) + 1.0))"),
    ((1 + u) ** -2, "(1.0F/((a0 + 1.0F)*(a0 + 1.0F)))", "(1.0/((a0 + 1.0)*(a0 + 1.0)))"),
    (1 / (sympy.sign(u) + 2), "(1.0F/(rnnc_signf(a0) + 2.0F))",    # no integer division
     "(1.0/(rnnc_sign(a0) + 2.0))"),
    (1 / sympy.sqrt(u), "(1.0F/sqrtf(a0))", "(1.0/sqrt(a0))"),
    (u ** sympy.Rational(1, 3), "powf(a0, 1.0F/3.0F)", "pow(a0, 1.0/3.0)"),  # NaN below 0
    (mathfn.real_roots(u ** sympy.Rational(2, 3)), "((cbrtf(a0))*(cbrtf(a0)))",
     "((cbrt(a0))*(cbrt(a0)))"),
    # numbers are literals of the type: no M_PI (not C99), no integer literal out of range
    (sympy.pi * u, "3.1415927F*a0", "3.141592653589793*a0"),
    (sympy.EulerGamma * u, "0.5772157F*a0", "0.5772156649015329*a0"),
    (sympy.Integer(10) ** 30 * u, "1e+30F*a0", "1e+30*a0"),
    (sympy.Integer(10) ** 400 * u, "INFINITY*a0", "INFINITY*a0"),
    (sympy.log(u) / sympy.log(2), "rnnc_logf(a0)/rnnc_logf(2.0F)", "log(a0)/log(2.0)"),
    # numpy's meaning where C's differs
    (sympy.Mod(u, 3), "rnnc_modf(a0, 3.0F)", "rnnc_mod(a0, 3.0)"),
    (sympy.Max(u, v, 1), "rnnc_maxf(1.0F, rnnc_maxf(a0, a1))", "rnnc_max(1.0, rnnc_max(a0, a1))"),
    (sympy.sign(u), "rnnc_signf(a0)", "rnnc_sign(a0)"),
    # never C's integer abs(), which sympy picks for arguments it knows to be integers
    (sympy.Abs(sympy.sign(u)) / 4, "(1.0F/4.0F)*fabsf(rnnc_signf(a0))",
     "(1.0/4.0)*fabs(rnnc_sign(a0))"),
    (sympy.Abs(sympy.sign(u) * v), "fabsf(a1*rnnc_signf(a0))", "fabs(a1*rnnc_sign(a0))"),
    (sympy.Piecewise((u, u > 0), (v, u < -1)), "(a0 > 0.0F ? a0 : (a0 < -1.0F ? a1 : NAN))",
     "(a0 > 0.0 ? a0 : (a0 < -1.0 ? a1 : NAN))"),
    (sympy.Piecewise((1, sympy.And(u > 0, v < 1)), (0, True)),
     "(a0 > 0.0F && a1 < 1.0F ? 1.0F : 0.0F)", "(a0 > 0.0 && a1 < 1.0 ? 1.0 : 0.0)"),
])
def test_printed_c(expr, c32, c64):
    assert F32.doprint(expr) == c32
    assert F64.doprint(expr) == c64


def test_boolean_constants_need_no_header():
    """sympy's printer writes `true`, which needs <stdbool.h>."""
    expr = sympy.Piecewise((u, sympy.Piecewise((True, v > 0), (False, True))), (0, True))
    assert "true" not in F64.doprint(expr) and "false" not in F64.doprint(expr)


# ------------------------------------------------------------ numpy's meaning, compiled

SEMANTIC = [
    ("mod", sympy.Mod(u, v)),
    ("max", sympy.Max(u, v)),
    ("min", sympy.Min(u, v)),
    ("sign", sympy.sign(u)),
    ("heaviside", sympy.Heaviside(u)),
    ("no default", sympy.Piecewise((u, u > 0), (v, u < -1))),
    ("cube root", mathfn.real_roots(sympy.cbrt(u) + u ** sympy.Rational(4, 3))),
]
POINTS = np.array([[-7.5, 7.5, -7.5, 0.0, np.nan, 2.0, -0.5, -8.0, -1e300, 1.0],
                   [3.0, -3.0, -3.0, np.nan, 1.0, np.nan, np.inf, 0.0, 3.0, np.inf],
                   [0.0] * 10])


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_compiled_forms_compute_what_numpy_computes(dtype, tmp_path):
    exprs = [(name, e, e) for name, e in SEMANTIC]
    batch = printer_fuzz.compile_batch(exprs, dtype, str(tmp_path))
    pts = POINTS.astype(dtype).astype(np.float64)
    for k, (name, e, _) in enumerate(exprs):
        with np.errstate(all="ignore"):
            c = printer_fuzz.run(batch, k, pts).astype(np.float64)
            r = printer_fuzz.reference(e, pts, np.dtype(dtype))
        np.testing.assert_allclose(c, r, rtol=1e-6, atol=0, equal_nan=True, err_msg=name)


def test_cube_root_is_real_in_value_derivative_and_reference():
    """sympy.cbrt(u) in a cell: -2 at -8 in the C and in rc.reference, and its derivative
    1/(3 cbrt(u)^2) (finite below 0, where pow(u, -2/3) is NaN)."""
    @rc.cell(states=("h",))
    def cube(x, h, p):
        a = p.linear("W", rc.concat(x, h), bias="b")
        return {"h": rc.elementwise(lambda s: sympy.cbrt(s) * 0.5, a)}

    kern = rc.compile(cube, 1, 1, "float64")
    params = {"W": np.array([[1.0, 0.0]]), "b": np.array([0.0])}
    x = np.array([[[-8.0]], [[27.0]]])
    res = kern.forward(params, x)
    ref = rc.reference(cube, input_size=1, hidden_size=1).forward(params, x)
    np.testing.assert_allclose(res.outputs[:, 0, 0], [-1.0, 1.5])
    np.testing.assert_allclose(ref.outputs, res.outputs, rtol=1e-14)
    g = kern.backward(res, d_outputs=np.array([[[1.0]], [[0.0]]]))
    assert g.x[0, 0, 0] == pytest.approx(0.5 / (3 * 4.0))          # d/dx cbrt(x)/2 at -8
    report = rc.gradcheck(cube, input_size=2, hidden_size=3, T=4, B=2, seed=3)
    assert report.ok, str(report)


def test_piecewise_without_default_is_nan_where_no_branch_holds():
    """In the C as in sympy and rc.reference: NaN where no condition holds (the C printer
    once took the last branch there)."""
    @rc.cell(states=("h",))
    def partial_gate(x, h, p):
        a = p.linear("W", x)
        return {"h": rc.elementwise(lambda s: sympy.Piecewise((s, s > 0), (-s / 2, s > -1)), a)}

    kern = rc.compile(partial_gate, 1, 1, "float64")
    params = {"W": np.array([[1.0]])}
    x = np.array([[[2.0], [-0.5], [-3.0]]])
    y = kern.forward(params, x).outputs
    ref = rc.reference(partial_gate, input_size=1, hidden_size=1).forward(params, x).outputs
    np.testing.assert_array_equal(y[0, :, 0], [2.0, 0.25, np.nan])
    np.testing.assert_array_equal(ref, y)


# ------------------------------------------------------------ the differential test

EXAMPLES = int(os.environ.get("RNNC_PRINTER_EXAMPLES", "120"))
BATCH = 250


@pytest.mark.parametrize("seed", range(max(1, -(-EXAMPLES // BATCH))))
def test_printed_c_agrees_with_numpy_on_random_expressions(seed):
    """Random expressions and their derivatives, both dtypes, ordinary and extreme points."""
    exprs, found = printer_fuzz.check(seed, min(BATCH, EXAMPLES - seed * BATCH))
    assert len(exprs) > 0
    assert not found, "\n".join(map(str, found[:10]))


_PRINT_POW = mathfn.CPrinter._print_Pow
PLANTED = {
    # the forms printer bugs took: each must be caught by the differential test
    "reciprocal unparenthesised": ("_print_Pow", lambda self, e: (
        "(1.0/%s)" % self._print(e.base ** -e.exp) if e.exp.is_Integer and e.exp < 0
        else _PRINT_POW(self, e))),
    "C's fmod": ("_print_Mod", lambda self, e: "fmod(%s, %s)" % tuple(map(self._print, e.args))),
    "last branch as default": ("_print_Piecewise", lambda self, e: self._print(
        e.args[-1].expr) if len(e.args) == 1 else "(%s ? %s : %s)" % (
        self._print(e.args[0].cond), self._print(e.args[0].expr),
        self._print(sympy.Piecewise(*e.args[1:])))),
    "C's fmax": ("_print_Max", lambda self, e: "fmax(%s, %s)" % (
        self._print(e.args[0]), self._print(sympy.Max(*e.args[1:])))),
}


@pytest.mark.parametrize("fault", sorted(PLANTED))
def test_differential_test_finds_planted_printer_faults(fault, monkeypatch):
    method, impl = PLANTED[fault]
    monkeypatch.setattr(mathfn.CPrinter, method, impl)
    _, found = printer_fuzz.check(7, 60, dtypes=("float64",))
    assert found, "the differential test missed the planted fault: %s" % fault


def test_abs_of_an_activation_differentiates_to_c():
    """|f(u)| for an activation f: sympy differentiated it through re() and im() (no C
    form, a CellError) until the activations said they are real on real arguments."""
    softsign = rc.activation("softsign_by_hand", lambda u: u / (1 + sympy.Abs(u)))

    @rc.cell(states=("h",))
    def abs_gate(x, h, p):
        a = p.linear("W", rc.concat(x, h), bias="b")
        g = rc.elementwise(lambda s, t: sympy.Abs(softsign.sympy_function(s)) ** 1.5
                           + sympy.Abs(mathfn.Sigmoid(t) - sympy.Rational(1, 2)), a, h)
        return {"h": rc.tanh(g) * h + a}

    report = rc.gradcheck(abs_gate, input_size=2, hidden_size=3, T=4, B=2, seed=1)
    assert report.ok, str(report)
