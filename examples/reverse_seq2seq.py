"""Sequence to sequence: an LSTM encoder–decoder that reverses strings of digits. The
encoder reads "31415"; its final state starts the decoder, which writes "51413" and an
end marker. Training uses teacher forcing (the decoder reads the true previous digit);
at test time decoding is greedy (it reads its own previous choice).

    python examples/reverse_seq2seq.py --full
"""
import argparse
import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")    # numpy's small products: threads only contend

import numpy as np  # noqa: E402

import rnncompiler as rc  # noqa: E402
from rnncompiler import models as rm  # noqa: E402

BOS, EOS = 10, 11                        # target tokens besides the digits 0-9


@rc.cell(states=("h", "c"), output="h")
def lstm(x, h, c, p):
    z = rc.concat(h, x)
    f = rc.sigmoid(p.linear("W_f", z, bias="b_f"))
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i"))
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o"))
    c_new = f * c + i * g
    return {"h": o * rc.tanh(c_new), "c": c_new}


def digit_batch(rng, B, max_len):
    """Source digits (L, B) padded with 0, their lengths, and the decoder's input
    ([BOS] + reversed) and target (reversed + [EOS]), (L+1, B), with lengths + 1."""
    lengths = rng.integers(1, max_len + 1, B)
    src = np.zeros((max_len, B), np.int64)
    tgt_in = np.zeros((max_len + 1, B), np.int64)
    tgt_out = np.zeros((max_len + 1, B), np.int64)
    for b, L in enumerate(lengths):
        digits = rng.integers(0, 10, L)
        src[:L, b] = digits
        tgt_in[:L + 1, b] = np.concatenate([[BOS], digits[::-1]])
        tgt_out[:L + 1, b] = np.concatenate([digits[::-1], [EOS]])
    return src, lengths, tgt_in, tgt_out, lengths + 1


def evaluate(s2s, params, max_len, n=1000):
    """Greedy decoding of n fresh strings: (exact-match rate, per-digit accuracy), examples."""
    src, L, _, tgt_out, _ = digit_batch(np.random.default_rng(999), n, max_len)
    ids, out_len = s2s.greedy(params, src, L, bos=BOS, max_len=max_len + 1, eos=EOS)
    exact, right, shown = 0, 0, []
    for b in range(n):
        want = tgt_out[:L[b], b]
        got = ids[b, :out_len[b]]
        exact += out_len[b] == L[b] and np.array_equal(got, want)
        right += np.sum(ids[b, :L[b]] == want)
        if b < 4:
            shown.append("%s -> %s" % ("".join(map(str, src[:L[b], b])), "".join(map(str, got))))
    return exact / n, right / np.sum(L), shown


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-len", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--embed", type=int, default=16)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--full", action="store_true", help="strings up to 10 digits, 4000 updates")
    args = ap.parse_args(argv)
    if args.full:
        args.max_len, args.iters = 10, 4000

    s2s = rm.Seq2Seq(lstm, src_vocab=10, tgt_vocab=12, hidden_size=args.hidden,
                     embed_size=args.embed)
    params = s2s.init(seed=0)
    rng = np.random.default_rng(0)
    batches = [digit_batch(rng, args.batch, args.max_len) for _ in range(args.iters)]

    def loss_and_grads(p, src, src_len, tgt_in, tgt_out, tgt_len):
        return s2s.loss_and_grads(p, src, tgt_in, tgt_out, src_len, tgt_len)

    hist = rm.fit(loss_and_grads, params, rm.Adam(args.lr), batches, clip=5.0)
    print(hist)
    exact, per_digit, shown = evaluate(s2s, params, args.max_len)
    print("greedy decoding of 1000 new strings of 1-%d digits: %.1f %% reversed exactly, "
          "%.1f %% of digits right" % (args.max_len, 100 * exact, 100 * per_digit))
    print("\n".join(shown))
    k = max(1, len(hist.losses) // 10)
    if not np.mean(hist.losses[-k:]) < np.mean(hist.losses[:k]):
        print("FAILED: the loss did not fall")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
