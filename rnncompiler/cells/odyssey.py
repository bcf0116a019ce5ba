"""The eight LSTM variants of Greff et al., "LSTM: A Search Space Odyssey": each changes one
thing in the peephole LSTM (rc.cells.peephole_lstm, their "vanilla" LSTM).

Greff, K., Srivastava, R. K., Koutník, J., Steunebrink, B. R., Schmidhuber, J. (2017).
LSTM: a search space odyssey. IEEE Transactions on Neural Networks and Learning Systems
28(10), 2222-2232.

Their W x[t] + R h[t-1] is written here as one matrix on the concatenation [h[t-1]; x[t]].
"""
import rnncompiler as rc


@rc.cell(states=("h", "c"), output="h")
def lstm_nig(x, h, c, p):
    """NIG, no input gate: the block input enters the cell unscaled (i = 1).

        f[t] = σ(W_f [h[t-1]; x[t]] + p_f ⊙ c[t-1] + b_f)
        g[t] = tanh(W_g [h[t-1]; x[t]] + b_g)
        c[t] = f[t] ⊙ c[t-1] + g[t]
        o[t] = σ(W_o [h[t-1]; x[t]] + p_o ⊙ c[t] + b_o)
        h[t] = o[t] ⊙ tanh(c[t])

    Greff et al. (2017), LSTM: a search space odyssey, variant NIG.
    """
    z = rc.concat(h, x)
    f = rc.sigmoid(p.linear("W_f", z, bias="b_f") + p.vector("p_f") * c)
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))
    c_new = f * c + g
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o") + p.vector("p_o") * c_new)
    return {"h": o * rc.tanh(c_new), "c": c_new}


@rc.cell(states=("h", "c"), output="h")
def lstm_nfg(x, h, c, p):
    """NFG, no forget gate (f = 1): the cell state accumulates.

        i[t] = σ(W_i [h[t-1]; x[t]] + p_i ⊙ c[t-1] + b_i)
        g[t] = tanh(W_g [h[t-1]; x[t]] + b_g)
        c[t] = c[t-1] + i[t] ⊙ g[t]
        o[t] = σ(W_o [h[t-1]; x[t]] + p_o ⊙ c[t] + b_o)
        h[t] = o[t] ⊙ tanh(c[t])

    Greff et al. (2017), LSTM: a search space odyssey, variant NFG.
    """
    z = rc.concat(h, x)
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i") + p.vector("p_i") * c)
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))
    c_new = c + i * g
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o") + p.vector("p_o") * c_new)
    return {"h": o * rc.tanh(c_new), "c": c_new}


@rc.cell(states=("h", "c"), output="h")
def lstm_nog(x, h, c, p):
    """NOG, no output gate (o = 1).

        i[t] = σ(W_i [h[t-1]; x[t]] + p_i ⊙ c[t-1] + b_i)
        f[t] = σ(W_f [h[t-1]; x[t]] + p_f ⊙ c[t-1] + b_f)
        g[t] = tanh(W_g [h[t-1]; x[t]] + b_g)
        c[t] = f[t] ⊙ c[t-1] + i[t] ⊙ g[t]
        h[t] = tanh(c[t])

    Greff et al. (2017), LSTM: a search space odyssey, variant NOG.
    """
    z = rc.concat(h, x)
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i") + p.vector("p_i") * c)
    f = rc.sigmoid(p.linear("W_f", z, bias="b_f") + p.vector("p_f") * c)
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))
    c_new = f * c + i * g
    return {"h": rc.tanh(c_new), "c": c_new}


@rc.cell(states=("h", "c"), output="h")
def lstm_niaf(x, h, c, p):
    """NIAF, no input activation function: the block input is linear.

        i[t] = σ(W_i [h[t-1]; x[t]] + p_i ⊙ c[t-1] + b_i)
        f[t] = σ(W_f [h[t-1]; x[t]] + p_f ⊙ c[t-1] + b_f)
        g[t] = W_g [h[t-1]; x[t]] + b_g
        c[t] = f[t] ⊙ c[t-1] + i[t] ⊙ g[t]
        o[t] = σ(W_o [h[t-1]; x[t]] + p_o ⊙ c[t] + b_o)
        h[t] = o[t] ⊙ tanh(c[t])

    Greff et al. (2017), LSTM: a search space odyssey, variant NIAF.
    """
    z = rc.concat(h, x)
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i") + p.vector("p_i") * c)
    f = rc.sigmoid(p.linear("W_f", z, bias="b_f") + p.vector("p_f") * c)
    g = p.linear("W_g", z, bias="b_g")
    c_new = f * c + i * g
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o") + p.vector("p_o") * c_new)
    return {"h": o * rc.tanh(c_new), "c": c_new}


@rc.cell(states=("h", "c"), output="h")
def lstm_noaf(x, h, c, p):
    """NOAF, no output activation function: the cell state leaves unsquashed.

        i[t] = σ(W_i [h[t-1]; x[t]] + p_i ⊙ c[t-1] + b_i)
        f[t] = σ(W_f [h[t-1]; x[t]] + p_f ⊙ c[t-1] + b_f)
        g[t] = tanh(W_g [h[t-1]; x[t]] + b_g)
        c[t] = f[t] ⊙ c[t-1] + i[t] ⊙ g[t]
        o[t] = σ(W_o [h[t-1]; x[t]] + p_o ⊙ c[t] + b_o)
        h[t] = o[t] ⊙ c[t]

    Greff et al. (2017), LSTM: a search space odyssey, variant NOAF.
    """
    z = rc.concat(h, x)
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i") + p.vector("p_i") * c)
    f = rc.sigmoid(p.linear("W_f", z, bias="b_f") + p.vector("p_f") * c)
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))
    c_new = f * c + i * g
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o") + p.vector("p_o") * c_new)
    return {"h": o * c_new, "c": c_new}


@rc.cell(states=("h", "c"), output="h")
def lstm_np(x, h, c, p):
    """NP, no peepholes: the LSTM with a forget gate and nothing else
    (rc.cells.make_lstm(forget_bias=0) computes the same function).

        i[t] = σ(W_i [h[t-1]; x[t]] + b_i)
        f[t] = σ(W_f [h[t-1]; x[t]] + b_f)
        g[t] = tanh(W_g [h[t-1]; x[t]] + b_g)
        c[t] = f[t] ⊙ c[t-1] + i[t] ⊙ g[t]
        o[t] = σ(W_o [h[t-1]; x[t]] + b_o)
        h[t] = o[t] ⊙ tanh(c[t])

    Greff et al. (2017), LSTM: a search space odyssey, variant NP.
    """
    z = rc.concat(h, x)
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i"))
    f = rc.sigmoid(p.linear("W_f", z, bias="b_f"))
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))
    c_new = f * c + i * g
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o"))
    return {"h": o * rc.tanh(c_new), "c": c_new}


@rc.cell(states=("h", "c"), output="h")
def lstm_cifg(x, h, c, p):
    """CIFG, coupled input and forget gate: one gate decides both, f = 1 - i (the
    structure of the GRU's update gate).

        i[t] = σ(W_i [h[t-1]; x[t]] + p_i ⊙ c[t-1] + b_i)
        g[t] = tanh(W_g [h[t-1]; x[t]] + b_g)
        c[t] = (1 - i[t]) ⊙ c[t-1] + i[t] ⊙ g[t]
        o[t] = σ(W_o [h[t-1]; x[t]] + p_o ⊙ c[t] + b_o)
        h[t] = o[t] ⊙ tanh(c[t])

    Greff et al. (2017), LSTM: a search space odyssey, variant CIFG.
    """
    z = rc.concat(h, x)
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i") + p.vector("p_i") * c)
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))
    c_new = (1 - i) * c + i * g
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o") + p.vector("p_o") * c_new)
    return {"h": o * rc.tanh(c_new), "c": c_new}


@rc.cell(states=("h", "c", "i", "f", "o"), output="h")
def lstm_fgr(x, h, c, i, f, o, p):
    """FGR, full gate recurrence: the gates also see the previous step's gates.

    Nine more recurrent matrices (three per gate); the gates become states.

        u[t-1] = [i[t-1]; f[t-1]; o[t-1]]
        i[t] = σ(W_i [h[t-1]; x[t]] + R_i u[t-1] + p_i ⊙ c[t-1] + b_i)
        f[t] = σ(W_f [h[t-1]; x[t]] + R_f u[t-1] + p_f ⊙ c[t-1] + b_f)
        g[t] = tanh(W_g [h[t-1]; x[t]] + b_g)
        c[t] = f[t] ⊙ c[t-1] + i[t] ⊙ g[t]
        o[t] = σ(W_o [h[t-1]; x[t]] + R_o u[t-1] + p_o ⊙ c[t] + b_o)
        h[t] = o[t] ⊙ tanh(c[t])

    Greff et al. (2017), LSTM: a search space odyssey, variant FGR.
    """
    z = rc.concat(h, x)
    u = rc.concat(i, f, o)
    i_new = rc.sigmoid(p.linear("W_i", z, bias="b_i") + p.linear("R_i", u) + p.vector("p_i") * c)
    f_new = rc.sigmoid(p.linear("W_f", z, bias="b_f") + p.linear("R_f", u) + p.vector("p_f") * c)
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))
    c_new = f_new * c + i_new * g
    o_new = rc.sigmoid(p.linear("W_o", z, bias="b_o") + p.linear("R_o", u)
                       + p.vector("p_o") * c_new)
    return {"h": o_new * rc.tanh(c_new), "c": c_new, "i": i_new, "f": f_new, "o": o_new}
