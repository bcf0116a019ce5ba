/* Vectorisable exp, tanh, log and log1p of RNNC_REAL, named as libm's with the prefix
   rnnc_ (rnnc_expf, rnnc_exp). exp: Cody-Waite range reduction
   x = n ln2 + r, |r| <= ln2/2, a Taylor polynomial for e^r, and 2^n built in
   the exponent bits (as two factors, so results down to the subnormals are right). No
   branches or libm calls, so gcc vectorises the loops around them; glibc's expf/tanhf are
   vectorised only under -ffast-math, which the kernels never use. Accuracy, checked
   against libm over the whole range by tests/test_fastmath.py: <= 2 ulp (float), <= 1 ulp
   (double). Needs real.h and inline.h, <math.h>, <stdint.h> and <string.h>. */

/* 1/k!, the Taylor coefficients of e^r, as Python prints repr(1.0 / math.factorial(k));
   tests/test_csrc.py recomputes them */
#define RNNC_INV_FACT_0 1.0
#define RNNC_INV_FACT_1 1.0
#define RNNC_INV_FACT_2 0.5
#define RNNC_INV_FACT_3 0.16666666666666666
#define RNNC_INV_FACT_4 0.041666666666666664
#define RNNC_INV_FACT_5 0.008333333333333333
#define RNNC_INV_FACT_6 0.001388888888888889
#define RNNC_INV_FACT_7 0.0001984126984126984
#define RNNC_INV_FACT_8 2.48015873015873e-05
#define RNNC_INV_FACT_9 2.7557319223985893e-06
#define RNNC_INV_FACT_10 2.755731922398589e-07
#define RNNC_INV_FACT_11 2.505210838544172e-08
#define RNNC_INV_FACT_12 2.08767569878681e-09
#define RNNC_INV_FACT_13 1.6059043836821613e-10
#define RNNC_INV_FACT_14 1.1470745597729725e-11
#define RNNC_INV_FACT_15 7.647163731819816e-13
#define RNNC_FM_C(k) RNNC_L(RNNC_INV_FACT_##k)

/* The range reduction: adding MAGIC = 1.5 * 2^(mantissa bits) rounds to an integer;
   ln 2 = LN2HI + LN2LO, LN2HI exact in few bits (LN2: ln 2 rounded, for a reduction by
   one fma where n is small); exp's arguments clamped to [LO, HI] (0 and inf beyond).
   The exponent: SH bits of mantissa and the
   BIAS. For log: the bits of 1 and of sqrt(1/2), the mantissa mask, the smallest normal
   MINNORM, SCALE = 2^SCALEK that makes a subnormal normal, and the largest finite MAXV. */
#if RNNC_DOUBLE
#define RNNC_FM_MAGIC 6755399441055744.0
#define RNNC_FM_LOG2E 1.4426950408889634074
#define RNNC_FM_LN2HI 6.93147180369123816490e-01
#define RNNC_FM_LN2LO 1.90821492927058770002e-10
#define RNNC_FM_LO (-746.0)
#define RNNC_FM_HI 710.0
#define RNNC_FM_SH 52
#define RNNC_FM_BIAS 1023
#define RNNC_FM_ONE 0x3ff0000000000000
#define RNNC_FM_SQRTH 0x3fe6a09e667f3bcd
#define RNNC_FM_MANT 0x000fffffffffffff
#define RNNC_FM_MINNORM 2.2250738585072014e-308
#define RNNC_FM_SCALE 18014398509481984.0
#define RNNC_FM_SCALEK 54
#define RNNC_FM_MAXV 1.7976931348623157e+308
#else
#define RNNC_FM_MAGIC 12582912.0f
#define RNNC_FM_LOG2E 1.44269504088896341f
#define RNNC_FM_LN2HI 0.693359375f
#define RNNC_FM_LN2LO (-2.12194440e-4f)
#define RNNC_FM_LN2 0.693147182f
#define RNNC_FM_LO (-104.0f)
#define RNNC_FM_HI 89.0f
#define RNNC_FM_SH 23
#define RNNC_FM_BIAS 127
#define RNNC_FM_ONE 0x3f800000
#define RNNC_FM_SQRTH 0x3f3504f3
#define RNNC_FM_MANT 0x007fffff
#define RNNC_FM_MINNORM 1.17549435e-38f
#define RNNC_FM_SCALE 33554432.0f
#define RNNC_FM_SCALEK 25
#define RNNC_FM_MAXV 3.40282347e+38f
#endif

RNNC_INLINE RNNC_REAL RNNC_F(rnnc_pow2i)(RNNC_INT n) { RNNC_REAL v; RNNC_INT bits = (n + RNNC_FM_BIAS) << RNNC_FM_SH; memcpy(&v, &bits, sizeof v); return v; }
/* e^r for r reduced to |r| <= ln2/2 (a little past it for tanh's one-fma reduction) */
RNNC_INLINE RNNC_REAL RNNC_F(rnnc_exp_reduced)(RNNC_REAL r)
{
#if RNNC_DOUBLE    /* to r^13/13! */
    return RNNC_FM_C(0) + r * (RNNC_FM_C(1) + r * (RNNC_FM_C(2) + r * (RNNC_FM_C(3)
        + r * (RNNC_FM_C(4) + r * (RNNC_FM_C(5) + r * (RNNC_FM_C(6) + r * (RNNC_FM_C(7)
        + r * (RNNC_FM_C(8) + r * (RNNC_FM_C(9) + r * (RNNC_FM_C(10) + r * (RNNC_FM_C(11)
        + r * (RNNC_FM_C(12) + r * (RNNC_FM_C(13))))))))))))));
#else              /* to r^7/7!: the terms from r^2 in Estrin's order, the first two by
                      Horner's (which keeps the error at 1 ulp): 5 multiply-adds deep, not 7
                      (at batch 1 a step waits on the exp behind its gates) */
    const RNNC_REAL r2 = r * r;
    const RNNC_REAL q = (RNNC_FM_C(2) + r * RNNC_FM_C(3)) + r2 * ((RNNC_FM_C(4) + r * RNNC_FM_C(5))
        + r2 * (RNNC_FM_C(6) + r * RNNC_FM_C(7)));
    return RNNC_FM_C(0) + r * (RNNC_FM_C(1) + r * q);
#endif
}
/* e^x for x in [LO, HI]: 2^n as 2^h 2^(n-h), h = floor(n/2), both normal, their biased
   exponents made in unsigned arithmetic from u = n + 2 BIAS >= 0 (h + BIAS = u >> 1):
   three integer operations fewer than n / 2 (an LSTM at H = 32: ~3 % of a step at batch
   1), and defined for every n (a signed shift of a negative n is not). A NaN x gives NaN. */
RNNC_INLINE RNNC_REAL RNNC_F(rnnc_exp_clamped)(RNNC_REAL x)
{
    const RNNC_REAL n = (x * RNNC_FM_LOG2E + RNNC_FM_MAGIC) - RNNC_FM_MAGIC;
    const RNNC_REAL r = (x - n * RNNC_FM_LN2HI) - n * RNNC_FM_LN2LO;
    const RNNC_REAL p = RNNC_F(rnnc_exp_reduced)(r);
    const RNNC_UINT u = (RNNC_UINT)(RNNC_INT)n + 2 * RNNC_FM_BIAS, h = u >> 1;
    const RNNC_UINT b1 = h << RNNC_FM_SH, b2 = (u - h) << RNNC_FM_SH;
    RNNC_REAL s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    return p * s1 * s2;
}
/* e^x for all x: inf above the range, subnormals and 0 below, NaN kept */
RNNC_INLINE RNNC_REAL RNNC_F(rnnc_exp)(RNNC_REAL x)
{
    const RNNC_REAL xc = x < RNNC_FM_LO ? RNNC_FM_LO : (x > RNNC_FM_HI ? RNNC_FM_HI : x);    /* ternaries vectorise, fmin does not */
    const RNNC_REAL y = RNNC_F(rnnc_exp_clamped)(xc);
    return x != x ? x : y;
}
/* e^x for x <= 0 (as e^-|u| in sigmoid and softplus), NaN kept: no upper clamp and no
   test for NaN, which goes through (an LSTM at H = 32: ~3 % of a step at batch 1) */
RNNC_INLINE RNNC_REAL RNNC_F(rnnc_exp_nonpos)(RNNC_REAL x)
{
    return RNNC_F(rnnc_exp_clamped)(x < RNNC_FM_LO ? RNNC_FM_LO : x);
}
/* tanh's Taylor coefficients of x^3, x^5, ..., x^47: 2^2n (2^2n - 1) B_2n / (2n)! for
   n = 2..24, B the Bernoulli numbers, as Python prints repr(float(c)) of the exact
   rational (sympy.bernoulli); tests/test_csrc.py recomputes them. Float uses them to x^17. */
#define RNNC_TANH_3 (-0.3333333333333333)
#define RNNC_TANH_5 0.13333333333333333
#define RNNC_TANH_7 (-0.05396825396825397)
#define RNNC_TANH_9 0.021869488536155203
#define RNNC_TANH_11 (-0.008863235529902197)
#define RNNC_TANH_13 0.003592128036572481
#define RNNC_TANH_15 (-0.0014558343870513183)
#define RNNC_TANH_17 0.000590027440945586
#define RNNC_TANH_19 (-0.00023912911424355248)
#define RNNC_TANH_21 9.691537956929451e-05
#define RNNC_TANH_23 (-3.927832388331683e-05)
#define RNNC_TANH_25 1.5918905069328964e-05
#define RNNC_TANH_27 (-6.451689215655431e-06)
#define RNNC_TANH_29 2.6147711512907546e-06
#define RNNC_TANH_31 (-1.0597268320104654e-06)
#define RNNC_TANH_33 4.294911078273806e-07
#define RNNC_TANH_35 (-1.7406618963571648e-07)
#define RNNC_TANH_37 7.054636946400968e-08
#define RNNC_TANH_39 (-2.859136662305254e-08)
#define RNNC_TANH_41 1.1587644432798853e-08
#define RNNC_TANH_43 (-4.6962953982309016e-09)
#define RNNC_TANH_45 1.903336833931276e-09
#define RNNC_TANH_47 (-7.713933635359062e-10)
#define RNNC_TC(n) ((RNNC_REAL)RNNC_TANH_##n)
#if RNNC_DOUBLE
/* tanh x: below |x| = 0.625 the Taylor series x + x^3 P(x^2); above,
   1 - 2/(e^{2|x|} + 1) with E + 1 = d + dlo, 2 = q d + r and 1 - q = hi + lo exactly;
   sign of x; NaN kept. -expm1(-2|x|) / (2 + expm1(-2|x|)) would cost up to 3 ulp in
   double; this form stays within 1. */
RNNC_INLINE RNNC_REAL RNNC_F(rnnc_tanh)(RNNC_REAL x)
{
    const RNNC_REAL a = RNNC_F(fabs)(x), a2 = a * a;
    const RNNC_REAL small = a + a * a2 * (RNNC_TANH_3 + a2 * (RNNC_TANH_5 + a2 * (RNNC_TANH_7
        + a2 * (RNNC_TANH_9 + a2 * (RNNC_TANH_11 + a2 * (RNNC_TANH_13 + a2 * (RNNC_TANH_15
        + a2 * (RNNC_TANH_17 + a2 * (RNNC_TANH_19 + a2 * (RNNC_TANH_21 + a2 * (RNNC_TANH_23
        + a2 * (RNNC_TANH_25 + a2 * (RNNC_TANH_27 + a2 * (RNNC_TANH_29 + a2 * (RNNC_TANH_31
        + a2 * (RNNC_TANH_33 + a2 * (RNNC_TANH_35 + a2 * (RNNC_TANH_37 + a2 * (RNNC_TANH_39
        + a2 * (RNNC_TANH_41 + a2 * (RNNC_TANH_43 + a2 * (RNNC_TANH_45
        + a2 * (RNNC_TANH_47)))))))))))))))))))))));
    const RNNC_REAL E = RNNC_F(rnnc_exp)(2 * (a < 20 ? a : 20));
    const RNNC_REAL d = E + 1, dlo = 1 - (d - E);
    const RNNC_REAL q = 2 / d;
    const RNNC_REAL r = RNNC_F(fma)(-q, d, 2) - q * dlo;
    const RNNC_REAL hi = 1 - q, lo = (1 - hi) - q;
    const RNNC_REAL big = hi + (lo - r * q * (RNNC_REAL)0.5);
    const RNNC_REAL t = a < (RNNC_REAL)0.625 ? small : big;
    return x != x ? x : RNNC_F(copysign)(t, x);
}
#else
/* tanh x as double's: below |x| = 0.625 x + x^3 P(x^2), P to x^14 in Estrin's order;
   above, 1 - 2/(E + 1), E = e^{2|x|} (|x| clamped to 10: tanh rounds to 1 from 9.01,
   exactly, which 1 - t^2 in a derivative needs), its reduction r = 2|x| - n ln 2 by one
   fma with ln 2 as a float (n <= 29: the error
   stays far below an ulp). Within 1 ulp; at batch 1 a step waits on it (twice in an
   LSTM), and this is shorter than -e/(2 + e) with e = expm1(-2|x|), as it was, and more
   accurate (1 ulp, not 2). */
RNNC_INLINE RNNC_REAL RNNC_F(rnnc_tanh)(RNNC_REAL x)
{
    const RNNC_REAL a = RNNC_F(fabs)(x), a2 = a * a, a4 = a2 * a2;
    const RNNC_REAL P = ((RNNC_TC(3) + a2 * RNNC_TC(5)) + a4 * (RNNC_TC(7) + a2 * RNNC_TC(9)))
        + (a4 * a4) * ((RNNC_TC(11) + a2 * RNNC_TC(13)) + a4 * (RNNC_TC(15) + a2 * RNNC_TC(17)));
    const RNNC_REAL small = a + (a * a2) * P;
    const RNNC_REAL y = 2 * (a < 10 ? a : 10);
    const RNNC_REAL n = (y * RNNC_FM_LOG2E + RNNC_FM_MAGIC) - RNNC_FM_MAGIC;
    const RNNC_REAL r = RNNC_F(fma)(-n, RNNC_FM_LN2, y);
    const RNNC_REAL E = RNNC_F(rnnc_exp_reduced)(r) * RNNC_F(rnnc_pow2i)((RNNC_INT)n);
    const RNNC_REAL big = 1 - 2 / (E + 1);
    const RNNC_REAL t = a < (RNNC_REAL)0.625 ? small : big;
    return x != x ? x : RNNC_F(copysign)(t, x);
}
#endif

/* log after fdlibm: x = 2^k m with m in [sqrt(2)/2, sqrt(2)), f = m - 1, s = f/(2 + f) and
   log m = f - f^2/2 + s (f^2/2 + R(s^2)), R fdlibm's minimax polynomial (the same seven
   coefficients serve float); k ln2 in two parts. Integer steps and ternaries only, so it
   vectorises; log1p(x) = log(1 + x) + the rounding of 1 + x divided by it. Lg1..Lg7 of
   fdlibm's e_log.c, as the shortest decimals that read back as the same doubles. */
#define RNNC_LG1 0.6666666666666735
#define RNNC_LG2 0.3999999999940942
#define RNNC_LG3 0.2857142874366239
#define RNNC_LG4 0.22222198432149784
#define RNNC_LG5 0.1818357216161805
#define RNNC_LG6 0.15313837699209373
#define RNNC_LG7 0.14798198605116586
/* log x: -inf at 0, NaN below 0 and for NaN, inf at inf; subnormals scaled first */
RNNC_INLINE RNNC_REAL RNNC_F(rnnc_log)(RNNC_REAL x)
{
    const int sub = x < RNNC_FM_MINNORM;
    const RNNC_REAL xs = sub ? x * RNNC_FM_SCALE : x;
    RNNC_INT ix;
    memcpy(&ix, &xs, sizeof ix);
    ix += (RNNC_INT)RNNC_FM_ONE - (RNNC_INT)RNNC_FM_SQRTH;
    const RNNC_INT k = (ix >> RNNC_FM_SH) - RNNC_FM_BIAS - (sub ? RNNC_FM_SCALEK : 0);
    ix = (ix & (RNNC_INT)RNNC_FM_MANT) + (RNNC_INT)RNNC_FM_SQRTH;
    RNNC_REAL m;
    memcpy(&m, &ix, sizeof m);
    const RNNC_REAL f = m - 1, s = f / (2 + f), z = s * s, w = z * z;
    const RNNC_REAL R = z * (RNNC_L(RNNC_LG1) + w * (RNNC_L(RNNC_LG3) + w * (RNNC_L(RNNC_LG5) + w * RNNC_L(RNNC_LG7))))
              + w * (RNNC_L(RNNC_LG2) + w * (RNNC_L(RNNC_LG4) + w * RNNC_L(RNNC_LG6)));
    const RNNC_REAL hfsq = (RNNC_REAL)0.5 * f * f, dk = (RNNC_REAL)k;
    const RNNC_REAL y = s * (hfsq + R) + dk * RNNC_FM_LN2LO - hfsq + f + dk * RNNC_FM_LN2HI;
    return (x > 0) & (x <= RNNC_FM_MAXV) ? y : (x == 0 ? -INFINITY : (x > 0 ? x : NAN));
}
/* log(1 + x): the rounding of u = 1 + x corrected by (x - (u - 1)) / u; -inf at -1 */
RNNC_INLINE RNNC_REAL RNNC_F(rnnc_log1p)(RNNC_REAL x)
{
    const RNNC_REAL u = 1 + x;
    const RNNC_REAL c = (u > 0) & (u != 1) & (u <= RNNC_FM_MAXV) ? (x - (u - 1)) / u : 0;
    const RNNC_REAL y = u == 1 ? x : RNNC_F(rnnc_log)(u) + c;
    return x != x ? x : y;
}
