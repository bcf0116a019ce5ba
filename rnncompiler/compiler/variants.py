"""What the microkernel can be on this core, and what a kernel was tuned to: the
variants of csrc/microkernel.c the ISA runs (vector bytes, rows per register block) and
the `Tuning` record the generator follows (tuning.py measures it once per machine).
Plain data, no compiler: codegen and the pipeline both read it."""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """One shape of the microkernel: vector bytes and rows of A per register block."""
    vbytes: int
    mr: int

    @property
    def name(self):
        return "w%dr%d" % (self.vbytes, self.mr)


def core_name():
    """The core's name, family and model (/proc/cpuinfo), for people reading the table."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    break
                info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    name = info.get("model name", "unknown core")
    if "cpu family" in info:
        name += " (family %s model %s)" % (info["cpu family"], info.get("model", "?"))
    return name


@functools.lru_cache(maxsize=None)
def cpu_flags():
    """The CPU's feature flags (/proc/cpuinfo), empty where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def variants(flags=None):
    """The variants this core runs natively (the runtime object is built -march=native),
    the ISA's default shape first: with AVX-512, 512-bit vectors and 256-bit ones (which
    cores with 256-bit datapaths may run as fast, at a lower clock penalty), both in
    blocks of 8 rows (32 vector registers hold their 16 accumulators); with AVX, 256-bit
    in blocks of 4 (16 registers); else 128-bit."""
    flags = cpu_flags() if flags is None else flags
    if "avx512f" in flags and "avx512vl" in flags:
        return (Variant(64, 8), Variant(32, 8))
    if "avx" in flags:
        return (Variant(32, 4),)
    return (Variant(16, 4),)


def variant_named(name, flags=None):
    """The variant of this core called `name`; ValueError naming the ones it has."""
    for v in variants(flags):
        if v.name == name:
            return v
    raise ValueError("microkernel variant: expected one of %s on this core, got %r"
                     % (", ".join(v.name for v in variants(flags)), name))


# OpenBLAS's kernel sets (OPENBLAS_CORETYPE names) and the flags each needs to run
OPENBLAS_CORES = (
    ("SkylakeX", {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl"}),
    ("Cooperlake", {"avx512f", "avx512cd", "avx512bw", "avx512dq", "avx512vl", "avx512_bf16"}),
    ("Haswell", {"avx2", "fma"}),
)


def openblas_cores(flags=None):
    """The OpenBLAS kernel sets this core can run, as OPENBLAS_CORETYPE names: candidates
    for the tuning run beside OpenBLAS's own pick, which comes from a table of known cores
    and can miss a newer one (a core with 512-bit datapaths run on its AVX2 kernels)."""
    flags = cpu_flags() if flags is None else flags
    return tuple(name for name, needs in OPENBLAS_CORES if needs <= flags)


def _nearest_choice(grid, N, K):
    """The choice at the grid point ((N, K, choice), ...) nearest to (N, K) in log2."""
    def distance(point):
        return math.log2(point[0] / N) ** 2 + math.log2(point[1] / K) ** 2
    return bool(min(grid, key=distance)[2])


@dataclass(frozen=True)
class Tuning:
    """What a JIT kernel's products use on this core: the microkernel variant (None: the
    ISA's default shape); per hoisted product shape measured, whether the microkernel
    beats OpenBLAS: ((N, K, True/False), ...) over a grid, the nearest point deciding; the
    same for the weight gradients after a chunk (`tn`: dW (N x K) += dG^T v); and
    OpenBLAS's kernel set for the process (an OPENBLAS_CORETYPE name; "" lets OpenBLAS
    pick), which build.load_openblas applies when it loads the library."""
    variant: str | None = None
    hoisted: tuple = ()
    source: str = "default"          # "measured", "RNNC_TUNING" or "default"
    blas_core: str = ""
    tn: tuple = ()

    def hoisted_microkernel(self, N, K):
        """Whether the hoisted product with N output columns and K inputs uses the
        microkernel: the choice at the grid point nearest in log2(N), log2(K)."""
        return bool(self.hoisted) and _nearest_choice(self.hoisted, N, K)

    def tn_microkernel(self, N, K):
        """Whether the weight gradient of an (N x K) weight uses the microkernel's
        mk_gemm_tn (the nearest grid point's choice) rather than OpenBLAS."""
        return bool(self.tn) and _nearest_choice(self.tn, N, K)

    def key(self):
        """What of the tuning shapes the generated C or the bits it computes, for the
        kernel cache key."""
        return [self.variant, [list(p) for p in self.hoisted], self.blas_core,
                [list(p) for p in self.tn]]


DEFAULT = Tuning()
