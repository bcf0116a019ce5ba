"""Cold compile time of cells whose activations nest: u = tanh(0.9 u + 0.1) applied N times
in one step. The value of such a chain grows linearly with N, its derivative (written out)
with N²: the compile time should follow the first. The LSTM of rnncompiler.demo is the
peer in the same run; each case compiles in a fresh process with a fresh RNNC_CACHE_DIR
holding only the runtime object (built once per machine in use).

    python benchmarks/bench_compile.py                 # N = 10, 50, 200
    python benchmarks/bench_compile.py --depths 10 20 40 80
    python benchmarks/bench_compile.py --quick         # N = 3, 10
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, time
import rnncompiler as rc
import rnncompiler.graph, rnncompiler.autodiff, rnncompiler.codegen   # import not timed
from rnncompiler.demo import lstm

def tanh_chain(depth):
    @rc.cell(states=("u",))
    def chain(x, u, p):
        u = u + p.linear("W", x)
        for _ in range(depth):
            u = rc.tanh(0.9 * u + 0.1)
        return {"u": u}
    return chain

depth = int(sys.argv[1])
cell = lstm if depth < 0 else tanh_chain(depth)
t = time.perf_counter()
rc.compile(cell, input_size=8, hidden_size=16, dtype="float64")
print(json.dumps({"compile_s": time.perf_counter() - t}))
"""


def compile_seconds(depth, runtime_dir, timeout):
    """Seconds of one cold compile in a fresh process (depth -1: the LSTM), or None past
    the timeout."""
    cache = tempfile.mkdtemp(prefix="rnnc-compile-")
    try:
        for name in os.listdir(runtime_dir):          # the runtime object, not the kernel
            if name.startswith("runtime-") and not name.endswith(".lock"):
                shutil.copy2(os.path.join(runtime_dir, name), os.path.join(cache, name))
        env = dict(os.environ, RNNC_CACHE_DIR=cache)
        try:
            out = subprocess.run([sys.executable, "-c", CHILD, str(depth)], env=env,
                                 capture_output=True, text=True, check=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return json.loads(out.stdout.strip().splitlines()[-1])["compile_s"]
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depths", type=int, nargs="+", default=[10, 50, 200])
    ap.add_argument("--timeout", type=float, default=300, help="seconds per compile")
    ap.add_argument("--quick", action="store_true", help="depths 3 and 10")
    args = ap.parse_args(argv)
    depths = [3, 10] if args.quick else args.depths
    print("load average before: %.2f %.2f %.2f" % os.getloadavg())
    runtime_dir = tempfile.mkdtemp(prefix="rnnc-runtime-")
    try:
        env = dict(os.environ, RNNC_CACHE_DIR=runtime_dir)
        subprocess.run([sys.executable, "-c", CHILD, "-1"], env=env, check=True,
                       capture_output=True, timeout=args.timeout)    # builds the runtime object
        peer = compile_seconds(-1, runtime_dir, args.timeout)
        print("%-32s %9s %12s" % ("case", "cold s", "vs LSTM"))
        print("%-32s %9.2f %12s" % ("LSTM I=8 H=16 (peer)", peer, "1.00x"))
        for depth in depths:
            s = compile_seconds(depth, runtime_dir, args.timeout)
            case = "tanh chain N=%d I=8 H=16" % depth
            if s is None:
                print("%-32s %9s %12s" % (case, "> %g" % args.timeout, "-"))
            else:
                print("%-32s %9.2f %11.2fx" % (case, s, s / peer))
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)
    print("load average after: %.2f %.2f %.2f" % os.getloadavg())


if __name__ == "__main__":
    main()
