"""Mistakes a newcomer makes with other libraries' habits get this package's advice, not
numpy's or Python's text: numpy/math functions, slicing, float() and conditions on a
cell's vector name the cell's line and what to use; History.plot takes a file name;
an optimizer given a parameter tree says where parameters go."""
import math
import os

import numpy as np
import pytest

import rnncompiler as rc
from rnncompiler import models as rm

MISTAKES = [   # (label, the expression on the cell's line, what the error must advise)
    ("np.tanh", lambda h: np.tanh(h), r"np\.tanh .*use rc\.tanh"),
    ("np.exp", lambda h: np.exp(h), r"np\.exp .*use rc\.exp"),
    ("np.log", lambda h: np.log(h), r"np\.log .*use rc\.log"),
    ("np.maximum", lambda h: np.maximum(h, 0.0), r"np\.maximum .*rc\.relu"),
    ("np.concatenate", lambda h: np.concatenate([h, h]), r"use rc\.concat"),
    ("np.dot", lambda h: np.dot(h, h), r"p\.linear"),
    ("np.sin", lambda h: np.sin(h), r"rc\.elementwise\(lambda u: sympy\.sin\(u\), v\)"),
    ("array", lambda h: np.ones(3) * h, r"numpy array cannot enter a cell"),
    ("math.exp", lambda h: math.exp(h), r"math\.exp .*use rc\.exp"),
    ("math.tanh", lambda h: math.tanh(h), r"math\.tanh .*use rc\.tanh"),
    ("index", lambda h: h[0], r"indexing a vector .*not supported.*v\[0:1\].*rc\.split"),
    ("float", lambda h: float(h), r"float\(\) needs a number"),
    ("int", lambda h: int(h), r"int\(\) needs a number"),
    ("range", lambda h: range(h), r"an integer .* needs a number"),
    ("if", lambda h: 1 if h > 0 else 0, r"cannot be compared.*Piecewise"),
    ("==", lambda h: h == 0, r"cannot be compared"),
    ("iter", lambda h: sum(h), r"cannot be iterated.*rc\.sum"),
    ("len", lambda h: len(h), r"len\(v\).*H"),
    ("@", lambda h: h @ h, r"p\.linear"),
]


@pytest.mark.parametrize("label, mistake, advice", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_foreign_use_of_a_vector_names_the_line_and_the_fix(label, mistake, advice):
    line = mistake.__code__.co_firstlineno
    with pytest.raises(rc.CellError, match=r"test_advice\.py:%d: .*%s" % (line, advice)):
        @rc.cell(states=("h",))
        def bad(x, h, p):
            mistake(h)
            return {"h": rc.tanh(p.linear("W", rc.concat(h, x)))}


def test_sympy_numbers_on_the_left_of_a_vector_work_as_numbers():
    """Rational(1, 2) * v: sympy asks the vector to become sympy (by float() where it has
    no _sympy_), which must leave the product to the vector, not raise."""
    import sympy

    @rc.cell(states=("h",))
    def halves(x, h, p):
        a = p.linear("W", rc.concat(h, x))
        return {"h": sympy.Rational(1, 2) * rc.tanh(a) + sympy.pi / 8 * h - sympy.Integer(1) / (2 + a * a)}

    @rc.cell(states=("h",))
    def floats(x, h, p):
        a = p.linear("W", rc.concat(h, x))
        return {"h": 0.5 * rc.tanh(a) + (3.141592653589793 / 8) * h - 1 / (2 + a * a)}
    ka = rc.compile(halves, input_size=2, hidden_size=3, dtype="float64")
    kb = rc.compile(floats, input_size=2, hidden_size=3, dtype="float64")
    x = np.random.default_rng(0).standard_normal((4, 2, 2))
    p = ka.init_params()
    np.testing.assert_allclose(ka.infer(p, x)[0], kb.infer(p, x)[0], rtol=1e-14)


def test_numpy_scalars_still_work_as_numbers_in_a_cell():
    @rc.cell(states=("h",))
    def scaled(x, h, p):
        z = np.float64(0.5) * p.linear("W", rc.concat(h, x)) + np.float32(0.25)
        return {"h": rc.tanh(z / np.int64(2) - h * np.float64(0.125))}

    @rc.cell(states=("h",))
    def plain(x, h, p):
        z = 0.5 * p.linear("W", rc.concat(h, x)) + 0.25
        return {"h": rc.tanh(z / 2 - h * 0.125)}
    ka = rc.compile(scaled, input_size=2, hidden_size=3, dtype="float64")
    kb = rc.compile(plain, input_size=2, hidden_size=3, dtype="float64")
    x = np.random.default_rng(0).standard_normal((4, 2, 2))
    p = ka.init_params()
    np.testing.assert_array_equal(ka.infer(p, x)[0], kb.infer(p, x)[0])


def test_history_plot_saves_to_a_file_name(tmp_path):
    pytest.importorskip("matplotlib")
    hist = rm.History(losses=[1.0, 0.8, 0.5, 0.4])
    ax = hist.plot(str(tmp_path / "loss.png"), label="run")
    assert os.path.getsize(tmp_path / "loss.png") > 1000
    assert ax.get_legend().get_texts()[0].get_text() == "run"
    hist.plot(tmp_path / "again.png")                        # a pathlib.Path as well
    assert (tmp_path / "again.png").exists()
    with pytest.raises(TypeError, match="ax: expected a matplotlib Axes or a file name"):
        hist.plot(3)


@pytest.mark.parametrize("make", [
    lambda p: rm.Adam(p, lr=0.01), lambda p: rm.SGD(p, 0.1), lambda p: rm.AdamW(p),
    lambda p: rm.RMSProp(list(p.values()), lr=0.01)], ids=["Adam", "SGD", "AdamW", "RMSProp"])
def test_an_optimizer_given_parameters_says_where_they_go(make):
    params = {"W": np.zeros((2, 2))}
    with pytest.raises(TypeError, match=r"first argument is the learning rate.*"
                       r"opt\.step\(params, grads\)"):
        make(params)
