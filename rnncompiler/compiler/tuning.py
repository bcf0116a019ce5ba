"""Kernels tuned to the core they run on: a short autotuning run, once per machine, that
times the microkernel's variants (vector width, rows per block) on per-step product
shapes, OpenBLAS under each kernel set the core can run (OPENBLAS_CORETYPE), and the
chosen variant against the fastest OpenBLAS on hoisted product shapes (each followed by
a chunk's per-step products, as in a kernel), and keeps the measurement in the kernel
cache beside the runtime object, named after the machine's identity.

Why measure: the ISA does not tell the datapath. Cores with AVX-512 run 512-bit vectors
on 512-bit units (Intel's server cores, AMD family 26) or on 256-bit ones (AMD family 25),
and OpenBLAS picks its kernels from a table of the cores it knows: on a core newer than
its table it may run its AVX2 kernels at half the core's rate. The choice shapes the
generated C (which function each product calls) and the library's kernels, so it is part
of the kernel cache key; a kernel is bitwise deterministic for a given tuning. $RNNC_TUNING
overrides it: "default" (the ISA's shape, every hoisted product on OpenBLAS, OpenBLAS's own
kernels), or VARIANT[:blas|:microkernel] (e.g. "w32r8:blas").
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import subprocess

from . import build, csrc
from ..errors import CompileError
from .variants import DEFAULT, Tuning, core_name, openblas_cores, variant_named, variants

# per-step products (batch rows, outputs, inputs): a batch of 1 and of 32 at LSTM shapes
STEP_SHAPES = ((1, 512, 128), (8, 512, 128), (32, 128, 32), (32, 512, 128), (32, 2048, 512))
# hoisted products over a chunk of rows: the grid the choice per (N, K) is read from
HOISTED_ROWS = 2048     # a chunk: 64 steps of 32 rows, or 2048 steps of one
STEP_ROWS = 32          # the batch of the steps that follow it when measured
HOISTED_GRID = tuple((n, k) for n in (128, 512, 2048) for k in (32, 128, 512))
DTYPES = (("float32", "float"), ("float64", "double"))
VERSION = 6          # of the measurement: a new one discards the old results
MARGIN = 0.03        # a choice other than the default wins by this much, or not at all
# a hoisted product moves to the microkernel only if it wins by this much: on an AMD
# family 25 core it won by 11% at (2048 x 128 x 32) here, steps included, yet the LSTM at
# H=32 whose product that is ran 3-6% slower with it (and 2-4% at H=128, 512): what the
# loop loses to it in the caches is more than a measurement apart shows
HOISTED_MARGIN = 0.15



DRIVER = r"""
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
%(declarations)s
static double now(void) { struct timespec s; clock_gettime(CLOCK_MONOTONIC, &s); return s.tv_sec + 1e-9 * s.tv_nsec; }
%(timers)s
char *scipy_openblas_get_corename(void);
/* stdout: OpenBLAS's kernel set; then for the lines "dtype path M N K S step" of stdin,
   the best of a few runs, in seconds, a line each: path blas or a variant, the product
   (M x N) = (M x K) W^T; tn_blas or tn_VARIANT, the weight gradient (N x K) += G^T A over
   M rows. S > 0: after the product, M / S steps of an (S x N x K) product by another
   weight on the microkernel variant `step`, as a kernel's loop follows its hoisted product
   (what one evicts from the caches the other pays for) */
int main(void)
{
    char dtype[16], path[16], step[16];
    long M, N, K, S;
    printf("%%s\n", scipy_openblas_get_corename());
    while (scanf("%%15s %%15s %%ld %%ld %%ld %%ld %%15s", dtype, path, &M, &N, &K, &S, step) == 7) {
        double t = strcmp(dtype, "float32") == 0 ? time_float(path, M, N, K, S, step)
                                                 : time_double(path, M, N, K, S, step);
        printf("%%.9g\n", t);
        fflush(stdout);
    }
    return 0;
}
"""

TIMER = r"""
static double time_%(r)s(const char *path, long M, long N, long K, long S, const char *step)
{
    %(r)s *A = malloc(sizeof(%(r)s) * M * K), *W = malloc(sizeof(%(r)s) * N * K);
    %(r)s *P = malloc(sizeof(%(r)s) * ((N + %(nr)d - 1) / %(nr)d) * %(nr)d * K), *C = malloc(sizeof(%(r)s) * M * N);
    %(r)s *P2 = malloc(sizeof(%(r)s) * ((N + %(nr)d - 1) / %(nr)d) * %(nr)d * K);
    %(r)s *A2 = malloc(sizeof(%(r)s) * (S + 1) * K), *C2 = malloc(sizeof(%(r)s) * (S + 1) * N);
    %(r)s *G = malloc(sizeof(%(r)s) * M * N), *C3 = calloc((size_t)N * K, sizeof(%(r)s));
    double best = 1e30;
    if (!A || !W || !P || !C || !P2 || !A2 || !C2 || !G || !C3) best = -1;
    for (long i = 0; best > 0 && i < M * K; ++i) A[i] = (%(r)s)((i * 7919 %% 2001) - 1000) / 1000;
    for (long i = 0; best > 0 && i < N * K; ++i) W[i] = (%(r)s)((i * 104729 %% 2001) - 1000) / 1000;
    for (long i = 0; best > 0 && i < S * K; ++i) A2[i] = (%(r)s)((i * 31 %% 2001) - 1000) / 1000;
    for (long i = 0; best > 0 && i < M * N; ++i) G[i] = (%(r)s)((i * 17 %% 2001) - 1000) / 1000;
    if (best > 0) {
        %(pack)s
        %(pack2)s
    }
    /* repeat until 10 ms or 100 runs have been timed, the first run a warm-up */
    double spent = 0;
    for (int rep = 0; best > 0 && rep < 101 && spent < 0.01; ++rep) {
        const double t0 = now();
        if (0) {}
        %(calls)s
        else { best = -1; break; }
        for (long s = 0; S > 0 && s < M / S; ++s) {
            if (0) {}
            %(steps)s
            else { best = -1; break; }
        }
        const double dt = now() - t0;
        if (rep) { spent += dt; if (dt < best) best = dt; }
    }
    free(A); free(W); free(P); free(C); free(P2); free(A2); free(C2); free(G); free(C3);
    return best;
}
"""


def _driver_c():
    """The timing program: the runtime object's products, one timer per real type."""
    from .codegen import helpers
    from .codegen.microkernel import prototypes, symbol
    decls, timers = [], []
    for dtype, r in DTYPES:
        decls.append("void %s(int kind, int threads, int beta, ptrdiff_t M, ptrdiff_t N, ptrdiff_t K, "
                     "const %s *A, ptrdiff_t lda, const %s *Bm, ptrdiff_t ldb, %s *C, ptrdiff_t ldc);"
                     % (helpers.typed("gemm_big", r), r, r, r))
        pack, calls = [], ['else if (strcmp(path, "blas") == 0) %s(0, 1, 0, M, N, K, A, K, W, K, C, N);'
                           % helpers.typed("gemm_big", r),
                           'else if (strcmp(path, "tn_blas") == 0) %s(2, 1, 1, N, K, M, G, N, A, K, C3, K);'
                           % helpers.typed("gemm_big", r)]
        pack2, steps = [], []
        for v in variants():
            decls.append(prototypes(v.name, r).replace('__attribute__((visibility("hidden"))) ', ""))
            pack.append('if (strcmp(path, "%s") == 0) %s(N, K, W, K, P);'
                        % (v.name, symbol("mk_pack_nt", r, v.name)))
            calls.append('else if (strcmp(path, "%s") == 0) %s(M, N, K, A, K, P, NULL, 0, C, N);'
                         % (v.name, symbol("mk_gemm_rows", r, v.name)))
            calls.append('else if (strcmp(path, "tn_%s") == 0) %s(N, K, M, G, N, A, K, C3, K);'
                         % (v.name, symbol("mk_gemm_tn", r, v.name)))
            pack2.append('if (strcmp(step, "%s") == 0) %s(N, K, W, K, P2);'
                         % (v.name, symbol("mk_pack_nt", r, v.name)))
            steps.append('else if (strcmp(step, "%s") == 0) %s(S, N, K, A2, K, P2, NULL, 1, C2, N);'
                         % (v.name, symbol("mk_gemm", r, v.name)))
        timers.append(TIMER % {"r": r, "nr": 32 if r == "float" else 16,
                               "pack": "\n        ".join(pack), "calls": "\n        ".join(calls),
                               "pack2": "\n        ".join(pack2),
                               "steps": "\n            ".join(steps)})
    return DRIVER % {"declarations": "#include <stddef.h>\n" + "\n".join(decls),
                     "timers": "\n".join(timers)}


def _identity():
    """What the measurement depends on: the machine, and the C of what it times."""
    timed = "".join(csrc.source(f) for f in ("gemm.h", "gemm.c", "microkernel.c"))
    return {"machine": build.machine_identity(), "version": VERSION,
            "variants": [v.name for v in variants()],
            "c": hashlib.sha256(timed.encode()).hexdigest()[:16]}


def table_path(root=None):
    """Where this machine's measurement is kept: the cache root, named after its identity."""
    ident = json.dumps(_identity(), sort_keys=True)
    return os.path.join(root or build.cache_root(),
                        "tuning-%s.json" % hashlib.sha256(ident.encode()).hexdigest()[:40])


def measure():
    """Time every path on every shape: {dtype: {"step": {variant: [s...]}, "hoisted":
    {path: [s...]}, "tn": {path: [s...]}}, "openblas": {"chosen": name, "cores": {name:
    {"runs": kernels, dtype: [s...]}}}}, shapes in the order of STEP_SHAPES and
    HOISTED_GRID. The per-step shapes first; then the hoisted shapes on OpenBLAS under
    each kernel set it can run here (its own pick first), and on the variant chosen for
    the steps, each followed by a chunk's steps on that variant (in a kernel the hoisted
    product and the loop share the caches: a product faster alone can make the loop after
    it slower); then the weight gradients over a chunk's rows ("tn") on OpenBLAS and on
    that variant. "blas" is OpenBLAS under the kernel set chosen."""
    names = [v.name for v in variants()]
    out = {dtype: {"step": {}, "hoisted": {}, "tn": {}} for dtype, _ in DTYPES}
    with _driver() as run:
        jobs = [(dtype, v, shape) for dtype, _ in DTYPES for v in names for shape in STEP_SHAPES]
        _, times = run([(dtype, v) + shape + (0, v) for dtype, v, shape in jobs])
        for (dtype, v, _), t in zip(jobs, times, strict=True):
            out[dtype]["step"].setdefault(v, []).append(t)
        chosen = {dtype: _step_variant(out[dtype]["step"]) for dtype, _ in DTYPES}

        def grid(path_of, core, rows_after):
            """(kernel set run, {dtype: [s...]}) of path_of(dtype) over HOISTED_GRID."""
            lines = [(dtype, path_of(dtype), HOISTED_ROWS) + nk + (rows_after, chosen[dtype])
                     for dtype, _ in DTYPES for nk in HOISTED_GRID]
            runs, times = run(lines, core)
            n = len(HOISTED_GRID)
            return runs, {dtype: times[i * n:(i + 1) * n] for i, (dtype, _) in enumerate(DTYPES)}

        cores = {}
        for core in ("",) + openblas_cores():
            runs, times = grid(lambda dtype: "blas", core, STEP_ROWS)
            if all(c["runs"] != runs for c in cores.values()):     # a set already timed
                cores[core] = dict(times, runs=runs)
        blas_core = _blas_core(cores)
        mine = grid(chosen.get, blas_core, STEP_ROWS)[1]
        tn_blas = grid(lambda dtype: "tn_blas", blas_core, 0)[1]
        tn_mine = grid(lambda dtype: "tn_" + chosen[dtype], blas_core, 0)[1]
        for dtype, _ in DTYPES:
            out[dtype]["hoisted"] = {"blas": cores[blas_core][dtype], chosen[dtype]: mine[dtype]}
            out[dtype]["tn"] = {"blas": tn_blas[dtype], chosen[dtype]: tn_mine[dtype]}
    out["openblas"] = {"chosen": blas_core, "cores": cores}
    return out


def _run_driver(lines, core=""):
    """(OpenBLAS's kernel set, seconds per line "dtype path M N K S step") from the timing
    program, built here."""
    with _driver() as run:
        return run(lines, core)


@contextlib.contextmanager
def _driver():
    """The timing program, built in a build directory of the cache: yields run(lines,
    core="") -> (the OpenBLAS kernel set it ran, seconds per line), under OpenBLAS's own
    pick of kernels or the set named `core`; CompileError when it cannot be built or run."""
    from .codegen import helpers
    root = build.cache_root()
    objs = build.runtime_objects(helpers.runtime_units())
    tmp = build.new_build_dir(root)
    try:
        c_file, exe = os.path.join(tmp, "tune.c"), os.path.join(tmp, "tune")
        with open(c_file, "w") as f:
            f.write(_driver_c())
        build.run_compiler(build.executable_command(c_file, exe, objs), c_file)

        def run(lines, core=""):
            env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
            env["OPENBLAS_NUM_THREADS"] = "1"
            if core:
                env["OPENBLAS_CORETYPE"] = core
            try:
                out = subprocess.run([exe], input="\n".join("%s %s %d %d %d %d %s" % ln
                                                             for ln in lines) + "\n",
                                     capture_output=True, text=True, check=True, timeout=300,
                                     env=env).stdout
            except (OSError, subprocess.SubprocessError) as exc:
                raise CompileError("the tuning run failed: %s" % exc) from None
            runs, _, rest = out.partition("\n")
            try:
                times = [float(t) for t in rest.split()]
            except ValueError:
                times = []
            if len(times) != len(lines) or (times and min(times) <= 0):
                raise CompileError("the tuning run timed %d of %d products" % (len(times), len(lines)))
            return runs.strip(), times
        yield run
    finally:
        build.remove_build_dir(tmp)


def _relative_scores(times):
    """{name: sum over shapes of its time / the best time of that shape}: no shape weighs
    more for being bigger."""
    best = [min(ts) for ts in zip(*times.values(), strict=True)]
    return {name: sum(t / b for t, b in zip(ts, best, strict=True)) for name, ts in times.items()}


def _fastest(times, default, margin):
    """The name with the least relative time (_relative_scores); another than `default`
    must win by `margin`: a tie within the noise keeps the default."""
    score = _relative_scores(times)
    best = min(score, key=score.get)
    return default if score[best] * (1 + margin) > score[default] else best


def _blas_core(cores, margin=MARGIN):
    """The OpenBLAS kernel set with the least time over the hoisted shapes of both real
    types; one other than OpenBLAS's own pick ("") must win by `margin`."""
    return _fastest({core: sum((c[dtype] for dtype, _ in DTYPES), []) for core, c in cores.items()},
                    "", margin)


def _step_variant(step, margin=MARGIN):
    """The variant with the least total time over the per-step shapes; another than the
    ISA's default must win by `margin`."""
    return _fastest(step, variants()[0].name, margin)


def decide(measured, margin=MARGIN, hoisted_margin=HOISTED_MARGIN):
    """{dtype: Tuning} from the measurement: the per-step variant (_step_variant), then per
    hoisted grid point whether that variant, followed by a chunk's steps, beats OpenBLAS
    (under the kernel set chosen) followed by the same steps, by `hoisted_margin`; and
    likewise for the weight gradients (mk_gemm_tn against OpenBLAS's TN product)."""
    out = {}
    blas_core = measured.get("openblas", {}).get("chosen", "")
    for dtype, _ in DTYPES:
        m = measured.get(dtype)
        if m is None:
            continue
        variant = _step_variant(m["step"], margin)
        out[dtype] = Tuning(variant, _grid_choice(m["hoisted"], variant, hoisted_margin),
                            "measured", blas_core, _grid_choice(m.get("tn", {}), variant, hoisted_margin))
    return out


def _grid_choice(times, variant, margin):
    """((N, K, the microkernel is faster than OpenBLAS by `margin`), ...) over
    HOISTED_GRID, from {path: [s...]}: all OpenBLAS when the variant was not measured,
    () when OpenBLAS was not."""
    mine, blas = times.get(variant), times.get("blas")
    if mine is None or blas is None:
        return tuple((n, k, False) for n, k in HOISTED_GRID) if blas is not None else ()
    return tuple((n, k, bool(mk * (1 + margin) < b))
                 for (n, k), mk, b in zip(HOISTED_GRID, mine, blas, strict=True))


def load_table(path):
    """The measurement kept at path, if it was made for this machine and this C."""
    try:
        with open(path) as f:
            data = json.load(f)
        if data.get("identity") == json.loads(json.dumps(_identity())):
            return data
    except (OSError, ValueError):
        pass
    return None


def machine_table():
    """This machine's measurement and choices, measured now if the cache has none (one
    process measures, others wait for its table)."""
    path = table_path()
    data = load_table(path)
    if data is not None:
        return data
    root, name = os.path.split(path)
    with build.locked(root, name[:-len(".json")]):
        data = load_table(path)
        if data is None:
            data = {"identity": _identity(), "core": core_name(), "measured": measure()}
            build.write_entry_file(root, name, json.dumps(data, indent=1, sort_keys=True))
    return data


def for_kernel(dtype, opt_level):
    """The Tuning a JIT kernel of dtype built at -O`opt_level` follows: $RNNC_TUNING's at
    any level; else this machine's where speed is asked for (-O2, -O3), the default shape
    for a -O0/-O1 build (correctness only: it never waits for a measurement)."""
    if os.environ.get("RNNC_TUNING", "").strip() or opt_level >= 2:
        return for_dtype(dtype)
    return DEFAULT


def for_dtype(dtype):
    """The Tuning a JIT kernel of dtype follows: $RNNC_TUNING's, else this machine's; the
    default when the run cannot be made (no working compiler: the kernel's own build then
    says why)."""
    forced = os.environ.get("RNNC_TUNING", "").strip()
    if forced:
        return parse(forced)
    try:
        table = machine_table()
    except CompileError:
        return DEFAULT
    return decide(table["measured"])[dtype]


def parse(text):
    """A Tuning from $RNNC_TUNING: "default", or VARIANT[:blas|:microkernel]."""
    if text == "default":
        return DEFAULT
    name, _, path = text.partition(":")
    try:
        variant_named(name)
    except ValueError as exc:
        raise ValueError("RNNC_TUNING: expected 'default' or VARIANT[:blas|:microkernel]; %s"
                         % exc) from None
    if path not in ("", "blas", "microkernel"):
        raise ValueError("RNNC_TUNING: expected 'blas' or 'microkernel' after the variant, got %r"
                         % path)
    grid = tuple((n, k, path == "microkernel") for n, k in HOISTED_GRID)
    return Tuning(name, grid, "RNNC_TUNING", "", grid)
