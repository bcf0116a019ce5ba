"""rc.step(): the step index in a cell, carried as a state so that ragged batches and
truncated BPTT keep the clock right; the clockwork RNN built on it against PyTorch."""
import importlib.util
import os

import numpy as np
import pytest
import sympy

import rnncompiler as rc

HERE = os.path.dirname(os.path.abspath(__file__))


def _clockwork():
    path = os.path.join(HERE, os.pardir, "examples", "clockwork.py")
    spec = importlib.util.spec_from_file_location("clockwork", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@rc.cell(states=("h",))
def counter(x, h, p):
    """h[t] = t + the input's first unit, read through rc.step()."""
    return {"h": h * 0 + rc.step() + x * 0}


def test_the_step_index_counts_from_state0_and_stops_past_a_length():
    kern = rc.compile(counter, 1, 1, "float64")
    assert kern.state_sizes == {"h": 1, "step": 1}
    res = kern.forward({}, np.zeros((5, 2, 1)), {"h": np.zeros((2, 1)), "step": np.array([[0.0], [10.0]])},
                       lengths=[5, 3])
    assert res.outputs[:, 0, 0].tolist() == [0, 1, 2, 3, 4]
    assert res.outputs[:, 1, 0].tolist() == [10, 11, 12, 0, 0]
    assert res.states["step"][:, 0].tolist() == [5, 13]


def test_truncated_bptt_keeps_the_clock():
    """Two chunks with the states carried compute what one run over the whole does."""
    cw = _clockwork()
    kern = rc.compile(cw.make_clockwork(), 2, 8, "float64", sizes={"M": 2})
    rng = np.random.default_rng(0)
    params, x = kern.init_params(seed=0), rng.standard_normal((11, 2, 2))
    whole = kern.forward(params, x)
    first = kern.forward(params, x[:5])
    second = kern.forward(params, x[5:], first.states)
    assert np.array_equal(np.concatenate([first.outputs, second.outputs]), whole.outputs)
    assert second.states["step"][:, 0].tolist() == [11, 11]


def test_a_clockwork_rnn_gradchecks_with_lengths():
    cell = _clockwork().make_clockwork()
    assert rc.gradcheck(cell, input_size=2, hidden_size=8, sizes={"M": 2}, T=9, B=3,
                        lengths=[9, 0, 6]).ok


def test_a_clockwork_rnn_matches_its_equations_in_torch():
    pytest.importorskip("torch")
    assert _clockwork().largest_error_against_torch() < 1e-9


def test_the_step_shows_in_the_equations():
    text = str(rc.compile(counter, 1, 1).equations())
    assert "step[t] = step[t-1] + 1" in text


def test_rc_step_outside_a_cell_is_refused():
    with pytest.raises(rc.CellError, match=r"rc.step\(\) is the index of the step inside a cell"):
        rc.step()


def test_a_cell_with_its_own_step_state_is_told_to_rename_it():
    with pytest.raises(rc.CellError, match="rename its own state 'step'"):
        @rc.cell(states=("step",))
        def clash(x, step, p):
            return {"step": step + rc.step()}


def test_the_step_index_is_not_a_size():
    with pytest.raises(rc.CellError, match="the step index rc.step"):
        @rc.cell(states=("h",))
        def sized(x, h, p):
            return {"h": h + p.linear("W", x, size=rc.step())}


def test_the_clock_can_gate_with_elementwise_math():
    """A gate open every third step: 1[t mod 3 = 0], derivative 0 in t."""
    @rc.cell(states=("h",))
    def every_third(x, h, p):
        tick = rc.elementwise(lambda t: sympy.Piecewise((1, sympy.Eq(sympy.Mod(t, 3), 0)), (0, True)),
                              rc.step())
        return {"h": tick * rc.tanh(p.linear("W", x)) + (1 - tick) * h}
    kern = rc.compile(every_third, 1, 1, "float64")
    res = kern.forward({"W": np.ones((1, 1))}, np.ones((7, 1, 1)))
    changed = np.diff(np.concatenate([[[0.0]], res.outputs[:, 0]]), axis=0)[:, 0] != 0
    assert changed.tolist() == [True, False, False, False, False, False, False]
    assert rc.gradcheck(every_third, input_size=1, hidden_size=2, T=7).ok
