"""A new gate variant in ten lines: a GRU-like cell whose update gate is a Gaussian bump
of its pre-activation, with a learnable temperature; verified against finite differences,
then trained to output its input delayed by two steps (the kernel's forward/backward and
a linear readout, updated by rm.Adam). About 10 s on one core: the mean squared error
falls from about 0.6 to below 0.001 (always answering 0 scores 0.83).

    python examples/custom_gate.py
"""
import argparse

import numpy as np
import sympy

import rnncompiler as rc
from rnncompiler import models as rm


@rc.cell(states=("h",))
def bump_gru(x, h, p):
    z = rc.concat(h, x)
    a = p.linear("W_u", z, bias="b_u")
    u = rc.elementwise(lambda v, s: sympy.exp(-(v * s) ** 2), a, p.scalar("temperature"))
    n = rc.tanh(p.linear("W_n", z, bias="b_n"))
    return {"h": u * h + (1 - u) * n}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--iters", type=int, default=1500)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.01)
    args = ap.parse_args(argv)

    report = rc.gradcheck(bump_gru, input_size=2, hidden_size=4)
    print(report)
    assert report.ok
    kern = rc.compile(bump_gru, input_size=1, hidden_size=args.hidden, dtype="float32")
    params = {"cell": kern.init_params(seed=1),
              "readout": np.random.default_rng(1).standard_normal(args.hidden).astype(np.float32)
              * 0.1}
    opt = rm.Adam(args.lr)
    rng = np.random.default_rng(0)
    losses = []
    for it in range(args.iters):
        x = rng.standard_normal((12, args.batch, 1)).astype(np.float32)
        target = np.concatenate([np.zeros((2, args.batch, 1), np.float32), x[:-2]])  # x delayed by 2
        res = kern.forward(params["cell"], x)
        err = res.outputs @ params["readout"][:, None] - target
        losses.append(float(np.mean(err ** 2)))
        d_pred = 2 * err / err.size
        grads = kern.backward(res, d_outputs=d_pred @ params["readout"][None, :])
        opt.step(params, {"cell": grads.params,
                          "readout": np.einsum("tbh,tbo->h", res.outputs, d_pred)})
        if it % max(1, args.iters // 5) == 0 or it == args.iters - 1:
            print("iter %4d  loss %.4f" % (it, losses[-1]))
    k = max(1, args.iters // 10)
    first, last = np.mean(losses[:k]), np.mean(losses[-k:])
    print("mean squared error %.4f -> %.4f (always answering 0 scores about 0.83); learned "
          "temperature %.3f" % (first, last, float(params["cell"]["temperature"])))
    if not last < first:
        print("FAILED: the loss did not fall")
        return 1
    return 0

if __name__ == "__main__":
    raise SystemExit(main())
