"""Export an LSTM to C (lstm.h, lstm.c) and save what the C program lstm_demo reads:
the weights from Python in the header's flat layout, an input batch, lengths and the
gradient of a loss with respect to the outputs. With --compare, read what lstm_demo
printed and check it against the Python kernel.

    python save_weights.py --out build               # then build and run lstm_demo
    python save_weights.py --out build --compare build/c_output.txt

Files (raw, native byte order): params.bin (param_count doubles), x.bin (T*B*I doubles,
time-major), dy.bin (T*B*O doubles), lengths.bin (B 32-bit ints).
"""
import argparse
import os
import sys

import numpy as np

import rnncompiler as rc

INPUT_SIZE = 3


@rc.cell(states=("h", "c"), output="h")
def lstm(x, h, c, p):
    z = rc.concat(h, x)                              # [h_{t-1}; x_t]
    f = rc.sigmoid(p.linear("W_f", z, bias="b_f"))   # forget gate
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i"))   # input gate
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))      # candidate
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o"))   # output gate
    c_new = f * c + i * g
    return {"h": o * rc.tanh(c_new), "c": c_new}


def inputs(kern, T, B, seed):
    """The weights, input, lengths and output gradient: the same for a given seed."""
    rng = np.random.default_rng(seed)
    params = kern.init_params(seed=seed)
    x = rng.standard_normal((T, B, kern.input_size))
    lengths = np.array([T - (b % 3) if T > 2 else T for b in range(B)], np.int32)
    dy = rng.standard_normal((T, B, kern.output_size))
    return params, x, lengths, dy


def save(args):
    exp = rc.export_c(lstm, args.out, input_size=INPUT_SIZE, hidden_size=args.hidden,
                      dtype="float64")
    kern = rc.compile(lstm, input_size=INPUT_SIZE, hidden_size=args.hidden, dtype="float64")
    params, x, lengths, dy = inputs(kern, args.steps, args.batch, args.seed)
    exp.flat_params(params).tofile(os.path.join(args.out, "params.bin"))
    x.tofile(os.path.join(args.out, "x.bin"))
    dy.tofile(os.path.join(args.out, "dy.bin"))
    lengths.astype(np.intc).tofile(os.path.join(args.out, "lengths.bin"))
    print("wrote %s, %s and the inputs for T=%d, B=%d, H=%d to %s"
          % (os.path.basename(exp.header), os.path.basename(exp.source), args.steps,
             args.batch, args.hidden, args.out))
    return 0


def parse_output(path):
    """name -> array from the lines `name: v v v ...` that lstm_demo prints."""
    blocks = {}
    with open(path) as f:
        for line in f:
            name, sep, values = line.partition(":")
            if sep and values.split():
                blocks[name.strip()] = np.array([float(v) for v in values.split()])
    return blocks


def python_results(kern, params, x, lengths, dy):
    """The same blocks as lstm_demo prints, from the Python kernel."""
    res = kern.forward(params, x, lengths=lengths)
    g = kern.backward(res, d_outputs=dy)
    out = {"y": res.outputs, "loss": np.sum(res.outputs * dy), "dx": g.x}
    out.update({"state_T." + s: v for s, v in res.states.items()})
    out.update({"d" + k: v for k, v in g.params.items()})
    out.update({"dstate0." + s: v for s, v in g.state0.items()})
    return {k: np.ravel(v) for k, v in out.items()}


def compare(args):
    kern = rc.compile(lstm, input_size=INPUT_SIZE, hidden_size=args.hidden, dtype="float64")
    expected = python_results(kern, *inputs(kern, args.steps, args.batch, args.seed))
    got = parse_output(args.compare)
    worst = 0.0
    for name, want in expected.items():
        if name not in got or got[name].shape != want.shape:
            print("%-12s FAILED: missing or of the wrong length" % name)
            return 1
        err = np.max(np.abs(got[name] - want)) / max(np.max(np.abs(want)), 1e-30)
        worst = max(worst, err)
        print("%-12s max relative difference %.2e" % (name, err))
    ok = worst < 1e-12
    print("C and Python agree: %s (worst %.2e)" % ("OK" if ok else "FAILED", worst))
    return 0 if ok else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="build", help="directory for the C files and inputs")
    ap.add_argument("--steps", type=int, default=6, help="T")
    ap.add_argument("--batch", type=int, default=3, help="B")
    ap.add_argument("--hidden", type=int, default=8, help="H (the input size is 3)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare", metavar="FILE",
                    help="check lstm_demo's output in FILE against the Python kernel")
    args = ap.parse_args(argv)
    return compare(args) if args.compare else save(args)


if __name__ == "__main__":
    sys.exit(main())
