"""Batch-first data (B, T, ...) on the kernel and the models: the same numbers as the
time-major run, transposed, exactly; a layout mismatch is an error naming the argument;
and `step` refuses a states dict that lacks a state instead of restarting it at zero."""
import numpy as np
import pytest

import rnncompiler as rc
from rnncompiler import cells
from rnncompiler import models as rm

T, B, I, H = 6, 3, 2, 4


@pytest.fixture(scope="module")
def lstm64():
    return rc.compile(cells.lstm, input_size=I, hidden_size=H, dtype="float64")


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, I))
    state0 = {"h": rng.standard_normal((B, H)), "c": rng.standard_normal((B, H))}
    dy = rng.standard_normal((T, B, H))
    ds = {"c": rng.standard_normal((B, H))}
    return x, state0, dy, ds


def test_kernel_batch_first_is_the_time_major_run_transposed_exactly(lstm64):
    kern, p = lstm64, lstm64.init_params(seed=1)
    x, state0, dy, ds = _data()
    lengths = np.array([6, 0, 4])
    tm = kern.forward(p, x, state0, lengths)
    bf = kern.forward(p, x.swapaxes(0, 1).copy(), state0, lengths, batch_first=True)
    assert bf.outputs.shape == (B, T, H)
    np.testing.assert_array_equal(bf.outputs, tm.outputs.swapaxes(0, 1))
    for s in tm.states:
        np.testing.assert_array_equal(bf.states[s], tm.states[s])
    g_tm = kern.backward(tm, dy, ds, state_grads=True)
    g_bf = kern.backward(bf, dy.swapaxes(0, 1), ds, state_grads=True)
    assert g_bf.x.shape == (B, T, I) and g_bf.states["c"].shape == (B, T, H)
    np.testing.assert_array_equal(g_bf.x, g_tm.x.swapaxes(0, 1))
    for name in g_tm.params:
        np.testing.assert_array_equal(g_bf.params[name], g_tm.params[name])
    for s in g_tm.state0:
        np.testing.assert_array_equal(g_bf.state0[s], g_tm.state0[s])
        np.testing.assert_array_equal(g_bf.states[s], g_tm.states[s].swapaxes(0, 1))
    y_bf, st = kern.infer(p, x.swapaxes(0, 1), state0, lengths, batch_first=True)
    np.testing.assert_array_equal(y_bf, tm.outputs.swapaxes(0, 1))
    np.testing.assert_array_equal(st["h"], tm.states["h"])


def test_kernel_batch_first_errors_name_the_layout(lstm64):
    kern, p = lstm64, lstm64.init_params()
    x, _, dy, _ = _data()
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T, 2\)"):
        kern.forward(p, np.zeros((B, T, I + 1)), batch_first=True)
    res = kern.forward(p, x.swapaxes(0, 1), batch_first=True)
    with pytest.raises(ValueError, match=r"d_outputs: expected shape \(3, 6, 4\) \(batch_first"):
        kern.backward(res, dy)                          # a time-major gradient
    np.testing.assert_array_equal(kern.backward(res, dy.swapaxes(0, 1)).x.shape, (B, T, I))


def test_step_refuses_states_missing_a_state(lstm64):
    kern, p = lstm64, lstm64.init_params()
    x, state0, _, _ = _data()
    with pytest.raises(KeyError, match=r"missing state 'c'.*states=None for the first step"):
        kern.step(p, x[0], {"h": state0["h"]})
    ref = rc.reference(cells.lstm, input_size=I, hidden_size=H)
    with pytest.raises(KeyError, match=r"missing state 'c'"):
        ref.step(p, x[0], {"h": state0["h"]})
    # None is the first step: every state at zero, as forward from a zero state
    y0, s1 = kern.step(p, x[0], None)
    np.testing.assert_allclose(y0, kern.forward(p, x[:1]).outputs[0], rtol=0, atol=0)
    y1, _ = kern.step(p, x[1], s1)
    np.testing.assert_allclose(y1, kern.forward(p, x[:2]).outputs[1], rtol=1e-12, atol=1e-12)


def test_rnn_batch_first_equals_time_major_transposed():
    kw = dict(num_layers=2, bidirectional=True, dtype="float64")
    tm, bf = rm.RNN(cells.lstm, I, H, **kw), rm.RNN(cells.lstm, I, H, batch_first=True, **kw)
    p = tm.init(seed=2)
    x, _, _, _ = _data()
    lengths = np.array([5, 6, 2])
    dy = np.random.default_rng(3).standard_normal((T, B, 2 * H))
    a, b = tm.forward(p, x, lengths), bf.forward(p, x.swapaxes(0, 1), lengths)
    np.testing.assert_array_equal(b.outputs, a.outputs.swapaxes(0, 1))
    ga, gb = tm.backward(a, dy), bf.backward(b, dy.swapaxes(0, 1))
    np.testing.assert_array_equal(gb.x, ga.x.swapaxes(0, 1))
    for k, v in rm.flatten(ga.params).items():
        np.testing.assert_array_equal(rm.flatten(gb.params)[k], v)
    np.testing.assert_array_equal(bf.infer(p, x.swapaxes(0, 1), lengths)[0],
                                  a.outputs.swapaxes(0, 1))
    with pytest.raises(ValueError, match=r"d_outputs: expected shape \(3, 6, 8\)"):
        bf.backward(b, dy)


@pytest.mark.parametrize("readout", ["steps", "last"])
def test_sequence_model_batch_first_loss_and_gradients_match(readout):
    kw = dict(vocab_size=5, output_size=5, readout=readout, dtype="float64")
    tm = rm.SequenceModel(cells.gru, H, **kw)
    bf = rm.SequenceModel(cells.gru, H, batch_first=True, **kw)
    p = tm.init(seed=4)
    rng = np.random.default_rng(5)
    ids = rng.integers(0, 5, (T, B))
    targets = rng.integers(0, 5, (T, B) if readout == "steps" else (B,))
    lengths = np.array([6, 3, 1])
    tgt_bf = targets.T if readout == "steps" else targets
    la, ga = tm.loss_and_grads(p, ids, targets, lengths)
    lb, gb = bf.loss_and_grads(p, ids.T, tgt_bf, lengths)
    assert la == lb
    for k, v in rm.flatten(ga).items():
        np.testing.assert_array_equal(rm.flatten(gb)[k], v)
    pa, pb = tm.predict(p, ids, lengths), bf.predict(p, ids.T, lengths)
    np.testing.assert_array_equal(pb, pa.swapaxes(0, 1) if readout == "steps" else pa)


def test_batch_first_vector_model_input_gradient_and_sampling():
    tm = rm.SequenceModel(cells.lstm, H, input_size=I, output_size=2, loss="mse",
                          dtype="float64")
    bf = rm.SequenceModel(cells.lstm, H, input_size=I, output_size=2, loss="mse",
                          dtype="float64", batch_first=True)
    p = tm.init(seed=6)
    x, _, _, _ = _data()
    d = np.random.default_rng(7).standard_normal((T, B, 2))
    ga = tm.backward(tm.forward(p, x), d)
    gb = bf.backward(bf.forward(p, x.swapaxes(0, 1)), d.swapaxes(0, 1))
    np.testing.assert_array_equal(gb.x, ga.x.swapaxes(0, 1))
    with pytest.raises(ValueError, match=r"x: expected shape \(B, T, 2\)"):
        bf.forward(p, np.zeros((T, B, 3)))
    lm_tm = rm.SequenceModel(cells.gru, H, vocab_size=5, output_size=5, dtype="float64")
    lm_bf = rm.SequenceModel(cells.gru, H, vocab_size=5, output_size=5, dtype="float64",
                             batch_first=True)
    q = lm_tm.init(seed=8)
    prompt = np.array([[1, 2, 3], [4, 0, 2]])
    np.testing.assert_array_equal(rm.sample(lm_bf, q, prompt, 4, temperature=0),
                                  rm.sample(lm_tm, q, prompt, 4, temperature=0))
    with pytest.raises(ValueError, match="batch_first=False"):
        rm.TBPTT(lm_bf, 3)
