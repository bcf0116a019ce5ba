"""rc.gradient_flow: ‖dL/ds_t‖ per step and state, from backward(state_grads=True)."""
import numpy as np
import pytest

import rnncompiler as rc
from rnncompiler.diagnostics import last_step_seed

from cells import elman, lstm


def test_norms_are_those_of_the_state_gradients():
    kern = rc.compile(lstm, 3, 4, "float64")
    params = kern.init_params(seed=0)
    x = np.random.default_rng(0).standard_normal((9, 3, 3))
    lengths = [9, 4, 0]
    flow = rc.gradient_flow(kern, params, x, lengths=lengths)
    seed = last_step_seed(4, 9, 3, lengths)
    assert seed[8, 0].all() and seed[3, 1].all() and not seed[:, 2].any()
    assert seed.sum() == 8
    g = kern.backward(kern.forward(params, x, lengths=lengths), seed, state_grads=True)
    for s in ("h", "c"):
        np.testing.assert_allclose(flow.per_row[s], np.linalg.norm(g.states[s], axis=2))
        np.testing.assert_allclose(flow.norms[s], np.linalg.norm(g.states[s], axis=(1, 2)))
        assert flow.norms[s].shape == (9,)
    assert "h " in str(flow) and "c " in str(flow)


def test_elman_gradients_vanish_where_a_remembering_lstm_keeps_them():
    """The classic picture: with small recurrent weights ‖dL/dh_t‖ of an Elman network
    decays geometrically backwards in time; an LSTM whose forget gate is open keeps ‖dL/dc_t‖."""
    T = 40
    x = np.random.default_rng(1).standard_normal((T, 2, 3))
    ke = rc.compile(elman, 3, 4, "float64")
    pe = ke.init_params(seed=1)
    pe["W"] *= 0.5
    assert rc.gradient_flow(ke, pe, x).ratio() < 1e-6
    kl = rc.compile(lstm, 3, 4, "float64")
    pl = kl.init_params(seed=1)
    pl["b_f"][:] = 6.0          # forget gate ~ 1: the cell state carries the gradient
    assert rc.gradient_flow(kl, pl, x).ratio("c") > 0.5


def test_plot_draws_one_line_per_state():
    plt = pytest.importorskip("matplotlib.pyplot")
    kern = rc.compile(lstm, 3, 4, "float64")
    flow = rc.gradient_flow(kern, kern.init_params(seed=0), np.ones((5, 1, 3)))
    ax = flow.plot(label="lstm")
    assert [ln.get_label() for ln in ax.get_lines()] == ["lstm h", "lstm c"]
    plt.close("all")
