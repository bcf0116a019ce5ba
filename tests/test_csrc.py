"""The C runtime shipped as files (rnncompiler/compiler/csrc): the coefficient tables hold
the numbers their comments say, the files compile as they are for every real type and
flavour, the package ships them and the cache key reads them, and the build stage gets
their text passed in rather than reaching up into codegen."""
import ast
import ctypes
import math
import os
import re
import subprocess

import pytest
import sympy

from rnncompiler.compiler import csrc, mathfn
from rnncompiler.compiler.codegen import helpers

CSRC = os.path.dirname(os.path.abspath(csrc.__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(CSRC)))
CC = os.environ.get("CC") or "gcc"


def table(prefix):
    """{index: literal text} of the `#define PREFIX<index> <literal>` lines of fastmath.h,
    a literal's parentheses dropped."""
    found = re.findall(r"^#define %s(\d+) \(?([^\s)]+)\)?$" % prefix, csrc.source("fastmath.h"), re.M)
    return {int(k): v for k, v in found}


def test_exp_coefficients_are_the_inverse_factorials():
    """The exact decimals Python prints for 1/k! (the same text, so the same float and
    double after the compiler reads it), up to expm1's last term in double."""
    assert table("RNNC_INV_FACT_") == {k: repr(1.0 / math.factorial(k)) for k in range(16)}


def test_tanh_coefficients_are_its_taylor_series():
    """x^(2n-1) has 2^2n (2^2n - 1) B_2n / (2n)!, n = 2..24, rounded once from the rational."""
    want = {}
    for n in range(2, 25):
        c = (sympy.Integer(2) ** (2 * n) * (2 ** (2 * n) - 1) * sympy.bernoulli(2 * n)
             / sympy.factorial(2 * n))
        want[2 * n - 1] = repr(float(c))
    assert table("RNNC_TANH_") == want


def test_log_coefficients_are_fdlibms():
    """Lg1..Lg7 of fdlibm's e_log.c, written as their shortest round-trip decimals."""
    fdlibm = (6.666666666666735130e-01, 3.999999999940941908e-01, 2.857142874366239149e-01,
              2.222219843214978396e-01, 1.818357216161805012e-01, 1.531383769920937332e-01,
              1.479819860511658591e-01)
    assert table("RNNC_LG") == {k + 1: repr(v) for k, v in enumerate(fdlibm)}


def test_the_folder_holds_the_listed_files_and_the_package_ships_them():
    """csrc.FILES is the folder's C, and pyproject's package data matches every file."""
    tomllib = pytest.importorskip("tomllib")
    from fnmatch import fnmatch
    on_disk = {f for f in os.listdir(CSRC) if f.endswith((".c", ".h"))}
    assert on_disk == set(csrc.FILES)
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        patterns = tomllib.load(f)["tool"]["setuptools"]["package-data"]["*"]
    assert all(any(fnmatch(name, p) for p in patterns) for name in csrc.FILES)


def test_source_refuses_a_name_not_in_the_folder():
    with pytest.raises(ValueError, match="name: expected one of"):
        csrc.source("../build.py")


def test_the_cache_key_reads_every_c_file(monkeypatch):
    """A changed C file changes the generator's fingerprint, so no binary of the old C loads."""
    from rnncompiler.compiler import pipeline
    opened = []

    def recording_open(path, *args, **kwargs):
        opened.append(os.path.abspath(path))
        return open(path, *args, **kwargs)
    monkeypatch.setattr(pipeline, "open", recording_open, raising=False)
    pipeline.generator_fingerprint.__wrapped__()
    assert {os.path.join(CSRC, f) for f in csrc.FILES} <= set(opened)


def test_build_imports_nothing_from_codegen():
    """build.py compiles the C it is given, the runtime's included: no import of codegen,
    the stage above it, at any depth of the file."""
    path = os.path.join(os.path.dirname(CSRC), "build.py")
    with open(path) as f:
        tree = ast.parse(f.read())
    modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names]
    assert not [m for m in modules + names if "codegen" in m]


def syntax_check(text, flags):
    proc = subprocess.run([CC, "-fsyntax-only", "-x", "c", *flags, "-"], input=text,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


HEAD = "#include <math.h>\n#include <stddef.h>\n#include <stdint.h>\n#include <string.h>\n"
# calls the static functions, which are otherwise unused (-Wunused-function)
USE = """void use(int B, const int *lengths, RNNC_REAL *w, RNNC_REAL *v)
{
    RNNC_T(gemm_big)(RNNC_NT, 1, 0, 1, 1, 1, w, 1, w, 1, w, 1);
    if (chunk_has_padding(1, B, lengths)) valid_rows(0, 1, B, lengths, w, 1, 1, v);
}"""


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("blas", [False, "cblas"])
def test_portable_files_are_strict_c99_as_pasted(dtype, blas):
    """What an exported kernel pastes, libm or fast math, plain loops or CBLAS, with the
    portable microkernel, passes -std=c99 -pedantic -Wall -Wextra -Werror with every static
    helper used."""
    openblas = pytest.importorskip("scipy_openblas32")
    ctype = "float" if dtype == "float32" else "double"
    text = "\n".join([HEAD, csrc.real(dtype), mathfn.c_helpers(dtype, fast=True, prelude=False),
                      helpers.gemm_c(ctype, blas, "portable", False), csrc.source("padding.c"),
                      USE])
    syntax_check(text, ["-std=c99", "-pedantic", "-Wall", "-Wextra", "-Werror",
                        "-I" + openblas.get_include_dir(), "-Dcblas_sgemm=scipy_cblas_sgemm",
                        "-Dcblas_dgemm=scipy_cblas_dgemm"])


def test_the_runtime_holds_both_types_in_one_file():
    """real.h pasted twice, float then double, defines the helpers of both without a
    clash; the kernels declare what they link."""
    from rnncompiler.compiler import build
    text = helpers.runtime_c()
    for name in ("gemm_nt", "gemm_nn", "gemm_tn", "gemm_big", "mk_pack_nt", "mk_pack_nn", "mk_gemm"):
        assert "RNNC_T(%s)" % name in text
    flags = build.compiler_command("x.c", "x.o", 1, True, compile_only=True)[1:]
    flags = [f for f in flags if f not in ("x.c", "x.o", "-o", "-c")]
    syntax_check(text, flags + ["-Wall", "-Wextra", "-Werror"])


MK_HARNESS = """
RNNC_API void RNNC_T(mk_gemm)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const RNNC_REAL *A, ptrdiff_t lda,
                    const RNNC_REAL *P, const RNNC_REAL *bias, int beta, RNNC_REAL *C, ptrdiff_t ldc);
/* C (M x N) = beta C + A W^T + bias (nt), or A W (nn), through panels packed into P */
void mk_check(int nn, int M, int N, int K, const RNNC_REAL *A, int lda, const RNNC_REAL *W,
              const RNNC_REAL *bias, int beta, RNNC_REAL *C, RNNC_REAL *P)
{
    if (nn) RNNC_T(mk_pack_nn)(N, K, W, N, P); else RNNC_T(mk_pack_nt)(N, K, W, K, P);
    RNNC_T(mk_gemm)(M, N, K, A, lda, P, bias, beta, C, N);
}
"""


def portable_mk_check(dtype, tmp_path, *flags):
    """mk_check of MK_HARNESS over the exported kernels' microkernel, built with flags."""
    ctype = "float" if dtype == "float32" else "double"
    text = "\n".join([HEAD, csrc.real(dtype), helpers.gemm_c(ctype, False, "portable", False),
                      MK_HARNESS])
    src, lib = tmp_path / "mk.c", tmp_path / "mk.so"
    src.write_text(text)
    subprocess.run([CC, "-O2", *flags, "-std=c99", "-shared", "-fPIC", "-o", str(lib), str(src)],
                   check=True)
    return ctypes.CDLL(str(lib)).mk_check


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_portable_microkernel_multiplies_as_numpy_does(dtype, tmp_path):
    """The exported kernels' products on their own: both packings, with and without
    bias, overwriting or adding, for row counts around a block, widths that end inside a
    panel and depths that end inside the unrolled k loop, and A read with a stride."""
    import numpy as np
    fn = portable_mk_check(dtype, tmp_path)
    rng = np.random.default_rng(0)
    ptr = lambda a: None if a is None else a.ctypes.data_as(ctypes.c_void_p)   # noqa: E731
    tol = 1e-5 if dtype == "float32" else 1e-12
    for nn in (0, 1):
        # a group of 4 panels and one of 1-3 after it, depths on either side of the
        # partial sums' switch (K = 32) and ending inside their unrolled loop, and depths
        # over several blocks of k (MK_KB: 64 with 4 panels a group, 256 with 1), the last
        # one short
        for M, N, K in ((1, 5, 3), (2, 33, 7), (5, 64, 9), (9, 17, 1), (1, 200, 33),
                        (3, 130, 32), (2, 96, 31), (1, 128, 8), (4, 257, 65), (3, 70, 300),
                        (1, 129, 130)):
            lda = K + 2                              # A read with a stride
            A = rng.standard_normal((M, lda)).astype(dtype)
            W = rng.standard_normal((K, N) if nn else (N, K)).astype(dtype)
            for bias in (None, rng.standard_normal(N).astype(dtype)):
                for beta in (0, 1):
                    C = rng.standard_normal((M, N)).astype(dtype)
                    want = (C if beta else 0) + A[:, :K] @ (W if nn else W.T) + \
                        (0 if bias is None else bias)
                    P = np.zeros(-(-N // 32) * 32 * K, dtype)     # panel_size's rows
                    fn(nn, M, N, K, ptr(A), lda, ptr(W), ptr(bias), beta, ptr(C), ptr(P))
                    np.testing.assert_allclose(C, want, rtol=tol, atol=tol,
                                               err_msg=str((nn, M, N, K, bias is None, beta)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_a_row_of_the_portable_microkernel_is_the_same_bits_whatever_the_rows(dtype, tmp_path):
    """A step (one row) and a sequence's hoisted product (many rows) must agree to the
    bit, so the order of each sum may depend on N and K but never on M: every row of a
    product over M rows equals that row computed alone, at shapes of each grouping."""
    import numpy as np
    fn = portable_mk_check(dtype, tmp_path, "-march=native")
    rng = np.random.default_rng(2)
    ptr = lambda a: None if a is None else a.ctypes.data_as(ctypes.c_void_p)   # noqa: E731
    for N, K in ((32, 8), (64, 16), (96, 32), (128, 32), (160, 33), (512, 128), (96, 150)):
        A = rng.standard_normal((7, K)).astype(dtype)
        W = rng.standard_normal((N, K)).astype(dtype)
        bias, C0 = rng.standard_normal(N).astype(dtype), rng.standard_normal((7, N)).astype(dtype)
        P = np.zeros(-(-N // 32) * 32 * K, dtype)
        C = C0.copy()
        fn(0, 7, N, K, ptr(A), K, ptr(W), ptr(bias), 1, ptr(C), ptr(P))
        for i in range(7):
            row = C0[i:i + 1].copy()
            fn(0, 1, N, K, ptr(A[i:i + 1]), K, ptr(W), ptr(bias), 1, ptr(row), ptr(P))
            assert row.tobytes() == C[i:i + 1].tobytes(), (N, K, i)


TN_HARNESS = """
void tn_check(int M, int N, int K, const RNNC_REAL *A, int lda, const RNNC_REAL *B, int ldb,
              RNNC_REAL *C, int ldc)
{ %s(M, N, K, A, lda, B, ldb, C, ldc); }
"""


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_weight_gradient_microkernel_multiplies_as_numpy_does(dtype, tmp_path):
    """mk_gemm_tn of every variant this core runs, C += A^T B: widths of C that end inside
    a panel and inside a block of rows, one row of sums or many, every operand read with
    a stride, and nothing of C outside its (M x N) corner touched."""
    import numpy as np
    from rnncompiler.compiler.codegen import microkernel
    ctype = "float" if dtype == "float32" else "double"
    rng = np.random.default_rng(1)
    ptr = lambda a: a.ctypes.data_as(ctypes.c_void_p)   # noqa: E731
    tol = 1e-5 if dtype == "float32" else 1e-12
    for v in microkernel.variants():
        fn_name = microkernel.symbol("mk_gemm_tn", ctype, v.name)
        text = "\n".join([HEAD, csrc.real(dtype), helpers._flavour(False, False),
                          csrc.source("gemm.h"), microkernel.variant_c(v, ctype),
                          TN_HARNESS % fn_name])
        src, lib = tmp_path / ("tn_%s.c" % v.name), tmp_path / ("tn_%s.so" % v.name)
        src.write_text(text)
        subprocess.run([CC, "-O2", "-march=native", "-shared", "-fPIC", "-o", str(lib), str(src)],
                       check=True)
        fn = ctypes.CDLL(str(lib)).tn_check
        for M, N, K in ((1, 1, 1), (5, 3, 7), (33, 9, 300), (64, 8, 2), (70, 17, 65)):
            A = rng.standard_normal((K, M + 3)).astype(dtype)     # lda = M + 3
            B = rng.standard_normal((K, N + 2)).astype(dtype)     # ldb = N + 2
            C = rng.standard_normal((M, N + 5)).astype(dtype)     # ldc = N + 5
            want = C.copy()
            want[:, :N] += A[:, :M].T @ B[:, :N]
            fn(M, N, K, ptr(A), M + 3, ptr(B), N + 2, ptr(C), N + 5)
            np.testing.assert_allclose(C, want, rtol=tol, atol=tol, err_msg=str((v.name, M, N, K)))
            np.testing.assert_array_equal(C[:, N:], want[:, N:])
