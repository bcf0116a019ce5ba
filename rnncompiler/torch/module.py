"""`RNN`: an nn.Module of compiled cells, stacked and optionally bidirectional, with the
interface of torch.nn.LSTM/GRU (time-major or batch_first tensors or a PackedSequence in;
outputs and h_n-style final states out). Each layer and direction is one KernelFunction:
one kernel forward and one kernel backward over the whole sequence, no per-step Python.
"""
from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from .. import cells, interop
from ..compiler.dsl import Cell
from ..models.layers import reversal_index
from ..compiler.pipeline import compile as compile_cell
from .function import DTYPES, as_lengths, check_tensor, run_kernel

# the cells of rc.cells that are PyTorch's own forms -> their key in rc.cells.TORCH_WEIGHTS
TORCH_FORMS = {"rnn_tanh_torch": "rnn", "rnn_relu_torch": "rnn", "lstm_torch": "lstm",
               "lstm_proj_torch": "lstm", "gru_torch": "gru"}
TORCH_MODES = {"RNN_TANH": ("rnn", "tanh"), "RNN_RELU": ("rnn", "relu"),
               "LSTM": ("lstm", None), "GRU": ("gru", None)}


def _torch_dtype(dtype):
    """torch.float32 or torch.float64 from a torch dtype or a numpy spelling."""
    if dtype in DTYPES:
        return dtype
    names = {"float32": torch.float32, "float64": torch.float64}
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = None
    if name not in names:
        raise ValueError("dtype: expected torch.float32 or torch.float64, got %r" % (dtype,))
    return names[name]


def _torch_layout(cell, kern):
    """torch tensor name -> the cell parameters stacked in its rows when the cell is one of
    PyTorch's forms (rc.cells.lstm_torch, gru_torch, ...), else None."""
    kind = TORCH_FORMS.get(cell.name)
    if kind is None:
        return None
    layout = {tensor: names for tensor, names in cells.TORCH_WEIGHTS[kind].items()
              if all(n in kern.param_shapes for n in names)}
    covered = sorted(n for names in layout.values() for n in names)
    return layout if covered == sorted(kern.param_shapes) else None


def _load_torch_names(module, state_dict, prefix, *unused):
    """load_state_dict hook: torch.nn.LSTM/GRU/RNN keys (weight_ih_l0, ...) are split into
    the cell's parameters, so a torch module's state_dict loads as it is."""
    if module.torch_layout is None:
        return
    for suffix in module.suffixes():
        for tensor, names in module.torch_layout.items():
            value = state_dict.pop(prefix + tensor + suffix, None)
            if value is not None:
                for name, chunk in zip(names, value.chunk(len(names)), strict=True):
                    state_dict[prefix + name + suffix] = chunk


class RNN(nn.Module):
    """A stack of recurrent layers of a compiled cell, as an nn.Module.

    Parameters: `cell` (from @rc.cell, e.g. rc.cells.lstm_torch), `input_size`,
    `hidden_size`, `num_layers`; `bidirectional` adds a direction reading each sequence
    backwards within its length (outputs concatenated, forward first); `batch_first`
    takes and returns (B, T, ...) tensors; `dropout` on the inputs of layers 1.. in training
    mode; `dtype` (torch.float32 or torch.float64; `.double()` later compiles float64
    kernels on first use); `sizes` binds the cell's other size names; `compile_options`
    go to rc.compile.

    Its nn.Parameters are the cell's parameters named `<name>_l<layer>` (and
    `..._reverse` for the backward direction), drawn uniform(-1/sqrt(H), 1/sqrt(H)) like
    torch's RNN layers. `forward(input, hx=None, lengths=None)` returns `(output, h_n)`, or
    `(output, (h_n, c_n, ...))` for a cell with several states (in the cell's order):
    each final state stacked as (num_layers * directions, B, size). For PyTorch's forms
    of rc.cells, `load_state_dict` also takes torch.nn.LSTM/GRU/RNN's keys, and
    `torch_state_dict()` gives them back.

        >>> rnn = rc.torch.RNN(rc.cells.lstm_torch, 3, 8, num_layers=2)   # doctest: +SKIP
        >>> output, (h_n, c_n) = rnn(x)                                     # doctest: +SKIP
    """

    def __init__(self, cell, input_size, hidden_size, num_layers=1, bidirectional=False,
                 batch_first=False, dropout=0.0, dtype=torch.float32, sizes=None,
                 **compile_options):
        super().__init__()
        if not isinstance(cell, Cell):
            raise TypeError("cell: expected a cell made with @rc.cell, got %r" % (cell,))
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError("num_layers: expected an int >= 1, got %r" % (num_layers,))
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError("dropout: expected a rate in [0, 1), got %r" % (dropout,))
        self.cell, self.input_size, self.hidden_size = cell, input_size, hidden_size
        self.num_layers, self.bidirectional = num_layers, bool(bidirectional)
        self.batch_first, self.dropout = bool(batch_first), float(dropout)
        self.sizes, self.compile_options = dict(sizes or {}), compile_options
        self._kernels = {}
        dtype = _torch_dtype(dtype)
        kernels = self.kernels(dtype)          # compile now: a mistake shows here, not later
        self.state_sizes = dict(kernels[0].state_sizes)
        self.output_size = self.directions * kernels[0].output_size
        self.torch_layout = _torch_layout(cell, kernels[0])
        for l, kern in enumerate(kernels):
            for suffix in self.suffixes(l):
                for name, shape in kern.param_shapes.items():
                    if name in getattr(kern, "frozen", ()):
                        # a constant of the kernel (trainable=False): state, not learnt
                        self.register_buffer(name + suffix, torch.empty(shape, dtype=dtype))
                    else:
                        self.register_parameter(name + suffix,
                                                nn.Parameter(torch.empty(shape, dtype=dtype)))
        self.register_load_state_dict_pre_hook(_load_torch_names)
        self.reset_parameters()

    def __getstate__(self):
        """Pickles without the cell's Python function (a factory's cell is a local
        function, which pickle refuses): the traced spec is all compiling needs."""
        state = dict(self.__dict__)
        state["cell"] = dataclasses.replace(self.cell, fn=None)
        return state

    @property
    def directions(self):
        return 2 if self.bidirectional else 1

    def suffixes(self, layer=None):
        """The parameter name suffixes of one layer (or of all): "_l0", "_l0_reverse", ..."""
        layers = range(self.num_layers) if layer is None else (layer,)
        return ["_l%d%s" % (l, d) for l in layers for d in ("", "_reverse")[:self.directions]]

    def reset_parameters(self):
        """Every parameter (and constant buffer) uniform(-1/sqrt(H), 1/sqrt(H)), from
        torch's generator."""
        k = 1.0 / math.sqrt(self.hidden_size)
        for p in self.parameters():
            nn.init.uniform_(p, -k, k)
        for name, _ in self.named_buffers():
            nn.init.uniform_(getattr(self, name), -k, k)

    def extra_repr(self):
        return ("cell=%s, %d, %d, num_layers=%d, bidirectional=%s, batch_first=%s, "
                "dropout=%g" % (self.cell.name, self.input_size, self.hidden_size,
                                self.num_layers, self.bidirectional, self.batch_first,
                                self.dropout))

    def kernels(self, dtype=None):
        """The compiled kernels, one per layer, in `dtype` (default: the parameters')."""
        dtype = self.param_dtype() if dtype is None else dtype
        name = DTYPES[dtype].name
        if name not in self._kernels:
            by_input, kernels, n_in = {}, [], self.input_size
            for _ in range(self.num_layers):
                if n_in not in by_input:
                    by_input[n_in] = compile_cell(self.cell, n_in, self.hidden_size, name,
                                                  sizes=self.sizes, **self.compile_options)
                kernels.append(by_input[n_in])
                n_in = self.directions * by_input[n_in].output_size
            self._kernels[name] = kernels
        return self._kernels[name]

    def param_dtype(self):
        """The parameters' dtype, checked: one dtype, float32 or float64, on the CPU (the
        constant buffers of trainable=False parameters count too)."""
        found = {(p.dtype, p.device.type) for p in (*self.parameters(), *self.buffers())}
        if len(found) != 1 or next(iter(found))[0] not in DTYPES:
            raise TypeError("parameters: expected all float32 or all float64, got %s; use "
                            ".float() or .double()" % sorted(str(d) for d, _ in found))
        dtype, device = next(iter(found))
        if device != "cpu":
            raise ValueError("parameters: expected them on the CPU, got %s; rnncompiler's "
                             "kernels run on the CPU — use .cpu()" % device)
        return dtype

    # ------------------------------------------------------------ running

    def forward(self, input, hx=None, lengths=None):
        """(output, final states) for a (T, B, I) tensor (or (B, T, I) with batch_first),
        optional `lengths` (B ints), or a PackedSequence (then the output is one too)."""
        dtype = self.param_dtype()
        packed = input if isinstance(input, PackedSequence) else None
        if packed is not None:
            if lengths is not None:
                raise ValueError("lengths: a PackedSequence carries its own lengths; "
                                 "pass lengths=None")
            x, lengths = pad_packed_sequence(packed)
        else:
            check_tensor("input", input, dtype, "the module's parameters")
            x = input.transpose(0, 1) if self.batch_first and input.dim() == 3 else input
        check_tensor("input", x, dtype, "the module's parameters")
        if x.dim() != 3 or x.shape[2] != self.input_size or 0 in x.shape[:2]:
            raise ValueError("input: expected shape (%s, %d) with T, B >= 1, got %s"
                             % ("B, T" if self.batch_first else "T, B", self.input_size,
                                tuple(input.shape)))
        T, B = x.shape[0], x.shape[1]
        lengths = as_lengths(lengths, T, B)
        state0 = self._initial_states(hx, B, dtype)
        output, finals = self._run_layers(x, lengths, state0, dtype)
        h_n = tuple(torch.stack([f[i] for f in finals]) for i in range(len(self.state_sizes)))
        if packed is not None:
            output = _pack_like(output, lengths, packed)
        elif self.batch_first:
            output = output.transpose(0, 1)
        return output, (h_n[0] if len(h_n) == 1 else h_n)

    def _run_layers(self, x, lengths, state0, dtype):
        """The layers in order: (last layer's output (T, B, F), final states per layer and
        direction)."""
        T, B = x.shape[0], x.shape[1]
        rev = reversal_index(lengths, T, B) if self.bidirectional else None
        h, finals = x, []
        for l, kern in enumerate(self.kernels(dtype)):
            if l > 0 and self.dropout > 0:
                h = nn.functional.dropout(h, self.dropout, self.training)
            outs = []
            for d, suffix in enumerate(self.suffixes(l)):
                params = [getattr(self, name + suffix) for name in kern.param_shapes]
                y, *states = run_kernel(kern, tuple(kern.param_shapes), lengths,
                                        rev if d else None, h, params + state0[len(finals)],
                                        self.training)
                outs.append(y)
                finals.append(states)
            h = outs[0] if len(outs) == 1 else torch.cat(outs, 2)
        return h, finals

    def _initial_states(self, hx, B, dtype):
        """Per layer and direction, one (B, size) tensor or None per state."""
        n, names = self.num_layers * self.directions, list(self.state_sizes)
        if hx is None:
            return [[None] * len(names)] * n
        if isinstance(hx, torch.Tensor):
            parts = (hx,)
        elif isinstance(hx, dict):
            unknown = [s for s in hx if s not in self.state_sizes]
            if unknown:
                raise KeyError("hx: unknown state %r; the cell has %s" % (unknown[0], names))
            parts = tuple(hx.get(s) for s in names)
        elif isinstance(hx, (tuple, list)):
            parts = tuple(hx)
        else:
            raise TypeError("hx: expected a tensor, a tuple of tensors (%s) or a dict, got %s"
                            % (", ".join(names), type(hx).__name__))
        if len(parts) != len(names):
            raise ValueError("hx: the cell has %d states (%s), got %d tensors"
                             % (len(names), ", ".join(names), len(parts)))
        for s, part in zip(names, parts):
            if part is not None:
                check_tensor("hx[%r]" % s, part, dtype, "the module's parameters")
                if tuple(part.shape) != (n, B, self.state_sizes[s]):
                    raise ValueError("hx[%r]: expected shape (num_layers * directions, B, size)"
                                     " = %s, got %s" % (s, (n, B, self.state_sizes[s]),
                                                        tuple(part.shape)))
        return [[None if part is None else part[k] for part in parts] for k in range(n)]

    # ------------------------------------------------------------ torch's own names

    def torch_state_dict(self):
        """The parameters under torch.nn.LSTM/GRU/RNN's names, stacked in torch's gate
        order: a state_dict the torch module of the same sizes loads."""
        if self.torch_layout is None:
            raise ValueError("torch_state_dict: the cell %r is not one of PyTorch's forms "
                             "(rc.cells.%s)" % (self.cell.name, ", ".join(sorted(TORCH_FORMS))))
        out = OrderedDict()
        for suffix in self.suffixes():
            for tensor, names in self.torch_layout.items():
                out[tensor + suffix] = torch.cat([getattr(self, n + suffix).detach()
                                                  for n in names])
        return out

    @classmethod
    def from_torch(cls, module, **compile_options):
        """An RNN running the compiled form of a torch.nn.RNN, LSTM or GRU (any number of
        layers and directions, batch_first, dropout, proj_size) with a copy of its weights."""
        if not isinstance(module, nn.RNNBase) or module.mode not in TORCH_MODES:
            raise TypeError("module: expected a torch.nn.RNN, LSTM or GRU, got %s"
                            % type(module).__name__)
        kind, nonlinearity = TORCH_MODES[module.mode]
        proj = int(getattr(module, "proj_size", 0) or 0)
        cell = interop.torch_cell(kind, nonlinearity, bool(module.bias), proj)
        rnn = cls(cell, module.input_size, module.hidden_size, module.num_layers,
                  module.bidirectional, module.batch_first, module.dropout,
                  dtype=module.weight_ih_l0.dtype, sizes={"P": proj} if proj else None,
                  **compile_options)
        rnn.load_state_dict(module.state_dict())
        return rnn


def _pack_like(output, lengths, packed):
    """The padded time-major output as a PackedSequence laid out like the input."""
    order = packed.sorted_indices
    if order is not None:
        output, lengths = output.index_select(1, order), lengths[order.numpy()]
    data = pack_padded_sequence(output, torch.from_numpy(lengths), enforce_sorted=True).data
    return PackedSequence(data, packed.batch_sizes, packed.sorted_indices,
                          packed.unsorted_indices)
