"""Cells whose states are a list built at run time: def cell(x, *states, p)."""
import importlib.util
import os

import numpy as np
import pytest

import rnncompiler as rc

HERE = os.path.dirname(os.path.abspath(__file__))


def _example(name="stacked_cell"):
    path = os.path.join(HERE, os.pardir, "examples", name + ".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def shift_register(k):
    """The last k inputs (of size I) as k states: s0[t] = x[t], s_j[t] = s_{j-1}[t-1]."""
    names = ["s%d" % j for j in range(k)]

    @rc.cell(states={n: "I" for n in names})
    def delays(x, *s, p):
        new = {"s0": x * 1.0}
        new.update({"s%d" % j: s[j - 1] * 1.0 for j in range(1, k)})
        mixed = rc.tanh(p.linear("W", rc.concat(x, *s), size="H"))
        return new, mixed
    return delays


def test_a_state_list_traces_compiles_and_gradchecks():
    cell = shift_register(3)
    assert list(cell.states) == ["s0", "s1", "s2"]
    report = rc.gradcheck(cell, input_size=2, hidden_size=3, T=5, B=2, lengths=[5, 3])
    assert report.ok, report


def test_a_state_list_runs_as_its_equations_say():
    """The shift register's states after T steps are the last three inputs."""
    kern = rc.compile(shift_register(3), 2, 3, "float64")
    x = np.random.default_rng(0).standard_normal((6, 2, 2))
    res = kern.forward(kern.init_params(seed=0), x)
    for j in range(3):
        assert np.array_equal(res.states["s%d" % j], x[5 - j])


def test_a_stacked_lstm_as_one_cell_matches_torch():
    pytest.importorskip("torch")
    assert _example().largest_error_against_torch(layers=3, input_size=3, hidden_size=4) < 1e-9


def test_a_cell_can_have_as_many_states_as_it_builds():
    cell = _example().stacked_lstm(5)
    assert len(cell.states) == 10
    kern = rc.compile(cell, 2, 3)
    assert set(kern.state_sizes) == {"h%d" % l for l in range(5)} | {"c%d" % l for l in range(5)}


@pytest.mark.parametrize("source", [
    "def bad(x, *states):\n    return {}",                # no p
    "def bad(*states, p):\n    return {}",                # no x
    "def bad(x, *states, p, q):\n    return {}",          # two required keywords
    "def bad(x, y, *states, p):\n    return {}",          # two before *states
])
def test_a_state_list_signature_is_checked(source):
    scope = {}
    exec(compile(source, "cells_file.py", "exec"), scope)
    with pytest.raises(rc.CellError, match=r"def bad\(x, \*states, p\)"):
        rc.cell(states=("h",))(scope["bad"])


def test_a_fixed_signature_of_the_wrong_length_says_both_forms():
    def two(x, h, c, p):
        return {"h": h}
    with pytest.raises(rc.CellError, match=r"or x, \*states, p"):
        rc.cell(states=("h",))(two)


def test_values_in_a_state_list_cell_keep_their_names():
    kern = rc.compile(_example().stacked_lstm(2), 3, 4)
    forward = [lhs for lhs, _, _ in kern.equations().forward]
    assert "c_new[t]" not in forward          # c_new becomes the state c1
    assert {"i[t]", "f[t]", "g[t]", "o[t]"} <= set(forward)    # the last layer's gates


@pytest.mark.parametrize("delays", [2, 4])
def test_a_time_delay_network_is_a_causal_convolution(delays):
    """The TDNN cell (a shift register of input frames in one state, read through a slice)
    against torch.nn.Conv1d over [state0; x], float64, every gradient, ragged batch."""
    pytest.importorskip("torch")
    assert _example("tdnn").largest_error_against_torch(delays) < 1e-9


def test_a_time_delay_network_gradchecks_with_lengths():
    cell = _example("tdnn").make_tdnn(3)
    assert rc.gradcheck(cell, input_size=2, hidden_size=3, T=5, B=3, lengths=[5, 0, 2]).ok
    assert rc.compile(cell, 2, 3).recurrence()["r"].kind == "linear"   # units move along


def test_a_time_delay_network_needs_two_frames():
    with pytest.raises(ValueError, match="delays: expected an int >= 2"):
        _example("tdnn").make_tdnn(1)
