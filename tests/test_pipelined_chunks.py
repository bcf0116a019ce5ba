"""Pipelined chunks: in a kernel whose steps hold no product (a state-linear cell) and
that links pthreads, a chunk's work that reads no state runs on two threads alongside the
steps of the chunk next to it, the threads taking it in blocks. Each stage on its own
(which kernels pipeline, the C they get, the blocks' edges), then end to end: the bits of
one thread, the numpy reference evaluator, central differences."""
import numpy as np
import pytest

import rnncompiler as rc
from rnncompiler.compiler.autodiff import differentiate
from rnncompiler.compiler.codegen import BLOCK_EDGES, render_c
from rnncompiler.compiler.dsl import bind_sizes
from rnncompiler.compiler.graph import build_graph, fuse_elementwise

from test_hoisting import _data, gated_decay, on_two_callers


@rc.cell(states=("h",))
def scaled_decay(x, h, p):
    """State-linear, with an elementwise parameter on a value that reads no state: its
    gradient is summed after each chunk's steps on one thread, so backward's chunks are
    not pipelined (forward's are)."""
    a = rc.sigmoid(p.linear("W_a", x, bias="b_a")) * p.vector("s")
    return {"h": a * h + rc.tanh(p.linear("W_u", x))}


@rc.cell(states=("h",), inputs={"x": "I", "u": "I"})
def two_input_decay(x, u, h, p):
    """State-linear over two inputs: a product reads both (two hoisted parts, whose dx
    blocks add to different columns) and another reads u again (added to the same)."""
    a = rc.sigmoid(p.linear("W_a", rc.concat(x, u), bias="b_a"))
    return {"h": a * h + (1 - a) * p.linear("W_v", u)}


def _source(cell, **kw):
    g = fuse_elementwise(build_graph(cell.spec, bind_sizes(cell, 3, 4, None)))
    return render_c(g, differentiate(g), "float32", **kw)


@pytest.mark.parametrize("cell, forward, backward", [
    (rc.cells.min_gru, True, True), (rc.cells.min_lstm, True, True),
    (two_input_decay, True, True), (scaled_decay, True, False),
    (rc.cells.lstm, False, False), (gated_decay, False, False)], ids=lambda v: getattr(v, "name", v))
def test_kernels_whose_steps_hold_no_product_are_pipelined(cell, forward, backward):
    src = _source(cell, blas="openblas", microkernel=True)
    assert src.layout.pipelined is forward
    run_forward = src.text[src.text.index("_forward_steps("):]
    assert ("before_steps_block, &next" in run_forward) is forward
    assert ("after_chunk_block, &done" in src.text) is backward


def test_an_exported_kernel_is_never_pipelined():
    src = _source(rc.cells.min_gru, microkernel="portable")
    assert not src.layout.pipelined
    assert "_block(const void *p, int i)" not in src.text and "blocks_start(&" not in src.text


def test_a_pipelined_kernel_holds_two_chunks_of_each_buffer():
    """The chunk buffers (values without a tape, adjoints kept for a chunk) hold 2 CH
    steps when pipelined, CH otherwise."""
    src = _source(rc.cells.min_gru, blas="openblas", microkernel=True)
    assert "(keep ? T : 2 * CH)" in src.text and "_all + (ptrdiff_t)2 * CH * B" in src.text
    plain = _source(rc.cells.min_gru, microkernel="portable")
    assert "2 * CH" not in plain.text


def test_the_blocks_cover_a_chunk_once_large_first():
    edges = np.array(BLOCK_EDGES)
    assert edges[0] == 0 and edges[-1] == 64 and np.all(np.diff(edges) > 0)
    assert np.all(np.diff(np.diff(edges)) <= 0)          # sizes never grow
    for n in (1, 5, 63, 64, 65, 404, 2048, 4096 * 3 + 1):
        cuts = n * edges // 64                            # block_edge in the C
        assert cuts[0] == 0 and cuts[-1] == n and np.all(np.diff(cuts) >= 0)


def _run(kern, p, x, dy, threads):
    rc.set_num_threads(threads)
    try:
        res = kern.forward(p, x)
        grads = kern.backward(res, dy)
        inferred = kern.infer(p, x)
    finally:
        rc.set_num_threads(1)
    return res, grads, inferred


# I = H = 64: a chunk's work over 241 rows or more is shared (SPLIT_WORK); B=4 makes
# chunks of 512 steps, so T=1300 runs two full chunks and a short one
SHAPES = [(1300, 4), (4500, 1)]


def _assert_runs_agree(a, b, rtol):
    """Two runs' outputs, inference outputs and gradients, equal to rtol (0: the bits)."""
    (res_a, g_a, i_a), (res_b, g_b, i_b) = a, b
    pairs = [("outputs", res_a.outputs, res_b.outputs), ("infer", i_a[0], i_b[0]),
             ("dx", g_a.x, g_b.x)]
    pairs += [(k, g_a.params[k], g_b.params[k]) for k in g_a.params]
    pairs += [("state0 " + k, g_a.state0[k], g_b.state0[k]) for k in g_a.state0]
    for name, u, v in pairs:
        if rtol:
            np.testing.assert_allclose(u, v, rtol=rtol, atol=rtol * np.abs(v).max(), err_msg=name)
        else:
            np.testing.assert_array_equal(u, v, err_msg=name)


def _fast_or_slow(cases, fast):
    """pytest params of `cases`, those not in `fast` marked slow (make test runs them)."""
    return [pytest.param(*c, marks=() if c in fast else pytest.mark.slow,
                         id="-".join(getattr(v, "name", str(v)) for v in c)) for c in cases]


@pytest.mark.parametrize("cell, dtype", _fast_or_slow(
    [(c, d) for c in (rc.cells.min_gru, rc.cells.min_lstm, two_input_decay, scaled_decay)
     for d in ("float32", "float64")],
    fast=[(rc.cells.min_gru, "float64"), (two_input_decay, "float32")]))
def test_two_threads_agree_with_one_and_with_themselves(cell, dtype):
    """Two runs on two threads give the same bits (the blocks' edges are fixed; which
    thread runs a block changes nothing), and one thread's results but for the order of
    some sums in the products (OpenBLAS groups a block's rows otherwise than a chunk's)."""
    kern = rc.compile(cell, 64, 64, dtype)
    for T, B in SHAPES:
        p, x, dy = _data(kern, T, B, seed=T)
        x, dy = x.astype(dtype), dy.astype(dtype)
        one = _run(kern, p, x, dy, 1)
        two = _run(kern, p, x, dy, 2)
        _assert_runs_agree(two, _run(kern, p, x, dy, 2), 0)
        _assert_runs_agree(two, one, 1e-12 if dtype == "float64" else 1e-5)
        np.testing.assert_array_equal(two[2][0], two[0].outputs)      # infer = forward


@pytest.mark.parametrize("cell", _fast_or_slow(
    [(rc.cells.min_gru,), (two_input_decay,), (scaled_decay,)], fast=[(two_input_decay,)]))
def test_two_threads_match_the_reference_and_central_differences(cell):
    """float64 on two threads, pipelined: outputs and every gradient against the numpy
    reference evaluator, and the gradient along a random direction of the parameters
    against central differences of sum(dy * y)."""
    kern = rc.compile(cell, 64, 64, "float64")
    ref = rc.reference(cell, 64, 64)
    T, B = SHAPES[0]
    p, x, dy = _data(kern, T, B, seed=1)
    res, grads, _ = _run(kern, p, x, dy, 2)
    want = ref.forward(p, x)
    np.testing.assert_allclose(res.outputs, want.outputs, rtol=1e-10, atol=1e-12)
    wg = ref.backward(want, dy)
    np.testing.assert_allclose(grads.x, wg.x, rtol=1e-9, atol=1e-11)
    for name in grads.params:
        np.testing.assert_allclose(grads.params[name], wg.params[name], rtol=1e-9, atol=1e-10,
                                   err_msg=name)
    rng = np.random.default_rng(2)
    d = {k: rng.standard_normal(np.shape(v)) for k, v in grads.params.items()}
    eps = 1e-6

    def loss(sign):
        q = {k: v + sign * eps * d[k] if k in d else v for k, v in p.items()}
        rc.set_num_threads(2)
        try:
            return float(np.sum(dy * kern.forward(q, x).outputs))
        finally:
            rc.set_num_threads(1)
    numeric = (loss(1) - loss(-1)) / (2 * eps)
    analytic = sum(float(np.sum(grads.params[k] * d[k])) for k in d)
    assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), (numeric, analytic)


@pytest.mark.slow
def test_two_callers_of_a_pipelined_kernel_get_a_lone_run_s_bits():
    """Two threads of the caller run a pipelined kernel on two threads at once: one gets
    the runtime's helper, the other takes every block itself; each gives a lone run's bits."""
    kern = rc.compile(rc.cells.min_gru, 64, 64, "float64")
    T, B = SHAPES[1]
    p, x, dy = _data(kern, T, B, seed=7)
    alone = _run(kern, p, x, dy, 2)

    def call():
        res = kern.forward(p, x)
        return res, kern.backward(res, dy), kern.infer(p, x)
    for got in on_two_callers(call):
        _assert_runs_agree(got, alone, 0)
