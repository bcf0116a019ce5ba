"""The per-step products of the JIT kernels: a register-blocked GEMM over weights packed
once per call into panels (../csrc/microkernel.c, GCC vector extensions).

OpenBLAS packs both operands on every call; inside the time loop that is the same weight
matrix T times, and at B=32 it costs a third of the product. The microkernel packs the
weights once, into panels of two vectors' width, and keeps A's rows and a panel in L1 and
the accumulators in registers. Measured on one core at (32 x 512 x 128): ~95 GFLOP/s
against OpenBLAS's ~65. Exported kernels (portable C99) use plain loops or CBLAS instead.
"""
from __future__ import annotations

# Panel widths are fixed by the ISA at compile time (-march=native); regions are sized for
# the widest (AVX-512: 2 x 16 floats, 2 x 8 doubles), so offsets are known here. The C
# gets it as MK_NR_MAX and refuses (#error) a wider panel.
NR_MAX = {"float": 32, "double": 16}


def panel_size(rows, cols, ctype):
    """Scalars of the panels packed from a (rows x cols) matrix for C += A W^T: rows
    rounded up to the widest panel, times cols."""
    nr = NR_MAX[ctype]
    return -(-rows // nr) * nr * cols
