"""rnncompiler in PyTorch: compiled cells as nn.Modules and autograd Functions (CPU).

`rc.torch.RNN(cell, input_size, hidden_size, ...)` is an nn.Module with the interface of
torch.nn.LSTM/GRU whose forward and backward run the compiled kernels, one call per layer
and direction over the whole sequence; `rc.torch.rnn(kern, params, x, ...)` is the same
for one kernel, as a function of tensors. Both work with torch.optim, gradient clipping,
state_dict, DistributedDataParallel and torch.autograd.gradcheck (float64).

    >>> import torch, rnncompiler as rc
    >>> rnn = rc.torch.RNN(rc.cells.gru_torch, 3, 4, dtype=torch.float64)
    >>> output, h_n = rnn(torch.zeros(5, 2, 3, dtype=torch.float64))
    >>> tuple(output.shape), tuple(h_n.shape)
    ((5, 2, 4), (1, 2, 4))
"""
from .function import KernelFunction, rnn
from .module import RNN

__all__ = ["RNN", "rnn", "KernelFunction"]
