"""The adding problem (Hochreiter & Schmidhuber 1997, in the form of Le et al. 2015): each
step carries a random value in [0, 1] and a marker; two steps are marked, one in each half
of the sequence, and the target, read after the last step, is the sum of the two marked
values. Predicting 1 always scores a mean squared error of 1/6 ≈ 0.167; a network must
carry a value across ~T/2 steps to beat it. An LSTM learns it at T = 100, an Elman
network does not: its gradient from the last step vanishes long before the first marker,
which the gradient-flow diagnostic shows directly.

    python examples/adding_problem.py          # about 30 s on one core
    python examples/adding_problem.py --full --plot docs/adding_problem.png   # about 8 min

By default (T = 100, 32 units, 1500 updates of Adam at lr 0.01) the LSTM reaches a test
MSE near 0.0005 while the Elman network stays at the baseline 0.168. `--full` is the run
of docs/examples.md: 128 units, Adam at lr 1e-3, batches of 50, 6000 updates.
"""
import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")    # numpy's small products: threads only contend

import numpy as np  # noqa: E402

import rnncompiler as rc  # noqa: E402
from rnncompiler import models as rm  # noqa: E402


@rc.cell(states=("h", "c"), output="h")
def lstm(x, h, c, p):
    z = rc.concat(h, x)
    f = rc.sigmoid(p.linear("W_f", z, bias="b_f"))
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i"))
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o"))
    c_new = f * c + i * g
    return {"h": o * rc.tanh(c_new), "c": c_new}


@rc.cell(states=("h",))
def elman(x, h, p):
    return {"h": rc.tanh(p.linear("W", rc.concat(h, x), bias="b"))}


CELLS = {"lstm": lstm, "elman": elman}


def adding_batch(rng, T, B, dtype=np.float32):
    """x (T, B, 2) = (value, marker); target (B, 1) = the sum of the two marked values."""
    values = rng.uniform(0, 1, (T, B))
    first = rng.integers(0, T // 2, B)
    second = rng.integers(T // 2, T, B)
    marks = np.zeros((T, B))
    marks[first, np.arange(B)] = marks[second, np.arange(B)] = 1.0
    x = np.stack([values, marks], axis=2).astype(dtype)
    return x, (values * marks).sum(axis=0)[:, None].astype(dtype)


def train(name, args):
    """Train one cell; returns (history, test MSE, gradient flows before and after)."""
    model = rm.SequenceModel(CELLS[name], args.hidden, input_size=2, output_size=1,
                             readout="last", loss="mse")
    params = model.init(seed=args.seed)
    if name == "lstm":
        for path, value in rm.flatten(params["rnn"]).items():
            if path.endswith("/b_f"):
                value[:] = 1.0                  # an open forget gate to start (Gers et al. 2000)
    test_x, test_y = adding_batch(np.random.default_rng(12345), args.T, 1000)
    probe_x, probe_y = test_x[:, :100], test_y[:100]
    flow = model.gradient_flow(params, probe_x, probe_y)
    rng = np.random.default_rng(args.seed)

    def loss_and_grads(p, _):
        x, y = adding_batch(rng, args.T, args.batch)
        return model.loss_and_grads(p, x, y)

    print("%s: %s" % (name, model))
    hist = rm.fit(loss_and_grads, params, rm.Adam(args.lr), range(args.iters), clip=1.0)
    test = rm.mse(model.predict(params, test_x), test_y)[0]
    print("%s: %s; test MSE %.4f (predicting 1 scores %.4f)"
          % (name, hist, test, rm.mse(np.ones_like(test_y), test_y)[0]))
    return hist, test, (flow, model.gradient_flow(params, probe_x, probe_y))


def plot(results, path, T):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, (hist, test, flows) in results.items():
        hist.plot(ax1, label="%s (test MSE %.3f)" % (name, test))
        for flow, style, when in zip(flows, (":", "-"), ("initial", "trained")):
            for s, n in flow.norms.items():
                ax2.semilogy(np.where(n > 0, n, np.nan), ls=style,      # c_T-1 feeds nothing
                             label="%s ‖dL/d%s_t‖, %s" % (name, s, when))
    ax1.axhline(1 / 6, color="gray", ls=":", lw=1)
    ax1.set_ylim(0, 0.6)
    ax1.set_title("training loss, adding problem T=%d" % T)
    ax2.set_title("gradient flow from the loss at step T-1")
    ax2.set_xlabel("step t")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print("wrote", path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=1500)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("--cells", default="lstm,elman")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", default=None, help="write the loss curves and gradient flow here")
    ap.add_argument("--full", action="store_true",
                    help="T=100, H=128, batches of 50, Adam lr 1e-3, 6000 updates each")
    args = ap.parse_args(argv)
    if args.full:
        args.T, args.hidden, args.batch, args.lr, args.iters = 100, 128, 50, 1e-3, 6000

    results = {name: train(name, args) for name in args.cells.split(",")}
    for name, (hist, test, (before, after)) in results.items():
        print("%-6s test MSE %.4f; ‖dL/dh_0‖ / ‖dL/dh_T-1‖ = %.2e at initialisation, %.2e "
              "trained" % (name, test, before.ratio(), after.ratio()))
    baseline = 1 / 6
    for name, (_, test, _) in results.items():
        print("%-6s %s" % (name, "learned the task (test MSE %.4f, %.1f%% of the baseline %.3f)"
                           % (test, 100 * test / baseline, baseline) if test < baseline / 10
                           else "did not learn it: test MSE %.4f, the baseline is %.3f"
                           % (test, baseline)))
    if args.plot:
        plot(results, args.plot, args.T)
    failed = []
    for name, (hist, _, _) in results.items():
        k = max(1, len(hist.losses) // 5)
        if not np.mean(hist.losses[-k:]) < np.mean(hist.losses[:k]):
            failed.append(name)
    if failed:
        print("FAILED: the loss did not fall for %s" % ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
