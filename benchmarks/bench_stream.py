"""Batch-1 streaming speed: ns per step of an RNN run one sample at a time, the state
carried from call to call, float32, as audio and embedded users run it. Measured in one
run, interleaved, min and median of the repeats:

- the exported C (`rc.export_c`, built with cc -O3 -march=native, the compiler's default C
  dialect, which contracts a*b+c into FMAs as C allows): NAME_infer over T=1000
  samples per call, and NAME_pack once then NAME_step per sample;
- the JIT kernel: kern.infer over T=1000 (one C call), the time of a kern.infer call at
  T=1 in µs ("call": Python's share of a call, checks, parameter vector and workspace,
  with the weights' packing and one step of C), kern.step per sample (each a Python call that checks, converts and
  packs everything: its overhead is in the figure), kern.stream(params).step per
  sample (weights packed once; one C call a sample), and its steps over T=1000 samples
  (one C call a block);
- torch, one thread: torch.nn.LSTM/GRU over (T, 1, I) per call, and torch.nn.LSTMCell /
  GRUCell per sample.

GFLOP/s counts the multiply-adds of the cell's products (2 per weight per step). The core,
the load and the core's measured single-thread fp32 GEMM rate are printed first.

    python benchmarks/bench_stream.py                  # every cell below; H = 8..128
    python benchmarks/bench_stream.py --hidden 32 128 --cells lstm
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import subprocess
import sys
import tempfile
import time

import numpy as np

import rnncompiler as rc
from rnncompiler.cli.bench import machine_line

try:
    import torch
    torch.set_num_threads(1)
except ImportError:
    torch = None

HERE = os.path.dirname(os.path.abspath(__file__))
T = 1000

DRIVER = r"""
#define _ISOC11_SOURCE
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include "k.h"
static double now(void) { struct timespec s; clock_gettime(CLOCK_MONOTONIC, &s); return s.tv_sec * 1e9 + s.tv_nsec; }
/* argv: T, repeats, then the flat params from stdin; prints ns/step of infer and of step per repeat */
int main(int argc, char **argv)
{
    const int T = atoi(argv[1]), reps = atoi(argv[2]);
    const size_t P = k_param_count(), I = k_input_size(), S = k_state_size(), O = k_output_size();
    float *params = malloc(P * sizeof(float)), *x = malloc((size_t)T * I * sizeof(float));
    float *y = malloc((size_t)T * O * sizeof(float)), *s0 = calloc(S, sizeof(float)), *s1 = calloc(S, sizeof(float));
    for (size_t i = 0; i < P; ++i) if (scanf("%f", &params[i]) != 1) return 1;
    for (size_t i = 0; i < (size_t)T * I; ++i) x[i] = (float)(((i * 7919) % 2000) / 1000.0 - 1.0);
    /* workspaces on 64 bytes, as the header advises */
    float *wi = aligned_alloc(64, (k_infer_workspace_size(T, 1) * sizeof(float) + 63) / 64 * 64);
    float *ws = aligned_alloc(64, (k_step_workspace_size() * sizeof(float) + 63) / 64 * 64);
    if (k_pack(params, ws)) return 2;
    for (int r = 0; r < reps; ++r) {
        double t0 = now();
        if (k_infer(T, 1, params, x, NULL, s0, y, s1, wi)) return 3;
        const double a = (now() - t0) / T;
        t0 = now();
        for (int t = 0; t < T; ++t) k_step(params, x + (size_t)t * I, s0, y + (size_t)t * O, s0, ws);
        printf("%.1f %.1f\n", a, (now() - t0) / T);
    }
    printf("check %g\n", (double)y[(size_t)T * O - 1]);
    return 0;
}
"""


def peephole_lstm():
    @rc.cell(states=("h", "c"), output="h")
    def peephole_lstm(x, h, c, p):
        z = rc.concat(h, x)
        f = rc.sigmoid(p.linear("W_f", z, bias="b_f") + p.vector("p_f") * c)
        i = rc.sigmoid(p.linear("W_i", z, bias="b_i") + p.vector("p_i") * c)
        g = rc.tanh(p.linear("W_g", z, bias="b_g"))
        c_new = f * c + i * g
        o = rc.sigmoid(p.linear("W_o", z, bias="b_o") + p.vector("p_o") * c_new)
        return {"h": o * rc.tanh(c_new), "c": c_new}
    return peephole_lstm


# lstm_torch and gru_torch: the equations and weights of torch.nn.LSTM / GRU, as
# real-time libraries that load PyTorch weights implement them (the GRU's reset gate
# applied after its product, off the step's chain)
CELLS = {"lstm": lambda: rc.cells.lstm, "gru": lambda: rc.cells.gru, "peephole": peephole_lstm,
         "lstm_torch": lambda: rc.cells.lstm_torch, "gru_torch": lambda: rc.cells.gru_torch}
TORCH_PEER = {"lstm": "lstm", "gru": "gru", "lstm_torch": "lstm", "gru_torch": "gru"}


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def flops_per_step(kern):
    """2 per weight of every matrix the step multiplies by (the cell's products)."""
    return 2 * sum(int(np.prod(s)) for s in kern.param_shapes.values() if len(s) == 2)


def exported_ns(cell, H, reps, out):
    """(infer ns/step, step ns/step) lists of the exported C, built -O3 -march=native."""
    exp = rc.export_c(cell, out, input_size=H, hidden_size=H, dtype="float32", name="k")
    driver = os.path.join(out, "drive.c")
    with open(driver, "w") as f:
        f.write(DRIVER)
    binary = os.path.join(out, "drive")
    cc = os.environ.get("CC", "cc")
    subprocess.run([cc, "-O3", "-march=native", "-I", out, driver, exp.source,
                    "-o", binary, "-lm"], check=True)
    kern = rc.compile(cell, input_size=H, hidden_size=H, dtype="float32")
    flat = exp.flat_params(kern.init_params(seed=0))
    proc = subprocess.run([binary, str(T), str(reps)], input=" ".join("%.9g" % v for v in flat),
                          capture_output=True, text=True, check=True)
    rows = [tuple(map(float, ln.split())) for ln in proc.stdout.splitlines()
            if not ln.startswith("check")]
    return [r[0] for r in rows], [r[1] for r in rows]


def jit_ns(kern, H, reps):
    params = kern.init_params(seed=0)
    x = np.random.default_rng(0).standard_normal((T, 1, H)).astype(np.float32)
    kern.infer(params, x)
    stream = kern.stream(params)
    infer, step, streamed, call, blocks = [], [], [], [], []
    x1 = np.ascontiguousarray(x[:1])
    for _ in range(reps):
        infer.append(_timed(lambda: kern.infer(params, x)) / T * 1e9)
        n = 200

        def calls():                  # Python's share of a call: T=1, one step of C
            for _ in range(n):
                kern.infer(params, x1)
        call.append(_timed(calls) / n * 1e6)

        def steps():
            s = None
            for t in range(n):
                _, s = kern.step(params, x[t], s)
        step.append(_timed(steps) / n * 1e9)

        def streams():
            for t in range(T):
                stream.step(x[t, 0])
        streamed.append(_timed(streams) / T * 1e9)
        blocks.append(_timed(lambda: stream.steps(x[:, 0])) / T * 1e9)
    return infer, step, streamed, call, blocks


def torch_ns(name, H, reps):
    if torch is None or name not in TORCH_PEER:
        return None, None
    name = TORCH_PEER[name]
    mod = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[name](H, H)
    cellmod = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell}[name](H, H)
    x = torch.randn(T, 1, H)
    infer, step = [], []
    with torch.no_grad():
        mod(x)
        for _ in range(reps):
            infer.append(_timed(lambda: mod(x)) / T * 1e9)
            n = 200

            def steps():
                s = None
                for t in range(n):
                    s = cellmod(x[t], s)
            step.append(_timed(steps) / n * 1e9)
    return infer, step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    ap.add_argument("--cells", nargs="+", default=sorted(CELLS), choices=sorted(CELLS))
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="H = 8 and 32, LSTM, 3 repeats")
    args = ap.parse_args(argv)
    if args.quick:
        args.hidden, args.cells, args.repeats = [8, 32], ["lstm"], 3
    print(machine_line())
    print("ns per step, float32, batch 1, one thread: min / median of %d interleaved repeats; "
          "GFLOP/s of the exported C's step\n" % args.repeats)
    print("%-10s %4s  %-17s %-17s %-7s  %-17s %-11s %-17s %-17s %-17s  %-17s %-17s" % (
        "cell", "H", "export T=1000", "export step", "GFLOP/s", "JIT T=1000", "call (us)",
        "JIT kern.step", "JIT stream.step", "stream.steps 1000", "torch T=1000",
        "torch cell/step"))
    with tempfile.TemporaryDirectory() as tmp:
        for cname in args.cells:
            cell = CELLS[cname]()
            for H in args.hidden:
                out = os.path.join(tmp, "%s%d" % (cname, H))
                os.makedirs(out)
                kern = rc.compile(cell, input_size=H, hidden_size=H, dtype="float32")
                e_inf, e_step = exported_ns(cell, H, args.repeats, out)
                j_inf, j_step, j_stream, j_call, j_blocks = jit_ns(kern, H, args.repeats)
                t_inf, t_step = torch_ns(cname, H, args.repeats)

                def mm(v):
                    return "-" if v is None else "%7.0f / %-7.0f" % (min(v), np.median(v))
                gf = flops_per_step(kern) / min(e_step)
                print("%-10s %4d  %-17s %-17s %-7.1f  %-17s %-11s %-17s %-17s %-17s  %-17s %-17s" % (
                    cname, H, mm(e_inf), mm(e_step), gf, mm(j_inf), "%.1f" % min(j_call),
                    mm(j_step), mm(j_stream), mm(j_blocks), mm(t_inf), mm(t_step)))
                sys.stdout.flush()


if __name__ == "__main__":
    main()
