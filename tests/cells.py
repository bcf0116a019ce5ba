"""Cells shared by the tests: the classic ones and two new variants."""
import sympy

import rnncompiler as rc


@rc.cell(states=("h",))
def elman(x, h, p):
    return {"h": rc.tanh(p.linear("W", rc.concat(h, x), bias="b"))}


@rc.cell(states=("h", "c"), output="h")
def lstm(x, h, c, p):
    z = rc.concat(h, x)
    f = rc.sigmoid(p.linear("W_f", z, bias="b_f"))
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i"))
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o"))
    c_new = f * c + i * g
    return {"h": o * rc.tanh(c_new), "c": c_new}


@rc.cell(states=("h",))
def gru(x, h, p):
    r = rc.sigmoid(p.linear("W_ir", x, bias="b_ir") + p.linear("W_hr", h, bias="b_hr"))
    u = rc.sigmoid(p.linear("W_iz", x, bias="b_iz") + p.linear("W_hz", h, bias="b_hz"))
    n = rc.tanh(p.linear("W_in", x, bias="b_in") + r * p.linear("W_hn", h, bias="b_hn"))
    return {"h": (1 - u) * n + u * h}


@rc.cell(states=("h", "c"), output="h")
def peephole_lstm(x, h, c, p):
    z = rc.concat(h, x)
    f = rc.sigmoid(p.linear("W_f", z, bias="b_f") + p.vector("p_f") * c)
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i") + p.vector("p_i") * c)
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))
    c_new = f * c + i * g
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o") + p.vector("p_o") * c_new)
    return {"h": o * rc.tanh(c_new), "c": c_new}


@rc.cell(states=("h",))
def gated_bump(x, h, p):
    """A new variant: a Gaussian bump gate, a Piecewise leak, a learnable scalar gain."""
    a = p.linear("W_a", rc.concat(h, x), bias="b_a")
    gate = rc.elementwise(lambda u, v: u * sympy.exp(-v ** 2), rc.sigmoid(a), a)
    leak = rc.elementwise(lambda u: sympy.Piecewise((u, u > 0), (sympy.Rational(1, 10) * u, True)),
                          p.linear("W_l", x))
    return {"h": p.scalar("gain") * gate + (1 - gate) * h + p.vector("w") * rc.softsign(leak)}


@rc.cell(states={"h": "P", "c": "H"})
def two_sizes(x, h, c, p):
    """A new variant: states of different sizes, layer-normalised update, explicit output."""
    u = p.linear("W_u", rc.concat(h, x), bias="b_u")
    centred = u - rc.mean(u)
    norm = centred / rc.elementwise(lambda v: sympy.sqrt(v + sympy.Rational(1, 100)),
                                    rc.mean(centred * centred))
    c_new = rc.hard_sigmoid(norm) * c + rc.softplus(p.linear("W_c", x))
    h_new = rc.relu(p.linear("W_h", c_new, size="P")) + rc.clip(h, -2.0, 2.0)
    y = p.linear("W_y", rc.concat(h_new, c_new), size="O")
    return {"h": h_new, "c": c_new}, rc.tanh(y) + rc.sum(c_new)
