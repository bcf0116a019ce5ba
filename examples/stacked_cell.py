"""A stack of L LSTM layers written as ONE cell, for L chosen when the program runs: the
cell takes its states as a list (`def stacked(x, *states, p)`), built in a loop, one
(h, c) pair per layer, and layer l reads layer l-1's new h as its input:

    z_1[t] = x[t],   z_l[t] = h_{l-1}[t]
    i_l = σ(W_ii^l z_l + b_ii^l + W_hi^l h_l[t-1] + b_hi^l)    (f_l, o_l with σ, g_l with tanh)
    c_l[t] = f_l ⊙ c_l[t-1] + i_l ⊙ g_l,   h_l[t] = o_l ⊙ tanh(c_l[t]);   y[t] = h_L[t]

These are torch.nn.LSTM(num_layers=L)'s equations, and the example checks the compiled
cell against it in float64 (outputs, final states and every gradient, with a ragged
batch), and against finite differences; then it times one forward+backward of each.

    python examples/stacked_cell.py --layers 3 --hidden 64
"""
import argparse
import time

import numpy as np

import rnncompiler as rc

GATES = "ifgo"


def stacked_lstm(layers):
    """An L-layer LSTM (torch.nn.LSTM's form and gate order) as one cell with 2L states:
    h0, c0, h1, c1, ... (layer 0 reads x)."""
    names = [name for l in range(layers) for name in ("h%d" % l, "c%d" % l)]

    @rc.cell(states=names, output="h%d" % (layers - 1))
    def stacked(x, *states, p):
        new, below = {}, x
        for l in range(layers):
            h, c = states[2 * l], states[2 * l + 1]

            def gate(k):
                return (p.linear("W_i%s%d" % (k, l), below, bias="b_i%s%d" % (k, l))
                        + p.linear("W_h%s%d" % (k, l), h, bias="b_h%s%d" % (k, l)))
            i, f = rc.sigmoid(gate("i")), rc.sigmoid(gate("f"))
            g, o = rc.tanh(gate("g")), rc.sigmoid(gate("o"))
            c_new = f * c + i * g
            new["h%d" % l], new["c%d" % l] = o * rc.tanh(c_new), c_new
            below = new["h%d" % l]
        return new
    return stacked


def to_torch_lstm(params, layers, input_size, hidden_size):
    """torch.nn.LSTM(num_layers=layers) in float64 holding the cell's weights."""
    import torch
    lstm = torch.nn.LSTM(input_size, hidden_size, layers, dtype=torch.float64)
    with torch.no_grad():
        for l in range(layers):
            for kind in "ih":
                getattr(lstm, "weight_%sh_l%d" % (kind, l)).copy_(torch.as_tensor(
                    np.concatenate([params["W_%s%s%d" % (kind, k, l)] for k in GATES])))
                getattr(lstm, "bias_%sh_l%d" % (kind, l)).copy_(torch.as_tensor(
                    np.concatenate([params["b_%s%s%d" % (kind, k, l)] for k in GATES])))
    return lstm


def torch_gradients(params, x, state0, lengths, dy, layers):
    """torch.nn.LSTM's outputs, final states and gradients for the same data: rows of the
    batch are run one by one up to their length (outputs past it are 0, states held)."""
    import torch
    T, B, I = x.shape
    H = dy.shape[2]
    lstm = to_torch_lstm(params, layers, I, H)
    xt = torch.tensor(x, requires_grad=True)
    h0 = torch.tensor(np.stack([state0["h%d" % l] for l in range(layers)]), requires_grad=True)
    c0 = torch.tensor(np.stack([state0["c%d" % l] for l in range(layers)]), requires_grad=True)
    ys, hT, cT = [], [], []
    for b in range(B):
        n = int(lengths[b])
        if n == 0:
            ys.append(torch.zeros(T, H, dtype=torch.float64))
            hT.append(h0[:, b])
            cT.append(c0[:, b])
            continue
        y, (h, c) = lstm(xt[:n, b:b + 1], (h0[:, b:b + 1].contiguous(), c0[:, b:b + 1].contiguous()))
        ys.append(torch.cat([y[:, 0], torch.zeros(T - n, H, dtype=torch.float64)]))
        hT.append(h[:, 0])
        cT.append(c[:, 0])
    y = torch.stack(ys, dim=1)
    hT, cT = torch.stack(hT, dim=1), torch.stack(cT, dim=1)
    (y * torch.as_tensor(dy)).sum().backward()
    grads = {}
    for l in range(layers):
        for kind in "ih":
            W = getattr(lstm, "weight_%sh_l%d" % (kind, l)).grad.numpy()
            b = getattr(lstm, "bias_%sh_l%d" % (kind, l)).grad.numpy()
            for k, gate in enumerate(GATES):
                grads["W_%s%s%d" % (kind, gate, l)] = W[k * H:(k + 1) * H]
                grads["b_%s%s%d" % (kind, gate, l)] = b[k * H:(k + 1) * H]
    states = {("h%d" % l): hT[l].detach().numpy() for l in range(layers)}
    states.update({("c%d" % l): cT[l].detach().numpy() for l in range(layers)})
    d0 = {("h%d" % l): h0.grad[l].numpy() for l in range(layers)}
    d0.update({("c%d" % l): c0.grad[l].numpy() for l in range(layers)})
    return y.detach().numpy(), states, grads, xt.grad.numpy(), d0


def largest_error_against_torch(layers, input_size, hidden_size, T=5, B=3, seed=0):
    """The largest relative error of the compiled cell against torch.nn.LSTM, float64,
    over outputs, final states and every gradient (params, x, state0), ragged batch."""
    cell = stacked_lstm(layers)
    kern = rc.compile(cell, input_size, hidden_size, "float64")
    rng = np.random.default_rng(seed)
    params = {k: rng.uniform(-0.5, 0.5, v.shape) for k, v in kern.init_params(seed=seed).items()}
    x = rng.standard_normal((T, B, input_size))
    state0 = {s: rng.standard_normal((B, n)) for s, n in kern.state_sizes.items()}
    lengths = np.array([T, 0, T - 2][:B])
    dy = rng.standard_normal((T, B, hidden_size))
    res = kern.forward(params, x, state0, lengths=lengths)
    g = kern.backward(res, dy)
    y, states, grads, dx, d0 = torch_gradients(params, x, state0, lengths, dy, layers)

    def rel(a, b):
        return float(np.max(np.abs(a - b)) / max(1.0, float(np.max(np.abs(b)))))
    errors = [rel(res.outputs, y), rel(g.x, dx)]
    errors += [rel(res.states[s], states[s]) for s in states]
    errors += [rel(g.params[k], grads[k]) for k in grads]
    errors += [rel(g.state0[s], d0[s]) for s in d0]
    return max(errors)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--layers", type=int, default=3)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    args = ap.parse_args(argv)

    cell = stacked_lstm(args.layers)
    print("%s: %d states (%s)" % (cell.name, len(cell.states), ", ".join(cell.states)))
    report = rc.gradcheck(cell, input_size=3, hidden_size=4, T=4, B=2)
    print("finite differences:", "ok" if report.ok else report)
    assert report.ok
    try:
        import torch
    except ImportError:
        print("torch is not installed: the comparison with torch.nn.LSTM is skipped")
        return
    err = largest_error_against_torch(args.layers, 3, 4)
    print("largest relative error against torch.nn.LSTM(num_layers=%d), float64: %.1e"
          % (args.layers, err))
    assert err < 1e-9

    torch.set_num_threads(1)
    H, T, B = args.hidden, args.steps, args.batch
    kern = rc.compile(cell, H, H, "float32")
    params = kern.init_params(seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, H)).astype(np.float32)
    dy = np.ones((T, B, H), np.float32)
    lstm = to_torch_lstm({k: v.astype(np.float64) for k, v in params.items()},
                         args.layers, H, H).float()
    xt = torch.tensor(x, requires_grad=True)

    def ours():
        kern.backward(kern.forward(params, x), dy)

    def theirs():
        lstm.zero_grad()
        (lstm(xt)[0] * torch.as_tensor(dy)).sum().backward()
    times = {}
    for name, fn in (("rnncompiler", ours), ("torch.nn.LSTM", theirs)) * 3:
        t0 = time.perf_counter()
        fn()
        times.setdefault(name, []).append(time.perf_counter() - t0)
    for name, t in times.items():
        print("%-14s forward+backward, T=%d B=%d H=%d, %d layers: %.2f ms (best of 3)"
              % (name, T, B, H, args.layers, 1e3 * min(t)))


if __name__ == "__main__":
    main()
