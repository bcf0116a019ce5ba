"""State-linear cells: minGRU (diagonal-linear: h[t] = a[t] ⊙ h[t-1] + b[t]) against the
GRU, and on two threads against one at batch 1 over a long sequence. float32,
forward+backward with a loss touching every output, min and median of interleaved runs in
one process. The core, its measured single-thread fp32 GEMM rate, the load and the
kernels' tuning are printed first.

    python benchmarks/bench_scan.py                 # T=100 B=32 H=128; T=65536 B=1 H=64
    python benchmarks/bench_scan.py --quick         # small sizes, a few repeats
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse

import numpy as np

import rnncompiler as rc
from rnncompiler.cli.bench import machine_line, summary, time_interleaved, tuning_line


def steps(cell, H, B, T, threads=(1,), seed=0):
    """{threads: one forward and one backward call over the whole sequence on that many
    threads}, one kernel and one data set for all of them."""
    kern = rc.compile(cell, input_size=H, hidden_size=H, dtype="float32")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, H)).astype(np.float32)
    dy = rng.standard_normal((T, B, H)).astype(np.float32)
    params = kern.init_params(seed=seed)

    def on(n):
        def run():
            rc.set_num_threads(n)
            try:
                kern.backward(kern.forward(params, x), dy)
            finally:
                rc.set_num_threads(1)
        return run
    return {n: on(n) for n in threads}


def report(title, times, num, den, target):
    s = summary(times)
    ratio, ratio_min = s[num][1] / s[den][1], s[num][0] / s[den][0]
    print("%-46s %9.2f %9.2f   %5.2f  (min %5.2f)   target %s"
          % (title, s[num][1], s[den][1], ratio, ratio_min, target))
    return ratio


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--quick", action="store_true", help="T=2000 at B=1, 3 repeats")
    args = ap.parse_args(argv)
    long_T = 2000 if args.quick else 65536
    repeats = 3 if args.quick else args.repeats
    print(machine_line())
    print("tuning: " + tuning_line())
    print("%-46s %9s %9s   %s" % ("case", "ms (a)", "ms (b)", "a / b (median)"))
    H, B, T = 128, 32, 100
    t = time_interleaved({"min_gru": steps(rc.cells.min_gru, H, B, T)[1],
                          "gru": steps(rc.cells.gru, H, B, T)[1]}, repeats)
    report("minGRU (a) vs GRU (b), T=%d B=%d H=%d" % (T, B, H), t, "min_gru", "gru", "<= 0.5")
    runs = steps(rc.cells.min_gru, 64, 1, long_T, threads=(1, 2))
    t = time_interleaved({"one": runs[1], "two": runs[2]}, repeats)
    speedup = 1 / report("minGRU 2 threads (a) vs 1 (b), T=%d B=1 H=64" % long_T, t, "two", "one",
                         ">= 1.6x faster")
    print("minGRU at B=1: 2 threads are %.2fx as fast as 1 (load average %.2f)"
          % (speedup, os.getloadavg()[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
