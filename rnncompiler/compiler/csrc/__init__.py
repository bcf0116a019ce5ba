"""The fixed C every kernel uses, as C files shipped with the package: the real type
(real.h), the elementwise helpers (inline.h, fastmath.h, nan_keeping.h), the GEMM helpers
(gemm.h, gemm.c), the microkernel (microkernel.c; microkernel_portable.c in plain C99
for exported kernels) and backward's padding guard
(padding.c). They are compiled as they are: the real type and the flavour are chosen by
the preprocessor, from a few #defines pasted before them (`real`, `defines`)."""
from __future__ import annotations

import functools
from importlib import resources

FILES = ("real.h", "inline.h", "fastmath.h", "nan_keeping.h", "gemm.h", "gemm.c",
         "microkernel.c", "microkernel_portable.c", "padding.c")


@functools.lru_cache(maxsize=None)
def source(name):
    """The text of one of FILES, without its last newline (the kernels join parts by lines)."""
    if name not in FILES:
        raise ValueError("name: expected one of %s, got %r" % (list(FILES), name))
    return resources.files(__name__).joinpath(name).read_text(encoding="utf-8").rstrip("\n")


def defines(**values):
    """#define lines, one a value, in the order given: defines(RNNC_BLAS=2)."""
    return "\n".join("#define %s %s" % (k, v) for k, v in values.items())


def real(dtype):
    """RNNC_REAL and its names for dtype ("float32" or "float64"): RNNC_DOUBLE, then real.h
    (the runtime object pastes this once per type, hence the #undef)."""
    if dtype not in ("float32", "float64"):
        raise ValueError("dtype: expected 'float32' or 'float64', got %r" % (dtype,))
    return "#undef RNNC_DOUBLE\n%s\n%s" % (defines(RNNC_DOUBLE=int(dtype == "float64")),
                                         source("real.h"))
