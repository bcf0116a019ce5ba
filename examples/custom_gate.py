"""A new gate variant in ten lines: a GRU-like cell whose update gate is a Gaussian bump
of its pre-activation, with a learnable temperature; verified and then trained a little
to copy a delayed input (plain SGD over whole sequences)."""
import argparse

import numpy as np
import sympy

import rnncompiler as rc


@rc.cell(states=("h",))
def bump_gru(x, h, p):
    z = rc.concat(h, x)
    a = p.linear("W_u", z, bias="b_u")
    u = rc.elementwise(lambda v, s: sympy.exp(-(v * s) ** 2), a, p.scalar("temperature"))
    n = rc.tanh(p.linear("W_n", z, bias="b_n"))
    return {"h": u * h + (1 - u) * n}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--hidden", type=int, default=16)
    args = ap.parse_args(argv)

    report = rc.gradcheck(bump_gru, input_size=2, hidden_size=4)
    print(report)
    assert report.ok
    kern = rc.compile(bump_gru, input_size=1, hidden_size=args.hidden, dtype="float32")
    params = kern.init_params(seed=1)
    readout = np.random.default_rng(1).standard_normal(args.hidden).astype(np.float32) * 0.1
    rng = np.random.default_rng(0)
    lr = 0.05
    for it in range(args.iters):
        x = rng.standard_normal((12, 16, 1)).astype(np.float32)
        target = np.concatenate([np.zeros((2, 16, 1), np.float32), x[:-2]])   # x delayed by 2
        res = kern.forward(params, x)
        pred = res.outputs @ readout[:, None]
        err = pred - target
        loss = float(np.mean(err ** 2))
        d_pred = 2 * err / err.size
        d_readout = np.einsum("tbh,tbo->h", res.outputs, d_pred)
        grads = kern.backward(res, d_outputs=d_pred @ readout[None, :])
        for k in params:
            params[k] -= lr * 20 * grads.params[k]
        readout -= lr * 20 * d_readout
        if it % max(1, args.iters // 5) == 0 or it == args.iters - 1:
            print("iter %4d  loss %.4f" % (it, loss))


if __name__ == "__main__":
    main()
