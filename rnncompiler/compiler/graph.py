"""The step IR of a cell with every size bound (build_graph), checked, and for the
compiled path with elementwise chains fused (fuse_elementwise). `evaluator.evaluate` runs
the unfused IR in numpy: it is the executable definition of what a cell computes.

Both passes return a new rnncompiler.compiler.ir.StepIR, type-checked.
"""
from __future__ import annotations

from dataclasses import replace

import sympy

from . import mathfn
from .mathfn import rename_symbols
from ..errors import CellError
from .expr import Term, to_sympy
from .ir import Node, StepIR
from .ops import LEAVES

MAX_FUSED_TERMS = 160   # cap on a fused expression's size: keeps sympy fast and predictable
# cap on the size of its derivative (derivative_terms): nested functions, as in
# tanh(tanh(...)), grow their derivative with the square of the depth while the value grows
# linearly; past this size sympy's diff, cse and printing dominate the compile time
MAX_DERIVATIVE_TERMS = 400


def param_name(node_id):
    return node_id[len("param."):]


def build_graph(spec, sizes):
    """Bind sizes (name -> int, incl. H and I) and return the checked step IR."""
    nodes, shapes = [], {}
    for node in spec.nodes:
        size = 1 if node.scalar else node.size.bind(sizes)
        shape = tuple(s.bind(sizes) for s in node.shape)
        shapes[node.id] = shape
        linear = node.op == "linear"
        nodes.append(Node(node.id, node.op, tuple(node.args), size, node.scalar,
                          _sympy_expr(node),
                          terms=((node.args[0], node.args[1]),) if linear else (),
                          biases=tuple(node.args[2:]) if linear else (),
                          how=node.how, shape=shape, name=node.name,
                          offset=node.offset.bind(sizes), where=node.where,
                          frozen=node.frozen))
    return StepIR(spec.name, dict(sizes), tuple(nodes),
                  tuple((s, size.bind(sizes)) for s, size in spec.states),
                  tuple(spec.new_states), spec.output,
                  tuple((param_name(p), shapes[p]) for p in spec.params)).typecheck()


def _sympy_expr(node):
    """The node's expression in sympy (the cell language traces arithmetic without it)."""
    if not isinstance(node.expr, Term):
        return None if node.expr is None else mathfn.real_roots(node.expr)
    expr = mathfn.real_roots(to_sympy(node.expr))
    if expr.has(sympy.zoo, sympy.nan, sympy.oo, sympy.I):
        raise CellError("%s: the expression %s is not finite or not real" % (node.where, expr))
    return expr


def frozen_params(g):
    """Names of the parameters declared trainable=False: inputs without a gradient."""
    return frozenset(param_name(n) for n, d in g.items() if d.op == "param" and d.frozen)


# ---------------------------------------------------------------- fusion

def fuse_elementwise(g, keep=()):
    """Inline every elementwise node used once, by another elementwise node, into it.

    Results (states, output) and the nodes in `keep` are never inlined; identity copies
    made for results are dropped when their operand is already a computed node; sums of
    linear maps become linear maps of several terms (merge_linear_sums). The result is the
    IR the compiled path lowers, not the one `evaluate` defines the semantics with.
    """
    g = merge_linear_sums(_drop_result_copies(g), keep)
    nodes = dict(g.items())
    uses = _use_counts(g, keep)
    merged = {}
    for n in g.ops():
        d = nodes[n]
        if d.op != "ew":
            continue
        expr = rename_symbols(d.expr, {sympy.Symbol("a%d" % k, real=True):
                                       sympy.Symbol(a, real=True)
                                       for k, a in enumerate(d.args)})
        args = []
        for a in dict.fromkeys(d.args):        # g * g reads g twice: inline it once
            if a in merged and uses[a] == 1 and _fits(merged[a][0]):
                inner_expr, inner_args = merged.pop(a)
                expr = expr.xreplace({sympy.Symbol(a, real=True): inner_expr})
                args += [b for b in inner_args if b not in args]
                del nodes[a]
            elif a not in args:
                args.append(a)
        merged[n] = (expr, args)
    for n, (expr, args) in merged.items():
        nodes[n] = _with_operands(nodes[n], expr, args)
    return g.with_nodes(nodes.values())


def merge_linear_sums(g, keep=()):
    """W1 v1 + b1 + W2 v2 + b2, where nothing else reads the two maps, becomes one linear
    node of two terms: its products share one output and one tape slot, and lowering puts
    them in one bundle (cells written with separate input and hidden weights, as PyTorch's
    are, then cost what the concatenated form costs). Maps in `keep` stay apart."""
    results = g.results() | set(keep)
    nodes = dict(g.items())
    for n in g.ops():
        d = nodes[n]
        lins = d.args
        if (d.op != "ew" or len(lins) < 2 or len(set(lins)) != len(lins)
                or d.expr != sympy.Add(*_operand_symbols(len(lins)))
                or any(a not in nodes or nodes[a].op != "linear" or a in results
                       or len(g.users(a)) != 1 for a in lins)):
            continue
        terms = tuple(t for a in lins for t in nodes[a].terms)
        biases = tuple(b for a in lins for b in nodes[a].biases)
        for a in lins:
            del nodes[a]
        nodes[n] = replace(d, op="linear", expr=None, terms=terms, biases=biases,
                           args=tuple(a for t in terms for a in t) + biases)
    return g.with_nodes(nodes.values())


def _operand_symbols(k):
    return [sympy.Symbol("a%d" % i, real=True) for i in range(k)]


def _with_operands(node, expr, args):
    """node with expr (in its operands' ids as symbols) over args, renamed to a0..ak."""
    local = {sympy.Symbol(a, real=True): sympy.Symbol("a%d" % k, real=True)
             for k, a in enumerate(args)}
    return replace(node, expr=rename_symbols(expr, local), args=tuple(args))


def _terms(expr):
    return sum(1 for _ in sympy.preorder_traversal(expr))


def _fits(expr):
    """Whether an expression is small enough, in value and derivative, to be inlined."""
    return _terms(expr) <= MAX_FUSED_TERMS and derivative_terms(expr) <= MAX_DERIVATIVE_TERMS


def derivative_terms(expr):
    """An estimate of the size of expr's derivative (in tree nodes, summed over its
    symbols) without differentiating: the chain and product rules copy each function or
    product whole, once per symbol inside it, beside the derivative of that operand."""
    return _sizes(expr)[1]


def _sizes(e):
    """(tree nodes of e, estimated tree nodes of its derivative)."""
    if not e.args:
        return 1, int(e.is_Symbol)
    parts = [_sizes(c) for c in e.args]
    size = 1 + sum(s for s, _ in parts)
    if e.is_Add:
        return size, sum(d for _, d in parts)
    return size, sum(size + d for _, d in parts if d)


def _use_counts(g, keep=()):
    """How many nodes read each node; a result, or a node in `keep`, counts once more."""
    uses = {n: len(g.users(n)) for n in g}
    for node in list(g.results()) + list(keep):
        if node in uses:
            uses[node] += 1
    return uses


def _drop_result_copies(g):
    """The IR without the identity copies made for results whose operand is computed."""
    a0 = sympy.Symbol("a0", real=True)
    redirect = {}
    for _, node in tuple(g.new_states) + ((None, g.output),):
        d = g[node]
        if (d.op == "ew" and d.expr == a0 and not g.users(node)
                and g[d.args[0]].op not in LEAVES):
            redirect[node] = d.args[0]
    if not redirect:
        return g
    return g.with_nodes([n for n in g.nodes if n.id not in redirect],
                        new_states=tuple((s, redirect.get(n, n)) for s, n in g.new_states),
                        output=redirect.get(g.output, g.output))


def format_graph(g):
    """The step IR as text, one line per operation (RNNC_DEBUG=1 prints it)."""
    return str(g)
