/* The per-step products of exported kernels: microkernel.c's register-blocked GEMM over
   weights packed once, written in plain C99 for any compiler. A panel holds NR = MK_NR_MAX
   columns (two AVX-512 vectors); the loops over a panel's columns have a fixed trip count
   and no reduction, so compilers vectorise them without reassociating a sum. Rows are
   computed one at a time, each with MK_KU partial sums over k (as microkernel.c does
   for one row) that hide the latency of the additions: their accumulators stay in
   registers, where a block of rows' accumulators, indexed by a row, would not. Needs
   real.h and gemm.h, and MK_NR_MAX. */
#define MK_NR MK_NR_MAX
#define MK_KU 4
#if defined(__GNUC__)
#define MK_INLINE static inline __attribute__((always_inline))
#define MK_API RNNC_API __attribute__((unused))    /* a kernel may need only some of them */
#else
#define MK_INLINE static inline
#define MK_API RNNC_API
#endif

/* panels of (K x NR) from W (N x K, row-major, ldw): for C += A W^T */
MK_API void RNNC_T(mk_pack_nt)(ptrdiff_t N, ptrdiff_t K, const RNNC_REAL *W, ptrdiff_t ldw, RNNC_REAL *P)
{
    for (ptrdiff_t j0 = 0; j0 < N; j0 += MK_NR)
        for (ptrdiff_t k = 0; k < K; ++k)
            for (ptrdiff_t c = 0; c < MK_NR; ++c)
                *P++ = j0 + c < N ? W[(j0 + c) * ldw + k] : 0;
}

/* panels of (K x NR) from W (K x N, row-major, ldw): for C += A W */
MK_API void RNNC_T(mk_pack_nn)(ptrdiff_t N, ptrdiff_t K, const RNNC_REAL *W, ptrdiff_t ldw, RNNC_REAL *P)
{
    for (ptrdiff_t j0 = 0; j0 < N; j0 += MK_NR)
        for (ptrdiff_t k = 0; k < K; ++k)
            for (ptrdiff_t c = 0; c < MK_NR; ++c)
                *P++ = j0 + c < N ? W[k * ldw + j0 + c] : 0;
}

/* one row: C[1 x nc] = beta C + a[K] P + bias, with MK_KU partial sums over k */
MK_INLINE void RNNC_T(mk_row)(ptrdiff_t K, const RNNC_REAL *A, const RNNC_REAL *P,
    const RNNC_REAL *bias, int beta, RNNC_REAL *C, int nc)
{
    RNNC_REAL acc[MK_KU][MK_NR];
    for (int u = 0; u < MK_KU; ++u) for (int c = 0; c < MK_NR; ++c) acc[u][c] = 0;
    ptrdiff_t k = 0;
    for (; k + MK_KU <= K; k += MK_KU)
        for (int u = 0; u < MK_KU; ++u) {
            const RNNC_REAL a = A[k + u], *p = P + (k + u) * MK_NR;
            for (int c = 0; c < MK_NR; ++c) acc[u][c] += a * p[c];
        }
    for (int u = 0; u < (int)(K - k); ++u) {      /* fewer than MK_KU steps left */
        const RNNC_REAL a = A[k + u], *p = P + (k + u) * MK_NR;
        for (int c = 0; c < MK_NR; ++c) acc[0][c] += a * p[c];
    }
    for (int u = 1; u < MK_KU; ++u) for (int c = 0; c < MK_NR; ++c) acc[0][c] += acc[u][c];
    if (nc == MK_NR) {        /* a whole panel: fixed trip counts, vectorised */
        if (beta) for (int c = 0; c < MK_NR; ++c) acc[0][c] += C[c];
        if (bias) for (int c = 0; c < MK_NR; ++c) acc[0][c] += bias[c];
        for (int c = 0; c < MK_NR; ++c) C[c] = acc[0][c];
        return;
    }
    for (int c = 0; c < nc; ++c)
        C[c] = (beta ? C[c] : 0) + acc[0][c] + (bias ? bias[c] : 0);
}

/* C (M x N) = beta C + A (M x K) P + bias (a row vector, or NULL), P packed by
   RNNC_T(mk_pack_nt) / RNNC_T(mk_pack_nn), a row of A at a time */
MK_API void RNNC_T(mk_gemm)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const RNNC_REAL *A, ptrdiff_t lda,
                    const RNNC_REAL *P, const RNNC_REAL *bias, int beta, RNNC_REAL *C, ptrdiff_t ldc)
{
    for (ptrdiff_t j0 = 0; j0 < N; j0 += MK_NR) {
        const RNNC_REAL *Pj = P + (j0 / MK_NR) * K * MK_NR;
        const RNNC_REAL *bj = bias ? bias + j0 : NULL;
        RNNC_REAL *Cj = C + j0;
        const int nc = N - j0 < MK_NR ? (int)(N - j0) : MK_NR;
        for (ptrdiff_t i = 0; i < M; ++i) RNNC_T(mk_row)(K, A + i * lda, Pj, bj, beta, Cj + i * ldc, nc);
    }
}
#undef MK_NR
#undef MK_KU
#undef MK_INLINE
#undef MK_API
#undef MK_NR_MAX
