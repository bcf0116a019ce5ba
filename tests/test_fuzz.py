"""Random cells (hypothesis): each is a random program of the cell language's activations,
arithmetic, linear maps over concats, learnable vectors and scalars, reductions, with 1-3
states of sizes 1, 2, 3, 5 or 17 and a random output. Every one must pass rc.gradcheck
(float64, central finite differences) and agree with the numpy reference evaluator
(rc.reference) on outputs, final states and every gradient, with and without lengths.

A second family writes cells as users write them by hand: sigmoids, softsigns and rational
gates spelled out in rc.elementwise (sympy) or in plain vector arithmetic, standalone
reciprocals and negative or fractional powers of positive quantities, constants folded
into gates, Piecewise/Abs/Min/Max, rc.activation with and without a written derivative,
shared subexpressions and parameters used twice (HAND below).

The CI profile tries $RNNC_FUZZ_EXAMPLES cells (default 20 built from the fixed
operations, 8 written by hand, and one cell holding every hand-written gate); `make fuzz`
runs 250 examples of each family. The runs are derandomized: the same cells every time, so
CI is deterministic. The bugs it found are kept as tests of their own, below.
"""
import hashlib
import os
from dataclasses import dataclass

import numpy as np
import pytest
import sympy
from hypothesis import HealthCheck, assume, given, note, settings
from hypothesis import strategies as st

import rnncompiler as rc
from rnncompiler.check import draw as gradcheck_data

from activation_cases import CASES, PUBLIC

EXAMPLES = int(os.environ.get("RNNC_FUZZ_EXAMPLES", "20"))
HAND_EXAMPLES = int(os.environ.get("RNNC_FUZZ_EXAMPLES", "8"))
T, B = 3, 2
SIZES = (1, 2, 3, 5, 17)          # 17: not a multiple of any vector width
INPUT_SIZES = (1, 2, 3, 5)
LIMIT = 1e6                       # programs whose values leave this range are skipped

FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])
HAND_FUZZ = settings(FUZZ, max_examples=HAND_EXAMPLES)

# ---------------------------------------------------------------- the operations

# every activation of the table without bounds (log of 1 + v², a positive argument; clip
# is drawn with CLIPS below)
UNARY = {**{row.name: CASES[row.name] for row in PUBLIC if not row.bounds},
         "log_sigmoid": lambda v: -rc.softplus(-v), "neg": lambda v: -v}
BINARY = {
    "add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
    "div": lambda a, b: a / (1 + b ** 2),            # a denominator that is never 0
    "rdiv": lambda a, b: 2 / (1 + a ** 2 + b ** 2),  # a number over a vector
}
CONSTANTS = (0.5, -1.5, 2.0, 0.25, 3)
CLIPS = ((-1.0, 1.0), (-0.5, 2.0), (0.0, 1.0))

# ---------------------------------------------------------------- gates written by hand


def _shared_exp(v):
    """Two gates reading one exp: sigma(v) and 1 - sigma(v), spelled through e = exp(-v)."""
    e = rc.exp(-v)
    return 1 / (1 + e) * v + e / (1 + e)


def _reciprocals(v):
    """q = 1 + v*v read by 1/q and q**-2 (q stays a node of its own: two readers)."""
    q = 1 + v * v
    return q ** -1 - 0.5 * q ** -2


def _elu_by_hand(u):
    return sympy.Piecewise((u, u > 0), (sympy.exp(u) - 1, True))


def _isru_shared(u):
    """A subexpression used twice inside one sympy gate."""
    r = 1 / sympy.sqrt(1 + u ** 2)
    return u * r + r ** 3


# user activations: with sympy's derivative, and with one written by hand (through y)
SWISH = rc.activation("fz_swish", lambda u: u / (1 + sympy.exp(-u)))
LOGISTIC = rc.activation("fz_logistic", lambda u: 1 / (1 + sympy.exp(-u)),
                         derivative=lambda u, y: y * (1 - y))
ISRU = rc.activation("fz_isru", lambda u: u / sympy.sqrt(1 + u ** 2),
                     derivative=lambda u, y: (1 + u ** 2) ** sympy.Rational(-3, 2))

HAND_UNARY = {
    "sigmoid_sympy": lambda v: rc.elementwise(lambda u: 1 / (1 + sympy.exp(-u)), v),
    "sigmoid_vec": lambda v: 1 / (1 + rc.exp(-v)),
    "softsign_sympy": lambda v: rc.elementwise(lambda u: u / (1 + sympy.Abs(u)), v),
    "complement_sympy": lambda v: rc.elementwise(lambda u: 1 / (1 + sympy.exp(u)), v),
    "tanh_of_reciprocal": lambda v: rc.elementwise(
        lambda u: sympy.tanh(1 / (1 + sympy.exp(u))) - 2 / (3 + sympy.exp(-u)), v),
    "recip_vec": lambda v: 1 / (1 + v * v),
    "pow_m1_vec": lambda v: (1 + v ** 2) ** -1,
    "pow_m2_vec": lambda v: (2 + rc.tanh(v)) ** -2,
    "reciprocals_shared": _reciprocals,
    "half_tanh": lambda v: 0.5 * rc.tanh(v) + 0.5,
    "half_shift": lambda v: (v + 1) / 2,
    "rational_vec": lambda v: sympy.Rational(2, 3) * v - sympy.Rational(1, 4),
    "rational_sympy": lambda v: rc.elementwise(
        lambda u: sympy.Rational(1, 3) * sympy.tanh(u) + sympy.Rational(2, 3), v),
    "sqrt_pos": lambda v: (1 + v ** 2) ** 0.5,
    "rsqrt_pos": lambda v: (1 + v ** 2) ** -0.5,
    "pow_frac": lambda v: (2 + rc.tanh(v)) ** 1.5,
    "pow_frac_sympy": lambda v: rc.elementwise(
        lambda u: (1 + u ** 2) ** sympy.Rational(-3, 2) + sympy.sqrt(1 + sympy.exp(u)), v),
    "elu_piecewise": lambda v: rc.elementwise(_elu_by_hand, v),
    "leaky_piecewise": lambda v: rc.elementwise(
        lambda u: sympy.Piecewise((u, u > 0), (u / 10, True)), v),
    "abs_rational": lambda v: rc.elementwise(lambda u: sympy.Abs(u) * u / (1 + u ** 2), v),
    "isru_shared": lambda v: rc.elementwise(_isru_shared, v),
    "shared_exp": _shared_exp,
    "swish_activation": SWISH,
    "logistic_activation": LOGISTIC,
    "isru_activation": ISRU,
}
HAND_BINARY = {
    "gate_sympy": lambda a, b: rc.elementwise(lambda s, t: 1 / (1 + sympy.exp(-s * t)), a, b),
    "rational_sympy2": lambda a, b: rc.elementwise(lambda s, t: (s - t) / (1 + s ** 2 + t ** 2),
                                                   a, b),
    "softsign_sum": lambda a, b: rc.elementwise(
        lambda s, t: (s + t) / (1 + sympy.Abs(s) + sympy.Abs(t)), a, b),
    "min_max": lambda a, b: rc.elementwise(lambda s, t: sympy.Min(s, t) + sympy.Max(s, 0) * t,
                                           a, b),
    "piecewise_max": lambda a, b: rc.elementwise(
        lambda s, t: sympy.Piecewise((s, s > t), (t / 2, True)), a, b),
    "gru_mix_vec": lambda a, b: (lambda z: z * b + (1 - z) * a)(1 / (1 + rc.exp(-a))),
    "over_pow_m1": lambda a, b: a * (1 + b * b) ** -1,
}


def apply_op(op, vals, p):
    """The value one program operation computes, traced on the cell's vectors."""
    kind = op[0]
    if kind in UNARY:
        return UNARY[kind](vals[op[1]])
    if kind in BINARY:
        return BINARY[kind](vals[op[1]], vals[op[2]])
    if kind in HAND_UNARY:
        return HAND_UNARY[kind](vals[op[1]])
    if kind in HAND_BINARY:
        return HAND_BINARY[kind](vals[op[1]], vals[op[2]])
    if kind == "clip":
        return rc.clip(vals[op[1]], *op[2])
    if kind == "pow":
        return vals[op[1]] ** op[2]
    if kind == "cmul":
        return vals[op[1]] * op[2]
    if kind == "cadd":
        return op[2] + vals[op[1]]
    if kind == "linear":
        _, weight, args, bias, size = op
        v = vals[args[0]] if len(args) == 1 else rc.concat(*(vals[i] for i in args))
        return p.linear(weight, v, bias=bias, size=size)
    if kind == "vector":
        _, i, name, size, how = op
        return vals[i] * p.vector(name, size) if how == "*" else p.vector(name, size) + vals[i]
    if kind == "scalar":
        return vals[op[1]] * p.scalar(op[2])
    if kind == "vector_twice":                  # one learnable vector read in two places
        _, i, name, size = op
        w = p.vector(name, size)
        return vals[i] * w + rc.tanh(w)
    if kind == "scalar_twice":
        a = p.scalar(op[2])
        return vals[op[1]] * a + a * a
    if kind in ("sum", "mean"):
        return getattr(rc, kind)(vals[op[1]])
    if kind == "slice":
        return vals[op[1]][op[2]:op[3]]
    if kind == "clock":                         # the value where t mod period = 0, else 0
        tick = rc.elementwise(lambda t, T=op[2]: sympy.Piecewise(
            (1, sympy.Eq(sympy.Mod(t, T), 0)), (0, True)), rc.step())
        return tick * vals[op[1]]
    if kind == "split":
        return rc.split(vals[op[1]], op[2])[op[3]]
    if kind == "dropout":
        return rc.dropout(vals[op[1]], op[2], per=op[3])
    if kind == "zoneout":
        return rc.zoneout(vals[op[1]], vals[op[2]], op[3], per=op[4])
    raise AssertionError("unknown operation %r" % (op,))


@dataclass(frozen=True)
class Program:
    """A random cell: input size, state sizes, operations over a growing list of values
    (x, then the states, then one value per operation), the value each new state takes
    (optionally through tanh) and the output: None (the only state), ("state", k) or
    ("y", value index)."""
    input_size: int
    state_sizes: tuple
    ops: tuple
    new_states: tuple
    output: tuple = None
    blocks: tuple = ()      # more per-step inputs and contexts: (("input"|"context", size), ...)

    @property
    def name(self):
        return "fuzz_" + hashlib.sha256(repr(self).encode()).hexdigest()[:12]

    def run(self, x, states, p):
        states = list(states)       # the other inputs and contexts came before the states
        vals = [x] + states[len(self.blocks):] + states[:len(self.blocks)]
        for op in self.ops:
            vals.append(apply_op(op, vals, p))
        new = {"s%d" % k: rc.tanh(vals[i]) if wrap else vals[i]
               for k, (i, wrap) in enumerate(self.new_states)}
        if self.output is not None and self.output[0] == "y":
            return new, vals[self.output[1]]
        return new

    def cell(self):
        """The program as an @rc.cell: a function with one argument per state."""
        blocks = ["u%d" % k for k in range(len(self.blocks))]
        names = ", ".join(blocks + ["s%d" % k for k in range(len(self.state_sizes))])
        scope = {"run": self.run}
        exec("def %s(x, %s, p):\n    return run(x, [%s], p)\n" % (self.name, names, names), scope)
        output = "s%d" % self.output[1] if self.output and self.output[0] == "state" else None
        states = {"s%d" % k: n for k, n in enumerate(self.state_sizes)}
        inputs = {"x": "I", **{b: n for b, (kind, n) in zip(blocks, self.blocks) if kind == "input"}}
        context = {b: n for b, (kind, n) in zip(blocks, self.blocks) if kind == "context"}
        if list(inputs)[1:] + list(context) != blocks:
            raise AssertionError("a program lists its inputs before its contexts")
        return rc.cell(states=states, output=output, inputs=inputs,
                       context=context)(scope[self.name])

    def describe(self):
        lines = ["cell %s: I=%d, states %s, inputs and contexts %s"
                 % (self.name, self.input_size, self.state_sizes, self.blocks),
                 "  v0 = x; " + "; ".join("v%d = s%d[t-1]" % (k + 1, k)
                                          for k in range(len(self.state_sizes)))
                 + "".join("; v%d = u%d" % (1 + len(self.state_sizes) + k, k)
                           for k in range(len(self.blocks)))]
        first = 1 + len(self.state_sizes) + len(self.blocks)
        lines += ["  v%d = %r" % (first + n, op) for n, op in enumerate(self.ops)]
        lines += ["  s%d[t] = %sv%d" % (k, "tanh " if wrap else "", i)
                  for k, (i, wrap) in enumerate(self.new_states)]
        lines.append("  output: %r" % (self.output,))
        return "\n".join(lines)


# ---------------------------------------------------------------- drawing programs

@st.composite
def programs(draw, max_ops=7, hand=False):
    """A random Program; sizes are ints, or "I" for values computed from x alone. hand:
    mostly gates written by hand (HAND_UNARY, HAND_BINARY, parameters used twice)."""
    input_size = draw(st.sampled_from(INPUT_SIZES))
    state_sizes = tuple(draw(st.lists(st.sampled_from(SIZES), min_size=1, max_size=3)))
    pool = [("vec", "I")] + [("vec", n) for n in state_sizes]     # (kind, size) per value
    blocks = ()
    if not hand and draw(st.integers(0, 3)) == 0:      # more inputs, per step or per sequence
        blocks = tuple(sorted(draw(st.lists(st.tuples(st.sampled_from(["input", "context"]),
                                                      st.sampled_from(SIZES)),
                                            min_size=1, max_size=2)),
                              key=lambda b: b[0] == "context"))
        pool += [("vec", n) for _, n in blocks]
    ops, weights = [], {}
    for k in range(draw(st.integers(1, max_ops))):
        op, out = (draw_hand_op if hand else draw_op)(draw, k, pool, weights)
        ops.append(op)
        pool.append(out)
    new_states = []
    for n in state_sizes:
        made = [i for i, v in enumerate(pool) if v == ("vec", n) and i > len(state_sizes)]
        if not made or draw(st.booleans()):
            op, out = draw_linear(draw, len(ops), pool, weights, n)
            ops.append(op)
            pool.append(out)
            made = [len(pool) - 1]
        same = [i for i, v in enumerate(pool) if v == ("vec", n) and i > 0]
        new_states.append((draw(st.sampled_from(made + same)), draw(st.booleans())))
    output = draw_output(draw, pool, len(state_sizes))
    return Program(input_size, state_sizes, tuple(ops), tuple(new_states), output, blocks)


def width(pool, indices):
    """The width of a concat as the cell language sees it: (multiple of I, constant)."""
    return (sum(pool[i][1] == "I" for i in indices),
            sum(pool[i][1] for i in indices if pool[i][1] != "I"))


def draw_linear(draw, k, pool, weights, size=None):
    """p.linear over one vector or a concat of 2-3 (repeats allowed), maybe tied to an
    earlier weight of the same shape, with or without a bias."""
    vecs = [i for i, v in enumerate(pool) if v[0] == "vec"]
    args = tuple(draw(st.lists(st.sampled_from(vecs), min_size=1, max_size=3)))
    size = size or draw(st.sampled_from(SIZES))
    shape = (size, width(pool, args))
    name = "W%d" % k
    if shape in weights and draw(st.booleans()):
        name = weights[shape]                   # a tied weight: the same parameter twice
    weights.setdefault(shape, name)
    bias = draw(st.sampled_from([None, "b%d" % k]))
    return ("linear", name, args, bias, size), ("vec", size)


def draw_op(draw, k, pool, weights):
    """One random operation on the values so far, and the (kind, size) of its result."""
    kind = draw(st.sampled_from(["unary", "binary", "linear", "linear", "clip", "pow", "const",
                                 "vector", "scalar", "reduce", "slice", "clock", "mask", "mask"]))
    i = draw(st.integers(0, len(pool) - 1))
    if kind == "slice" and pool[i][0] == "vec" and pool[i][1] != "I" and pool[i][1] > 1:
        n = pool[i][1]
        first = draw(st.integers(0, n - 1))
        if draw(st.booleans()):                 # v[a:b], maybe counted from the end
            stop = draw(st.integers(first + 1, n))
            return ("slice", i, first - n if draw(st.booleans()) else first, stop), ("vec", stop - first)
        sizes = (first, n - first) if first else (n,)
        which = len(sizes) - 1
        return ("split", i, sizes, which), ("vec", sizes[which])
    if kind == "slice":
        kind = "unary"
    if kind == "mask" and pool[i][0] == "vec":      # a random mask: rc.dropout, rc.zoneout
        rate, per = draw(st.sampled_from([0.0, 0.3, 0.5])), draw(st.sampled_from(["sequence", "step"]))
        same = [j for j, v in enumerate(pool) if v == pool[i]]
        if draw(st.booleans()):
            return ("dropout", i, rate, per), pool[i]
        return ("zoneout", i, draw(st.sampled_from(same)), rate, per), pool[i]
    if kind == "mask":
        kind = "unary"
    if kind == "clock":
        return ("clock", i, draw(st.sampled_from([1, 2, 3]))), pool[i]
    if kind == "linear":
        return draw_linear(draw, k, pool, weights)
    if kind == "binary":
        j, out = draw_partner(draw, pool, i)
        return (draw(st.sampled_from(sorted(BINARY))), i, j), out
    if kind == "unary":
        return (draw(st.sampled_from(sorted(UNARY))), i), pool[i]
    if kind == "clip":
        return ("clip", i, draw(st.sampled_from(CLIPS))), pool[i]
    if kind == "pow":
        return ("pow", i, draw(st.sampled_from([2, 3]))), pool[i]
    if kind == "const":
        return (draw(st.sampled_from(["cmul", "cadd"])), i, draw(st.sampled_from(CONSTANTS))), pool[i]
    if kind == "scalar":
        return ("scalar", i, "a%d" % k), pool[i]
    if pool[i][0] == "row":                     # vectors and reductions need a vector
        return ("tanh", i), pool[i]
    if kind == "vector":
        return ("vector", i, "v%d" % k, pool[i][1], draw(st.sampled_from("*+"))), pool[i]
    return (draw(st.sampled_from(["sum", "mean"])), i), ("row", 1)


HAND_KINDS = ["hand_unary"] * 4 + ["hand_binary"] * 3 + [
    "linear", "linear", "vector_twice", "scalar_twice", "vector", "unary", "reduce"]


def draw_hand_op(draw, k, pool, weights):
    """One operation as a user writes it by hand, mostly: the gates of HAND_UNARY and
    HAND_BINARY, a learnable vector or scalar read twice (or again, by its name, in a
    later operation), among linear maps and a few building blocks."""
    kind = draw(st.sampled_from(HAND_KINDS))
    i = draw(st.integers(0, len(pool) - 1))
    if kind == "linear":
        return draw_linear(draw, k, pool, weights)
    if kind == "hand_unary":
        return (draw(st.sampled_from(sorted(HAND_UNARY))), i), pool[i]
    if kind == "hand_binary":
        j, out = draw_partner(draw, pool, i)
        return (draw(st.sampled_from(sorted(HAND_BINARY))), i, j), out
    if kind == "unary":
        return (draw(st.sampled_from(sorted(UNARY))), i), pool[i]
    if kind == "scalar_twice":
        return ("scalar_twice", i, shared_name(draw, weights, ("scalar",), "a%d" % k)), pool[i]
    if pool[i][0] == "row":                     # vectors and reductions need a vector
        return ("sigmoid_vec", i), pool[i]
    if kind == "reduce":
        return (draw(st.sampled_from(["sum", "mean"])), i), ("row", 1)
    name = shared_name(draw, weights, ("vector", pool[i][1]), "v%d" % k)
    if kind == "vector":
        return ("vector", i, name, pool[i][1], draw(st.sampled_from("*+"))), pool[i]
    return ("vector_twice", i, name, pool[i][1]), pool[i]


def draw_partner(draw, pool, i):
    """A second operand for value i (same size, or a per-row scalar on either side) and
    the (kind, size) of the result."""
    fits = [j for j, v in enumerate(pool)
            if v[0] == "row" or pool[i][0] == "row" or v[1] == pool[i][1]]
    j = draw(st.sampled_from(fits))
    return j, (pool[i] if pool[i][0] == "vec" else pool[j])


def shared_name(draw, names, key, fresh):
    """The name of an earlier parameter of the same kind and shape (a parameter used
    again), or a fresh one."""
    if key in names and draw(st.booleans()):
        return names[key]
    names.setdefault(key, fresh)
    return fresh


def draw_output(draw, pool, n_states):
    vecs = [i for i, v in enumerate(pool) if v[0] == "vec"]
    choices = [("y", i) for i in vecs] + [("state", k) for k in range(n_states)]
    if n_states == 1:
        choices.append(None)
    return draw(st.sampled_from(choices))


# ---------------------------------------------------------------- found by fuzzing

@rc.cell(states=("h",))
def gate_squared(x, h, p):
    g = rc.sigmoid(p.linear("W", rc.concat(h, x)))
    return {"h": h + g * g}


def test_a_value_read_twice_by_one_node():
    """g * g with g an activation compiles and equals the reference."""
    kern = rc.compile(gate_squared, 3, 4, "float64")
    params, x, state0, _, _, _ = gradcheck_data(kern, T, B, 0, None)
    ref = rc.reference(gate_squared, 3, 4).forward(params, x, state0)
    assert_close(kern.forward(params, x, state0).outputs, ref.outputs, "outputs")


@rc.cell(states=("h",))
def preactivation_out(x, h, p):
    v = p.linear("W", rc.concat(x, h), bias="b")
    return {"h": rc.sigmoid(v) * rc.tanh(h)}, v


@rc.cell(states=("h", "c"), output="h")
def preactivation_state(x, h, c, p):
    v = p.linear("W", rc.concat(x, h))
    return {"h": rc.tanh(v) * h, "c": v}


@pytest.mark.parametrize("cell", [preactivation_out, preactivation_state], ids=lambda c: c.name)
def test_result_read_by_an_activation(cell):
    """A linear map that is the output (or a state) and also goes through an activation:
    the kernel's forward must equal the reference's (it returns the activation instead)."""
    kern = rc.compile(cell, 3, 4, "float64")
    params, x, state0, _, _, _ = gradcheck_data(kern, T, B, 0, None)
    res = kern.forward(params, x, state0)
    ref = rc.reference(cell, 3, 4).forward(params, x, state0)
    for s in kern.state_sizes:
        assert_close(res.states[s], ref.states[s], "states[%r]" % s)
    assert_close(res.outputs, ref.outputs, "outputs")


@rc.cell(states=("h",))
def sigmoid_by_hand(x, h, p):
    a = p.linear("W", rc.concat(x, h), bias="b")
    return {"h": rc.elementwise(lambda u: 1 / (1 + sympy.exp(-u)), a)}


@rc.cell(states=("h",))
def sigmoid_of_vectors(x, h, p):
    return {"h": rc.tanh(h + 1 / (1 + rc.exp(-p.linear("W", rc.concat(x, h)))))}


@pytest.mark.parametrize("cell", [sigmoid_by_hand, sigmoid_of_vectors], ids=lambda c: c.name)
def test_a_reciprocal_of_a_sum_standing_alone(cell):
    """1/(1 + exp(-u)) alone, or as a term: the kernel's forward equals the reference's
    (the C was once (1.0/1 + exp(-u)), the division binding only the 1)."""
    kern = rc.compile(cell, 3, 4, "float64")
    params, x, state0, _, _, _ = gradcheck_data(kern, T, B, 0, None)
    ref = rc.reference(cell, 3, 4).forward(params, x, state0)
    assert_close(kern.forward(params, x, state0).outputs, ref.outputs, "outputs")


# ---------------------------------------------------------------- the property

def finite_and_sane(*arrays):
    return all(np.isfinite(a).all() and np.abs(a).max(initial=0) < LIMIT for a in arrays)


def assert_close(got, want, what):
    """Kernel (own exp/tanh/log, other summation order) against the numpy reference."""
    scale = max(1.0, float(np.abs(want).max(initial=0)))
    np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-10 * scale, err_msg=what)


LENGTHS = st.sampled_from([None, (T, 1), (0, 2)])


@pytest.mark.slow
@FUZZ
@given(prog=programs(), lengths=LENGTHS, seed=st.integers(0, 3))
def test_random_cell_passes_gradcheck_and_matches_the_reference(prog, lengths, seed):
    """Outputs, final states and every gradient equal the reference evaluator's, and every
    gradient block equals central finite differences (rtol 1e-5)."""
    note(prog.describe())
    assume(check_program(prog, lengths, seed))


@HAND_FUZZ
@given(prog=programs(hand=True), lengths=LENGTHS, seed=st.integers(0, 3))
def test_hand_written_cell_passes_gradcheck_and_matches_the_reference(prog, lengths, seed):
    """The same property for cells whose gates are written by hand (HAND_UNARY,
    HAND_BINARY, parameters used twice)."""
    note(prog.describe())
    assume(check_program(prog, lengths, seed))


def every_hand_written_gate():
    """One Program applying every gate of HAND_UNARY to h and of HAND_BINARY to (x, h),
    summed, scaled and through tanh: each is compiled and checked at least once, whatever
    the random draws pick."""
    gates = [(name, 1) for name in sorted(HAND_UNARY)] + [
        (name, 0, 1) for name in sorted(HAND_BINARY)]
    ops = list(gates)                           # values: x, h, then one per operation
    total = 2
    for k in range(3, 2 + len(gates)):
        ops.append(("add", total, k))
        total = 1 + len(ops)
    ops.append(("cmul", total, 0.1))
    return Program(3, (3,), tuple(ops), ((1 + len(ops), True),))


@pytest.mark.parametrize("lengths", [None, (T, 1)])
def test_every_hand_written_gate_in_one_cell(lengths):
    """Every hand-written gate compiled at least once, in the quick profile too."""
    assert check_program(every_hand_written_gate(), lengths, 0), "values beyond LIMIT"


def check_program(prog, lengths, seed):
    """Compile prog in float64; compare it with the reference evaluator and with central
    finite differences. False (nothing compared) when its values leave the range LIMIT."""
    cell = prog.cell()
    hidden = prog.state_sizes[0]
    kern = rc.compile(cell, prog.input_size, hidden, "float64")
    params, x, state0, d_y, d_s, _ = gradcheck_data(kern, T, B, seed, None)
    rng = np.random.default_rng(seed)
    context = {c: rng.standard_normal((B, n)) for c, n in kern.context.items()} or None
    res = kern.forward(params, x, state0, lengths, context=context, seed=seed)
    g = kern.backward(res, d_y, d_s)
    sane = finite_and_sane(res.outputs, *res.states.values(), g.x, *g.params.values(),
                           *g.state0.values())
    if not sane:
        log("overflowed", prog)
        return False
    ref = rc.reference(cell, prog.input_size, hidden)
    r = ref.forward(params, x, state0, lengths, context=context, masks=res.masks)
    rg = ref.backward(r, d_y, d_s)
    assert_close(res.outputs, r.outputs, "outputs")
    for s in kern.state_sizes:
        assert_close(res.states[s], r.states[s], "states[%r]" % s)
        assert_close(g.state0[s], rg.state0[s], "d state0[%r]" % s)
    assert_close(g.x, rg.x, "d x")
    for c in kern.context:
        assert_close(g.context[c], rg.context[c], "d context[%r]" % c)
    for name in kern.param_shapes:
        assert_close(g.params[name], rg.params[name], "d params[%r]" % name)
    report = rc.gradcheck(kern, T=T, B=B, seed=seed, lengths=lengths, rtol=1e-5,
                          localize=False)
    assert report.ok, "%s\n%s" % (prog.describe(), report)
    log("passed", prog)
    return True


def log(outcome, prog):
    """One line per example in $RNNC_FUZZ_LOG (make fuzz counts the distinct cells)."""
    path = os.environ.get("RNNC_FUZZ_LOG")
    if path:
        with open(path, "a") as f:
            f.write("%s %s states=%s ops=%d\n" % (outcome, prog.name, len(prog.state_sizes),
                                                 len(prog.ops)))


LONG_T = 2200          # past one chunk of 2048 steps at B=1


@pytest.mark.slow
@settings(FUZZ, max_examples=min(EXAMPLES, 12))
@given(prog=programs(), seed=st.integers(0, 3))
def test_random_cell_over_chunks_agrees_on_one_thread_two_threads_and_step_by_step(prog, seed):
    """The paths of a chunk's stateless work agree on a random cell at B=1 over more than
    one chunk: every row at once on one thread, in two halves on two threads (the same
    outputs, bit for bit), and one step at a time (rows with lengths, here all of T)."""
    note(prog.describe())
    kern = rc.compile(prog.cell(), prog.input_size, prog.state_sizes[0], "float64")
    params, x, state0, d_y, d_s, _ = gradcheck_data(kern, LONG_T, 1, seed, None)
    rng = np.random.default_rng(seed)
    context = {c: rng.standard_normal((1, n)) for c, n in kern.context.items()} or None

    def run(threads, lengths):
        rc.set_num_threads(threads)
        try:
            res = kern.forward(params, x, state0, lengths, context=context, seed=seed)
            return res, kern.backward(res, d_y, d_s)
        finally:
            rc.set_num_threads(1)
    one, g1 = run(1, None)
    assume(finite_and_sane(one.outputs, g1.x, *g1.params.values()))
    two, g2 = run(2, None)
    steps, g3 = run(1, np.array([LONG_T]))
    np.testing.assert_array_equal(two.outputs, one.outputs)
    assert_close(steps.outputs, one.outputs, "outputs, one step at a time")
    for other, how in ((g2, "two threads"), (g3, "one step at a time")):
        assert_close(other.x, g1.x, "d x, " + how)
        for name in kern.param_shapes:
            assert_close(other.params[name], g1.params[name], "d params[%r], %s" % (name, how))


BATCH1_FUZZ = settings(FUZZ, max_examples=int(os.environ.get("RNNC_FUZZ_EXAMPLES", "4")))


@pytest.mark.slow
@BATCH1_FUZZ
@given(prog=programs(hand=True), seed=st.integers(0, 3))
def test_random_cell_infers_at_batch1_as_the_reference(prog, seed):
    """A kernel built at -O2 runs inference at batch 1 through a unit of its own (the
    exported kernel's forward, when the weights fit 32 KB): its outputs and final states
    equal the reference evaluator's, for cells written by hand."""
    note(prog.describe())
    cell = prog.cell()
    hidden = prog.state_sizes[0]
    kern = rc.compile(cell, prog.input_size, hidden, "float64", opt_level=2)
    assert kern._batch1                 # these cells' weights are far below 32 KB
    params, x, state0, _, _, _ = gradcheck_data(kern, T, 1, seed, None)
    rng = np.random.default_rng(seed)
    context = {c: rng.standard_normal((1, n)) for c, n in kern.context.items()} or None
    y, states = kern.infer(params, x, state0, context=context)
    assume(finite_and_sane(y, *states.values()))
    y_ref, states_ref = rc.reference(cell, prog.input_size, hidden).infer(
        params, x, state0, context=context)
    assert_close(y, y_ref, "outputs")
    for s in kern.state_sizes:
        assert_close(states[s], states_ref[s], "states[%r]" % s)
