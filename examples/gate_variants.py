"""Three new gate variants, each a few lines away from a cell of rc.cells: checked against
finite differences (float64, with lengths), then timed — forward+backward over a whole
sequence — next to the library cells they come from.

    python examples/gate_variants.py                                  # H=64, T=50, B=16
    python examples/gate_variants.py --hidden 256 --steps 100 --batch 32
"""
import argparse
import sys
import time

import numpy as np

import rnncompiler as rc


@rc.cell(states=("h",))
def janet(x, h, p):
    """A forget gate and nothing else (van der Westhuizen & Lasenby, 2018): the input is
    written with 1 - σ(s - β), a shifted copy of the forget gate, and the cell is the output."""
    z = rc.concat(h, x)
    s = p.linear("W_f", z, bias="b_f")
    beta = 1.0
    write = 1 - rc.sigmoid(s - beta)
    return {"h": rc.sigmoid(s) * h + write * rc.tanh(p.linear("W_c", z, bias="b_c"))}


@rc.cell(states=("h",))
def leaky_elman(x, h, p):
    """An Elman cell with a learnable leak per unit: h moves a fraction σ(λ) of the way to
    its new value at every step (a leaky integrator with learned time constants)."""
    rate = rc.sigmoid(p.vector("leak"))
    return {"h": (1 - rate) * h + rate * rc.tanh(p.linear("W", rc.concat(h, x), bias="b"))}


@rc.cell(states=("h",))
def hard_gru(x, h, p):
    """The cuDNN GRU with cheap activations: piecewise-linear gates (hard sigmoid) and a
    softsign candidate, no exponentials."""
    r = rc.hard_sigmoid(p.linear("W_ir", x, bias="b_ir") + p.linear("W_hr", h, bias="b_hr"))
    z = rc.hard_sigmoid(p.linear("W_iz", x, bias="b_iz") + p.linear("W_hz", h, bias="b_hz"))
    n = rc.softsign(p.linear("W_in", x, bias="b_in") + r * p.linear("W_hn", h, bias="b_hn"))
    return {"h": (1 - z) * n + z * h}


VARIANTS = {"janet": (janet, "lstm"), "leaky_elman": (leaky_elman, "elman"),
            "hard_gru": (hard_gru, "gru_torch")}


def fwd_bwd_ms(kern, x, repeats):
    """Best time of one forward+backward over the whole sequence, in milliseconds."""
    params = kern.init_params(seed=0)
    dy = np.ones((x.shape[0], x.shape[1], kern.output_size), kern.dtype)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        kern.backward(kern.forward(params, x), d_outputs=dy)
        best = min(best, time.perf_counter() - t0)
    return 1e3 * best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=64, help="hidden size H (default 64)")
    ap.add_argument("--input", type=int, default=None, help="input size I (default: H)")
    ap.add_argument("--steps", type=int, default=50, help="sequence length T (default 50)")
    ap.add_argument("--batch", type=int, default=16, help="batch size B (default 16)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per round (default 5)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    args = ap.parse_args(argv)
    I, H = args.input or args.hidden, args.hidden

    failed = []
    for name, (cell, _) in VARIANTS.items():
        report = rc.gradcheck(cell, input_size=3, hidden_size=4, T=5, B=3, lengths=[5, 0, 3],
                              rtol=1e-6)
        print("%-12s gradcheck (float64, lengths 5/0/3): %s, max rel. error %.1e"
              % (name, "OK" if report.ok else "FAILED", report.max_rel_error))
        if not report.ok:
            print(report)
            failed.append(name)

    x = np.random.default_rng(0).standard_normal((args.steps, args.batch, I)).astype(args.dtype)
    names = list(VARIANTS) + sorted({base for _, base in VARIANTS.values()})
    kernels = {n: rc.compile(VARIANTS[n][0] if n in VARIANTS else rc.cells.ALL[n], I, H,
                             args.dtype) for n in names}
    best = {n: float("inf") for n in names}
    for _ in range(3):                   # rounds, alternating cells: same machine for all
        for n in names:
            best[n] = min(best[n], fwd_bwd_ms(kernels[n], x, args.repeats))
    print("\nforward+backward, I=%d H=%d T=%d B=%d %s (best of %d):"
          % (I, H, args.steps, args.batch, args.dtype, 3 * args.repeats))
    for name, (_, base) in VARIANTS.items():
        print("  %-12s %9.3f ms   (%-9s %9.3f ms, ratio %.2f)"
              % (name, best[name], base, best[base], best[name] / best[base]))
    if failed:
        print("FAILED:", ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
