"""kern.stream(params): a sequence one sample at a time over weights packed once gives what
kern.infer gives for the whole sequence, for plain cells, cells with context inputs and
masks (at their expectations), and several inputs; bad samples are named."""
import numpy as np
import pytest

import rnncompiler as rc
from test_inputs import speaker_lstm, two_inputs
from test_masks import zoneout_lstm

T, I, H, E = 9, 3, 4, 2


def _run(kern, params, x, state0=None, **kw):
    s = kern.stream(params, state0, **kw)
    return np.stack([s.step(x[t]) for t in range(len(x))]), s


@pytest.mark.parametrize("cell", [rc.cells.lstm, rc.cells.gru, rc.cells.peephole_lstm, zoneout_lstm])
def test_a_stream_is_the_sequence_run_at_once(cell):
    kern = rc.compile(cell, input_size=I, hidden_size=H, dtype="float64")
    params, rng = kern.init_params(seed=1), np.random.default_rng(0)
    x = rng.standard_normal((T, I))
    state0 = {s: rng.standard_normal(n) for s, n in kern.state_sizes.items()}
    y, s = _run(kern, params, x, state0)
    y_ref, st = kern.infer(params, x[:, None], state0)
    np.testing.assert_allclose(y, y_ref[:, 0], rtol=1e-12, atol=1e-14)
    for name in kern.state_sizes:
        np.testing.assert_allclose(s.states[name], st[name][0], rtol=1e-12, atol=1e-14)
    s.reset(state0)                         # a new sequence: the same again
    np.testing.assert_allclose(s.step(x[0]), y[0], rtol=0, atol=0)


def test_a_stream_with_context_and_several_inputs():
    kern = rc.compile(two_inputs, input_size=I, hidden_size=H, sizes={"E": E}, dtype="float64")
    params, rng = kern.init_params(seed=2), np.random.default_rng(1)
    x, e = rng.standard_normal((T, I + H)), rng.standard_normal(E)
    y, _ = _run(kern, params, x, context={"e": e})
    y_ref, _ = kern.infer(params, x[:, None], context={"e": e})
    np.testing.assert_allclose(y, y_ref[:, 0], rtol=1e-12, atol=1e-14)
    k2 = rc.compile(speaker_lstm, input_size=I, hidden_size=H, sizes={"E": E}, dtype="float64")
    with pytest.raises(ValueError, match="context"):
        k2.stream(k2.init_params())


def test_bad_samples_are_named():
    kern = rc.compile(rc.cells.lstm, input_size=I, hidden_size=H, dtype="float32")
    s = kern.stream(kern.init_params())
    with pytest.raises(ValueError, match=r"x_t: expected shape \(3,\) or \(1, 3\)"):
        s.step(np.zeros(4))
    with pytest.raises(TypeError, match="x_t"):
        s.step(np.zeros(3, complex))
    with pytest.raises(KeyError, match="params"):
        kern.stream({})
