"""Parameters declared trainable=False: constants of the kernel, passed in `params` like
the others but given no gradient (an echo state network's reservoir). The kernel, the
numpy reference, rc.gradcheck and the generated C agree on that, and an ESN equals an
independent torch implementation whose fixed weights have requires_grad=False."""
import re

import numpy as np
import pytest

import rnncompiler as rc
from rnncompiler.compiler.dsl import bind_sizes
from rnncompiler.compiler.pipeline import lower
from rnncompiler.errors import CellError

I, H, O = 3, 5, 2
LEAK = 0.3


def make_reservoir(trainable):
    """A leaky reservoir with a trained readout; `trainable` says whether the reservoir's
    W_in, W, b and the elementwise vector c are learnt too (False: constants)."""
    @rc.cell(states={"h": "H"})
    def reservoir(x, h, p):
        u = rc.tanh(p.linear("W_in", x, trainable=trainable)
                    + p.linear("W", h, bias="b", trainable=trainable))
        h_new = p.vector("c", trainable=trainable) * h + LEAK * (p.scalar("s") * u - h)
        return {"h": h_new}, p.linear("W_out", h_new, bias="b_out", size="O")
    return reservoir


frozen_cell = make_reservoir(False)
trained_cell = make_reservoir(True)
RESERVOIR = {"W_in", "W", "b", "c"}


@pytest.fixture(scope="module")
def kern():
    return rc.compile(frozen_cell, input_size=I, hidden_size=H, dtype="float64",
                      sizes={"O": O})


def data(kern, T=6, B=3, seed=0):
    rng = np.random.default_rng(seed)
    return (kern.init_params(seed=seed), rng.standard_normal((T, B, I)),
            {"h": 0.5 * rng.standard_normal((B, H))}, rng.standard_normal((T, B, O)))


def test_frozen_params_are_inputs_without_gradients(kern):
    assert kern.frozen == RESERVOIR
    assert kern.trainable == {"W_in": False, "W": False, "b": False, "c": False, "s": True,
                              "W_out": True, "b_out": True}
    assert set(kern.param_shapes) == set(kern.init_params()) == set(kern.trainable)
    params, x, state0, dy = data(kern)
    g = kern.backward(kern.forward(params, x, state0), d_outputs=dy)
    assert set(g.params) == {"s", "W_out", "b_out"}
    with pytest.raises(KeyError, match="missing parameter 'W'"):
        kern.forward({k: v for k, v in params.items() if k != "W"}, x, state0)


def test_gradcheck_checks_only_trainable_params():
    rep = rc.gradcheck(frozen_cell, input_size=I, hidden_size=H, sizes={"O": O}, lengths=[5, 2])
    assert rep.ok, rep
    assert set(rep.errors) == {"s", "W_out", "b_out", "x", "state0.h"}


@pytest.mark.parametrize("lengths", [None, [6, 0, 3]])
def test_kernel_equals_reference(kern, lengths):
    params, x, state0, dy = data(kern, seed=1)
    ref = rc.reference(frozen_cell, input_size=I, hidden_size=H, sizes={"O": O})
    assert ref.frozen == RESERVOIR
    res, rres = kern.forward(params, x, state0, lengths), ref.forward(params, x, state0, lengths)
    np.testing.assert_allclose(res.outputs, rres.outputs, rtol=1e-12, atol=1e-12)
    g, rg = kern.backward(res, d_outputs=dy), ref.backward(rres, d_outputs=dy)
    assert set(g.params) == set(rg.params) == {"s", "W_out", "b_out"}
    for k in g.params:
        np.testing.assert_allclose(g.params[k], rg.params[k], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g.x, rg.x, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(g.state0["h"], rg.state0["h"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(RESERVOIR))
def test_frozen_values_are_used(kern, name):
    """Changing a constant changes the outputs and the gradients that flow through it."""
    params, x, state0, dy = data(kern, seed=2)
    res = kern.forward(params, x, state0)
    g = kern.backward(res, d_outputs=dy)
    other = dict(params, **{name: params[name] + 0.3})
    res2 = kern.forward(other, x, state0)
    g2 = kern.backward(res2, d_outputs=dy)
    assert np.abs(res.outputs - res2.outputs).max() > 1e-3
    assert np.abs(g.x - g2.x).max() > 1e-4


def test_matches_the_same_cell_with_everything_trainable(kern):
    """Declaring params constant changes which gradients exist, not their values."""
    full = rc.compile(trained_cell, input_size=I, hidden_size=H, dtype="float64",
                      sizes={"O": O})
    assert full.frozen == frozenset() and all(full.trainable.values())
    params, x, state0, dy = data(kern, seed=3)
    g = kern.backward(kern.forward(params, x, state0, [6, 1, 4]), d_outputs=dy)
    gf = full.backward(full.forward(params, x, state0, [6, 1, 4]), d_outputs=dy)
    assert set(gf.params) == set(g.params) | RESERVOIR
    for k in g.params:
        np.testing.assert_allclose(g.params[k], gf.params[k], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g.x, gf.x, rtol=1e-12, atol=1e-14)


def c_text(cell):
    return lower(cell, bind_sizes(cell, I, H, {"O": O}), "float64", blas=True)[2].text


def test_generated_c_does_no_gradient_work_for_constants():
    """The weight-gradient GEMMs (RNNC_TN), the bias sums and the dparams accumulations of
    the reservoir's constants are not emitted."""
    frozen, full = c_text(frozen_cell), c_text(trained_cell)
    # full: W_in, W (its part), W_out; frozen: W_out alone
    assert full.count("gemm_big(RNNC_TN") == 3 and frozen.count("gemm_big(RNNC_TN") == 1
    assert full.count("valid_rows(t0") == 3 and frozen.count("valid_rows(t0") == 1
    assert "gpack[RNNC_BIAS_L0" in full and "gpack[RNNC_BIAS_L0" not in frozen
    def accumulates(text, name):
        return re.search(r"dparams\[RNNC_P_%s\b" % name, text) is not None
    for name in ("W_in", "W", "b", "c"):
        assert accumulates(full, name) and not accumulates(frozen, name), name
    for name in ("W_out", "b_out", "s"):
        assert accumulates(frozen, name), name


def test_a_param_both_frozen_and_trainable_is_an_error():
    with pytest.raises(CellError) as err:
        @rc.cell
        def mixed(x, h, p):
            a = p.linear("W", h, trainable=False)
            return {"h": rc.tanh(a + p.linear("W", h) + p.linear("U", x))}
    text = str(err.value)
    assert "'W'" in text and "trainable=False" in text and text.count("test_frozen_params.py:") == 2


@pytest.mark.parametrize("value", [0, 1, "no", None])
def test_trainable_must_be_a_bool(value):
    with pytest.raises(CellError, match="trainable= of parameter 'v' must be True or False"):
        @rc.cell
        def bad(x, h, p):
            return {"h": rc.tanh(p.linear("U", x) + p.vector("v", trainable=value) * h)}


def test_sharing_a_constant_is_fine():
    @rc.cell
    def shared(x, h, p):
        return {"h": rc.tanh(p.linear("W", h, trainable=False) + p.linear("U", x)
                             + p.scalar("k", trainable=False) * p.linear("W", h, trainable=False))}
    k = rc.compile(shared, input_size=2, hidden_size=3, dtype="float64")
    assert k.frozen == {"W", "k"}


# ---------------------------------------------------------------- rc.cells.esn

def test_esn_weights_set_the_spectral_radius():
    k = rc.compile(rc.cells.make_esn(leak=0.5), input_size=2, hidden_size=30, dtype="float64")
    assert k.frozen == {"W_in", "W", "b"}
    p = rc.cells.esn_weights(k, spectral_radius=0.8, input_scale=0.5, seed=3, density=0.5)
    assert set(p) == set(k.param_shapes)
    assert abs(np.max(np.abs(np.linalg.eigvals(p["W"]))) - 0.8) < 1e-9
    assert np.abs(p["W_in"]).max() <= 0.5 and not p["b"].any()
    assert 0.3 < np.mean(p["W"] != 0) < 0.7
    with pytest.raises(ValueError, match="spectral_radius"):
        rc.cells.esn_weights(k, spectral_radius=-1)
    with pytest.raises(ValueError, match="leak"):
        rc.cells.make_esn(leak=0)


def test_esn_leak_follows_its_equation():
    """h[t] = (1 - a) h[t-1] + a tanh(W_in x[t] + W h[t-1] + b), step by step in numpy."""
    a = 0.3
    k = rc.compile(rc.cells.make_esn(leak=a), input_size=2, hidden_size=6, dtype="float64")
    p = rc.cells.esn_weights(k, spectral_radius=0.9, bias_scale=0.1, seed=0)
    rng = np.random.default_rng(0)
    x, h = rng.standard_normal((5, 1, 2)), 0.1 * rng.standard_normal((1, 6))
    y, _ = k.infer(p, x, {"h": h})
    for t in range(5):
        h = (1 - a) * h + a * np.tanh(x[t] @ p["W_in"].T + h @ p["W"].T + p["b"])
        np.testing.assert_allclose(y[t], h, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- against torch

def test_reservoir_equals_torch_with_fixed_weights(kern):
    """Outputs, final state, the trainable gradients, d x and d state0 (with lengths) equal
    torch autograd where the constants have requires_grad=False, to 1e-9."""
    torch = pytest.importorskip("torch")
    T, B = 7, 4
    rng = np.random.default_rng(5)
    params = kern.init_params(seed=5)
    x, h0 = rng.standard_normal((T, B, I)), 0.5 * rng.standard_normal((B, H))
    dy, dh = rng.standard_normal((T, B, O)), rng.standard_normal((B, H))
    worst = 0.0
    for lengths in (None, [T, 0, 2, T - 1]):
        res = kern.forward(params, x, {"h": h0}, lengths)
        g = kern.backward(res, d_outputs=dy, d_states={"h": dh})
        p = {k: torch.tensor(v, dtype=torch.float64, requires_grad=k not in RESERVOIR)
             for k, v in params.items()}
        xt = torch.tensor(x, requires_grad=True)
        h = h0t = torch.tensor(h0, requires_grad=True)
        lens = torch.full((B,), T) if lengths is None else torch.tensor(lengths)
        ys = []
        for t in range(T):
            u = torch.tanh(xt[t] @ p["W_in"].T + h @ p["W"].T + p["b"])
            h_new = p["c"] * h + LEAK * (p["s"] * u - h)
            y = h_new @ p["W_out"].T + p["b_out"]
            valid = (t < lens)[:, None]
            h = torch.where(valid, h_new, h)
            ys.append(torch.where(valid, y, torch.zeros_like(y)))
        ys = torch.stack(ys)
        loss = (ys * torch.tensor(dy)).sum() + (h * torch.tensor(dh)).sum()
        trained = [k for k in params if k not in RESERVOIR]
        grads = torch.autograd.grad(loss, [p[k] for k in trained] + [xt, h0t])
        assert sorted(g.params) == sorted(trained)
        pairs = [(res.outputs, ys), (res.states["h"], h)] + \
            [(g.params[k], d) for k, d in zip(trained, grads)] + \
            [(g.x, grads[-2]), (g.state0["h"], grads[-1])]
        for got, want in pairs:
            want = want.detach().numpy()
            err = np.max(np.abs(got - want)) / max(1.0, np.max(np.abs(want)))
            worst = max(worst, err)
    print("reservoir vs torch, worst relative error %.2e" % worst)
    assert worst <= 1e-9


def test_esn_cell_equals_torch():
    """rc.cells.esn (leak 0.4): no parameter gradient at all; d x and d state0 equal torch."""
    torch = pytest.importorskip("torch")
    a, T, B = 0.4, 6, 3
    k = rc.compile(rc.cells.make_esn(leak=a), input_size=I, hidden_size=8, dtype="float64")
    p = rc.cells.esn_weights(k, spectral_radius=0.9, bias_scale=0.2, seed=1)
    rng = np.random.default_rng(1)
    x, h0, dy = rng.standard_normal((T, B, I)), rng.standard_normal((B, 8)), rng.standard_normal((T, B, 8))
    lengths = [T, 1, 4]
    res = k.forward(p, x, {"h": h0}, lengths)
    g = k.backward(res, d_outputs=dy)
    assert g.params == {}
    pt = {n: torch.tensor(v) for n, v in p.items()}          # requires_grad=False
    xt, h0t = torch.tensor(x, requires_grad=True), torch.tensor(h0, requires_grad=True)
    h, ys = h0t, []
    for t in range(T):
        new = (1 - a) * h + a * torch.tanh(xt[t] @ pt["W_in"].T + h @ pt["W"].T + pt["b"])
        valid = (t < torch.tensor(lengths))[:, None]
        h = torch.where(valid, new, h)
        ys.append(torch.where(valid, new, torch.zeros_like(new)))
    loss = (torch.stack(ys) * torch.tensor(dy)).sum()
    dx, dh0 = torch.autograd.grad(loss, [xt, h0t])
    np.testing.assert_allclose(res.outputs, torch.stack(ys).detach().numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(g.x, dx.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(g.state0["h"], dh0.numpy(), rtol=0, atol=1e-10)


# ---------------------------------------------------------------- models and adapters

def test_models_train_only_trainable_params():
    """rm.SequenceModel over a reservoir: the gradient tree has no constants, and an
    optimizer step leaves them as they were while the readout moves."""
    from rnncompiler import models as rm
    model = rm.SequenceModel(frozen_cell, H, input_size=I, output_size=1, readout="steps",
                             loss="mse", dtype="float64", sizes={"O": O})
    params = model.init(seed=0)
    rng = np.random.default_rng(0)
    x, target = rng.standard_normal((6, 3, I)), rng.standard_normal((6, 3, 1))
    loss, grads = model.loss_and_grads(params, x, target)
    flat_g, flat_p = rm.flatten(grads), rm.flatten(params)
    constants = ["rnn/layer0/fwd/cell/" + k for k in sorted(RESERVOIR)]
    assert set(constants) <= set(flat_p) and not set(constants) & set(flat_g)
    assert "rnn/layer0/fwd/cell/W_out" in flat_g and "head/W" in flat_g
    kept = {p: flat_p[p].copy() for p in constants}
    moved = {p: flat_p[p].copy() for p in flat_g}
    rm.Adam(1e-2).step(params, grads)
    flat_p = rm.flatten(params)
    for p in constants:
        np.testing.assert_array_equal(flat_p[p], kept[p])
    assert all(np.abs(flat_p[p] - moved[p]).max() > 0 for p in flat_g)


def test_torch_module_keeps_constants_as_buffers():
    torch = pytest.importorskip("torch")
    m = rc.torch.RNN(frozen_cell, I, H, sizes={"O": O}, dtype=torch.float64)
    assert {n for n, _ in m.named_parameters()} == {"s_l0", "W_out_l0", "b_out_l0"}
    assert {n for n, _ in m.named_buffers()} == {k + "_l0" for k in RESERVOIR}
    assert all(b.abs().max() > 0 for b in m.buffers())
    x = torch.randn(6, 2, I, dtype=torch.float64, requires_grad=True)
    y, _ = m(x)
    y.sum().backward()
    assert all(p.grad is not None for p in m.parameters()) and x.grad.abs().max() > 0
    # functional form: a constant passed with requires_grad gets no gradient (None)
    esn = rc.torch.RNN(rc.cells.esn, I, H, dtype=torch.float64)
    assert not list(esn.parameters()) and set(esn.state_dict()) == {"W_in_l0", "W_l0", "b_l0"}
    x.grad = None
    esn(x)[0].sum().backward()
    assert x.grad.abs().max() > 0


def test_jax_gives_zero_cotangents_to_constants(kern):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import rnncompiler.jax as rcj
    params, x, state0, dy = data(kern, seed=4)
    jp = {k: jnp.asarray(v) for k, v in params.items()}

    def loss(p):
        y, _ = rcj.rnn(kern, p, jnp.asarray(x), {"h": jnp.asarray(state0["h"])})
        return jnp.sum(y * dy)
    g = jax.grad(loss)(jp)
    want = kern.backward(kern.forward(params, x, state0), d_outputs=dy).params
    for k in params:
        if k in RESERVOIR:
            assert not np.asarray(g[k]).any()
        else:
            np.testing.assert_allclose(np.asarray(g[k]), want[k], rtol=1e-12, atol=1e-14)


def test_rtrl_reports_only_trainable_params(kern):
    params, x, state0, dy = data(kern, seed=6)
    g = kern.backward(kern.forward(params, x, state0, [6, 2, 0]), d_outputs=dy)
    rt = rc.rtrl(frozen_cell, input_size=I, hidden_size=H, sizes={"O": O})
    assert rt.frozen == RESERVOIR
    gt = rt.gradients(params, x, state0, np.array([6, 2, 0]), dy)
    assert set(gt.params) == set(g.params) == {"s", "W_out", "b_out"}
    for k in g.params:
        np.testing.assert_allclose(gt.params[k], g.params[k], rtol=1e-10, atol=1e-12)
