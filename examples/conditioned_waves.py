"""Sequence generation conditioned on a per-sequence context: one LSTM learns K waveforms
and produces the one its context vector (a one-hot class, given once per sequence and
constant over time) asks for. The context reaches every gate through the concatenation
[h[t-1]; x[t]; e]:

    f[t] = σ(W_f [h[t-1]; x[t]; e] + b_f)      (i, g, o alike)
    c[t] = f[t] ⊙ c[t-1] + i[t] ⊙ g[t]
    h[t] = o[t] ⊙ tanh(c[t]),   y[t] = W_y h[t] + b_y

and its gradient dL/de = Σ_t dL/de[t] is summed over the steps by the kernel. The input
x[t] is the previous sample (teacher forcing), y[t] the prediction of the next one. The
script gradchecks the cell, trains it and the same LSTM without the context, and prints
both errors on the first steps of a sequence, where only the context tells the waves apart,
and over whole sequences run free (each prediction fed back as the next input).

    python examples/conditioned_waves.py --iters 400
"""
import argparse
import sys

import numpy as np

import rnncompiler as rc
from rnncompiler.models.optim import Adam


def make_cell(with_context):
    """The LSTM above, with the context e or without it."""
    def body(x, e, h, c, p):
        z = rc.concat(h, x, e) if e is not None else rc.concat(h, x)
        f = rc.sigmoid(p.linear("W_f", z, bias="b_f"))
        i = rc.sigmoid(p.linear("W_i", z, bias="b_i"))
        g = rc.tanh(p.linear("W_g", z, bias="b_g"))
        o = rc.sigmoid(p.linear("W_o", z, bias="b_o"))
        c_new = f * c + i * g
        h_new = o * rc.tanh(c_new)
        return {"h": h_new, "c": c_new}, p.linear("W_y", h_new, size=1, bias="b_y")

    if with_context:
        @rc.cell(states=("h", "c"), context={"e": "K"})
        def wave_lstm(x, e, h, c, p):
            return body(x, e, h, c, p)
        return wave_lstm

    @rc.cell(states=("h", "c"))
    def plain_lstm(x, h, c, p):
        return body(x, None, h, c, p)
    return plain_lstm


def waves(classes, steps):
    """(steps + 1, B) samples of each row's waveform: K shapes of different period."""
    t = np.arange(steps + 1)[:, None]
    k = classes[None, :]
    period = 6.0 + 4.0 * k
    phase = 2 * np.pi * t / period
    square = np.sign(np.sin(phase)) * 0.5
    sine = 0.8 * np.sin(phase)
    return np.where(k % 2 == 0, sine, square)


def batch(rng, K, B, steps):
    classes = rng.integers(0, K, B)
    w = waves(classes, steps)
    x, target = w[:-1, :, None], w[1:, :, None]
    return x, target, np.eye(K)[classes]


def run(kern, params, x, onehot):
    ctx = {"e": onehot} if kern.context else None
    return kern.forward(params, x, context=ctx, seed=None)


def free_run(kern, params, first, onehot, steps):
    """Each prediction fed back as the next input, from the first sample."""
    ctx = {"e": onehot} if kern.context else None
    x_t, states, out = first, None, []
    for _ in range(steps):
        y_t, states = kern.step(params, x_t, states, context=ctx)
        out.append(y_t)
        x_t = y_t
    return np.stack(out)


def train(kern, args, rng):
    params = kern.init_params(seed=args.seed)
    opt = Adam(lr=args.lr)
    losses = []
    for it in range(args.iters):
        x, target, onehot = batch(rng, args.classes, args.batch, args.steps)
        res = run(kern, params, x, onehot)
        diff = res.outputs - target
        g = kern.backward(res, 2 * diff / diff.size)
        opt.step(params, g.params)          # in place
        losses.append(float(np.mean(diff ** 2)))
        if it % max(1, args.iters // 5) == 0:
            print("  %-12s iter %4d  mse %.4f" % (kern.name, it, losses[-1]))
    if np.mean(losses[-5:]) >= np.mean(losses[:5]):
        print("FAILED: the training loss of %s did not fall" % kern.name)
        sys.exit(1)
    return params


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--classes", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=24)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=400)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    report = rc.gradcheck(make_cell(True), input_size=1, hidden_size=4,
                          sizes={"K": args.classes}, lengths=[5, 3])
    print("gradcheck of the context LSTM (context gradient summed over time): %s"
          % ("OK" if report.ok else "FAILED\n%s" % report))

    results = {}
    for with_context in (True, False):
        kern = rc.compile(make_cell(with_context), input_size=1, hidden_size=args.hidden,
                          sizes={"K": args.classes}, dtype="float64")
        params = train(kern, args, np.random.default_rng(args.seed))
        x, target, onehot = batch(np.random.default_rng(args.seed + 1), args.classes, 256,
                                  args.steps)
        y = run(kern, params, x, onehot).outputs
        early = float(np.mean((y[:4] - target[:4]) ** 2))
        free = free_run(kern, params, x[0], onehot, args.steps)
        results[kern.name] = (early, float(np.mean((free - target) ** 2)))
    print("\nmse on held-out sequences   first 4 steps   run free")
    for name, (early, free) in results.items():
        print("  %-24s %10.4f   %10.4f" % (name, early, free))


if __name__ == "__main__":
    main()
