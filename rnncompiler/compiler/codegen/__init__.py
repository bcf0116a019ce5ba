"""Lowering to C: the forward and backward step graphs become one C file with the whole
time loop inside (API section 5's ABI: PREFIX_forward / PREFIX_backward over a
caller-provided workspace). The cffi kernels and the exported kernels share this generator.

Workspace, in order: packed weights; the state history (one array per state, T+1 slots);
the value arrays (T slots when taped); then for backward the packed weight gradients,
one step of adjoints, a chunk of bundle adjoints and the carried state adjoints.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .. import csrc, mathfn
from ..autodiff import EwGrad, ConcatGrad, ReduceGrad, SliceGrad
from ..ops import Y
from .elementwise import forward_loop, backward_loop, comment, ref, label
from .layout import plan_layout, Layout, CHUNK, CHUNK_ROWS, SCALAR_BYTES
from . import constants
from . import linear
from . import helpers
from ..variants import DEFAULT as DEFAULT_TUNING

__all__ = ["CSource", "render_c", "with_batch1_unit", "kept_source", "plan_layout", "Layout"]


@dataclass(frozen=True)
class CSource:
    """Generated C: the text, the cdef of its functions, and the buffer layout."""
    text: str
    cdef: str
    layout: Layout
    prefix: str
    dtype: str
    blas: object
    runtime: bool = False      # links the runtime object (helpers are only declared)
    units: tuple = ()          # the text split into translation units for a parallel build
    runtime_source: tuple = ()  # the runtime object's C units when it links it (helpers.runtime_units)
    batch1: bool = False       # a unit of its own infers at batch 1 (with_batch1_unit)


SIGNATURES = """\
size_t {p}_param_count(void);
size_t {p}_input_size(void);
size_t {p}_state_size(void);
size_t {p}_output_size(void);
size_t {p}_workspace_size(int T, int B);
size_t {p}_infer_workspace_size(int T, int B);
int {p}_forward(int T, int B, const {r} *params, const {r} *x, const int *lengths,
                const {r} *state0, {r} *y, {r} *state_T, {r} *work);
int {p}_infer(int T, int B, const {r} *params, const {r} *x, const int *lengths,
              const {r} *state0, {r} *y, {r} *state_T, {r} *work);
int {p}_backward(int T, int B, const {r} *params, const {r} *x, const int *lengths,
                 const {r} *state0, {r} *work, const {r} *dy, const {r} *dstate_T,
                 {r} *dparams, {r} *dx, {r} *dstate0);
int {p}_run_forward(int T, int B, const {r} *params, const {r} *x, const int *lengths,
                    const {r} *state0, {r} *y, {r} *state_T, {r} *work, int keep, int threads);
int {p}_run_backward(int T, int B, const {r} *params, const {r} *x, const int *lengths,
                     const {r} *state0, {r} *work, const {r} *dy, const {r} *dstate_T,
                     {r} *dparams, {r} *dx, {r} *dstate0, {r} *dstates, int threads);
size_t {p}_step_workspace_size(void);
int {p}_pack(const {r} *params, {r} *work);
int {p}_step(const {r} *params, const {r} *x_t, const {r} *state_in, {r} *y_t,
             {r} *state_out, {r} *work);
int {p}_steps(int T, const {r} *params, const {r} *x, const {r} *state_in, {r} *y,
              {r} *state_out, {r} *work);
"""


def render_c(g, bwd, dtype="float64", *, prefix="rnnc", blas=False, fast_math=False,
             microkernel=False, runtime=False, tuning=DEFAULT_TUNING, forward_only=False):
    """C source for fused step graph g and its backward step bwd.

    blas: one of helpers.BLAS_FLAVOURS (True means "openblas"); fast_math: the
    vectorisable exp/tanh (else libm's); microkernel: per-step products by the
    vector-extension GEMM over packed panels (gcc/clang), "portable" by its plain C99
    twin (exported kernels), else by the GEMM helpers;
    runtime: the helpers are declared, to be linked from the runtime object (needs
    blas="openblas" and microkernel), else defined in the file; tuning: the microkernel
    variant and the hoisted products' paths measured on this core (runtime kernels only:
    a self-contained file has the default shape and no variants); forward_only: the
    backward pass is left out (a batch-1 unit's forward, with_batch1_unit).
    """
    blas = "openblas" if blas is True else blas
    if blas not in helpers.BLAS_FLAVOURS:
        raise ValueError("blas: expected one of %s, got %r" % (list(helpers.BLAS_FLAVOURS), blas))
    if runtime and not (blas == "openblas" and microkernel is True):
        raise ValueError("runtime: the runtime object holds the OpenBLAS helpers and the "
                         "microkernel; use blas='openblas', microkernel=True")
    ctype = "float" if dtype == "float32" else "double"
    if not runtime:
        tuning = DEFAULT_TUNING           # the file's own microkernel, in the default shape
    variant = tuning.variant
    hoisted = (True if microkernel == "portable" else
               (lambda N, K: tuning.hoisted_microkernel(N, K)) if microkernel else False)
    L = plan_layout(g, bwd, microkernel=ctype if microkernel else None,
                    hoisted_panels=hoisted, variant=variant)
    if variant is not None and tuning.tn:
        L = replace(L, tn_microkernel=tuning.tn_microkernel)
    if microkernel == "portable":
        L = replace(L, portable=True)
    # a JIT kernel with OpenBLAS links pthreads: its chunks may run on two threads, and
    # when no product reads a state (the steps are elementwise: a state-linear cell) a
    # chunk's products run alongside the steps of the one next to it
    threads = blas == "openblas"
    if threads and (L.bundles or L.static) and all(p.static for b in L.bundles for p in b.parts):
        L = replace(L, pipelined=True)
    printer = mathfn.CPrinter(dtype, fast=fast_math)
    common = [
        "/* Generated by rnncompiler: forward and backward (BPTT) of one recurrent cell. */",
        "#include <math.h>\n#include <stddef.h>\n#include <stdint.h>\n#include <string.h>",
        csrc.real(dtype),
        mathfn.c_helpers(dtype, fast=fast_math, prelude=False),
        helpers.gemm_c(ctype, blas, microkernel, runtime, variant),
        "#define VALID(b) (lengths == NULL || t < lengths[b])\n#define CHUNK %d\n#define CHUNK_ROWS %d"
        % (CHUNK, CHUNK_ROWS),
        "/* whole chunks of CHUNK_ROWS rows on one thread too: OpenBLAS's GEMMs want many rows;\n"
        "   the plain C products of an exported kernel keep a chunk of CHUNK steps in cache */\n"
        "#define BIG_CHUNKS %d" % (blas == "openblas"),
        "/* steps per chunk of the hoisted products, at most: CHUNK, or enough steps for\n"
        "   CHUNK_ROWS rows when the batch is small (work big enough to share between threads;\n"
        "   on one thread a chunk is CHUNK steps, whose values stay in cache), at most T */\n"
        "static int chunk_steps(int T, int B)\n"
        "{\n"
        "    const int steps = B < CHUNK_ROWS / CHUNK ? CHUNK_ROWS / B : CHUNK;\n"
        "    return T < steps ? T : steps;\n"
        "}",
        constants.render(L.consts),
    ] + (["#define BLOCKS %d\n#define BLOCK_ROWS %d\n%s" % (
        len(BLOCK_EDGES) - 1, BLOCK_ROWS, JOB_STRUCT.replace("{r}", ctype))] if threads else [])
    # exported kernels whose per-step weights stay in L1 infer at batch 1 a step at a time
    step_loop = microkernel == "portable" and weights_fit_l1(L, ctype)
    common.append(
        "/* the forward's elementwise loops: inlined where an exported kernel runs a step at\n"
        "   a time (LSTM at H = 8: 60 -> 55 ns a step; a gate's activation then overlaps the\n"
        "   chain of the one before, with no call between), else functions of their own */\n"
        "#define RNNC_EW %s" % ("RNNC_INLINE" if step_loop else "static"))
    shared = [_check_function(prefix), _state_io(L, ctype)]
    sizes = _size_functions(L, prefix)
    # ... and whose states fit a vector register of 64 bytes stream from state slots
    slot_step = step_loop and max(st[1] for st in L.states) * SCALAR_BYTES[ctype] <= SLOT_STEP_BYTES
    forward = _forward(g, L, printer, ctype, prefix, threads, step_loop, slot_step)
    backward = "" if forward_only else _backward(g, bwd, L, printer, ctype, prefix, threads)
    cdef = SIGNATURES.format(p=prefix, r=ctype)
    extra = []
    if runtime:
        # every runtime kernel declares the batch-1 unit's functions (one cffi wrapper for
        # all kernels of a real type); weak stand-ins where the kernel has no such unit
        cdef += BATCH1_SIGNATURES.format(p=prefix, r=ctype)
        extra.append(BATCH1_STANDINS.format(p=prefix, r=ctype))
    if blas == "openblas":
        extra.append("void %s_set_blas_threads(int n) { scipy_openblas_set_num_threads(n); }"
                     % prefix)
        cdef += "void %s_set_blas_threads(int n);\n" % prefix
    text = _join(common + [sizes] + shared + [forward, backward] + extra)
    # the same code as two translation units, forward and backward, that gcc compiles in
    # parallel; the second sees the first's functions through their prototypes
    units = (_join(common + [sizes] + shared + [forward] + extra),
             _join(common + ["/* defined with the forward pass */\n" + cdef] + shared + [backward]))
    return CSource(text, cdef, L, prefix, dtype, blas, runtime, units,
                   helpers.runtime_units(tuning.variant is not None, dtype) if runtime else ())


def weights_fit_l1(L, ctype):
    """Whether the weights of every product (STEP_LOOP_BYTES at most) stay in L1 from step
    to step: inference at batch 1 then runs a step at a time."""
    return STEP_LOOP_BYTES >= sum(
        b.width * p.width for b in L.bundles for p in b.parts) * SCALAR_BYTES[ctype]


# the kept text of a kernel with a batch-1 unit: the kernel's text, this line, the unit's
UNIT_BREAK = "\n/* ==== a translation unit of its own from here: inference at batch 1 ==== */\n"

BATCH1_SIGNATURES = """\
size_t {p}_b1_infer_workspace_size(int T, int B);
int {p}_b1_infer(int T, int B, const {r} *params, const {r} *x, const int *lengths,
                 const {r} *state0, {r} *y, {r} *state_T, {r} *work);
size_t {p}_b1_step_workspace_size(void);
int {p}_b1_pack(const {r} *params, {r} *work);
int {p}_b1_step(const {r} *params, const {r} *x_t, const {r} *state_in, {r} *y_t,
                {r} *state_out, {r} *work);
int {p}_b1_steps(int T, const {r} *params, const {r} *x, const {r} *state_in, {r} *y,
                 {r} *state_out, {r} *work);
"""

BATCH1_STANDINS = """\
/* a kernel without a batch-1 unit (with_batch1_unit): these stand in for its functions,
   which the cffi wrapper of every kernel declares; the runtime never calls them (its
   manifest says batch1: false), and they refuse (code 6) if it did */
__attribute__((weak)) size_t {p}_b1_infer_workspace_size(int T, int B) {{ (void)T; (void)B; return 0; }}
__attribute__((weak)) int {p}_b1_infer(int T, int B, const {r} *params, const {r} *x,
    const int *lengths, const {r} *state0, {r} *y, {r} *state_T, {r} *work)
{{ (void)T; (void)B; (void)params; (void)x; (void)lengths; (void)state0; (void)y; (void)state_T; (void)work; return 6; }}
__attribute__((weak)) size_t {p}_b1_step_workspace_size(void) {{ return 0; }}
__attribute__((weak)) int {p}_b1_pack(const {r} *params, {r} *work) {{ (void)params; (void)work; return 6; }}
__attribute__((weak)) int {p}_b1_step(const {r} *params, const {r} *x_t, const {r} *state_in,
    {r} *y_t, {r} *state_out, {r} *work)
{{ (void)params; (void)x_t; (void)state_in; (void)y_t; (void)state_out; (void)work; return 6; }}
__attribute__((weak)) int {p}_b1_steps(int T, const {r} *params, const {r} *x, const {r} *state_in,
    {r} *y, {r} *state_out, {r} *work)
{{ (void)T; (void)params; (void)x; (void)state_in; (void)y; (void)state_out; (void)work; return 6; }}"""


def with_batch1_unit(csrc, g, bwd):
    """A runtime kernel's C with a translation unit of its own for inference at batch 1,
    when its weights stay in L1: the forward of the exported kernel (the portable
    microkernel inlined with constant sizes, a step at a time, the states kept in the
    workspace's slots) under the prefix PREFIX_b1. The JIT's products take their sizes
    at run time and its steps follow a chunk's hoisted products: an LSTM at H = 16 ran
    71 ns a step there against 59. Else csrc unchanged."""
    ctype = "float" if csrc.dtype == "float32" else "double"
    if not (csrc.runtime and weights_fit_l1(csrc.layout, ctype)):
        return csrc
    unit = render_c(g, bwd, csrc.dtype, prefix=csrc.prefix + "_b1", fast_math=True,
                    microkernel="portable", forward_only=True).units[0]
    return replace(csrc, text=csrc.text + UNIT_BREAK + unit, units=csrc.units + (unit,),
                   batch1=True)


def kept_source(text, cdef, meta, blas):
    """The CSource of C text that render_c made earlier (kept with a cache entry, rebuilt
    when the entry is gone): no layout, and the runtime's C if the kernel links it; a
    batch-1 unit is a translation unit of its own again."""
    runtime = bool(meta.get("runtime", False))
    main, _, unit = text.partition(UNIT_BREAK)
    return CSource(text, cdef, None, meta.get("prefix", "rnnc"), meta["dtype"], blas, runtime,
                   units=(main, unit) if unit else (),
                   runtime_source=helpers.runtime_units(bool(meta.get("tuned")), meta["dtype"])
                   if runtime else (), batch1=bool(unit))


def _join(parts):
    return "\n\n".join(p for p in parts if p) + "\n"


def _slots(L, a, keep):
    """Slots of a value array: all T when taped (with a tape), a chunk when hoisted (two
    when the kernel is pipelined), else 1."""
    if keep and a.taped:
        return "T"
    return _chunk_slots(L) if a.hoisted else "1"


def _chunk_slots(L):
    """The slots of a chunk's buffers: CH steps, twice that in a pipelined kernel (one
    chunk's steps read theirs while the next chunk's are written)."""
    return "2 * CH" if L.pipelined else "CH"


def _size_terms(L, keep):
    """(slots, scalars per row) terms of the workspace, in the order of the regions."""
    terms = [("(T + 1)" if keep else "2", st[1]) for st in L.states]
    terms += [(_slots(L, a, keep), a.width) for a in L.arrays]
    if keep:
        step = sum(w for _, w, chunked in L.adj_arrays if not chunked)
        chunk = sum(w for _, w, chunked in L.adj_arrays if chunked)
        terms += [("1", step), (_chunk_slots(L), chunk), ("1", L.S), ("CH", linear.pad_width(L))]
    return terms


def _size_functions(L, p):
    def total(keep):
        # a size_t sum: each constant fits an int, the two together need not
        C = L.consts
        fixed = ("(size_t)%s + %s" % (C["pack_size"], C["gpack_size"]) if keep
                 else C["pack_size"])
        lines = ["    const size_t CH = (size_t)chunk_steps(T, B);",
                 "    size_t n = %s;" % fixed]
        for slots, width in _size_terms(L, keep):
            if width:
                lines.append("    n = add_sz(n, mul_sz(mul_sz(%s, (size_t)B), %d));"
                             % ("(size_t)T + 1" if slots == "(T + 1)" else "(size_t)" + slots
                                if slots in ("T", "CH") else slots, width))
        return lines
    return "\n".join([
        "size_t %s_param_count(void) { return %s; }" % (p, L.consts["param_count"]),
        "size_t %s_input_size(void) { return %d; }" % (p, L.I),
        "size_t %s_state_size(void) { return %d; }" % (p, L.S),
        "size_t %s_output_size(void) { return %d; }" % (p, L.O),
        "",
        "/* a*b and a+b, or SIZE_MAX on overflow (SIZE_MAX is sticky) */",
        "static size_t mul_sz(size_t a, size_t b)",
        "{ return (a == SIZE_MAX || b == SIZE_MAX || (a && b > SIZE_MAX / a)) ? SIZE_MAX : a * b; }",
        "static size_t add_sz(size_t a, size_t b)",
        "{ return (a == SIZE_MAX || b == SIZE_MAX || b > SIZE_MAX - a) ? SIZE_MAX : a + b; }",
        "/* SIZE_MAX when T*B rows of x, y or the workspace would not fit a ptrdiff_t */",
        "static size_t fits(size_t n, int T, int B)",
        "{",
        "    size_t rows = mul_sz(mul_sz((size_t)T, (size_t)B), %d);" % max(L.I, L.O, L.S, 1),
        "    return (n > (size_t)PTRDIFF_MAX || rows > (size_t)PTRDIFF_MAX) ? SIZE_MAX : n;",
        "}",
        "",
        "/* the tape kept for backward and backward's scratch, in scalars */",
        "size_t %s_workspace_size(int T, int B)" % p,
        "{",
        "    if (T < 1 || B < 1) return SIZE_MAX;",
    ] + total(True) + [
        "    return fits(n, T, B);",
        "}",
        "",
        "/* forward without a tape: two state slots and a chunk of values */",
        "size_t %s_infer_workspace_size(int T, int B)" % p,
        "{",
        "    if (T < 1 || B < 1) return SIZE_MAX;",
    ] + total(False) + [
        "    return fits(n, T, B);",
        "}",
    ])


def _check_function(p):
    return "\n".join([
        "/* 0 if the arguments are valid, else the non-zero code returned */",
        "static int check_args(int T, int B, const int *lengths, int keep)",
        "{",
        "    if (T < 1 || B < 1) return 1;",
        "    if ((keep ? %s_workspace_size(T, B) : %s_infer_workspace_size(T, B)) == SIZE_MAX) return 4;"
        % (p, p),
        "    if (lengths) for (int b = 0; b < B; ++b) if (lengths[b] < 0 || lengths[b] > T) return 3;",
        "    return 0;",
        "}",
    ])


def _state_io(L, ctype):
    """Copies between the ABI's state rows (B x S) and one array per state."""
    args = ", ".join("%s *h%d" % (ctype, k) for k in range(len(L.states)))
    cargs = ", ".join("const %s *h%d" % (ctype, k) for k in range(len(L.states)))
    lines = ["/* state rows (B x S, states concatenated; NULL: zeros) -> one array per state */",
             "static void rows_to_states(int B, const %s *rows, %s)" % (ctype, args), "{"]
    for k, (name, size, _, _, _) in enumerate(L.states):
        lines += ["    for (ptrdiff_t b = 0; b < B; ++b) for (ptrdiff_t j = 0; j < %d; ++j)" % size,
                  "        h%d[b * %d + j] = rows ? rows[b * %d + %s + j] : 0;"
                  % (k, size, L.S, L.consts.state(name))]
    lines += ["}", "static void states_to_rows(int B, %s, %s *rows)" % (cargs, ctype), "{"]
    for k, (name, size, _, _, _) in enumerate(L.states):
        lines += ["    for (ptrdiff_t b = 0; b < B; ++b) for (ptrdiff_t j = 0; j < %d; ++j)" % size,
                  "        rows[b * %d + %s + j] = h%d[b * %d + j];" % (L.S, L.consts.state(name), k, size)]
    return "\n".join(lines + ["}"])


# ---------------------------------------------------------------- forward

def step_pointers(L):
    """Names of the pointers a step declares: value arrays, x_t and states, adjoints."""
    names = ["x_t"] + list(L.prev) + [a.name for a in L.arrays] + list(L.next)
    return names + [name for name, _, _ in L.adj_arrays] + ["params", "dparams"]


def as_function(name, loop, ctype, L, writable, head=("t", "B", "lengths"), kind="static"):
    """A fused loop (elementwise.Loop, or None) as a function of the step pointers it
    uses, and the line that calls it (with `head` for its first three arguments): small
    functions keep gcc -O3 fast, and each equation reads on its own. `kind` declares it
    (static, or the forward's RNNC_EW)."""
    if loop is None:
        return [], []
    comment_line, body = loop.lines[0], loop.lines[1:]
    used = [v for v in step_pointers(L) if v in loop.pointers]
    # every step pointer is its own region of the workspace (or params, dparams, x): they
    # never overlap, and restrict spares gcc the aliasing checks around each loop
    args = ["int t", "int B", "const int *lengths"] + [
        "%s%s *restrict %s" % ("" if v in writable else "const ", ctype, v) for v in used]
    definition = [comment_line, "%s void %s(%s)" % (kind, name, ", ".join(args)), "{",
                  "    (void)t; (void)lengths;"] + ["    " + ln for ln in body] + ["}"]
    return ["\n".join(definition)], ["%s(%s);" % (name, ", ".join(list(head) + used))]


def _op_forward(g, L, n, printer, ctype):
    """(function definitions, lines in the step) computing node n."""
    if n in L.elided:
        return [], []
    return LOWERING[g[n].op][0](g, L, n, printer, ctype)


# a static node's call over `rows` rows at once (no lengths: every row valid), or one step
STATIC_HEAD = ("t", "rows", "rows_lengths")


def _ew_forward(g, L, n, printer, ctype):
    d = g[n]
    saved = {L.value[d.args[k]][0] for k in L.saved.get(n, {})}
    return as_function("fwd_" + L.value[n][0], forward_loop(g, L, n, printer, ctype),
                       ctype, L, writable={L.value[n][0]} | saved,
                       head=STATIC_HEAD if n in L.static else ("t", "B", "lengths"),
                       kind="RNNC_EW")


def pointers_used(lines, names):
    """The step pointer declarations (name -> line) that the calls `lines` pass."""
    text = "\n".join(lines)
    return [ln for name, ln in names.items() if re.search(r"\b%s\b" % re.escape(name), text)]


def static_block(L, calls, pointer_lines, reverse=False):
    """Where a chunk's static elementwise nodes are computed (or their adjoints passed
    on): over all tc*B rows of the chunk in one call each when no row has a length
    (every row valid; a chunk's slots of a value are consecutive), else one step at a
    time. Runs before the chunk's steps in forward, after them in backward."""
    if not calls:
        return []
    decl = pointers_used(calls, pointer_lines)
    steps = ("for (int t = t1 - 1; t >= t0; --t) {" if reverse
             else "for (int t = t0; t < t0 + tc; ++t) {")
    return ([comment("the values that read no state, for every step of the chunk at once"
                     if not reverse else "their adjoints, every step of the chunk at once"),
             "{",
             "    const int *rows_lengths = lengths;",
             "    if (!lengths) {",
             "        const int t = t0, rows = tc * B;"]
            + ["        " + ln.strip() for ln in decl] + ["        " + c for c in calls] + [
             "    } else {",
             "        const int rows = B;",
             "        " + steps]
            + ["            " + ln.strip() for ln in decl] + ["            " + c for c in calls] + [
             "        }",
             "    }",
             "}"])


def _linear_forward(g, L, n, printer, ctype):
    b = L.bundle_of[n]                   # a bundle's GEMM computes all its members
    return [], (linear.step_forward(L, b, ctype) if b.members[0] == n else [])


def _concat_forward(g, L, n, printer, ctype):
    d = g[n]
    out, ostride = ref(L, n)
    code = [comment("%s = [%s]" % (label(L, n), "; ".join(label(L, a) for a in d.args))),
            "for (ptrdiff_t b = 0; b < B; ++b) {"]
    off = 0
    for a in d.args:
        src, stride = ref(L, a)
        m = g[a].size
        code.append("    for (ptrdiff_t j = 0; j < %d; ++j) %s[b * %d + %s + j] = %s[b * %d + j];"
                    % (m, out, ostride, L.consts.cat(n, off), src, stride))
        off += m
    return [], code + ["}"]


def _reduce_forward(g, L, n, printer, ctype):
    d = g[n]
    out, ostride = ref(L, n)
    src, stride = ref(L, d.args[0])
    m = g[d.args[0]].size
    scale = " / %d" % m if d.how == "mean" else ""
    return [], [comment("%s = %s(%s)" % (label(L, n), d.how, label(L, d.args[0]))),
            "for (ptrdiff_t b = 0; b < B; ++b) {",
            "    %s acc = 0;" % ctype,
            "    for (ptrdiff_t j = 0; j < %d; ++j) acc += %s[b * %d + j];" % (m, src, stride),
            "    %s[b * %d] = acc%s;" % (out, ostride, scale),
            "}"]


def _slice_forward(g, L, n, printer, ctype):
    d = g[n]
    out, ostride = ref(L, n)
    src, stride = ref(L, d.args[0])
    return [], [comment("%s = %s[%d:%d]" % (label(L, n), label(L, d.args[0]), d.offset,
                                            d.offset + d.size)),
                "for (ptrdiff_t b = 0; b < B; ++b) for (ptrdiff_t j = 0; j < %d; ++j)" % d.size,
                "    %s[b * %d + j] = %s[b * %d + %s + j];"
                % (out, ostride, src, stride, L.consts.slice(n))]


def _step_index(a, keep_expr="keep", chunk="t0"):
    """The slot of step t in a value array: t on a tape, t - (the chunk's first step) in
    a chunk's buffer, else the one slot."""
    if a.taped:
        return "(%s ? t : %s)" % (keep_expr, "t - %s" % chunk if a.hoisted else "0")
    return "(t - %s)" % chunk if a.hoisted else "0"


def _forward(g, L, printer, ctype, p, threads=False, step_loop=False, slot_step=False):
    ind = " " * 8
    regions, _ = _forward_regions(L, ctype, keep=None)
    x_line = "%sconst %s *restrict x_t = x + (ptrdiff_t)t * B * %d; (void)x_t;" % (ind, ctype, L.I)
    # a state's slots: on the tape, t and t + 1; else the two slots a chunk alternates
    pointers = [x_line, ind + "const ptrdiff_t slot = keep ? t : (t & 1), next_slot = keep ? t + 1 : ((t + 1) & 1);"]
    for k, (_, size, _, _, _) in enumerate(L.states):
        pointers.append("%sconst %s *restrict %s = hist%d + slot * B * %d;"
                        % (ind, ctype, L.prev[k], k, size))
        pointers.append("%s%s *restrict %s = hist%d + next_slot * B * %d;"
                        % (ind, ctype, L.next[k], k, size))
    named = {}
    for a in L.arrays:
        pointers.append("%s%s *restrict %s = A_%s + (ptrdiff_t)%s * B * %d; (void)%s;"
                        % (ind, ctype, a.name, a.name, _step_index(a, chunk="cb"), a.width, a.name))
        named[a.name] = ("%s *restrict %s = A_%s + (ptrdiff_t)%s * B * %d; (void)%s;"
                         % (ctype, a.name, a.name, _step_index(a, chunk="c0"), a.width, a.name))
    defs, body, static = [], [], []
    for n in g.ops():
        d, code = _op_forward(g, L, n, printer, ctype)
        defs += d
        (static if n in L.static else body).extend(code)
    static = static_block(L, static, named)
    out, ostride = ref(L, g.output)
    update = [comment("the new states; rows past their length keep the old ones")]
    for k, (_, size, _, _, node) in enumerate(L.states):
        if L.direct_states.get(node) == k:
            continue                     # its loop wrote the history slot
        src, stride = ref(L, node)
        update += ["for (ptrdiff_t b = 0; b < B; ++b) for (ptrdiff_t j = 0; j < %d; ++j)" % size,
                   "    %s[b * %d + j] = VALID(b) ? %s[b * %d + j] : %s[b * %d + j];"
                   % (L.next[k], size, src, stride, L.prev[k], size)]
    update += ["for (ptrdiff_t b = 0; b < B; ++b) for (ptrdiff_t j = 0; j < %d; ++j)" % L.O,
               "    y_t[b * %d + j] = VALID(b) ? %s[b * %d + j] : 0;" % (L.O, out, ostride)]
    # the same at batch 1 without lengths (one_step): whole rows by memcpy, which gcc
    # moves as vectors, where it copies the loop above a scalar at a time (y_t may
    # alias a value): a GRU at H = 16, 57 -> 54 ns a step, an LSTM at H = 16, 60 -> 58
    update1 = [comment("the new states and the output (batch 1, every row valid)")]
    for k, (_, size, _, _, node) in enumerate(L.states):
        if L.direct_states.get(node) != k:
            update1.append("memcpy(%s, %s, sizeof(%s) * %d);" % (L.next[k], ref(L, node)[0], ctype, size))
    update1.append("memcpy(y_t, %s, sizeof(%s) * %d);" % (out, ctype, L.O))
    pack = [ln for b in L.bundles for ln in linear.pack_weights(g, L, b, ctype)]
    hoisted = [ln for b in L.bundles if b.hoisted for ln in linear.hoisted_forward(L, b, ctype)]
    work = (sum(b.width * p.width for b in L.bundles for p in b.parts if p.static)
            + EW_COST * sum(g[n].size for n in L.static))
    before = _chunk_function(
        "before_steps", "the work of steps t0..t0+tc-1 (of the chunk from c0) that reads no "
        "state: the hoisted products, then the elementwise values over their rows",
        regions, hoisted + static, ctype, L, split=threads, work=work)
    blocks = typed_blocks(ctype)
    hist_args = ", ".join("hist%d" % k for k in range(len(L.states)))
    last = ", ".join("hist%d + (ptrdiff_t)(keep ? T : (T & 1)) * B * %d" % (k, st[1])
                     for k, st in enumerate(L.states))
    lines = [
        "/* every bundle's weights and biases packed, and the panels of the microkernel */",
        "static void pack_weights(const {r} *params, {r} *pack)",
        "{",
    ] + ["    " + ln for ln in pack] + [
        "    (void)params; (void)pack;",
        "}",
        "",
        "/* keep = 1: a tape for backward; keep = 0: two state slots and a chunk of values;",
        "   inlined into each entry point, so that {p}_step's T = B = 1 are constants there;",
        "   threads: for the hoisted GEMMs; packed: work starts with the packed weights",
        "   ({p}_pack), else they are packed first. Arguments checked by the caller. */",
        "RNNC_INLINE int {p}_forward_steps(int T, int B, const {r} *params, const {r} *x, const int *lengths,",
        "                             const {r} *state0, {r} *y, {r} *state_T, {r} *work, int keep,",
        "                             int threads, int packed)",
        "{",
        "    /* CH: the steps a chunk's buffers hold; CS: the steps of a chunk here */",
        "    const int CH = chunk_steps(T, B), CS = BIG_CHUNKS || threads > 1 ? CH : T < CHUNK ? T : CHUNK;",
        "    (void)threads;",
    ] + regions + [
        "    if (!packed) pack_weights(params, pack);",
    ] + [
        "    rows_to_states(B, state0, %s);" % hist_args,
    ] + (pipe_flag(work) if L.pipelined else []) + ([
        "    for (int t0 = 0, k = 0; t0 < T; t0 += CS, ++k) {",
        "        /* cb: the step in slot 0 of this chunk's buffers (of the two that alternate",
        "           when pipelined) */",
        "        const int tc = T - t0 < CS ? T - t0 : CS, cb = t0 - (pipe ? (k & 1) * CH : 0);",
    ] if L.pipelined else [
        "    for (int t0 = 0; t0 < T; t0 += CS) {",
        "        const int tc = T - t0 < CS ? T - t0 : CS, cb = t0;   /* cb: the step in slot 0 of the chunk's buffers */",
    ]) + ([
        "        /* pipe: the next chunk's work that reads no state, in blocks that the helper",
        "           takes from now on and this thread after this chunk's steps */",
        "        const int n0 = t0 + tc, nc = T - n0 < CS ? T - n0 : CS;",
        "        chunk_job next = {T, B, n0 - (pipe ? ((k + 1) & 1) * CH : 0), n0, nc, keep, lengths, params, x, work, NULL, NULL};",
        "        rnnc_blocks blocks = {before_steps_block, &next, BLOCKS, BLOCKS, 0, 0};",
        "        if (!pipe || !k) before_steps_split(T, B, cb, t0, tc, keep, threads, lengths, params, x, work, NULL);",
        "        const int started = pipe && nc > 0 ? %s(&blocks) : 0;" % blocks[0],
    ] if L.pipelined else [
        "        before_steps_split(T, B, cb, t0, tc, keep, threads, lengths, params, x, work, NULL);",
    ]) + [
        "        for (int t = t0; t < t0 + tc; ++t) {",
        "    " + ind + "%s *restrict y_t = y + (ptrdiff_t)t * B * %d;" % (ctype, L.O),
    ] + ["    " + ln for ln in pointers] + ["    " + ind + ln for blk in (body, update) for ln in blk] + [
        "        }",
    ] + (["        if (pipe && nc > 0) %s(&blocks, started);" % blocks[1]] if L.pipelined else []) + [
        "    }",
        "    states_to_rows(B, %s, state_T);" % last,
        "    return 0;",
        "}",
        "",
    ] + (_one_step(regions, pointers[2:], body, update1) + _steps_b1(L, regions, hist_args, last)
         if step_loop else []) + (
        [SAME_BITS] if slot_step else []) + [
        "int {p}_run_forward(int T, int B, const {r} *params, const {r} *x, const int *lengths,",
        "                    const {r} *state0, {r} *y, {r} *state_T, {r} *work, int keep, int threads)",
        "{",
        "    int rc = check_args(T, B, lengths, keep);",
        "    if (rc) return rc;",
        "    if (!params || !x || !y || !state_T || !work) return 2;",
    ] + ([
        "    if (!keep && B == 1 && !lengths) {      /* inference at batch 1: a step at a time */",
        "        pack_weights(params, work);",
        "        steps_b1(T, params, x, state0, y, state_T, work);",
        "        return 0;",
        "    }",
    ] if step_loop else []) + [
        "    return {p}_forward_steps(T, B, params, x, lengths, state0, y, state_T, work, keep, threads, 0);",
        "}",
        "",
        "/* the workspace of {p}_step: the packed weights, then one step's values (and the",
        "   slot the last step wrote, in a kernel whose steps stream from its slots) */",
        "size_t {p}_step_workspace_size(void) { return {p}_infer_workspace_size(1, 1)%s; }"
        % (" + 1" if slot_step else ""),
        "",
        "/* the weights packed into the start of work, for {p}_step */",
        "int {p}_pack(const {r} *params, {r} *work)",
        "{",
        "    if (!params || !work) return 2;",
        "    pack_weights(params, work);",
    ] + (["    memset(work + RNNC_PACK_SIZE, 0, sizeof({r}) * %d);   /* the state slots */"
          % (2 * sum(st[1] for st in L.states)),
          "    set_last_slot(LAST_SLOT(work), 0);"]
         if slot_step else []) + [
        "    return 0;",
        "}",
        "",
        "/* one step of one sequence (batch 1) over weights packed by {p}_pack: no allocation,",
        "   no lock, no system call; state_in may be state_out, or NULL for zeros */",
        "int {p}_step(const {r} *params, const {r} *x_t, const {r} *state_in, {r} *y_t,",
        "             {r} *state_out, {r} *work)",
        "{",
        "    if (!params || !x_t || !y_t || !state_out || !work) return 2;",
    ] + (_slot_step(regions, L) if slot_step else [
        "    return {p}_forward_steps(1, 1, params, x_t, NULL, state_in, y_t, state_out, work, 0, 1, 1);",
    ]) + [
        "}",
        "",
    ] + _steps(L, step_loop, slot_step) + [
        "",
        "int {p}_forward(int T, int B, const {r} *params, const {r} *x, const int *lengths,",
        "                const {r} *state0, {r} *y, {r} *state_T, {r} *work)",
        "{ return {p}_run_forward(T, B, params, x, lengths, state0, y, state_T, work, 1, 1); }",
        "",
        "int {p}_infer(int T, int B, const {r} *params, const {r} *x, const int *lengths,",
        "              const {r} *state0, {r} *y, {r} *state_T, {r} *work)",
        "{ return {p}_run_forward(T, B, params, x, lengths, state0, y, state_T, work, 0, 1); }",
    ]
    return "\n\n".join(defs + [before, "\n".join(lines).replace("{r}", ctype).replace("{p}", p)])


# the weights (bytes) up to which an exported kernel's inference at batch 1 runs a step
# at a time: what the per-step products read stays in a 48 KB L1 with room to spare
STEP_LOOP_BYTES = 32 * 1024

# the largest state (bytes) for which an exported kernel's NAME_step reads the state slot
# the last step wrote rather than a copy of the state row: at 64 bytes (one AVX-512
# register) an LSTM's step at H = 16 took 60 ns against 70; at 128 (H = 32) 117.8 against
# 116.2, and a GRU's 99.9 against 97.2
SLOT_STEP_BYTES = 64

# a chunk's work (rows x multiply-adds or elementwise operations per row) below which a
# second thread costs more than it gives: as the GEMM helpers' own threshold (gemm.c)
SPLIT_WORK = 1 << 21
EW_COST = 8          # operations a unit of an elementwise value costs, roughly


# The blocks a chunk's work is cut into when two threads share it in a pipelined kernel,
# as their edges in 64ths of the chunk: large first (a GEMM over few rows spends its time
# packing the weights: 16 blocks of 128 rows at B=1 ran 1.3x the CPU time of two halves),
# small last, so that the thread done first with its own work still finds some left.
# Every edge but the last falls on a multiple of BLOCK_ROWS rows from the chunk's start,
# so that a GEMM's groups of rows (up to 32) fall alike in a block and in the whole chunk
# (OpenBLAS's dgemm summed the last 6 rows of a block otherwise); OpenBLAS's own cuts of
# a chunk's rows can still differ, so two threads agree with one to rounding, and with
# themselves to the bit.
BLOCK_EDGES = (0, 16, 32, 40, 48, 52, 56, 58, 60, 61, 62, 63, 64)
BLOCK_ROWS = 32

JOB_STRUCT = ("/* a chunk's work, as another thread takes it */\n"
              "typedef struct { int T, B, c0, t0, tc, keep; const int *lengths; const {r} *params, *x;"
              " {r} *work, *dparams, *dx; } chunk_job;\n"
              "/* block i of n things (n < 2^24) spans [block_edge(n, i, a), block_edge(n, i + 1, a)):\n"
              "   every edge but n a multiple of a (some blocks may be empty) */\n"
              "static ptrdiff_t block_edge(ptrdiff_t n, int i, ptrdiff_t a)\n"
              "{\n"
              "    static const unsigned char edges[BLOCKS + 1] = {%s};\n"
              "    return i == BLOCKS ? n : n * edges[i] / 64 / a * a;\n"
              "}\n"
              "/* the steps of a block edge: BLOCK_ROWS rows, or a multiple of them, in whole steps */\n"
              "static ptrdiff_t block_steps(int B) { return BLOCK_ROWS / (B & -B < BLOCK_ROWS ? B & -B : BLOCK_ROWS); }"
              % ", ".join(map(str, BLOCK_EDGES)))


def _steps_b1(L, regions, hist_args, last):
    """steps_b1: T steps of inference at batch 1 over packed weights, one_step at a time,
    the states in the step workspace's two slots from step to step (NAME_infer at batch
    1 and NAME_steps)."""
    return [
        "/* T steps of one sequence over packed weights, one_step at a time: the states",
        "   copied from state_in (NULL: zeros) into slot 0, and from the last slot to",
        "   state_out (which may be state_in) */",
        "static void steps_b1(int T, const {r} *params, const {r} *x, const {r} *state_in, {r} *y,",
        "                     {r} *state_out, {r} *work)",
        "{",
    ] + _step_layout(regions, steps=None) + [
        "    rows_to_states(1, state_in, %s);" % hist_args,
        "    for (int t = 0; t < T; ++t)",
        "        one_step(params, x + (ptrdiff_t)t * %d, y + (ptrdiff_t)t * %d, work, t, t & 1);"
        % (L.I, L.O),
        "    states_to_rows(1, %s, state_out);" % last,
        "}",
        ""]


def _steps(L, step_loop, slot_step):
    """NAME_steps: T samples of one sequence over packed weights in one call, as T calls
    of NAME_step (a block of audio with the state carried): steps_b1 where the kernel
    infers a step at a time (the slot index then left where NAME_step finds the last
    state), else forward_steps a sample at a time, the state through state_out."""
    head = [
        "/* T samples of one sequence over weights packed by {p}_pack, in one call: what T",
        "   calls of {p}_step give, to the bit. x: T*I reals, y: T*O; the state carried",
        "   from state_in (S reals, NULL: zeros; it may be state_out) to state_out. */",
        "int {p}_steps(int T, const {r} *params, const {r} *x, const {r} *state_in, {r} *y,",
        "              {r} *state_out, {r} *work)",
        "{",
        "    if (T < 1) return 1;",
        "    if (!params || !x || !y || !state_out || !work) return 2;",
    ]
    if not step_loop:
        return head + [
            "    for (int t = 0; t < T; ++t)",
            "        {p}_forward_steps(1, 1, params, x + (ptrdiff_t)t * %d, NULL, t ? state_out : state_in,"
            % L.I,
            "                          y + (ptrdiff_t)t * %d, state_out, work, 0, 1, 1);" % L.O,
            "    return 0;",
            "}"]
    return head + [
        "    steps_b1(T, params, x, state_in, y, state_out, work);",
    ] + (["    set_last_slot(LAST_SLOT(work), T & 1);   /* where {p}_step finds the state */"]
         if slot_step else []) + [
        "    return 0;",
        "}"]


def _slot_step(regions, L):
    """The body of NAME_step in a kernel with slot_step: a stream passes back the state
    row the last step wrote, which the workspace's slot s still holds (s kept after the
    slots); the step reads that slot and writes the other, and only then checks that the
    row holds the slot's bits: if not (another state, zeros, a first step), the step runs
    again from the row copied into slot s. Checked before the step, the test waited on
    the store of the row the last step wrote and held up everything after it (a GRU at
    H = 16: 59 ns a step against 56). The state row out is a copy, off the chain."""
    def each(fmt, sep=" "):
        """fmt for every state: {row} its place in a state row, {k} its index, {n} its size."""
        return sep.join(fmt.format(row=L.consts.state(name), k=k, n=size, r="{r}")
                        for k, (name, size, _, _, _) in enumerate(L.states))
    same = each("same_bits(state_in + {row}, hist{k} + s * {n}, {n})", " && ")
    copy_in = each("memcpy(hist{k} + s * {n}, state_in + {row}, sizeof({r}) * {n});")
    zeros = each("memset(hist{k} + s * {n}, 0, sizeof({r}) * {n});")
    copy_out = each("memcpy(state_out + {row}, hist{k} + (1 - s) * {n}, sizeof({r}) * {n});")
    return _step_layout(regions) + [
        "    {r} *const last = LAST_SLOT(work);",
        "    const int s = last_slot(last);",
        "    one_step(params, x_t, y_t, work, 0, s);",
        "    if (!state_in || !(%s)) {     /* not the row the last step wrote */" % same,
        "        if (state_in) { %s } else { %s }" % (copy_in, zeros),
        "        one_step(params, x_t, y_t, work, 0, s);",
        "    }",
        "    %s" % copy_out,
        "    set_last_slot(last, 1 - s);",
        "    return 0;",
    ]


SAME_BITS = """/* the state slot the last step wrote (0 or 1), kept in the real `at` (LAST_SLOT: past
   one step's layout) as an integer's bits, with no conversion on the step's path */
#define LAST_SLOT(work) ((work) + {p}_infer_workspace_size(1, 1))
RNNC_INLINE int last_slot(const {r} *at)
{
    RNNC_INT s;
    memcpy(&s, at, sizeof s);
    return s != 0;
}
RNNC_INLINE void set_last_slot({r} *at, int slot)
{
    const RNNC_INT s = slot;
    memcpy(at, &s, sizeof s);
}

/* whether the n reals at a and b hold the same bits (no early exit: vectorised) */
RNNC_INLINE int same_bits(const {r} *a, const {r} *b, int n)
{
    RNNC_INT diff = 0;
    for (int j = 0; j < n; ++j) {
        RNNC_INT u, v;
        memcpy(&u, a + j, sizeof u);
        memcpy(&v, b + j, sizeof v);
        diff |= u ^ v;
    }
    return diff == 0;
}
"""


def _step_layout(regions, steps=1):
    """C declaring the workspace laid out for one step (B = 1, no tape, a chunk of one
    step), and its regions; T = steps, or None where T is the function's argument (the
    layout reads it only for a tape)."""
    names = (["T"] if steps is not None else []) + ["B", "keep", "CH"]
    return ["    const int %sB = 1, keep = 0, CH = 1;  /* one step's layout */"
            % ("T = %d, " % steps if steps is not None else ""),
            "    %s" % " ".join("(void)%s;" % n for n in names)] + regions + [
        "    (void)%s;" % v for v in _declared(regions)]


def _declared(regions):
    """The pointers that region lines declare."""
    return [ln.split("=")[0].split()[-1].lstrip("*") for ln in regions if "=" in ln]


def _one_step(regions, pointers, body, update):
    """one_step: step t of inference at batch 1 over the workspace laid out for one step,
    its states in the two slots a chunk of steps alternates (slot s in, the other out),
    so that they stay there from step to step; `pointers` are the step's own, past x_t
    and the slots."""
    return [
        "/* Step t of inference at batch 1, a function of its own (inlined into the loop of",
        "   steps_b1, it ran slower), over packed weights. With weights that stay in L1",
        "   inference runs a step at a time: the input's product of a step then runs alongside",
        "   the chain of sums and activations of the one before, where a chunk's hoisted",
        "   products run apart from the steps (an LSTM at H = 16 and 32: 65 and 117 ns a step",
        "   against 77 and 129). The states stay in the workspace's two slots from step to",
        "   step (step t reads slot s and writes the other): copied in and out of a state row",
        "   at each step they cost 12 of 71 ns at H = 16. The same sums in the same order as a",
        "   chunk's, so the same results. */",
        "RNNC_NOINLINE void one_step(const {r} *params, const {r} *x_t, {r} *y_t, {r} *work, int t, int s)",
        "{",
    ] + _step_layout(regions) + [
        "    const int cb = t, *lengths = NULL;",
        "    const ptrdiff_t slot = s, next_slot = 1 - s;",
        "    (void)cb; (void)lengths;",
        "    before_steps_split(1, 1, 0, 0, 1, 0, 1, NULL, params, x_t, work, NULL);",
    ] + ["    " + ln.strip() for ln in pointers] + ["    " + ln for blk in (body, update) for ln in blk] + [
        "}",
        "",
    ]


def _chunk_function(name, what, regions, code, ctype, L, split, work=0):
    """A chunk's work that reads no state, as a function of the steps t0..t0+tc-1 it does
    (slot 0 of the chunk's buffers holds step c0), and NAME_split, which runs steps
    t0..t0+tc-1 of a chunk, or with `split` (a kernel that links pthreads), threads > 1
    and enough `work` (per row) in the chunk, the later half of them on the runtime's
    helper thread (gemm.c: one that waits for jobs, since a thread created per chunk
    costs as much as a small chunk's half). The halves write disjoint rows, each
    computed as the whole chunk computes it. With `split`, also NAME_block: block i of
    BLOCKS of a chunk_job's steps, for a pipelined kernel's threads to share."""
    if not code:
        return "\n".join([
            "static void %s_split(int T, int B, int c0, int t0, int tc, int keep, int threads, const int *lengths," % name,
            "                     const {r} *params, const {r} *x, {r} *work, {r} *dparams)",
            "{ (void)T; (void)B; (void)c0; (void)t0; (void)tc; (void)keep; (void)threads; (void)lengths;"
            " (void)params; (void)x; (void)work; (void)dparams; }"]).replace("{r}", ctype)
    declared = _declared(regions)
    args = ("int T, int B, int c0, int t0, int tc, int keep, int threads, const int *lengths, "
            "const {r} *params, const {r} *x, {r} *work, {r} *dparams")
    lines = ["/* %s */" % what,
             "static void %s(%s)" % (name, args),
             "{",
             "    const int CH = chunk_steps(T, B), t1 = t0 + tc;",
             "    (void)CH; (void)t1; (void)c0; (void)keep; (void)threads; (void)lengths; (void)params; (void)x; (void)dparams;"]
    lines += regions + ["    (void)%s;" % v for v in declared]
    lines += ["    " + ln for ln in code] + ["}", ""]
    if split:
        lines += ["static void *%s_thread(void *p)" % name,
                  "{",
                  "    const chunk_job *j = (const chunk_job *)p;",
                  "    %s(j->T, j->B, j->c0, j->t0, j->tc, j->keep, 1, j->lengths, j->params, j->x, j->work, j->dparams);" % name,
                  "    return NULL;",
                  "}",
                  "/* block i of BLOCKS of the job's steps (it may hold none) */",
                  "static void %s_block(const void *p, int i)" % name,
                  "{",
                  "    const chunk_job *j = (const chunk_job *)p;",
                  "    const ptrdiff_t a = block_steps(j->B);",
                  "    const int t0 = j->t0 + (int)block_edge(j->tc, i, a), t1 = j->t0 + (int)block_edge(j->tc, i + 1, a);",
                  "    if (t0 < t1)",
                  "        %s(j->T, j->B, j->c0, t0, t1 - t0, j->keep, 1, j->lengths," % name,
                  "           j->params, j->x, j->work, j->dparams);",
                  "}"]
    lines += ["/* steps t0..t0+tc-1 of the chunk whose slot 0 is c0: on this thread, or the later",
              "   half of them on a second one */",
              "static void %s_split(int T, int B, int c0, int t0, int tc, int keep, int threads, const int *lengths," % name,
              "                     const {r} *params, const {r} *x, {r} *work, {r} *dparams)",
              "{"]
    if split:
        lines += ["    if (threads > 1 && tc > 1 && (ptrdiff_t)tc * B * %d >= %d) {" % (max(work, 1), SPLIT_WORK),
                  "        const int half = tc / 2;",
                  "        chunk_job job = {T, B, c0, t0 + half, tc - half, keep, lengths, params, x, work, dparams, NULL};",
                  "        const int started = %s(%s_thread, &job);" % (helpers.typed("helper_start", ctype), name),
                  "        %s(T, B, c0, t0, half, keep, 1, lengths, params, x, work, dparams);" % name,
                  "        if (started) %s();" % helpers.typed("helper_wait", ctype),
                  "        else %s_thread(&job);" % name,
                  "        return;",
                  "    }"]
    lines += ["    %s(T, B, c0, t0, tc, keep, threads, lengths, params, x, work, dparams);" % name, "}"]
    return "\n".join(lines).replace("{r}", ctype)


def _after_chunk_blocks(regions, with_static, groups, ctype):
    """after_chunk_block: block i of the work after a chunk's steps in a pipelined
    backward, for the threads to share: first BLOCKS blocks of after_steps (with_static),
    then, once they are all done, the groups of blocks of the chunk's GEMMs
    (linear.chunk_backward_blocks). AFTER_BLOCKS and AFTER_LATER count them."""
    declared = _declared(regions)
    first = "BLOCKS" if with_static else "0"
    counts = [str(n) for n, _ in groups]
    lines = ["#define AFTER_LATER %s" % first,
             "#define AFTER_BLOCKS (%s)" % " + ".join([first] + counts),
             "/* block i of the work after the steps of the chunk_job's chunk: its values'",
             "   adjoints by rows, then its gradients' products */",
             "static void after_chunk_block(const void *p, int i)",
             "{",
             "    const chunk_job *j = (const chunk_job *)p;",
             "    const int T = j->T, B = j->B, t0 = j->t0, tc = j->tc, cb = j->c0, CH = chunk_steps(T, B);",
             "    const {r} *x = j->x;",
             "    {r} *work = j->work, *dx = j->dx;",
             "    (void)T; (void)t0; (void)tc; (void)cb; (void)CH; (void)x; (void)dx;"]
    lines += regions + ["    (void)%s;" % v for v in declared]
    if with_static:
        lines += ["    if (i < BLOCKS) {",
                  "        after_steps_block(p, i);",
                  "        return;",
                  "    }",
                  "    i -= BLOCKS;"]
    for n, code in groups:
        lines += ["    if (i < %s) {" % n] + ["        " + ln for ln in code] + [
                  "        return;",
                  "    }",
                  "    i -= %s;" % n]
    return "\n".join(lines + ["}"]).replace("{r}", ctype)


def typed_blocks(ctype):
    """The names of blocks_start and blocks_finish (gemm.c) for the real type."""
    return helpers.typed("blocks_start", ctype), helpers.typed("blocks_finish", ctype)


def pipe_flag(work):
    """C: whether this call pipelines its chunks (a pipelined kernel; two threads, rows
    without lengths, and chunks of enough `work` per row to share, as NAME_split's)."""
    return ["    /* pipe: a chunk's work that reads no state runs alongside the steps of the",
            "       chunk next to it, the two threads sharing it in blocks */",
            "    const int pipe = threads > 1 && !lengths && (ptrdiff_t)CS * B * %d >= %d;"
            % (max(work, 1), SPLIT_WORK)]


def history_layout(L):
    """Where the tape keeps the states, for the kernel's manifest (the runtime reads a
    state's history from it without knowing the generator's layout): from `offset`
    scalars into the workspace, each state's T+1 slots of B rows, in this order."""
    return {"offset": L.pack_size, "slots": "T+1",
            "states": [[name, size] for name, size, _, _, _ in L.states]}


def _forward_regions(L, ctype, keep):
    """Pointers to the tape regions, and the end of the last one. keep=None: slot counts
    decided at run time by `keep` (forward and infer share them); keep=True: backward's."""
    def pick(with_tape, without):
        if keep:
            return with_tape
        return without if with_tape == without else "(keep ? %s : %s)" % (with_tape, without)
    lines = ["    %s *pack = work;" % ctype]
    prev = "pack + %s" % L.consts["pack_size"]
    for k, (_, size, _, _, _) in enumerate(L.states):
        lines.append("    %s *hist%d = %s;" % (ctype, k, prev))
        prev = "hist%d + (ptrdiff_t)%s * B * %d" % (k, pick("((ptrdiff_t)T + 1)", "2"), size)
    for a in L.arrays:
        lines.append("    %s *A_%s = %s;" % (ctype, a.name, prev))
        prev = "A_%s + (ptrdiff_t)%s * B * %d" % (a.name, pick(_slots(L, a, True), _slots(L, a, False)),
                                                  a.width)
    return lines, prev


# ---------------------------------------------------------------- backward

def _op_backward(g, L, op, printer, ctype):
    """(function definitions, lines in the step) passing op.node's adjoint on."""
    return LOWERING[g[op.node].op][1](g, L, op, printer, ctype)


def _ew_backward(g, L, op, printer, ctype):
    writable = {v for v in step_pointers(L) if v.startswith("d")}
    if op.node in L.static:
        return as_function("bwd_" + L.value[op.node][0], backward_loop(g, L, op, printer, ctype),
                           ctype, L, writable=writable, head=STATIC_HEAD)
    now, later = split_contributions(op, L.deferred.get(op.node, ()))
    return as_function("bwd_" + L.value[op.node][0], backward_loop(g, L, now, printer, ctype),
                       ctype, L, writable=writable)


def split_contributions(op, later):
    """An elementwise node's backward as (the contributions made in the loop, those made
    after the chunk's steps), each an EwGrad reading y only if its partials do."""
    def part(keep):
        contributions = tuple(c for c in op.contributions if keep(c[0]))
        return replace(op, contributions=contributions,
                       uses_y=any(c.has(Y) for _, c in contributions))
    return part(lambda k: k not in later), part(lambda k: k in later)


def _ew_backward_later(g, L, op, printer, ctype):
    """The contributions of an elementwise node in the loop to operands that read no
    state, made after the chunk's steps (over all its rows at once)."""
    _, later = split_contributions(op, L.deferred[op.node])
    return as_function("bwd_later_" + L.value[op.node][0], backward_loop(g, L, later, printer, ctype),
                       ctype, L, writable={v for v in step_pointers(L) if v.startswith("d")},
                       head=STATIC_HEAD)


def _linear_backward(g, L, op, printer, ctype):
    b = L.bundle_of[op.node]
    return [], (linear.step_backward(L, b, ctype) if b.members[0] == op.node else [])


def _concat_backward(g, L, op, printer, ctype):
    if op.node in L.elided:
        return [], []
    src, sstride = ref(L, op.node, adjoint=True)
    code = [comment("split d%s" % label(L, op.node)), "for (ptrdiff_t b = 0; b < B; ++b) {"]
    off = 0
    for a in op.parts:
        dst, stride = ref(L, a, adjoint=True)
        m = g[a].size
        code.append("    for (ptrdiff_t j = 0; j < %d; ++j) %s[b * %d + j] += %s[b * %d + %s + j];"
                    % (m, dst, stride, src, sstride, L.consts.cat(op.node, off)))
        off += m
    return [], code + ["}"]


def _reduce_backward(g, L, op, printer, ctype):
    m = g[op.v].size
    src, sstride = ref(L, op.node, adjoint=True)
    dst, stride = ref(L, op.v, adjoint=True)
    scale = " / %d" % m if op.how == "mean" else ""
    return [], [comment("d%s += d%s, every unit" % (label(L, op.v), label(L, op.node))),
            "for (ptrdiff_t b = 0; b < B; ++b) {",
            "    const %s gb = %s[b * %d]%s;" % (ctype, src, sstride, scale),
            "    for (ptrdiff_t j = 0; j < %d; ++j) %s[b * %d + j] += gb;" % (m, dst, stride),
            "}"]


def _slice_backward(g, L, op, printer, ctype):
    if op.node in L.elided:             # the hoisted GEMMs write dL/dx of its columns
        return [], []
    d = g[op.node]
    src, sstride = ref(L, op.node, adjoint=True)
    dst, stride = ref(L, op.v, adjoint=True)
    return [], [comment("d%s[%d:%d] += d%s" % (label(L, op.v), d.offset, d.offset + d.size,
                                               label(L, op.node))),
                "for (ptrdiff_t b = 0; b < B; ++b) for (ptrdiff_t j = 0; j < %d; ++j)" % d.size,
                "    %s[b * %d + %s + j] += %s[b * %d + j];"
                % (dst, stride, L.consts.slice(op.node), src, sstride)]


# op -> (forward lowering, backward lowering): the part of an op that needs the layout
# (rnncompiler.compiler.ops holds the rest); every op of ops.OPS that computes has a row
LOWERING = {
    "ew": (_ew_forward, _ew_backward),
    "linear": (_linear_forward, _linear_backward),
    "concat": (_concat_forward, _concat_backward),
    "reduce": (_reduce_forward, _reduce_backward),
    "slice": (_slice_forward, _slice_backward),
}


def _dx_in_step(L, bwd):
    """Whether any step adds to dL/dx_t itself (else only the hoisted GEMMs write dx)."""
    for op in bwd.ops:
        if isinstance(op, EwGrad) and any(op.args[k] == "x" for k, _ in op.contributions):
            return True
        if isinstance(op, ConcatGrad) and op.node not in L.elided and "x" in op.parts:
            return True
        if isinstance(op, ReduceGrad) and op.v == "x":
            return True
        if isinstance(op, SliceGrad) and op.node not in L.elided and op.v == "x":
            return True
    return False


def _backward(g, bwd, L, printer, ctype, p, threads=False):
    ind = " " * 12
    regions, last = _forward_regions(L, ctype, keep=True)
    regions += ["    %s *gpack = %s;" % (ctype, last),
                "    %s *adj = gpack + %s;" % (ctype, L.consts["gpack_size"])]
    chunk_prev = None
    for name, width, chunked in L.adj_arrays:
        if not chunked:
            regions.append("    %s *%s = adj + (ptrdiff_t)B * %s; (void)%s;"
                           % (ctype, name, L.consts.adj(name), name))
    chunk_base = "adj + (ptrdiff_t)B * %s" % L.consts["adj_width"]
    for name, width, chunked in L.adj_arrays:
        if chunked:
            regions.append("    %s *%s_all = %s;" % (ctype, name, chunk_base if chunk_prev is None
                                                    else chunk_prev))
            chunk_prev = "%s_all + (ptrdiff_t)%s * B * %d" % (name, _chunk_slots(L), width)
    regions.append("    %s *dcarry = %s;" % (ctype, chunk_prev or chunk_base))
    regions.append("    %s *pad = dcarry + (ptrdiff_t)B * %d; (void)pad;" % (ctype, L.S))
    pointers = ["%sconst %s *restrict x_t = x + (ptrdiff_t)t * B * %d; (void)x_t;" % (ind, ctype, L.I)]
    named = {"x_t": pointers[0]}
    for k, (_, size, _, _, _) in enumerate(L.states):
        pointers.append("%sconst %s *restrict %s = hist%d + (ptrdiff_t)t * B * %d; (void)%s;"
                        % (ind, ctype, L.prev[k], k, size, L.prev[k]))
        # the state after step t, in the slot after (a chunk's steps at once read it too)
        pointers.append("%sconst %s *restrict %s = hist%d + ((ptrdiff_t)t + 1) * B * %d; (void)%s;"
                        % (ind, ctype, L.next[k], k, size, L.next[k]))
        named[L.prev[k]], named[L.next[k]] = pointers[-2], pointers[-1]
    for a in L.arrays:
        if a.taped:
            named[a.name] = ("%sconst %s *restrict %s = A_%s + (ptrdiff_t)t * B * %d; (void)%s;"
                             % (ind, ctype, a.name, a.name, a.width, a.name))
            pointers.append(named[a.name])
    zero = ["memset(adj, 0, sizeof(%s) * (size_t)B * %s);" % (ctype, L.consts["adj_width"])]
    chunk_zero = []
    for name, width, chunked in L.adj_arrays:
        if chunked:
            pointers.append("%s%s *restrict %s = %s_all + (ptrdiff_t)(t - cb) * B * %d; (void)%s;"
                            % (ind, ctype, name, name, width, name))
            named[name] = ("%s *restrict %s = %s_all + (ptrdiff_t)(t - c0) * B * %d; (void)%s;"
                           % (ctype, name, name, width, name))
            # a chunk's slots of it zeroed at once, before its steps (unless every value
            # in it is written by its one contribution)
            if not all(n in L.assigned for n, (arr, _, _) in L.adjoint.items() if arr == name):
                chunk_zero.append("memset(%s_all + (ptrdiff_t)(t0 - cb) * B * %d, 0, sizeof(%s) * (size_t)tc * B * %d);"
                                  % (name, width, ctype, width))
    out = g.output
    dout, dstride = ref(L, out, adjoint=True)
    seeds = [comment("seeds: dy_t and the carried state adjoints, valid rows only"),
             "if (dy) for (ptrdiff_t b = 0; b < B; ++b) if (VALID(b))",
             "    for (ptrdiff_t j = 0; j < %d; ++j) %s[b * %d + j] += dy[((ptrdiff_t)t * B + b) * %d + j];"
             % (L.O, dout, dstride, L.O)]
    # dcarry holds B rows of each state, in the order of a state row: state k's block
    # starts at B times its offset in the row
    carry = [comment("adjoints of the states at t-1; rows past their length pass theirs through")]
    for k, (name, size, _, _, node) in enumerate(L.states):
        dn, nstride = ref(L, node, adjoint=True)
        soff = L.consts.state(name)
        seeds += ["for (ptrdiff_t b = 0; b < B; ++b) if (VALID(b))",
                  "    for (ptrdiff_t j = 0; j < %d; ++j) %s[b * %d + j] += dcarry[(ptrdiff_t)B * %s + b * %d + j];"
                  % (size, dn, nstride, soff, size)]
        carry += ["for (ptrdiff_t b = 0; b < B; ++b) if (VALID(b))",
                  "    for (ptrdiff_t j = 0; j < %d; ++j) dcarry[(ptrdiff_t)B * %s + b * %d + j] = d%s[b * %d + j];"
                  % (size, soff, size, L.prev[k], size)]
    seeds.append(comment("dL/d(state after step t), the other states held fixed: the carry, "
                         "plus dy_t for the state that is the output"))
    for k, (name, size, _, _, node) in enumerate(L.states):
        direct = ("(dy && VALID(b) ? dy[((ptrdiff_t)t * B + b) * %d + j] : 0) + " % L.O
                  if node == out else "")
        soff = L.consts.state(name)
        seeds += ["if (dstates) for (ptrdiff_t b = 0; b < B; ++b) for (ptrdiff_t j = 0; j < %d; ++j)" % size,
                  "    dstates[((ptrdiff_t)t * B + b) * %d + %s + j] = %sdcarry[(ptrdiff_t)B * %s + b * %d + j];"
                  % (L.S, soff, direct, soff, size)]
    # dx: the steps' own contributions (x read by elementwise math or a concat that is
    # materialised) are copied out; the hoisted bundles' dL/dx come after each chunk
    stepwise = _dx_in_step(L, bwd)
    hoisted = [b for b in L.bundles if b.hoisted]
    if stepwise:
        carry += ["if (dx) memcpy(dx + (ptrdiff_t)t * B * %d, d_x_t, sizeof(%s) * (size_t)B * %d);"
                  % (L.I, ctype, L.I)]
    padding = linear.reads_padded_rows(g, L)
    defs, body, static = [linear.padding_c()] if padding else [], [], []
    for op in bwd.ops:
        d, code = _op_backward(g, L, op, printer, ctype)
        defs += d
        (static if isinstance(op, EwGrad) and op.node in L.static else body).extend(code)
        if isinstance(op, EwGrad) and op.node in L.deferred:
            d, code = _ew_backward_later(g, L, op, printer, ctype)
            defs += d
            static += code
    # the halves of a chunk write disjoint rows, unless some adjoint goes to a parameter
    split = threads and not any("dparams" in c for c in static)
    static = static_block(L, static, named, reverse=True)
    epilogue = _chunk_function(
        "after_steps", "after steps t0..t0+tc-1 (of the chunk from c0): the adjoint "
        "contributions to values that read no state, over their rows",
        regions, static, ctype, L, split=split,
        work=EW_COST * sum(g[n].size for n in set(L.static) | set(L.deferred)))
    # the first hoisted GEMM may overwrite dx when it writes every column of it
    overwrite = not stepwise and hoisted and all(
        p.operand == "x" for b in hoisted for p in b.parts if p.static)
    after = [ln for b in L.bundles for ln in linear.chunk_backward(
        g, L, b, ctype, dx_beta=0 if overwrite and b is hoisted[0] else 1)]
    # pipelined: a chunk's work after its steps (both threads, in blocks) runs alongside
    # the steps of the chunk before it
    pipelined = L.pipelined and split
    if pipelined:
        epilogue += "\n\n" + _after_chunk_blocks(
            regions, bool(static), linear.chunk_backward_blocks(
                g, L, ctype, dx_beta=0 if overwrite else 1), ctype)
    work = (EW_COST * sum(g[n].size for n in set(L.static) | set(L.deferred))
            + sum(b.width * p.width for b in L.bundles for p in b.parts))
    blocks = typed_blocks(ctype)
    zero_dx = [] if stepwise or overwrite else [
        "    if (dx) memset(dx, 0, sizeof({r}) * (size_t)T * (size_t)B * %d);" % L.I]
    scatter = [ln for b in L.bundles for ln in linear.scatter_gradients(g, L, b)]
    dcarry_args = ", ".join("dcarry + (ptrdiff_t)B * %s" % L.consts.state(st[0]) for st in L.states)
    lines = [
        "/* dstates (T x B x S, or NULL): dL/d(state after step t), every t;",
        "   threads: for the GEMMs after each chunk */",
        "int {p}_run_backward(int T, int B, const {r} *params, const {r} *x, const int *lengths,",
        "                     const {r} *state0, {r} *work, const {r} *dy, const {r} *dstate_T,",
        "                     {r} *dparams, {r} *dx, {r} *dstate0, {r} *dstates, int threads)",
        "{",
        "    int rc = check_args(T, B, lengths, 1);",
        "    if (rc) return rc;",
        "    if (!params || !x || !work || !dparams) return 2;",
        "    (void)state0;",
        "    /* CH: the steps a chunk's buffers hold; CS: the steps of a chunk here */",
        "    const int CH = chunk_steps(T, B), CS = BIG_CHUNKS || threads > 1 ? CH : T < CHUNK ? T : CHUNK;",
    ] + regions + [
        "    (void)pack;",
    ] + zero_dx + [
    ] + ["    " + ln for b in L.bundles for ln in linear.pack_backward_panels(L, b, ctype)] + [
    ] + ["    memset(%s, 0, sizeof({r}) * %s);" % (buf, L.consts[key])
         for buf, key, n in (("dparams", "param_count", L.param_count),
                             ("gpack", "gpack_size", L.gpack_size)) if n] + [
        "    rows_to_states(B, dstate_T, %s);" % dcarry_args,
    ] + (pipe_flag(work) + [
        "    chunk_job done = {T, B, 0, 0, 0, 1, lengths, params, x, work, dparams, dx};",
        "    rnnc_blocks blocks = {after_chunk_block, &done, AFTER_BLOCKS, AFTER_LATER, 0, 0};",
        "    int started = 0, pending = 0;",
        "    for (int t1 = T, k = 0; t1 > 0; t1 -= CS, ++k) {",
        "        /* cb: the step in slot 0 of this chunk's buffers (of the two that alternate",
        "           when pipelined) */",
        "        const int t0 = t1 - CS > 0 ? t1 - CS : 0, tc = t1 - t0, cb = t0 - (pipe ? (k & 1) * CH : 0);",
    ] if pipelined else [
        "    for (int t1 = T; t1 > 0; t1 -= CS) {",
        "        const int t0 = t1 - CS > 0 ? t1 - CS : 0, tc = t1 - t0, cb = t0;",
    ]) + ["        " + ln for ln in chunk_zero] + [
        "        for (int t = t1 - 1; t >= t0; --t) {",
    ] + pointers + [ind + ln for ln in zero] + [ind + ln for blk in (seeds, body, carry) for ln in blk] + [
        "        }",
    ] + ([
        "        /* the chunk after this one (in time) is done with; this one's work after its",
        "           steps goes to the helper and runs alongside the next chunk's steps */",
        "        if (pending) %s(&blocks, started);" % blocks[1],
        "        if (pipe) {",
        "            const chunk_job job = {T, B, cb, t0, tc, 1, lengths, params, x, work, dparams, dx};",
        "            done = job;",
        "            started = %s(&blocks);" % blocks[0],
        "            pending = 1;",
        "            continue;",
        "        }",
    ] if pipelined else []) + [
        "        after_steps_split(T, B, cb, t0, tc, 1, threads, lengths, params, x, work, dparams);"] + (
        ["        const int padded = lengths && chunk_has_padding(t1, B, lengths);"]
         if padding else []) + ["        " + ln for ln in after] + [
        "        (void)tc;",
        "    }",
    ] + (["    if (pending) %s(&blocks, started);" % blocks[1]] if pipelined else []) + [
        "    " + ln for ln in scatter] + [
        "    if (dstate0) states_to_rows(B, %s, dstate0);" % dcarry_args,
        "    return 0;",
        "}",
        "",
        "int {p}_backward(int T, int B, const {r} *params, const {r} *x, const int *lengths,",
        "                 const {r} *state0, {r} *work, const {r} *dy, const {r} *dstate_T,",
        "                 {r} *dparams, {r} *dx, {r} *dstate0)",
        "{ return {p}_run_backward(T, B, params, x, lengths, state0, work, dy, dstate_T, dparams, dx, dstate0, NULL, 1); }",
    ]
    return "\n\n".join(defs + [epilogue, "\n".join(lines).replace("{r}", ctype).replace("{p}", p)])
