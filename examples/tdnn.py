"""A time-delay neural network (Waibel et al. 1989) as a recurrent cell: its state is a
shift register holding the last k-1 input frames, and each output reads a window of k
frames, the newest one x[t] included:

    w[t] = [r[t-1]; x[t]]                       the window: k frames of size I, oldest first
    y[t] = tanh(W w[t] + b)                     W: (H, k·I)
    r[t] = w[t][I:]                             drop the oldest frame, keep k-1

which is a causal 1-D convolution over time (torch.nn.Conv1d with kernel size k) whose
left padding is the initial state r[-1] = state0. The example checks the cell against
finite differences and against torch.nn.Conv1d in float64 — outputs, final state and
every gradient, with a ragged batch — then learns a delayed moving average of a noisy
signal by gradient descent on the window's weights.

    python examples/tdnn.py --delays 4
"""
import argparse

import numpy as np

import rnncompiler as rc


def make_tdnn(delays):
    """A TDNN over a window of `delays` frames (>= 2) as a cell with one state r of
    (delays-1)·I units."""
    if not isinstance(delays, int) or delays < 2:
        raise ValueError("delays: expected an int >= 2 (the window's frames), got %r" % (delays,))

    @rc.cell(states={"r": "%d*I" % (delays - 1)})
    def tdnn(x, r, p):
        w = rc.concat(r, x)
        y = rc.tanh(p.linear("W", w, bias="b"))
        return {"r": w["I":]}, y
    return tdnn


def torch_run(params, x, state0, lengths, dy, delays):
    """The same network as torch.nn.Conv1d over each row's frames [state0; x[:n]]:
    (outputs, final state, gradients of W and b, of x, of state0)."""
    import torch
    T, B, I = x.shape
    H = params["b"].shape[0]
    conv = torch.nn.Conv1d(I, H, delays, dtype=torch.float64)
    with torch.no_grad():   # W's columns are the frames, oldest first; Conv1d's last axis
        conv.weight.copy_(torch.as_tensor(params["W"].reshape(H, delays, I).transpose(0, 2, 1)))
        conv.bias.copy_(torch.as_tensor(params["b"]))
    xt = torch.tensor(x, requires_grad=True)
    r0 = torch.tensor(state0, requires_grad=True)
    ys, rT = [], []
    for b in range(B):
        n = int(lengths[b])
        frames = torch.cat([r0[b].reshape(delays - 1, I), xt[:n, b]])      # (k-1+n, I)
        y = torch.tanh(conv(frames.T[None]))[0].T if n else torch.zeros(0, H, dtype=torch.float64)
        ys.append(torch.cat([y, torch.zeros(T - n, H, dtype=torch.float64)]))
        rT.append(frames[n:].reshape(-1))
    y = torch.stack(ys, 1)
    (y * torch.as_tensor(dy)).sum().backward()
    W = conv.weight.grad.numpy().transpose(0, 2, 1).reshape(H, delays * I)
    return (y.detach().numpy(), torch.stack(rT).detach().numpy(), {"W": W, "b": conv.bias.grad.numpy()},
            xt.grad.numpy(), r0.grad.numpy())


def largest_error_against_torch(delays, input_size=2, hidden_size=3, T=6, B=3, seed=0):
    """The largest relative error of the compiled cell against torch.nn.Conv1d, float64."""
    kern = rc.compile(make_tdnn(delays), input_size, hidden_size, "float64")
    rng = np.random.default_rng(seed)
    params = kern.init_params(seed=seed)
    x = rng.standard_normal((T, B, input_size))
    state0 = rng.standard_normal((B, (delays - 1) * input_size))
    lengths = np.array([T, 0, T - 2][:B])
    dy = rng.standard_normal((T, B, hidden_size))
    res = kern.forward(params, x, {"r": state0}, lengths=lengths)
    g = kern.backward(res, dy)
    y, rT, grads, dx, dr0 = torch_run(params, x, state0, lengths, dy, delays)

    def rel(a, b):
        return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))
    return max([rel(res.outputs, y), rel(res.states["r"], rT), rel(g.x, dx),
                rel(g.state0["r"], dr0)] + [rel(g.params[k], grads[k]) for k in grads])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--delays", type=int, default=4)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args(argv)

    cell = make_tdnn(args.delays)
    report = rc.gradcheck(cell, input_size=2, hidden_size=3, T=5, B=2)
    print("finite differences:", "ok" if report.ok else report)
    assert report.ok
    try:
        import torch  # noqa: F401
        err = largest_error_against_torch(args.delays)
        print("largest relative error against torch.nn.Conv1d, float64: %.1e" % err)
        assert err < 1e-9
    except ImportError:
        print("torch is not installed: the comparison with torch.nn.Conv1d is skipped")

    # learn y[t] = mean of x[t-k+1..t] (a moving average, here inside tanh's linear range)
    k, T, B = args.delays, args.steps, args.batch
    kern = rc.compile(cell, 1, 1, "float64")
    rng = np.random.default_rng(1)
    params = {name: 0.1 * rng.standard_normal(v.shape) for name, v in kern.init_params(seed=1).items()}
    losses = []
    for it in range(args.iters):
        x = 0.5 * rng.standard_normal((T, B, 1))
        padded = np.concatenate([np.zeros((k - 1, B, 1)), x])
        target = np.tanh(np.stack([padded[t:t + k].mean(axis=0) for t in range(T)]))
        res = kern.forward(params, x)
        err = res.outputs - target
        losses.append(float((err ** 2).mean()))
        g = kern.backward(res, 2 * err / err.size)
        for name in params:
            params[name] -= 0.5 * g.params[name]
    print("mean squared error: %.2e (first 10 updates) -> %.2e (last 10); learned window "
          "weights %s, the average's is %.3f each"
          % (np.mean(losses[:10]), np.mean(losses[-10:]),
             np.array2string(params["W"][0], precision=3), 1 / k))


if __name__ == "__main__":
    main()
