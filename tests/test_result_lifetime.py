"""A ForwardResult's tape lives as long as any result referring to it: copies made with
copy.copy or dataclasses.replace keep it, deep copies and unpickled results carry their
own, and later forwards (in this thread or others) never write over it. Each test holds
only a copy, drops the original, runs other forwards that take workspaces from the
kernel's pool, and compares the copy's backward with that of a fresh forward."""
import copy
import dataclasses
import gc
import pickle
import threading

import numpy as np
import pytest

import rnncompiler as rc

from cells import lstm

T, B, I, H = 6, 3, 3, 5


@pytest.fixture(scope="module")
def kern():
    return rc.compile(lstm, I, H, "float64")


@pytest.fixture
def threads():
    """Restores the thread setting, unset included."""
    from rnncompiler.runtime import threads as setting
    before = setting._num_threads
    yield
    setting._num_threads = before


def data(kern, seed, T=T, B=B):
    """(params, x, dy) drawn from seed."""
    rng = np.random.default_rng(seed)
    return (kern.init_params(seed=seed), rng.standard_normal((T, B, kern.input_size)),
            rng.standard_normal((T, B, kern.output_size)))


def fresh_grads(kern, params, x, dy):
    """The gradients of a forward whose result nothing else touches."""
    return kern.backward(kern.forward(params, x), dy)


def assert_same_grads(got, want):
    for k in want.params:
        np.testing.assert_allclose(got.params[k], want.params[k], rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(got.x, want.x, rtol=1e-12, atol=1e-13)
    for s in want.state0:
        np.testing.assert_allclose(got.state0[s], want.state0[s], rtol=1e-12, atol=1e-13)


def overwrite_pool(kern, seed, T=T, B=B, times=3):
    """Forwards of other inputs, their results dropped at once: they take, and write over,
    whatever workspaces the pool holds."""
    for k in range(times):
        params, x, _ = data(kern, seed + 100 + k, T, B)
        kern.forward(params, x)
        gc.collect()


def copy_of_dropped_result(kern, make_copy, params, x):
    """A copy of a forward result whose original is gone."""
    res = kern.forward(params, x)
    held = make_copy(res)
    del res
    gc.collect()
    return held


@pytest.mark.parametrize("make_copy", [
    copy.copy,
    copy.deepcopy,
    lambda r: dataclasses.replace(r),
    lambda r: dataclasses.replace(r, outputs=r.outputs.copy()),
], ids=["copy", "deepcopy", "replace", "replace-outputs"])
def test_a_copy_keeps_its_tape_after_the_original_is_gone(kern, make_copy):
    params, x, dy = data(kern, 1)
    want = fresh_grads(kern, params, x, dy)
    held = copy_of_dropped_result(kern, make_copy, params, x)
    overwrite_pool(kern, 1)
    assert_same_grads(kern.backward(held, dy), want)


def test_copies_share_one_tape_and_deep_copies_own_theirs(kern):
    params, x, _ = data(kern, 2)
    res = kern.forward(params, x)
    assert copy.copy(res)._work is res._work
    assert dataclasses.replace(res)._work is res._work
    deep = copy.deepcopy(res)._work
    assert deep is not res._work and not np.shares_memory(deep.array, res._work.array)


@pytest.mark.parametrize("protocol", [pickle.DEFAULT_PROTOCOL, 5])
def test_a_pickled_result_carries_its_tape(kern, protocol):
    params, x, dy = data(kern, 3)
    want = fresh_grads(kern, params, x, dy)
    res = kern.forward(params, x)
    buffers = []     # protocol 5: arrays out of band, as shared-memory transports send them
    blob = pickle.dumps(res, protocol=protocol,
                        buffer_callback=buffers.append if protocol >= 5 else None)
    del res
    gc.collect()
    overwrite_pool(kern, 3)
    back = pickle.loads(blob, buffers=buffers)
    overwrite_pool(kern, 4)
    assert_same_grads(kern.backward(back, dy), want)
    # a kernel pickled with it gives the same gradients from it
    assert_same_grads(pickle.loads(pickle.dumps(kern)).backward(back, dy), want)


def test_a_copy_of_a_batch_split_result_keeps_every_slice(threads):
    rc.set_num_threads(3)
    kern = rc.compile(lstm, 5, 128, "float64")
    params, x, dy = data(kern, 5, T=4, B=35)
    want = fresh_grads(kern, params, x, dy)
    held = copy_of_dropped_result(kern, copy.copy, params, x)
    assert len(held._parts) == 3
    overwrite_pool(kern, 5, T=4, B=35)
    assert_same_grads(kern.backward(held, dy), want)


@pytest.mark.slow      # 20 full collections of a large process: ~5 s
def test_threads_sharing_a_kernel_never_write_over_a_held_copy(kern):
    n_threads, rounds = 4, 5
    cases = [data(kern, 10 + k) for k in range(n_threads)]
    wants = [fresh_grads(kern, *case) for case in cases]
    failures, start = [], threading.Barrier(n_threads)

    def work(k):
        params, x, dy = cases[k]
        start.wait()
        for r in range(rounds):
            held = copy_of_dropped_result(kern, copy.copy, params, x)
            overwrite_pool(kern, 20 + 10 * k + r, times=2)
            try:
                assert_same_grads(kern.backward(held, dy), wants[k])
            except AssertionError as exc:
                failures.append((k, r, str(exc).splitlines()[0]))
    pool = [threading.Thread(target=work, args=(k,)) for k in range(n_threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not failures, failures


def test_a_result_without_its_tape_is_refused(kern):
    params, x, dy = data(kern, 6)
    res = kern.forward(params, x)
    with pytest.raises(ValueError, match="result: it holds no tape"):
        kern.backward(dataclasses.replace(res, _work=None), dy)


@pytest.mark.parametrize("run", ["whole", "batch split", "checkpointed"])
def test_backward_reads_x_as_forward_saw_it(run, threads):
    """The tape keeps its own x (after the workspace in a whole run, sliced with a batch
    split, with the segments when checkpointed): writing over the caller's x between
    forward and backward changes no gradient."""
    if run == "batch split":
        rc.set_num_threads(3)
        kern, shape = rc.compile(lstm, 5, 128, "float64"), dict(T=4, B=35)
    else:
        kern = rc.compile(lstm, I, H, "float64", checkpoint=2 if run == "checkpointed" else None)
        shape = dict(T=T, B=B)
    params, x, dy = data(kern, 6, **shape)
    want = fresh_grads(kern, params, x.copy(), dy)
    res = kern.forward(params, x)
    x[...] = 7.0
    overwrite_pool(kern, 6, **shape)
    if run == "batch split":
        assert res._parts is not None
    assert_same_grads(kern.backward(res, dy), want)
