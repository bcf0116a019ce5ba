"""Where every value lives: the flat parameter vector, the state rows, the tape, the
scratch and the adjoint buffers. Offsets are in scalars per batch row (times B at run time)
except for parameters, which are absolute.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..graph import LEAVES, param_name, topo_order


@dataclass(frozen=True)
class Layout:
    I: int
    S: int                    # all states of one row, concatenated in declaration order
    O: int
    states: tuple             # ((name, size, offset in the row, leaf id, node id), ...)
    params: tuple             # ((name, shape, offset, count), ...)
    param_count: int
    NT: int                   # tape scalars per row and step
    NS: int                   # forward scratch scalars per row
    NA: int                   # adjoint scalars per row
    value_at: dict            # op node -> ("tape" | "scratch", offset per row)
    adjoint_at: dict          # op node or x/state leaf -> offset per row
    cvar: dict                # node id -> short C identifier stem (v3, s0, P2, x)


def _count(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def plan_layout(g, bwd):
    """Assign buffers for graph g and its backward step bwd."""
    states, off = [], 0
    for (s, size), (s2, node) in zip(g.graph["states"], g.graph["new_states"], strict=True):
        assert s == s2
        states.append((s, size, off, "state." + s, node))
        off += size
    params, p_off = [], 0
    for name, shape in g.graph["params"]:
        params.append((name, shape, p_off, _count(shape)))
        p_off += _count(shape)
    ops = topo_order(g)
    tape = set(bwd.tape)
    value_at, nt, ns = {}, 0, 0
    for n in ops:
        size = g.nodes[n]["size"]
        if n in tape:
            value_at[n] = ("tape", nt)
            nt += size
        else:
            value_at[n] = ("scratch", ns)
            ns += size
    adjoint_at, na = {}, 0
    for n in ["x"] + [st[3] for st in states] + ops:
        adjoint_at[n] = na
        na += g.nodes[n]["size"]
    cvar = {"x": "x_t"}
    for k, st in enumerate(states):
        cvar[st[3]] = "s%d" % k
    for k, p in enumerate(g.graph["params"]):
        cvar["param." + p[0]] = "P%d" % k
    for k, n in enumerate(ops):
        cvar[n] = "v%d" % k
    return Layout(I=g.graph["sizes"]["I"], S=off, O=g.nodes[g.graph["output"]]["size"],
                  states=tuple(states), params=tuple(params), param_count=p_off,
                  NT=nt, NS=ns, NA=na, value_at=value_at, adjoint_at=adjoint_at, cvar=cvar)


def param_offset(layout, node_id):
    name = param_name(node_id)
    for p in layout.params:
        if p[0] == name:
            return p[2]
    raise KeyError(node_id)


def is_leaf(g, n):
    return g.nodes[n]["op"] in LEAVES
