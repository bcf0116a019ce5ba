"""A clockwork RNN (Koutník et al. 2014): the hidden units are g modules of M units with
periods T_1 < T_2 < ... (1, 2, 4, 8 here); module i is updated only at the steps t with
t mod T_i = 0 and keeps its value otherwise, and reads the modules at least as slow as
itself (the hidden weights are block upper-triangular):

    a_i[t] = W_I^i x[t] + b_i + W_H^i [h_i[t-1]; ...; h_g[t-1]]
    h_i[t] = tanh(a_i[t])   if t mod T_i = 0,   else h_i[t-1]

The step index is `rc.step()`, a state `step` the cell carries: truncated BPTT and ragged
batches keep the clock right. The script checks the cell against finite differences and
against the same equations in PyTorch (float64, every gradient, ragged batch), then
trains it and an Elman network of about the same size to generate a waveform with slow
and fast parts from a single pulse (the sequence-generation task of the paper), and
prints both errors.

    python examples/clockwork.py --iters 1500
"""
import argparse

import numpy as np
import sympy

import rnncompiler as rc
from rnncompiler import models as rm

PERIODS = (1, 2, 4, 8)


def make_clockwork(periods=PERIODS):
    """A clockwork RNN with modules of M units (a size bound at rc.compile) and the given
    periods, slowest last; the state h has len(periods)·M units."""
    g = len(periods)

    @rc.cell(states={"h": "%d*M" % g}, output="h")
    def clockwork(x, h, p):
        t = rc.step()
        modules = rc.split(h, ("M",) * g)
        new = []
        for i, period in enumerate(periods):
            a = (p.linear("W_I%d" % i, x, size="M", bias="b%d" % i)
                 + p.linear("W_H%d" % i, rc.concat(*modules[i:]), size="M"))
            tick = rc.elementwise(lambda s, T=period: sympy.Piecewise(
                (1, sympy.Eq(sympy.Mod(s, T), 0)), (0, True)), t)
            new.append(tick * rc.tanh(a) + (1 - tick) * modules[i])
        return {"h": rc.concat(*new)}
    return clockwork


def torch_run(params, x, state0, lengths, dy, periods=PERIODS):
    """The same equations in PyTorch, step by step, rows past their length held:
    (outputs, final states, parameter gradients, dx, dstate0)."""
    import torch
    T, B, _ = x.shape
    g = len(periods)
    M = params["b0"].shape[0]
    P = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    xt = torch.tensor(x, requires_grad=True)
    h0 = torch.tensor(state0["h"], requires_grad=True)
    step0 = torch.tensor(state0["step"])
    h, step, ys = h0, step0[:, 0], []
    for t in range(T):
        live = torch.as_tensor(t < np.asarray(lengths))[:, None]
        parts = [h[:, i * M:(i + 1) * M] for i in range(g)]
        new = []
        for i, period in enumerate(periods):
            a = (xt[t] @ P["W_I%d" % i].T + P["b%d" % i]
                 + torch.cat(parts[i:], 1) @ P["W_H%d" % i].T)
            tick = (torch.remainder(step, period) == 0).double()[:, None]
            new.append(tick * torch.tanh(a) + (1 - tick) * parts[i])
        h = torch.where(live, torch.cat(new, 1), h)
        step = torch.where(live[:, 0], step + 1, step)
        ys.append(torch.where(live, h, torch.zeros_like(h)))
    y = torch.stack(ys)
    (y * torch.as_tensor(dy)).sum().backward()
    return (y.detach().numpy(), {"h": h.detach().numpy(), "step": step[:, None].numpy()},
            {k: v.grad.numpy() for k, v in P.items()}, xt.grad.numpy(), h0.grad.numpy())


def largest_error_against_torch(M=2, I=2, T=9, B=3, seed=0):
    """The largest relative error of the compiled cell against torch_run, float64."""
    kern = rc.compile(make_clockwork(), I, M * len(PERIODS), "float64", sizes={"M": M})
    rng = np.random.default_rng(seed)
    params = kern.init_params(seed=seed)
    x = rng.standard_normal((T, B, I))
    state0 = {"h": rng.standard_normal((B, kern.state_sizes["h"])),
              "step": np.array([[0.0], [3.0], [5.0]][:B])}          # clocks at other phases
    lengths = np.array([T, 0, T - 3][:B])
    dy = rng.standard_normal((T, B, kern.output_size))
    res = kern.forward(params, x, state0, lengths=lengths)
    g = kern.backward(res, dy)
    y, states, grads, dx, dh0 = torch_run(params, x, state0, lengths, dy)

    def rel(a, b):
        return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))
    errors = [rel(res.outputs, y), rel(g.x, dx), rel(g.state0["h"], dh0),
              rel(g.state0["step"], np.zeros_like(g.state0["step"]))]
    errors += [rel(res.states[s], states[s]) for s in states]
    errors += [rel(g.params[k], grads[k]) for k in grads]
    return max(errors)


def train(cell, hidden, sizes, target, iters, lr, seed=0):
    """Fit the cell and a linear readout to generate `target` (T,) from a pulse at t = 0;
    returns the mean squared error of the last tenth of the updates."""
    T = target.shape[0]
    kern = rc.compile(cell, 1, hidden, "float64", sizes=sizes)
    rng = np.random.default_rng(seed)
    params = {"cell": kern.init_params(seed=seed),
              "readout": 0.1 * rng.standard_normal(kern.output_size), "bias": np.zeros(1)}
    x = np.zeros((T, 1, 1))
    x[0] = 1.0
    opt, losses = rm.Adam(lr), []
    for _ in range(iters):
        res = kern.forward(params["cell"], x)
        pred = res.outputs[:, 0] @ params["readout"] + params["bias"]
        err = pred - target
        losses.append(float(np.mean(err ** 2)))
        d = 2 * err / err.size
        grads = kern.backward(res, d_outputs=(d[:, None] * params["readout"][None, :])[:, None])
        opt.step(params, {"cell": grads.params, "readout": res.outputs[:, 0].T @ d,
                          "bias": np.array([d.sum()])})
    return float(np.mean(losses[-max(1, iters // 10):]))


@rc.cell(states=("h",))
def elman(x, h, p):
    return {"h": rc.tanh(p.linear("W", rc.concat(h, x), bias="b"))}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iters", type=int, default=1500)
    ap.add_argument("--module", type=int, default=8, help="units per module (M)")
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.01)
    args = ap.parse_args(argv)

    cell = make_clockwork()
    report = rc.gradcheck(cell, input_size=2, hidden_size=8, sizes={"M": 2}, T=9, B=2)
    print("finite differences:", "ok" if report.ok else report)
    assert report.ok
    try:
        import torch  # noqa: F401
        err = largest_error_against_torch()
        print("largest relative error against the PyTorch equations, float64: %.1e" % err)
        assert err < 1e-9
    except ImportError:
        print("torch is not installed: the comparison with PyTorch is skipped")

    t = np.arange(args.steps)
    target = 0.4 * np.sin(2 * np.pi * t / args.steps) + 0.3 * np.sin(2 * np.pi * t / 8)
    M, g = args.module, len(PERIODS)
    # an Elman network with about as many weights as the clockwork one (block-triangular)
    n_cw = sum(M * (1 + 1 + M * (g - i)) for i in range(g))
    H = int(np.sqrt(1 + n_cw) - 1)          # Elman: H (H + 1) + H weights
    cw = train(cell, M * g, {"M": M}, target, args.iters, args.lr)
    el = train(elman, H, None, target, args.iters, args.lr)
    print("generating %d steps from a pulse, %d updates: mean squared error %.2e (clockwork, "
          "%d modules of %d) against %.2e (Elman, %d units, about as many weights); the "
          "target's variance is %.2e" % (args.steps, args.iters, cw, g, M, el, H, target.var()))


if __name__ == "__main__":
    main()
