"""Cells with one state vector (or one fed-back output): Elman, Jordan, IndRNN, the GRU of
Cho et al. and the minimal gated unit."""
import rnncompiler as rc


@rc.cell(states=("h",))
def elman(x, h, p):
    """Elman network (simple recurrent network), tanh units.

        h[t] = tanh(W [h[t-1]; x[t]] + b)

    Elman, J. L. (1990). Finding structure in time. Cognitive Science 14(2), 179-211.
    """
    return {"h": rc.tanh(p.linear("W", rc.concat(h, x), bias="b"))}


@rc.cell(states=("h",))
def elman_relu(x, h, p):
    """Elman network with rectified linear units.

        h[t] = relu(W [h[t-1]; x[t]] + b)

    Le, Q. V., Jaitly, N., Hinton, G. E. (2015). A simple way to initialize recurrent
    networks of rectified linear units. arXiv:1504.00941.
    """
    return {"h": rc.relu(p.linear("W", rc.concat(h, x), bias="b"))}


@rc.cell(states={"y": "O"})
def jordan(x, y, p):
    """Jordan network: the output, not the hidden layer, is fed back.

    The hidden layer has H units, the output (the state) O units: compile with
    sizes={"O": n}.

        a[t] = tanh(W_h [y[t-1]; x[t]] + b_h)       hidden layer, size H
        y[t] = σ(W_y a[t] + b_y)                     output, size O

    Jordan, M. I. (1986). Serial order: a parallel distributed processing approach.
    ICS Report 8604, University of California, San Diego.
    """
    a = rc.tanh(p.linear("W_h", rc.concat(y, x), bias="b_h"))
    return {"y": rc.sigmoid(p.linear("W_y", a, bias="b_y", size="O"))}


@rc.cell(states=("h",))
def indrnn(x, h, p):
    """IndRNN: each unit sees only its own past, through a vector u, not a matrix.

        h[t] = relu(W x[t] + u ⊙ h[t-1] + b)

    Li, S., Li, W., Cook, C., Zhu, C., Gao, Y. (2018). Independently recurrent neural
    network (IndRNN): building a longer and deeper RNN. CVPR.
    """
    return {"h": rc.relu(p.linear("W", x, bias="b") + p.vector("u") * h)}


@rc.cell(states=("h",))
def gru(x, h, p):
    """GRU of Cho et al.: the reset gate acts before the candidate's matrix product.

    Compare gru_torch, which resets after the product.

        r[t] = σ(W_r [h[t-1]; x[t]] + b_r)
        z[t] = σ(W_z [h[t-1]; x[t]] + b_z)
        n[t] = tanh(W_n [r[t] ⊙ h[t-1]; x[t]] + b_n)
        h[t] = z[t] ⊙ h[t-1] + (1 - z[t]) ⊙ n[t]

    Cho, K., van Merriënboer, B., Gulcehre, C., Bahdanau, D., Bougares, F., Schwenk, H.,
    Bengio, Y. (2014). Learning phrase representations using RNN encoder-decoder for
    statistical machine translation. EMNLP.
    """
    hx = rc.concat(h, x)
    r = rc.sigmoid(p.linear("W_r", hx, bias="b_r"))
    z = rc.sigmoid(p.linear("W_z", hx, bias="b_z"))
    n = rc.tanh(p.linear("W_n", rc.concat(r * h, x), bias="b_n"))
    return {"h": z * h + (1 - z) * n}


@rc.cell(states=("h",))
def mgu(x, h, p):
    """Minimal gated unit: one forget gate serves as the GRU's reset and update gates.

        f[t] = σ(W_f [h[t-1]; x[t]] + b_f)
        n[t] = tanh(W_n [f[t] ⊙ h[t-1]; x[t]] + b_n)
        h[t] = (1 - f[t]) ⊙ h[t-1] + f[t] ⊙ n[t]

    Zhou, G.-B., Wu, J., Zhang, C.-L., Zhou, Z.-H. (2016). Minimal gated unit for
    recurrent neural networks. International Journal of Automation and Computing 13(3).
    """
    f = rc.sigmoid(p.linear("W_f", rc.concat(h, x), bias="b_f"))
    n = rc.tanh(p.linear("W_n", rc.concat(f * h, x), bias="b_n"))
    return {"h": (1 - f) * h + f * n}
