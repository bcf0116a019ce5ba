"""rc.compile(..., checkpoint=k): forward keeps the states every k steps, backward
recomputes each segment; outputs and states are the plain kernel's, the gradients agree
with its gradients to rounding."""
import pickle

import numpy as np
import pytest

import rnncompiler as rc

from cells import lstm, two_sizes

CASES = {"lstm": (lstm, None), "two_sizes": (two_sizes, {"P": 3, "O": 2})}


def kernels(name, k):
    cell, sizes = CASES[name]
    return (rc.compile(cell, 3, 4, "float64", sizes=sizes),
            rc.compile(cell, 3, 4, "float64", sizes=sizes, checkpoint=k))


@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("k", [1, 7, 64])
def test_checkpointed_results_equal_the_plain_kernel(name, k):
    plain, ck = kernels(name, k)
    rng = np.random.default_rng(k)
    T, B = 50, 5
    params = plain.init_params(seed=1)
    x = rng.standard_normal((T, B, 3))
    state0 = {s: rng.standard_normal((B, n)) for s, n in plain.state_sizes.items()}
    lengths = [T, 0, 7, 23, 49]
    dy = rng.standard_normal((T, B, plain.output_size))
    ds = {s: rng.standard_normal((B, n)) for s, n in plain.state_sizes.items()}
    a, b = plain.forward(params, x, state0, lengths), ck.forward(params, x, state0, lengths)
    np.testing.assert_array_equal(a.outputs, b.outputs)
    for s in a.states:
        np.testing.assert_array_equal(a.states[s], b.states[s])
    ga = plain.backward(a, dy, ds, state_grads=True)
    gb = ck.backward(b, dy, ds, state_grads=True)
    gb2 = ck.backward(b, dy, ds, state_grads=True)          # backward runs again
    for name_, v in ga.params.items():
        np.testing.assert_allclose(gb.params[name_], v, rtol=1e-12, atol=1e-13)
        np.testing.assert_array_equal(gb.params[name_], gb2.params[name_])
    np.testing.assert_allclose(gb.x, ga.x, rtol=1e-12, atol=1e-14)
    for s in state0:
        np.testing.assert_allclose(gb.state0[s], ga.state0[s], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(gb.states[s], ga.states[s], rtol=1e-12, atol=1e-14)


def test_checkpointed_gradients_match_finite_differences():
    _, ck = kernels("lstm", 3)
    report = rc.gradcheck(ck, T=11, B=3, lengths=[11, 4, 0], localize=False)
    assert report.ok, str(report)


def test_tape_memory_is_checkpoints_plus_one_segment():
    plain, ck = kernels("lstm", 10)
    T, B = 1000, 32
    full, seg = plain.tape_bytes(T, B), ck.tape_bytes(T, B)
    # kept: one (B, S) row per segment start; peak adds one segment's tape
    assert seg["kept"] == (T // 10) * B * 8 * 8
    assert seg["peak"] == seg["kept"] + plain.tape_bytes(10, B)["peak"]
    assert seg["peak"] < full["peak"] / 8
    assert "checkpoint=10" in ck.tape_plan(T, B)
    res = ck.forward(plain.init_params(seed=0), np.ones((30, 2, 3)))
    assert res._work is None and len(res._checkpoints) == 3


def test_checkpoint_survives_pickling_and_short_sequences_run_plain():
    _, ck = kernels("lstm", 5)
    assert pickle.loads(pickle.dumps(ck)).checkpoint == 5
    res = ck.forward(ck.init_params(seed=0), np.ones((4, 2, 3)))
    assert res._checkpoints is None and res._work is not None     # T <= k: one segment


def test_check_finite_in_checkpointed_runs():
    _, ck = kernels("lstm", 4)
    x = np.ones((9, 2, 3))
    x[6, 1, 0] = np.nan
    with pytest.raises(rc.NonFiniteError, match="x is not finite .* at step 6, batch row 1"):
        ck.forward(ck.init_params(seed=0), x, check_finite=True)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "4"])
def test_bad_checkpoint_is_refused(bad):
    with pytest.raises(ValueError, match="checkpoint: expected None or an int >= 1"):
        rc.compile(lstm, 3, 4, "float64", checkpoint=bad)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_checkpointed_gradients_differ_from_the_plain_ones_by_rounding_only(dtype):
    """The bound docs/getting-started.md states: outputs and final states are bitwise the
    plain kernel's; every gradient is within 64 ε of its largest entry (the parameter
    gradients, sums over all steps, are added segment by segment)."""
    plain = rc.compile(lstm, 8, 32, dtype)
    ck = rc.compile(lstm, 8, 32, dtype, checkpoint=10)
    rng = np.random.default_rng(0)
    T, B = 200, 4
    params = plain.init_params(seed=1)
    x = rng.standard_normal((T, B, 8))
    lengths = [T, 150, 37, 0]
    dy = rng.standard_normal((T, B, 32))
    a, b = plain.forward(params, x, lengths=lengths), ck.forward(params, x, lengths=lengths)
    assert a.outputs.tobytes() == b.outputs.tobytes()
    assert all(a.states[s].tobytes() == b.states[s].tobytes() for s in a.states)
    ga = plain.backward(a, dy, state_grads=True)
    gb = ck.backward(b, dy, state_grads=True)
    pairs = [(ga.params[n], gb.params[n]) for n in ga.params] + [(ga.x, gb.x)] + \
        [(ga.states[s], gb.states[s]) for s in ga.states]
    eps = np.finfo(dtype).eps
    for u, v in pairs:
        scale = float(np.max(np.abs(u)))
        assert float(np.max(np.abs(u.astype(np.float64) - v))) <= 64 * eps * scale
