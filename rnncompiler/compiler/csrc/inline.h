/* Every helper inlined, whatever gcc's size limits say: a helper called out of line in a
   big cell's backward loop stops that loop from vectorising (a 4-layer LSTM written as one
   cell lost 2.5x). Plain `static inline` for compilers without the attribute (C99). */
#if defined(__GNUC__)
#define RNNC_INLINE static inline __attribute__((always_inline))
#else
#define RNNC_INLINE static inline
#endif
