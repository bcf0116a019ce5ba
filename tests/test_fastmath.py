"""The kernels' own exp, tanh, log and log1p against libm (long double reference) over the
whole range: <= 2 ulp in float32 (exp and tanh 1), <= 1 ulp in float64 (sigmoid, built on
exp: <= 3)."""
import importlib
import sys

import numpy as np
import pytest

from rnncompiler.compiler import mathfn

BOUNDS = {("float32", "exp"): 1, ("float64", "exp"): 1,
          ("float32", "exp_nonpos"): 1, ("float64", "exp_nonpos"): 1,
          ("float32", "tanh"): 1, ("float64", "tanh"): 1,
          ("float32", "sigmoid"): 3, ("float64", "sigmoid"): 3,
          ("float32", "log"): 2, ("float64", "log"): 1, ("float32", "log1p"): 2, ("float64", "log1p"): 1}
FUNCTIONS = ("exp", "tanh", "sigmoid", "log", "log1p", "exp_nonpos")


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    cffi = pytest.importorskip("cffi")
    out = {}
    tmp = tmp_path_factory.mktemp("fastmath")
    for dtype in ("float32", "float64"):
        T, F = ("float", "f") if dtype == "float32" else ("double", "")
        src = "#include <math.h>\n#include <string.h>\n#include <stdint.h>\n"
        src += mathfn.c_helpers(dtype, fast=True)
        cdef = ""
        for fn in FUNCTIONS:
            src += ("\nvoid v_%s(long n, const %s *restrict x, %s *restrict y)"
                    " { for (long i = 0; i < n; ++i) y[i] = rnnc_%s%s(x[i]); }" % (fn, T, T, fn, F))
            cdef += "void v_%s(long n, const %s *x, %s *y);\n" % (fn, T, T)
        ffi = cffi.FFI()
        ffi.cdef(cdef)
        name = "_rnnc_fastmath_%s" % dtype
        ffi.set_source(name, src, extra_compile_args=["-O3", "-march=native", "-fno-math-errno",
                                                      "-fno-trapping-math"])  # as the kernels
        ffi.compile(tmpdir=str(tmp), verbose=False)
        sys.path.insert(0, str(tmp))
        out[dtype] = importlib.import_module(name)
    return out


def ulp_distance(a, ref, dtype):
    """|a - ref| in units in the last place, ref rounded to dtype."""
    it = np.int32 if dtype == "float32" else np.int64
    with np.errstate(over="ignore"):       # references beyond the range round to inf
        ai = a.astype(dtype).view(it).astype(np.int64)
        ri = ref.astype(dtype).view(it).astype(np.int64)
    lo = np.iinfo(it).min
    ai = np.where(ai < 0, lo - ai, ai)
    ri = np.where(ri < 0, lo - ri, ri)
    return np.abs(ai - ri)


def sweep(dtype):
    big = 800 if dtype == "float32" else 800
    return np.concatenate([
        np.linspace(-big, big, 400001), np.linspace(-20, 20, 400001),
        np.linspace(0.6, 0.65, 100001), -np.linspace(0.6, 0.65, 100001),   # tanh's switch
        np.geomspace(1e-30, 1e3, 200001), -np.geomspace(1e-30, 1e3, 200001),
        [0.0, -0.0, np.inf, -np.inf]]).astype(dtype)


def positive_sweep(dtype):
    """From the smallest subnormal to the largest finite number, and densely around 1."""
    info = np.finfo(dtype)
    tiny = float(np.nextafter(np.zeros(1, dtype), 1)[0])
    return np.concatenate([
        np.geomspace(tiny, float(info.max) / 2, 1000001), np.linspace(0, 10, 200001),
        1 + np.linspace(-1e-3, 1e-3, 200001), [float(info.max), tiny, float(info.tiny)]]).astype(dtype)


def inputs(fn, dtype):
    if fn == "log":
        return positive_sweep(dtype)
    if fn == "log1p":
        p = positive_sweep(dtype)
        return np.concatenate([p, -p[p < 1], np.linspace(-0.999, 0.999, 200001, dtype=dtype)])
    if fn == "exp_nonpos":             # e^x for x <= 0 only (sigmoid's and softplus's e^-|u|)
        x = sweep(dtype)
        return x[x <= 0]
    return sweep(dtype)


REFERENCE = {"exp": np.exp, "exp_nonpos": np.exp, "tanh": np.tanh, "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
             "log": np.log, "log1p": np.log1p}


def run(mod, fn, x):
    y = np.empty_like(x)
    T = "float[]" if x.dtype == np.float32 else "double[]"
    getattr(mod.lib, "v_" + fn)(x.size, mod.ffi.from_buffer(T, x), mod.ffi.from_buffer(T, y))
    return y


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("fn", FUNCTIONS)
def test_accuracy_over_the_whole_range(modules, dtype, fn):
    x = inputs(fn, dtype)
    y = run(modules[dtype], fn, x)
    with np.errstate(all="ignore"):
        ref = REFERENCE[fn](x.astype(np.longdouble))
    d = ulp_distance(y, ref, dtype)
    worst = int(np.argmax(d))
    assert d.max() <= BOUNDS[dtype, fn], (x[worst], y[worst], ref[worst])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_log_at_the_edges_of_its_domain(modules, dtype):
    """log: -inf at 0, NaN below, inf at inf; log1p: -inf at -1, NaN below, inf at inf."""
    mod = modules[dtype]
    y = run(mod, "log", np.array([0.0, -0.0, -1.0, -np.inf, np.inf], dtype))
    assert y[0] == y[1] == -np.inf and np.isnan(y[2:4]).all() and y[4] == np.inf, y
    y = run(mod, "log1p", np.array([-1.0, -1.5, -np.inf, np.inf, -0.0], dtype))
    assert y[0] == -np.inf and np.isnan(y[1:3]).all() and y[3] == np.inf, y
    assert y[4] == 0 and np.signbit(y[4]), y          # log1p(-0) = -0, as libm


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tanh_is_exactly_one_where_it_rounds_to_one(modules, dtype):
    """An ulp short of 1 passes the accuracy bound, but 1 - tanh^2 in a derivative turns
    it into u * 1e-7 (mish at u = 1e15: 1e8 where the answer is 0): wherever tanh is
    within a quarter of an ulp of +-1 (so that it rounds there whatever the last bit of
    the method), the kernels' tanh is +-1 exactly, and 1 - t^2 is 0."""
    x = np.concatenate([np.linspace(5, 30, 200001), np.geomspace(30, 1e30, 10001), [np.inf]])
    x = np.concatenate([x, -x]).astype(dtype)
    with np.errstate(all="ignore"):
        exact = np.tanh(x.astype(np.longdouble))
    y = run(modules[dtype], "tanh", x)
    below_one = np.longdouble(np.finfo(dtype).epsneg)        # the gap below 1
    ones = 1 - np.abs(exact) < below_one / 4
    assert ones.any() and np.array_equal(y[ones], np.sign(x[ones])), x[ones][np.abs(y[ones]) != 1][:5]
    assert not np.any(1 - y[ones] ** 2)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_propagates(modules, dtype):
    mod = modules[dtype]
    T = "float[]" if dtype == "float32" else "double[]"
    for fn in FUNCTIONS:
        x = np.array([np.nan, 1.0], dtype)
        y = np.empty_like(x)
        getattr(mod.lib, "v_" + fn)(2, mod.ffi.from_buffer(T, x), mod.ffi.from_buffer(T, y))
        assert np.isnan(y[0]) and np.isfinite(y[1]), fn


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_exp_of_a_nonpositive_argument_has_the_bits_of_exp(modules, dtype):
    """The shortcut sigmoid and softplus take (no upper clamp, NaN through the arithmetic)
    gives exp's bits wherever it is used, subnormal results and -inf included."""
    x = inputs("exp_nonpos", dtype)
    x = np.concatenate([x, -np.geomspace(80, 760, 20001).astype(dtype)])
    assert np.array_equal(run(modules[dtype], "exp_nonpos", x).view("u%d" % x.itemsize),
                          run(modules[dtype], "exp", x).view("u%d" % x.itemsize))


def test_math_helpers_are_always_inlined_in_a_big_cells_kernel(tmp_path):
    """A 4-layer LSTM written as one cell, its C compiled with -fno-inline (gcc then inlines
    only what it must): no math helper is left as a function of its own — gcc once called
    rnnc_tanh out of line in such a backward loop, which then did not vectorise."""
    import shutil
    import subprocess
    import rnncompiler as rc
    from rnncompiler.compiler import build
    from rnncompiler.compiler.pipeline import bind_sizes, lower
    if shutil.which("nm") is None:
        pytest.skip("nm is not installed")

    def layer(p, k, x, h, c):
        z = rc.concat(h, x)
        f, i, o = (rc.sigmoid(p.linear("W%s%d" % (n, k), z, bias="b%s%d" % (n, k))) for n in "fio")
        c = f * c + i * rc.tanh(p.linear("Wg%d" % k, z, bias="bg%d" % k))
        return o * rc.tanh(c), c

    @rc.cell(states=("h1", "c1", "h2", "c2", "h3", "c3", "h4", "c4"), output="h4")
    def stacked4(x, h1, c1, h2, c2, h3, c3, h4, c4, p):
        h1, c1 = layer(p, 1, x, h1, c1)
        h2, c2 = layer(p, 2, h1, h2, c2)
        h3, c3 = layer(p, 3, h2, h3, c3)
        h4, c4 = layer(p, 4, h3, h4, c4)
        return {"h1": h1, "c1": c1, "h2": h2, "c2": c2, "h3": h3, "c3": c3, "h4": h4, "c4": c4}

    _, _, csrc = lower(stacked4, bind_sizes(stacked4, 8, 8, None), "float32", blas=True)
    c_file, obj = tmp_path / "stacked4.c", tmp_path / "stacked4.o"
    c_file.write_text(csrc.text)
    cmd = build.compiler_command(str(c_file), str(obj), 2, True, compile_only=True)
    subprocess.run(cmd + ["-fno-inline"], check=True, capture_output=True)
    symbols = subprocess.run(["nm", str(obj)], capture_output=True, text=True, check=True).stdout
    math = ("exp", "exp_reduced", "exp_clamped", "exp_nonpos", "tanh", "log", "log1p", "sigmoid", "pow2i", "max", "min", "clip")
    helpers = [s for s in symbols.split() if s.rstrip("f") in ["rnnc_" + m for m in math]]
    assert helpers == []
