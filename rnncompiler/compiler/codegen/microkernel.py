"""The per-step products of the JIT kernels: a register-blocked GEMM over weights packed
once per call into panels (../csrc/microkernel.c, GCC vector extensions).

OpenBLAS packs both operands on every call; inside the time loop that is the same weight
matrix T times, and at B=32 it costs a third of the product. The microkernel packs the
weights once, into panels of two vectors' width, and keeps A's rows and a panel in L1 and
the accumulators in registers. Measured on one core at (32 x 512 x 128): ~95 GFLOP/s
against OpenBLAS's ~65. Exported kernels (portable C99) use plain loops or CBLAS instead.

Its vector width and rows per block are variants (../variants.py): the runtime
object holds every variant the core can run, and an autotuning run picks one per machine,
with the path of each hoisted product (OpenBLAS or the microkernel), as a `Tuning` the
generator follows.
"""
from __future__ import annotations

from .. import csrc
from ..variants import variants

# Panels are sized for the widest (AVX-512: 2 x 16 floats, 2 x 8 doubles), so offsets are
# known here whatever the variant. The C gets it as MK_NR_MAX and refuses (#error) a
# wider panel.
NR_MAX = {"float": 32, "double": 16}


def panel_size(rows, cols, ctype):
    """Scalars of the panels packed from a (rows x cols) matrix for C += A W^T: rows
    rounded up to the widest panel, times cols."""
    nr = NR_MAX[ctype]
    return -(-rows // nr) * nr * cols


def symbol(name, ctype, variant=None):
    """A microkernel function's C name: rnnc_s_mk_gemm, or rnnc_s_mk_gemm_w32r8 for a variant."""
    base = "rnnc_%s_%s" % ("s" if ctype == "float" else "d", name)
    return base if variant is None else "%s_%s" % (base, variant)


def variant_c(variant, ctype):
    """The microkernel's C as one variant: its shape and names chosen before the file
    (pasted once per variant and real type into the runtime object)."""
    return "\n".join([
        csrc.defines(MK_NR_MAX=NR_MAX[ctype], MK_VBYTES=variant.vbytes, MK_MR=variant.mr),
        "#define MK_FN(name) rnnc_%s_##name##_%s" % ("s" if ctype == "float" else "d",
                                                   variant.name),
        csrc.source("microkernel.c")])


def prototypes(variant, ctype):
    """The declarations of one variant's functions, for a kernel that links them."""
    r = ctype
    return "\n".join([
        "__attribute__((visibility(\"hidden\"))) void %s(ptrdiff_t N, ptrdiff_t K, const %s *W, "
        "ptrdiff_t ldw, %s *P);" % (symbol(n, ctype, variant), r, r) for n in ("mk_pack_nt", "mk_pack_nn")] + [
        "__attribute__((visibility(\"hidden\"))) void %s(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, "
        "const %s *A, ptrdiff_t lda, const %s *P, const %s *bias, int beta, %s *C, ptrdiff_t ldc);"
        % (symbol(n, ctype, variant), r, r, r, r) for n in ("mk_gemm", "mk_gemm_rows")] + [
        "__attribute__((visibility(\"hidden\"))) void %s(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, "
        "const %s *A, ptrdiff_t lda, const %s *B, ptrdiff_t ldb, %s *C, ptrdiff_t ldc);"
        % (symbol("mk_gemm_tn", ctype, variant), r, r, r),
        "__attribute__((visibility(\"hidden\"))) void %s(int threads, ptrdiff_t M, ptrdiff_t N, "
        "ptrdiff_t K, const %s *A, ptrdiff_t lda, const %s *B, ptrdiff_t ldb, %s *C, ptrdiff_t ldc);"
        % (symbol("mk_gemm_tn_big", ctype, variant), r, r, r)])


def default_names_c(ctype):
    """The microkernel's default names in the runtime object, calling the ISA's default
    variant (a kernel that is not tuned calls these)."""
    v, r = variants()[0].name, ctype
    return "\n".join([
        "RNNC_API void %s(ptrdiff_t N, ptrdiff_t K, const %s *W, ptrdiff_t ldw, %s *P)\n"
        "{ %s(N, K, W, ldw, P); }" % (symbol(n, r), r, r, symbol(n, r, v))
        for n in ("mk_pack_nt", "mk_pack_nn")] + [
        "RNNC_API void %s(ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, const %s *A, ptrdiff_t lda,\n"
        "    const %s *P, const %s *bias, int beta, %s *C, ptrdiff_t ldc)\n"
        "{ %s(M, N, K, A, lda, P, bias, beta, C, ldc); }"
        % (symbol(n, r), r, r, r, r, symbol(n, r, v)) for n in ("mk_gemm", "mk_gemm_rows")])
