"""Quickstart: declare an LSTM, compile it, run forward and backward over a batch of
variable-length sequences, check the derivation, print the derived equations."""
import argparse

import numpy as np

import rnncompiler as rc


@rc.cell(states=("h", "c"), output="h")
def lstm(x, h, c, p):
    z = rc.concat(h, x)
    f = rc.sigmoid(p.linear("W_f", z, bias="b_f"))
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i"))
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o"))
    c_new = f * c + i * g
    return {"h": o * rc.tanh(c_new), "c": c_new}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args(argv)

    kern = rc.compile(lstm, input_size=5, hidden_size=args.hidden, dtype="float64")
    params = kern.init_params(seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.steps, args.batch, 5))
    lengths = rng.integers(1, args.steps + 1, size=args.batch)
    res = kern.forward(params, x, lengths=lengths)
    target = rng.standard_normal(res.outputs.shape)
    loss = 0.5 * np.sum((res.outputs - target) ** 2)
    grads = kern.backward(res, d_outputs=res.outputs - target)
    print("loss %.4f, |dW_f| %.4f, dx %s" % (loss, np.linalg.norm(grads.params["W_f"]),
                                             grads.x.shape))
    print(rc.gradcheck(lstm, input_size=3, hidden_size=4))
    print(kern.equations())


if __name__ == "__main__":
    main()
