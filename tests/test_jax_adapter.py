"""rc.jax: the compiled kernels inside JAX through custom_vjp and pure_callback. Gradients
pass jax.test_util.check_grads (float64) and equal those of the same cell written in
jax.numpy and differentiated by JAX; jit, grad, jit(grad) and vmap agree with eager calls."""
import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import rnncompiler as rc  # noqa: E402

T, B = 5, 3
LENGTHS = np.array([5, 2, 4])


@pytest.fixture(autouse=True, scope="module")
def x64():
    """64-bit arrays for this module only: the setting is global to the process."""
    before = jax.config.jax_enable_x64
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


def draw(kern, seed=0):
    rng = np.random.default_rng(seed)
    params = {k: jnp.asarray(v) for k, v in kern.init_params(seed=seed).items()}
    x = jnp.asarray(rng.standard_normal((T, B, kern.input_size)))
    state0 = {s: jnp.asarray(0.5 * rng.standard_normal((B, n)))
              for s, n in kern.state_sizes.items()}
    return params, x, state0


def test_check_grads_with_lengths_and_state0():
    kern = rc.compile(rc.cells.peephole_lstm, 2, 2, "float64")
    params, x, state0 = draw(kern)

    def f(params, x, state0):
        return rc.jax.rnn(kern, params, x, state0, LENGTHS)

    check_grads(f, (params, x, state0), order=1, modes=["rev"])
    check_grads(jax.jit(f), (params, x, state0), order=1, modes=["rev"])


def jax_gru(p, x, h0, lengths):
    """torch.nn.GRU's cell over a sequence in jax.numpy: rows past their length keep
    their state and output zeros."""
    def lin(W, v, b):
        return v @ p[W].T + p[b]

    def step(h, xt_t):
        xt, t = xt_t
        r = jax.nn.sigmoid(lin("W_ir", xt, "b_ir") + lin("W_hr", h, "b_hr"))
        z = jax.nn.sigmoid(lin("W_iz", xt, "b_iz") + lin("W_hz", h, "b_hz"))
        n = jnp.tanh(lin("W_in", xt, "b_in") + r * lin("W_hn", h, "b_hn"))
        new = (1 - z) * n + z * h
        valid = (t < lengths)[:, None]
        return jnp.where(valid, new, h), jnp.where(valid, new, 0.0)

    h, ys = jax.lax.scan(step, h0, (x, jnp.arange(x.shape[0])))
    return ys, h


def test_equals_jax_autodiff_of_the_same_cell():
    kern = rc.compile(rc.cells.gru_torch, 4, 4, "float64")
    params, x, state0 = draw(kern, seed=1)
    u = jnp.asarray(np.random.default_rng(2).standard_normal((T, B, 4)))

    def loss_ours(params, x, h0):
        ys, states = rc.jax.rnn(kern, params, x, {"h": h0}, LENGTHS)
        return jnp.sum(ys * u) + jnp.sum(states["h"] ** 2)

    def loss_jax(params, x, h0):
        ys, h = jax_gru(params, x, h0, LENGTHS)
        return jnp.sum(ys * u) + jnp.sum(h ** 2)

    args = (params, x, state0["h"])
    assert abs(float(loss_ours(*args)) - float(loss_jax(*args))) < 1e-12
    ours = jax.grad(loss_ours, argnums=(0, 1, 2))(*args)
    ref = jax.grad(loss_jax, argnums=(0, 1, 2))(*args)
    diffs = jax.tree_util.tree_map(lambda a, b: float(jnp.max(jnp.abs(a - b))), ours, ref)
    assert max(jax.tree_util.tree_leaves(diffs)) < 1e-12
    assert float(jnp.max(jnp.abs(ours[1]))) > 1e-2        # not a comparison of zeros


def test_jit_grad_and_vmap_agree_with_eager_and_the_kernel():
    kern = rc.compile(rc.cells.gru_torch, 4, 4, "float64")
    params, x, state0 = draw(kern, seed=3)
    ys, states = rc.jax.rnn(kern, params, x, state0, LENGTHS)
    ref = kern.forward({k: np.asarray(v) for k, v in params.items()}, np.asarray(x),
                       {"h": np.asarray(state0["h"])}, LENGTHS)
    assert np.array_equal(np.asarray(ys), ref.outputs)
    assert np.array_equal(np.asarray(states["h"]), ref.states["h"])

    def loss(params, x):
        ys, states = rc.jax.rnn(kern, params, x, None, LENGTHS)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(states["h"])

    eager = jax.grad(loss, argnums=(0, 1))(params, x)
    jitted = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)
    same = jax.tree_util.tree_map(lambda a, b: bool(jnp.array_equal(a, b)), eager, jitted)
    assert all(jax.tree_util.tree_leaves(same))
    g = kern.backward(kern.forward({k: np.asarray(v) for k, v in params.items()},
                                   np.asarray(x), None, LENGTHS),
                      d_outputs=np.cos(np.asarray(rc.jax.rnn(kern, params, x, None, LENGTHS)[0])),
                      d_states={"h": np.ones((B, 4))})
    assert np.allclose(np.asarray(eager[1]), g.x, rtol=0, atol=1e-13)
    xs = jnp.stack([x, 2 * x])
    mapped = jax.vmap(lambda x: rc.jax.rnn(kern, params, x)[0])(xs)
    assert jnp.array_equal(mapped[1], rc.jax.rnn(kern, params, 2 * x)[0])


def test_float32_kernel_and_clear_errors():
    kern32 = rc.compile(rc.cells.gru_torch, 4, 4, "float32")
    params, x, _ = draw(kern32)
    p32 = {k: v.astype(jnp.float32) for k, v in params.items()}
    ys, _ = rc.jax.rnn(kern32, p32, x.astype(jnp.float32))
    assert ys.dtype == jnp.float32 and ys.shape == (T, B, 4)
    with pytest.raises(TypeError, match=r"x: expected dtype float32 \(the kernel's\), got float64"):
        rc.jax.rnn(kern32, p32, x)
    with pytest.raises(KeyError, match="params: missing parameter 'W_ir'"):
        rc.jax.rnn(kern32, {k: v for k, v in p32.items() if k != "W_ir"}, x.astype(jnp.float32))
    with pytest.raises(ValueError, match=r"lengths: every length must be in \[0, 5\]"):
        rc.jax.rnn(kern32, p32, x.astype(jnp.float32), lengths=[6, 1, 1])
    with pytest.raises(ValueError, match=r"state0\['h'\]: expected shape \(3, 4\) or \(4,\)"):
        rc.jax.rnn(kern32, p32, x.astype(jnp.float32), {"h": jnp.zeros((2, 4), jnp.float32)})
    kern64 = rc.compile(rc.cells.gru_torch, 4, 4, "float64")
    jax.config.update("jax_enable_x64", False)
    try:
        with pytest.raises(TypeError, match="a float64 kernel needs 64-bit JAX arrays"):
            rc.jax.rnn(kern64, params, x)
    finally:
        jax.config.update("jax_enable_x64", True)
