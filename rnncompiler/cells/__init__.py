"""Cells from the literature, each a short `@rc.cell` function with its equations and
citation in its docstring, each verified against finite differences and an independent
PyTorch implementation. Copy one, change one thing: that is a new cell.

    >>> import rnncompiler as rc
    >>> rc.cells.lstm.states
    {'h': 'H', 'c': 'H'}
    >>> rc.cells.SIZES["lstm_proj"]          # bind with rc.compile(..., sizes={"P": n})
    ('P',)

`ALL` maps every ready-made cell's name to the cell; `SIZES` gives the size names each
needs besides I and H. Cells with options have a factory (`make_lstm`, `make_lstm_proj`,
`make_layernorm_lstm`, `make_slstm`, `make_rnn_torch`, `make_lstm_torch`,
`make_gru_torch`); the plain name is the default instance. The echo state network
(`esn`, `make_esn(leak)`) has only constant weights (trainable=False): draw them with
`esn_weights(kern, spectral_radius, ...)` and train a readout on its states. The
`*_torch` cells are PyTorch's own forms, used by `rc.from_torch` / `rc.to_torch`. The
depth-gated LSTM (`depth_gated_lstm`) takes two inputs per step, the h and c of the layer
below, which `lstm_hc` (an LSTM whose output is [h; c]) and it output: a stack is
`rc.models.RNN([lstm_hc, depth_gated_lstm, ...], ...)`.
"""
from ..compiler.dsl import Cell
from .simple import elman, elman_relu, jordan, indrnn, gru, mgu
from .lstms import (lstm1997, make_lstm, lstm, peephole_lstm, make_lstm_proj, lstm_proj,
                   make_layernorm_lstm, layernorm_lstm)
from .odyssey import (lstm_nig, lstm_nfg, lstm_nog, lstm_niaf, lstm_noaf, lstm_np, lstm_cifg,
                      lstm_fgr)
from .recent import min_gru, min_lstm, make_slstm, slstm
from .torch_forms import (TORCH_WEIGHTS, make_rnn_torch, rnn_tanh_torch, rnn_relu_torch,
                          make_lstm_torch, lstm_torch, lstm_proj_torch, make_gru_torch,
                          gru_torch)
from .reservoir import make_esn, esn, esn_weights
from .depth import lstm_hc, depth_gated_lstm


def size_names(cell):
    """The size names a cell needs besides "H" and "I", sorted (e.g. ("P",))."""
    if not isinstance(cell, Cell):
        raise TypeError("cell: expected a cell made with @rc.cell, got %r" % (cell,))
    sizes = [size for _, size in cell.spec.states]
    for node in cell.spec.nodes:
        sizes += [node.size, *node.shape]
    names = {name for size in sizes for name, _ in size.terms}
    return tuple(sorted(names - {"H", "I"}))


ALL = {cell.name: cell for cell in (
    elman, elman_relu, jordan, indrnn, gru, mgu,
    lstm1997, lstm, peephole_lstm, lstm_proj, layernorm_lstm,
    lstm_nig, lstm_nfg, lstm_nog, lstm_niaf, lstm_noaf, lstm_np, lstm_cifg, lstm_fgr,
    min_gru, min_lstm, slstm, lstm_hc, depth_gated_lstm,
    rnn_tanh_torch, rnn_relu_torch, lstm_torch, lstm_proj_torch, gru_torch, esn)}

SIZES = {name: size_names(cell) for name, cell in ALL.items()}

__all__ = sorted(ALL) + ["ALL", "SIZES", "TORCH_WEIGHTS", "size_names", "make_lstm",
                         "make_lstm_proj", "make_layernorm_lstm", "make_slstm",
                         "make_rnn_torch", "make_lstm_torch", "make_gru_torch", "make_esn",
                         "esn_weights"]
