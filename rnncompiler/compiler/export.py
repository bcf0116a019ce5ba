"""rc.export_c: a cell's forward and backward kernels as a standalone C99 pair NAME.h +
NAME.c, for programs that never load Python. The C comes from the generator the cffi
kernels use (plain libm and plain loops, or any CBLAS); the header documents the ABI, the
flat parameter layout, the state layout, lengths and the workspace.
"""
from __future__ import annotations

import contextlib
import os
import unicodedata
from dataclasses import dataclass

import numpy as np

from .dsl import Cell, check_identifier
from ..errors import CellError
from .dsl import bind_sizes
from .pipeline import VERSION, dtype_name

# Words C99, C11 and C23 reserve (a name is also refused when it starts with "_": the C
# standard reserves those at file scope).
C_KEYWORDS = frozenset("""
    auto break case char const continue default do double else enum extern float for goto
    if inline int long register restrict return short signed sizeof static struct switch
    typedef union unsigned void volatile while _Bool _Complex _Imaginary _Alignas _Alignof
    _Atomic _Generic _Noreturn _Static_assert _Thread_local alignas alignof bool constexpr
    false nullptr static_assert thread_local true typeof typeof_unqual
""".split())

# exported blas option -> the generator's flavour ("openblas" is scipy-openblas32's
# renamed symbols with pthreads: right for the JIT kernels, wrong for a standalone file)
NAME_MAX = 255          # bytes in a file name on most file systems
BLAS_OPTIONS = {False: False, None: False, True: "cblas", "cblas": "cblas"}

# how the equations' symbols read in ASCII comments
_ASCII = {"δ": "d", "σ": "sigmoid", "ᵀ": "^T", "⁺": "+", "Σ_t ": "sum_t ", "Σ": "sum",
          "⊙": "*", "…": "..."}


@dataclass(frozen=True)
class CExport:
    """What export_c wrote: the two paths, and the layouts the header documents.

    params: ((name, shape, offset, count), ...) in the flat parameter vector;
    states: ((name, size, offset), ...) in a state row of `state_size` scalars.
    """
    name: str
    header: str
    source: str
    dtype: str
    input_size: int
    state_size: int
    output_size: int
    params: tuple
    states: tuple

    @property
    def param_count(self):
        return sum(count for _, _, _, count in self.params)

    def flat_params(self, params):
        """The flat parameter vector (the layout of NAME.h) from a dict name -> array,
        e.g. `kern.init_params()`, in this export's dtype."""
        if not isinstance(params, dict):
            raise TypeError("params: expected a dict name -> array, got %s"
                            % type(params).__name__)
        unknown = sorted(set(params) - {p[0] for p in self.params})
        if unknown:
            raise KeyError("params: unknown parameter %r; %s has %s"
                           % (unknown[0], self.name, [p[0] for p in self.params]))
        parts = []
        for name, shape, _, _ in self.params:
            if name not in params:
                raise KeyError("params: missing parameter %r of shape %s" % (name, shape))
            arr = np.asarray(params[name], dtype=self.dtype)
            if arr.shape != tuple(shape):
                raise ValueError("params[%r]: expected shape %s, got %s"
                                 % (name, tuple(shape), arr.shape))
            parts.append(arr.ravel())
        return np.concatenate(parts) if parts else np.empty(0, self.dtype)

    def split_params(self, flat):
        """A dict name -> array (views) from a flat vector such as `dparams`."""
        flat = np.asarray(flat)
        if flat.shape != (self.param_count,):
            raise ValueError("flat: expected shape (%d,), got %s" % (self.param_count, flat.shape))
        return {name: flat[off:off + count].reshape(shape)
                for name, shape, off, count in self.params}


def check_c_name(name, what="name"):
    """`name` if it can prefix every exported C symbol, else a CellError saying why."""
    check_identifier(name, what)
    if name in C_KEYWORDS:
        raise CellError("%s: %r is a C keyword; pick another prefix for the exported "
                        "symbols, e.g. name=%r" % (what, name, name + "_cell"))
    if name.startswith("_"):
        raise CellError("%s: %r starts with '_', which C reserves at file scope; pick a "
                        "name that starts with a letter, e.g. name=%r"
                        % (what, name, name.lstrip("_") or "cell"))
    if (name + "_").startswith("RNNC_"):
        # the header's NAME_PARAM_COUNT would be the kernel's own RNNC_PARAM_COUNT
        raise CellError("%s: %r starts with RNNC, the prefix of the generated C's own "
                        "constants and macros; pick another name, e.g. name=%r"
                        % (what, name, "cell" + name[len("RNNC"):]))
    return name


def export_c(cell, out_dir, input_size, hidden_size, dtype="float32", name=None, *,
             sizes=None, blas=False, libm=False):
    """Write NAME.h and NAME.c: the cell's forward and backward kernels in portable C99.

    Parameters: the cell (from @rc.cell); the directory (created if missing); the input
    size I and hidden size H; dtype "float32" (C float) or "float64" (double); name, the
    prefix of every C symbol and the files' name (default: the cell's name); sizes for
    other size names; blas=False for plain loops (libm only) or "cblas" (True) for
    cblas_sgemm/cblas_dgemm calls from any CBLAS; libm=True calls libm's exp, tanh and
    log, which compilers do not vectorise, instead of the package's branch-free ones
    (within 2 ulp in float, 1 in double; the JIT kernels' choice).
    Returns a CExport (paths, layouts, `flat_params` to save weights in the C layout).

        >>> exp = rc.export_c(lstm, "out", input_size=3, hidden_size=4)   # doctest: +SKIP
        >>> exp.header, exp.source                                       # doctest: +SKIP
        ('out/lstm.h', 'out/lstm.c')
    """
    if not isinstance(cell, Cell):
        raise TypeError("cell: expected a cell made with @rc.cell, got %r" % (cell,))
    if not isinstance(out_dir, (str, os.PathLike)):
        raise TypeError("out_dir: expected a directory path, got %r" % (out_dir,))
    dtype = dtype_name(dtype)
    name = check_c_name(cell.name if name is None else name)
    if len(name) + len(".h") > NAME_MAX:
        raise CellError("name: %d characters make file names NAME.h and NAME.c longer than "
                        "%d, the limit of most file systems; pick a name of at most %d "
                        "characters" % (len(name), NAME_MAX, NAME_MAX - 2))
    if not isinstance(blas, (bool, str, type(None))) or blas not in BLAS_OPTIONS:
        raise ValueError("blas: expected False (plain C loops) or 'cblas', got %r" % (blas,))
    bound = bind_sizes(cell, input_size, hidden_size, sizes)
    if not isinstance(libm, bool):
        raise TypeError("libm: expected True or False, got %r" % (libm,))
    g, bwd, csrc = _lower(cell, bound, dtype, name, BLAS_OPTIONS[blas], libm)
    from .equations import derive_equations
    header = render_header(cell, g, bound, derive_equations(g, bwd), csrc)
    source = render_source(cell, csrc)
    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    paths = [os.path.join(out_dir, name + ext) for ext in (".h", ".c")]
    for path, text in zip(paths, (header, source), strict=True):
        _write(path, text)
    L = csrc.layout
    return CExport(name, paths[0], paths[1], dtype, L.I, L.S, L.O,
                   tuple((n, tuple(s), off, count) for n, s, off, count in L.params),
                   tuple((n, size, off) for n, size, off, _, _ in L.states))


def _lower(cell, sizes, dtype, prefix, blas, libm=False):
    """The generator's C for an exported kernel: the vectorisable exp, tanh and log (or
    libm's), strict IEEE arithmetic either way."""
    from .autodiff import differentiate
    from .codegen import render_c
    from .graph import build_graph, fuse_elementwise
    g = fuse_elementwise(build_graph(cell.spec, sizes))
    bwd = differentiate(g)
    # per-step products: the portable register-blocked microkernel over packed panels
    return g, bwd, render_c(g, bwd, dtype, prefix=prefix, blas=blas, fast_math=not libm,
                            microkernel="portable")


def _write(path, text):
    """Write via a temporary file, so a reader never sees half a file."""
    # a short name of its own: NAME.h plus a suffix could pass the file-name limit
    tmp = os.path.join(os.path.dirname(path), ".rnnc-%d-%s.tmp" % (os.getpid(), os.urandom(4).hex()))
    try:
        with open(tmp, "x", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def ascii_comment(text):
    """Text safe inside a C block comment, in ASCII (δ -> d, σ -> sigmoid, ...)."""
    for k, v in _ASCII.items():
        text = text.replace(k, v)
    text = "".join(c if ord(c) < 128 else "{%s}" % unicodedata.name(c, "U+%04X" % ord(c))
                   for c in text)
    return text.replace("*/", "* /").replace("/*", "/ *")


def render_source(cell, csrc):
    """NAME.c: the generated C, behind the header that declares its functions."""
    p = csrc.prefix
    return "\n".join([
        "/* %s.c: forward and backward (BPTT) of the recurrent cell `%s`, generated by" % (p, cell.name),
        "   rnncompiler %s. Every function is documented in %s.h. */" % (VERSION, p),
        '#include "%s.h"' % p,
        "",
    ]) + csrc.text


# ---------------------------------------------------------------- the header

def render_header(cell, g, sizes, equations, csrc):
    """NAME.h: the ABI of API section 5 with every function, layout and code documented
    in comments, and the layout as macros."""
    p, L = csrc.prefix, csrc.layout
    real = "float" if csrc.dtype == "float32" else "double"
    doc = _header_doc(cell, g, sizes, equations, csrc, real)
    guard = "RNNC_EXPORT_%s_H" % p
    lines = ["/*"] + [(" * " + ln).rstrip() for ln in doc] + [" */",
             "#ifndef %s" % guard, "#define %s" % guard, "",
             "#include <stddef.h>", "",
             "#ifdef __cplusplus", 'extern "C" {', "#endif", ""]
    lines += _macros(L, p) + [""]
    lines += [ln.replace("{p}", p).replace("{r}", real) for ln in PROTOTYPES.splitlines()]
    lines += ["", "#ifdef __cplusplus", "}", "#endif", "", "#endif /* %s */" % guard, ""]
    return "\n".join(lines)


def _symbolic_shapes(cell):
    """param name -> its shape as declared, e.g. ("H", "H+I")."""
    return {n.id[len("param."):]: tuple(str(s) for s in n.shape)
            for n in cell.spec.nodes if n.op == "param"}


def _shape_text(symbolic, shape):
    """(H, H+I) = (4, 7); (4, 7) when declared with numbers; scalar for ()."""
    if not shape:
        return "scalar"
    bound = "(%s)" % ", ".join(str(s) for s in shape)
    sym = "(%s)" % ", ".join(symbolic)
    return bound if sym == bound else "%s = %s" % (sym, bound)


def _table(rows):
    """Rows of strings as aligned columns."""
    widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
    return ["    " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def _header_doc(cell, g, sizes, equations, csrc, real):
    p, L = csrc.prefix, csrc.layout
    shapes = _symbolic_shapes(cell)
    size_text = ", ".join("%s = %d" % (k, v) for k, v in
                          [("I", sizes["I"]), ("H", sizes["H"])] +
                          sorted((k, v) for k, v in sizes.items() if k not in ("H", "I")))
    out_state = [s for s, node in g.new_states if node == g.output]
    output = ("y[t] is the state %s after step t" % out_state[0] if out_state
              else "y[t] is the cell's explicit output")
    prows = [("name", "shape", "offset", "count")] + [
        (n, _shape_text(shapes.get(n, ()), s), str(off), str(c)) for n, s, off, c in L.params]
    srows = [("state", "size", "offset in the row")] + [
        (s, "%s = %d" % (cell.states[s], size) if str(cell.states[s]) != str(size) else str(size),
         str(off)) for s, size, off, _, _ in L.states]
    blas = ("\nLinear maps call cblas_%sgemm: #include <cblas.h> must find a CBLAS header\n"
            "and the program must link a CBLAS (e.g. -lopenblas, or -lcblas)."
            % ("s" if real == "float" else "d")) if csrc.blas else ""
    text = HEADER_DOC.format(p=p, r=real, cell=cell.name, version=VERSION, sizes=size_text,
                             I=L.I, S=L.S, O=L.O, n=L.param_count, output=output,
                             libs="-lm" + (" and a CBLAS" if csrc.blas else ""), blas=blas)
    fwd = ["    %s %s %s" % eq for eq in equations.forward]
    bwd = ["    %s %s %s" % eq for eq in equations.backward]
    text = (text.replace("@FORWARD@", "\n".join(fwd)).replace("@BACKWARD@", "\n".join(bwd))
            .replace("@PARAMS@", "\n".join(_table(prows)))
            .replace("@STATES@", "\n".join(_table(srows)))
            .replace("@COLUMNS@", _columns_doc(cell, sizes)))
    return ascii_comment(text).splitlines()


def _columns_doc(cell, sizes):
    """For a cell with several inputs, contexts or masks: the blocks of the row x[t]."""
    from .dsl import bind_columns
    cols = bind_columns(cell.spec, sizes)
    if len(cols.blocks()) == 1:
        return ""
    what = {"input": "a per-step input", "context": "a per-sequence input: the caller repeats "
            "it at every step; its gradient is the sum of dx over t",
            "mask": "a random mask (rc.dropout, rc.zoneout): drawn by the caller in "
            "training, its expectation at inference"}
    rows = [("block", "columns", "holds")] + [
        (name, "%d..%d" % (col, col + n - 1), what[kind]) for name, col, n, kind in cols.blocks()]
    return ("\n  The row holds several blocks side by side, in this order:\n"
            + "\n".join(_table(rows)))


def _macros(L, p):
    """The sizes and offsets as integer constants (for static arrays and pointer math)."""
    out = ["/* sizes and offsets, also as constants (scalars of real, not bytes) */",
           "#define %s_INPUT_SIZE %d" % (p, L.I),
           "#define %s_STATE_SIZE %d" % (p, L.S),
           "#define %s_OUTPUT_SIZE %d" % (p, L.O),
           "#define %s_PARAM_COUNT %d" % (p, L.param_count)]
    for n, _, off, count in L.params:
        out += ["#define %s_PARAM_%s_OFFSET %d" % (p, n, off),
                "#define %s_PARAM_%s_COUNT %d" % (p, n, count)]
    for s, size, off, _, _ in L.states:
        out += ["#define %s_STATE_%s_OFFSET %d" % (p, s, off),
                "#define %s_STATE_%s_SIZE %d" % (p, s, size)]
    return out


HEADER_DOC = """\
{p}.h: forward and backward-through-time (BPTT) kernels of the recurrent cell `{cell}`,
exported by rnncompiler {version}. Portable C99; link with {libs}.{blas}

Compiled for {sizes}; every real is a `{r}`.

THE CELL, one step t (x[t] the input, s[t-1] the states it reads, y[t] its output):
@FORWARD@

Its backward step, derived symbolically, run for t = T-1 down to 0 (dv = dL/dv; ds[t]+ is
the adjoint of state s carried back from step t+1, dL/ds[T-1] at the last step):
@BACKWARD@

DATA LAYOUT. Every array is dense and C-contiguous (row-major), of `{r}` unless said.

params, dparams: the flat parameter vector of {p}_param_count() = {n} reals: each
  parameter C-contiguous at its offset, in declaration order:
@PARAMS@
  A matrix W of shape (rows, cols) has W[i][j] at params[offset + i*cols + j].
x: T*B*I reals, time-major: x[(t*B + b)*I + i] is input i of batch row b at step t
  (I = {I}). dx has the same layout.@COLUMNS@
y: T*B*O reals, y[(t*B + b)*O + j] (O = {O}); {output}. dy the same.
state0, state_T, dstate_T, dstate0: B*S reals, one row of S = {S} per batch row holding
  every state, concatenated in declaration order:
@STATES@
  state0 = NULL starts every state at zero; dstate_T = NULL means a loss that does not
  read the final states.
lengths: B ints, or NULL (every row runs all T steps). Row b runs steps
  0 .. lengths[b]-1: for t >= lengths[b] its y is 0, its states are kept (state_T holds
  those after its last step, state0 when lengths[b] = 0) and dy there is ignored.
  0 <= lengths[b] <= T, in any order. x past a row's length (NaN and inf included) and
  the state0 of a row of length 0 reach no gradient: dx is 0 there, and that row's
  dstate0 is its dstate_T.
work: {p}_workspace_size(T, B) reals of scratch that the caller allocates (nothing is
  allocated inside). forward fills it with the tape: packed weights, the states at
  every step, and the values the backward step reads. backward reads the tape and uses
  the rest as scratch: the tape is left as forward wrote it, so backward may run again.
  Give backward the T, B, params, x, lengths and state0 that forward got, and its work
  untouched. {p}_infer needs {p}_infer_workspace_size(T, B) reals and keeps no tape.
  Any alignment of a real works; a work that starts on 64 bytes (aligned_alloc(64, n),
  n rounded up to 64) keeps the packed weights on cache lines, which the per-step
  products read fastest (at batch 1, up to half again the time otherwise).

RETURN CODES. Every int function returns 0 on success, else (writing nothing at all):
  1  T < 1 or B < 1
  4  T and B so large that the workspace size overflows (workspace_size is SIZE_MAX)
  3  a length outside [0, T]
  2  a required pointer is NULL: params, x, y, state_T or work for forward and infer;
     params, x, work or dparams for backward

THREADS. No global or static mutable state: calls with different work (and output)
buffers may run concurrently."""


PROTOTYPES = """\
/* Scalars in the flat parameter vector (params and dparams). */
size_t {p}_param_count(void);
/* I: scalars of one input vector x[t] of one batch row. */
size_t {p}_input_size(void);
/* S: scalars of all states of one batch row, concatenated in declaration order. */
size_t {p}_state_size(void);
/* O: scalars of one output vector y[t] of one batch row. */
size_t {p}_output_size(void);
/* Reals of `work` for {p}_forward and {p}_backward over T steps and B rows: the tape
   and backward's scratch. SIZE_MAX if T < 1, B < 1 or the size overflows. */
size_t {p}_workspace_size(int T, int B);

/* The whole sequence forward, keeping the tape in work for {p}_backward.
   params: param_count reals; x: T*B*I; lengths: B, or NULL for all T; state0: B*S, or
   NULL for zeros. Writes y (T*B*O), state_T (B*S, the states after each row's last
   step) and work (workspace_size(T, B) reals). Returns 0, or a code of the list above. */
int {p}_forward(int T, int B, const {r} *params, const {r} *x,
                const int *lengths, const {r} *state0, {r} *y,
                {r} *state_T, {r} *work);

/* Exact gradients of the forward function (BPTT over all T steps) for a loss whose
   gradients are dy (T*B*O, or NULL: zero) and dstate_T (B*S, or NULL: zero).
   T, B, params, x, lengths, state0: as given to {p}_forward; work: as it left it.
   Overwrites dparams (param_count reals, summed over steps and rows); writes dx
   (T*B*I) and dstate0 (B*S) unless they are NULL. May be called again on the same work.
   Returns 0, or a code of the list above. */
int {p}_backward(int T, int B, const {r} *params, const {r} *x,
                 const int *lengths, const {r} *state0, {r} *work,
                 const {r} *dy, const {r} *dstate_T,
                 {r} *dparams, {r} *dx, {r} *dstate0);

/* Streaming, one sequence one step at a time (batch 1, the state carried from call to
   call), real-time safe: no allocation, no lock, no system call. {p}_pack packs the
   weights once into the start of work ({p}_step_workspace_size() reals); then each
   {p}_step reads x_t (I reals) and state_in (S reals, NULL for zeros; it may be
   state_out), and writes y_t (O reals) and state_out (S reals). Pack again after
   changing params; {p}_step reads the vectors and scalars of params directly. Return 0,
   or 2 for a NULL among params, x_t, y_t, state_out and work. {p}_steps runs T samples
   (x: T*I reals, y: T*O) in one call, as T calls of {p}_step would, to the bit (a block
   of audio); it returns 1 for T < 1, 2 for a NULL among params, x, y, state_out, work. */
size_t {p}_step_workspace_size(void);
int {p}_pack(const {r} *params, {r} *work);
int {p}_step(const {r} *params, const {r} *x_t, const {r} *state_in, {r} *y_t,
             {r} *state_out, {r} *work);
int {p}_steps(int T, const {r} *params, const {r} *x, const {r} *state_in, {r} *y,
              {r} *state_out, {r} *work);

/* Forward without a tape (inference): arguments and results as {p}_forward, but work
   holds {p}_infer_workspace_size(T, B) reals, which grows with B only (T up to 64
   steps at a time), and cannot feed {p}_backward. */
size_t {p}_infer_workspace_size(int T, int B);
int {p}_infer(int T, int B, const {r} *params, const {r} *x,
              const int *lengths, const {r} *state0, {r} *y,
              {r} *state_T, {r} *work);

/* The general forms behind the functions above. keep = 1 is {p}_forward, keep = 0 is
   {p}_infer (with its workspace). dstates (T*B*S, or NULL) receives dL/d(state after
   step t) for every t: the adjoint passed on to step t+1 (or dstate_T), plus dy[t]
   for the state that is the output. threads is unused in exported kernels: pass 1. */
int {p}_run_forward(int T, int B, const {r} *params, const {r} *x,
                    const int *lengths, const {r} *state0, {r} *y,
                    {r} *state_T, {r} *work, int keep, int threads);
int {p}_run_backward(int T, int B, const {r} *params, const {r} *x,
                     const int *lengths, const {r} *state0, {r} *work,
                     const {r} *dy, const {r} *dstate_T,
                     {r} *dparams, {r} *dx, {r} *dstate0, {r} *dstates,
                     int threads);"""
