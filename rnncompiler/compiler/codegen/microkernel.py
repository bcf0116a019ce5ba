"""The per-step products of the JIT kernels: a register-blocked GEMM over weights packed
once per call into panels, written with GCC vector extensions (gcc and clang).

OpenBLAS packs both operands on every call; inside the time loop that is the same weight
matrix T times, and at B=32 it costs a third of the product. Here the weights are packed
once, into panels of NR columns (NR = 2 vectors), and mk_gemm computes C += A P a block
of MR rows by one panel at a time: A's rows and the panel stay in L1, the accumulators in
registers. Measured on one core at (32 x 512 x 128): ~95 GFLOP/s against OpenBLAS's ~65.
Exported kernels (portable C99) use plain loops or CBLAS instead.
"""
from __future__ import annotations

import re

# Panel widths are fixed by the ISA at compile time (-march=native); regions are sized for
# the widest (AVX-512: 2 x 16 floats, 2 x 8 doubles), so offsets are known here.
NR_MAX = {"float": 32, "double": 16}

_TEMPLATE = """\
#if defined(__AVX512F__)
#define MK_VBYTES 64
#define MK_MR 8
#elif defined(__AVX__)
#define MK_VBYTES 32
#define MK_MR 4
#else
#define MK_VBYTES 16
#define MK_MR 4
#endif
#define MK_VL (MK_VBYTES / RSIZE)
#define MK_NR (2 * MK_VL)
#if MK_NR > NR_MAX
#error "panel wider than the workspace provides"
#endif
typedef R mk_vec __attribute__((vector_size(MK_VBYTES), aligned(sizeof(R))));

/* panels of (K x NR) from W (N x K, row-major, ldw): for C += A W^T */
STATIC void mk_pack_nt(ptrdiff_t N, ptrdiff_t K, const R *W, ptrdiff_t ldw, R *P)
{
    for (ptrdiff_t j0 = 0; j0 < N; j0 += MK_NR)
        for (ptrdiff_t k = 0; k < K; ++k)
            for (ptrdiff_t c = 0; c < MK_NR; ++c)
                *P++ = j0 + c < N ? W[(j0 + c) * ldw + k] : 0;
}

/* panels of (K x NR) from W (K x N, row-major, ldw): for C += A W */
STATIC void mk_pack_nn(ptrdiff_t N, ptrdiff_t K, const R *W, ptrdiff_t ldw, R *P)
{
    for (ptrdiff_t j0 = 0; j0 < N; j0 += MK_NR)
        for (ptrdiff_t k = 0; k < K; ++k)
            for (ptrdiff_t c = 0; c < MK_NR; ++c)
                *P++ = j0 + c < N ? W[k * ldw + j0 + c] : 0;
}

/* C[mr x nc] = beta C + A[mr x K] P[K x NR] + bias; ku partial sums interleaved over k
   hide the FMA latency when mr is small (one row: a product with a vector) */
static inline __attribute__((always_inline)) void mk_block(int mr, int ku, ptrdiff_t K,
    const R *A, ptrdiff_t lda, const R *P, const R *bias, int beta, R *C, ptrdiff_t ldc, int nc)
{
    mk_vec acc[4][MK_MR][2];
    for (int u = 0; u < ku; ++u) for (int r = 0; r < mr; ++r) for (int v = 0; v < 2; ++v)
        acc[u][r][v] = (mk_vec){0};
    ptrdiff_t k = 0;
    for (; k + ku <= K; k += ku)
        for (int u = 0; u < ku; ++u) {
            const mk_vec p0 = *(const mk_vec *)(P + (k + u) * MK_NR);
            const mk_vec p1 = *(const mk_vec *)(P + (k + u) * MK_NR + MK_VL);
            for (int r = 0; r < mr; ++r) {
                const R a = A[r * lda + k + u];
                acc[u][r][0] += a * p0;
                acc[u][r][1] += a * p1;
            }
        }
    for (int u = 0; u < (int)(K - k); ++u) {      /* fewer than ku steps left */
        const mk_vec p0 = *(const mk_vec *)(P + (k + u) * MK_NR);
        const mk_vec p1 = *(const mk_vec *)(P + (k + u) * MK_NR + MK_VL);
        for (int r = 0; r < mr; ++r) {
            const R a = A[r * lda + k + u];
            acc[0][r][0] += a * p0;
            acc[0][r][1] += a * p1;
        }
    }
    for (int u = 1; u < ku; ++u) for (int r = 0; r < mr; ++r) for (int v = 0; v < 2; ++v)
        acc[0][r][v] += acc[u][r][v];
    if (nc == MK_NR) {
        mk_vec b0 = {0}, b1 = {0};
        if (bias) { b0 = *(const mk_vec *)bias; b1 = *(const mk_vec *)(bias + MK_VL); }
        for (int r = 0; r < mr; ++r) {
            mk_vec *c = (mk_vec *)(C + r * ldc);
            c[0] = (beta ? c[0] : (mk_vec){0}) + acc[0][r][0] + b0;
            c[1] = (beta ? c[1] : (mk_vec){0}) + acc[0][r][1] + b1;
        }
    } else {
        for (int r = 0; r < mr; ++r) {
            R row[MK_NR];
            memcpy(row, acc[0][r], sizeof row);
            for (int c = 0; c < nc; ++c)
                C[r * ldc + c] = (beta ? C[r * ldc + c] : 0) + row[c] + (bias ? bias[c] : 0);
        }
    }
}

/* C (M x N) = beta C + A (M x K) P + bias (a row vector, or NULL), P packed by
   mk_pack_nt / mk_pack_nn */
STATIC void mk_gemm(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const R *A, ptrdiff_t lda,
                    const R *P, const R *bias, int beta, R *C, ptrdiff_t ldc)
{
    for (ptrdiff_t j0 = 0; j0 < N; j0 += MK_NR) {
        const R *Pj = P + (j0 / MK_NR) * K * MK_NR;
        const R *bj = bias ? bias + j0 : NULL;
        R *Cj = C + j0;
        const int nc = N - j0 < MK_NR ? (int)(N - j0) : MK_NR;
        ptrdiff_t i = 0;
        for (; i + MK_MR <= M; i += MK_MR) mk_block(MK_MR, 1, K, A + i * lda, lda, Pj, bj, beta, Cj + i * ldc, ldc, nc);
        const R *Ai = A + i * lda;
        R *Ci = Cj + i * ldc;
        switch (M - i) {
        case 1: mk_block(1, 4, K, Ai, lda, Pj, bj, beta, Ci, ldc, nc); break;
        case 2: mk_block(2, 2, K, Ai, lda, Pj, bj, beta, Ci, ldc, nc); break;
        case 3: mk_block(3, 2, K, Ai, lda, Pj, bj, beta, Ci, ldc, nc); break;
#if MK_MR > 4
        case 4: mk_block(4, 1, K, Ai, lda, Pj, bj, beta, Ci, ldc, nc); break;
        case 5: mk_block(5, 1, K, Ai, lda, Pj, bj, beta, Ci, ldc, nc); break;
        case 6: mk_block(6, 1, K, Ai, lda, Pj, bj, beta, Ci, ldc, nc); break;
        case 7: mk_block(7, 1, K, Ai, lda, Pj, bj, beta, Ci, ldc, nc); break;
#endif
        default: break;
        }
    }
}
#undef MK_VBYTES
#undef MK_MR
#undef MK_VL
#undef MK_NR"""


def panel_size(rows, cols, ctype):
    """Scalars of the panels packed from a (rows x cols) matrix for C += A W^T: rows
    rounded up to the widest panel, times cols."""
    nr = NR_MAX[ctype]
    return -(-rows // nr) * nr * cols


def c_source(ctype):
    """The microkernel's C for one real type (STATIC marks the linkage of its entry points;
    names are typed by helpers.typed)."""
    text = _TEMPLATE.replace("NR_MAX", str(NR_MAX[ctype]))
    text = text.replace("RSIZE", "4" if ctype == "float" else "8")
    return re.sub(r"\bR\b", ctype, text)
