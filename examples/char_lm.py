"""A character-level language model: an LSTM over Shakespeare's sonnets (shipped with the
package), trained by truncated BPTT on parallel streams of the text, then sampled at
several temperatures, each sampled character fed back as the next input.

    python examples/char_lm.py            # a few minutes
    python examples/char_lm.py --full     # two layers of 256, longer
"""
import argparse
import os
import time

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


def bits_per_char(model, params, ids):
    """Mean cross-entropy in bits of predicting ids[1:] from ids[:-1], read in one pass."""
    logits = model.predict(params, ids[:-1, None])
    return rm.cross_entropy(logits, ids[1:, None])[0] / np.log(2)


def plot(hist, held_out_curve, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.4))
    hist.plot(ax, label="training loss")
    if held_out_curve:
        updates, bpc = zip(*held_out_curve)
        ax.plot(updates, np.array(bpc) * np.log(2), "o-", ms=3, label="held-out loss")
    ax.set_ylabel("nats per character")
    ax.set_title("character LSTM on the sonnets")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    print("wrote", path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--batch", type=int, default=32, help="parallel streams of the text")
    ap.add_argument("--k1", type=int, default=50, help="steps between updates")
    ap.add_argument("--k2", type=int, default=None, help="steps back-propagated (>= k1)")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--seconds", type=float, default=None, help="stop training after this long")
    ap.add_argument("--sample", type=int, default=300, help="characters per sample")
    ap.add_argument("--save", default=None, help="write the trained parameters to this .npz")
    ap.add_argument("--plot", default=None, help="write the training loss curve to this image")
    ap.add_argument("--full", action="store_true", help="2 layers of 256, dropout 0.3, 40 epochs")
    args = ap.parse_args(argv)
    if args.full:
        args.hidden, args.layers, args.epochs, args.dropout = 256, 2, 40, 0.3

    text = rm.load_text("sonnets")
    vocab = rm.CharVocab(text)
    ids = vocab.encode(text)
    split = int(0.9 * len(ids))
    train, held_out = ids[:split], ids[split:]
    stream = rm.streams(train, args.batch)                  # (N, B)
    stream = stream[:(len(stream) - 1) // args.k1 * args.k1 + 1]   # whole windows only
    print("%d characters, %d distinct; %d streams of %d steps; held out: %d"
          % (len(ids), len(vocab), args.batch, len(stream), len(held_out)))

    model = rm.SequenceModel(lstm, args.hidden, vocab_size=len(vocab), output_size=len(vocab),
                             num_layers=args.layers, dropout=args.dropout)
    params = model.init(seed=0)
    print(model)
    before = bits_per_char(model, params, held_out)
    tb = rm.TBPTT(model, args.k1, args.k2, train=args.dropout > 0)
    per_epoch = len(tb.windows(stream[:-1], stream[1:]))
    best = {"bpc": before, "epoch": 0, "params": rm.tree_map(np.copy, params)}
    held_out_curve = []

    def after_update(update, loss, p):
        """At the end of each epoch: held-out bits per character; keep the best parameters."""
        if update % per_epoch == 0:
            bpc = bits_per_char(model, p, held_out)
            held_out_curve.append((update, bpc))
            if bpc < best["bpc"]:
                best.update(bpc=bpc, epoch=update // per_epoch, params=rm.tree_map(np.copy, p))

    t0 = time.perf_counter()
    hist = rm.fit(tb.loss_and_grads, params, rm.Adam(args.lr),
                  lambda epoch: tb.windows(stream[:-1], stream[1:]), epochs=args.epochs,
                  clip=5.0, time_limit=args.seconds, callback=after_update)
    print(hist)
    print("held-out bits per character by epoch: %s"
          % " ".join("%.2f" % bpc for _, bpc in held_out_curve))
    params, after = best["params"], best["bpc"]
    print("held-out bits per character: %.3f before training, %.3f at best (epoch %d; %.0f s)"
          % (before, after, best["epoch"], time.perf_counter() - t0))
    if args.save:
        rm.save(args.save, params)
    if args.plot:
        plot(hist, held_out_curve, args.plot)

    prompt = vocab.encode("Shall I compare ")
    for temperature in (0.5, 0.8, 1.0):
        out = rm.sample(model, params, prompt, args.sample, temperature=temperature, seed=1)
        print("\n--- temperature %.1f ---\n%s%s"
              % (temperature, vocab.decode(prompt), vocab.decode(out)))

    k = max(1, len(hist.losses) // 10)
    first, last = np.mean(hist.losses[:k]), np.mean(hist.losses[-k:])
    if not (last < first and after < before):
        print("FAILED: the loss did not fall (%.3f -> %.3f, held out %.3f -> %.3f)"
              % (first, last, before, after))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
