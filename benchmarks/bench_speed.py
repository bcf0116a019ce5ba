"""Speed of rnncompiler against the peers a user would otherwise pick, every case in one
run: forward+backward of a whole float32 sequence (T=100, B=32 unless said) with a loss
touching every output, both sides on one thread, the median of interleaved runs. Writes
docs/performance.md (table and plot) with --write-docs.

    python benchmarks/bench_speed.py                 # every case
    python benchmarks/bench_speed.py --quick         # small sizes, a few repeats
    python benchmarks/bench_speed.py --write-docs    # also docs/performance.md + plot
"""
import os

# one BLAS/OpenMP thread everywhere: set before numpy, torch or jax load their libraries
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")

import argparse
import datetime
import json
import platform
import subprocess
import sys
import tempfile

import numpy as np

import rnncompiler as rc
from rnncompiler.cli.bench import machine_facts, rnncompiler_step, summary, torch_step, tuning_line
from rnncompiler.cli.bench import time_interleaved as interleaved_ms

try:
    import torch
except ImportError:
    torch = None
try:
    import jax
    import jax.numpy as jnp
except ImportError:
    jax = None

HERE = os.path.dirname(os.path.abspath(__file__))
DOCS = os.path.join(os.path.dirname(HERE), "docs")


# ---------------------------------------------------------------- the cells

@rc.cell(states=("h", "c"), output="h")
def lstm(x, h, c, p):
    """The standard LSTM (forget gate), torch.nn.LSTM's parameterisation."""
    f = rc.sigmoid(p.linear("W_if", x, bias="b_if") + p.linear("W_hf", h, bias="b_hf"))
    i = rc.sigmoid(p.linear("W_ii", x, bias="b_ii") + p.linear("W_hi", h, bias="b_hi"))
    g = rc.tanh(p.linear("W_ig", x, bias="b_ig") + p.linear("W_hg", h, bias="b_hg"))
    o = rc.sigmoid(p.linear("W_io", x, bias="b_io") + p.linear("W_ho", h, bias="b_ho"))
    c_new = f * c + i * g
    return {"h": o * rc.tanh(c_new), "c": c_new}


@rc.cell(states=("h",))
def gru(x, h, p):
    """The GRU as torch.nn.GRU computes it (reset applied after the hidden product)."""
    r = rc.sigmoid(p.linear("W_ir", x, bias="b_ir") + p.linear("W_hr", h, bias="b_hr"))
    z = rc.sigmoid(p.linear("W_iz", x, bias="b_iz") + p.linear("W_hz", h, bias="b_hz"))
    n = rc.tanh(p.linear("W_in", x, bias="b_in") + r * p.linear("W_hn", h, bias="b_hn"))
    return {"h": (1 - z) * n + z * h}


@rc.cell(states=("h", "c"), output="h")
def peephole_lstm(x, h, c, p):
    """The LSTM with peepholes (Gers & Schmidhuber): f and i see c_{t-1}, o sees c_t."""
    z = rc.concat(h, x)
    f = rc.sigmoid(p.linear("W_f", z, bias="b_f") + p.vector("p_f") * c)
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i") + p.vector("p_i") * c)
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))
    c_new = f * c + i * g
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o") + p.vector("p_o") * c_new)
    return {"h": o * rc.tanh(c_new), "c": c_new}


# ---------------------------------------------------------------- the contestants

def _data(H, B, T, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((T, B, H)).astype(np.float32),
            rng.standard_normal((T, B, H)).astype(np.float32))


def rnnc_step(cell, H, B, T, seed=0, checkpoint=None):
    """rnncompiler: one forward and one backward call over the whole sequence (the same
    callable `rnnc bench` times)."""
    kern = rc.compile(cell, input_size=H, hidden_size=H, dtype="float32", checkpoint=checkpoint)
    return rnncompiler_step(kern, *_data(H, B, T, seed))


def torch_module_step(kind, H, B, T, seed=0):
    """torch.nn.LSTM / torch.nn.GRU, as their docs show: module call, loss, backward (the
    same callable `rnnc bench` times)."""
    return torch_step(kind, H, H, *_data(H, B, T, seed))


def torch_peephole_step(H, B, T, seed=0):
    """The peephole LSTM written in eager PyTorch: fused gate weights, a loop over t."""
    torch.manual_seed(seed)
    W = (torch.randn(4 * H, 2 * H) * H ** -0.5).requires_grad_()
    b = torch.zeros(4 * H, requires_grad=True)
    peep = (torch.randn(3, H) * 0.1).requires_grad_()
    x = torch.randn(T, B, H, requires_grad=True)
    dy = torch.randn(T, B, H)

    def step():
        for p in (W, b, peep, x):
            p.grad = None
        h, c, outs = torch.zeros(B, H), torch.zeros(B, H), []
        for t in range(T):
            a = torch.cat([h, x[t]], 1) @ W.T + b
            af, ai, ag, ao = a.chunk(4, 1)
            f = torch.sigmoid(af + peep[0] * c)
            i = torch.sigmoid(ai + peep[1] * c)
            c = f * c + i * torch.tanh(ag)
            h = torch.sigmoid(ao + peep[2] * c) * torch.tanh(c)
            outs.append(h)
        (torch.stack(outs) * dy).sum().backward()
    return step


def jax_peephole_step(H, B, T, seed=0):
    """The peephole LSTM in JAX: jax.jit(jax.value_and_grad(...)) over lax.scan, fused
    gate weights, gradients of the parameters and of x."""
    key = jax.random.PRNGKey(seed)
    k1, k2, k3 = jax.random.split(key, 3)
    params = {"W": jax.random.normal(k1, (4 * H, 2 * H)) * H ** -0.5,
              "b": jnp.zeros(4 * H), "peep": jax.random.normal(k2, (3, H)) * 0.1}
    x = jax.random.normal(k3, (T, B, H))
    dy = jnp.asarray(np.random.default_rng(seed).standard_normal((T, B, H)), jnp.float32)

    def cell(carry, x_t, p):
        h, c = carry
        a = jnp.concatenate([h, x_t], 1) @ p["W"].T + p["b"]
        af, ai, ag, ao = jnp.split(a, 4, 1)
        f = jax.nn.sigmoid(af + p["peep"][0] * c)
        i = jax.nn.sigmoid(ai + p["peep"][1] * c)
        c = f * c + i * jnp.tanh(ag)
        h = jax.nn.sigmoid(ao + p["peep"][2] * c) * jnp.tanh(c)
        return (h, c), h

    def loss(p, xs):
        zeros = jnp.zeros((B, H))
        _, hs = jax.lax.scan(lambda carry, x_t: cell(carry, x_t, p), (zeros, zeros), xs)
        return jnp.sum(hs * dy)

    fn = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
    return lambda: jax.block_until_ready(fn(params, x))


# ---------------------------------------------------------------- timing

def time_interleaved(fns, repeats):
    """Median seconds per function, the functions run in turn so that a slow spell of the
    machine hits all alike."""
    return {name: float(np.median(ms)) / 1e3 for name, ms in interleaved_ms(fns, repeats).items()}


def case(name, ours, peer_name, peer, target, repeats):
    """One row: rnncompiler against one peer, both timed in the same interleaved run; the
    ratio of medians (the one targets are read on) and of minima, and the load."""
    t = summary(interleaved_ms({"ours": ours, "peer": peer}, repeats))
    row = {"case": name, "peer": peer_name, "ours_ms": t["ours"][1], "peer_ms": t["peer"][1],
           "ours_min": t["ours"][0], "peer_min": t["peer"][0],
           "ratio": t["ours"][1] / t["peer"][1], "ratio_min": t["ours"][0] / t["peer"][0],
           "target": target, "load": os.getloadavg()[0]}
    print("%-34s %-26s %9.2f %9.2f %7.2f %7.2f %5.1f  %s"
          % (name, peer_name, row["ours_ms"], row["peer_ms"], row["ratio"], row["ratio_min"],
             row["load"], target), flush=True)
    return row


def speed_rows(args):
    """Every speed case of the table that the installed peers allow."""
    T, B, R = args.steps, args.batch, args.repeats
    rows = []
    if torch is not None:
        torch.set_num_threads(1)
        for H, target in ((512, "<= 1.05"), (128, "<= 1.0"), (32, "<= 0.7")):
            if H in args.hidden:
                rows.append(case("LSTM H=I=%d" % H, rnnc_step(lstm, H, B, T), "torch.nn.LSTM",
                                 torch_module_step("lstm", H, B, T), target, R))
        rows.append(case("LSTM B=1 H=I=64 (latency)", rnnc_step(lstm, 64, 1, T), "torch.nn.LSTM",
                         torch_module_step("lstm", 64, 1, T), "<= 0.6", R))
        rows.append(case("GRU H=I=128", rnnc_step(gru, 128, B, T), "torch.nn.GRU",
                         torch_module_step("gru", 128, B, T), "<= 0.7", R))
        for H, target in ((128, "<= 0.5"), (32, "<= 0.15")):
            rows.append(case("peephole LSTM H=I=%d" % H, rnnc_step(peephole_lstm, H, B, T),
                             "torch eager loop", torch_peephole_step(H, B, T), target, R))
    if jax is not None:
        rows.append(case("peephole LSTM H=I=128", rnnc_step(peephole_lstm, 128, B, T),
                         "jax.jit(value_and_grad(scan))", jax_peephole_step(128, B, T), "<= 0.8", R))
    return rows


def checkpoint_row(args, k=10):
    """checkpoint=k against the plain kernel: time (<= 1.4x) and the tape kept for backward."""
    H = 128 if 128 in args.hidden else max(args.hidden)
    T, B = args.steps, args.batch
    t = time_interleaved({"plain": rnnc_step(lstm, H, B, T), "ck": rnnc_step(lstm, H, B, T, checkpoint=k)},
                         args.repeats)
    plain = rc.compile(lstm, H, H, "float32").tape_bytes(T, B)
    ck = rc.compile(lstm, H, H, "float32", checkpoint=k).tape_bytes(T, B)
    row = {"case": "checkpoint=%d vs plain, LSTM H=%d" % (k, H), "time_ratio": t["ck"] / t["plain"],
           "plain_mb": plain["peak"] / 1e6, "ck_kept_mb": ck["kept"] / 1e6, "ck_peak_mb": ck["peak"] / 1e6}
    print("%-34s time %.2fx (target <= 1.4); tape %.2f MB -> kept %.3f MB, peak %.2f MB"
          % (row["case"], row["time_ratio"], row["plain_mb"], row["ck_kept_mb"], row["ck_peak_mb"]))
    return row


def thread_row(args):
    """2 threads against 1 for the big GEMMs, LSTM H=512 (best on an idle machine)."""
    step = rnnc_step(lstm, 512 if 512 in args.hidden else max(args.hidden), args.batch, args.steps)

    def with_threads(n):
        def run():
            rc.set_num_threads(n)
            step()
        return run
    t = time_interleaved({"1": with_threads(1), "2": with_threads(2)}, args.repeats)
    rc.set_num_threads(1)
    row = {"case": "2 threads vs 1, LSTM", "speedup": t["1"] / t["2"],
           "one_ms": 1e3 * t["1"], "two_ms": 1e3 * t["2"]}
    print("%-34s 1 thread %.2f ms, 2 threads %.2f ms: %.2fx (load average %.1f)"
          % (row["case"], row["one_ms"], row["two_ms"], row["speedup"], os.getloadavg()[0]))
    return row


COMPILE_CHILD = """
import json, sys, time
t0 = time.perf_counter()
import rnncompiler as rc
t1 = time.perf_counter()
sys.path.insert(0, %r)
from bench_speed import lstm
if sys.argv[2] == "steady":     # the graph stages already imported, as after a first compile
    import rnncompiler.compiler.graph, rnncompiler.compiler.autodiff, rnncompiler.compiler.codegen, cffi
t2 = time.perf_counter()
rc.compile(lstm, input_size=int(sys.argv[1]), hidden_size=int(sys.argv[1]), dtype="float32")
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "compile_s": t3 - t2}))
""" % HERE


def compile_rows(args):
    """Cold compile (trace, derive, C, gcc; empty cache but its runtime object) and warm
    compile (cache hit), each in a fresh process, timed after import."""
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, RNNC_CACHE_DIR=cache)
        # bytecode cached as in any installation after its first use (the warm-up child
        # writes it), not compiled again in every process
        env.pop("PYTHONDONTWRITEBYTECODE", None)

        def child(H, mode):
            out = subprocess.run([sys.executable, "-c", COMPILE_CHILD, str(H), mode], env=env,
                                 capture_output=True, text=True, check=True)
            return json.loads(out.stdout.strip().splitlines()[-1])
        child(7, "first")            # builds the runtime object (once per machine) and the bytecode
        for H in args.hidden:
            first = child(H, "first")
            rows.append({"case": "cold compile H=%d (first in process)" % H, "s": first["compile_s"],
                         "import_s": first["import_s"]})
            steady = child(H + 1, "steady")
            rows.append({"case": "cold compile H=%d (stages imported)" % (H + 1), "s": steady["compile_s"]})
            warm = child(H, "first")
            rows.append({"case": "warm compile H=%d (cache hit)" % H, "s": warm["compile_s"],
                         "import_s": warm["import_s"]})
    for row in rows:
        print("%-44s %7.3f s%s" % (row["case"], row["s"], "   (import %.2f s)" % row["import_s"]
                                   if "import_s" in row else ""))
    return rows


# ---------------------------------------------------------------- report

def lstm_flops(case, T, B):
    """Multiply-adds x 2 of an LSTM row's products, forward (one) and backward (two: the
    weight gradients and the operands'); None for another case."""
    if not case.startswith("LSTM H=I="):
        return None
    H = int(case.split("=")[-1])
    return 3 * 2 * 4 * H * (H + H) * T * B


def peak_fraction(ms, case, meta):
    """The fraction of the core's measured single-thread GEMM rate a side reached."""
    flops = lstm_flops(case, meta["T"], meta["B"])
    return None if flops is None else flops / (ms * 1e-3) / 1e9 / meta["gemm"]


def write_docs(rows, threads, ck, compiles, meta):
    """docs/performance.md: this run's core replaces its own earlier run in
    docs/performance.json (every core measured is kept), and the page is written from all
    of them: a summary per core, then each core's table; the plot is this run's."""
    path = os.path.join(DOCS, "performance.json")
    try:
        with open(path) as f:
            runs = json.load(f)["runs"]
    except (OSError, ValueError, KeyError):
        runs = {}
    runs[meta["core"]] = {"meta": meta, "rows": rows, "threads": threads, "ck": ck,
                          "compiles": compiles}
    with open(path, "w") as f:
        json.dump({"runs": runs}, f, indent=1, sort_keys=True)
        f.write("\n")
    with open(os.path.join(DOCS, "performance.md"), "w") as f:
        f.write(render_page(runs, latest=meta["core"]))
    _plot(rows, os.path.join(DOCS, "performance.png"))


def render_page(runs, latest):
    """The page: how it is measured, the LSTM targets on every core, each core's tables."""
    order = [latest] + sorted(c for c in runs if c != latest)
    lines = ["# Performance", "",
             "Measured by `python benchmarks/bench_speed.py --write-docs`, one run per core: "
             "float32, T=100, B=32 unless said, forward+backward of a whole sequence with a loss "
             "touching every output; every side on one thread (torch, XLA and every BLAS "
             "pinned); ratio = rnncompiler time / peer time, of the medians and of the minima "
             "of interleaved runs in one process (below 1: rnncompiler is faster). "
             "`rnnc bench` times the same callables for LSTM and GRU and prints the same ratios. "
             "The machines are shared: ratios are what to read, not milliseconds. Each core's "
             "single-thread fp32 GEMM rate is measured at the start of its run (numpy's "
             "OpenBLAS, 1024 x 1024, the best of its own pick of kernels and each kernel set "
             "the core can run); \"of peak\" is the LSTM's products (forward once, "
             "backward twice) over the time, against that rate.", "",
             "## The LSTM on every core measured", "",
             "| core | ISA | GEMM peak | date | H=512: ratio, of peak (ours / torch) | "
             "H=128 | H=32 |", "|---|---|---|---|---|---|---|"]
    for core in order:
        run = runs[core]
        meta, cells = run["meta"], []
        for H in (512, 128, 32):
            r = next((r for r in run["rows"] if r["case"] == "LSTM H=I=%d" % H), None)
            cells.append("-" if r is None else "**%.2f** (%s), %.0f%% / %.0f%%" % (
                r["ratio"], r["target"], 100 * peak_fraction(r["ours_ms"], r["case"], meta),
                100 * peak_fraction(r["peer_ms"], r["case"], meta)))
        lines.append("| %s | %s | %.0f GFLOP/s | %s | %s |" % (
            core, meta["width"], meta["gemm"], meta["date"], " | ".join(cells)))
    for core in order:
        lines += [""] + core_section(runs[core])
    lines += ["", "![LSTM forward+backward time against H, %s](performance.png)" % latest, ""]
    return "\n".join(lines)


def core_section(run):
    """One core's run: its tables, threads, checkpointing and compile times."""
    meta, rows, threads, ck = run["meta"], run["rows"], run["threads"], run["ck"]
    lines = ["## %s" % meta["core"], "",
             "%s; measured single-thread fp32 GEMM rate %.0f GFLOP/s; load average %.2f at the "
             "start, %.2f at the end; %s, %s, T=%d, B=%d, %d interleaved runs. Kernels tuned to "
             "this core: %s." % (meta["width"], meta["gemm"], meta["load"], meta["load_end"],
                                 meta["versions"], meta["date"], meta["T"], meta["B"],
                                 meta["repeats"], meta.get("tuning", "not recorded")), "",
             "| case | peer | rnncompiler ms (median) | peer ms (median) | ratio (median) | "
             "ratio (min) | load | target |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| %s | %s | %.2f | %.2f | **%.2f** | %.2f | %.1f | %s |" % (
            r["case"], r["peer"], r["ours_ms"], r["peer_ms"], r["ratio"], r["ratio_min"],
            r["load"], r["target"]))
    lines += ["", "Threads: %s — %.2f ms on one thread, %.2f ms on two (%.2fx; on a busy "
              "2-core machine the second thread cannot help)."
              % (threads["case"], threads["one_ms"], threads["two_ms"], threads["speedup"]), "",
              "Checkpointing: %s — %.2fx the time of the plain kernel; the tape kept between "
              "forward and backward goes from %.2f MB to %.3f MB (%.2f MB at the peak of "
              "backward)." % (ck["case"], ck["time_ratio"], ck["plain_mb"], ck["ck_kept_mb"],
                              ck["ck_peak_mb"])]
    if run["compiles"]:
        lines += ["", "| compile of an LSTM, in a fresh process after import | seconds |", "|---|---|"]
        lines += ["| %s | %.3f |" % (c["case"], c["s"]) for c in run["compiles"]]
        lines += ["", "A cold compile traces the cell, derives its backward pass, prints the C and "
                  "runs gcc on its translation units in parallel: forward and backward, and in "
                  "runs from 2026-12-07 on, for a cell whose weights fit 32 KB (H=32 here, not "
                  "H=33), the unit that infers at batch 1 (docs/getting-started.md; about 0.3 s "
                  "more). The first one in a process "
                  "also loads sympy and networkx, which `import rnncompiler` leaves to the first "
                  "compile that needs them; a cache hit never loads them."]
    return lines


def _plot(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    lstm_rows = [r for r in rows if r["case"].startswith("LSTM H=I=")]
    if not lstm_rows:
        return
    H = [int(r["case"].split("=")[-1]) for r in lstm_rows]
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.loglog(H, [r["ours_ms"] for r in lstm_rows], "o-", label="rnncompiler")
    ax.loglog(H, [r["peer_ms"] for r in lstm_rows], "s--", label="torch.nn.LSTM")
    ax.set_xlabel("hidden size H (= I)")
    ax.set_ylabel("forward+backward ms")
    ax.set_title("LSTM, T=100, B=32, float32, 1 thread")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", "-T", type=int, default=100)
    ap.add_argument("--batch", "-B", type=int, default=32)
    ap.add_argument("--hidden", type=int, nargs="+", default=[32, 128, 512])
    ap.add_argument("--repeats", type=int, default=31)
    ap.add_argument("--quick", action="store_true", help="H=32 only, T=20, 3 repeats")
    ap.add_argument("--no-compile", action="store_true", help="skip the compile-time rows")
    ap.add_argument("--write-docs", action="store_true", help="write docs/performance.md and its plot")
    args = ap.parse_args(argv)
    if args.quick:
        args.hidden, args.steps, args.repeats = [32], 20, 3
    rc.set_num_threads(1)
    core, width, gemm, load = machine_facts()
    print("core: %s, %s, single-thread fp32 GEMM %.0f GFLOP/s; load %.2f"
          % (core, width, gemm, load))
    tuned = tuning_line()
    print(tuned)
    meta = {"cpu": platform.processor() or platform.machine(), "date": datetime.date.today().isoformat(),
            "core": core, "width": width, "gemm": gemm, "repeats": args.repeats, "tuning": tuned,
            "T": args.steps, "B": args.batch, "load": load,
            "versions": "rnncompiler %s, torch %s, jax %s" % (
                rc.__version__, torch.__version__ if torch else "-", jax.__version__ if jax else "-")}
    print("%-34s %-26s %9s %9s %7s %7s %5s  %s" % ("case", "peer", "ours ms", "peer ms", "ratio",
                                                 "(min)", "load", "target"))
    rows = speed_rows(args)
    ck = checkpoint_row(args)
    threads = thread_row(args)
    compiles = [] if args.no_compile else compile_rows(args)
    meta["load_end"] = os.getloadavg()[0]
    if args.write_docs:
        write_docs(rows, threads, ck, compiles, meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
