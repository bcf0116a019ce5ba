"""Unrolling: the step graph repeated T times as one acyclic graph over time.

Per-step nodes are keyed (name, t) and carry t; each parameter is a single node with
kind="param" and edges into every step that uses it (tied weights); the state read at
step t is the node that produced it at step t-1, and state0 is ("state0.<s>", None).
"""
from __future__ import annotations



def unroll_graph(g, T):
    """The time DAG of step graph `g` over T steps."""
    import networkx as nx
    from .graph import param_name
    if not isinstance(T, int) or T < 1:
        raise ValueError("T: expected an int >= 1, got %r" % (T,))
    dag = nx.DiGraph(name=g.name, T=T, states=list(g.states))
    for name, shape in g.params:
        dag.add_node(name, kind="param", shape=shape)
    for s, size in g.states:
        dag.add_node(("state0." + s, None), kind="state0", size=size)
    produced = {s: ("state0." + s, None) for s, _ in g.states}
    for t in range(T):
        key = {}
        for n, d in g.items():
            if d.op == "param":
                key[n] = param_name(n)
            elif d.op == "state":
                key[n] = produced[g.state_of(n)]
            else:
                key[n] = (n, t)
                dag.add_node(key[n], kind=d.op, t=t, size=d.size, where=d.where)
            dag.add_edges_from((key[a], key[n]) for a in d.args)
        produced = {s: key[n] for s, n in g.new_states}
        dag.add_node(("y", t), kind="output", t=t)
        dag.add_edge(key[g.output], ("y", t))
    for s, node in produced.items():
        dag.add_node(("state_T." + s, None), kind="final_state")
        dag.add_edge(node, ("state_T." + s, None))
    return dag


def unroll(cell, T, *, input_size=3, hidden_size=4, sizes=None):
    """rc.unroll(cell, T): the networkx.DiGraph of the cell unrolled over T steps."""
    from .graph import build_graph
    bound = dict(sizes or {}, H=hidden_size, I=input_size)
    return unroll_graph(build_graph(cell.spec, bound), T)
