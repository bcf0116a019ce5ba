"""Reverse mode over the step graph (BPTT, symbolically).

For a fused elementwise node y = f(a0, ..., ak) the local partials df/dai come from
sympy.diff, with f itself replaced by the saved y where it reappears (tanh' = 1 - y^2).
Linear maps use the matrix-adjoint rules (dv += dy W, dW += dy^T v, db += sum dy);
concat splits its adjoint; reductions broadcast theirs. The adjoints of the states at
t-1 are carried to step t-1, and parameter adjoints are summed over t.
"""
from __future__ import annotations

from dataclasses import dataclass

from .ops import (G, Y, LEAVES, OPS, STEP_FUNCTIONS, ConcatGrad, EwGrad,  # noqa: F401
                  LinearGrad, ReduceGrad, SliceGrad, ew_reads, local_partials)


@dataclass(frozen=True)
class Backward:
    """The backward step: ops in reverse topological order, and what the tape keeps."""
    ops: tuple
    tape: tuple               # op nodes whose forward values the backward pass reads


def differentiate(g):
    """The backward step of fused step IR `g`: each op's derivative rule (ops.OPS[op].vjp)
    in reverse order, and the forward values those rules read, which the tape keeps."""
    ops, tape = [], set()
    for n in reversed(g.ops()):
        rule = OPS[g[n].op]
        op = rule.vjp(g, g[n])
        tape |= rule.reads(op)
        ops.append(op)
    order = {n: k for k, n in enumerate(g)}
    taped = sorted((n for n in tape if g[n].op not in LEAVES), key=order.get)
    return Backward(tuple(ops), tuple(taped))
