"""The work that reads no state, out of the sequential loop: elementwise nodes computed
over a chunk's rows before its steps (static nodes), the contributions of the loop's
nodes to such operands made after the steps (deferred), chunks of at least CHUNK_ROWS
rows at a small batch, and a chunk's work split over two threads. Each stage on its own
(layout, C text), then end to end: padded and unpadded rows, one and two threads, against
the numpy reference evaluator and central differences."""
import numpy as np
import pytest

import rnncompiler as rc
from rnncompiler.compiler.autodiff import differentiate
from rnncompiler.compiler.codegen import plan_layout, render_c
from rnncompiler.compiler.codegen.layout import static_nodes
from rnncompiler.compiler.dsl import bind_sizes
from rnncompiler.compiler.graph import build_graph, fuse_elementwise


def fused(cell, I=3, H=4):
    g = fuse_elementwise(build_graph(cell.spec, bind_sizes(cell, I, H, None)))
    return g, differentiate(g)


@rc.cell(states=("h",))
def gated_decay(x, h, p):
    """Static work of every kind: a chain of static nodes, an elementwise parameter on one
    (its gradient is added after the steps), a static node read by a per-step product."""
    a = rc.sigmoid(p.linear("W_a", x, bias="b_a"))
    u = rc.tanh(p.linear("W_u", x)) * p.vector("s")
    v = a * u + 0.5
    r = rc.tanh(p.linear("W_r", rc.concat(h, v)))
    return {"h": a * h + (1 - a) * r}


def test_static_nodes_are_those_that_read_no_state():
    g, bwd = fused(rc.cells.min_gru)
    static = static_nodes(g, plan_layout(g, bwd).bundles)
    assert [g[n].name for n in static] == ["z"]
    g, bwd = fused(rc.cells.lstm)
    assert static_nodes(g, plan_layout(g, bwd).bundles) == frozenset()   # every gate reads h
    g, bwd = fused(gated_decay)
    static = static_nodes(g, plan_layout(g, bwd).bundles)
    new_state = dict(g.new_states)["h"]
    assert static and new_state not in static
    assert all(not g.describe(n).startswith("h[t]") for n in static)


def test_deferred_contributions_are_those_to_operands_that_read_no_state():
    g, bwd = fused(rc.cells.min_gru)
    L = plan_layout(g, bwd)
    new_state = dict(g.new_states)["h"]
    later = L.deferred[new_state]
    args = g[new_state].args
    assert {args[k] for k in later} == {n for n in args if not n.startswith("state.")}
    assert all(not args[k].startswith("state.") for k in later)
    # the node's adjoint is kept for every step of the chunk
    assert (L.adjoint[new_state][0], g[new_state].size, True) in L.adj_arrays


def test_the_loop_holds_only_the_state_dependent_work():
    """minGRU: σ(W_z x) is computed before the steps over the chunk's rows, the update
    in the loop; backward's loop passes on only dh[t-1], the rest after the steps."""
    g, bwd = fused(rc.cells.min_gru)
    text = render_c(g, bwd, "float32", blas="openblas", microkernel=True).text
    loop = text[text.index("for (int t = t0; t < t0 + tc; ++t) {", text.index("_forward_steps(")):]
    loop = loop[:loop.index("states_to_rows")]
    before = text[text.index("static void before_steps("):text.index("static void before_steps_split(")]
    z = next(n for n in g if g[n].name == "z")
    zfun = "fwd_" + plan_layout(g, bwd).value[z][0]
    assert zfun + "(t, rows, rows_lengths," in before and zfun not in loop
    back = text[text.index("for (int t = t1 - 1; t >= t0; --t) {", text.index("_run_backward(")):]
    steps = back[:back.index("after_steps_split(")]
    assert "bwd_later_" not in steps and "after_steps_split(T, B, cb, t0, tc" in back
    later = text[text.index("static void after_steps("):text.index("static void after_steps_split(")]
    assert "bwd_later_next_h(t, rows, rows_lengths," in later


def _data(kern, T, B, seed=0):
    rng = np.random.default_rng(seed)
    p = kern.init_params(seed=seed)
    x = rng.standard_normal((T, B, kern.input_size))
    dy = rng.standard_normal((T, B, kern.output_size))
    return p, x, dy


@pytest.mark.slow
@pytest.mark.parametrize("cell", [rc.cells.min_gru, rc.cells.min_lstm, gated_decay],
                         ids=lambda c: c.name)
def test_long_sequences_match_the_reference_with_and_without_padding(cell):
    """T=1100 at B=2 (a chunk of 1024 steps, then a short one), rows with lengths (one
    step at a time) and without (a chunk's rows at once): outputs and every gradient
    against the numpy reference evaluator, float64."""
    kern = rc.compile(cell, 3, 5, "float64")
    ref = rc.reference(cell, 3, 5)
    p, x, dy = _data(kern, 1100, 2)
    for lengths in (None, np.array([1100, 1077])):
        got, want = kern.forward(p, x, lengths=lengths), ref.forward(p, x, lengths=lengths)
        np.testing.assert_allclose(got.outputs, want.outputs, rtol=1e-10, atol=1e-12)
        g, w = kern.backward(got, dy), ref.backward(want, dy)
        np.testing.assert_allclose(g.x, w.x, rtol=1e-9, atol=1e-11)
        for name in g.params:
            np.testing.assert_allclose(g.params[name], w.params[name], rtol=1e-9, atol=1e-10,
                                       err_msg=name)


@pytest.mark.slow
@pytest.mark.parametrize("tuning", ["blas", "microkernel"])
def test_two_threads_split_a_chunk_and_agree_with_one(monkeypatch, tuning):
    """B=1, T=2500 (a chunk of 2048 steps and a short one): each chunk's static work and
    hoisted products run in two halves on two threads; the outputs are the same bits
    (every row computed alike) and the gradients agree (weight gradients are summed in
    another order)."""
    from rnncompiler.compiler.variants import variants
    monkeypatch.setenv("RNNC_TUNING", "%s:%s" % (variants()[0].name, tuning))
    kern = rc.compile(gated_decay, 32, 32, "float64")    # work enough to split (SPLIT_WORK)
    p, x, dy = _data(kern, 2500, 1, seed=4)
    try:
        rc.set_num_threads(1)
        one = kern.forward(p, x)
        g1 = kern.backward(one, dy)
        rc.set_num_threads(2)
        two = kern.forward(p, x)
        g2 = kern.backward(two, dy)
    finally:
        rc.set_num_threads(1)
    np.testing.assert_array_equal(two.outputs, one.outputs)
    np.testing.assert_allclose(g2.x, g1.x, rtol=1e-12, atol=1e-14)
    for name in g1.params:
        np.testing.assert_allclose(g2.params[name], g1.params[name], rtol=1e-11, atol=1e-12)


def _run_on(kern, p, x, dy, threads):
    rc.set_num_threads(threads)
    try:
        res = kern.forward(p, x)
        return res.outputs, kern.backward(res, dy)
    finally:
        rc.set_num_threads(1)


def on_two_callers(call, rounds=3):
    """call() `rounds` times on each of two threads of the caller, at once, the kernels on
    two threads: the results, in any order (an exception fails the test)."""
    import threading
    results, errors = [], []

    def run():
        try:
            for _ in range(rounds):
                results.append(call())
        except Exception as exc:        # noqa: BLE001 (reported below)
            errors.append(exc)
    rc.set_num_threads(2)
    try:
        workers = [threading.Thread(target=run) for _ in range(2)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(120)
    finally:
        rc.set_num_threads(1)
    assert not errors and len(results) == 2 * rounds
    return results


@pytest.mark.slow
def test_the_helper_thread_serves_one_caller_at_a_time():
    """Two threads calling a two-thread kernel at once: one gets the runtime's helper
    thread, the other runs the halves itself; both give the bits of a run alone."""
    kern = rc.compile(gated_decay, 32, 32, "float64")
    p, x, dy = _data(kern, 2500, 1, seed=5)
    alone_y, alone_g = _run_on(kern, p, x, dy, 2)

    def call():
        res = kern.forward(p, x)
        return res.outputs, kern.backward(res, dy)
    for y, g in on_two_callers(call):
        np.testing.assert_array_equal(y, alone_y)
        np.testing.assert_array_equal(g.x, alone_g.x)
        for name in g.params:
            np.testing.assert_array_equal(g.params[name], alone_g.params[name])


FORKED = r"""
import os, sys
import numpy as np
import rnncompiler as rc
sys.path.insert(0, sys.argv[1])
from test_hoisting import gated_decay, _data, _run_on
kern = rc.compile(gated_decay, 32, 32, "float64")
p, x, dy = _data(kern, 2500, 1, seed=6)
y, g = _run_on(kern, p, x, dy, 2)           # the helper thread runs, then the fork
pid = os.fork()
if pid == 0:
    y2, g2 = _run_on(kern, p, x, dy, 2)     # a child: no helper thread until it starts one
    os._exit(0 if np.array_equal(y2, y) and np.array_equal(g2.x, g.x) else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.slow
def test_a_forked_child_runs_two_thread_kernels():
    """The helper thread does not survive fork(): the child starts its own (no deadlock
    on the parent's locks) and computes the parent's bits."""
    import os
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", FORKED, os.path.dirname(__file__)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "0"


@pytest.mark.parametrize("cell", [rc.cells.min_gru, gated_decay], ids=lambda c: c.name)
def test_gradients_against_central_differences(cell):
    kern = rc.compile(cell, 3, 5, "float64")
    assert rc.gradcheck(kern, T=5, B=3).ok


@pytest.mark.slow
def test_min_gru_split_over_threads_matches_torch_autograd():
    """minGRU at B=1 over 2100 steps on two threads (chunks split in halves) against the
    same cell written in torch and differentiated by torch.autograd, float64, to 1e-9."""
    torch = pytest.importorskip("torch")
    kern = rc.compile(rc.cells.min_gru, 32, 32, "float64")
    p, x, dy = _data(kern, 2100, 1, seed=9)
    rc.set_num_threads(2)
    try:
        res = kern.forward(p, x)
        grads = kern.backward(res, dy)
    finally:
        rc.set_num_threads(1)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in p.items()}
    tx = torch.tensor(x, requires_grad=True)
    h, outs = torch.zeros(1, 32, dtype=torch.float64), []
    for t in range(x.shape[0]):
        z = torch.sigmoid(tx[t] @ tp["W_z"].T + tp["b_z"])
        h = (1 - z) * h + z * (tx[t] @ tp["W_h"].T + tp["b_h"])
        outs.append(h)
    y = torch.stack(outs)
    (y * torch.tensor(dy)).sum().backward()
    scale = lambda a: max(1.0, float(np.max(np.abs(a))))   # noqa: E731
    assert np.max(np.abs(res.outputs - y.detach().numpy())) / scale(res.outputs) < 1e-9
    assert np.max(np.abs(grads.x - tx.grad.numpy())) / scale(grads.x) < 1e-9
    for name in p:
        want = tp[name].grad.numpy()
        assert np.max(np.abs(grads.params[name] - want)) / scale(want) < 1e-9, name


def test_an_adjoint_with_one_contribution_is_written_not_added_to():
    """The LSTM's gates each get their adjoint from one node (c[t] or h[t]): written, with
    zeros in rows past their length, and the chunk's buffer of them is never zeroed. A
    value read by two nodes (gated_decay's a) is added to, after zeroing."""
    g, bwd = fused(rc.cells.lstm)
    L = plan_layout(g, bwd)
    gates = [m for b in L.bundles for m in b.members]
    assert gates and set(gates) <= L.assigned
    text = render_c(g, bwd, "float32", blas="openblas", microkernel=True).text
    assert "memset(d_L0_all" not in text
    assert "dr0[j] = " in text and "if (!VALID(b)) { for (ptrdiff_t j = 0;" in text
    g, bwd = fused(gated_decay)
    L = plan_layout(g, bwd)
    shared = [n for n in g.ops() if len(g.users(n)) > 1]
    assert shared and not set(shared) & L.assigned
    text = render_c(g, bwd, "float32", blas="openblas", microkernel=True).text
    assert "+= " in text
