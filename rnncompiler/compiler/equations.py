"""The forward and derived backward equations of a cell, as text and LaTeX, written in the
notation of the docs: v[t] for a value at step t, δv for dL/dv, Σ_t for sums over time.

`Equations` (rnncompiler.runtime.meta) is a plain value stored with each compiled kernel,
so a kernel loaded from the cache shows its equations without the compiler's stages.
"""
from __future__ import annotations

from ..runtime.meta import Equations
from .ops import OPS, render_expr  # noqa: F401 (render_expr: re-exported)


def display_names(g):
    """node id -> (text, latex) names: h[t] / h_{t}, c[t-1] / c_{t-1}, W_f / W_{f}, and
    for the values the cell's own names (f[t] / f_{t}); unnamed ones are called a_f (the
    map of W_f), z (a concatenation), m (a reduction) or v1, v2, ..."""
    from .graph import param_name
    # a cell with several inputs, contexts or masks reads them from one row
    names = {"x": _at(g.row_name(), "t")}
    for s, _ in g.states:
        names["state." + s] = _at(s, "t-1")
    for p, _ in g.params:
        names["param." + p] = (p, tex_name(p))
    for s, node in g.new_states:
        names.setdefault(node, _at(s, "t"))
    names.setdefault(g.output, _at("y", "t"))
    taken = {text.split("[")[0] for text, _ in names.values()}
    for n in g.ops():
        var = g[n].name
        if n not in names and var and var not in taken:
            names[n] = _at(var, "t")
            taken.add(var)
    counters = {}
    for n in g.ops():
        if n in names:
            continue
        d = g[n]
        if d.op == "linear":
            w = param_name(g[n].terms[0][1])
            stem = "a_" + (w[2:] if w.startswith("W_") and len(w) > 2 else w)
        else:
            stem = {"concat": "z", "reduce": "m"}.get(d.op, "v")
        label = stem
        while label in taken or (label == "v"):
            counters[stem] = counters.get(stem, 0) + 1
            label = stem if counters[stem] == 1 and stem != "v" else "%s%d" % (stem, counters[stem])
        taken.add(label)
        names[n] = _at(label, "t")
    return names


def _at(name, when):
    """(text, latex) of a value at a step: c[t-1] and c_{t-1}; a_f[t] and a_{f,t}."""
    head, _, tail = name.partition("_")
    if not tail and head[-1:].isdigit():           # v1 -> v_{1,t}
        stem = head.rstrip("0123456789")
        head, tail = stem, head[len(stem):]
    sub = "%s,%s" % (tail.replace("_", r"\_"), when) if tail else when
    return "%s[%s]" % (name, when), "%s_{%s}" % (head, sub)


def tex_name(name):
    head, _, tail = name.partition("_")
    return "%s_{%s}" % (head, tail.replace("_", r"\_")) if tail else name


def derive_equations(g, bwd):
    """Equations of fused step graph g and its backward step bwd."""
    names = display_names(g)
    fwd, fwd_l = [], []
    for n in g.ops():
        t, l = names[n]
        rt, rl = forward_rhs(g, n, names)
        fwd.append((t, "=", rt))
        fwd_l.append((l, "=", rl))
    bwd_t, bwd_l = _seed_equations(g, names)
    for op in bwd.ops:
        for eq_t, eq_l in _backward_equations(g, op, names):
            bwd_t.append(eq_t)
            bwd_l.append(eq_l)
    return Equations(tuple(fwd), tuple(bwd_t), tuple(fwd_l), tuple(bwd_l))


def named_equations(g):
    """The equations of unfused step IR g with the values the cell names kept apart (its
    gates f, i, o, ...), the rest fused: the system as the cell's code writes it."""
    from .autodiff import differentiate
    from .graph import fuse_elementwise
    named = fuse_elementwise(g, keep={n for n in g.ops() if g[n].name})
    return derive_equations(named, differentiate(named))


def forward_rhs(g, n, names):
    """(text, latex) of the right-hand side of node n's forward equation."""
    return OPS[g[n].op].display(g, g[n], names)


def _seed_equations(g, names):
    out_t, out_l = [], []
    y = g.output
    seeds = {y: ["dL/dy[t]"]}
    for s, node in g.new_states:
        seeds.setdefault(node, []).append("δ%s[t]⁺" % s)
    for node, terms in seeds.items():
        out_t.append(("δ" + names[node][0], "=", " + ".join(terms)))
        out_l.append((r"\delta " + names[node][1], "=",
                      " + ".join(r"\partial L / \partial y_{t}" if tt.startswith("dL") else
                                 r"\delta %s^{+}" % _at(tt[1:].split("[")[0], "t")[1] for tt in terms)))
    return out_t, out_l


def _backward_equations(g, op, names):
    """((text, latex) equation, ...) of one op of the backward step."""
    return OPS[g[op.node].op].adjoint_display(g, op, names)
