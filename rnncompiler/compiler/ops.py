"""The op registry: everything the compiler knows about one kind of node of the step IR,
in one `Op` entry — the checks `typecheck()` runs, how it prints (text and LaTeX), its
numpy evaluation and reverse-mode pullback (the reference), and its derivative rule (the
symbolic VJP that autodiff collects into the backward step) with how the derived
equations print. The stages look an op up in OPS by `node.op`.

Two things about an op stay with the stage they belong to, keyed by the op's name in a
table of their own, because they need that stage's whole machinery: its C lowering
(codegen.LOWERING: buffers, bundles of GEMMs) and its recurrence rule
(recurrence.RULES). tests/test_ops.py fails when an op lacks either; docs/adding-an-op.md
lists what a new op needs.

Notation: for a node y = op(a0, ..., ak), `g` is the adjoint dL/dy and `y` its value.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import sympy

from . import mathfn
from ..errors import CellError
from .notation import math_text

G = sympy.Symbol("g", real=True)   # the adjoint of the node being differentiated
Y = sympy.Symbol("y", real=True)   # the node's own (saved) value


# ---------------------------------------------------------------- the backward step's ops

@dataclass(frozen=True)
class EwGrad:
    """da_i += g * df/da_i for each operand of an elementwise node."""
    node: str
    args: tuple
    contributions: tuple      # ((arg index, sympy expr in a0..ak, y, g), ...)
    uses_y: bool


@dataclass(frozen=True)
class LinearGrad:
    """For y = sum_k W_k v_k + sum_j b_j: dv_k += dy W_k; dW_k += dy^T v_k; db_j += column
    sums of dy."""
    node: str
    terms: tuple              # ((v, W), ...)
    biases: tuple             # (b, ...)


@dataclass(frozen=True)
class ConcatGrad:
    node: str
    parts: tuple


@dataclass(frozen=True)
class ReduceGrad:
    node: str
    v: str
    how: str


@dataclass(frozen=True)
class SliceGrad:
    """dv[offset:offset+size] += dy for y = v[offset:offset+size]."""
    node: str
    v: str
    offset: int


# ---------------------------------------------------------------- the entry

@dataclass(frozen=True)
class Op:
    """One kind of node. Functions take the IR g and the node n (a Node) unless said:
    check(g, n) raises CellError; display(g, n, names) -> (text, latex) of the right-hand
    side, names: node id -> (text, latex); evaluate(n, values, run) -> its numpy value from
    the operands' (run.function(n): an ew node's numpy function); pullback(n, adj, values,
    run, add) calls add(operand, contribution) (run.partial(n, k): df/da_k in numpy);
    vjp(g, n) -> the backward step's op, whose equations are adjoint_display(g, op, names)
    -> ((text eq, latex eq), ...); reads(op) -> the nodes that op's backward reads."""
    name: str
    doc: str
    leaf: bool = False
    check: Callable = None
    display: Callable = None
    evaluate: Callable = None
    pullback: Callable = None
    vjp: Callable = None
    adjoint_display: Callable = None
    reads: Callable = None


def _nothing(*args):
    return None


def _leaf(name, doc):
    return Op(name, doc, leaf=True, check=_nothing)


# ---------------------------------------------------------------- ew: y = f(a0, ..., ak)

def _check_ew(g, n):
    syms = {s.name for s in n.expr.free_symbols}
    allowed = {"a%d" % k for k in range(len(n.args))}
    if not syms <= allowed:
        raise CellError("node %s: expression symbols %s do not match its %d operands"
                        % (n.id, sorted(syms), len(n.args)))
    vectors = [a for a in n.args if not g[a].scalar]
    for a in vectors[1:]:
        if g[a].size != g[vectors[0]].size:
            raise CellError(
                "%s: elementwise operands have different sizes: %s has size %d but %s has "
                "size %d — did you mean to map one with p.linear(..., size=%d)?"
                % (n.where, g.describe(vectors[0]), g[vectors[0]].size,
                   g.describe(a), g[a].size, g[vectors[0]].size))


def render_expr(expr, args, names, node=None):
    """(text, latex) of an expression in a0..ak (and g, y of `node`) with display names."""
    subs_t, subs_l = {}, {}
    for k, a in enumerate(args):
        sym = sympy.Symbol("a%d" % k, real=True)
        subs_t[sym] = sympy.Symbol(names[a][0], real=True)
        subs_l[sym] = sympy.Symbol(names[a][1], real=True)
    if node is not None:
        subs_t[G] = sympy.Symbol("δ" + names[node][0], real=True)
        subs_l[G] = sympy.Symbol(r"\delta " + names[node][1], real=True)
        subs_t[Y] = sympy.Symbol(names[node][0], real=True)
        subs_l[Y] = sympy.Symbol(names[node][1], real=True)
    return (math_text(mathfn.rename_symbols(expr, subs_t)),
            sympy.latex(mathfn.rename_symbols(expr, subs_l)))


def _evaluate_ew(n, values, run):
    out = np.asarray(run.function(n)(*values), dtype=run.dtype)
    return np.array(np.broadcast_to(out, (run.B, n.size)))


def unbroadcast(c, shape):
    """Sum an adjoint contribution down to an operand's shape (batch rows, units)."""
    while c.ndim > len(shape):
        c = c.sum(axis=0)
    for axis, m in enumerate(shape):
        if m == 1 and c.shape[axis] != 1:
            c = c.sum(axis=axis, keepdims=True)
    return c


def _pullback_ew(n, adj, values, run, add):
    for k, a in enumerate(n.args):
        fn = run.partial(n.id, k)
        if fn is not None:
            add(a, unbroadcast(adj * np.asarray(fn(*values), dtype=adj.dtype),
                               np.shape(values[k])))


# Piecewise-constant functions: derivative 0 wherever it exists, and 0 at their jumps too
# (PyTorch's choice for sign, floor, ceil and round); sympy would give DiracDelta or leave
# the derivative unevaluated.
STEP_FUNCTIONS = (sympy.sign, sympy.floor, sympy.ceiling, sympy.Heaviside)


def differentiate_expr(f, a):
    """df/da with the derivatives of step functions set to 0 (kinks as in PyTorch)."""
    d = mathfn.mod_derivatives(sympy.diff(f, a))
    d = d.replace(lambda e: isinstance(e, sympy.Derivative) and isinstance(e.expr, STEP_FUNCTIONS),
                  lambda e: sympy.S.Zero)
    return d.replace(lambda e: isinstance(e, sympy.DiracDelta), lambda e: sympy.S.Zero)


def local_partials(expr, n_args, where=""):
    """Each df/da_k of an elementwise expression, written through y = f where possible."""
    f = expr
    out = []
    for k in range(n_args):
        a = sympy.Symbol("a%d" % k, real=True)
        d = differentiate_expr(f, a)
        if d.has(sympy.Derivative) or d.has(sympy.Subs):
            raise CellError("%s: cannot differentiate %s with respect to its operand %d: sympy "
                            "gives %s; write the function with rc.activation(name, forward, "
                            "derivative=...)" % (where, f, k, d))
        if f.has(sympy.Function) and f not in (a,):
            d = d.xreplace({f: Y})
        out.append(d)
    return out


def _frozen(g, a):
    """Whether node a is a parameter declared trainable=False: it gets no adjoint."""
    return g[a].op == "param" and g[a].frozen


def _vjp_ew(g, n):
    partials = local_partials(n.expr, len(n.args), n.where)
    contributions = []
    for k, p in enumerate(partials):
        if p != 0 and not _frozen(g, n.args[k]):
            if p.has(sympy.zoo) or p.has(sympy.nan) or p.has(sympy.oo):
                raise CellError("%s: the derivative %s is not finite" % (n.where, p))
            mathfn.check_expression(p, n.where, what="the derivative of %s" % n.expr)
            contributions.append((k, G * p))
    uses_y = any(c.has(Y) for _, c in contributions)
    return EwGrad(n.id, n.args, tuple(contributions), uses_y)


def ew_reads(op):
    """Operands (and the node itself, via y) that the partials read."""
    reads = set()
    for _, c in op.contributions:
        for s in c.free_symbols:
            if s.name.startswith("a"):
                reads.add(op.args[int(s.name[1:])])
    if op.uses_y:
        reads.add(op.node)
    return reads


def _adjoints_ew(g, op, names):
    for k, contrib in op.contributions:
        a = op.args[k]
        rt, rl = render_expr(contrib, op.args, names, node=op.node)
        sum_t, sum_l = ("Σ_t ", r"\sum_t ") if g[a].op == "param" else ("", "")
        yield ("δ" + names[a][0], "+=", sum_t + rt), (r"\delta " + names[a][1], "+=", sum_l + rl)


# ---------------------------------------------------------------- linear: y = Σ W_k v_k + Σ b_j

def _check_linear(g, n):
    if not n.terms or set(n.args) != {a for t in n.terms for a in t} | set(n.biases):
        raise CellError("linear node %s: its operands %s are not its terms and biases"
                        % (n.id, n.args))
    for v, W in n.terms:
        if g[W].op != "param" or g[W].shape != (n.size, g[v].size):
            raise CellError("%s: %s has shape %s but maps %s (size %d) to size %d"
                            % (n.where, g.describe(W), g[W].shape, g.describe(v),
                               g[v].size, n.size))
    for b in n.biases:
        if g[b].shape != (n.size,):
            raise CellError("%s: the bias %s has shape %s, expected (%d,)"
                            % (n.where, g.describe(b), g[b].shape, n.size))


def _display_linear(g, n, names):
    return tuple(" + ".join(["%s %s" % (names[W][i], names[v][i]) for v, W in n.terms]
                            + [names[b][i] for b in n.biases]) for i in (0, 1))


def _evaluate_linear(n, values, run):
    val = dict(zip(n.args, values))
    (v0, W0), *rest = n.terms
    out = val[v0] @ val[W0].T
    for v, W in rest:
        out = out + val[v] @ val[W].T
    for b in n.biases:
        out = out + val[b]
    return out


def _pullback_linear(n, adj, values, run, add):
    val = dict(zip(n.args, values))
    for v, W in n.terms:
        add(v, adj @ val[W])
        add(W, adj.T @ val[v])
    for b in n.biases:
        add(b, adj.sum(axis=0))


def _adjoints_linear(g, op, names):
    n = op.node
    dt, dl = "δ" + names[n][0], r"\delta " + names[n][1]
    for v_id, W_id in op.terms:
        W, v = names[W_id], names[v_id]
        yield ("δ" + v[0], "+=", "%sᵀ %s" % (W[0], dt)), (r"\delta " + v[1], "+=", "%s^T %s" % (W[1], dl))
        if not _frozen(g, W_id):
            yield (("δ" + W[0], "+=", "Σ_t %s %sᵀ" % (dt, v[0])),
                   (r"\delta " + W[1], "+=", r"\sum_t %s %s^T" % (dl, v[1])))
    for b_id in (b for b in op.biases if not _frozen(g, b)):
        b = names[b_id]
        yield ("δ" + b[0], "+=", "Σ_t " + dt), (r"\delta " + b[1], "+=", r"\sum_t " + dl)


# ---------------------------------------------------------------- concat: y = [a0; a1; ...]

def _check_concat(g, n):
    if sum(g[a].size for a in n.args) != n.size:
        raise CellError("concat node %s: parts of sizes %s do not add up to %d"
                        % (n.id, [g[a].size for a in n.args], n.size))


def _display_concat(g, n, names):
    return ("[%s]" % "; ".join(names[a][0] for a in n.args),
            r"\begin{bmatrix} %s \end{bmatrix}" % r" \\ ".join(names[a][1] for a in n.args))


def _pullback_concat(n, adj, values, run, add):
    off = 0
    for a, v in zip(n.args, values, strict=True):
        m = v.shape[1]
        add(a, adj[:, off:off + m])
        off += m


def _adjoints_concat(g, op, names):
    n, off = op.node, 0
    for a in op.parts:
        m = g[a].size
        yield (("δ" + names[a][0], "+=", "δ%s[%d:%d]" % (names[n][0], off, off + m)),
               (r"\delta " + names[a][1], "+=", r"\delta %s[%d{:}%d]" % (names[n][1], off, off + m)))
        off += m


# ---------------------------------------------------------------- reduce: y = sum/mean of a0

def _check_reduce(g, n):
    if n.how not in ("sum", "mean") or len(n.args) != 1 or not n.scalar:
        raise CellError("reduce node %s: expected the sum or mean of one vector, got %s of %s"
                        % (n.id, n.how, n.args))


def _display_reduce(g, n, names):
    a = names[n.args[0]]
    return "%s(%s)" % (n.how, a[0]), r"\operatorname{%s}(%s)" % (n.how, a[1])


def _evaluate_reduce(n, values, run):
    red = values[0].sum(axis=1, keepdims=True)
    return red / values[0].shape[1] if n.how == "mean" else red


def _pullback_reduce(n, adj, values, run, add):
    m = values[0].shape[1]
    add(n.args[0], np.broadcast_to(adj / m if n.how == "mean" else adj, (adj.shape[0], m)))


def _adjoints_reduce(g, op, names):
    n = op.node
    scale = " / %d" % g[op.v].size if op.how == "mean" else ""
    yield (("δ" + names[op.v][0], "+=", "δ%s%s (every unit)" % (names[n][0], scale)),
           (r"\delta " + names[op.v][1], "+=", r"\delta %s%s" % (names[n][1], scale)))


# ---------------------------------------------------------------- slice: y = a0[a:b]

def _check_slice(g, n):
    v = n.args[0]
    if n.size < 1 or n.offset < 0 or n.offset + n.size > g[v].size:
        raise CellError("%s: the slice [%d:%d] is out of range for %s, of size %d"
                        % (n.where, n.offset, n.offset + n.size, g.describe(v), g[v].size))


def _display_slice(g, n, names):
    a, stop = names[n.args[0]], n.offset + n.size
    return ("%s[%d:%d]" % (a[0], n.offset, stop), r"%s[%d{:}%d]" % (a[1], n.offset, stop))


def _pullback_slice(n, adj, values, run, add):
    full = np.zeros(np.shape(values[0]), dtype=adj.dtype)
    full[:, n.offset:n.offset + n.size] = adj
    add(n.args[0], full)


def _adjoints_slice(g, op, names):
    a, y, stop = names[op.v], names[op.node], op.offset + g[op.node].size
    yield (("δ%s[%d:%d]" % (a[0], op.offset, stop), "+=", "δ" + y[0]),
           (r"\delta %s[%d{:}%d]" % (a[1], op.offset, stop), "+=", r"\delta " + y[1]))


# ---------------------------------------------------------------- the registry

OPS = {op.name: op for op in (
    _leaf("input", "x[t], the step's input row"),
    _leaf("state", "s[t-1], a state as the step before left it"),
    _leaf("param", "a learnable matrix, vector or scalar, the same at every step"),
    Op("ew", "y = f(a0, ..., ak): one elementwise expression (sympy) over its operands",
       check=_check_ew,
       display=lambda g, n, names: render_expr(n.expr, n.args, names),
       evaluate=_evaluate_ew, pullback=_pullback_ew, vjp=_vjp_ew,
       adjoint_display=_adjoints_ew, reads=ew_reads),
    Op("linear", "y = Σ_k W_k v_k + Σ_j b_j: products with weight matrices, plus biases",
       check=_check_linear, display=_display_linear,
       evaluate=_evaluate_linear, pullback=_pullback_linear,
       vjp=lambda g, n: LinearGrad(n.id, n.terms, n.biases),
       adjoint_display=_adjoints_linear, reads=lambda op: {v for v, _ in op.terms}),
    Op("concat", "y = [a0; a1; ...]: vectors stacked",
       check=_check_concat, display=_display_concat,
       evaluate=lambda n, values, run: np.concatenate(values, axis=1),
       pullback=_pullback_concat, vjp=lambda g, n: ConcatGrad(n.id, n.args),
       adjoint_display=_adjoints_concat, reads=lambda op: set()),
    Op("reduce", "y = sum(a0) or mean(a0) over the units: a per-row scalar",
       check=_check_reduce, display=_display_reduce,
       evaluate=_evaluate_reduce, pullback=_pullback_reduce,
       vjp=lambda g, n: ReduceGrad(n.id, n.args[0], n.how),
       adjoint_display=_adjoints_reduce, reads=lambda op: set()),
    Op("slice", "y = a0[a:b]: consecutive units of a vector",
       check=_check_slice, display=_display_slice,
       evaluate=lambda n, values, run: np.array(values[0][:, n.offset:n.offset + n.size]),
       pullback=_pullback_slice, vjp=lambda g, n: SliceGrad(n.id, n.args[0], n.offset),
       adjoint_display=_adjoints_slice, reads=lambda op: set()),
)}
LEAVES = tuple(name for name, op in OPS.items() if op.leaf)
