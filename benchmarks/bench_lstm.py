"""Forward+backward of a whole sequence for a standard LSTM: rnncompiler against a
hand-written numpy BPTT and torch.nn.LSTM, all on one thread, plus compile times."""
import os

# one BLAS/OpenMP thread everywhere: set before numpy and torch load their libraries
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse
import datetime
import json
import platform
import subprocess
import sys
import tempfile

import numpy as np

try:
    import torch
except ImportError:
    torch = None

import rnncompiler as rc
from rnncompiler.demo import lstm
from rnncompiler.cli.bench import time_interleaved

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
FULL = {"steps": 100, "hidden": [32, 128, 512], "repeats": 10}
QUICK = {"steps": 20, "hidden": [32], "repeats": 3}
GATES = ("f", "i", "o", "g")          # fused order: the three sigmoid gates, then tanh
TOLERANCE = 1e-8

COMPILE_CHILD = """
import json, sys, time
t0 = time.perf_counter()
import rnncompiler as rc
from rnncompiler.demo import lstm
t1 = time.perf_counter()
rc.compile(lstm, input_size=int(sys.argv[1]), hidden_size=int(sys.argv[1]), dtype=sys.argv[2])
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "compile_s": t2 - t1}))
"""


# ---------------------------------------------------------------- numpy reference

def sigmoid(a):
    """The logistic function, through tanh (no overflow warnings)."""
    return 0.5 * np.tanh(0.5 * a) + 0.5


def fuse(params):
    """The four gates' weights stacked in GATES order: W (4H, H+I) acting on [h; x], b (4H,)."""
    W = np.concatenate([params["W_" + k] for k in GATES])
    b = np.concatenate([params["b_" + k] for k in GATES])
    return W, b


def unfuse(dW, db):
    """Per-gate gradients {"W_f": ..., "b_f": ...} from fused ones."""
    H = db.shape[0] // 4
    grads = {}
    for n, k in enumerate(GATES):
        grads["W_" + k] = dW[n * H:(n + 1) * H]
        grads["b_" + k] = db[n * H:(n + 1) * H]
    return grads


def np_forward(W, b, x):
    """Outputs (T, B, H) and the tape for np_backward; x products in one GEMM over T*B rows."""
    T, B, I = x.shape
    H = W.shape[0] // 4
    WhT = np.ascontiguousarray(W[:, :H].T)
    gates = (x.reshape(T * B, I) @ W[:, H:].T + b).reshape(T, B, 4 * H)
    hs = np.zeros((T + 1, B, H), x.dtype)
    cs = np.zeros((T + 1, B, H), x.dtype)
    tcs = np.empty((T, B, H), x.dtype)
    for t in range(T):
        a = gates[t]
        a += hs[t] @ WhT
        a[:, :3 * H] = sigmoid(a[:, :3 * H])
        a[:, 3 * H:] = np.tanh(a[:, 3 * H:])
        f, i, o, g = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        cs[t + 1] = f * cs[t] + i * g
        tcs[t] = np.tanh(cs[t + 1])
        hs[t + 1] = o * tcs[t]
    return hs[1:], (W, x, gates, hs, cs, tcs)


def np_backward(tape, dy):
    """Gradients (dW, db, dx, dh0, dc0) of sum(outputs * dy); weight gradients in one GEMM."""
    W, x, gates, hs, cs, tcs = tape
    T, B, I = x.shape
    H = W.shape[0] // 4
    Wh = W[:, :H]
    da = np.empty_like(gates)
    dh = np.zeros((B, H), x.dtype)
    dc = np.zeros((B, H), x.dtype)
    for t in range(T - 1, -1, -1):
        a, d, tc = gates[t], da[t], tcs[t]
        f, i, o, g = a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:]
        dh += dy[t]
        dc += dh * o * (1 - tc * tc)
        d[:, :H] = dc * cs[t] * f * (1 - f)
        d[:, H:2 * H] = dc * g * i * (1 - i)
        d[:, 2 * H:3 * H] = dh * tc * o * (1 - o)
        d[:, 3 * H:] = dc * i * (1 - g * g)
        dc *= f
        dh = d @ Wh
    da = da.reshape(T * B, 4 * H)
    z = np.concatenate([hs[:-1], x], axis=2).reshape(T * B, H + I)
    dW = da.T @ z
    dx = (da @ W[:, H:]).reshape(T, B, I)
    return dW, da.sum(axis=0), dx, dh, dc


def max_rel_error(ours, ref):
    """max |ours - ref| / max |ref|."""
    return float(np.max(np.abs(ours - ref)) / max(np.max(np.abs(ref)), np.finfo(ref.dtype).tiny))


def verify_numpy_reference(T=6, B=3, I=5, H=4):
    """Max relative error of the numpy BPTT against rnncompiler, float64, small sizes."""
    kern = rc.compile(lstm, input_size=I, hidden_size=H, dtype="float64")
    params = kern.init_params(seed=1)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((T, B, I))
    dy = rng.standard_normal((T, B, H))
    res = kern.forward(params, x)
    g = kern.backward(res, dy)
    W, b = fuse(params)
    y, tape = np_forward(W, b, x)
    dW, db, dx, dh0, dc0 = np_backward(tape, dy)
    ours = dict(unfuse(dW, db), y=y, x=dx, h0=dh0, c0=dc0)
    ref = dict(g.params, y=res.outputs, x=g.x, h0=g.state0["h"], c0=g.state0["c"])
    return max(max_rel_error(ours[k], ref[k]) for k in ref)


# ---------------------------------------------------------------- the three contenders

def rnncompiler_step(kern, params, x, dy):
    """A callable running rnncompiler's forward+backward over the sequence."""
    return lambda: kern.backward(kern.forward(params, x), dy)


def numpy_step(kern, params, x, dy):
    """A callable running the hand-written numpy forward+backward over the sequence."""
    W, b = fuse(params)
    return lambda: np_backward(np_forward(W, b, x)[1], dy)


def torch_step(kern, params, x, dy):
    """A callable running torch.nn.LSTM (own weights) forward, then backward of sum(out * dy)."""
    torch.manual_seed(0)
    H = kern.hidden_size
    model = torch.nn.LSTM(H, H).to(getattr(torch, x.dtype.name))
    xt = torch.from_numpy(x).requires_grad_(True)
    dyt = torch.from_numpy(dy)

    def step():
        model.zero_grad(set_to_none=True)
        xt.grad = None
        out, _ = model(xt)
        (out * dyt).sum().backward()
    return step


def bench_size(H, args):
    """Timings of every available implementation for one hidden size."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.steps, args.batch, H)).astype(args.dtype)
    dy = rng.standard_normal((args.steps, args.batch, H)).astype(args.dtype)
    kern = rc.compile(lstm, input_size=H, hidden_size=H, dtype=args.dtype)
    params = kern.init_params(seed=0)
    makers = {"rnncompiler": rnncompiler_step, "numpy": numpy_step}
    if torch is not None:
        makers["torch"] = torch_step
    fns = {name: make(kern, params, x, dy) for name, make in makers.items()}
    times = time_interleaved(fns, args.repeats, args.warmup)
    return {"H": H, "times_ms": times,
            "median_ms": {name: float(np.median(t)) for name, t in times.items()}}


# ---------------------------------------------------------------- compile times

def compile_in_subprocess(H, dtype, cache_dir):
    """Import and compile seconds of the LSTM in a fresh interpreter using cache_dir."""
    env = dict(os.environ, RNNC_CACHE_DIR=cache_dir)
    proc = subprocess.run([sys.executable, "-c", COMPILE_CHILD, str(H), dtype], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError("compiling the LSTM (H=%d) in a subprocess failed:\n%s"
                           % (H, proc.stderr[-3000:]))
    return json.loads(proc.stdout.splitlines()[-1])


def compile_times(H, dtype, root):
    """Cold (new empty cache) and warm (same cache, entry present) compile of one size."""
    cache_dir = tempfile.mkdtemp(prefix="cold-h%d-" % H, dir=root)
    cold = compile_in_subprocess(H, dtype, cache_dir)
    warm = compile_in_subprocess(H, dtype, cache_dir)
    return {"H": H, "import_s": cold["import_s"], "cold_s": cold["compile_s"],
            "warm_s": warm["compile_s"]}


# ---------------------------------------------------------------- reporting

def cpu_model():
    """The CPU's model name, from /proc/cpuinfo where there is one."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment():
    """Versions, CPU and load average, for the record."""
    return {"python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__ if torch is not None else None,
            "rnncompiler": rc.__version__, "cpu": cpu_model(),
            "cores": os.cpu_count(), "loadavg": list(os.getloadavg())}


def print_compile_table(rows, dtype):
    """The compile times, one row per hidden size."""
    print("compile of the LSTM (I=H, %s), each in a fresh subprocess, timed after its imports:"
          % dtype)
    print("  cold = empty RNNC_CACHE_DIR (derive, emit C, gcc, load);"
          " warm = second process, same cache (load)")
    print("%6s %10s %10s %10s" % ("H", "import s", "cold s", "warm ms"))
    for r in rows:
        print("%6d %10.2f %10.2f %10.1f" % (r["H"], r["import_s"], r["cold_s"], 1e3 * r["warm_s"]))


def print_speed_table(rows, args):
    """The median milliseconds and ratios, one row per hidden size."""
    names = list(rows[0]["median_ms"])
    print("forward+backward, T=%d, B=%d, I=H, %s, 1 thread, median of %d interleaved runs (ms);"
          % (args.steps, args.batch, args.dtype, args.repeats))
    print("  ratio = rnncompiler / other: below 1 means rnncompiler is faster")
    others = [n for n in names if n != "rnncompiler"]
    print("%6s" % "H" + "".join("%13s" % n for n in names)
          + "".join("%13s" % ("rnnc/" + n) for n in others))
    for r in rows:
        med = r["median_ms"]
        print("%6d" % r["H"] + "".join("%13.2f" % med[n] for n in names)
              + "".join("%12.2fx" % (med["rnncompiler"] / med[n]) for n in others))


def write_json(report):
    """Write the report to benchmarks/results/ and return the path."""
    os.makedirs(RESULTS, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(RESULTS, "bench_lstm-%s.json" % stamp)
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    return path


# ---------------------------------------------------------------- main

def int_at_least(low):
    """argparse type: an int >= low."""
    def integer(text):
        n = int(text)
        if n < low:
            raise argparse.ArgumentTypeError("expected an int >= %d, got %r" % (low, text))
        return n
    return integer


def parse_args(argv):
    """The command line, with --quick or full-run defaults for what is not given."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="H=32, T=20, 3 repeats: seconds")
    ap.add_argument("--steps", "-T", type=int_at_least(1), help="sequence length (100)")
    ap.add_argument("--batch", "-B", type=int_at_least(1), default=32, help="batch size (32)")
    ap.add_argument("--hidden", type=int_at_least(1), nargs="+", help="hidden sizes (32 128 512)")
    ap.add_argument("--repeats", type=int_at_least(1), help="timed runs per implementation (10)")
    ap.add_argument("--warmup", type=int_at_least(0), default=1, help="untimed runs first (1)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    ap.add_argument("--json", action="store_true", help="also write benchmarks/results/*.json")
    args = ap.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv=None):
    args = parse_args(argv)
    rc.set_num_threads(1)
    if torch is not None:
        torch.set_num_threads(1)
    env = environment()
    print("python %s, numpy %s, torch %s, %s (%d cores), load average %.2f"
          % (env["python"], env["numpy"], env["torch"] or "not installed", env["cpu"],
             env["cores"], env["loadavg"][0]))
    with tempfile.TemporaryDirectory(prefix="rnnc-bench-") as root:
        os.environ["RNNC_CACHE_DIR"] = tempfile.mkdtemp(prefix="main-", dir=root)
        err = verify_numpy_reference()
        ok = err <= TOLERANCE
        print("numpy BPTT vs rnncompiler (float64, T=6, B=3, I=5, H=4): max rel. error %.1e %s"
              % (err, "OK" if ok else "FAILED (> %.0e)" % TOLERANCE))
        if not ok:
            return 1
        print()
        compiles = [compile_times(H, args.dtype, root) for H in args.hidden]
        print_compile_table(compiles, args.dtype)
        print()
        rows = [bench_size(H, args) for H in args.hidden]
        print_speed_table(rows, args)
    env["loadavg_after"] = list(os.getloadavg())
    print("load average after: %.2f" % env["loadavg_after"][0])
    if args.json:
        report = {"args": vars(args), "environment": env, "numpy_max_rel_error": err,
                  "compile": compiles, "speed": rows}
        print("wrote", write_json(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
