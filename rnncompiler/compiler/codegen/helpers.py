"""The fixed C every kernel uses besides its own loops: GEMM helpers for the three shapes
linear maps need (BLAS or plain loops), the big GEMMs split over threads, and the
microkernel for per-step products.

Two linkages. Self-contained (exported kernels, and JIT kernels without OpenBLAS): the
helpers are static functions in the kernel's own file. Runtime (JIT kernels with
OpenBLAS): they live once in a runtime object file, compiled once per machine and linked
into every kernel, so a new cell compiles only its own loops. Names carry the real type
(rnnc_s_gemm_nt, rnnc_d_mk_gemm) so the runtime holds both.
"""
from __future__ import annotations

import re

from . import microkernel

# How linear maps are computed: (prefix of the cblas_?gemm names, the big GEMMs split
# over pthreads). "openblas" is scipy-openblas32 (its symbols carry "scipy_"), the JIT
# kernels' choice; "cblas" any CBLAS, for exported kernels; False plain C loops.
BLAS_FLAVOURS = {False: None, "openblas": ("scipy_", True), "cblas": ("", False)}

# identifiers of the helpers, typed per real type by `typed`
NAMES = ("gemm_nt", "gemm_nn", "gemm_tn", "gemm_run", "gemm_thread", "gemm_big", "gemm_job",
         "mk_pack_nt", "mk_pack_nn", "mk_block", "mk_gemm", "mk_vec")
_NAME_RE = re.compile(r"\b(%s)\b" % "|".join(NAMES))

ENUM = "enum { RNNC_NT, RNNC_NN, RNNC_TN };"
HIDDEN = '__attribute__((visibility("hidden"))) '
PROTOTYPES = """\
void gemm_nt(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const R *A, ptrdiff_t lda, const R *Bm, ptrdiff_t ldb, int beta, R *C, ptrdiff_t ldc);
void gemm_nn(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const R *A, ptrdiff_t lda, const R *Bm, ptrdiff_t ldb, int beta, R *C, ptrdiff_t ldc);
void gemm_tn(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const R *A, ptrdiff_t lda, const R *Bm, ptrdiff_t ldb, int beta, R *C, ptrdiff_t ldc);
void gemm_big(int kind, int threads, int beta, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const R *A, ptrdiff_t lda, const R *Bm, ptrdiff_t ldb, R *C, ptrdiff_t ldc);
void mk_pack_nt(ptrdiff_t N, ptrdiff_t K, const R *W, ptrdiff_t ldw, R *P);
void mk_pack_nn(ptrdiff_t N, ptrdiff_t K, const R *W, ptrdiff_t ldw, R *P);
void mk_gemm(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const R *A, ptrdiff_t lda, const R *P, const R *bias, int beta, R *C, ptrdiff_t ldc);"""

_DOC = {"nt": "C (MxN) = beta C + A (MxK) B^T, B (NxK)", "nn": "C (MxN) = beta C + A (MxK) B (KxN)",
        "tn": "C (MxN) = beta C + A^T B, A (KxM), B (KxN)"}

# BLAS takes int sizes: split the long dimension (rows, or K for tn) into pieces of 2^30
_BLAS_BODY = {
    "nt": "for (; M > 0; M -= (1 << 30), A += (ptrdiff_t)lda << 30, C += (ptrdiff_t)ldc << 30)\n"
          "        scipy_cblas_Xgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(M < (1 << 30) ? M : (1 << 30)), "
          "(int)N, (int)K, 1, A, (int)lda, Bm, (int)ldb, (R)beta, C, (int)ldc);",
    "nn": "for (; M > 0; M -= (1 << 30), A += (ptrdiff_t)lda << 30, C += (ptrdiff_t)ldc << 30)\n"
          "        scipy_cblas_Xgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(M < (1 << 30) ? M : (1 << 30)), "
          "(int)N, (int)K, 1, A, (int)lda, Bm, (int)ldb, (R)beta, C, (int)ldc);",
    "tn": "for (; K > 0; K -= (1 << 30), A += (ptrdiff_t)lda << 30, Bm += (ptrdiff_t)ldb << 30)\n"
          "        scipy_cblas_Xgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)M, (int)N, "
          "(int)(K < (1 << 30) ? K : (1 << 30)), 1, A, (int)lda, Bm, (int)ldb, (R)beta, C, (int)ldc);",
}
_ZERO = ("if (!beta) for (ptrdiff_t i = 0; i < M; ++i) for (ptrdiff_t j = 0; j < N; ++j) "
         "C[i * ldc + j] = 0;\n    ")
_LOOP_BODY = {
    "nt": _ZERO + "for (ptrdiff_t i = 0; i < M; ++i) for (ptrdiff_t j = 0; j < N; ++j) {\n"
          "        R acc = 0;\n"
          "        for (ptrdiff_t k = 0; k < K; ++k) acc += A[i * lda + k] * Bm[j * ldb + k];\n"
          "        C[i * ldc + j] += acc;\n    }",
    "nn": _ZERO + "for (ptrdiff_t i = 0; i < M; ++i) for (ptrdiff_t k = 0; k < K; ++k) {\n"
          "        const R a = A[i * lda + k];\n"
          "        for (ptrdiff_t j = 0; j < N; ++j) C[i * ldc + j] += a * Bm[k * ldb + j];\n    }",
    "tn": _ZERO + "for (ptrdiff_t k = 0; k < K; ++k) for (ptrdiff_t i = 0; i < M; ++i) {\n"
          "        const R a = A[k * lda + i];\n"
          "        for (ptrdiff_t j = 0; j < N; ++j) C[i * ldc + j] += a * Bm[k * ldb + j];\n    }",
}

_GEMM_JOB = """\
typedef struct { int kind, beta; ptrdiff_t M, N, K; const R *A; ptrdiff_t lda; const R *Bm;
                 ptrdiff_t ldb; R *C; ptrdiff_t ldc; } gemm_job;
static void gemm_run(const gemm_job *j)
{
    if (j->kind == RNNC_NT) gemm_nt(j->M, j->N, j->K, j->A, j->lda, j->Bm, j->ldb, j->beta, j->C, j->ldc);
    else if (j->kind == RNNC_NN) gemm_nn(j->M, j->N, j->K, j->A, j->lda, j->Bm, j->ldb, j->beta, j->C, j->ldc);
    else gemm_tn(j->M, j->N, j->K, j->A, j->lda, j->Bm, j->ldb, j->beta, j->C, j->ldc);
}"""

_GEMM_BIG_SERIAL = _GEMM_JOB + """
/* the GEMMs over chunks of T*B rows */
STATIC void gemm_big(int kind, int threads, int beta, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                     const R *A, ptrdiff_t lda, const R *Bm, ptrdiff_t ldb, R *C, ptrdiff_t ldc)
{
    const gemm_job job = {kind, beta, M, N, K, A, lda, Bm, ldb, C, ldc};
    (void)threads;
    gemm_run(&job);
}"""

_GEMM_BIG_THREADED = _GEMM_JOB + """
static void *gemm_thread(void *job) { gemm_run((const gemm_job *)job); return NULL; }
/* the GEMMs over chunks of T*B rows, split by rows of C over `threads` threads, each a
   single-threaded BLAS call (OpenBLAS's own threads collapse on a busy machine) */
STATIC void gemm_big(int kind, int threads, int beta, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                     const R *A, ptrdiff_t lda, const R *Bm, ptrdiff_t ldb, R *C, ptrdiff_t ldc)
{
    gemm_job jobs[8];
    pthread_t tid[8];
    int started[8] = {0};
    if (threads > 8) threads = 8;
    if (threads > 1 && M * N * K < (ptrdiff_t)1 << 21) threads = 1;   /* too small to share */
    if (threads > M) threads = (int)M;
    const ptrdiff_t step = (M + threads - 1) / threads;
    for (int i = 0; i < threads; ++i) {
        const ptrdiff_t m0 = i * step, m = M - m0 < step ? M - m0 : step;
        const gemm_job job = {kind, beta, m > 0 ? m : 0, N, K, kind == RNNC_TN ? A + m0 : A + m0 * lda,
                              lda, Bm, ldb, C + m0 * ldc, ldc};
        jobs[i] = job;
    }
    for (int i = 1; i < threads; ++i)
        if (jobs[i].M > 0) started[i] = pthread_create(&tid[i], NULL, gemm_thread, &jobs[i]) == 0;
    if (jobs[0].M > 0) gemm_run(&jobs[0]);
    for (int i = 1; i < threads; ++i) {
        if (started[i]) pthread_join(tid[i], NULL);
        else if (jobs[i].M > 0) gemm_run(&jobs[i]);
    }
}"""


def typed(text, ctype):
    """Give the helpers' identifiers in `text` their real type: gemm_nt -> rnnc_s_gemm_nt."""
    return _NAME_RE.sub(r"rnnc_%s_\1" % ("s" if ctype == "float" else "d"), text)


def _fill(text, ctype, linkage):
    """Real type, linkage of the entry points (static, or hidden in the runtime), names."""
    text = re.sub(r"\bR\b", ctype, text)
    text = text.replace("STATIC ", "static " if linkage == "static" else HIDDEN)
    return typed(text, ctype)


def gemm_c(ctype, flavour, linkage="static"):
    """The three GEMM helpers and gemm_big for one real type and BLAS flavour."""
    out = []
    for kind in ("nt", "nn", "tn"):
        body = _BLAS_BODY[kind] if flavour else _LOOP_BODY[kind]
        out.append("/* %s */\nSTATIC void gemm_%s(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, "
                   "const R *A, ptrdiff_t lda, const R *Bm, ptrdiff_t ldb, int beta, R *C, ptrdiff_t ldc)\n"
                   "{\n    %s\n}" % (_DOC[kind], kind, body))
    out.append(_GEMM_BIG_THREADED if flavour and flavour[1] else _GEMM_BIG_SERIAL)
    text = _fill("\n".join(out), ctype, linkage).replace("Xgemm", ("s" if ctype == "float" else "d") + "gemm")
    return text.replace("scipy_cblas_", flavour[0] + "cblas_") if flavour else text


def includes(flavour):
    """The headers the helpers need."""
    lines = ["#include <cblas.h>"] if flavour else []
    if flavour and flavour[1]:
        lines.append("#include <pthread.h>")
    return "\n".join(lines)


def self_contained_c(ctype, flavour, with_microkernel):
    """Static helpers for a kernel's own file."""
    parts = [includes(flavour), ENUM, gemm_c(ctype, flavour)]
    if with_microkernel:
        parts.append(_fill(microkernel.c_source(ctype), ctype, "static"))
    return "\n".join(p for p in parts if p)


def declarations(ctype):
    """What a kernel linked against the runtime sees of it."""
    return "\n".join([ENUM, _fill("\n".join("STATIC " + ln for ln in PROTOTYPES.splitlines()),
                                  ctype, "runtime")])


def runtime_c():
    """The runtime object's C: the OpenBLAS helpers and the microkernel, float and double."""
    flavour = BLAS_FLAVOURS["openblas"]
    parts = ["/* Generated by rnncompiler: the helpers every JIT kernel links. */",
             "#include <stddef.h>\n#include <string.h>", includes(flavour), ENUM]
    for ctype in ("float", "double"):
        parts += [gemm_c(ctype, flavour, "runtime"),
                  _fill(microkernel.c_source(ctype), ctype, "runtime")]
    return "\n\n".join(parts) + "\n"
