"""Every error and runtime rule of the public contract (API.md sections 1-2): cell mistakes
are CellErrors naming the offending line or value, bad runtime arguments name the argument
and its expected shape, the documented runtime rules hold, check_finite names the variable,
step and row, and absurd sizes are refused before anything is allocated.

Lines that a cell error must name carry a trailing `# <tag>` comment; `line_of(tag)` finds
them, so the tests do not depend on line numbers."""
import copy
import inspect
import os
import re

import numpy as np
import pytest
import sympy

import rnncompiler as rc

from cells import elman, lstm

I, H = 3, 4
T, B = 5, 2
HERE = os.path.basename(__file__)
with open(__file__, encoding="utf-8") as _f:
    _SOURCE = _f.read().splitlines()


# ---------------------------------------------------------------- helpers

def line_of(tag):
    """The line number of the one source line ending in `# <tag>`."""
    hits = [n for n, text in enumerate(_SOURCE, 1) if text.rstrip().endswith("# <%s>" % tag)]
    assert len(hits) == 1, "tag %r must mark exactly one line, found %s" % (tag, hits)
    return hits[0]


def lines_named(msg):
    """The line numbers of this file that a message refers to as test_errors.py:N."""
    return {int(n) for n in re.findall(re.escape(HERE) + r":(\d+)", msg)}


def span(fn):
    """The lines of a function's source (its def line through its last line)."""
    lines, start = inspect.getsourcelines(fn)
    return set(range(start, start + len(lines)))


def cell_error(body, states=("h",), output=None, sizes=None):
    """Trace and compile `body` inside one pytest.raises (the contract allows either stage
    to raise); return the CellError's message."""
    with pytest.raises(rc.CellError) as info:
        cell = rc.cell(states=states, output=output)(body)
        rc.compile(cell, input_size=I, hidden_size=H, dtype="float64", sizes=sizes)
    assert isinstance(info.value, ValueError)
    return str(info.value)


def message(exc):
    """An exception's text; KeyError's str() would quote it, so join its args."""
    return " ".join(str(a) for a in exc.args)


def assert_mentions(msg, *patterns):
    for pat in patterns:
        assert re.search(pat, msg), "message %r does not match %r" % (msg, pat)


def assert_all_equal(a, b):
    """Two dicts/arrays/Gradients/(outputs, states) pairs are exactly equal."""
    if isinstance(a, rc.Gradients):
        assert_all_equal(a.params, b.params)
        assert_all_equal(a.x, b.x)
        assert_all_equal(a.state0, b.state0)
        assert (a.states is None) == (b.states is None)
        if a.states is not None:
            assert_all_equal(a.states, b.states)
    elif isinstance(a, rc.ForwardResult):
        assert_all_equal(a.outputs, b.outputs)
        assert_all_equal(a.states, b.states)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_all_equal(a[k], b[k])
    else:
        assert a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def kern():
    """The LSTM in float64 (I=3, H=4): states h and c, output h."""
    return rc.compile(lstm, input_size=I, hidden_size=H, dtype="float64")


@pytest.fixture(scope="module")
def kern32():
    """An Elman cell in float32: another kernel, and the target of dtype conversions."""
    return rc.compile(elman, input_size=I, hidden_size=H, dtype="float32")


@pytest.fixture()
def data(kern):
    """Parameters, x (T, B, I), state0, d_outputs and d_states for the LSTM kernel."""
    rng = np.random.default_rng(11)
    params = kern.init_params(seed=3)
    x = rng.standard_normal((T, B, I))
    state0 = {s: 0.5 * rng.standard_normal((B, n)) for s, n in kern.state_sizes.items()}
    dy = rng.standard_normal((T, B, H))
    ds = {s: rng.standard_normal((B, n)) for s, n in kern.state_sizes.items()}
    return params, x, state0, dy, ds


# ================================================================ A. cell mistakes

def test_mismatched_sizes_in_elementwise_math():
    """h (size H=4) times x (size I=3) is a CellError naming the product's line and sizes."""
    def bad(x, h, p):
        return {"h": h * x}  # <mismatch>
    msg = cell_error(bad)
    assert line_of("mismatch") in lines_named(msg), msg
    text = re.sub(re.escape(HERE) + r":\d+", "", msg)
    assert_mentions(text, r"size", r"\b3\b", r"\b4\b")


def test_mismatched_int_sizes_in_elementwise_math():
    """Sizes given as ints that differ (4 vs 5) are caught as well, naming the line."""
    def bad(x, h, p):
        return {"h": h * p.vector("v", size=5)}  # <mismatch-int>
    msg = cell_error(bad, states={"h": 4})
    assert line_of("mismatch-int") in lines_named(msg), msg


def test_weight_reused_on_another_width_is_an_error():
    """One name for W (H, H) and W (H, I) is a CellError naming W and the second use."""
    def bad(x, h, p):
        a = p.linear("W", h)
        b = p.linear("W", x)  # <W-second>
        return {"h": a + b}
    msg = cell_error(bad)
    assert_mentions(msg, r"\bW\b")
    assert line_of("W-second") in lines_named(msg), msg


def test_same_name_as_vector_and_matrix_is_an_error():
    """A name used for a vector and then a matrix (another shape) is a CellError."""
    def bad(x, h, p):
        v = p.vector("g") * h
        return {"h": v + p.linear("g", h)}  # <g-second>
    msg = cell_error(bad)
    assert_mentions(msg, r"\bg\b")
    assert line_of("g-second") in lines_named(msg), msg


PARAM_USES = {
    "vector": lambda p, h, name: h * p.vector(name),  # <use-vector>
    "scalar": lambda p, h, name: h * p.scalar(name),  # <use-scalar>
    "linear": lambda p, h, name: p.linear(name, h),  # <use-linear>
    "bias": lambda p, h, name: p.linear("W", h, bias=name),  # <use-bias>
}


@pytest.mark.parametrize("name,use", [(n, u) for n in ["2W", "a-b", "", 3, None, "x"]
                                      for u in PARAM_USES if not (n is None and u == "bias")])
def test_invalid_parameter_names(name, use):
    """Names must be identifiers and 'x' is reserved; the error names the value and line."""
    fn = PARAM_USES[use]

    def bad(x, h, p):
        return {"h": fn(p, h, name)}
    msg = cell_error(bad)
    assert repr(name) in msg, msg
    assert line_of("use-" + use) in lines_named(msg), msg


@pytest.mark.parametrize("states", [("2h",), ("a-b",), ("",), (3,), ("x",), {"h-1": "H"}],
                         ids=repr)
def test_invalid_state_names(states):
    """A state name that is no identifier, or 'x', is a CellError naming it and the cell."""
    name = next(iter(states))

    def bad(x, s, p):
        return {name: s}
    msg = cell_error(bad, states=states)
    assert repr(name) in msg, msg
    assert lines_named(msg) & span(bad), msg


def test_repeated_state_name():
    """states=("h", "h") is a CellError naming 'h'."""
    def bad(x, h, g, p):
        return {"h": h}
    msg = cell_error(bad, states=("h", "h"))
    assert "'h'" in msg and lines_named(msg) & span(bad), msg


def test_undefined_sympy_function_in_elementwise():
    """sympy.Function("f") has no expression and no C form: a CellError naming f and line."""
    def bad(x, h, p):
        return {"h": rc.elementwise(lambda a: sympy.Function("f")(a), h)}  # <undefined-f>
    msg = cell_error(bad)
    assert_mentions(msg, r"\bf\b")
    assert line_of("undefined-f") in lines_named(msg), msg


UNSUPPORTED = [
    ("zeta", lambda a: sympy.zeta(a), r"zeta"),                       # no C form
    ("integral", lambda a: sympy.Integral(sympy.exp(-a ** 2), a), r"Integral"),
    ("gamma", lambda a: sympy.gamma(a), r"gamma"),                    # derivative has no C form
    ("complex", lambda a: sympy.I * a, r"I\*a|real"),                 # not real-valued
    ("relational", lambda a: a > 0, r">"),                            # not an expression
]


@pytest.mark.parametrize("fn,what", [u[1:] for u in UNSUPPORTED], ids=[u[0] for u in UNSUPPORTED])
def test_math_that_cannot_be_printed_or_differentiated(fn, what):
    """Math sympy cannot print as C or differentiate is a CellError naming it and the line."""
    def bad(x, h, p):
        return {"h": rc.elementwise(fn, h)}  # <unsupported>
    msg = cell_error(bad)
    assert_mentions(msg, what)
    assert line_of("unsupported") in lines_named(msg), msg


def test_free_symbol_in_elementwise():
    """An expression using a symbol that is no operand (q) is a CellError naming q and line."""
    def bad(x, h, p):
        return {"h": rc.elementwise(lambda a: a * sympy.Symbol("q"), h)}  # <free-q>
    msg = cell_error(bad)
    assert_mentions(msg, r"\bq\b")
    assert line_of("free-q") in lines_named(msg), msg


def test_state_not_returned():
    """A cell with states h and c returning only h: a CellError naming c."""
    def bad(x, h, c, p):
        return {"h": h + c}
    msg = cell_error(bad, states=("h", "c"), output="h")
    assert "'c'" in msg and lines_named(msg) & span(bad), msg


def test_unknown_state_returned():
    """Returning a state z the cell does not declare: a CellError naming z."""
    def bad(x, h, p):
        return {"h": h, "z": h}
    msg = cell_error(bad)
    assert "'z'" in msg and lines_named(msg) & span(bad), msg


def test_output_given_twice():
    """Returning (states, y) and also naming output= is a CellError."""
    def bad(x, h, c, p):
        return {"h": h, "c": c}, h + c
    msg = cell_error(bad, states=("h", "c"), output="h")
    assert_mentions(msg, r"output")
    assert lines_named(msg) & span(bad), msg


def test_no_output_with_several_states():
    """Neither output= nor (states, y) with two states is a CellError."""
    def bad(x, h, c, p):
        return {"h": h, "c": c}
    msg = cell_error(bad, states=("h", "c"))
    assert_mentions(msg, r"output")
    assert lines_named(msg) & span(bad), msg


def test_output_names_no_state():
    """output="y" when the states are h and c is a CellError naming y."""
    def bad(x, h, c, p):
        return {"h": h, "c": c}
    msg = cell_error(bad, states=("h", "c"), output="y")
    assert "'y'" in msg and lines_named(msg) & span(bad), msg


@pytest.mark.parametrize("states", [("h",), ("h", "c")])
def test_wrong_number_of_arguments(states):
    """The function must take x, one argument per state, then p; else a CellError."""
    def bad(x, h, c, d, p):
        return {s: h for s in states}
    msg = cell_error(bad, states=states)
    assert_mentions(msg, r"\bbad\b", r"argument")
    assert lines_named(msg) & span(bad), msg


def test_unbound_size_name():
    """A size "P" not given in sizes= is a CellError naming P."""
    def bad(x, h, p):
        return {"h": p.linear("W", p.linear("V", h, size="P"))}
    msg = cell_error(bad)
    assert_mentions(msg, r"'P'|\bP\b", r"sizes")


def test_unbound_state_size_name():
    """states={"h": "Q"} without sizes={"Q": n} is a CellError naming Q."""
    def bad(x, h, p):
        return {"h": h}
    msg = cell_error(bad, states={"h": "Q"})
    assert_mentions(msg, r"'Q'|\bQ\b")


def test_clip_with_lo_above_hi():
    """rc.clip(v, 2, 1) is a CellError naming the line."""
    def bad(x, h, p):
        return {"h": rc.clip(h, 2, 1)}  # <clip>
    msg = cell_error(bad)
    assert_mentions(msg, r"clip")
    assert line_of("clip") in lines_named(msg), msg


BAD_OPERANDS = [
    ("str-mul", lambda x, h, p: h * "abc", r"'abc'"),  # <op-str-mul>
    ("str-radd", lambda x, h, p: "abc" + h, r"'abc'"),  # <op-str-radd>
    ("array-mul", lambda x, h, p: h * np.ones(H), r"array"),  # <op-array-mul>
    ("array-rmul", lambda x, h, p: np.ones(H) * h, r"array"),  # <op-array-rmul>
    ("none-add", lambda x, h, p: h + None, r"None"),  # <op-none-add>
    ("complex-mul", lambda x, h, p: h * 1j, r"1j"),  # <op-complex-mul>
    ("tanh-str", lambda x, h, p: rc.tanh("abc"), r"'abc'"),  # <op-tanh-str>
    ("sigmoid-array", lambda x, h, p: rc.sigmoid(np.ones(H)), r"array"),  # <op-sigmoid-array>
    ("elementwise-str", lambda x, h, p: rc.elementwise(lambda a, b: a * b, h, "abc"), r"'abc'"),  # <op-elementwise-str>
    ("concat-array", lambda x, h, p: p.linear("W", rc.concat(h, np.ones(I))), r"array"),  # <op-concat-array>
    ("linear-str", lambda x, h, p: p.linear("W", "h"), r"'h'"),  # <op-linear-str>
]


@pytest.mark.parametrize("op,what", [b[1:] for b in BAD_OPERANDS], ids=[b[0] for b in BAD_OPERANDS])
def test_non_vector_operand(op, what):
    """A string, array, None or complex operand is a CellError naming it and its line."""
    tag = "op-" + next(b[0] for b in BAD_OPERANDS if b[1] is op)

    def bad(x, h, p):
        return {"h": op(x, h, p)}
    msg = cell_error(bad)
    assert_mentions(msg, what)
    assert line_of(tag) in lines_named(msg), msg


def test_a_constant_beyond_a_double_names_its_line():
    """h * 10**400 is a CellError naming the line, not float()'s OverflowError."""
    def body(x, h, p):
        return {"h": h * 10**400}          # <huge>
    msg = cell_error(body)
    assert line_of("huge") in lines_named(msg), msg
    assert "too large for a double" in msg and "401 digits" in msg


def test_vector_in_python_if():
    """`if h:` asks a symbolic vector for a truth value: a CellError naming the line."""
    def bad(x, h, p):
        if h:  # <truth>
            return {"h": h}
        return {"h": -h}
    msg = cell_error(bad)
    assert line_of("truth") in lines_named(msg), msg


def test_vector_compared_in_python_if():
    """`if h > 0:` (the usual form of the same mistake) is a CellError naming the line."""
    def bad(x, h, p):
        if h > 0:  # <compare>
            return {"h": h}
        return {"h": -h}
    msg = cell_error(bad)
    assert line_of("compare") in lines_named(msg), msg


# ================================================================ B. runtime argument errors

def _drop(params, name):
    return {k: v for k, v in params.items() if k != name}


# (id, call(kern, other, params, x, res), exception types, patterns the message must match)
ERRORS = [
    ("x-ndim", lambda k, o, P, x, r: k.forward(P, x[0]), ValueError, [r"\bx\b", r"\(\w+, \w+, 3\)"]),
    ("x-width", lambda k, o, P, x, r: k.forward(P, x[..., :2]), ValueError, [r"\bx\b", r"\(\w+, \w+, 3\)"]),
    ("x-T0", lambda k, o, P, x, r: k.forward(P, x[:0]), ValueError, [r"\bx\b"]),
    ("x-B0", lambda k, o, P, x, r: k.forward(P, x[:, :0]), ValueError, [r"\bx\b"]),
    ("x-complex", lambda k, o, P, x, r: k.forward(P, x + 0j), TypeError, [r"\bx\b"]),
    ("x-object", lambda k, o, P, x, r: k.forward(P, x.astype(object)), TypeError, [r"\bx\b"]),
    ("x-strings", lambda k, o, P, x, r: k.forward(P, x.astype(str)), TypeError, [r"\bx\b"]),
    ("x-string", lambda k, o, P, x, r: k.forward(P, "abc"), TypeError, [r"\bx\b"]),
    ("infer-x-width", lambda k, o, P, x, r: k.infer(P, x[..., :2]), ValueError, [r"\bx\b", r"\(\w+, \w+, 3\)"]),
    ("step-x-width", lambda k, o, P, x, r: k.step(P, x[0, :, :2]), ValueError, [r"x_t", r"\(\w+, 3\)"]),
    ("params-missing", lambda k, o, P, x, r: k.forward(_drop(P, "b_i"), x), KeyError, [r"'b_i'", r"\(4,\)"]),
    ("params-unknown", lambda k, o, P, x, r: k.forward(dict(P, W_z=np.ones(3)), x), KeyError, [r"'W_z'"]),
    ("params-misshapen", lambda k, o, P, x, r: k.forward(dict(P, W_f=P["W_f"].T), x), ValueError, [r"W_f", r"\(4, 7\)"]),
    ("params-complex", lambda k, o, P, x, r: k.forward(dict(P, b_f=P["b_f"] + 0j), x), TypeError, [r"b_f"]),
    ("params-not-dict", lambda k, o, P, x, r: k.forward(list(P.values()), x), (TypeError, ValueError), [r"params"]),
    ("state0-shape", lambda k, o, P, x, r: k.forward(P, x, {"h": np.zeros((3, H))}), ValueError, [r"state0", r"\bh\b", r"\(2, 4\)"]),
    ("state0-width", lambda k, o, P, x, r: k.forward(P, x, {"c": np.zeros(H + 1)}), ValueError, [r"state0", r"\bc\b", r"\(2, 4\)|\(4,\)"]),
    ("state0-unknown", lambda k, o, P, x, r: k.forward(P, x, {"z": np.zeros((B, H))}), KeyError, [r"state0", r"'z'"]),
    ("state0-complex", lambda k, o, P, x, r: k.forward(P, x, {"h": np.zeros((B, H), complex)}), TypeError, [r"state0"]),
    ("state0-not-dict", lambda k, o, P, x, r: k.forward(P, x, np.zeros((B, H))), (TypeError, ValueError), [r"state0"]),
    ("d_outputs-shape", lambda k, o, P, x, r: k.backward(r, np.zeros((T, B, I))), ValueError, [r"d_outputs", r"\(5, 2, 4\)"]),
    ("d_outputs-complex", lambda k, o, P, x, r: k.backward(r, np.zeros((T, B, H), complex)), TypeError, [r"d_outputs"]),
    ("d_states-unknown", lambda k, o, P, x, r: k.backward(r, None, {"z": np.zeros((B, H))}), KeyError, [r"d_states", r"'z'"]),
    ("d_states-shape", lambda k, o, P, x, r: k.backward(r, None, {"h": np.zeros((B, H + 1))}), ValueError, [r"d_states", r"\(2, 4\)"]),
    ("d_states-not-dict", lambda k, o, P, x, r: k.backward(r, None, np.zeros((B, H))), (TypeError, ValueError), [r"d_states"]),
    ("lengths-shape", lambda k, o, P, x, r: k.forward(P, x, None, [1, 2, 3]), ValueError, [r"lengths", r"\(2,\)"]),
    ("lengths-2d", lambda k, o, P, x, r: k.forward(P, x, None, [[1, 2]]), ValueError, [r"lengths", r"\(2,\)"]),
    ("lengths-negative", lambda k, o, P, x, r: k.forward(P, x, None, [-1, 2]), ValueError, [r"lengths"]),
    ("lengths-above-T", lambda k, o, P, x, r: k.forward(P, x, None, [T + 1, 2]), ValueError, [r"lengths"]),
    ("lengths-huge", lambda k, o, P, x, r: k.forward(P, x, None, np.array([2**40, 1])), ValueError, [r"lengths"]),
    ("lengths-float", lambda k, o, P, x, r: k.forward(P, x, None, np.array([1.0, 2.0])), (TypeError, ValueError), [r"lengths"]),
    ("infer-lengths", lambda k, o, P, x, r: k.infer(P, x, None, [0, T + 1]), ValueError, [r"lengths"]),
    ("result-other-kernel", lambda k, o, P, x, r: k.backward(o.forward(o.init_params(), x)), ValueError, [r"result"]),
    ("result-to-other-kernel", lambda k, o, P, x, r: o.backward(r), ValueError, [r"result"]),
    ("result-forged", lambda k, o, P, x, r: k.backward(rc.ForwardResult(r.outputs, r.states)), (ValueError, TypeError), [r"result"]),
    ("result-tuple", lambda k, o, P, x, r: k.backward((r.outputs, r.states)), (ValueError, TypeError), [r"result"]),
    ("result-none", lambda k, o, P, x, r: k.backward(None), (ValueError, TypeError), [r"result"]),
]


@pytest.mark.parametrize("call,exc,patterns", [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_bad_runtime_arguments(kern, kern32, data, call, exc, patterns):
    """Bad runtime input raises ValueError/TypeError/KeyError naming the argument and shape."""
    params, x = data[0], data[1]
    res = kern.forward(params, x)
    with pytest.raises(exc) as info:
        call(kern, kern32, params, x, res)
    assert_mentions(message(info.value), *patterns)


COMPILE_ERRORS = [
    ("dtype-int32", dict(dtype="int32"), ValueError, [r"dtype", r"int32"]),
    ("dtype-float16", dict(dtype="float16"), ValueError, [r"dtype", r"float16"]),
    ("dtype-np-float16", dict(dtype=np.float16), ValueError, [r"dtype", r"float16"]),
    ("input_size-0", dict(input_size=0), ValueError, [r"input_size"]),
    ("hidden_size-str", dict(hidden_size="4"), (ValueError, TypeError), [r"hidden_size"]),
    ("hidden_size-float", dict(hidden_size=4.0), (ValueError, TypeError), [r"hidden_size"]),
    ("sizes-zero", dict(sizes={"P": 0}), ValueError, [r"\bP\b"]),
    ("not-a-cell", dict(cell=lambda x, h, p: {"h": h}), (TypeError, ValueError), [r"cell"]),
]


@pytest.mark.parametrize("kwargs,exc,patterns", [e[1:] for e in COMPILE_ERRORS],
                         ids=[e[0] for e in COMPILE_ERRORS])
def test_bad_compile_arguments(kwargs, exc, patterns):
    """rc.compile refuses bad dtypes, sizes and non-cells, naming the argument."""
    args = dict(cell=elman, input_size=I, hidden_size=H, dtype="float64")
    args.update(kwargs)
    with pytest.raises(exc) as info:
        rc.compile(**args)
    assert_mentions(message(info.value), *patterns)


# ================================================================ C. runtime rules

def test_state0_of_shape_size_broadcasts_over_the_batch(kern, data):
    """state0 entries of shape (size,) equal the same row repeated for every batch row."""
    params, x, _, dy, ds = data
    h0, c0 = np.linspace(-1, 1, H), np.linspace(0.5, -0.3, H)
    res = kern.forward(params, x, {"h": h0, "c": c0})
    ref = kern.forward(params, x, {"h": np.tile(h0, (B, 1)), "c": np.tile(c0, (B, 1))})
    assert_all_equal(res, ref)
    g, g_ref = kern.backward(res, dy, ds), kern.backward(ref, dy, ds)
    assert_all_equal(g, g_ref)
    assert g.state0["h"].shape == (B, H)


def test_missing_state_starts_at_zero(kern, data):
    """A state left out of state0 (or state0=None) equals passing zeros for it."""
    params, x, state0, dy, ds = data
    zeros = np.zeros((B, H))
    only_h = kern.forward(params, x, {"h": state0["h"]})
    assert_all_equal(only_h, kern.forward(params, x, {"h": state0["h"], "c": zeros}))
    assert_all_equal(kern.forward(params, x, {"c": None, "h": state0["h"]}), only_h)
    none = kern.forward(params, x)
    assert_all_equal(none, kern.forward(params, x, {"h": zeros, "c": zeros}))
    assert_all_equal(kern.forward(params, x, {}), none)
    g = kern.backward(only_h, dy, ds)
    assert set(g.state0) == {"h", "c"} and g.state0["c"].shape == (B, H)
    assert_all_equal(g, kern.backward(kern.forward(params, x, {"h": state0["h"], "c": zeros}),
                                      dy, ds))


def test_none_and_missing_seeds_mean_zero(kern, data):
    """d_outputs=None, d_states=None and a state missing from d_states all mean zero."""
    params, x, state0, dy, ds = data
    res = kern.forward(params, x, state0)
    zero_dy = np.zeros((T, B, H))
    zero_ds = {s: np.zeros((B, H)) for s in ds}
    g_none = kern.backward(res)
    assert_all_equal(g_none, kern.backward(res, zero_dy, zero_ds))
    assert not any(v.any() for v in g_none.params.values()) and not g_none.x.any()
    assert_all_equal(kern.backward(res, dy), kern.backward(res, dy, zero_ds))
    assert_all_equal(kern.backward(res, None, ds), kern.backward(res, zero_dy, ds))
    assert_all_equal(kern.backward(res, dy, {"c": ds["c"]}),
                     kern.backward(res, dy, {"h": zero_ds["h"], "c": ds["c"]}))
    g = kern.backward(res, dy, ds)
    assert any(v.any() for v in g.params.values()), "non-zero seeds must give gradients"


def test_float64_and_int_arrays_convert_to_a_float32_kernel(kern32):
    """float64/int inputs are cast to float32; results are float32, as with float32 inputs."""
    rng = np.random.default_rng(5)
    p64 = {k: v.astype(np.float64) for k, v in kern32.init_params(seed=1).items()}
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    x_int = rng.integers(-2, 3, size=(T, B, I))
    x64 = rng.standard_normal((T, B, I))
    h64, dy64 = rng.standard_normal((B, H)), rng.standard_normal((T, B, H))
    for x in (x64, x_int, x_int.astype(np.int32)):
        res = kern32.forward(p64, x, {"h": h64})
        ref = kern32.forward(p32, x.astype(np.float32), {"h": h64.astype(np.float32)})
        assert res.outputs.dtype == np.float32 and res.states["h"].dtype == np.float32
        assert_all_equal(res, ref)
        g = kern32.backward(res, dy64, {"h": h64})
        g_ref = kern32.backward(ref, dy64.astype(np.float32), {"h": h64.astype(np.float32)})
        assert_all_equal(g, g_ref)
        assert g.x.dtype == np.float32 and g.state0["h"].dtype == np.float32
        assert all(v.dtype == np.float32 for v in g.params.values())
        assert kern32.backward(res, state_grads=True).states["h"].dtype == np.float32
    y, states = kern32.infer(p64, x64)
    assert y.dtype == np.float32 and states["h"].dtype == np.float32
    y_t, states = kern32.step(p64, x64[0], {"h": h64})
    assert y_t.dtype == np.float32 and states["h"].dtype == np.float32


def test_float32_and_int_inputs_to_a_float64_kernel(kern, data):
    """float32, int and nested-list inputs work in a float64 kernel; outputs are float64."""
    params, x, state0, dy, ds = data
    x_int = np.arange(T * B * I).reshape(T, B, I) % 5 - 2
    res = kern.forward(params, x_int)
    assert res.outputs.dtype == np.float64
    assert_all_equal(res, kern.forward(params, x_int.astype(np.float64)))
    assert_all_equal(kern.forward(params, x_int.tolist()), res)
    x32 = x.astype(np.float32)
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    res = kern.forward(p32, x32, state0)
    assert res.outputs.dtype == np.float64
    assert_all_equal(res, kern.forward({k: v.astype(np.float64) for k, v in p32.items()},
                                       x32.astype(np.float64), state0))
    g = kern.backward(res, dy.astype(np.float32))
    assert g.x.dtype == np.float64 and all(v.dtype == np.float64 for v in g.params.values())


def _fortran(a):
    return np.asfortranarray(a)


def _strided(a):
    """The same values as a non-contiguous view (every other element of a larger array)."""
    big = np.zeros(tuple(2 * n for n in a.shape) or (), a.dtype)
    view = big[tuple(slice(None, None, 2) for _ in a.shape)]
    view[...] = a
    return view


def _reversed(a):
    """The same values through negative strides."""
    return np.ascontiguousarray(a[::-1])[::-1] if a.ndim else a


@pytest.mark.parametrize("layout", [_fortran, _strided, _reversed], ids=["fortran", "strided",
                                                                        "reversed"])
def test_any_layout_gives_the_same_results(kern, data, layout):
    """Fortran/strided/reversed x, params, state0, lengths, seeds equal C-contiguous ones."""
    params, x, state0, dy, ds = data
    lengths = np.array([T, 3])
    ref = kern.forward(params, x, state0, lengths)
    g_ref = kern.backward(ref, dy, ds, state_grads=True)
    lay = {k: layout(v) for k, v in params.items()}
    assert not layout(x).flags.c_contiguous
    res = kern.forward(lay, layout(x), {s: layout(v) for s, v in state0.items()}, layout(lengths))
    assert_all_equal(res, ref)
    g = kern.backward(res, layout(dy), {s: layout(v) for s, v in ds.items()}, state_grads=True)
    assert_all_equal(g, g_ref)
    y, states = kern.infer(lay, layout(x), {s: layout(v) for s, v in state0.items()},
                           layout(lengths))
    assert_all_equal(y, ref.outputs)
    assert_all_equal(states, ref.states)


def test_broadcast_and_read_only_views_are_accepted(kern, data):
    """Read-only and zero-stride (broadcast) inputs work and equal their dense copies."""
    params, x, state0, dy, ds = data
    xb = np.broadcast_to(x[:, :1], (T, B, I))
    ro = {k: v.copy() for k, v in params.items()}
    for v in ro.values():
        v.flags.writeable = False
    res = kern.forward(ro, xb, {"h": np.broadcast_to(state0["h"][0], (B, H))})
    ref = kern.forward(params, np.array(xb), {"h": np.tile(state0["h"][0], (B, 1))})
    assert_all_equal(res, ref)
    assert_all_equal(kern.backward(res, np.broadcast_to(dy[:1], (T, B, H))),
                     kern.backward(ref, np.repeat(dy[:1], T, axis=0)))


def test_inputs_are_never_modified(kern, kern32, data):
    """forward, backward, infer and step leave every input array as it was."""
    params, x, state0, dy, ds = data
    lengths = np.array([3, T])
    args = [params, x, state0, lengths, dy, ds]
    before = copy.deepcopy(args)
    res = kern.forward(params, x, state0, lengths, check_finite=True)
    kern.backward(res, dy, ds, state_grads=True, check_finite=True)
    kern.infer(params, x, state0, lengths)
    kern.step(params, x[0], state0)
    # a converting kernel (float64 -> float32) must not write back either
    p32 = kern32.init_params(seed=0)
    p64 = {k: v.astype(np.float64) for k, v in p32.items()}
    args32 = [p64, x, {"h": ds["h"]}, dy]
    before32 = copy.deepcopy(args32)
    kern32.backward(kern32.forward(p64, x, {"h": ds["h"]}), dy, {"h": ds["h"]})
    for a, b in zip(args + args32, before + before32):
        if isinstance(a, dict):
            for k in a:
                np.testing.assert_array_equal(a[k], b[k])
        else:
            np.testing.assert_array_equal(a, b)


def test_changing_inputs_after_forward_does_not_change_backward(kern, data):
    """Inputs changed in place after forward leave backward's gradients as they were."""
    params, x, state0, dy, ds = data
    lengths = np.array([T, 3])
    g_ref = kern.backward(kern.forward(params, x, state0, lengths), dy, ds)
    p2, x2 = {k: v.copy() for k, v in params.items()}, x.copy()
    s2, l2 = {k: v.copy() for k, v in state0.items()}, lengths.copy()
    res = kern.forward(p2, x2, s2, l2)
    outputs = res.outputs.copy()
    for v in list(p2.values()) + list(s2.values()):
        v[...] = 7.0
    x2[...] = -3.0
    l2[...] = 1
    g = kern.backward(res, dy, ds)
    assert_all_equal(g, g_ref)
    np.testing.assert_array_equal(res.outputs, outputs)


def test_backward_twice_gives_identical_results(kern, data):
    """backward on one result repeats exactly, even after a backward with other seeds."""
    params, x, state0, dy, ds = data
    res = kern.forward(params, x, state0, [T, 2])
    g1 = kern.backward(res, dy, ds, state_grads=True)
    kern.backward(res, -3 * dy, None)
    g2 = kern.backward(res, dy, ds, state_grads=True)
    assert_all_equal(g1, g2)
    assert g1.x is not g2.x


def test_lengths_with_zero_rows(kern, data):
    """Length-0 rows keep state0, output zeros, pass d_states on; others run as if alone."""
    params, x, state0, dy, ds = data
    rng = np.random.default_rng(7)
    B3 = 3
    x3 = rng.standard_normal((T, B3, I))
    s03 = {s: rng.standard_normal((B3, H)) for s in state0}
    dy3 = rng.standard_normal((T, B3, H))
    ds3 = {s: rng.standard_normal((B3, H)) for s in state0}
    lengths = np.array([2, 0, T])
    res = kern.forward(params, x3, s03, lengths)
    g = kern.backward(res, dy3, ds3)
    assert not res.outputs[:, 1].any() and not res.outputs[2:, 0].any()
    assert not g.x[:, 1].any() and not g.x[2:, 0].any()
    for s in s03:
        np.testing.assert_array_equal(res.states[s][1], s03[s][1])
        np.testing.assert_array_equal(g.state0[s][1], ds3[s][1])
    for b, n in ((0, 2), (2, T)):
        alone = kern.forward(params, x3[:n, b:b + 1], {s: v[b:b + 1] for s, v in s03.items()})
        ga = kern.backward(alone, dy3[:n, b:b + 1], {s: v[b:b + 1] for s, v in ds3.items()})
        np.testing.assert_allclose(res.outputs[:n, b:b + 1], alone.outputs, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(g.x[:n, b:b + 1], ga.x, rtol=1e-10, atol=1e-13)
        for s in s03:
            np.testing.assert_allclose(res.states[s][b:b + 1], alone.states[s], rtol=1e-12)
            np.testing.assert_allclose(g.state0[s][b:b + 1], ga.state0[s], rtol=1e-10, atol=1e-13)
    # every row of length 0: nothing runs, states are state0
    res0 = kern.forward(params, x3, s03, [0, 0, 0])
    assert not res0.outputs.any()
    assert_all_equal(res0.states, {s: np.ascontiguousarray(v) for s, v in s03.items()})
    y0, st0 = kern.infer(params, x3, s03, np.zeros(B3, np.int64))
    assert not y0.any() and all(np.array_equal(st0[s], s03[s]) for s in s03)


def test_state_grads_shape_and_absence(kern, data):
    """state_grads=True gives (T, B, size) per state (last h = dh_T + dy_T-1); else None."""
    params, x, state0, dy, ds = data
    res = kern.forward(params, x, state0)
    g = kern.backward(res, dy, ds, state_grads=True)
    assert set(g.states) == set(kern.state_sizes)
    for s, n in kern.state_sizes.items():
        assert g.states[s].shape == (T, B, n) and g.states[s].dtype == kern.dtype
    np.testing.assert_allclose(g.states["h"][T - 1], ds["h"] + dy[T - 1], rtol=1e-13)
    assert kern.backward(res, dy, ds).states is None
    assert kern.backward(res, dy, ds, check_finite=True).states is None
    g_plain = kern.backward(res, dy, ds)
    assert_all_equal(g_plain.params, g.params)
    assert_all_equal(g_plain.x, g.x)


# ================================================================ D. check_finite

def test_nan_in_x_names_x_step_and_row(kern, data):
    """A NaN in x at t=3, row 1 raises NonFiniteError naming x, step 3 and row 1."""
    params, x, state0, _, _ = data
    bad = x.copy()
    bad[3, 1, 2] = np.nan
    with pytest.raises(rc.NonFiniteError) as info:
        kern.forward(params, bad, state0, check_finite=True)
    assert isinstance(info.value, FloatingPointError)
    assert_mentions(str(info.value), r"\bx\b", r"step 3\b", r"row 1\b")


@pytest.mark.parametrize("name,index", [("W_f", (1, 2)), ("b_f", (0,)), ("b_o", (3,))])
def test_inf_in_parameter_names_the_parameter(kern, data, name, index):
    """An inf in a parameter raises naming it, even if outputs stay finite (saturation)."""
    params, x, state0, _, _ = data
    bad = {k: v.copy() for k, v in params.items()}
    bad[name][index] = np.inf
    with pytest.raises(rc.NonFiniteError) as info:
        kern.forward(bad, x, state0, check_finite=True)
    assert_mentions(str(info.value), re.escape(name))


def test_nan_in_state0_names_state0_and_row(kern, data):
    """A NaN in state0['c'] row 1 raises naming state0, c and row 1."""
    params, x, state0, _, _ = data
    s0 = {k: v.copy() for k, v in state0.items()}
    s0["c"][1, 0] = np.nan
    with pytest.raises(rc.NonFiniteError) as info:
        kern.forward(params, x, s0, check_finite=True)
    assert_mentions(str(info.value), r"state0", r"\bc\b", r"row 1\b")


def test_without_check_finite_nan_propagates_quietly(kern, data):
    """Without check_finite a NaN at (3, 1) reaches only row 1 from step 3; nothing raises."""
    params, x, state0, dy, ds = data
    bad = x.copy()
    bad[3, 1, 0] = np.nan
    res = kern.forward(params, bad, state0)
    assert np.isnan(res.outputs[3:, 1]).all()
    assert np.isfinite(res.outputs[:3]).all() and np.isfinite(res.outputs[:, 0]).all()
    g = kern.backward(res, dy, ds)
    assert np.isnan(g.x[:, 1]).any() and np.isfinite(g.x[:, 0]).all()
    y, _ = kern.infer(params, bad, state0)
    np.testing.assert_array_equal(y, res.outputs)


def test_check_finite_passes_finite_runs_unchanged(kern, data):
    """check_finite=True on finite data raises nothing and changes no result."""
    params, x, state0, dy, ds = data
    res = kern.forward(params, x, state0, check_finite=True)
    ref = kern.forward(params, x, state0)
    assert_all_equal(res, ref)
    assert_all_equal(kern.backward(res, dy, ds, check_finite=True), kern.backward(ref, dy, ds))


def test_nan_in_d_outputs_names_d_outputs_step_and_row(kern, data):
    """A NaN in d_outputs at t=2, row 1 raises on backward naming d_outputs, step 2, row 1."""
    params, x, state0, dy, ds = data
    res = kern.forward(params, x, state0)
    bad = dy.copy()
    bad[2, 1, 0] = np.nan
    with pytest.raises(rc.NonFiniteError) as info:
        kern.backward(res, bad, ds, check_finite=True)
    assert_mentions(str(info.value), r"d_outputs", r"step 2\b", r"row 1\b")


def _nan_beyond(arr, lengths):
    """A copy of a (T, B, n) array with NaN in every padded step of each row."""
    bad = arr.copy()
    for b, n in enumerate(lengths):
        bad[n:, b] = np.nan
    return bad


def test_nan_in_padding_is_not_read(kern, data):
    """NaN in x or d_outputs at t >= lengths[b] (padding the kernel ignores) changes no
    result and is no error for check_finite; a NaN inside a row's length still is."""
    params, x, state0, dy, ds = data
    lengths = np.array([T, 2])
    res = kern.forward(params, _nan_beyond(x, lengths), state0, lengths, check_finite=True)
    clean = kern.forward(params, x, state0, lengths)
    assert_all_equal(res, clean)
    g = kern.backward(res, _nan_beyond(dy, lengths), ds, check_finite=True)
    assert_all_equal(g, kern.backward(clean, dy, ds))
    bad = x.copy()
    bad[1, 1, 0] = np.nan
    with pytest.raises(rc.NonFiniteError, match=r"\bx\b.*step 1, batch row 1"):
        kern.forward(params, bad, state0, lengths, check_finite=True)
    bad = dy.copy()
    bad[1, 1, 0] = np.nan
    with pytest.raises(rc.NonFiniteError, match=r"d_outputs.*step 1, batch row 1"):
        kern.backward(res, bad, ds, check_finite=True)


def test_nan_in_d_states_names_d_states_and_row(kern, data):
    """A NaN in d_states['h'] row 1 raises on backward naming d_states, h and row 1."""
    params, x, state0, dy, ds = data
    res = kern.forward(params, x, state0)
    bad = {k: v.copy() for k, v in ds.items()}
    bad["h"][1, 3] = np.inf
    with pytest.raises(rc.NonFiniteError) as info:
        kern.backward(res, dy, bad, check_finite=True)
    assert_mentions(str(info.value), r"d_states", r"\bh\b", r"row 1\b")


# ================================================================ E. sizes that cannot run

def test_T_at_or_above_2_to_the_31_is_refused(kern, data):
    """T = 2**31 does not fit a C int: ValueError naming x (zero-stride view, no memory)."""
    params = data[0]
    x = np.broadcast_to(np.zeros(I), (2**31, 2, I))
    with pytest.raises(ValueError) as info:
        kern.forward(params, x)
    assert_mentions(message(info.value), r"\bx\b|T")


def test_overflowing_workspace_is_refused_before_allocating(kern, data):
    """T=2**31-1, B=2**24 needs ~8e18 tape bytes: ValueError before any allocation."""
    params = data[0]
    x = np.broadcast_to(np.zeros(I), (2**31 - 1, 2**24, I))
    with pytest.raises(ValueError) as info:
        kern.forward(params, x)
    assert_mentions(message(info.value), r"workspace|overflow|too (large|big)|\bx\b|T\*B")
