"""The cells of torch.nn.RNN, LSTM and GRU in PyTorch's own parameterisation: separate
input and hidden weights, two biases per gate, so that rc.from_torch / rc.to_torch
exchange weights exactly. TORCH_WEIGHTS says which cell parameters each torch tensor
stacks, in torch's gate order."""
import rnncompiler as rc

from .lstms import size_option

# torch tensor (without its "_l0" suffix) -> the cell parameters stacked in its rows
TORCH_WEIGHTS = {
    "rnn": {"weight_ih": ("W_ih",), "weight_hh": ("W_hh",),
            "bias_ih": ("b_ih",), "bias_hh": ("b_hh",)},
    "lstm": {"weight_ih": ("W_ii", "W_if", "W_ig", "W_io"),
             "weight_hh": ("W_hi", "W_hf", "W_hg", "W_ho"),
             "bias_ih": ("b_ii", "b_if", "b_ig", "b_io"),
             "bias_hh": ("b_hi", "b_hf", "b_hg", "b_ho"),
             "weight_hr": ("W_hr",)},
    "gru": {"weight_ih": ("W_ir", "W_iz", "W_in"), "weight_hh": ("W_hr", "W_hz", "W_hn"),
            "bias_ih": ("b_ir", "b_iz", "b_in"), "bias_hh": ("b_hr", "b_hz", "b_hn")},
}


def _bias_option(bias):
    if not isinstance(bias, bool):
        raise TypeError("bias: expected True or False, got %r" % (bias,))
    return bias


def make_rnn_torch(nonlinearity="tanh", bias=True):
    """torch.nn.RNN's cell, `nonlinearity` "tanh" or "relu", with or without biases."""
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError("nonlinearity: expected 'tanh' or 'relu', got %r" % (nonlinearity,))
    bias = _bias_option(bias)
    if nonlinearity == "tanh":
        @rc.cell(states=("h",))
        def rnn_tanh_torch(x, h, p):
            """torch.nn.RNN with nonlinearity="tanh" (one layer).

            The Elman cell with an input and a hidden bias.

                h[t] = tanh(W_ih x[t] + b_ih + W_hh h[t-1] + b_hh)

            torch tensors: weight_ih_l0 = W_ih, weight_hh_l0 = W_hh, bias_ih_l0 = b_ih,
            bias_hh_l0 = b_hh (no biases with bias=False). Paszke et al. (2019), PyTorch.
            """
            b_ih, b_hh = ("b_ih", "b_hh") if bias else (None, None)
            return {"h": rc.tanh(p.linear("W_ih", x, bias=b_ih) + p.linear("W_hh", h, bias=b_hh))}
        return rnn_tanh_torch

    @rc.cell(states=("h",))
    def rnn_relu_torch(x, h, p):
        """torch.nn.RNN with nonlinearity="relu" (one layer).

        The Elman cell with rectified linear units, an input and a hidden bias.

            h[t] = relu(W_ih x[t] + b_ih + W_hh h[t-1] + b_hh)

        torch tensors: weight_ih_l0 = W_ih, weight_hh_l0 = W_hh, bias_ih_l0 = b_ih,
        bias_hh_l0 = b_hh (no biases with bias=False). Paszke et al. (2019), PyTorch.
        """
        b_ih, b_hh = ("b_ih", "b_hh") if bias else (None, None)
        return {"h": rc.relu(p.linear("W_ih", x, bias=b_ih) + p.linear("W_hh", h, bias=b_hh))}
    return rnn_relu_torch


rnn_tanh_torch = make_rnn_torch("tanh")
rnn_relu_torch = make_rnn_torch("relu")


def make_lstm_torch(proj_size=None, bias=True):
    """torch.nn.LSTM's cell; `proj_size` (None or 0 for none, an int, or a size name such
    as "P" bound at rc.compile) adds torch's projection of h."""
    proj_size = size_option(proj_size or None, "proj_size")
    bias = _bias_option(bias)
    if proj_size is None:
        @rc.cell(states=("h", "c"), output="h")
        def lstm_torch(x, h, c, p):
            """torch.nn.LSTM (one layer), gate order i, f, g, o.

                i[t] = σ(W_ii x[t] + b_ii + W_hi h[t-1] + b_hi)
                f[t] = σ(W_if x[t] + b_if + W_hf h[t-1] + b_hf)
                g[t] = tanh(W_ig x[t] + b_ig + W_hg h[t-1] + b_hg)
                o[t] = σ(W_io x[t] + b_io + W_ho h[t-1] + b_ho)
                c[t] = f[t] ⊙ c[t-1] + i[t] ⊙ g[t]
                h[t] = o[t] ⊙ tanh(c[t])

            torch tensors: weight_ih_l0 = [W_ii; W_if; W_ig; W_io] (rows stacked),
            weight_hh_l0 = [W_hi; ...; W_ho], bias_ih_l0 = [b_ii; ...; b_io], bias_hh_l0 =
            [b_hi; ...; b_ho]. Paszke et al. (2019), PyTorch.
            """
            def gate(k):
                return (p.linear("W_i" + k, x, bias=("b_i" + k) if bias else None)
                        + p.linear("W_h" + k, h, bias=("b_h" + k) if bias else None))
            i, f = rc.sigmoid(gate("i")), rc.sigmoid(gate("f"))
            g, o = rc.tanh(gate("g")), rc.sigmoid(gate("o"))
            c_new = f * c + i * g
            return {"h": o * rc.tanh(c_new), "c": c_new}
        return lstm_torch

    @rc.cell(states={"h": proj_size, "c": "H"}, output="h")
    def lstm_proj_torch(x, h, c, p):
        """torch.nn.LSTM (one layer) with proj_size.

        h is projected to proj_size units (W_hr) and fed back, so the hidden weights W_h*
        have proj_size columns.

            i[t] = σ(W_ii x[t] + b_ii + W_hi h[t-1] + b_hi)
            f[t] = σ(W_if x[t] + b_if + W_hf h[t-1] + b_hf)
            g[t] = tanh(W_ig x[t] + b_ig + W_hg h[t-1] + b_hg)
            o[t] = σ(W_io x[t] + b_io + W_ho h[t-1] + b_ho)
            c[t] = f[t] ⊙ c[t-1] + i[t] ⊙ g[t]
            h[t] = W_hr (o[t] ⊙ tanh(c[t]))                     size proj_size

        torch tensors: as lstm_torch, and weight_hr_l0 = W_hr. Paszke et al. (2019),
        PyTorch; the projection after Sak et al. (2014).
        """
        def gate(k):
            return (p.linear("W_i" + k, x, bias=("b_i" + k) if bias else None)
                    + p.linear("W_h" + k, h, bias=("b_h" + k) if bias else None))
        i, f = rc.sigmoid(gate("i")), rc.sigmoid(gate("f"))
        g, o = rc.tanh(gate("g")), rc.sigmoid(gate("o"))
        c_new = f * c + i * g
        return {"h": p.linear("W_hr", o * rc.tanh(c_new), size=proj_size), "c": c_new}
    return lstm_proj_torch


lstm_torch = make_lstm_torch()
lstm_proj_torch = make_lstm_torch(proj_size="P")


def make_gru_torch(bias=True):
    """torch.nn.GRU's cell (the cuDNN form), with or without biases."""
    bias = _bias_option(bias)

    @rc.cell(states=("h",))
    def gru_torch(x, h, p):
        """torch.nn.GRU (one layer): the cuDNN form, reset after the matrix product.

        The reset gate multiplies the hidden product W_hn h + b_hn (compare gru, which
        resets h before the product); gate order r, z, n.

            r[t] = σ(W_ir x[t] + b_ir + W_hr h[t-1] + b_hr)
            z[t] = σ(W_iz x[t] + b_iz + W_hz h[t-1] + b_hz)
            n[t] = tanh(W_in x[t] + b_in + r[t] ⊙ (W_hn h[t-1] + b_hn))
            h[t] = (1 - z[t]) ⊙ n[t] + z[t] ⊙ h[t-1]

        torch tensors: weight_ih_l0 = [W_ir; W_iz; W_in], weight_hh_l0 = [W_hr; W_hz; W_hn],
        bias_ih_l0 = [b_ir; b_iz; b_in], bias_hh_l0 = [b_hr; b_hz; b_hn]. Paszke et al.
        (2019), PyTorch; the GRU of cuDNN.
        """
        def lin(weight, v, b):
            return p.linear(weight, v, bias=b if bias else None)
        r = rc.sigmoid(lin("W_ir", x, "b_ir") + lin("W_hr", h, "b_hr"))
        z = rc.sigmoid(lin("W_iz", x, "b_iz") + lin("W_hz", h, "b_hz"))
        n = rc.tanh(lin("W_in", x, "b_in") + r * lin("W_hn", h, "b_hn"))
        return {"h": (1 - z) * n + z * h}
    return gru_torch


gru_torch = make_gru_torch()
