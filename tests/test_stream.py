"""kern.stream(params): a sequence one sample at a time over weights packed once gives what
kern.infer gives for the whole sequence, for plain cells, cells with context inputs and
masks (at their expectations), and several inputs; a block of samples (`steps`) is
kern.infer from the stream's state; bad samples are named."""
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


@pytest.mark.parametrize("cell", [rc.cells.gru, zoneout_lstm, two_inputs])
def test_blocks_of_samples_are_infer_from_the_stream_s_state(cell):
    """steps over blocks of 1, 5 and 3 samples, mixed with step, from a given state: each
    block the bits of kern.infer from the state the stream had, and the whole the samples
    one by one (to rounding: a kernel without a batch-1 unit hoists a block's products);
    masks at their expectations and a context in every row of a block."""
    sizes = {"E": E} if cell is two_inputs else None
    kern = rc.compile(cell, input_size=I, hidden_size=H, sizes=sizes, dtype="float64")
    params, rng = kern.init_params(seed=3), np.random.default_rng(2)
    context = {"e": rng.standard_normal(E)} if cell is two_inputs else None
    x = rng.standard_normal((10, kern.input_size))
    state0 = {s: rng.standard_normal(n) for s, n in kern.state_sizes.items()}
    y, one = _run(kern, params, x, state0, context=context)
    s = kern.stream(params, state0, context=context)
    got = []
    for t0, t1 in ((0, 1), (1, 6), (6, 7), (7, 10)):
        before = {k: v[None] for k, v in s.states.items()}
        stepped = t0 == 6                  # step's sample: infer's to rounding
        block = s.step(x[t0])[None] if stepped else s.steps(x[t0:t1])
        want, after = kern.infer(params, x[t0:t1, None], before, context=context)
        check = (lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)) \
            if stepped else np.testing.assert_array_equal
        check(block, want[:, 0])
        for name in kern.state_sizes:
            check(s.states[name], after[name][0])
        got.append(block)
    np.testing.assert_allclose(np.concatenate(got), y, rtol=1e-12, atol=1e-14)
    for name in kern.state_sizes:
        np.testing.assert_allclose(s.states[name], one.states[name], rtol=1e-12, atol=1e-14)
    assert s.steps(x[:2].astype(np.float32)).dtype == np.float64


def test_bad_samples_are_named():
    kern = rc.compile(rc.cells.lstm, input_size=I, hidden_size=H, dtype="float32")
    s = kern.stream(kern.init_params())
    with pytest.raises(ValueError, match=r"x_t: expected shape \(3,\) or \(1, 3\)"):
        s.step(np.zeros(4))
    with pytest.raises(TypeError, match="x_t"):
        s.step(np.zeros(3, complex))
    with pytest.raises(KeyError, match="params"):
        kern.stream({})
    for bad in (np.zeros((2, 4)), np.zeros(3), np.zeros((0, 3))):
        with pytest.raises(ValueError, match=r"x: expected shape \(T, 3\) with 1 <= T"):
            s.steps(bad)
    with pytest.raises(TypeError, match="x"):
        s.steps(np.zeros((2, 3), complex))
