"""The step IR: one time step of a cell as frozen values, the one thing the compiler's
stages pass along (in the spirit of a jaxpr). Nodes are in a topological order (the trace
order), each bound once; `typecheck()` runs after every pass and `str(ir)` reads like the
cell. networkx is used for the time DAG and for graph algorithms, never to carry what an
operation means.

    ir = build_graph(cell.spec, sizes)          # rnncompiler.compiler.graph
    print(ir)
    step lstm (H=4, I=3)
      z     = concat(h[t-1], x[t])                       size 7    lstm.py:12
      a_f   = W_f z + b_f                                 size 4    lstm.py:13
      f     = σ(a_f)                                      size 4    lstm.py:13
      ...
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace

from ..errors import CellError
from .ops import LEAVES, OPS


@dataclass(frozen=True)
class Node:
    """One value of the step. op is one of OPS; args are the ids of its operands; size is
    its number of units (1 for a broadcast scalar). ew nodes carry a sympy expression in
    a0..a{k-1} (one symbol per operand); linear nodes their terms ((operand, weight), ...)
    and biases; reduce nodes how ("sum"/"mean"); slice nodes the offset of their first unit
    in their operand; params their shape and how ("matrix",
    "vector", "scalar"). name is what the cell's code called the value ("" if nothing)."""
    id: str
    op: str
    args: tuple = ()
    size: int = 1
    scalar: bool = False
    expr: object = None
    terms: tuple = ()
    biases: tuple = ()
    how: str = ""
    shape: tuple = ()
    name: str = ""
    where: str = ""
    offset: int = 0
    frozen: bool = False      # param: trainable=False, a constant of the kernel (no gradient)


@dataclass(frozen=True)
class StepIR:
    """A step of a cell with every size bound: nodes in topological order, the states
    (name, size) read at t-1, which node each new state is, the output node, and the
    parameters (name, shape) in declaration order."""
    name: str
    sizes: dict
    nodes: tuple
    states: tuple
    new_states: tuple
    output: str
    params: tuple
    _index: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "_index", {n.id: n for n in self.nodes})

    # ------------------------------------------------------------ lookup

    def __getitem__(self, node_id):
        return self._index[node_id]

    def __contains__(self, node_id):
        return node_id in self._index

    def __iter__(self):
        """The node ids, in topological order."""
        return (n.id for n in self.nodes)

    def __len__(self):
        return len(self.nodes)

    def items(self):
        """(id, node) pairs in topological order."""
        return ((n.id, n) for n in self.nodes)

    def ops(self):
        """The ids of the nodes that compute (every node but inputs, states and params)."""
        return [n.id for n in self.nodes if n.op not in LEAVES]

    def users(self, node_id):
        """The ids of the nodes that read node_id, each once, in topological order."""
        return self._users.get(node_id, ())

    @functools.cached_property
    def _users(self):
        out = {}
        for n in self.nodes:
            for a in dict.fromkeys(n.args):
                out.setdefault(a, []).append(n.id)
        return {k: tuple(v) for k, v in out.items()}

    def results(self):
        """The ids whose values leave the step: the new states and the output."""
        return {node for _, node in self.new_states} | {self.output}

    def state_of(self, node_id):
        """The state a state node reads (node "state.h" -> "h")."""
        return node_id[len("state."):]

    # ------------------------------------------------------------ building

    def with_nodes(self, nodes, **changes):
        """A new IR with these nodes (and other fields changed), type-checked."""
        return replace(self, nodes=tuple(nodes), **changes).typecheck()

    # ------------------------------------------------------------ checking

    def typecheck(self):
        """Cheap invariants, after every pass: every operand bound before its use, each id
        bound once, known ops with the operands and sizes they need, results that are
        computed vectors of their state's size. Returns self."""
        seen = set()
        for n in self.nodes:
            if n.id in seen:
                raise CellError("the step IR binds %s twice" % n.id)
            if n.op not in OPS:
                raise CellError("node %s has the unknown op %r" % (n.id, n.op))
            for a in n.args:
                if a not in seen:
                    raise CellError("node %s uses %s before it is computed" % (n.id, a))
            seen.add(n.id)
            OPS[n.op].check(self, n)
        sizes = dict(self.states)
        for s, node in self.new_states:
            if node not in self or self[node].op in LEAVES or self[node].scalar:
                raise CellError("state %r is not a computed vector (%s)" % (s, node))
            if self[node].size != sizes[s]:
                raise CellError("%s: state %r has size %d but the cell returns a vector of "
                                "size %d" % (self[node].where, s, sizes[s], self[node].size))
        if self.output not in self or self[self.output].scalar:
            raise CellError("the output %s is not a vector node" % self.output)
        return self

    # ------------------------------------------------------------ display

    def describe(self, node_id):
        """A name for a node in an error message: x, h (t-1), W_f, or the line that made it."""
        n = self[node_id]
        if n.op == "input":
            return "x"
        if n.op == "state":
            return self.state_of(node_id) + " (t-1)"
        if n.op == "param":
            return n.id[len("param."):]
        what = {"ew": "value", "linear": "linear map"}.get(n.op, n.op)
        return "the %s%s at %s" % (what, " %s" % n.name if n.name else "", n.where)

    def row_name(self):
        """The input leaf's name: x, or x_row when the cell's inputs, contexts or masks
        are blocks of it (slices named input.* and mask.*)."""
        return "x_row" if any(n.startswith(("input.", "mask.")) for n in self.ops()) else "x"

    def display_name(self, node_id):
        """A reader's name for a node: x[t], h[t-1], W_f, or the cell's own name."""
        n = self[node_id]
        if n.op == "input":
            return "%s[t]" % self.row_name()
        if n.op == "state":
            return "%s[t-1]" % self.state_of(node_id)
        if n.op == "param":
            return n.id[len("param."):]
        state = next((s for s, node in self.new_states if node == node_id), None)
        if state is not None:
            return "%s[t]" % state
        if node_id == self.output:
            return "y[t]"
        return "%s[t]" % n.name if n.name else n.id

    def __str__(self):
        sizes = ", ".join("%s=%d" % kv for kv in sorted(self.sizes.items()))
        lines = ["step %s (%s)" % (self.name, sizes)]
        names = {n.id: (self.display_name(n.id), self.display_name(n.id)) for n in self.nodes}
        for n in self.nodes:
            if n.op in LEAVES:
                continue
            rhs = OPS[n.op].display(self, n, names)[0]
            lines.append("  %-10s = %-44s size %-4d %s" % (self.display_name(n.id), rhs,
                                                            n.size, n.where))
        lines.append("  new states: %s; output: %s" % (
            ", ".join("%s[t]" % s for s, _ in self.new_states), self.display_name(self.output)))
        return "\n".join(lines)
