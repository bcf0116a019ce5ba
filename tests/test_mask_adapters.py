"""A cell with masks in the torch and JAX adapters: torch's training mode draws them (the
backward differentiates the run that drew them), eval mode and JAX use expectations."""
import numpy as np
import pytest

import rnncompiler as rc

torch = pytest.importorskip("torch")


@rc.cell(states=("h",))
def dropped_elman(x, h, p):
    return {"h": rc.tanh(p.linear("W", rc.concat(rc.dropout(h, 0.5), x), bias="b"))}


def _module():
    torch.manual_seed(0)
    return rc.torch.RNN(dropped_elman, 3, 4, dtype=torch.float64)


def test_torch_training_mode_draws_masks_and_eval_mode_uses_expectations():
    m = _module()
    x = torch.randn(6, 2, 3, dtype=torch.float64)
    kern = rc.compile(dropped_elman, input_size=3, hidden_size=4, dtype="float64")
    params = {n: getattr(m, n + "_l0").detach().numpy() for n in kern.param_shapes}
    expected, _ = kern.infer(params, x.numpy())
    m.eval()
    out, _ = m(x)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-12)
    m.train()
    outs = [m(x)[0].detach().numpy() for _ in range(3)]
    assert any(not np.allclose(o, expected) for o in outs)      # masks at work


def test_torch_gradients_in_training_are_those_of_the_masks_drawn():
    """Central differences cannot see random masks; instead the gradient of a run equals
    the kernel's gradient with the masks that run used (the tape holds them)."""
    m = _module()
    x = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    out, _ = m(x)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_jax_runs_masks_at_their_expectations_in_both_passes():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    kern = rc.compile(dropped_elman, input_size=3, hidden_size=4, dtype="float64")
    params = kern.init_params(seed=1)
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    y, _ = rc.jax.rnn(kern, params, x)
    np.testing.assert_allclose(np.asarray(y), kern.infer(params, x)[0], rtol=1e-12)
    dx = jax.grad(lambda xx: rc.jax.rnn(kern, params, xx)[0].sum())(x)
    g = kern.backward(kern.forward(params, x, training=False), np.ones((5, 2, 4)))
    np.testing.assert_allclose(np.asarray(dx), g.x, rtol=1e-12)
