"""The kernels' own exp and tanh against libm (long double reference) over the whole range:
exp <= 1 ulp (float32 and float64), tanh <= 2 ulp (float32) and <= 1 ulp (float64)."""
import importlib
import sys

import numpy as np
import pytest

from rnncompiler import mathfn

BOUNDS = {("float32", "exp"): 1, ("float64", "exp"): 1,
          ("float32", "tanh"): 2, ("float64", "tanh"): 1,
          ("float32", "sigmoid"): 3, ("float64", "sigmoid"): 3}


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
        for fn in ("exp", "tanh", "sigmoid"):
            src += ("\nvoid v_%s(long n, const %s *restrict x, %s *restrict y)"
                    " { for (long i = 0; i < n; ++i) y[i] = rnnc_%s%s(x[i]); }" % (fn, T, T, fn, F))
            cdef += "void v_%s(long n, const %s *x, %s *y);\n" % (fn, T, T)
        ffi = cffi.FFI()
        ffi.cdef(cdef)
        name = "_rnnc_fastmath_%s" % dtype
        ffi.set_source(name, src, extra_compile_args=["-O2", "-march=native", "-fno-math-errno"])
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


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("fn", ["exp", "tanh", "sigmoid"])
def test_accuracy_over_the_whole_range(modules, dtype, fn):
    mod = modules[dtype]
    x = sweep(dtype)
    y = np.empty_like(x)
    T = "float[]" if dtype == "float32" else "double[]"
    getattr(mod.lib, "v_" + fn)(x.size, mod.ffi.from_buffer(T, x), mod.ffi.from_buffer(T, y))
    ld = x.astype(np.longdouble)
    with np.errstate(all="ignore"):
        ref = {"exp": np.exp, "tanh": np.tanh, "sigmoid": lambda v: 1 / (1 + np.exp(-v))}[fn](ld)
    d = ulp_distance(y, ref, dtype)
    worst = int(np.argmax(d))
    assert d.max() <= BOUNDS[dtype, fn], (x[worst], y[worst], ref[worst])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_nan_propagates(modules, dtype):
    mod = modules[dtype]
    T = "float[]" if dtype == "float32" else "double[]"
    for fn in ("exp", "tanh", "sigmoid"):
        x = np.array([np.nan, 1.0], dtype)
        y = np.empty_like(x)
        getattr(mod.lib, "v_" + fn)(2, mod.ffi.from_buffer(T, x), mod.ffi.from_buffer(T, y))
        assert np.isnan(y[0]) and np.isfinite(y[1]), fn
