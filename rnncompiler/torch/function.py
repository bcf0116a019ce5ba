"""A compiled kernel as a torch.autograd.Function: `kern.forward` in forward, `kern.backward`
in backward, on the tensors' own memory (CPU tensors are viewed as numpy arrays, no copy;
the kernel copies `x` into its tape itself). One call runs the whole sequence.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.autograd.function import once_differentiable

from ..models.layers import check_lengths, reversal_index, reverse_steps

DTYPES = {torch.float32: np.dtype("float32"), torch.float64: np.dtype("float64")}


def numpy_view(tensor):
    """The tensor's memory as a numpy array (no copy for a CPU tensor, any strides)."""
    return tensor.detach().numpy()


def check_tensor(name, tensor, dtype, whose="the kernel's"):
    """A CPU tensor of the given torch dtype, or a TypeError/ValueError saying what to do."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError("%s: expected a torch.Tensor, got %s" % (name, type(tensor).__name__))
    if tensor.device.type != "cpu":
        raise ValueError("%s: expected a CPU tensor, got one on %s; rnncompiler's kernels run "
                         "on the CPU — move it with .cpu()" % (name, tensor.device))
    if tensor.dtype != dtype:
        raise TypeError("%s: expected dtype %s (%s), got %s; convert it with .to(%s)"
                        % (name, dtype, whose, tensor.dtype, dtype))
    return tensor


def torch_dtype(kern):
    """The torch dtype of a kernel's numpy dtype."""
    return torch.float32 if kern.dtype == np.float32 else torch.float64


def as_lengths(lengths, T, B):
    """lengths (a tensor, an array or a list of ints) as a checked int64 array, or None."""
    if lengths is None:
        return None
    if isinstance(lengths, torch.Tensor):
        lengths = lengths.detach().cpu().numpy()
    return check_lengths(lengths, T, B)


def _kernel_args(kern, names, rev, x, tensors):
    """(params, x, state0) as numpy views for the kernel; x reversed when rev is given."""
    params = {n: numpy_view(t) for n, t in zip(names, tensors)}
    states = tensors[len(names):]
    state0 = {s: numpy_view(t) for s, t in zip(kern.state_sizes, states, strict=True)
              if t is not None}
    xin = numpy_view(x)
    return params, (xin if rev is None else reverse_steps(xin, rev)), (state0 or None)


def _as_tensors(kern, y, states, rev):
    """(outputs in time order, *final states) as tensors over the kernel's arrays."""
    y = y if rev is None else reverse_steps(y, rev)
    return (torch.from_numpy(y),) + tuple(torch.from_numpy(states[s]) for s in kern.state_sizes)


class KernelFunction(torch.autograd.Function):
    """outputs, *final_states = KernelFunction.apply(kern, names, lengths, rev, training,
    x, *params, *state0): params in the order of `names`, one state0 entry (a tensor or
    None) per state of the kernel. With `rev` (the index of `reversal_index`) the kernel
    reads each sequence reversed within its length, and its outputs are put back in time
    order. `training`: a cell's masks (rc.dropout, rc.zoneout) are drawn, else at their
    expectations."""

    @staticmethod
    def forward(ctx, kern, names, lengths, rev, training, x, *tensors):
        res = kern.forward(*_kernel_args(kern, names, rev, x, tensors), lengths,
                           training=training)
        ctx.kern, ctx.res, ctx.rev, ctx.names = kern, res, rev, names
        ctx.given = tuple(t is not None for t in tensors[len(names):])
        ctx.set_materialize_grads(False)
        return _as_tensors(kern, res.outputs, res.states, rev)

    @staticmethod
    @once_differentiable
    def backward(ctx, d_outputs, *d_states):
        kern, rev = ctx.kern, ctx.rev
        dy = None
        if d_outputs is not None:
            dy = numpy_view(d_outputs)
            dy = dy if rev is None else reverse_steps(dy, rev)
        ds = {s: numpy_view(g) for s, g in zip(kern.state_sizes, d_states, strict=True)
              if g is not None}
        g = kern.backward(ctx.res, dy, ds or None)
        dx = g.x if rev is None else reverse_steps(g.x, rev)
        # constants (trainable=False) have no gradient: None, as for a tensor without one
        d_params = [torch.from_numpy(g.params[n]) if n in g.params else None
                    for n in ctx.names]
        d_state0 = [torch.from_numpy(g.state0[s]) if given else None
                    for s, given in zip(kern.state_sizes, ctx.given)]
        return (None, None, None, None, None, torch.from_numpy(dx), *d_params, *d_state0)


def run_kernel(kern, names, lengths, rev, x, tensors, training=True):
    """KernelFunction.apply; or, when no gradient is wanted (torch.no_grad, or nothing
    requires one), kern.infer, which keeps no tape (a cell with masks in training runs
    forward: infer would use the masks' expectations)."""
    if torch.is_grad_enabled() and any(t is not None and t.requires_grad
                                       for t in (x, *tensors)):
        return KernelFunction.apply(kern, names, lengths, rev, training, x, *tensors)
    args = _kernel_args(kern, names, rev, x, tensors)
    if kern.masks and training:
        res = kern.forward(*args, lengths)
        return _as_tensors(kern, res.outputs, res.states, rev)
    y, states = kern.infer(*args, lengths)
    return _as_tensors(kern, y, states, rev)


def rnn(kern, params, x, state0=None, lengths=None, *, reverse=False, training=True):
    """Run a compiled kernel on torch tensors, differentiably.

    Parameters: `kern` (from rc.compile); `params`, a dict name -> tensor of the kernel's
    `param_shapes` (all of them; nn.Parameters or any tensors); `x`, time-major (T, B, I);
    `state0`, None or a dict state -> (B, size) tensor (a missing state starts at zero);
    `lengths`, None or B ints in [0, T]; `reverse=True` reads each sequence backwards within
    its length (the backward direction of a bidirectional layer); `training=False` puts
    the cell's masks (rc.dropout, rc.zoneout) at their expectations.
    Returns `(outputs, states)`: outputs (T, B, O), zero past each length, and the final
    states as a dict state -> (B, size). Gradients flow to params, x and state0 through one
    `kern.backward`. Every tensor is on the CPU, in the kernel's dtype.
    """
    dtype = torch_dtype(kern)
    check_tensor("x", x, dtype)
    if x.dim() != 3 or x.shape[2] != kern.input_size or 0 in x.shape[:2]:
        raise ValueError("x: expected shape (T, B, %d) with T, B >= 1, got %s"
                         % (kern.input_size, tuple(x.shape)))
    T, B = x.shape[0], x.shape[1]
    names = tuple(kern.param_shapes)
    tensors = [_param(params, n, kern.param_shapes[n], dtype) for n in names]
    tensors += _state0(kern, state0, B, dtype)
    lengths = as_lengths(lengths, T, B)
    rev = reversal_index(lengths, T, B) if reverse else None
    outputs, *finals = run_kernel(kern, names, lengths, rev, x, tensors, training)
    return outputs, dict(zip(kern.state_sizes, finals, strict=True))


def _param(params, name, shape, dtype):
    if not isinstance(params, dict):
        raise TypeError("params: expected a dict name -> tensor, got %s" % type(params).__name__)
    if name not in params:
        raise KeyError("params: missing parameter %r of shape %s" % (name, shape))
    t = check_tensor("params[%r]" % name, params[name], dtype)
    if tuple(t.shape) != tuple(shape):
        raise ValueError("params[%r]: expected shape %s, got %s" % (name, shape, tuple(t.shape)))
    return t


def _state0(kern, state0, B, dtype):
    """One entry per state of the kernel: a (B, size) tensor or None."""
    if state0 is None:
        return [None] * len(kern.state_sizes)
    if not isinstance(state0, dict):
        raise TypeError("state0: expected a dict state -> tensor, got %s"
                        % type(state0).__name__)
    unknown = [s for s in state0 if s not in kern.state_sizes]
    if unknown:
        raise KeyError("state0: unknown state %r; this kernel has %s"
                       % (unknown[0], list(kern.state_sizes)))
    out = []
    for s, size in kern.state_sizes.items():
        t = state0.get(s)
        if t is not None:
            check_tensor("state0[%r]" % s, t, dtype)
            if tuple(t.shape) != (B, size):
                raise ValueError("state0[%r]: expected shape (%d, %d), got %s"
                                 % (s, B, size, tuple(t.shape)))
        out.append(t)
    return out
