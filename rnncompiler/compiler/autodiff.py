"""Reverse mode over the step graph (BPTT, symbolically).

For a fused elementwise node y = f(a0, ..., ak) the local partials df/dai come from
sympy.diff, with f itself replaced by the saved y where it reappears (tanh' = 1 - y^2).
Linear maps use the matrix-adjoint rules (dv += dy W, dW += dy^T v, db += sum dy);
concat splits its adjoint; reductions broadcast theirs. The adjoints of the states at
t-1 are carried to step t-1, and parameter adjoints are summed over t.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy

from . import mathfn
from ..errors import CellError
from .graph import LEAVES, linear_terms, topo_order

G = sympy.Symbol("g", real=True)   # the adjoint of the node being differentiated
Y = sympy.Symbol("y", real=True)   # the node's own (saved) value


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
class Backward:
    """The backward step: ops in reverse topological order, and what the tape keeps."""
    ops: tuple
    tape: tuple               # op nodes whose forward values the backward pass reads


# Piecewise-constant functions: derivative 0 wherever it exists, and 0 at their jumps too
# (PyTorch's choice for sign, floor, ceil and round); sympy would give DiracDelta or leave
# the derivative unevaluated.
STEP_FUNCTIONS = (sympy.sign, sympy.floor, sympy.ceiling, sympy.Heaviside)


def _diff(f, a):
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
        d = _diff(f, a)
        if d.has(sympy.Derivative) or d.has(sympy.Subs):
            raise CellError("%s: cannot differentiate %s with respect to its operand %d: sympy "
                            "gives %s; write the function with rc.activation(name, forward, "
                            "derivative=...)" % (where, f, k, d))
        if f.has(sympy.Function) and f not in (a,):
            d = d.xreplace({f: Y})
        out.append(d)
    return out


def differentiate(g):
    """The backward step graph of fused step graph `g`."""
    ops, tape = [], set()
    for n in reversed(topo_order(g)):
        d = g[n]
        if d.op == "ew":
            op = _ew_grad(g, n, d)
            tape |= ew_reads(op)
        elif d.op == "linear":
            op = LinearGrad(n, *linear_terms(g, n))
            tape |= {v for v, _ in op.terms}
        elif d.op == "concat":
            op = ConcatGrad(n, d.args)
        elif d.op == "reduce":
            op = ReduceGrad(n, d.args[0], d.how)
        else:
            raise CellError("no derivative rule for node kind %r" % d.op)
        ops.append(op)
    order = {n: k for k, n in enumerate(g)}
    taped = sorted((n for n in tape if g[n].op not in LEAVES), key=order.get)
    return Backward(tuple(ops), tuple(taped))


def _ew_grad(g, n, d):
    partials = local_partials(d.expr, len(d.args), d.where)
    contributions = []
    for k, (a, p) in enumerate(zip(d.args, partials, strict=True)):
        if p != 0:
            _check_finite_form(p, d.where)
            mathfn.check_expression(p, d.where, what="the derivative of %s" % d.expr)
            contributions.append((k, G * p))
    uses_y = any(c.has(Y) for _, c in contributions)
    return EwGrad(n, d.args, tuple(contributions), uses_y)


def _check_finite_form(expr, where):
    if expr.has(sympy.zoo) or expr.has(sympy.nan) or expr.has(sympy.oo):
        raise CellError("%s: the derivative %s is not finite" % (where, expr))


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
