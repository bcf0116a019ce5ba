/* The real type of the C that follows, chosen by RNNC_DOUBLE (0: float, 1: double) just
   before this file. Pasted once per type (the runtime object holds both), so it first
   forgets the previous choice. */
#undef RNNC_REAL
#undef RNNC_REAL_SIZE
#undef RNNC_INT
#undef RNNC_UINT
#undef RNNC_F
#undef RNNC_L
#undef RNNC_L_
#undef RNNC_T
#if RNNC_DOUBLE
#define RNNC_REAL double
#define RNNC_REAL_SIZE 8            /* sizeof(RNNC_REAL), for #if */
#define RNNC_INT int64_t            /* an integer as wide: the bits of a real */
#define RNNC_UINT uint64_t
#define RNNC_F(name) name           /* the names of libm and the helpers: exp, rnnc_exp */
#define RNNC_L(lit) lit             /* a literal of the type, lit or a macro of its digits */
#define RNNC_T(name) rnnc_d_##name  /* the GEMM helpers' names: rnnc_d_gemm_nt */
#else
#define RNNC_REAL float
#define RNNC_REAL_SIZE 4
#define RNNC_INT int32_t
#define RNNC_UINT uint32_t
#define RNNC_F(name) name##f        /* expf, rnnc_expf */
#define RNNC_L(lit) RNNC_L_(lit)    /* 0.5 -> 0.5f, after expanding a macro */
#define RNNC_L_(lit) lit##f
#define RNNC_T(name) rnnc_s_##name  /* rnnc_s_gemm_nt */
#endif
