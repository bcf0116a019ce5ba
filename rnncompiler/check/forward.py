"""The forward pass checked before any gradient: the kernel's outputs and its states after
every step against the numpy reference evaluator (or the float64 twin). Gradients are of
the function the kernel computes; when that function is wrong, no backward can be right,
and the report says where the forward first differs instead of blaming the backward."""
from __future__ import annotations

from ..compiler.selfcheck import ForwardCheck, compare_steps, kernel_steps, reference_steps

__all__ = ["ForwardCheck", "check_forward"]


def check_forward(kern, params, x, state0, lengths, rtol, atol, graph=None, twin=None):
    """A ForwardCheck of `kern` against the evaluator of `graph`, else against `twin`."""
    mine = kernel_steps(kern, params, x, state0, lengths)
    if graph is not None:
        return compare_steps(mine, reference_steps(graph, params, x, state0, lengths),
                             rtol, atol, "the numpy reference evaluator")
    return compare_steps(mine, kernel_steps(twin, params, x, state0, lengths), rtol, atol,
                         "the float64 reference kernel")
