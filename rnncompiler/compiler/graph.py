"""The step graph: a networkx.DiGraph of one time step with every size bound, checked,
and (for the compiled path) with elementwise chains fused. `evaluator.evaluate` runs the unfused
graph in numpy: it is the executable definition of what a cell computes.

Node attributes: op (input/state/param/ew/linear/concat/reduce), args (ordered operand
ids), size (int; 1 for broadcast scalars), scalar, expr (ew: sympy in a0..ak), how, shape
(params), where (the cell's file:line). Graph attributes: name, sizes, states
[(name, size)], new_states [(name, node id)], output, params [(name, shape)].
"""
from __future__ import annotations

import networkx as nx
import sympy

from . import mathfn
from ..errors import CellError
from .expr import Term, to_sympy

LEAVES = ("input", "state", "param")
MAX_FUSED_TERMS = 160   # cap on a fused expression's size: keeps sympy fast and predictable
# cap on the size of its derivative (derivative_terms): nested functions, as in
# tanh(tanh(...)), grow their derivative with the square of the depth while the value grows
# linearly; past this size sympy's diff, cse and printing dominate the compile time
MAX_DERIVATIVE_TERMS = 400


def param_name(node_id):
    return node_id[len("param."):]


def build_graph(spec, sizes):
    """Bind sizes (name -> int, incl. H and I) and return the checked step graph."""
    g = nx.DiGraph(name=spec.name, sizes=dict(sizes))
    for node in spec.nodes:
        size = 1 if node.scalar else node.size.bind(sizes)
        shape = tuple(s.bind(sizes) for s in node.shape)
        g.add_node(node.id, op=node.op, args=node.args, size=size, scalar=node.scalar,
                   expr=_sympy_expr(node), how=node.how, shape=shape, where=node.where)
        for a in node.args:
            g.add_edge(a, node.id)
    g.graph["states"] = [(s, size.bind(sizes)) for s, size in spec.states]
    g.graph["new_states"] = list(spec.new_states)
    g.graph["output"] = spec.output
    g.graph["params"] = [(param_name(p), g.nodes[p]["shape"]) for p in spec.params]
    check_sizes(g)
    verify(g)
    return g


def _sympy_expr(node):
    """The node's expression in sympy (the cell language traces arithmetic without it)."""
    if not isinstance(node.expr, Term):
        return None if node.expr is None else mathfn.real_roots(node.expr)
    expr = mathfn.real_roots(to_sympy(node.expr))
    if expr.has(sympy.zoo, sympy.nan, sympy.oo, sympy.I):
        raise CellError("%s: the expression %s is not finite or not real" % (node.where, expr))
    return expr


def check_sizes(g):
    """Elementwise operands and returned states must agree in size once sizes are bound."""
    for n, d in g.nodes(data=True):
        if d["op"] == "ew":
            vectors = [a for a in d["args"] if not g.nodes[a]["scalar"]]
            for a in vectors[1:]:
                if g.nodes[a]["size"] != g.nodes[vectors[0]]["size"]:
                    raise CellError(
                        "%s: elementwise operands have different sizes: %s has size %d but %s "
                        "has size %d — did you mean to map one with p.linear(..., size=%d)?"
                        % (d["where"], describe(g, vectors[0]), g.nodes[vectors[0]]["size"],
                           describe(g, a), g.nodes[a]["size"], g.nodes[vectors[0]]["size"]))
    for s, size in g.graph["states"]:
        node = dict(g.graph["new_states"])[s]
        if g.nodes[node]["size"] != size:
            raise CellError("%s: state %r has size %d but the cell returns a vector of size %d"
                            % (g.nodes[node]["where"], s, size, g.nodes[node]["size"]))


def describe(g, node_id):
    """A reader's name for a node: x, h (t-1), W_f, or the line that made it."""
    d = g.nodes[node_id]
    if d["op"] == "input":
        return "x"
    if d["op"] == "state":
        return node_id.split(".", 1)[1] + " (t-1)"
    if d["op"] == "param":
        return param_name(node_id)
    return "the %s at %s" % ({"ew": "value", "linear": "linear map"}.get(d["op"], d["op"]),
                             d["where"])


def verify(g):
    """Cheap invariants between stages: acyclic, operands exist, ew arity matches."""
    if not nx.is_directed_acyclic_graph(g):
        raise CellError("the step graph has a cycle")
    for n, d in g.nodes(data=True):
        for a in d["args"]:
            if a not in g:
                raise CellError("node %s uses %s, which is not in the graph" % (n, a))
        if d["op"] == "ew":
            syms = {s.name for s in d["expr"].free_symbols}
            allowed = {"a%d" % k for k in range(len(d["args"]))}
            if not syms <= allowed:
                raise CellError("node %s: expression symbols %s do not match its %d operands"
                                % (n, sorted(syms), len(d["args"])))
    for _, node in g.graph["new_states"] + [(None, g.graph["output"])]:
        if node not in g or g.nodes[node]["scalar"]:
            raise CellError("a result refers to %s, which is not a vector node" % node)
    return g


def topo_order(g):
    """Operation nodes in a deterministic topological order (trace order is one)."""
    return [n for n in g.nodes if g.nodes[n]["op"] not in LEAVES]


# ---------------------------------------------------------------- fusion

def fuse_elementwise(g, keep=()):
    """Inline every elementwise node used once, by another elementwise node, into it.

    Results (states, output) and the nodes in `keep` are never inlined; identity copies made for results are
    dropped when their operand is already a computed node; sums of linear maps become
    linear maps of several terms (merge_linear_sums). The result is the graph the compiled
    path lowers, not the one `evaluate` defines the semantics with.
    """
    g = g.copy()
    _drop_result_copies(g)
    merge_linear_sums(g, keep)
    uses = _use_counts(g, keep)
    merged = {}
    for n in topo_order(g):
        d = g.nodes[n]
        if d["op"] != "ew":
            continue
        expr = rename_symbols(d["expr"], {sympy.Symbol("a%d" % k, real=True):
                                          sympy.Symbol(a, real=True)
                                          for k, a in enumerate(d["args"])})
        args = []
        for a in dict.fromkeys(d["args"]):        # g * g reads g twice: inline it once
            if a in merged and uses[a] == 1 and _fits(merged[a][0]):
                inner_expr, inner_args = merged.pop(a)
                expr = expr.xreplace({sympy.Symbol(a, real=True): inner_expr})
                args += [b for b in inner_args if b not in args]
                g.remove_node(a)
            elif a not in args:
                args.append(a)
        merged[n] = (expr, args)
    for n, (expr, args) in merged.items():
        _set_ew(g, n, expr, args)
    return verify(g)


def linear_terms(g, n):
    """((operand, weight), ...) and (bias, ...) of linear node n."""
    d = g.nodes[n]
    if "terms" in d:
        return d["terms"], d["biases"]
    return ((d["args"][0], d["args"][1]),), tuple(d["args"][2:])


def result_nodes(g):
    """The nodes whose values leave the step: the new states and the output."""
    return {node for _, node in g.graph["new_states"]} | {g.graph["output"]}


def merge_linear_sums(g, keep=()):
    """W1 v1 + b1 + W2 v2 + b2, where nothing else reads the two maps, becomes one linear
    node of two terms: its products share one output and one tape slot, and lowering puts
    them in one bundle (cells written with separate input and hidden weights, as PyTorch's
    are, then cost what the concatenated form costs). Maps in `keep` stay apart."""
    results = result_nodes(g) | set(keep)
    for n in list(topo_order(g)):
        d = g.nodes[n]
        lins = d["args"]
        if (d["op"] != "ew" or len(lins) < 2 or len(set(lins)) != len(lins)
                or d["expr"] != sympy.Add(*_operand_symbols(len(lins)))
                or any(g.nodes[a]["op"] != "linear" or a in results or g.out_degree(a) != 1
                       for a in lins)):
            continue
        parts = [linear_terms(g, a) for a in lins]
        terms = tuple(t for ts, _ in parts for t in ts)
        biases = tuple(b for _, bs in parts for b in bs)
        g.remove_nodes_from(lins)
        d.update(op="linear", expr=None, terms=terms, biases=biases,
                 args=tuple(a for t in terms for a in t) + biases)
        g.add_edges_from((a, n) for a in d["args"])


def _operand_symbols(k):
    return [sympy.Symbol("a%d" % i, real=True) for i in range(k)]


def _set_ew(g, n, expr, args):
    local = {sympy.Symbol(a, real=True): sympy.Symbol("a%d" % k, real=True)
             for k, a in enumerate(args)}
    g.remove_edges_from(list(g.in_edges(n)))
    g.nodes[n]["expr"] = rename_symbols(expr, local)
    g.nodes[n]["args"] = tuple(args)
    g.add_edges_from((a, n) for a in args)


def rename_symbols(expr, names):
    """expr with its symbols renamed (names: symbol -> symbol, one to one). Unlike
    xreplace, it does not run the functions' simplifications again on their renamed
    arguments (nothing new to simplify; sympy's assumption queries there cost time
    quadratic in the nesting depth), and it rebuilds a shared subexpression once."""
    done = {}

    def walk(e):
        if e in names:
            return names[e]
        if not e.args:
            return e
        if e not in done:
            args = tuple(walk(a) for a in e.args)
            if args == e.args:
                done[e] = e
            elif isinstance(e, sympy.Function):
                done[e] = e.func(*args, evaluate=False)
            else:
                done[e] = e.func(*args)
        return done[e]
    return walk(expr)


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
    uses = {n: 0 for n in g}
    for n, d in g.nodes(data=True):
        for a in set(d["args"]):
            uses[a] += 1
    for node in [node for _, node in g.graph["new_states"]] + [g.graph["output"]] + list(keep):
        if node in uses:
            uses[node] += 1
    return uses


def _drop_result_copies(g):
    a0 = sympy.Symbol("a0", real=True)
    redirect = {}
    for _, node in g.graph["new_states"] + [(None, g.graph["output"])]:
        d = g.nodes[node]
        if (d["op"] == "ew" and d["expr"] == a0 and g.out_degree(node) == 0
                and g.nodes[d["args"][0]]["op"] not in LEAVES):
            redirect[node] = d["args"][0]
    g.remove_nodes_from(redirect)
    g.graph["new_states"] = [(s, redirect.get(n, n)) for s, n in g.graph["new_states"]]
    g.graph["output"] = redirect.get(g.graph["output"], g.graph["output"])


def format_graph(g):
    """The step graph as text, one line per operation (RNNC_DEBUG=1 prints it)."""
    lines = ["step graph %s: sizes %s, states %s, output %s"
             % (g.graph["name"], g.graph["sizes"], g.graph["states"], g.graph["output"])]
    for n in topo_order(g):
        d = g.nodes[n]
        what = str(d["expr"]) if d["op"] == "ew" else d["how"] or ""
        lines.append("  %-6s %-7s size %-4d %s(%s) %s" % (n, d["op"], d["size"],
                                                       what + " " if what else "",
                                                       ", ".join(d["args"]), d["where"]))
    return "\n".join(lines)
