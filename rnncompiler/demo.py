"""What `make demo` runs: compile an LSTM, show its derived backward equations, verify
them against finite differences, time forward+backward on a batch, then train it as a
character language model on Shakespeare's sonnets for about a minute and print samples."""
from __future__ import annotations

import argparse
import time

import numpy as np

import rnncompiler as rc


@rc.cell(states=("h", "c"), output="h")
def lstm(x, h, c, p):
    z = rc.concat(h, x)                              # [h_{t-1}; x_t]
    f = rc.sigmoid(p.linear("W_f", z, bias="b_f"))   # forget gate
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i"))   # input gate
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))      # candidate
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o"))   # output gate
    c_new = f * c + i * g
    return {"h": o * rc.tanh(c_new), "c": c_new}


def time_forward_backward(kern, T, B, repeats):
    """Median milliseconds of forward+backward over a (T, B, I) batch."""
    rng = np.random.default_rng(0)
    params = kern.init_params(seed=0)
    x = rng.standard_normal((T, B, kern.input_size)).astype(kern.dtype)
    dy = rng.standard_normal((T, B, kern.output_size)).astype(kern.dtype)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        kern.backward(kern.forward(params, x), dy)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def train_char_lm(hidden, seconds, sample_chars):
    """Train an LSTM language model on the sonnets by truncated BPTT for `seconds`, then
    print what it writes after a prompt at two temperatures."""
    from . import models as rm
    text = rm.load_text("sonnets")
    vocab = rm.CharVocab(text)
    stream = rm.streams(vocab.encode(text), 32)
    model = rm.SequenceModel(lstm, hidden, vocab_size=len(vocab), output_size=len(vocab))
    params = model.init(seed=0)
    tb = rm.TBPTT(model, 50)
    print("training %s on %d characters of the sonnets for %.0f s (truncated BPTT, k1=k2=50)"
          % (model, len(text), seconds))
    hist = rm.fit(tb.loss_and_grads, params, rm.Adam(3e-3),
                  lambda epoch: tb.windows(stream[:-1], stream[1:]), epochs=None, clip=5.0,
                  time_limit=seconds)
    print(hist)
    prompt = vocab.encode("Shall I compare ")
    for temperature in (0.5, 1.0):
        out = rm.sample(model, params, prompt, sample_chars, temperature=temperature, seed=1)
        print("\n--- sample, temperature %.1f ---\n%s%s"
              % (temperature, vocab.decode(prompt), vocab.decode(out)))
    return hist


def compiled_how(kern, what, seconds):
    """"compiled WHAT in 1.23 s", or that it was loaded from the cache (no compiling)."""
    if kern.loaded_from_cache:
        return "loaded %s from the kernel cache in %.2f s (compiled by an earlier run)" % (what, seconds)
    return "compiled %s in %.2f s" % (what, seconds)


def main(argv=None, prog=None):
    ap = argparse.ArgumentParser(prog=prog, description=__doc__)
    ap.add_argument("--hidden", type=int, default=128,
                    help="hidden (and input) size of the timed LSTM (default 128)")
    ap.add_argument("--steps", type=int, default=100,
                    help="sequence length T of the timed forward+backward (default 100)")
    ap.add_argument("--batch", type=int, default=32,
                    help="batch size B of the timed forward+backward (default 32)")
    ap.add_argument("--repeats", type=int, default=10,
                    help="timed repeats; the median is printed (default 10)")
    ap.add_argument("--train-seconds", type=float, default=60,
                    help="how long to train the character language model (0: skip it)")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    kern64 = rc.compile(lstm, input_size=3, hidden_size=4, dtype="float64")
    print(compiled_how(kern64, "the LSTM (I=3, H=4, float64)", time.perf_counter() - t0))
    print()
    print(kern64.equations())
    print()
    report = rc.gradcheck(kern64, T=5, B=2, seed=0)
    print(report)
    print()
    H = args.hidden
    t0 = time.perf_counter()
    kern = rc.compile(lstm, input_size=H, hidden_size=H, dtype="float32")
    print(compiled_how(kern, "the LSTM (I=H=%d, float32)" % H, time.perf_counter() - t0))
    ms = time_forward_backward(kern, args.steps, args.batch, args.repeats)
    print("forward+backward, B=%d, T=%d, H=%d, float32: %.2f ms (median of %d)"
          % (args.batch, args.steps, H, ms, args.repeats))
    if args.train_seconds > 0:
        print()
        train_char_lm(H, args.train_seconds, 300)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
