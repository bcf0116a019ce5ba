"""The LSTM family from the literature: Hochreiter & Schmidhuber's original (no forget
gate), the forget gate (with `forget_bias`), peepholes, the projected LSTM with cell
clipping of Sak et al. (TensorFlow's LSTMCell), and the layer-normalised LSTM."""
import numbers

import sympy

import rnncompiler as rc


@rc.cell(states=("h", "c"), output="h")
def lstm1997(x, h, c, p):
    """LSTM as first published: no forget gate, the cell state only accumulates.

    Input and output gates guard the constant error carousel c.

        i[t] = σ(W_i [h[t-1]; x[t]] + b_i)
        g[t] = tanh(W_g [h[t-1]; x[t]] + b_g)
        o[t] = σ(W_o [h[t-1]; x[t]] + b_o)
        c[t] = c[t-1] + i[t] ⊙ g[t]
        h[t] = o[t] ⊙ tanh(c[t])

    The squashing functions are tanh, as in today's LSTMs; the paper's are logistic
    curves scaled to (-2, 2) for g and (-1, 1) for h, i.e. 2 tanh(u/2) and tanh(u/2).

    Hochreiter, S., Schmidhuber, J. (1997). Long short-term memory. Neural Computation
    9(8), 1735-1780.
    """
    z = rc.concat(h, x)
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i"))
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o"))
    c_new = c + i * g
    return {"h": o * rc.tanh(c_new), "c": c_new}


def _number(value, what):
    """A finite real option value, or a clear error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError("%s: expected a real number, got %r" % (what, value))
    if not abs(float(value)) < float("inf"):
        raise ValueError("%s: expected a finite number, got %r" % (what, value))
    return float(value)


def make_lstm(forget_bias=1.0):
    """The LSTM with a forget gate; `forget_bias` is a constant added to the forget gate's
    pre-activation (as TensorFlow's `forget_bias`), so that a fresh network remembers."""
    forget_bias = _number(forget_bias, "forget_bias")

    @rc.cell(states=("h", "c"), output="h")
    def lstm(x, h, c, p):
        """LSTM with a forget gate (the usual LSTM), forget_bias added to that gate.

            f[t] = σ(W_f [h[t-1]; x[t]] + b_f + forget_bias)
            i[t] = σ(W_i [h[t-1]; x[t]] + b_i)
            g[t] = tanh(W_g [h[t-1]; x[t]] + b_g)
            o[t] = σ(W_o [h[t-1]; x[t]] + b_o)
            c[t] = f[t] ⊙ c[t-1] + i[t] ⊙ g[t]
            h[t] = o[t] ⊙ tanh(c[t])

        Gers, F. A., Schmidhuber, J., Cummins, F. (2000). Learning to forget: continual
        prediction with LSTM. Neural Computation 12(10), 2451-2471.
        """
        z = rc.concat(h, x)
        f = rc.sigmoid(p.linear("W_f", z, bias="b_f") + forget_bias)
        i = rc.sigmoid(p.linear("W_i", z, bias="b_i"))
        g = rc.tanh(p.linear("W_g", z, bias="b_g"))
        o = rc.sigmoid(p.linear("W_o", z, bias="b_o"))
        c_new = f * c + i * g
        return {"h": o * rc.tanh(c_new), "c": c_new}
    return lstm


lstm = make_lstm(forget_bias=1.0)


@rc.cell(states=("h", "c"), output="h")
def peephole_lstm(x, h, c, p):
    """LSTM with peephole connections, the "vanilla" LSTM of Greff et al.

    The gates see the cell state through learnable diagonal weights (vectors); the output
    gate sees the new cell state. This is the base of the lstm_* variants of Greff et al.
    (2017).

        i[t] = σ(W_i [h[t-1]; x[t]] + p_i ⊙ c[t-1] + b_i)
        f[t] = σ(W_f [h[t-1]; x[t]] + p_f ⊙ c[t-1] + b_f)
        g[t] = tanh(W_g [h[t-1]; x[t]] + b_g)
        c[t] = f[t] ⊙ c[t-1] + i[t] ⊙ g[t]
        o[t] = σ(W_o [h[t-1]; x[t]] + p_o ⊙ c[t] + b_o)
        h[t] = o[t] ⊙ tanh(c[t])

    Gers, F. A., Schmidhuber, J. (2000). Recurrent nets that time and count. IJCNN.
    """
    z = rc.concat(h, x)
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i") + p.vector("p_i") * c)
    f = rc.sigmoid(p.linear("W_f", z, bias="b_f") + p.vector("p_f") * c)
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))
    c_new = f * c + i * g
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o") + p.vector("p_o") * c_new)
    return {"h": o * rc.tanh(c_new), "c": c_new}


def size_option(value, what):
    """None, an int >= 1 or a size name such as "P"."""
    if value is None or (isinstance(value, str) and value.isidentifier()):
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError("%s: expected None, an int >= 1 or a size name such as 'P', got %r"
                         % (what, value))
    return int(value)


def _clip_option(value, what):
    """None or a positive bound."""
    if value is None:
        return None
    value = _number(value, what)
    if not value > 0:
        raise ValueError("%s: expected None or a bound > 0, got %r" % (what, value))
    return value


def make_lstm_proj(num_proj="P", cell_clip=None, proj_clip=None, use_peepholes=True,
                   forget_bias=1.0):
    """The LSTM of Sak et al. with the options of TensorFlow's LSTMCell: `num_proj` (the
    size of the projected recurrent state: an int, a size name bound at rc.compile, or
    None for no projection), `cell_clip` and `proj_clip` (clip c and h to [-v, v]),
    `use_peepholes`, `forget_bias`."""
    num_proj = size_option(num_proj, "num_proj")
    cell_clip = _clip_option(cell_clip, "cell_clip")
    proj_clip = _clip_option(proj_clip, "proj_clip")
    forget_bias = _number(forget_bias, "forget_bias")
    if not isinstance(use_peepholes, bool):
        raise TypeError("use_peepholes: expected True or False, got %r" % (use_peepholes,))

    @rc.cell(states={"h": num_proj or "H", "c": "H"}, output="h")
    def lstm_proj(x, h, c, p):
        """LSTM with a recurrent projection layer (LSTMP), peepholes and clipping.

        As TensorFlow's LSTMCell(num_proj, cell_clip, proj_clip, use_peepholes,
        forget_bias).

            i[t] = σ(W_i [h[t-1]; x[t]] + p_i ⊙ c[t-1] + b_i)
            f[t] = σ(W_f [h[t-1]; x[t]] + p_f ⊙ c[t-1] + b_f + forget_bias)
            g[t] = tanh(W_g [h[t-1]; x[t]] + b_g)
            c[t] = clip(f[t] ⊙ c[t-1] + i[t] ⊙ g[t], -cell_clip, cell_clip)
            o[t] = σ(W_o [h[t-1]; x[t]] + p_o ⊙ c[t] + b_o)
            h[t] = clip(W_p (o[t] ⊙ tanh(c[t])), -proj_clip, proj_clip)    size num_proj

        The peephole terms appear with use_peepholes, W_p with num_proj, each clip with
        its bound. Sak, H., Senior, A., Beaufays, F. (2014). Long short-term memory
        recurrent neural network architectures for large scale acoustic modeling.
        Interspeech.
        """
        z = rc.concat(h, x)
        a_i = p.linear("W_i", z, bias="b_i")
        a_f = p.linear("W_f", z, bias="b_f") + forget_bias
        if use_peepholes:
            a_i = a_i + p.vector("p_i") * c
            a_f = a_f + p.vector("p_f") * c
        g = rc.tanh(p.linear("W_g", z, bias="b_g"))
        c_new = rc.sigmoid(a_f) * c + rc.sigmoid(a_i) * g
        if cell_clip is not None:
            c_new = rc.clip(c_new, -cell_clip, cell_clip)
        a_o = p.linear("W_o", z, bias="b_o")
        if use_peepholes:
            a_o = a_o + p.vector("p_o") * c_new
        h_new = rc.sigmoid(a_o) * rc.tanh(c_new)
        if num_proj is not None:
            h_new = p.linear("W_p", h_new, size=num_proj)
            if proj_clip is not None:
                h_new = rc.clip(h_new, -proj_clip, proj_clip)
        return {"h": h_new, "c": c_new}
    return lstm_proj


lstm_proj = make_lstm_proj(num_proj="P")


def make_layernorm_lstm(eps=1e-5):
    """The layer-normalised LSTM of haste's LayerNormLSTM; `eps` is added to the variance
    inside the square root."""
    eps = _number(eps, "eps")
    if not eps > 0:
        raise ValueError("eps: expected a number > 0, got %r" % (eps,))

    @rc.cell(states=("h", "c"), output="h")
    def layernorm_lstm(x, h, c, p):
        """Layer-normalised LSTM, as haste's LayerNormLSTM.

        Layer normalisation of the input and of the recurrent pre-activations (each over
        all 4H gate units together, with learnable gains) and of the cell state before the
        output tanh (with a gain and a bias).

            LN(v; γ, β) = γ ⊙ (v - mean(v)) / sqrt(var(v) + eps) + β
            [a_i; a_f; a_g; a_o] = LN([W_i x; W_f x; W_g x; W_o x]; γ_x, 0)
                                 + LN([R_i h[t-1]; ...; R_o h[t-1]]; γ_h, 0) + b
            c[t] = σ(a_f) ⊙ c[t-1] + σ(a_i) ⊙ tanh(a_g)
            h[t] = σ(a_o) ⊙ tanh(LN(c[t]; γ_c, β_c))

        Ba, J. L., Kiros, J. R., Hinton, G. E. (2016). Layer normalization.
        arXiv:1607.06450; haste (LMNT, 2020), LayerNormLSTM.
        """
        def average(scalars):
            return scalars[0] if len(scalars) == 1 else sum(scalars) / len(scalars)

        def layer_norm(vectors, gains):
            # mean and variance over the units of all the vectors taken together
            mu = average([rc.mean(v) for v in vectors])
            var = average([rc.mean((v - mu) ** 2) for v in vectors])
            scale = rc.elementwise(lambda s: 1 / sympy.sqrt(s + eps), var)
            return [p.vector(g) * (v - mu) * scale for v, g in zip(vectors, gains)]

        gates = ("i", "f", "g", "o")
        wx = layer_norm([p.linear("W_" + k, x) for k in gates], ["gamma_x_" + k for k in gates])
        rh = layer_norm([p.linear("R_" + k, h) for k in gates], ["gamma_h_" + k for k in gates])
        a_i, a_f, a_g, a_o = [u + v + p.vector("b_" + k) for k, u, v in zip(gates, wx, rh)]
        c_new = rc.sigmoid(a_f) * c + rc.sigmoid(a_i) * rc.tanh(a_g)
        (c_norm,) = layer_norm([c_new], ["gamma_c"])
        h_new = rc.sigmoid(a_o) * rc.tanh(c_norm + p.vector("beta_c"))
        return {"h": h_new, "c": c_new}
    return layernorm_lstm


layernorm_lstm = make_layernorm_lstm()
