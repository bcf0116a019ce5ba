"""With several threads, forward and backward split the batch into slices run at once;
the results are the single-thread ones."""
import numpy as np
import pytest

import rnncompiler as rc
from rnncompiler.runtime import parallel

from cells import lstm, two_sizes


@pytest.fixture
def threads():
    """Restores the thread setting, unset included."""
    from rnncompiler.runtime import threads as setting
    before = setting._num_threads
    yield
    setting._num_threads = before


def run(kern, n, params, x, state0, lengths, dy, ds):
    rc.set_num_threads(n)
    res = kern.forward(params, x, state0, lengths, check_finite=True)
    g = kern.backward(res, dy, ds, state_grads=True, check_finite=True)
    y, st = kern.infer(params, x, state0, lengths)
    return res, g, y, st


@pytest.mark.parametrize("cell,sizes", [(lstm, None), (two_sizes, {"P": 3, "O": 2})],
                         ids=["lstm", "two_sizes"])
def test_split_batches_give_the_single_thread_results(threads, cell, sizes):
    kern = rc.compile(cell, 5, 128, "float64", sizes=sizes)
    T, B = 9, 35
    assert parallel.spans(B, 128, 3) == [(0, 11), (11, 23), (23, 35)]
    rng = np.random.default_rng(0)
    params = kern.init_params(seed=2)
    x = rng.standard_normal((T, B, 5))
    state0 = {s: rng.standard_normal((B, n)) for s, n in kern.state_sizes.items()}
    lengths = rng.integers(0, T + 1, B)
    dy = rng.standard_normal((T, B, kern.output_size))
    ds = {s: rng.standard_normal((B, n)) for s, n in kern.state_sizes.items()}
    one, three = run(kern, 1, params, x, state0, lengths, dy, ds), run(kern, 3, params, x,
                                                                     state0, lengths, dy, ds)
    assert one[0]._parts is None and len(three[0]._parts) == 3
    # a row's sums may be ordered differently within a slice (register blocks of rows):
    # equal up to rounding
    close = dict(rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(three[0].outputs, one[0].outputs, **close)
    np.testing.assert_allclose(three[2], one[2], **close)
    for s in kern.state_sizes:
        np.testing.assert_allclose(three[0].states[s], one[0].states[s], **close)
        np.testing.assert_allclose(three[3][s], one[3][s], **close)
        np.testing.assert_allclose(three[1].state0[s], one[1].state0[s], rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(three[1].states[s], one[1].states[s], rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(three[1].x, one[1].x, rtol=1e-13, atol=1e-14)
    for k in params:   # sums of the slices' gradients: the same up to rounding
        np.testing.assert_allclose(three[1].params[k], one[1].params[k], rtol=1e-11, atol=1e-12)


def test_small_batches_run_on_one_thread():
    assert parallel.spans(32, 32, 2) is None          # 32 x 32 < MIN_WORK
    assert parallel.spans(12, 512, 4) is None         # slices narrower than MIN_ROWS
    assert parallel.spans(32, 128, 1) is None
    assert parallel.spans(32, 128, 2) == [(0, 16), (16, 32)]


def test_check_finite_names_the_row_of_the_whole_batch(threads):
    kern = rc.compile(lstm, 5, 128, "float64")
    rc.set_num_threads(2)
    x = np.zeros((4, 32, 5))
    x[2, 20, 1] = np.inf
    with pytest.raises(rc.NonFiniteError, match="x is not finite .* at step 2, batch row 20"):
        kern.forward(kern.init_params(seed=0), x, check_finite=True)
