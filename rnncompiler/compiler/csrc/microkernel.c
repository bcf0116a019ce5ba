/* The per-step products of the JIT kernels: a register-blocked GEMM of RNNC_REAL over
   weights packed once per call into panels, written with GCC vector extensions (gcc and
   clang). OpenBLAS packs both operands on every call; inside the time loop that is the
   same weight matrix T times, and at B=32 it costs a third of the product. Here the
   weights are packed once, into panels of NR columns (NR = 2 vectors), and mk_gemm
   computes C += A P a block of MR rows by one panel at a time: A's rows and the panel
   stay in L1, the accumulators in registers. Needs real.h and gemm.h, and MK_NR_MAX: the
   widest panel the workspace has room for (codegen/microkernel.py's NR_MAX). Panel widths
   are fixed by the ISA at compile time (-march=native), unless chosen before this file:
   MK_VBYTES (vector bytes) and MK_MR (rows per block) with MK_FN(name), the names of
   that variant (the runtime object holds every variant the autotuning run times). */
#ifndef MK_VBYTES
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
#endif
#ifndef MK_FN
#define MK_FN(name) RNNC_T(name)
#endif
#define MK_VL (MK_VBYTES / RNNC_REAL_SIZE)
#define MK_NR (2 * MK_VL)
#if MK_NR > MK_NR_MAX
#error "panel wider than the workspace provides"
#endif
typedef RNNC_REAL MK_FN(mk_vec) __attribute__((vector_size(MK_VBYTES), aligned(sizeof(RNNC_REAL))));

/* panels of (K x NR) from W (N x K, row-major, ldw): for C += A W^T */
RNNC_API void MK_FN(mk_pack_nt)(ptrdiff_t N, ptrdiff_t K, const RNNC_REAL *W, ptrdiff_t ldw, RNNC_REAL *P)
{
    for (ptrdiff_t j0 = 0; j0 < N; j0 += MK_NR)
        for (ptrdiff_t k = 0; k < K; ++k)
            for (ptrdiff_t c = 0; c < MK_NR; ++c)
                *P++ = j0 + c < N ? W[(j0 + c) * ldw + k] : 0;
}

/* panels of (K x NR) from W (K x N, row-major, ldw): for C += A W */
RNNC_API void MK_FN(mk_pack_nn)(ptrdiff_t N, ptrdiff_t K, const RNNC_REAL *W, ptrdiff_t ldw, RNNC_REAL *P)
{
    for (ptrdiff_t j0 = 0; j0 < N; j0 += MK_NR)
        for (ptrdiff_t k = 0; k < K; ++k)
            for (ptrdiff_t c = 0; c < MK_NR; ++c)
                *P++ = j0 + c < N ? W[k * ldw + j0 + c] : 0;
}

/* C[mr x nc] = beta C + A[mr x K] P[K x NR] + bias; ku partial sums interleaved over k
   hide the FMA latency when mr is small (one row: a product with a vector) */
static inline __attribute__((always_inline)) void MK_FN(mk_block)(int mr, int ku, ptrdiff_t K,
    const RNNC_REAL *A, ptrdiff_t lda, const RNNC_REAL *P, const RNNC_REAL *bias, int beta, RNNC_REAL *C, ptrdiff_t ldc, int nc)
{
    MK_FN(mk_vec) acc[4][MK_MR][2];
    for (int u = 0; u < ku; ++u) for (int r = 0; r < mr; ++r) for (int v = 0; v < 2; ++v)
        acc[u][r][v] = (MK_FN(mk_vec)){0};
    ptrdiff_t k = 0;
    for (; k + ku <= K; k += ku)
        for (int u = 0; u < ku; ++u) {
            const MK_FN(mk_vec) p0 = *(const MK_FN(mk_vec) *)(P + (k + u) * MK_NR);
            const MK_FN(mk_vec) p1 = *(const MK_FN(mk_vec) *)(P + (k + u) * MK_NR + MK_VL);
            for (int r = 0; r < mr; ++r) {
                const RNNC_REAL a = A[r * lda + k + u];
                acc[u][r][0] += a * p0;
                acc[u][r][1] += a * p1;
            }
        }
    for (int u = 0; u < (int)(K - k); ++u) {      /* fewer than ku steps left */
        const MK_FN(mk_vec) p0 = *(const MK_FN(mk_vec) *)(P + (k + u) * MK_NR);
        const MK_FN(mk_vec) p1 = *(const MK_FN(mk_vec) *)(P + (k + u) * MK_NR + MK_VL);
        for (int r = 0; r < mr; ++r) {
            const RNNC_REAL a = A[r * lda + k + u];
            acc[0][r][0] += a * p0;
            acc[0][r][1] += a * p1;
        }
    }
    for (int u = 1; u < ku; ++u) for (int r = 0; r < mr; ++r) for (int v = 0; v < 2; ++v)
        acc[0][r][v] += acc[u][r][v];
    if (nc == MK_NR) {
        MK_FN(mk_vec) b0 = {0}, b1 = {0};
        if (bias) { b0 = *(const MK_FN(mk_vec) *)bias; b1 = *(const MK_FN(mk_vec) *)(bias + MK_VL); }
        for (int r = 0; r < mr; ++r) {
            MK_FN(mk_vec) *c = (MK_FN(mk_vec) *)(C + r * ldc);
            c[0] = (beta ? c[0] : (MK_FN(mk_vec)){0}) + acc[0][r][0] + b0;
            c[1] = (beta ? c[1] : (MK_FN(mk_vec)){0}) + acc[0][r][1] + b1;
        }
    } else {
        for (int r = 0; r < mr; ++r) {
            RNNC_REAL row[MK_NR];
            memcpy(row, acc[0][r], sizeof row);
            for (int c = 0; c < nc; ++c)
                C[r * ldc + c] = (beta ? C[r * ldc + c] : 0) + row[c] + (bias ? bias[c] : 0);
        }
    }
}

/* C (M x N) = beta C + A (M x K) P + bias (a row vector, or NULL), P packed by
   MK_FN(mk_pack_nt) / MK_FN(mk_pack_nn). rowwise: the rows past the last block of MR sum
   over k in order too, so that each row's result is the same whatever M (the hoisted
   products, whose M is the rows of a chunk, or of a checkpoint's segment); else they
   keep partial sums that hide the FMA latency (a product with one row, at B=1). */
static inline __attribute__((always_inline)) void MK_FN(mk_gemm_any)(ptrdiff_t M, ptrdiff_t N,
    ptrdiff_t K, const RNNC_REAL *A, ptrdiff_t lda, const RNNC_REAL *P, const RNNC_REAL *bias,
    int beta, RNNC_REAL *C, ptrdiff_t ldc, const int rowwise)
{
    for (ptrdiff_t j0 = 0; j0 < N; j0 += MK_NR) {
        const RNNC_REAL *Pj = P + (j0 / MK_NR) * K * MK_NR;
        const RNNC_REAL *bj = bias ? bias + j0 : NULL;
        RNNC_REAL *Cj = C + j0;
        const int nc = N - j0 < MK_NR ? (int)(N - j0) : MK_NR;
        ptrdiff_t i = 0;
        for (; i + MK_MR <= M; i += MK_MR) MK_FN(mk_block)(MK_MR, 1, K, A + i * lda, lda, Pj, bj, beta, Cj + i * ldc, ldc, nc);
        const RNNC_REAL *Ai = A + i * lda;
        RNNC_REAL *Ci = Cj + i * ldc;
        switch (M - i) {
        case 1: MK_FN(mk_block)(1, rowwise ? 1 : 4, K, Ai, lda, Pj, bj, beta, Ci, ldc, nc); break;
        case 2: MK_FN(mk_block)(2, rowwise ? 1 : 2, K, Ai, lda, Pj, bj, beta, Ci, ldc, nc); break;
        case 3: MK_FN(mk_block)(3, rowwise ? 1 : 2, K, Ai, lda, Pj, bj, beta, Ci, ldc, nc); break;
#if MK_MR > 4
        case 4: MK_FN(mk_block)(4, 1, K, Ai, lda, Pj, bj, beta, Ci, ldc, nc); break;
        case 5: MK_FN(mk_block)(5, 1, K, Ai, lda, Pj, bj, beta, Ci, ldc, nc); break;
        case 6: MK_FN(mk_block)(6, 1, K, Ai, lda, Pj, bj, beta, Ci, ldc, nc); break;
        case 7: MK_FN(mk_block)(7, 1, K, Ai, lda, Pj, bj, beta, Ci, ldc, nc); break;
#endif
        default: break;
        }
    }
}

RNNC_API void MK_FN(mk_gemm)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const RNNC_REAL *A, ptrdiff_t lda,
                    const RNNC_REAL *P, const RNNC_REAL *bias, int beta, RNNC_REAL *C, ptrdiff_t ldc)
{ MK_FN(mk_gemm_any)(M, N, K, A, lda, P, bias, beta, C, ldc, 0); }

/* the hoisted products: many rows, so a block of MK_ROWS of them at a time goes through
   every panel while it is in L1 (panels first would stream all of A once a panel) */
#ifndef MK_ROWS
#define MK_ROWS 64
#endif
RNNC_API void MK_FN(mk_gemm_rows)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const RNNC_REAL *A, ptrdiff_t lda,
                    const RNNC_REAL *P, const RNNC_REAL *bias, int beta, RNNC_REAL *C, ptrdiff_t ldc)
{
    for (ptrdiff_t i0 = 0; i0 < M; i0 += MK_ROWS)
        MK_FN(mk_gemm_any)(M - i0 < MK_ROWS ? M - i0 : MK_ROWS, N, K, A + i0 * lda, lda, P, bias,
                           beta, C + i0 * ldc, ldc, 1);
}
/* The weight gradients over a chunk's rows: C (M x N) += A^T B, A (K x M), B (K x N),
   all row-major (dW += dG^T v: M the bundle's width, N an operand's, K the rows). C's
   rows go in vectors (NR of them, along A's rows), B's values are broadcast, MR at a
   time; both operands are read row after row as they lie, unpacked, and each element
   sums over k in order. For small products OpenBLAS spends much of its time packing. */
/* one row k: acc[r] += b[r] (a0, a1), for the nr values of B's row */
static inline __attribute__((always_inline)) void MK_FN(mk_tn_fma)(const int nr, MK_FN(mk_vec) a0,
    MK_FN(mk_vec) a1, const RNNC_REAL *b, MK_FN(mk_vec) acc[][2])
{
    for (int r = 0; r < nr; ++r) {
        acc[r][0] += b[r] * a0;
        acc[r][1] += b[r] * a1;
    }
}

static inline __attribute__((always_inline)) void MK_FN(mk_tn_block)(const int nr, ptrdiff_t K,
    const RNNC_REAL *A, ptrdiff_t lda, const RNNC_REAL *B, ptrdiff_t ldb, RNNC_REAL *C, ptrdiff_t ldc, int mc)
{
    MK_FN(mk_vec) acc[MK_MR][2];
    for (int r = 0; r < nr; ++r) acc[r][0] = acc[r][1] = (MK_FN(mk_vec)){0};
    if (mc == MK_NR) {
        for (ptrdiff_t k = 0; k < K; ++k) {
            MK_FN(mk_tn_fma)(nr, *(const MK_FN(mk_vec) *)(A + k * lda),
                             *(const MK_FN(mk_vec) *)(A + k * lda + MK_VL), B + k * ldb, acc);
        }
    } else {                    /* the last columns of A: copied, so nothing past them is read */
        for (ptrdiff_t k = 0; k < K; ++k) {
            RNNC_REAL row[MK_NR] = {0};
            memcpy(row, A + k * lda, sizeof(RNNC_REAL) * (size_t)mc);
            MK_FN(mk_vec) a0, a1;
            memcpy(&a0, row, sizeof a0);
            memcpy(&a1, row + MK_VL, sizeof a1);
            MK_FN(mk_tn_fma)(nr, a0, a1, B + k * ldb, acc);
        }
    }
    for (int r = 0; r < nr; ++r) {
        RNNC_REAL col[MK_NR];
        memcpy(col, acc[r], sizeof col);
        for (int c = 0; c < mc; ++c) C[c * ldc + r] += col[c];
    }
}

RNNC_API void MK_FN(mk_gemm_tn)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const RNNC_REAL *A, ptrdiff_t lda,
                                const RNNC_REAL *B, ptrdiff_t ldb, RNNC_REAL *C, ptrdiff_t ldc)
{
    for (ptrdiff_t m0 = 0; m0 < M; m0 += MK_NR) {
        const int mc = M - m0 < MK_NR ? (int)(M - m0) : MK_NR;
        for (ptrdiff_t n0 = 0; n0 < N; n0 += MK_MR) {
            const RNNC_REAL *Am = A + m0, *Bn = B + n0;
            RNNC_REAL *Cb = C + m0 * ldc + n0;
            switch (N - n0 < MK_MR ? (int)(N - n0) : MK_MR) {
            case 1: MK_FN(mk_tn_block)(1, K, Am, lda, Bn, ldb, Cb, ldc, mc); break;
            case 2: MK_FN(mk_tn_block)(2, K, Am, lda, Bn, ldb, Cb, ldc, mc); break;
            case 3: MK_FN(mk_tn_block)(3, K, Am, lda, Bn, ldb, Cb, ldc, mc); break;
            case 4: MK_FN(mk_tn_block)(4, K, Am, lda, Bn, ldb, Cb, ldc, mc); break;
#if MK_MR > 4
            case 5: MK_FN(mk_tn_block)(5, K, Am, lda, Bn, ldb, Cb, ldc, mc); break;
            case 6: MK_FN(mk_tn_block)(6, K, Am, lda, Bn, ldb, Cb, ldc, mc); break;
            case 7: MK_FN(mk_tn_block)(7, K, Am, lda, Bn, ldb, Cb, ldc, mc); break;
            case 8: MK_FN(mk_tn_block)(8, K, Am, lda, Bn, ldb, Cb, ldc, mc); break;
#endif
            default: break;
            }
        }
    }
}

#if RNNC_BLAS == 2
typedef struct { ptrdiff_t M, N, K; const RNNC_REAL *A; ptrdiff_t lda; const RNNC_REAL *B; ptrdiff_t ldb;
                 RNNC_REAL *C; ptrdiff_t ldc; } MK_FN(mk_tn_job);
static void *MK_FN(mk_tn_run)(void *p)
{
    const MK_FN(mk_tn_job) *j = (const MK_FN(mk_tn_job) *)p;
    MK_FN(mk_gemm_tn)(j->M, j->N, j->K, j->A, j->lda, j->B, j->ldb, j->C, j->ldc);
    return NULL;
}
/* mk_gemm_tn with C's rows in two shares, the second on the helper thread, when
   `threads` > 1 and the product is big enough (as gemm_big); every element is summed alike */
RNNC_API void MK_FN(mk_gemm_tn_big)(int threads, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
    const RNNC_REAL *A, ptrdiff_t lda, const RNNC_REAL *B, ptrdiff_t ldb, RNNC_REAL *C, ptrdiff_t ldc)
{
    const ptrdiff_t half = (M + 2 * MK_NR - 1) / (2 * MK_NR) * MK_NR;     /* whole panels */
    if (threads < 2 || M * N * K < (ptrdiff_t)1 << 21 || half >= M) {
        MK_FN(mk_gemm_tn)(M, N, K, A, lda, B, ldb, C, ldc);
        return;
    }
    MK_FN(mk_tn_job) job = {M - half, N, K, A + half, lda, B, ldb, C + half * ldc, ldc};
    const int started = RNNC_T(helper_start)(MK_FN(mk_tn_run), &job);
    MK_FN(mk_gemm_tn)(half, N, K, A, lda, B, ldb, C, ldc);
    if (started) RNNC_T(helper_wait)();
    else MK_FN(mk_tn_run)(&job);
}
#endif
#undef MK_VBYTES
#undef MK_MR
#undef MK_FN
#undef MK_VL
#undef MK_NR
#undef MK_NR_MAX
