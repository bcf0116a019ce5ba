/* What every user of the GEMM helpers needs: the BLAS headers, the kinds of product
   gemm_big takes, the linkage of the entry points and, where they live in the runtime
   object, their prototypes for RNNC_REAL. Chosen before this file:
   RNNC_BLAS     0: plain C loops; 1: any CBLAS (cblas_sgemm); 2: scipy-openblas32, whose
                 symbols carry scipy_, with gemm_big split over pthreads (the JIT kernels)
   RNNC_RUNTIME  0: static functions in the kernel's own file (exported kernels, and JIT
                 kernels without OpenBLAS); 1: hidden ones in the runtime object, compiled
                 once per machine and linked into every JIT kernel with OpenBLAS */
#ifndef RNNC_GEMM_H
#define RNNC_GEMM_H
#if RNNC_BLAS
#include <cblas.h>
#endif
#if RNNC_BLAS == 2
#include <pthread.h>
#include <sched.h>
#include <time.h>
#endif
enum { RNNC_NT, RNNC_NN, RNNC_TN };
#if RNNC_BLAS == 2
/* Blocks of work two threads share (the rows of a chunk, the panels of a gradient): each
   takes the next block until none is left, and a block from `later` on starts once every
   block before it is done. Each block's result is the same whichever thread runs it. */
typedef struct {
    void (*fn)(const void *ctx, int block);
    const void *ctx;
    int n, later;
    int next, done;
} rnnc_blocks;
#endif
#if RNNC_RUNTIME
#define RNNC_API __attribute__((visibility("hidden")))
#else
#define RNNC_API static
#endif
#endif
#if RNNC_RUNTIME
RNNC_API void RNNC_T(gemm_nt)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const RNNC_REAL *A, ptrdiff_t lda, const RNNC_REAL *Bm, ptrdiff_t ldb, int beta, RNNC_REAL *C, ptrdiff_t ldc);
RNNC_API void RNNC_T(gemm_nn)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const RNNC_REAL *A, ptrdiff_t lda, const RNNC_REAL *Bm, ptrdiff_t ldb, int beta, RNNC_REAL *C, ptrdiff_t ldc);
RNNC_API void RNNC_T(gemm_tn)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const RNNC_REAL *A, ptrdiff_t lda, const RNNC_REAL *Bm, ptrdiff_t ldb, int beta, RNNC_REAL *C, ptrdiff_t ldc);
RNNC_API void RNNC_T(gemm_big)(int kind, int threads, int beta, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const RNNC_REAL *A, ptrdiff_t lda, const RNNC_REAL *Bm, ptrdiff_t ldb, RNNC_REAL *C, ptrdiff_t ldc);
#if RNNC_BLAS == 2
RNNC_API int RNNC_T(helper_start)(void *(*fn)(void *), void *arg);
RNNC_API void RNNC_T(helper_wait)(void);
RNNC_API int RNNC_T(blocks_start)(rnnc_blocks *b);
RNNC_API void RNNC_T(blocks_finish)(rnnc_blocks *b, int started);
#endif
RNNC_API void RNNC_T(mk_pack_nt)(ptrdiff_t N, ptrdiff_t K, const RNNC_REAL *W, ptrdiff_t ldw, RNNC_REAL *P);
RNNC_API void RNNC_T(mk_pack_nn)(ptrdiff_t N, ptrdiff_t K, const RNNC_REAL *W, ptrdiff_t ldw, RNNC_REAL *P);
RNNC_API void RNNC_T(mk_gemm)(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const RNNC_REAL *A, ptrdiff_t lda, const RNNC_REAL *P, const RNNC_REAL *bias, int beta, RNNC_REAL *C, ptrdiff_t ldc);
#endif
