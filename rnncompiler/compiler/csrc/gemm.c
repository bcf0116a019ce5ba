/* The GEMM helpers of RNNC_REAL for the three shapes linear maps need, by BLAS or plain
   loops, and gemm_big, those over the chunks of T*B rows. Needs real.h and gemm.h. */
#if RNNC_BLAS == 2 && RNNC_DOUBLE
#define RNNC_XGEMM scipy_cblas_dgemm
#elif RNNC_BLAS == 2
#define RNNC_XGEMM scipy_cblas_sgemm
#elif RNNC_DOUBLE
#define RNNC_XGEMM cblas_dgemm
#else
#define RNNC_XGEMM cblas_sgemm
#endif
/* BLAS takes int sizes: the long dimension (rows, or K for tn) goes in pieces of 2^30 */

/* C (MxN) = beta C + A (MxK) B^T, B (NxK) */
RNNC_API void RNNC_T(gemm_nt)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const RNNC_REAL *A, ptrdiff_t lda, const RNNC_REAL *Bm, ptrdiff_t ldb, int beta, RNNC_REAL *C, ptrdiff_t ldc)
{
#if RNNC_BLAS
    for (; M > 0; M -= (1 << 30), A += (ptrdiff_t)lda << 30, C += (ptrdiff_t)ldc << 30)
        RNNC_XGEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(M < (1 << 30) ? M : (1 << 30)), (int)N, (int)K, 1, A, (int)lda, Bm, (int)ldb, (RNNC_REAL)beta, C, (int)ldc);
#else
    if (!beta) for (ptrdiff_t i = 0; i < M; ++i) for (ptrdiff_t j = 0; j < N; ++j) C[i * ldc + j] = 0;
    for (ptrdiff_t i = 0; i < M; ++i) for (ptrdiff_t j = 0; j < N; ++j) {
        RNNC_REAL acc = 0;
        for (ptrdiff_t k = 0; k < K; ++k) acc += A[i * lda + k] * Bm[j * ldb + k];
        C[i * ldc + j] += acc;
    }
#endif
}
/* C (MxN) = beta C + A (MxK) B (KxN) */
RNNC_API void RNNC_T(gemm_nn)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const RNNC_REAL *A, ptrdiff_t lda, const RNNC_REAL *Bm, ptrdiff_t ldb, int beta, RNNC_REAL *C, ptrdiff_t ldc)
{
#if RNNC_BLAS
    for (; M > 0; M -= (1 << 30), A += (ptrdiff_t)lda << 30, C += (ptrdiff_t)ldc << 30)
        RNNC_XGEMM(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(M < (1 << 30) ? M : (1 << 30)), (int)N, (int)K, 1, A, (int)lda, Bm, (int)ldb, (RNNC_REAL)beta, C, (int)ldc);
#else
    if (!beta) for (ptrdiff_t i = 0; i < M; ++i) for (ptrdiff_t j = 0; j < N; ++j) C[i * ldc + j] = 0;
    for (ptrdiff_t i = 0; i < M; ++i) for (ptrdiff_t k = 0; k < K; ++k) {
        const RNNC_REAL a = A[i * lda + k];
        for (ptrdiff_t j = 0; j < N; ++j) C[i * ldc + j] += a * Bm[k * ldb + j];
    }
#endif
}
/* C (MxN) = beta C + A^T B, A (KxM), B (KxN) */
RNNC_API void RNNC_T(gemm_tn)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const RNNC_REAL *A, ptrdiff_t lda, const RNNC_REAL *Bm, ptrdiff_t ldb, int beta, RNNC_REAL *C, ptrdiff_t ldc)
{
#if RNNC_BLAS
    for (; K > 0; K -= (1 << 30), A += (ptrdiff_t)lda << 30, Bm += (ptrdiff_t)ldb << 30)
        RNNC_XGEMM(CblasRowMajor, CblasTrans, CblasNoTrans, (int)M, (int)N, (int)(K < (1 << 30) ? K : (1 << 30)), 1, A, (int)lda, Bm, (int)ldb, (RNNC_REAL)beta, C, (int)ldc);
#else
    if (!beta) for (ptrdiff_t i = 0; i < M; ++i) for (ptrdiff_t j = 0; j < N; ++j) C[i * ldc + j] = 0;
    for (ptrdiff_t k = 0; k < K; ++k) for (ptrdiff_t i = 0; i < M; ++i) {
        const RNNC_REAL a = A[k * lda + i];
        for (ptrdiff_t j = 0; j < N; ++j) C[i * ldc + j] += a * Bm[k * ldb + j];
    }
#endif
}
#undef RNNC_XGEMM

typedef struct { int kind, beta; ptrdiff_t M, N, K; const RNNC_REAL *A; ptrdiff_t lda; const RNNC_REAL *Bm;
                 ptrdiff_t ldb; RNNC_REAL *C; ptrdiff_t ldc; } RNNC_T(gemm_job);
static void RNNC_T(gemm_run)(const RNNC_T(gemm_job) *j)
{
    if (j->kind == RNNC_NT) RNNC_T(gemm_nt)(j->M, j->N, j->K, j->A, j->lda, j->Bm, j->ldb, j->beta, j->C, j->ldc);
    else if (j->kind == RNNC_NN) RNNC_T(gemm_nn)(j->M, j->N, j->K, j->A, j->lda, j->Bm, j->ldb, j->beta, j->C, j->ldc);
    else RNNC_T(gemm_tn)(j->M, j->N, j->K, j->A, j->lda, j->Bm, j->ldb, j->beta, j->C, j->ldc);
}
#if RNNC_BLAS == 2
static void *RNNC_T(gemm_thread)(void *job) { RNNC_T(gemm_run)((const RNNC_T(gemm_job) *)job); return NULL; }
/* the GEMMs over chunks of T*B rows, split by rows of C over `threads` threads, each a
   single-threaded BLAS call (OpenBLAS's own threads collapse on a busy machine) */
RNNC_API void RNNC_T(gemm_big)(int kind, int threads, int beta, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                               const RNNC_REAL *A, ptrdiff_t lda, const RNNC_REAL *Bm, ptrdiff_t ldb, RNNC_REAL *C, ptrdiff_t ldc)
{
    RNNC_T(gemm_job) jobs[8];
    pthread_t tid[8];
    int started[8] = {0};
    if (threads > 8) threads = 8;
    if (threads > 1 && M * N * K < (ptrdiff_t)1 << 21) threads = 1;   /* too small to share */
    if (threads > M) threads = (int)M;
    const ptrdiff_t step = (M + threads - 1) / threads;
    for (int i = 0; i < threads; ++i) {
        const ptrdiff_t m0 = i * step, m = M - m0 < step ? M - m0 : step;
        const RNNC_T(gemm_job) job = {kind, beta, m > 0 ? m : 0, N, K, kind == RNNC_TN ? A + m0 : A + m0 * lda,
                                      lda, Bm, ldb, C + m0 * ldc, ldc};
        jobs[i] = job;
    }
    for (int i = 1; i < threads; ++i)
        if (jobs[i].M > 0) started[i] = pthread_create(&tid[i], NULL, RNNC_T(gemm_thread), &jobs[i]) == 0;
    if (jobs[0].M > 0) RNNC_T(gemm_run)(&jobs[0]);
    for (int i = 1; i < threads; ++i) {
        if (started[i]) pthread_join(tid[i], NULL);
        else if (jobs[i].M > 0) RNNC_T(gemm_run)(&jobs[i]);
    }
}
#else
/* the GEMMs over chunks of T*B rows */
RNNC_API void RNNC_T(gemm_big)(int kind, int threads, int beta, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K,
                               const RNNC_REAL *A, ptrdiff_t lda, const RNNC_REAL *Bm, ptrdiff_t ldb, RNNC_REAL *C, ptrdiff_t ldc)
{
    const RNNC_T(gemm_job) job = {kind, beta, M, N, K, A, lda, Bm, ldb, C, ldc};
    (void)threads;
    RNNC_T(gemm_run)(&job);
}
#endif
