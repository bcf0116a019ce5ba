"""Sequence classification: which wave is this — sine, square, triangle or sawtooth? Each
sequence has its own length (20-80 steps), period, phase, amplitude and noise. A
bidirectional GRU reads every row forwards and, within its own length, backwards; the
classifier sees both directions' final outputs ("ends") and is trained with softmax
cross-entropy on variable-length batches.

    python examples/classify.py --full
"""
import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")    # numpy's small products: threads only contend

import numpy as np  # noqa: E402

import rnncompiler as rc  # noqa: E402
from rnncompiler import models as rm  # noqa: E402

CLASSES = ("sine", "square", "triangle", "sawtooth")


@rc.cell(states=("h",))
def gru(x, h, p):
    r = rc.sigmoid(p.linear("W_ir", x, bias="b_ir") + p.linear("W_hr", h, bias="b_hr"))
    u = rc.sigmoid(p.linear("W_iz", x, bias="b_iz") + p.linear("W_hz", h, bias="b_hz"))
    n = rc.tanh(p.linear("W_in", x, bias="b_in") + r * p.linear("W_hn", h, bias="b_hn"))
    return {"h": (1 - u) * n + u * h}


def waves(rng, B, T_max=80, noise=0.3):
    """x (T_max, B, 1) zero-padded, labels (B,), lengths (B,)."""
    labels = rng.integers(0, len(CLASSES), B)
    lengths = rng.integers(20, T_max + 1, B)
    period = rng.uniform(8, 20, B)
    phase = rng.uniform(0, 1, B)
    amp = rng.uniform(0.5, 1.5, B)
    u = (np.arange(T_max)[:, None] / period + phase) % 1.0            # position in the cycle
    shapes = np.stack([np.sin(2 * np.pi * u), np.where(u < 0.5, 1.0, -1.0),
                       4 * np.abs(u - 0.5) - 1, 2 * u - 1])
    x = amp * shapes[labels, :, np.arange(B)].T + noise * rng.standard_normal((T_max, B))
    x *= np.arange(T_max)[:, None] < lengths
    return x[..., None].astype(np.float32), labels, lengths


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=32)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--iters", type=int, default=500)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--full", action="store_true", help="H=64, 4000 updates")
    args = ap.parse_args(argv)
    if args.full:
        args.hidden, args.iters = 64, 4000

    model = rm.SequenceModel(gru, args.hidden, input_size=1, output_size=len(CLASSES),
                             bidirectional=True, readout="ends")
    params = model.init(seed=0)
    print(model)
    rng = np.random.default_rng(0)
    batches = [waves(rng, args.batch) for _ in range(args.iters)]
    x, labels, lengths = waves(np.random.default_rng(1), 2000)         # the test set
    before = rm.cross_entropy(model.predict(params, x, lengths), labels)[0]
    # the learning rate decays to 1/10 over training (a schedule: a function of the update)
    schedule = lambda k: args.lr * 0.1 ** (k / args.iters)        # noqa: E731
    hist = rm.fit(model.loss_and_grads, params, rm.Adam(schedule), batches, clip=5.0)
    print(hist)

    logits = model.predict(params, x, lengths)
    after = rm.cross_entropy(logits, labels)[0]
    guess = np.argmax(logits, axis=1)
    print("test accuracy on 2000 new sequences: %.1f %% (chance 25 %%); test loss %.3f -> %.3f"
          % (100 * np.mean(guess == labels), before, after))
    confusion = np.zeros((4, 4), int)
    np.add.at(confusion, (labels, guess), 1)
    print("confusion (rows: true, columns: predicted)")
    print("%10s %s" % ("", " ".join("%9s" % c for c in CLASSES)))
    for name, row in zip(CLASSES, confusion):
        print("%10s %s" % (name, " ".join("%9d" % v for v in row)))
    if not after < before:
        print("FAILED: the test loss did not fall")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
