"""Cells that read the layer below through more than its output: the depth-gated LSTM of
Yao et al., whose memory cell takes a gated share of the memory cell below, and the LSTM
whose output is [h; c] that starts such a stack."""
import rnncompiler as rc


@rc.cell(states=("h", "c"))
def lstm_hc(x, h, c, p):
    """The LSTM (forget gate) with output y[t] = [h[t]; c[t]] (2H units): the first layer
    of a depth-gated stack, whose next layer reads both.

        f[t], i[t], o[t] = σ(W_{f,i,o} [h[t-1]; x[t]] + b_{f,i,o})
        g[t] = tanh(W_g [h[t-1]; x[t]] + b_g)
        c[t] = f[t] ⊙ c[t-1] + i[t] ⊙ g[t]
        h[t] = o[t] ⊙ tanh(c[t]),   y[t] = [h[t]; c[t]]

    Gers, F. A., Schmidhuber, J., Cummins, F. (2000). Learning to forget: continual
    prediction with LSTM. Neural Computation 12(10).
    """
    z = rc.concat(h, x)
    f = rc.sigmoid(p.linear("W_f", z, bias="b_f"))
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i"))
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o"))
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))
    c_new = f * c + i * g
    h_new = o * rc.tanh(c_new)
    return {"h": h_new, "c": c_new}, rc.concat(h_new, c_new)


@rc.cell(states=("h", "c"), inputs={"x": "H", "c_below": "H"})
def depth_gated_lstm(x, c_below, h, c, p):
    """The depth-gated LSTM: a layer above the first, whose memory cell receives a share
    of the memory cell of the layer below, let through by a depth gate d. Its inputs are
    the layer below's h[t] (as x) and c[t] (as c_below), the row [h; c] of 2H units that
    lstm_hc and this cell output; so the layer below has the same H.

        f[t], i[t], o[t] = σ(W_{f,i,o} [h[t-1]; x[t]] + b_{f,i,o})
        g[t] = tanh(W_g [h[t-1]; x[t]] + b_g)
        d[t] = σ(W_d x[t] + b_d + w_cd ⊙ c[t-1] + w_ld ⊙ c_below[t])
        c[t] = d[t] ⊙ c_below[t] + f[t] ⊙ c[t-1] + i[t] ⊙ g[t]
        h[t] = o[t] ⊙ tanh(c[t]),   y[t] = [h[t]; c[t]]

    Yao, K., Cohn, T., Vylomova, K., Duh, K., Dyer, C. (2015). Depth-gated LSTM.
    arXiv:1508.03790.
    """
    z = rc.concat(h, x)
    f = rc.sigmoid(p.linear("W_f", z, bias="b_f"))
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i"))
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o"))
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))
    d = rc.sigmoid(p.linear("W_d", x, bias="b_d") + p.vector("w_cd") * c
                   + p.vector("w_ld") * c_below)
    c_new = d * c_below + f * c + i * g
    h_new = o * rc.tanh(c_new)
    return {"h": h_new, "c": c_new}, rc.concat(h_new, c_new)
