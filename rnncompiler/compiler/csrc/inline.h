/* Every helper inlined, whatever gcc's size limits say: a helper called out of line in a
   big cell's backward loop stops that loop from vectorising (a 4-layer LSTM written as one
   cell lost 2.5x). Plain `static inline` for compilers without the attribute (C99). */
#if defined(__GNUC__)
#define RNNC_INLINE static inline __attribute__((always_inline))
#else
#define RNNC_INLINE static inline
#endif
/* A function kept out of line: a step's body inlined into a loop over steps ran slower
   than the same body called (its code laid out for the loop, not for the step) */
#if defined(__GNUC__)
#define RNNC_NOINLINE static __attribute__((noinline))
#else
#define RNNC_NOINLINE static
#endif
