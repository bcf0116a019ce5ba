"""Nested activations, u = tanh(0.9 u + 0.1) N times in one step: the kernels are exact
(finite differences, the numpy reference and torch autograd agree), and the fused nodes
and derivatives the compiler works on stay bounded whatever N, so that the compile time
grows linearly with N (measured in benchmarks/bench_compile.py, not here)."""
import os
import sys

import numpy as np
import pytest

import rnncompiler as rc
from rnncompiler.compiler import pipeline
from rnncompiler.compiler.autodiff import EwGrad, differentiate
from rnncompiler.compiler.graph import (MAX_DERIVATIVE_TERMS, _terms, build_graph, derivative_terms,
                               fuse_elementwise)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                "benchmarks"))
from bench_compile import tanh_chain     # the cell the benchmark times  # noqa: E402

T, B, I, H = 5, 3, 2, 4


def draw(kern, seed=0):
    rng = np.random.default_rng(seed)
    params = kern.init_params(seed=seed)
    x = rng.standard_normal((T, B, I))
    state0 = {"u": rng.standard_normal((B, H))}
    dy = rng.standard_normal((T, B, H))
    ds = {"u": rng.standard_normal((B, H))}
    return params, x, state0, dy, ds


def torch_chain(depth, params, x, state0, dy, ds):
    """The same chain in torch float64: (outputs, final u, grads of W, x, u0)."""
    torch = pytest.importorskip("torch")
    W = torch.tensor(params["W"], requires_grad=True)
    xs = torch.tensor(x, requires_grad=True)
    u0 = torch.tensor(state0["u"], requires_grad=True)
    u, ys = u0, []
    for t in range(T):
        u = u + xs[t] @ W.T
        for _ in range(depth):
            u = torch.tanh(0.9 * u + 0.1)
        ys.append(u)
    y = torch.stack(ys)
    ((y * torch.tensor(dy)).sum() + (u * torch.tensor(ds["u"])).sum()).backward()
    return (y.detach().numpy(), u.detach().numpy(), W.grad.numpy(), xs.grad.numpy(),
            u0.grad.numpy())


@pytest.mark.parametrize("depth", [3, 20])
def test_a_chain_of_tanh_is_exact(depth):
    cell = tanh_chain(depth)
    kern = rc.compile(cell, I, H, "float64")
    report = rc.gradcheck(kern, T=4, B=2, seed=1)
    assert report.ok, report
    params, x, state0, dy, ds = draw(kern)
    res = kern.forward(params, x, state0)
    g = kern.backward(res, dy, ds)
    ref = rc.reference(cell, I, H)
    r_res = ref.forward(params, x, state0)
    r_g = ref.backward(r_res, dy, ds)
    y, u, dW, dx, du0 = torch_chain(depth, params, x, state0, dy, ds)
    close = dict(rtol=1e-9, atol=1e-12)
    for got in (res, r_res):
        np.testing.assert_allclose(got.outputs, y, **close)
        np.testing.assert_allclose(got.states["u"], u, **close)
    for got in (g, r_g):
        np.testing.assert_allclose(got.params["W"], dW, **close)
        np.testing.assert_allclose(got.x, dx, **close)
        np.testing.assert_allclose(got.state0["u"], du0, **close)


def fused_chain(depth):
    """The fused step graph of a chain of `depth` and its backward step."""
    cell = tanh_chain(depth)
    g = fuse_elementwise(build_graph(cell.spec, pipeline.bind_sizes(cell, I, H, None)))
    return g, differentiate(g)


def test_fused_nodes_and_their_derivatives_stay_bounded_as_the_chain_deepens():
    counts = {}
    for depth in (10, 40, 80):
        g, bwd = fused_chain(depth)
        ew = [n for n in g.ops() if g[n].op == "ew"]
        counts[depth] = len(ew)
        for n in ew:
            assert derivative_terms(g[n].expr) <= 2 * MAX_DERIVATIVE_TERMS, n
        for op in bwd.ops:
            if isinstance(op, EwGrad):     # the derivatives sympy actually wrote
                assert sum(_terms(c) for _, c in op.contributions) <= 3 * MAX_DERIVATIVE_TERMS
    # nodes grow with the depth, and no faster: about one per nine levels
    assert counts[10] < counts[40] < counts[80] <= 2 * counts[40] + 1, counts


def test_the_derivative_estimate_follows_sympy():
    """derivative_terms against the size of the partials sympy derives, for one node."""
    for depth in (2, 5, 8):
        g, bwd = fused_chain(depth)
        (op,) = [op for op in bwd.ops if isinstance(op, EwGrad)]
        actual = sum(_terms(c) for _, c in op.contributions)
        estimate = derivative_terms(g[op.node].expr)
        assert 0.5 * actual <= estimate <= 2 * actual, (depth, actual, estimate)


def test_the_library_cells_are_fused_as_before():
    """The cap on derivatives splits only deep nestings: every library cell's fused nodes
    stay below it (their kernels, and the golden C, do not change)."""
    from rnncompiler import cells
    for name, cell in cells.ALL.items():
        sizes = {s: 3 for s in cells.SIZES[name]}
        g = fuse_elementwise(build_graph(cell.spec, pipeline.bind_sizes(cell, 3, 4, sizes)))
        for n in g.ops():
            if g[n].op == "ew":
                assert derivative_terms(g[n].expr) <= MAX_DERIVATIVE_TERMS, (name, n)
