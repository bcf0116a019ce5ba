"""rc.export_c: every exported cell compiles with the strict flags of API section 5, and,
called through the documented ABI via ctypes, agrees with the Python kernel (forward and
backward, float64 < 1e-12, float32 < 1e-5); bad arguments return a non-zero code and
write nothing; the header declares the ABI exactly; the C example matches Python."""
import ctypes
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import rnncompiler as rc
from cells import elman, lstm, gru, peephole_lstm, gated_bump, two_sizes
from corner_cells import CORNER_CELLS

try:
    from rnncompiler import cells as library
except ImportError:
    library = None

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CC = os.environ.get("CC", "cc")
STRICT = ["-std=c99", "-O2", "-Wall", "-Wextra", "-pedantic", "-Werror"]
I, H, T, B = 3, 4, 5, 3
LENGTHS = [T, 2, 0]
TOL = {"float64": 1e-12, "float32": 1e-5}
INT_MAX = 2**31 - 1
SIZE_MAX = 2**64 - 1 if ctypes.sizeof(ctypes.c_size_t) == 8 else 2**32 - 1
SENTINEL = 12345.0

TEST_CELLS = {"elman": (elman, None), "lstm": (lstm, None), "gru": (gru, None),
              "peephole_lstm": (peephole_lstm, None), "gated_bump": (gated_bump, None),
              "two_sizes": (two_sizes, {"P": 3, "O": 2})}


def library_cells(half):
    if library is None:
        pytest.skip("rnncompiler.cells is not there")
    names = sorted(library.ALL)[half::2]
    return {n: (library.ALL[n], {s: 2 for s in library.SIZES[n]} or None) for n in names}


GROUPS = {
    "test-cells": lambda: TEST_CELLS,
    "corner-cells": lambda: {n: (c, None) for n, c in CORNER_CELLS.items()},
    "library-even": lambda: library_cells(0),
    "library-odd": lambda: library_cells(1),
}


# ---------------------------------------------------------------- building and calling

def export_all(cells, out, dtype, blas=False, prefix="x_"):
    """name -> (CExport, cell, sizes) with every cell exported into out."""
    return {name: (rc.export_c(cell, out, I, H, dtype, name=prefix + name, sizes=sizes,
                               blas=blas), cell, sizes)
            for name, (cell, sizes) in cells.items()}


def build_shared(out, sources, flags=STRICT, extra=()):
    """One strict compile of all sources into one shared object, loaded with ctypes."""
    so = os.path.join(out, "exported.so")
    cmd = [CC] + list(flags) + ["-shared", "-fPIC", "-o", so] + list(sources) + list(extra) + ["-lm"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, "strict compile failed:\n" + proc.stderr[-4000:]
    return ctypes.CDLL(so)


class CKernel:
    """The exported functions of one prefix, called with numpy arrays (None is NULL)."""

    def __init__(self, lib, prefix, dtype):
        self.dtype = np.dtype(dtype)
        real = ctypes.c_float if self.dtype == np.float32 else ctypes.c_double
        self.P, self.IP = ctypes.POINTER(real), ctypes.POINTER(ctypes.c_int)
        i, P, IP = ctypes.c_int, self.P, self.IP
        sigs = {"param_count": [], "input_size": [], "state_size": [], "output_size": [],
                "workspace_size": [i, i], "infer_workspace_size": [i, i],
                "forward": [i, i, P, P, IP, P, P, P, P], "infer": [i, i, P, P, IP, P, P, P, P],
                "backward": [i, i, P, P, IP, P, P, P, P, P, P, P],
                "run_backward": [i, i, P, P, IP, P, P, P, P, P, P, P, P, i]}
        self.fn = {}
        for name, args in sigs.items():
            f = getattr(lib, "%s_%s" % (prefix, name))
            f.argtypes = args
            f.restype = ctypes.c_size_t if name.endswith(("count", "size")) else ctypes.c_int
            self.fn[name] = f
        self.n, self.I, self.S, self.O = (self.fn[k]() for k in
                                          ("param_count", "input_size", "state_size", "output_size"))

    def ptr(self, arr, ints=False):
        if arr is None:
            return None
        assert arr.flags.c_contiguous and arr.dtype == (np.intc if ints else self.dtype)
        return arr.ctypes.data_as(self.IP if ints else self.P)

    def buffers(self, T, B):
        """Sentinel-filled y, state_T, work."""
        return (np.full((T, B, self.O), SENTINEL, self.dtype),
                np.full((B, self.S), SENTINEL, self.dtype),
                np.full(self.fn["workspace_size"](T, B), SENTINEL, self.dtype))

    def forward(self, T, B, params, x, lengths, state0, y, state_T, work, infer=False):
        p = self.ptr
        return self.fn["infer" if infer else "forward"](
            T, B, p(params), p(x), p(lengths, True), p(state0), p(y), p(state_T), p(work))

    def backward(self, T, B, params, x, lengths, state0, work, dy, dstate_T, dparams, dx,
                 dstate0, dstates=None):
        p = self.ptr
        args = (T, B, p(params), p(x), p(lengths, True), p(state0), p(work), p(dy),
                p(dstate_T), p(dparams), p(dx), p(dstate0))
        if dstates is not None:
            return self.fn["run_backward"](*args, p(dstates), 1)
        return self.fn["backward"](*args)


# ---------------------------------------------------------------- comparing with Python

def draw(kern, seed=0):
    """params (dict), x, state0 rows, dy, dstate_T rows, lengths — random, with lengths
    that include 0 and T."""
    rng = np.random.default_rng(seed)
    S = sum(kern.state_sizes.values())
    params = kern.init_params(seed=seed)
    x = rng.standard_normal((T, B, kern.input_size))
    state0 = 0.5 * rng.standard_normal((B, S))
    dy = rng.standard_normal((T, B, kern.output_size))
    dstate_T = rng.standard_normal((B, S))
    return params, x, state0, dy, dstate_T, np.array(LENGTHS, np.intc)


def split_rows(kern, rows):
    out, off = {}, 0
    for s, size in kern.state_sizes.items():
        out[s] = rows[..., off:off + size]
        off += size
    return out


def check_layout(exp, kern):
    """The export's documented layout is the kernel's: parameters in declaration order,
    each C-contiguous; states concatenated in declaration order."""
    off, params = 0, []
    for name, shape in kern.param_shapes.items():
        count = int(np.prod(shape, dtype=np.int64))
        params.append((name, tuple(shape), off, count))
        off += count
    assert exp.params == tuple(params)
    off, states = 0, []
    for s, size in kern.state_sizes.items():
        states.append((s, size, off))
        off += size
    assert exp.states == tuple(states)


def compare(ck, exp, cell, sizes, dtype):
    """Block name -> max |C - Python| / max(1, max |Python|), forward and backward."""
    kern = rc.compile(cell, I, H, dtype, sizes=sizes)
    check_layout(exp, kern)
    assert (ck.n, ck.I, ck.S, ck.O) == (exp.param_count, kern.input_size,
                                        sum(kern.state_sizes.values()), kern.output_size)
    params, *arrays, lengths = draw(kern)
    x, state0, dy, dstate_T = (np.ascontiguousarray(a, dtype) for a in arrays)
    flat = np.concatenate([params[n].ravel() for n in kern.param_shapes]).astype(dtype)
    y, state_T, work = ck.buffers(T, B)
    assert ck.forward(T, B, flat, x, lengths, state0, y, state_T, work) == 0
    dparams = np.full(ck.n, SENTINEL, dtype)
    dx = np.full(x.shape, SENTINEL, dtype)
    dstate0 = np.full(state0.shape, SENTINEL, dtype)
    assert ck.backward(T, B, flat, x, lengths, state0, work, dy, dstate_T, dparams, dx, dstate0) == 0
    res = kern.forward(params, x, state0=split_rows(kern, state0), lengths=lengths)
    g = kern.backward(res, d_outputs=dy, d_states=split_rows(kern, dstate_T))
    got = {"y": y, "dx": dx}
    want = {"y": res.outputs, "dx": g.x}
    for s in kern.state_sizes:
        got["state_T." + s], want["state_T." + s] = split_rows(kern, state_T)[s], res.states[s]
        got["dstate0." + s], want["dstate0." + s] = split_rows(kern, dstate0)[s], g.state0[s]
    for name, arr in exp.split_params(dparams).items():
        # a frozen parameter (trainable=False) has no gradient: the C leaves its part 0
        want_d = np.zeros_like(arr) if name in kern.frozen else g.params[name]
        got["d" + name], want["d" + name] = arr, want_d
    return {k: float(np.max(np.abs(got[k] - want[k]), initial=0)
                     / max(1.0, float(np.max(np.abs(want[k]), initial=0)))) for k in want}


def compare_all(exports, lib, dtype):
    """Every block of every exported cell within TOL; failures listed together."""
    failures = []
    for name, (exp, cell, sizes) in exports.items():
        errors = compare(CKernel(lib, exp.name, dtype), exp, cell, sizes, dtype)
        failures += ["%s %s: %.2e" % (name, k, e) for k, e in errors.items() if not e < TOL[dtype]]
    assert not failures, "C and Python disagree:\n" + "\n".join(failures)


# ---------------------------------------------------------------- every cell

@pytest.mark.slow
@pytest.mark.parametrize("group", sorted(GROUPS))
def test_every_exported_cell_compiles_strictly_and_matches_python(group, tmp_path):
    exports = export_all(GROUPS[group](), str(tmp_path), "float64")
    lib = build_shared(str(tmp_path), [e.source for e, _, _ in exports.values()])
    compare_all(exports, lib, "float64")


def test_float32_exports_match_the_float32_kernel(tmp_path):
    cells = {n: TEST_CELLS[n] for n in ("lstm", "two_sizes")}
    exports = export_all(cells, str(tmp_path), "float32", prefix="f_")
    lib = build_shared(str(tmp_path), [e.source for e, _, _ in exports.values()])
    compare_all(exports, lib, "float32")


@pytest.mark.parametrize("dtype, size", [pytest.param("float64", 70, marks=pytest.mark.slow),
                                         ("float32", 64)])
def test_exports_over_several_blocks_of_k_build_at_o3_and_match_python(dtype, size, tmp_path,
                                                                       monkeypatch):
    """I = H = 70 or 64: products over K = 140 or 128 forward and 280 or 256 backward (the
    portable microkernel's blocks of k are 64 long: the last one short or whole), widths
    that end inside a panel, built at -O3 (-march=native on x86-64, where gcc warned of
    loops it could not bound) with every warning an error; forward and backward against
    Python."""
    import platform
    monkeypatch.setitem(globals(), "I", size)
    monkeypatch.setitem(globals(), "H", size)
    cells = {n: TEST_CELLS[n] for n in (("lstm", "gru") if dtype == "float32" else ("gru",))}
    exports = export_all(cells, str(tmp_path), dtype, prefix="k_")
    o3 = STRICT + ["-O3"] + (["-march=native"] if platform.machine() in ("x86_64", "AMD64") else [])
    lib = build_shared(str(tmp_path), [e.source for e, _, _ in exports.values()], flags=o3)
    compare_all(exports, lib, dtype)


def test_cblas_exports_match_python_with_any_cblas(tmp_path):
    """--blas: standard cblas_?gemm calls; here scipy-openblas32's CBLAS, whose symbols
    carry a scipy_ prefix, stands in for a system one."""
    openblas = pytest.importorskip("scipy_openblas32")
    cells = {n: TEST_CELLS[n] for n in ("lstm", "two_sizes")}
    exports = export_all(cells, str(tmp_path), "float64", blas="cblas", prefix="b_")
    for exp, _, _ in exports.values():
        # what the compiler sees once the preprocessor chose the flavour: CBLAS calls by
        # their standard names, no threads
        code = subprocess.run([os.environ.get("CC") or "gcc", "-E", "-P", "-std=c99",
                               "-I" + openblas.get_include_dir(), exp.source],
                              capture_output=True, text=True, check=True).stdout
        assert re.search(r"(?<!scipy_)\bcblas_dgemm\(", code) and "pthread" not in code
    libdir = openblas.get_lib_dir()
    lib = build_shared(str(tmp_path), [e.source for e, _, _ in exports.values()],
                       flags=STRICT + ["-I" + openblas.get_include_dir(),
                                       "-Dcblas_sgemm=scipy_cblas_sgemm",
                                       "-Dcblas_dgemm=scipy_cblas_dgemm"],
                       extra=["-L" + libdir, "-l" + openblas.get_library(),
                              "-Wl,-rpath," + libdir])
    compare_all(exports, lib, "float64")


# ---------------------------------------------------------------- the ABI's promises

@pytest.fixture(scope="module")
def abi(tmp_path_factory):
    """An LSTM and the two-size cell, float64, as (CKernel, CExport, kernel) by name."""
    out = str(tmp_path_factory.mktemp("abi"))
    exports = export_all({n: TEST_CELLS[n] for n in ("lstm", "two_sizes")}, out, "float64",
                         prefix="abi_")
    lib = build_shared(out, [e.source for e, _, _ in exports.values()],
                       flags=["-std=c99", "-O1", "-Wall", "-Wextra", "-pedantic", "-Werror"])
    return {n: (CKernel(lib, e.name, "float64"), e, rc.compile(cell, I, H, "float64", sizes=s))
            for n, (e, cell, s) in exports.items()}


def prepared(abi, name):
    ck, exp, kern = abi[name]
    params, x, state0, dy, dstate_T, lengths = draw(kern, seed=1)
    return ck, kern, exp.flat_params(params), x, state0, dy, dstate_T, lengths


@pytest.mark.parametrize("name", ["lstm", "two_sizes"])
def test_bad_forward_arguments_return_a_code_and_write_nothing(abi, name):
    ck, kern, flat, x, state0, _, _, lengths = prepared(abi, name)
    cases = {"T=0": dict(T=0), "T=-1": dict(T=-1), "B=0": dict(B=0), "B=-2": dict(B=-2),
             "length -1": dict(lengths=np.array([T, -1, 0], np.intc)),
             "length T+1": dict(lengths=np.array([T, T + 1, 0], np.intc)),
             "T, B overflow": dict(T=INT_MAX, B=INT_MAX),
             "params NULL": dict(params=None), "x NULL": dict(x=None), "y NULL": dict(y=False),
             "state_T NULL": dict(state_T=False), "work NULL": dict(work=False)}
    for infer in (False, True):
        for case, change in cases.items():
            y, state_T, work = ck.buffers(T, B)
            args = dict(T=T, B=B, params=flat, x=x, lengths=lengths, state0=state0, y=y,
                        state_T=state_T, work=work)
            args.update({k: (None if v is False else v) for k, v in change.items()})
            code = ck.forward(args["T"], args["B"], args["params"], args["x"], args["lengths"],
                              args["state0"], args["y"], args["state_T"], args["work"], infer=infer)
            assert code != 0, (case, infer)
            for buf in (y, state_T, work):
                assert np.all(buf == SENTINEL), "%s (infer=%s) wrote into its outputs" % (case, infer)


@pytest.mark.parametrize("name", ["lstm", "two_sizes"])
def test_bad_backward_arguments_return_a_code_and_write_nothing(abi, name):
    ck, kern, flat, x, state0, dy, dstate_T, lengths = prepared(abi, name)
    y, state_T, work = ck.buffers(T, B)
    assert ck.forward(T, B, flat, x, lengths, state0, y, state_T, work) == 0
    tape = work.copy()
    cases = {"T=0": dict(T=0), "B=0": dict(B=0), "B=-1": dict(B=-1),
             "length -1": dict(lengths=np.array([-1, 0, 0], np.intc)),
             "length T+1": dict(lengths=np.array([T + 1, 0, 0], np.intc)),
             "T, B overflow": dict(T=INT_MAX, B=INT_MAX),
             "params NULL": dict(params=None), "x NULL": dict(x=None),
             "work NULL": dict(work=None), "dparams NULL": dict(dparams=None)}
    for case, change in cases.items():
        dparams, dx = np.full(ck.n, SENTINEL), np.full(x.shape, SENTINEL)
        dstate0 = np.full(state0.shape, SENTINEL)
        args = dict(T=T, B=B, params=flat, x=x, lengths=lengths, work=work, dparams=dparams)
        args.update(change)
        code = ck.backward(args["T"], args["B"], args["params"], args["x"], args["lengths"],
                           state0, args["work"], dy, dstate_T, args["dparams"], dx, dstate0)
        assert code != 0, case
        for buf in (dparams, dx, dstate0):
            assert np.all(buf == SENTINEL), "%s wrote into its outputs" % case
        assert np.array_equal(work, tape), "%s changed the tape" % case


@pytest.mark.parametrize("name", ["lstm", "two_sizes"])
def test_null_state0_is_zeros_and_optional_outputs_may_be_null(abi, name):
    ck, kern, flat, x, _, dy, dstate_T, lengths = prepared(abi, name)
    zeros = np.zeros((B, ck.S))
    results = []
    for state0 in (None, zeros):
        y, state_T, work = ck.buffers(T, B)
        assert ck.forward(T, B, flat, x, lengths, state0, y, state_T, work) == 0
        dparams, dx, dstate0 = np.empty(ck.n), np.empty(x.shape), np.empty((B, ck.S))
        assert ck.backward(T, B, flat, x, lengths, state0, work, dy, dstate_T, dparams, dx, dstate0) == 0
        results.append((y, state_T, dparams, dx, dstate0))
    for a, b in zip(*results, strict=True):
        assert np.array_equal(a, b)
    res = kern.forward(abi[name][1].split_params(flat), x, lengths=lengths)
    assert np.allclose(results[0][0], res.outputs, rtol=0, atol=1e-12)
    # dx and dstate0 NULL: the same parameter gradients; dy and dstate_T NULL: zero gradients
    y, state_T, work = ck.buffers(T, B)
    assert ck.forward(T, B, flat, x, lengths, None, y, state_T, work) == 0
    dparams = np.empty(ck.n)
    assert ck.backward(T, B, flat, x, lengths, None, work, dy, dstate_T, dparams, None, None) == 0
    assert np.array_equal(dparams, results[0][2])
    assert ck.backward(T, B, flat, x, lengths, None, work, None, None, dparams, None, None) == 0
    assert not np.any(dparams)


@pytest.mark.parametrize("name", ["lstm", "two_sizes"])
def test_backward_runs_again_on_the_same_tape_and_infer_matches_forward(abi, name):
    ck, kern, flat, x, state0, dy, dstate_T, lengths = prepared(abi, name)
    y, state_T, work = ck.buffers(T, B)
    assert ck.forward(T, B, flat, x, lengths, state0, y, state_T, work) == 0
    runs = []
    for _ in range(2):
        out = np.empty(ck.n), np.empty(x.shape), np.empty((B, ck.S)), np.empty((T, B, ck.S))
        assert ck.backward(T, B, flat, x, lengths, state0, work, dy, dstate_T, *out) == 0
        runs.append(out)
    for a, b in zip(*runs, strict=True):
        assert np.array_equal(a, b)
    # the per-step state gradients of run_backward are the kernel's state_grads
    res = kern.forward(abi[name][1].split_params(flat), x, split_rows(kern, state0), lengths)
    g = kern.backward(res, dy, split_rows(kern, dstate_T), state_grads=True)
    for s, v in split_rows(kern, runs[0][3]).items():
        assert np.allclose(v, g.states[s], rtol=0, atol=1e-12 * max(1, np.abs(g.states[s]).max()))
    y2, state_T2 = np.empty_like(y), np.empty_like(state_T)
    work2 = np.empty(ck.fn["infer_workspace_size"](T, B))
    assert ck.forward(T, B, flat, x, lengths, state0, y2, state_T2, work2, infer=True) == 0
    assert np.allclose(y2, y, rtol=0, atol=1e-12) and np.allclose(state_T2, state_T, rtol=0, atol=1e-12)


def test_workspace_size_is_size_max_for_bad_or_huge_sizes(abi):
    ck = abi["lstm"][0]
    for T_, B_ in ((0, 1), (1, 0), (-1, 3), (INT_MAX, INT_MAX)):
        assert ck.fn["workspace_size"](T_, B_) == SIZE_MAX
        assert ck.fn["infer_workspace_size"](T_, B_) == SIZE_MAX
    small, big = ck.fn["workspace_size"](5, 3), ck.fn["workspace_size"](10, 3)
    assert 0 < small < big < SIZE_MAX


SANITIZED_DRIVER = r"""
#include <stdio.h>
#include <stdlib.h>
#include HEADER
#define GLUE(a, b) a ## _ ## b
#define XGLUE(a, b) GLUE(a, b)
#define FN(n) XGLUE(P, n)
/* buffers of exactly the documented sizes, filled with values in [-1, 1] */
static double *buf(size_t n)
{
    double *p = malloc((n ? n : 1) * sizeof(double));
    size_t i;
    for (i = 0; i < n; ++i) p[i] = (double)(rand() % 2001 - 1000) / 1000.0;
    return p;
}
static int run(int T, int B, const int *lengths, int with_state0)
{
    size_t I = FN(input_size)(), S = FN(state_size)(), O = FN(output_size)(), n = FN(param_count)();
    double *params = buf(n), *x = buf((size_t)T * B * I), *s0 = buf((size_t)B * S);
    double *y = buf((size_t)T * B * O), *sT = buf((size_t)B * S), *dy = buf((size_t)T * B * O);
    double *work = buf(FN(workspace_size)(T, B)), *iwork = buf(FN(infer_workspace_size)(T, B));
    double *dsT = buf((size_t)B * S), *dp = buf(n), *dx = buf((size_t)T * B * I);
    double *ds0 = buf((size_t)B * S), *dst = buf((size_t)T * B * S);
    int rc = FN(forward)(T, B, params, x, lengths, with_state0 ? s0 : NULL, y, sT, work);
    rc |= FN(backward)(T, B, params, x, lengths, s0, work, dy, dsT, dp, dx, ds0);
    rc |= FN(backward)(T, B, params, x, lengths, s0, work, NULL, NULL, dp, NULL, NULL);
    rc |= FN(run_backward)(T, B, params, x, lengths, s0, work, dy, dsT, dp, dx, ds0, dst, 1);
    rc |= FN(infer)(T, B, params, x, lengths, s0, y, sT, iwork);
    free(params); free(x); free(s0); free(y); free(sT); free(dy); free(work); free(iwork);
    free(dsT); free(dp); free(dx); free(ds0); free(dst);
    return rc;
}
int main(void)
{
    int short_lengths[3] = {5, 2, 0}, long_lengths[2] = {130, 67};
    int rc = run(5, 3, NULL, 0) | run(5, 3, short_lengths, 1) | run(130, 2, long_lengths, 1);
    printf("rc=%d\n", rc);
    return rc;
}
"""


@pytest.mark.slow
def test_exported_kernels_stay_in_bounds_under_sanitizers(tmp_path):
    """AddressSanitizer and UndefinedBehaviorSanitizer on buffers of exactly the sizes the
    header documents, with and without lengths and state0, over more than one chunk."""
    out = str(tmp_path)
    flags = ["-std=c99", "-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]
    empty = tmp_path / "empty.c"
    empty.write_text("int main(void) { return 0; }\n")
    if subprocess.run([CC] + flags + [str(empty), "-o", str(tmp_path / "empty")],
                      capture_output=True).returncode != 0:
        pytest.skip("%s cannot build with -fsanitize=address,undefined here" % CC)
    driver = tmp_path / "driver.c"
    driver.write_text(SANITIZED_DRIVER)
    for cell, sizes in ((lstm, None), (two_sizes, {"P": 3, "O": 2})):
        exp = rc.export_c(cell, out, I, H, "float64", sizes=sizes)
        exe = os.path.join(out, exp.name)
        proc = subprocess.run([CC] + flags + ["-I" + out, "-DP=" + exp.name,
                                              '-DHEADER="%s.h"' % exp.name, str(driver),
                                              exp.source, "-o", exe, "-lm"],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        run = subprocess.run([exe], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and run.stdout.strip() == "rc=0", run.stdout + run.stderr[-3000:]


# ---------------------------------------------------------------- the header

ABI = """\
size_t {p}_param_count(void);
size_t {p}_input_size(void);
size_t {p}_state_size(void);
size_t {p}_output_size(void);
size_t {p}_workspace_size(int T, int B);
int {p}_forward(int T, int B, const {r} *params, const {r} *x, const int *lengths,
                const {r} *state0, {r} *y, {r} *state_T, {r} *work);
int {p}_backward(int T, int B, const {r} *params, const {r} *x, const int *lengths,
                 const {r} *state0, {r} *work, const {r} *dy, const {r} *dstate_T,
                 {r} *dparams, {r} *dx, {r} *dstate0);"""


def _declarations(header):
    """Every prototype of the header, whitespace collapsed, comments and macros removed."""
    text = re.sub(r"/\*.*?\*/", " ", header, flags=re.S)
    text = "\n".join(ln for ln in text.splitlines()
                     if not ln.lstrip().startswith(("#", "extern", "}")))
    return {" ".join(d.split()) + ";" for d in text.split(";") if "(" in d}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_header_declares_the_abi_of_the_contract_and_documents_the_layout(dtype, tmp_path):
    exp = rc.export_c(two_sizes, str(tmp_path), I, H, dtype, name="hdr",
                      sizes={"P": 3, "O": 2})
    with open(exp.header) as f:
        header = f.read()
    real = "float" if dtype == "float32" else "double"
    decls = _declarations(header)
    for proto in ABI.format(p="hdr", r=real).split(";")[:-1]:
        assert " ".join(proto.split()) + ";" in decls, proto
    # every function is documented: a comment right before each group of prototypes
    for fn in ("param_count", "input_size", "state_size", "output_size", "workspace_size",
               "forward", "backward", "infer_workspace_size", "run_forward"):
        assert re.search(r"\*/\n(size_t|int) hdr_%s\(" % fn, header), fn
    # the flat parameter layout by name, the state layout, and the codes
    for name, shape, off, count in exp.params:
        assert re.search(r"^ \*\s+%s\s+.*\(%s\)\s+%d\s+%d$"
                         % (name, ", ".join(map(str, shape)), off, count), header, re.M), name
    assert re.search(r"^ \*\s+h\s+P = 3\s+0$", header, re.M)
    assert re.search(r"^ \*\s+c\s+H = 4\s+3$", header, re.M)
    for text in ("lengths", "NULL", "workspace_size(T, B)", "SIZE_MAX", "time-major",
                 "RETURN CODES", "state0 = NULL starts every state at zero"):
        assert text in header, text
    assert "#define hdr_PARAM_W_y_OFFSET %d" % dict((p[0], p[2]) for p in exp.params)["W_y"] in header
    assert header.isascii()


def test_header_compiles_alone_twice_and_as_cxx_with_exact_types(tmp_path):
    """Function pointers of the contract's exact types take the declared functions under
    -Werror (a mismatch in any parameter type is an error), the layout constants are the
    export's, the include guard works, and C++ can include the header."""
    out = str(tmp_path)
    exports = [rc.export_c(lstm, out, I, H, "float64", name="d_lstm"),
               rc.export_c(two_sizes, out, I, H, "float32", name="s_two", sizes={"P": 3, "O": 2})]
    lines = ["#include <stddef.h>"]
    for exp in exports:
        p, r = exp.name, "float" if exp.dtype == "float32" else "double"
        lines += ['#include "%s.h"' % p, '#include "%s.h"' % p]
        consts = [("INPUT_SIZE", exp.input_size), ("STATE_SIZE", exp.state_size),
                  ("OUTPUT_SIZE", exp.output_size), ("PARAM_COUNT", exp.param_count)]
        consts += [("PARAM_%s_%s" % (n, k), v) for n, _, off, count in exp.params
                   for k, v in (("OFFSET", off), ("COUNT", count))]
        consts += [("STATE_%s_%s" % (s, k), v) for s, size, off in exp.states
                   for k, v in (("OFFSET", off), ("SIZE", size))]
        lines += ["#if %s_%s != %d\n#error %s_%s\n#endif" % (p, c, v, p, c) for c, v in consts]
        lines += [
            "size_t (*const %s_pc)(void) = %s_param_count;" % (p, p),
            "size_t (*const %s_ws)(int, int) = %s_workspace_size;" % (p, p),
            "int (*const %s_fw)(int, int, const %s *, const %s *, const int *, const %s *, "
            "%s *, %s *, %s *) = %s_forward;" % ((p,) + (r,) * 6 + (p,)),
            "int (*const %s_bw)(int, int, const %s *, const %s *, const int *, const %s *, "
            "%s *, const %s *, const %s *, %s *, %s *, %s *) = %s_backward;" % ((p,) + (r,) * 9 + (p,))]
    src = os.path.join(out, "abi_check.c")
    with open(src, "w") as f:
        f.write("\n".join(lines) + "\n")
    proc = subprocess.run([CC] + STRICT + ["-I" + out, "-c", src, "-o", src + ".o"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    with open(src, "a") as f:     # the check can fail: a wrong type is an error
        f.write("int (*const wrong)(int, int, const float *) = d_lstm_forward;\n")
    proc = subprocess.run([CC] + STRICT + ["-I" + out, "-c", src, "-o", src + ".o"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "incompatible" in proc.stderr
    cxx = shutil.which("c++") or shutil.which("g++")
    if cxx:
        proc = subprocess.run([cxx, "-fsyntax-only", "-x", "c++", "-Wall", "-Wextra", "-pedantic",
                               "-Werror", "-I" + out, "-"], input='#include "d_lstm.h"\n'
                              '#include "s_two.h"\nint main() { return d_lstm_param_count() '
                              '> 0 ? 0 : 1; }\n', capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr


def test_exported_source_is_ascii(tmp_path):
    exp = rc.export_c(lstm, str(tmp_path), I, H, "float64")
    with open(exp.source, encoding="utf-8") as f:
        assert f.read().isascii()


# ---------------------------------------------------------------- arguments

def test_export_writes_named_files_deterministically_and_flattens_params(tmp_path):
    a = rc.export_c(lstm, str(tmp_path / "a"), I, H, "float64")
    b = rc.export_c(lstm, tmp_path / "b", I, H, "float64")
    assert os.path.basename(a.header) == "lstm.h" and os.path.basename(a.source) == "lstm.c"
    for x, y in ((a.header, b.header), (a.source, b.source)):
        with open(x, "rb") as f, open(y, "rb") as g:
            assert f.read() == g.read()
    c = rc.export_c(lstm, str(tmp_path), I, H, "float32", name="my_lstm")
    assert os.path.exists(tmp_path / "my_lstm.h") and c.dtype == "float32"
    kern = rc.compile(lstm, I, H, "float64")
    params = kern.init_params(seed=3)
    flat = a.flat_params(params)
    assert flat.shape == (a.param_count,) and flat.dtype == np.float64
    assert all(np.array_equal(v, params[k]) for k, v in a.split_params(flat).items())
    with pytest.raises(KeyError, match="W_f"):
        a.flat_params({k: v for k, v in params.items() if k != "W_f"})
    with pytest.raises(ValueError, match=r"params\['b_o'\]: expected shape \(4,\)"):
        a.flat_params(dict(params, b_o=np.zeros(5)))
    with pytest.raises(KeyError, match="unknown parameter 'nope'"):
        a.flat_params(dict(params, nope=np.zeros(1)))


@pytest.mark.parametrize("name, match", [
    ("int", "C keyword"), ("double", "C keyword"), ("restrict", "C keyword"),
    ("_Bool", "C keyword"), ("_cell", "starts with '_'"), ("9lives", "not a valid name"),
    ("my-cell", "not a valid name"), ("for", "not a valid name"), ("", "not a valid name"),
    ("RNNC", "prefix of the generated C"), ("RNNC_P", "prefix of the generated C"),
])
def test_names_that_cannot_prefix_c_symbols_are_refused(name, match, tmp_path):
    with pytest.raises(rc.CellError, match=match):
        rc.export_c(elman, str(tmp_path), I, H, name=name)
    assert os.listdir(tmp_path) == []


def test_a_long_valid_name_is_written_and_a_too_long_one_is_named(tmp_path):
    """A 248-character name writes NAME.h and NAME.c (the temporary file beside them once
    passed the 255-byte file-name limit: a raw OSError); 254 characters are refused."""
    name = "c" * 248
    exp = rc.export_c(elman, str(tmp_path), I, H, name=name)
    assert sorted(os.listdir(tmp_path)) == [name + ".c", name + ".h"]
    assert exp.header == os.path.join(str(tmp_path), name + ".h")
    with pytest.raises(rc.CellError, match=r"name: 254 characters .* at most 253"):
        rc.export_c(elman, str(tmp_path / "other"), I, H, name="c" * 254)


def test_other_bad_arguments_are_named(tmp_path):
    with pytest.raises(TypeError, match="cell: expected a cell"):
        rc.export_c(lambda x: x, str(tmp_path), I, H)
    with pytest.raises(TypeError, match="out_dir"):
        rc.export_c(elman, 3, I, H)
    with pytest.raises(ValueError, match="dtype"):
        rc.export_c(elman, str(tmp_path), I, H, "float16")
    with pytest.raises(ValueError, match="blas"):
        rc.export_c(elman, str(tmp_path), I, H, blas="openblas")
    with pytest.raises(ValueError, match="hidden_size"):
        rc.export_c(elman, str(tmp_path), I, 0)
    with pytest.raises(rc.CellError, match="'P'"):
        rc.export_c(two_sizes, str(tmp_path), I, H)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- the C example

def test_c_example_prints_what_the_python_kernel_computes(tmp_path):
    """examples/c: `make run` exports the LSTM, saves weights from Python, builds and runs
    the C program; its printed numbers are compared here with the Python kernel, from
    the saved files; then the example's own --compare agrees."""
    build = str(tmp_path / "build")
    T_, B_, H_ = 4, 3, 4       # H as elsewhere in the suite: the kernel cache may have it
    sizes = ["T=%d" % T_, "B=%d" % B_, "H=%d" % H_]
    cflags = " ".join(STRICT)
    proc = subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "examples", "c"), "run",
                           "BUILD=" + build, "PYTHON=" + sys.executable, "CFLAGS=" + cflags] + sizes,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    printed = {name: np.array(values.split(), float)
               for name, _, values in (ln.partition(": ") for ln in proc.stdout.splitlines())
               if re.fullmatch(r"[\w.]+", name)}
    sys.path.insert(0, os.path.join(ROOT, "examples", "c"))
    try:
        import save_weights
    finally:
        sys.path.pop(0)
    kern = rc.compile(save_weights.lstm, 3, H_, "float64")
    flat = np.fromfile(os.path.join(build, "params.bin"))
    x = np.fromfile(os.path.join(build, "x.bin")).reshape(T_, B_, 3)
    dy = np.fromfile(os.path.join(build, "dy.bin")).reshape(T_, B_, H_)
    lengths = np.fromfile(os.path.join(build, "lengths.bin"), np.intc)
    params, off = {}, 0
    for name, shape in kern.param_shapes.items():
        n = int(np.prod(shape))
        params[name] = flat[off:off + n].reshape(shape)
        off += n
    assert off == flat.size and sorted(set(lengths)) != [T_]
    res = kern.forward(params, x, lengths=lengths)
    g = kern.backward(res, d_outputs=dy)
    want = {"lengths": lengths, "y": res.outputs, "loss": np.sum(res.outputs * dy), "dx": g.x,
            "state_T.h": res.states["h"], "state_T.c": res.states["c"],
            "dstate0.h": g.state0["h"], "dstate0.c": g.state0["c"]}
    want.update({"d" + k: v for k, v in g.params.items()})
    assert sorted(printed) == sorted(want)
    for k, v in want.items():
        v = np.ravel(v)
        assert printed[k].shape == v.shape, k
        assert np.max(np.abs(printed[k] - v)) <= 1e-12 * max(1, np.max(np.abs(v))), k
    out = tmp_path / "c_output.txt"
    out.write_text(proc.stdout)
    args = ["--out", build, "--steps", str(T_), "--batch", str(B_), "--hidden", str(H_)]
    assert save_weights.main(args + ["--compare", str(out)]) == 0
    lines = proc.stdout.splitlines()                 # one number changed by 1e-6 fails
    k = next(i for i, ln in enumerate(lines) if ln.startswith("dW_f: "))
    values = lines[k].split()[1:]
    lines[k] = "dW_f: %r %s" % (float(values[0]) + 1e-6, " ".join(values[1:]))
    out.write_text("\n".join(lines) + "\n")
    assert save_weights.main(args + ["--compare", str(out)]) == 1
