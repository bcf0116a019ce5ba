"""Every row of the activation table (rnncompiler/compiler/activations.py), checked from
the row alone, so that a new row is tested without a new test: the row is consistent
(its names, its sympy texts, what is made from it), its derivative is its forward
differentiated, its value and derivative are PyTorch's (float64 autograd) and central
finite differences', and a compiled kernel computes them as the reference does, at
ordinary points and at the special ones (0, large |u|, the ends of the types, inf, NaN),
in float32 and float64, with no overflow where the exact value is finite."""
import subprocess
import sys

import numpy as np
import pytest
import sympy

import rnncompiler as rc
from rnncompiler.compiler import expr as ex
from rnncompiler.compiler import mathfn
from rnncompiler.compiler.activations import TABLE, BY_NAME
from rnncompiler.compiler.codegen.layout import OUTPUT_DIFFERENTIABLE

from activation_cases import PUBLIC, bounds, reference

U, Y = sympy.Symbol("u", real=True), sympy.Symbol("y", real=True)
NAMES = [row.name for row in TABLE]
# ordinary points: both signs, several scales, none on a kink
ORDINARY = np.array([-7.3, -2.9, -1.7, -0.8, -0.31, -0.05, 0.02, 0.27, 0.66, 1.3, 2.2, 4.1, 9.5])
SPECIAL = [0.0, -0.0, 1e-40, -1e-40, 1.0, -1.0, 20.0, -20.0, 88.0, -88.0, 89.0, -104.0, 710.0,
           -746.0, 1e4, -1e4, 1e20, -1e20, 3e38, -3e38, 1e300, -1e300, np.inf, -np.inf, np.nan]


def row_points(row, points):
    """The points in the row's domain, at least 1e-3 from its kinks and bounds."""
    lo, hi = row.domain
    kinks = np.array(row.kinks + bounds(row) or (np.inf,))
    far = np.abs(points[:, None] - kinks[None, :]).min(axis=1) > 1e-3
    return points[(points > lo) & (points < hi) & far]


def derivative_numpy(row):
    """u -> the hand-written derivative (as the kernels use it), in numpy float64."""
    u = sympy.Dummy("u", real=True)
    d = mathfn.derivative_expression(row, u, *bounds(row))
    fn = sympy.lambdify([u], d, modules=[mathfn.NUMPY_FUNCTIONS, "numpy"])
    return lambda v: np.broadcast_to(fn(v), np.shape(v)).astype(np.float64)


def torch_value_and_slope(row, points):
    """PyTorch's value and autograd derivative at `points`, in float64."""
    torch = pytest.importorskip("torch")
    u = torch.tensor(points, dtype=torch.float64, requires_grad=True)
    y = row.torch(torch, u, *bounds(row))
    (slope,) = torch.autograd.grad(y.sum(), u)
    return y.detach().numpy(), slope.numpy()


# ---------------------------------------------------------------- the row itself

def test_names_are_unique_and_the_package_exports_every_public_row():
    assert len(set(NAMES)) == len(TABLE)
    assert len({row.sympy_name for row in TABLE}) == len(TABLE)
    for row in TABLE:
        assert (row.name in rc.__all__) == row.public, row.name
        if row.public:
            assert getattr(rc, row.name).__name__ == row.name
            assert row.name in dir(rc)
    assert set(OUTPUT_DIFFERENTIABLE) == {r.sympy_name for r in TABLE if r.output_differentiable}


def test_the_table_and_the_cell_language_load_without_sympy():
    code = ("import sys, rnncompiler as rc\n"
            "from rnncompiler.compiler.activations import TABLE\n"
            "@rc.cell(states=('h',))\n"
            "def c(x, h, p):\n"
            "    return {'h': " + " + ".join(
                "rc.%s(x%s)" % (r.name, "".join(", %r" % b for b in bounds(r)))
                for r in PUBLIC) + "}\n"
            "print('sympy' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


@pytest.mark.parametrize("name", NAMES)
def test_row_is_consistent(name):
    """Its texts read only u, y, its bounds and `where` names; an output-differentiable
    derivative reads y alone; a traced call becomes its sympy function; a function of the
    table's own is real on real arguments and prints as its C helper, defined for both types."""
    row = BY_NAME[name]
    b = [sympy.Symbol(n, real=True) for n, _ in row.bounds]
    names = mathfn._row_names(row, [U] + b, value=Y)
    assert mathfn.forward_expression(row, U, *b).free_symbols <= {U, *b}
    d = sympy.sympify(row.derivative, locals=names)
    assert d.free_symbols <= {U, Y, *b}
    if row.output_differentiable:
        assert d.free_symbols == {Y}, "an output-differentiable derivative reads y alone"
    fn = mathfn.SYMPY_FUNCTIONS[row.sympy_name]
    term = ex.call(row.sympy_name, ex.arg(0), *bounds(row))
    assert ex.to_sympy(term) == fn(sympy.Symbol("a0", real=True), *bounds(row))
    if not row.builtin:
        assert fn(U, *bounds(row)).is_real
        assert getattr(mathfn, row.sympy_name) is fn
        c = mathfn.CPrinter("float32").doprint(fn(U, *bounds(row)))
        # sympy's C printer writes a function named Cbrt as C's cbrtf itself, the same math
        assert c.startswith(row.helper + "f(") or c.startswith("cbrtf("), c
        if row.c_body is not None:
            for dtype, suffix in (("float32", "f"), ("float64", "")):
                assert " %s%s(" % (row.helper, suffix) in mathfn.c_helpers(dtype)
    if row.public:
        assert getattr(rc, row.name).__doc__ == row.doc


@pytest.mark.parametrize("name", NAMES)
def test_derivative_is_the_forward_differentiated(name):
    """The hand-written derivative (through y where the row says so) equals sympy's
    derivative of the forward expression, in float64 at ordinary points."""
    row = BY_NAME[name]
    u = sympy.Dummy("u", real=True)
    truth = sympy.diff(mathfn.forward_expression(row, u, *bounds(row)), u)
    truth = sympy.lambdify([u], truth, modules=[mathfn.NUMPY_FUNCTIONS, "numpy"])
    pts = row_points(row, ORDINARY)
    with np.errstate(invalid="ignore"):          # numpy computes both sides of a Piecewise
        np.testing.assert_allclose(derivative_numpy(row)(pts), truth(pts), rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------- against PyTorch and finite differences

@pytest.mark.parametrize("name", [row.name for row in TABLE if row.torch is not None])
def test_value_and_derivative_are_torchs_and_finite_differences(name):
    """float64: the reference value is torch's; the hand-written derivative is torch
    autograd's and the central finite difference's (step 1e-6 |u|, away from kinks)."""
    row = BY_NAME[name]
    big = np.array([-60.0, -30.0, 30.0, 60.0, -1e3, 1e3])
    pts = row_points(row, np.concatenate([ORDINARY, big]))
    value, slope = torch_value_and_slope(row, pts)
    with np.errstate(over="ignore"):             # exp(1000) is inf, as torch's
        np.testing.assert_allclose(reference(row)(pts), value, rtol=1e-12, atol=1e-12,
                                   err_msg="value")
        np.testing.assert_allclose(derivative_numpy(row)(pts), slope, rtol=1e-9, atol=1e-8,
                                   err_msg="derivative vs autograd")
    pts = row_points(row, ORDINARY)
    h = 1e-6 * np.maximum(1.0, np.abs(pts))
    fd = (reference(row)(pts + h) - reference(row)(pts - h)) / (2 * h)
    np.testing.assert_allclose(derivative_numpy(row)(pts), fd, rtol=1e-7, atol=1e-9,
                               err_msg="derivative vs finite differences")


# ---------------------------------------------------------------- the compiled kernel

def probe_cell(rows):
    """One state per row, s_k -> f_k(s_k) unchanged over one step: the output is every
    f_k(s_k), and the gradient of state k is f_k'(s_k) alone."""
    states = {"s%d" % k: "I" for k in range(len(rows))}

    def fn(row, v):
        if row.public:
            return getattr(rc, row.name)(v, *bounds(row))
        f = mathfn.SYMPY_FUNCTIONS[row.sympy_name]
        return rc.elementwise(lambda u: f(u, *bounds(row)), v)

    @rc.cell(states=states)
    def probe(x, *s, p):
        return dict(zip(states, s)), rc.concat(*[fn(row, v) for row, v in zip(rows, s)])
    return probe


@pytest.fixture(scope="module", params=["float64", "float32"])
def kernel_run(request):
    """The probe kernel of every row at the special and ordinary points: (dtype, points,
    values per row, derivatives per row)."""
    dtype = request.param
    rows = TABLE
    with np.errstate(over="ignore"):
        pts = np.concatenate([np.array(SPECIAL), ORDINARY]).astype(dtype)
    kern = rc.compile(probe_cell(rows), input_size=len(pts), hidden_size=1, dtype=dtype)
    state0 = {"s%d" % k: pts[None, :] for k in range(len(rows))}
    x = np.zeros((1, 1, len(pts)), dtype)
    with np.errstate(all="ignore"):
        res = kern.forward({}, x, state0)
        g = kern.backward(res, d_outputs=np.ones_like(res.outputs))
    n = len(pts)
    values = {row.name: res.outputs[0, 0, k * n:(k + 1) * n] for k, row in enumerate(rows)}
    slopes = {row.name: g.state0["s%d" % k][0] for k, row in enumerate(rows)}
    return dtype, pts, values, slopes


def same_specials(got, want, what):
    """NaN where the reference has NaN, infinities of the same signs."""
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=what + ": NaN")
    np.testing.assert_array_equal(np.isinf(got) * np.sign(got), np.isinf(want) * np.sign(want),
                                  err_msg=what + ": inf")


@pytest.mark.parametrize("name", NAMES)
def test_kernel_value_is_the_references(kernel_run, name):
    """The C helper (or sympy's C) against the reference's numpy form (float64, rounded to
    the kernel's type), at every point: the same NaN and infinities; finite values within
    4 ulp times (1 + the condition number |u f'(u) / f(u)|), the error of computing f
    exactly at an argument 4 ulp away (gelu's e^w at u = -7 is 40 times as sensitive to
    u as u itself); below the normal range, within the smallest normal number."""
    dtype, pts, values, _ = kernel_run
    row = BY_NAME[name]
    x = pts.astype(np.float64)
    with np.errstate(all="ignore"):
        exact = np.asarray(reference(row)(x), np.float64)
        want = exact.astype(dtype)
        cond = np.abs(x * derivative_numpy(row)(x)) / np.maximum(np.abs(exact), 1e-300)
    got = values[name]
    same_specials(got, want, name)
    fin = np.isfinite(want)
    info = np.finfo(dtype)
    err = np.abs(got[fin].astype(np.float64) - want[fin])
    allowed = 4 * info.eps * (1 + np.nan_to_num(cond[fin], posinf=0)) * np.abs(want[fin]) + info.tiny
    assert (err <= allowed).all(), (name, x[fin][err > allowed], got[fin][err > allowed],
                                    want[fin][err > allowed])


@pytest.mark.parametrize("name", NAMES)
def test_kernel_derivative_is_the_references_and_finite(kernel_run, name):
    """The kernel's f'(u) against the hand-written derivative in float64 at the same
    (rounded) points: finite wherever the exact derivative is finite (no overflow at
    large |u|, in float32 too), the same NaN and infinities, close elsewhere."""
    dtype, pts, _, slopes = kernel_run
    row = BY_NAME[name]
    finite_pts = np.isfinite(pts)
    with np.errstate(all="ignore"):
        want = derivative_numpy(row)(pts.astype(np.float64))[finite_pts]
    got = slopes[name][finite_pts].astype(np.float64)
    with np.errstate(over="ignore"):
        want_typed = want.astype(dtype)             # beyond float32's range: inf
    representable = np.isfinite(want_typed)
    assert np.isfinite(got[representable]).all(), (name, pts[finite_pts][~np.isfinite(got)])
    same_specials(got, want_typed, name)
    fin = representable & np.isfinite(want)
    tol = 1e-12 if dtype == "float64" else 2e-5
    np.testing.assert_allclose(got[fin], want[fin], rtol=tol, atol=tol, err_msg=name)
