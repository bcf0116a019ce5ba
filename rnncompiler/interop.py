"""Weights exchanged with PyTorch. `rc.from_torch(module)` compiles the rc.cells form of a
torch.nn.RNN / LSTM / GRU (or RNNCell / LSTMCell / GRUCell), with the module's sizes and
dtype, and returns the kernel and the module's weights as its parameters; `rc.to_torch`
writes parameters back into the module's tensors, in place. Both copy, both are exact:
torch's stacked gate tensors are split row-wise into the cell's per-gate parameters (the
table is rc.cells.TORCH_WEIGHTS).

The kernels are time-major: for a module with batch_first=True, pass x.transpose(0, 1)
(batch_first changes only the layout of the data, never the weights).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import cells
from .compiler.dsl import Cell
from .compiler.pipeline import compile as compile_cell, dtype_name

SUPPORTED = ("torch.nn.RNN, LSTM or GRU (num_layers=1, bidirectional=False), "
             "or torch.nn.RNNCell, LSTMCell or GRUCell")


class FromTorch(NamedTuple):
    """What rc.from_torch returns: `kernel, params = rc.from_torch(module)`."""
    kernel: object
    params: dict


@dataclass(frozen=True)
class TorchForm:
    """How a torch module maps onto a cell: the cell, torch tensor name -> the cell
    parameters stacked in its rows (in order), and the sizes to compile with."""
    cell: Cell
    layout: dict
    input_size: int
    hidden_size: int
    sizes: dict
    state_names: tuple      # torch's hx order: ("h",) or ("h", "c")
    layered: bool           # nn.RNN/LSTM/GRU (states carry a leading layer axis)


def _torch():
    try:
        import torch
    except ImportError as exc:    # pragma: no cover - torch is in the test extra
        raise ImportError("exchanging weights with PyTorch needs torch: "
                          "pip install 'rnncompiler[torch]'") from exc
    return torch


def _check_one_layer(module):
    name = type(module).__name__
    if module.num_layers != 1:
        raise ValueError("module.num_layers: expected 1, got %d; rc.from_torch/rc.to_torch "
                         "exchange one layer — split the %s into single-layer modules"
                         % (module.num_layers, name))
    if module.bidirectional:
        raise ValueError("module.bidirectional: expected False, got True; exchange each "
                         "direction as its own single-direction %s" % name)


def _kind(module):
    """("rnn" | "lstm" | "gru", nonlinearity, layered) of a supported module."""
    nn = _torch().nn
    if isinstance(module, nn.RNNBase):
        _check_one_layer(module)
        kinds = {"RNN_TANH": ("rnn", "tanh"), "RNN_RELU": ("rnn", "relu"),
                 "LSTM": ("lstm", None), "GRU": ("gru", None)}
        if module.mode not in kinds:
            raise TypeError("module: %s has mode %r; expected %s"
                            % (type(module).__name__, module.mode, SUPPORTED))
        return kinds[module.mode] + (True,)
    for cls, kind in ((nn.LSTMCell, "lstm"), (nn.GRUCell, "gru"), (nn.RNNCell, "rnn")):
        if isinstance(module, cls):
            return kind, getattr(module, "nonlinearity", None), False
    raise TypeError("module: expected %s, got %s" % (SUPPORTED, type(module).__name__))


def torch_cell(kind, nonlinearity, bias, proj):
    """The rc.cells form (the ready-made instance when there is one)."""
    if kind == "rnn":
        if bias:
            return cells.rnn_tanh_torch if nonlinearity == "tanh" else cells.rnn_relu_torch
        return cells.make_rnn_torch(nonlinearity, bias=False)
    if kind == "lstm":
        if bias:
            return cells.lstm_proj_torch if proj else cells.lstm_torch
        return cells.make_lstm_torch(proj_size="P" if proj else None, bias=False)
    return cells.gru_torch if bias else cells.make_gru_torch(bias=False)


def torch_form(module):
    """The TorchForm of a supported module; TypeError/ValueError for anything else."""
    kind, nonlinearity, layered = _kind(module)
    bias = bool(module.bias)
    proj = int(getattr(module, "proj_size", 0) or 0)
    suffix = "_l0" if layered else ""
    layout = {tensor + suffix: names for tensor, names in cells.TORCH_WEIGHTS[kind].items()
              if (bias or not tensor.startswith("bias")) and (proj or tensor != "weight_hr")}
    return TorchForm(torch_cell(kind, nonlinearity, bias, proj), layout, int(module.input_size),
                     int(module.hidden_size), {"P": proj} if proj else {},
                     ("h", "c") if kind == "lstm" else ("h",), layered)


def _module_dtype(module, layout, dtype):
    """The numpy dtype name to use: `dtype` if given, else the module's."""
    if dtype is not None:
        return dtype_name(dtype)
    torch = _torch()
    found = {getattr(module, t).dtype for t in layout}
    names = {torch.float32: "float32", torch.float64: "float64"}
    if len(found) != 1 or next(iter(found)) not in names:
        raise ValueError("module: its weights are %s; rc.from_torch infers float32 or float64 "
                         "only — pass dtype='float32' or dtype='float64' to convert"
                         % ", ".join(sorted(str(d) for d in found)))
    return names[next(iter(found))]


def params_from_torch(module, dtype=None, *, grad=False):
    """The module's weights (or with grad=True their .grad) as a dict of the cell's
    parameters: numpy copies in `dtype` (default: the module's dtype)."""
    form = torch_form(module)
    dtype = np.dtype(_module_dtype(module, form.layout, dtype))
    params = {}
    for tensor_name, names in form.layout.items():
        tensor = getattr(module, tensor_name)
        if grad:
            if tensor.grad is None:
                raise ValueError("module.%s.grad is None: run backward first" % tensor_name)
            tensor = tensor.grad
        rows = tensor.detach().cpu().numpy()
        for name, chunk in zip(names, np.split(rows, len(names)), strict=True):
            params[name] = np.array(chunk, dtype=dtype, order="C")
    return params


def from_torch(module, dtype=None, **compile_options):
    """Compile the rc.cells form of a torch module and read its weights.

    Parameters: a torch.nn.RNN, LSTM (proj_size included) or GRU with one layer and one
    direction, or an RNNCell, LSTMCell or GRUCell; `dtype` ("float32"/"float64"; default
    the module's); `compile_options` go to rc.compile (opt_level, blas).
    Returns `(kernel, params)`: the compiled kernel (input and hidden size, proj_size as
    the size "P", dtype all from the module) and numpy copies of the weights, keyed by the
    cell's parameter names. Outputs and gradients of `kernel` then equal the module's.
    """
    form = torch_form(module)
    dtype = _module_dtype(module, form.layout, dtype)
    kern = compile_cell(form.cell, form.input_size, form.hidden_size, dtype, sizes=form.sizes,
                        **compile_options)
    params = params_from_torch(module, dtype)
    return FromTorch(kern, {name: params[name] for name in kern.param_shapes})


def _stacked(params, form, module):
    """torch tensor name -> the parameters stacked as its rows, all checked first."""
    if not isinstance(params, Mapping):
        raise TypeError("params: expected a dict of parameter name -> array, got %s"
                        % type(params).__name__)
    expected = [n for names in form.layout.values() for n in names]
    missing = [n for n in expected if n not in params]
    unknown = sorted(set(params) - set(expected))
    if missing or unknown:
        raise KeyError("params: %s needs exactly %s; missing %s, unknown %s"
                       % (type(module).__name__, expected, missing, unknown))
    out = {}
    for tensor_name, names in form.layout.items():
        shape = tuple(getattr(module, tensor_name).shape)
        part = (shape[0] // len(names),) + shape[1:]
        chunks = []
        for name in names:
            arr = np.asarray(params[name])
            if arr.dtype.kind not in "fiu":
                raise TypeError("params[%r]: expected a real array, got dtype %s"
                                % (name, arr.dtype))
            if arr.shape != part:
                raise ValueError("params[%r]: expected shape %s (%s of module.%s, shape %s), "
                                 "got %s" % (name, part, "all" if len(names) == 1 else
                                             "1/%d of the rows" % len(names), tensor_name,
                                             shape, arr.shape))
            chunks.append(arr)
        out[tensor_name] = np.ascontiguousarray(np.concatenate(chunks))
    return out


def to_torch(params, module, *, grad=False):
    """Copy `params` (the cell's parameter names -> arrays) into the module's weights, in
    place and without autograd (or, with grad=True, into their .grad); returns the module.
    Names and shapes are checked before anything is written. Values are cast to the
    module's dtype and copied to its device."""
    torch = _torch()
    form = torch_form(module)
    stacked = _stacked(params, form, module)
    with torch.no_grad():
        for tensor_name, rows in stacked.items():
            tensor = getattr(module, tensor_name)
            if grad:
                if tensor.grad is None:
                    tensor.grad = torch.zeros_like(tensor)
                tensor = tensor.grad
            tensor.copy_(torch.from_numpy(rows))
    return module


def state_from_torch(module, hx, dtype=None):
    """torch's initial state (h0, or (h0, c0) for an LSTM) as the kernel's state0 dict."""
    form = torch_form(module)
    dtype = np.dtype(_module_dtype(module, form.layout, dtype))
    parts = (hx,) if len(form.state_names) == 1 else tuple(hx)
    if len(parts) != len(form.state_names):
        raise ValueError("hx: %s takes %d state tensors, got %d"
                         % (type(module).__name__, len(form.state_names), len(parts)))
    state0 = {}
    for name, part in zip(form.state_names, parts):
        arr = part.detach().cpu().numpy()
        if form.layered:
            if arr.shape[0] != 1:
                raise ValueError("hx: expected a leading layer axis of size 1, got shape %s"
                                 % (tuple(arr.shape),))
            arr = arr[0]
        state0[name] = np.array(arr, dtype=dtype, order="C")
    return state0


def state_to_torch(module, states):
    """The kernel's states ({"h": (B, n), ...}) as torch's hx for this module: tensors of
    its dtype and device, with the layer axis of nn.RNN/LSTM/GRU."""
    torch = _torch()
    form = torch_form(module)
    ref = getattr(module, next(iter(form.layout)))
    out = []
    for name in form.state_names:
        if name not in states:
            raise KeyError("states: missing %r (expected %s)" % (name, list(form.state_names)))
        t = torch.as_tensor(np.asarray(states[name])).to(dtype=ref.dtype, device=ref.device)
        out.append(t.unsqueeze(0) if form.layered else t)
    return out[0] if len(out) == 1 else tuple(out)
