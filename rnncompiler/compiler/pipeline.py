"""rc.compile: the stages in order — graph, fuse, differentiate, render C, build — with the
on-disk cache in front, keyed by everything that shapes the binary.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
import warnings

import numpy as np

from . import build, tuning
from .variants import DEFAULT as DEFAULT_TUNING
from .. import options
from .dsl import Cell, CellSpec, bind_columns, bind_sizes
from ..errors import CompileError
from .expr import Term
from ..runtime.kernel import Kernel

# graph (networkx), autodiff and codegen are imported when a kernel is first built: a
# cache hit needs none of them

VERSION = "0.1.0"
DTYPES = ("float32", "float64")


def fingerprint(spec):
    """A stable text of everything in a cell spec that shapes the generated code."""
    parts = [spec.name, repr(spec.states), repr(spec.new_states), spec.output,
             repr(spec.params)]
    if spec.inputs != CellSpec.inputs or spec.context or spec.masks:
        # the blocks of the input row: the manifest's, and how masks are drawn
        parts.append(repr((spec.inputs, spec.context, spec.masks)))
    sympy_exprs = []
    for node in spec.nodes:
        parts.append("%s|%s|%s|%s|%s|%s|%s|%s|%s" % (node.id, node.op, node.args, node.size,
                                                     node.scalar, node.how, node.shape, node.name,
                                                     node.offset)
                     + ("|frozen" if node.frozen else ""))
        if isinstance(node.expr, Term):
            parts.append(node.expr.key())
        elif node.expr is not None:           # sympy math of rc.elementwise / rc.activation
            parts.append("sympy expression %d" % len(sympy_exprs))
            sympy_exprs.append(node.expr)
    if sympy_exprs:
        parts += _sympy_fingerprint(sympy_exprs)
    return "\n".join(parts)


def _sympy_fingerprint(exprs):
    """srepr of sympy expressions, and the forward and derivative of the user activations
    they call (sympy is loaded: these came from it)."""
    import sympy
    parts, acts = [sympy.srepr(e) for e in exprs], {}
    for e in exprs:
        for f in e.atoms(sympy.Function):
            if hasattr(f, "_rnnc_forward"):
                acts[type(f).__name__] = f
    u = sympy.Symbol("u", real=True)
    for name in sorted(acts):
        f = type(acts[name])(u)
        parts.append("%s=%s;%s" % (name, sympy.srepr(f._rnnc_forward(u)), sympy.srepr(f.fdiff())))
    return parts


@functools.lru_cache(maxsize=None)
def generator_fingerprint():
    """A hash of the sources that shape the generated C, its build and its manifest, so
    that a changed generator never loads a binary made by another one (the cell itself is
    in the key through its spec; the rest of the package does not shape the binary)."""
    here = os.path.dirname(os.path.abspath(__file__))
    h = hashlib.sha256()
    for rel in GENERATOR_SOURCES:
        path = os.path.join(here, rel)
        files = sorted(os.path.join(path, f) for f in os.listdir(path)) if os.path.isdir(path) else [path]
        for name in files:
            if name.endswith((".py", ".c", ".h")):
                with open(name, "rb") as f:
                    h.update(os.path.relpath(name, here).encode() + b"\0" + f.read())
    return h.hexdigest()


# the cell language (dsl.py: the spec and its Size.bind) and its expressions (expr.py:
# Term -> sympy) shape the C as much as the stages after them; equations.py and
# recurrence.py shape the metadata kept with it; csrc holds the C pasted into every kernel
GENERATOR_SOURCES = ("dsl.py", "expr.py", "ir.py", "ops.py", "notation.py", "graph.py", "autodiff.py",
                     "variants.py",
                     "activations.py", "mathfn.py", "equations.py", "recurrence.py",
                     "pipeline.py", "build.py", "../runtime/kernel.py", "../runtime/meta.py",
                     "codegen", "csrc")


@functools.lru_cache(maxsize=None)
def _sympy_version():
    """sympy's version without importing it (it shapes the C: printing, cse, diff)."""
    from importlib.metadata import version
    return version("sympy")


def cache_key(cell, sizes, dtype, opt_level, blas, tuning=DEFAULT_TUNING):
    ident = {"cell": fingerprint(cell.spec), "sizes": sorted(sizes.items()), "dtype": dtype,
             "opt": opt_level, "blas": blas, "version": VERSION, "generator": generator_fingerprint(),
             "tuning": tuning.key(),
             "py": sys.implementation.cache_tag,
             "machine": build.machine_identity(), "sympy": _sympy_version()}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def lower(cell, sizes, dtype, blas, prefix="rnnc", tuning=DEFAULT_TUNING, batch1=False):
    """Cell -> (fused step graph, backward step, C source): the whole symbolic part;
    tuning: what this core's products call (compile passes the measured one); batch1: a
    unit of its own for inference at batch 1 where the weights stay in L1."""
    from .autodiff import differentiate
    from .codegen import render_c, with_batch1_unit
    from .graph import build_graph, format_graph, fuse_elementwise
    g = fuse_elementwise(build_graph(cell.spec, sizes))
    bwd = differentiate(g)
    csrc = render_c(g, bwd, dtype, prefix=prefix, blas=blas, fast_math=True, microkernel=True,
                    runtime=bool(blas), tuning=tuning)
    if batch1:
        csrc = with_batch1_unit(csrc, g, bwd)
    if options.debug_level() >= 1:
        print(format_graph(g), file=sys.stderr)
        print("backward: %s\ntape (per step): %s" % (", ".join(type(op).__name__ + "(" + op.node + ")"
                                                        for op in bwd.ops), ", ".join(bwd.tape)),
              file=sys.stderr)
    if options.debug_level() >= 2:
        print(csrc.text, file=sys.stderr)
    return g, bwd, csrc


def _meta(cell, g, bwd, sizes, dtype, csrc):
    from .codegen import history_layout
    from .graph import frozen_params
    from .recurrence import classify, to_meta
    columns = bind_columns(cell.spec, sizes)
    return {"name": cell.name, "dtype": dtype, "prefix": csrc.prefix, "cdef": csrc.cdef,
            "runtime": csrc.runtime, "batch1": csrc.batch1,
            # the products call a tuned variant: the kernel links every variant's object
            "tuned": csrc.layout.variant is not None,
            "input_size": columns.step_width, "hidden_size": sizes["H"], "sizes": sizes,
            "columns": columns.to_meta(),
            "states": g.states, "output_size": csrc.layout.O,
            "pack_size": csrc.layout.pack_size,
            "history": history_layout(csrc.layout),
            "params": [(n, list(s)) for n, s in g.params],
            "frozen": sorted(frozen_params(g)),
            "tape": tape_plan_rows(g, csrc.layout),
            "equations": _equations(cell, g, bwd, sizes).as_dict(),
            "recurrence": to_meta(classify(g))}


def _equations(cell, g, bwd, sizes):
    """The equations as the cell writes them: its named values kept apart. When fusion
    kept every named value anyway (or there is none), they are the compiled step's own,
    and the step is not built and differentiated a second time."""
    from .equations import derive_equations, named_equations
    from .graph import build_graph
    from .ops import LEAVES
    named = {n.id for n in cell.spec.nodes if n.name and n.op not in LEAVES}
    if named <= set(g):
        return derive_equations(g, bwd)
    return named_equations(build_graph(cell.spec, sizes))


def tape_plan_rows(g, layout):
    """What each value array holds, its width per batch row, and whether it is taped."""
    from .equations import display_names, render_expr
    names = display_names(g)
    for n, saved in layout.saved.items():        # σ(a_f[t]) kept in a_f[t]'s place
        args = g[n].args
        for k, S in saved.items():
            names[args[k]] = (render_expr(S, args, names)[0], "")
    rows = [{"holds": [s + "[t]" for s, _ in g.states], "width": layout.S,
             "taped": True}]
    for a in layout.arrays:
        held = [names[n][0] for n, (arr, _, _) in layout.value.items()
                if arr == a.name and n in names and n != "x" and not n.startswith("state.")]
        rows.append({"holds": held, "width": a.width, "taped": a.taped})
    return rows


def dtype_name(dtype):
    """'float32' or 'float64' from any numpy spelling of them ("f4", np.float64, ...)."""
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if dtype is None or name not in DTYPES:
        raise ValueError("dtype: expected 'float32' or 'float64', got %r" % (dtype,))
    return name


def compile(cell, input_size, hidden_size, dtype="float32", *, sizes=None, opt_level=None,
            blas=True, checkpoint=None, verify=True):
    """Compile a cell into a Kernel of forward/backward functions over whole sequences.

    Parameters: the cell (from @rc.cell), the input size I and hidden size H, the dtype
    ("float32" or "float64"), sizes for other size names, the gcc optimisation level
    (default $RNNC_OPT_LEVEL or 3), whether linear maps call OpenBLAS, and checkpoint=k:
    forward keeps the states every k steps only and backward recomputes each segment
    (tape memory O(T/k + k) steps for one more forward pass; the binary is the same), and
    verify: a kernel not yet checked runs once against the numpy reference evaluator before
    it is used (a CompileError names the first value that differs and its equation); the
    cache records the check, so that a hit costs nothing.
    """
    if not isinstance(cell, Cell):
        raise TypeError("cell: expected a cell made with @rc.cell, got %r" % (cell,))
    if checkpoint is not None and (isinstance(checkpoint, bool) or not isinstance(
            checkpoint, (int, np.integer)) or checkpoint < 1):
        raise ValueError("checkpoint: expected None or an int >= 1 (steps per segment), "
                         "got %r" % (checkpoint,))
    dtype = dtype_name(dtype)
    opt_level = options.opt_level(opt_level)
    blas = options.flag("blas", blas)
    bound = bind_sizes(cell, input_size, hidden_size, sizes)
    tuned = tuning.for_kernel(dtype, opt_level) if blas else DEFAULT_TUNING
    if blas:
        load_openblas(tuned)
    key = cache_key(cell, bound, dtype, opt_level, blas, tuned)

    generated = []

    def generate():
        # a batch-1 unit where speed is asked for (-O2, -O3; as the tuning): at -O0/-O1
        # inference at batch 1 runs the kernel's own loop
        g, bwd, csrc = lower(cell, bound, dtype, blas, tuning=tuned, batch1=opt_level >= 2)
        generated.append(True)
        return csrc, _meta(cell, g, bwd, bound, dtype, csrc)

    verify = options.flag("verify", verify)
    module, meta = build.load_or_build(key, generate, opt_level=opt_level, blas=blas)
    c_text, verified = build.read_entry(key)
    if c_text is None:              # its C is gone or cut short: the entry is built anew
        build.discard(key)
        module, meta = build.load_or_build(key, generate, opt_level=opt_level, blas=blas)
        c_text, verified = build.read_entry(key)
    rebuild = functools.partial(load_kernel, key, c_text, meta, opt_level, blas)
    kern = Kernel(module, meta, key, rebuild, cell, None if checkpoint is None else int(checkpoint))
    kern.loaded_from_cache = not generated
    if verify and not verified:
        verify_kernel(kern, cell, bound, key)
    return kern


_OPENBLAS_WARNED = set()


def load_openblas(tuned):
    """OpenBLAS with the kernel set the tuning chose, loaded before the kernel that links
    it; a warning (once) when the process already runs another set: the kernel computes
    the same values, its last bits and its speed may differ from the tuned ones."""
    runs = build.load_openblas(tuned.blas_core)
    want = tuned.blas_core
    if want and runs.lower() != want.lower() and want not in _OPENBLAS_WARNED:
        _OPENBLAS_WARNED.add(want)
        warnings.warn("OpenBLAS was loaded into this process with its %s kernels before a "
                      "kernel tuned for its %s kernels (a kernel built at -O0/-O1 or with "
                      "RNNC_TUNING=default loads OpenBLAS's own pick); it keeps them: compile the "
                      "tuned kernels first" % (runs, want),
                      RuntimeWarning, stacklevel=3)
    return runs


def verify_kernel(kern, cell, sizes, key):
    """Check a kernel against the reference evaluator of its cell, record that in its cache
    entry, or discard the entry and raise CompileError naming what differs."""
    from . import selfcheck
    from .graph import build_graph
    problem = selfcheck.first_problem(kern, build_graph(cell.spec, sizes), kern._meta["equations"])
    if problem is None:
        build.mark_verified(key)
        return
    kept = build.discard(key)
    raise CompileError("the kernel compiled for %s is wrong, so it was not cached: %s. This is "
                       "a fault of rnncompiler's code generation, not of the cell; please report "
                       "it with the kept C file (%s). rc.compile(..., verify=False) skips this "
                       "check." % (cell.name, problem, kept), c_file=kept)


def load_kernel(key, c_text, meta, opt_level, blas):
    """A kernel from its cache entry, rebuilt from its C text if the entry is gone."""
    hit = build.load_cached(key)
    if hit is None:
        from .codegen import kept_source
        csrc = kept_source(c_text, meta["cdef"], meta, blas)
        hit = build.load_or_build(key, lambda: (csrc, meta), opt_level=opt_level, blas=blas)
    module, meta = hit
    rebuild = functools.partial(load_kernel, key, c_text, meta, opt_level, blas)
    return Kernel(module, meta, key, rebuild)
