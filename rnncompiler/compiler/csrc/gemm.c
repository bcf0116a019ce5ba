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
/* The helper thread: one per real type and kernel, started at its first job and kept,
   waiting on a condition variable. A chunk's halves are ~0.1 ms of work at B=1, which a
   pthread created per half (~30 us, and cold) would eat; a waiting thread takes a job in
   a few microseconds. One caller at a time: another caller, or a job it gives itself,
   finds it taken and runs the job on its own thread. A forked child starts without it. */
static pthread_mutex_t RNNC_T(h_owner) = PTHREAD_MUTEX_INITIALIZER;   /* the caller's */
static pthread_mutex_t RNNC_T(h_mu) = PTHREAD_MUTEX_INITIALIZER;      /* guards the rest */
static pthread_cond_t RNNC_T(h_cv) = PTHREAD_COND_INITIALIZER;
static void *(*RNNC_T(h_fn))(void *);
static void *RNNC_T(h_arg);
static int RNNC_T(h_state);          /* 0: no thread; 1: waiting; 2: job given; 3: job done */
static pthread_once_t RNNC_T(h_once) = PTHREAD_ONCE_INIT;

static void RNNC_T(h_forked)(void)
{
    pthread_mutex_init(&RNNC_T(h_owner), NULL);
    pthread_mutex_init(&RNNC_T(h_mu), NULL);
    pthread_cond_init(&RNNC_T(h_cv), NULL);
    RNNC_T(h_state) = 0;
}
static void RNNC_T(h_at_fork)(void) { pthread_atfork(NULL, NULL, RNNC_T(h_forked)); }

/* until h_state is `want`, spinning up to RNNC_H_SPIN_NS before sleeping: on a virtual
   machine a sleeping thread can take longer to wake than a chunk's half takes to run
   (at B=1, spinning 0.3 ms made two threads 1.45x as fast as one, sleeping at once
   1.15x; spinning 2.5 ms, 1.28x: the spinning thread then holds its core too long) */
#define RNNC_H_SPIN_NS 300000
static double RNNC_T(h_now)(void)
{
    struct timespec s;
    clock_gettime(CLOCK_MONOTONIC, &s);
    return 1e9 * (double)s.tv_sec + (double)s.tv_nsec;
}
static void RNNC_T(h_await)(int want)
{
    const double until = RNNC_T(h_now)() + RNNC_H_SPIN_NS;
    for (long i = 1; ; ++i) {
        if (__atomic_load_n(&RNNC_T(h_state), __ATOMIC_ACQUIRE) == want) return;
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        if (i % 64 == 0 && RNNC_T(h_now)() > until) break;
    }
    pthread_mutex_lock(&RNNC_T(h_mu));
    while (__atomic_load_n(&RNNC_T(h_state), __ATOMIC_ACQUIRE) != want)
        pthread_cond_wait(&RNNC_T(h_cv), &RNNC_T(h_mu));
    pthread_mutex_unlock(&RNNC_T(h_mu));
}

static void RNNC_T(h_set)(int state)
{
    pthread_mutex_lock(&RNNC_T(h_mu));
    __atomic_store_n(&RNNC_T(h_state), state, __ATOMIC_RELEASE);
    pthread_cond_broadcast(&RNNC_T(h_cv));
    pthread_mutex_unlock(&RNNC_T(h_mu));
}

static void *RNNC_T(h_main)(void *unused)
{
    (void)unused;
    for (;;) {
        RNNC_T(h_await)(2);
        RNNC_T(h_fn)(RNNC_T(h_arg));
        RNNC_T(h_set)(3);
    }
    return NULL;
}

/* fn(arg) on the helper thread: 1 if it took the job (then RNNC_T(helper_wait) before
   reading what it writes), 0 if not (taken by another caller, or no thread to be had):
   the caller runs fn(arg) itself */
RNNC_API int RNNC_T(helper_start)(void *(*fn)(void *), void *arg)
{
    pthread_once(&RNNC_T(h_once), RNNC_T(h_at_fork));
    if (pthread_mutex_trylock(&RNNC_T(h_owner)) != 0) return 0;
    if (__atomic_load_n(&RNNC_T(h_state), __ATOMIC_ACQUIRE) == 0) {
        pthread_attr_t attr;
        pthread_t tid;
        int ok = pthread_attr_init(&attr) == 0;
        ok = ok && pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0
                && pthread_create(&tid, &attr, RNNC_T(h_main), NULL) == 0;
        pthread_attr_destroy(&attr);
        if (!ok) {
            pthread_mutex_unlock(&RNNC_T(h_owner));
            return 0;
        }
    }
    RNNC_T(h_fn) = fn;
    RNNC_T(h_arg) = arg;
    RNNC_T(h_set)(2);
    return 1;
}

/* until the job RNNC_T(helper_start) gave is done; the helper is free again after */
RNNC_API void RNNC_T(helper_wait)(void)
{
    RNNC_T(h_await)(3);
    __atomic_store_n(&RNNC_T(h_state), 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&RNNC_T(h_owner));
}

/* the blocks of b this thread takes, until none is left */
static void RNNC_T(blocks_work)(rnnc_blocks *b)
{
    for (;;) {
        const int i = __atomic_fetch_add(&b->next, 1, __ATOMIC_RELAXED);
        if (i >= b->n) return;
        for (long spins = 1; i >= b->later && __atomic_load_n(&b->done, __ATOMIC_ACQUIRE) < b->later; ++spins) {
#if defined(__x86_64__) || defined(__i386__)
            __builtin_ia32_pause();
#endif
            if (spins % 4096 == 0) sched_yield();     /* the other thread lost its core */
        }
        b->fn(b->ctx, i);
        __atomic_fetch_add(&b->done, 1, __ATOMIC_RELEASE);
    }
}
static void *RNNC_T(blocks_thread)(void *b) { RNNC_T(blocks_work)((rnnc_blocks *)b); return NULL; }
/* the helper takes blocks of b from now on: 1 if it does (then RNNC_T(blocks_finish) with
   it), 0 if it is taken (this thread then runs them all in RNNC_T(blocks_finish)) */
RNNC_API int RNNC_T(blocks_start)(rnnc_blocks *b)
{
    b->next = b->done = 0;
    return RNNC_T(helper_start)(RNNC_T(blocks_thread), b);
}
/* this thread takes the blocks left, then waits for the helper's */
RNNC_API void RNNC_T(blocks_finish)(rnnc_blocks *b, int started)
{
    RNNC_T(blocks_work)(b);
    if (started) RNNC_T(helper_wait)();
}

static void *RNNC_T(gemm_thread)(void *job) { RNNC_T(gemm_run)((const RNNC_T(gemm_job) *)job); return NULL; }
/* the GEMMs over chunks of T*B rows, split by rows of C over `threads` threads (the
   helper, then threads of their own), each a single-threaded BLAS call (OpenBLAS's own
   threads collapse on a busy machine) */
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
        if (jobs[i].M > 0)
            started[i] = i == 1 ? RNNC_T(helper_start)(RNNC_T(gemm_thread), &jobs[i])
                                : pthread_create(&tid[i], NULL, RNNC_T(gemm_thread), &jobs[i]) == 0;
    if (jobs[0].M > 0) RNNC_T(gemm_run)(&jobs[0]);
    for (int i = 1; i < threads; ++i) {
        if (started[i] && i == 1) RNNC_T(helper_wait)();
        else if (started[i]) pthread_join(tid[i], NULL);
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
