/* The per-step products of exported kernels: microkernel.c's register-blocked GEMM over
   weights packed once, written in plain C99 for any compiler. A panel holds NR = MK_NR_MAX
   columns (two AVX-512 vectors); the loops over a panel's columns have a fixed trip count
   and no reduction, so compilers vectorise them without reassociating a sum. Rows are
   computed one at a time (at batch 1 a row is all there is), each through a group of up
   to MK_NP panels packed side by side: their accumulators stay in registers and share
   each broadcast of A's value, with partial sums over k interleaved so that a step at
   batch 1, which waits on this product, waits on a short chain of multiply-adds. The
   generated calls pass N and K as constants and the functions are inlined there, so the
   loops have fixed trip counts. The order of every sum depends on N and K only, never on
   M: a row's result is the same computed alone (a step) or with others (the hoisted
   products of a sequence). Needs real.h and gemm.h, and MK_NR_MAX. */
#define MK_NR MK_NR_MAX
#define MK_KU 4
#if defined(__AVX512F__)
#define MK_NP 4         /* panels at once: up to 16 vectors of accumulators of 32 registers */
#else
#define MK_NP 1         /* 16 registers or fewer: one panel, MK_KU partial sums */
#endif
/* k a group's panels span at a time: 32 KB of them, which stay in L1 while every row of a
   hoisted product goes through them (an LSTM at H = 128, whose 64 KB did not: NAME_infer
   3.0 -> 2.2 us a step, a GRU 2.3 -> 1.7; a step alone pays ~3 % for the second pass over
   C). Blocks depend on K only, so a row's sums do not depend on M. */
#define MK_KB ((ptrdiff_t)(32768 / (MK_NP * MK_NR * sizeof(RNNC_REAL))))
#if defined(__GNUC__)
#define MK_INLINE static inline __attribute__((always_inline))
#define MK_API RNNC_API __attribute__((unused))    /* a kernel may need only some of them */
#else
#define MK_INLINE static inline
#define MK_API RNNC_API
#endif

/* Panels of (K x NR) from W, in groups of MK_NP panels side by side: a group's row k
   holds its panels' row k (np * NR scalars), so that a row of A goes through a group's
   panels in one stream of memory. */
MK_INLINE void RNNC_T(mk_pack)(ptrdiff_t N, ptrdiff_t K, const RNNC_REAL *W, ptrdiff_t rs,
    ptrdiff_t ks, RNNC_REAL *P)
{
    for (ptrdiff_t j0 = 0; j0 < N; j0 += MK_NP * MK_NR) {
        const ptrdiff_t np = N - j0 < MK_NP * MK_NR ? (N - j0 + MK_NR - 1) / MK_NR : MK_NP;
        for (ptrdiff_t k = 0; k < K; ++k)
            for (ptrdiff_t c = 0; c < np * MK_NR; ++c)
                *P++ = j0 + c < N ? W[(j0 + c) * rs + k * ks] : 0;
    }
}

/* panels from W (N x K, row-major, ldw): for C += A W^T */
MK_API void RNNC_T(mk_pack_nt)(ptrdiff_t N, ptrdiff_t K, const RNNC_REAL *W, ptrdiff_t ldw, RNNC_REAL *P)
{ RNNC_T(mk_pack)(N, K, W, ldw, 1, P); }

/* panels from W (K x N, row-major, ldw): for C += A W */
MK_API void RNNC_T(mk_pack_nn)(ptrdiff_t N, ptrdiff_t K, const RNNC_REAL *W, ptrdiff_t ldw, RNNC_REAL *P)
{ RNNC_T(mk_pack)(N, K, W, 1, ldw, P); }

/* stream s (of np * ku): the sums of panel s % np over k = s / np mod ku */
#define MK_STREAM(s, acc) \
    if (s < np * ku) { \
        const RNNC_REAL a_ = A[k + s / np], *p_ = P + (k + s / np) * np * MK_NR + (s % np) * MK_NR; \
        for (int c = 0; c < MK_NR; ++c) acc[c] += a_ * p_[c]; \
    }

/* one row by a group of np panels (packed by mk_pack), ku partial sums over k
   interleaved, np * ku <= 8: the first nc columns of C = (a[K] P) + (beta C + bias), the
   partial sums added in a tree. At batch 1 the next step waits on this sum: the more
   partial sums, the shorter the chain of multiply-adds; beta C + bias is known before
   it and joins it last, and the sums start from 0, so that a product whose result is C
   here (the input's, at a step) runs alongside. Eight named accumulators of a panel's
   width, not an array indexed by a stream, which compilers keep in memory. */
MK_INLINE void RNNC_T(mk_panels)(int np, int ku, ptrdiff_t K, const RNNC_REAL *A,
    const RNNC_REAL *P, const RNNC_REAL *bias, int beta, RNNC_REAL *C, int nc)
{
    RNNC_REAL s0[MK_NR], s1[MK_NR], s2[MK_NR], s3[MK_NR], s4[MK_NR], s5[MK_NR], s6[MK_NR], s7[MK_NR];
#define MK_S(i) ((i) == 0 ? s0 : (i) == 1 ? s1 : (i) == 2 ? s2 : (i) == 3 ? s3 : \
                 (i) == 4 ? s4 : (i) == 5 ? s5 : (i) == 6 ? s6 : s7)
    for (int c = 0; c < MK_NR; ++c) s0[c] = s1[c] = s2[c] = s3[c] = s4[c] = s5[c] = s6[c] = s7[c] = 0;
    ptrdiff_t k = 0;
    for (; k + ku <= K; k += ku) {
        MK_STREAM(0, s0) MK_STREAM(1, s1) MK_STREAM(2, s2) MK_STREAM(3, s3)
        MK_STREAM(4, s4) MK_STREAM(5, s5) MK_STREAM(6, s6) MK_STREAM(7, s7)
    }
    /* fewer than ku steps left: into the first part; counted from K % ku, which bounds
       the loop for gcc (it warned at -O3, a loop to K, of 2^61 iterations in blocks of k) */
    for (ptrdiff_t left = K % ku; left > 0; --left, ++k)
        for (int q = 0; q < np; ++q) {
            const RNNC_REAL a = A[k], *p = P + k * np * MK_NR + q * MK_NR;
            RNNC_REAL *const a0 = MK_S(q);
            for (int c = 0; c < MK_NR; ++c) a0[c] += a * p[c];
        }
    for (int q = 0; q < np; ++q) {
        RNNC_REAL *const a0 = MK_S(q), *const a1 = MK_S(q + np), *const a2 = MK_S(q + 2 * np),
                  *const a3 = MK_S(q + 3 * np);
        if (ku == 4) for (int c = 0; c < MK_NR; ++c) a0[c] = (a0[c] + a1[c]) + (a2[c] + a3[c]);
        if (ku == 2) for (int c = 0; c < MK_NR; ++c) a0[c] += a1[c];
        RNNC_REAL *Cq = C + q * MK_NR;
        const RNNC_REAL *bq = bias ? bias + q * MK_NR : NULL;
        const int n = nc - q * MK_NR < MK_NR ? nc - q * MK_NR : MK_NR;
        if (n == MK_NR)     /* a whole panel: fixed trip counts, vectorised */
            for (int c = 0; c < MK_NR; ++c) Cq[c] = a0[c] + ((beta ? Cq[c] : 0) + (bq ? bq[c] : 0));
        else
            for (int c = 0; c < n; ++c) Cq[c] = a0[c] + ((beta ? Cq[c] : 0) + (bq ? bq[c] : 0));
    }
}
#undef MK_STREAM
#undef MK_S

/* one row by the np panels from the nc columns at C (np <= MK_NP, a constant where the
   caller's N is): as many partial sums over k as registers hold, fewer when the weights
   outgrow L1 (K > 32 at 4 panels; measured at batch 1, where the sums are a step's
   chain of latency: 20 ns against 34 at N = 128, K = 32, and the reverse past L1) */
MK_INLINE void RNNC_T(mk_group)(int np, ptrdiff_t K, const RNNC_REAL *A, const RNNC_REAL *P,
    const RNNC_REAL *bias, int beta, RNNC_REAL *C, int nc)
{
#if MK_NP >= 4
    if (np >= 3) { RNNC_T(mk_panels)(np, K <= 32 ? 2 : 1, K, A, P, bias, beta, C, nc); return; }
    if (np == 2) { RNNC_T(mk_panels)(2, 2, K, A, P, bias, beta, C, nc); return; }
#endif
    (void)np;
    RNNC_T(mk_panels)(1, MK_KU, K, A, P, bias, beta, C, nc);
}

/* C (M x N) = beta C + A (M x K) P + bias (a row vector, or NULL), P packed by
   RNNC_T(mk_pack_nt) / RNNC_T(mk_pack_nn): a group of MK_NP panels at a time (kept in
   cache while every row goes through it), a row at a time. Inlined where it is called:
   the generated calls pass N and K as constants, and with them the groups and the loops
   over k have fixed trip counts and the accumulators stay in registers. */
MK_INLINE void RNNC_T(mk_gemm)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const RNNC_REAL *A, ptrdiff_t lda,
                    const RNNC_REAL *P, const RNNC_REAL *bias, int beta, RNNC_REAL *C, ptrdiff_t ldc)
{
    for (ptrdiff_t j0 = 0; j0 < N; j0 += MK_NP * MK_NR) {
        const ptrdiff_t left = N - j0;
        const int nc = left < MK_NP * MK_NR ? (int)left : MK_NP * MK_NR;
        const int np = (nc + MK_NR - 1) / MK_NR;
        const RNNC_REAL *Pj = P + (j0 / MK_NR) * K * MK_NR;
        const RNNC_REAL *bj = bias ? bias + j0 : NULL;
        for (ptrdiff_t k0 = 0; k0 < K; k0 += MK_KB) {      /* a block of k, then C += */
            const ptrdiff_t kb = K - k0 < MK_KB ? K - k0 : MK_KB;
            for (ptrdiff_t i = 0; i < M; ++i)
                RNNC_T(mk_group)(np, kb, A + i * lda + k0, Pj + k0 * np * MK_NR, k0 ? NULL : bj,
                                 k0 ? 1 : beta, C + i * ldc + j0, nc);
        }
    }
}
#undef MK_NR
#undef MK_KU
#undef MK_KB
#undef MK_NP
#undef MK_INLINE
#undef MK_API
#undef MK_NR_MAX
