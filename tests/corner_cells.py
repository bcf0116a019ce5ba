"""Cells that exercise the corners of lowering: linear maps and concats as results, the
same operand twice, a weight shared by two bundles, a constant state, powers of vectors,
nested linear maps, outputs read again within the step."""
import rnncompiler as rc

CORNER_CELLS = {}


def reg(cell):
    CORNER_CELLS[cell.name] = cell
    return cell

@reg
@rc.cell(states=("h",))
def linear_state(x, h, p):
    return {"h": p.linear("W", rc.concat(h, x), bias="b")}

@reg
@rc.cell(states={"h": "H", "c": 7}, output="h")
def concat_state(x, h, c, p):
    return {"h": rc.tanh(p.linear("W", rc.concat(c, x))), "c": rc.concat(h, x)}

@reg
@rc.cell(states=("h",))
def reduce_linear(x, h, p):
    a = p.linear("W", x)
    return {"h": rc.tanh(a * rc.sum(p.linear("U", h, size=5)) + h)}

@reg
@rc.cell(states=("h",))
def x_only(x, h, p):
    return {"h": rc.sigmoid(p.linear("W", x, size=4)) * h + 1}

@reg
@rc.cell(states=("h",))
def two_orders(x, h, p):
    a = p.linear("A", rc.concat(x, h))
    b = p.linear("B", rc.concat(h, x))
    return {"h": rc.tanh(a) * rc.sigmoid(b)}

@reg
@rc.cell(states=("h",))
def x_twice(x, h, p):
    return {"h": rc.tanh(p.linear("W", rc.concat(x, h, x)))}

@reg
@rc.cell(states=("h", "k"), output="k")
def constant_state(x, h, k, p):
    return {"h": rc.tanh(p.linear("W", rc.concat(h, x))), "k": k}

@reg
@rc.cell(states=("h",))
def param_vec_state(x, h, p):
    return ({"h": p.vector("v") + h * p.scalar("s")}, rc.tanh(p.linear("W", x)) + h)

@reg
@rc.cell(states=("h",))
def vec_pow(x, h, p):
    a = rc.sigmoid(p.linear("W", x)) + 0.5
    return {"h": a ** rc.tanh(h) + rc.softplus(p.linear("U", h))}

@reg
@rc.cell(states=("h",))
def nested_linear(x, h, p):
    return {"h": rc.tanh(p.linear("W2", rc.tanh(p.linear("W1", rc.concat(h, x), size=6)), bias="b"))}

@reg
@rc.cell(states=("h", "c"), output="h")
def output_used_twice(x, h, c, p):
    hn = rc.tanh(p.linear("W", rc.concat(h, x)) + c)
    return {"h": hn, "c": hn * 0.5 + c * 0.5}

@reg
@rc.cell(states=("h",))
def state_is_output_and_read(x, h, p):
    y = rc.tanh(p.linear("W", rc.concat(h, x)))
    return ({"h": y}, y * y + rc.mean(y))

@reg
@rc.cell(states=("h",))
def shared_in_two_bundles(x, h, p):
    a = p.linear("W", h)
    b = p.linear("W", rc.tanh(h))
    return {"h": rc.tanh(a + b + p.linear("U", x))}

@reg
@rc.cell(states=("h",))
def bias_only_some(x, h, p):
    z = rc.concat(h, x)
    return {"h": rc.tanh(p.linear("A", z, bias="b")) + rc.sigmoid(p.linear("B", z))}

@reg
@rc.cell(states=("h",))
def shared_bias(x, h, p):
    z = rc.concat(h, x)
    return {"h": rc.tanh(p.linear("A", z, bias="b")) + rc.sigmoid(p.linear("B", z, bias="b"))}
