/* What keeps padded rows out of backward's GEMMs after each chunk: their adjoints are 0,
   but 0 * NaN (or inf) is NaN, so an operand's padded rows are read as 0 there. Needs
   real.h. */

/* whether some row is past its length before step t1 */
static int chunk_has_padding(int t1, int B, const int *lengths)
{
    for (int b = 0; b < B; ++b) if (lengths[b] < t1) return 1;
    return 0;
}

/* rows of steps t0..t0+tc-1 of an operand (row stride ld) copied densely to dst (tc*B x w),
   those past their length as 0 */
static const RNNC_REAL *valid_rows(int t0, int tc, int B, const int *lengths, const RNNC_REAL *src,
        ptrdiff_t ld, ptrdiff_t w, RNNC_REAL *restrict dst)
{
    for (ptrdiff_t i = 0; i < tc; ++i) for (ptrdiff_t b = 0; b < B; ++b) {
        const RNNC_REAL *s = src + (i * B + b) * ld;
        RNNC_REAL *d = dst + (i * B + b) * w;
        if (t0 + i < lengths[b]) memcpy(d, s, sizeof(RNNC_REAL) * (size_t)w);
        else memset(d, 0, sizeof(RNNC_REAL) * (size_t)w);
    }
    return dst;
}
