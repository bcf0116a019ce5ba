/* Elementwise helpers that keep NaN as numpy does (C's fmax, fmin and comparisons drop
   it): ternaries, not fmin/fmax, which also vectorise. Needs real.h and inline.h. */
RNNC_INLINE RNNC_REAL RNNC_F(rnnc_clip)(RNNC_REAL u, RNNC_REAL lo, RNNC_REAL hi) { return u < lo ? lo : (u > hi ? hi : u); }
RNNC_INLINE RNNC_REAL RNNC_F(rnnc_max)(RNNC_REAL a, RNNC_REAL b) { return a > b || a != a ? a : b; }
RNNC_INLINE RNNC_REAL RNNC_F(rnnc_min)(RNNC_REAL a, RNNC_REAL b) { return a < b || a != a ? a : b; }
/* numpy's and Python's modulo: the divisor's sign (C's fmod keeps the dividend's), exact
   as fmod is, NaN for a zero divisor */
RNNC_INLINE RNNC_REAL RNNC_F(rnnc_mod)(RNNC_REAL a, RNNC_REAL b) { const RNNC_REAL m = RNNC_F(fmod)(a, b); return m != 0 ? ((b < 0) != (m < 0) ? m + b : m) : RNNC_F(copysign)(0, b); }
RNNC_INLINE RNNC_REAL RNNC_F(rnnc_sign)(RNNC_REAL u) { return u > 0 ? 1 : (u < 0 ? -1 : u); }
RNNC_INLINE RNNC_REAL RNNC_F(rnnc_heaviside)(RNNC_REAL u, RNNC_REAL h) { return u < 0 ? 0 : (u > 0 ? 1 : (u == 0 ? h : u)); }
