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

HERE = os.path.dirname(os.path.abspath(__file__))


def tanh_chain(depth):
    """u = tanh(0.9 u + 0.1), `depth` times in one step (after u + W x)."""
    import rnncompiler as rc

    @rc.cell(states=("u",))
    def chain(x, u, p):
        u = u + p.linear("W", x)
        for _ in range(depth):
            u = rc.tanh(0.9 * u + 0.1)
        return {"u": u}
    return chain


CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, %r)
import rnncompiler as rc
import rnncompiler.compiler.graph, rnncompiler.compiler.autodiff, rnncompiler.compiler.codegen   # import not timed
from rnncompiler.demo import lstm
from bench_compile import tanh_chain

depth = int(sys.argv[1])
cell = lstm if depth < 0 else tanh_chain(depth)
t, cpu = time.perf_counter(), time.process_time()
rc.compile(cell, input_size=8, hidden_size=16, dtype="float64")
gcc = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"compile_s": time.perf_counter() - t, "python_cpu_s": time.process_time() - cpu,
                  "gcc_cpu_s": gcc.ru_utime + gcc.ru_stime}))
""" % HERE


def child_env(cache):
    """The environment of a compiling child: its own cache, and the rnncompiler of
    $PYTHONPATH if set, else of the checkout holding this script, else the installed one."""
    path = [p for p in (os.environ.get("PYTHONPATH"), os.path.dirname(HERE)) if p]
    return dict(os.environ, RNNC_CACHE_DIR=cache, PYTHONPATH=os.pathsep.join(path))


def compile_times(depth, runtime_dir, timeout):
    """Wall seconds and CPU seconds (Python, gcc) of one cold compile in a fresh process
    (depth -1: the LSTM), or None past the timeout."""
    cache = tempfile.mkdtemp(prefix="rnnc-compile-")
    try:
        for name in os.listdir(runtime_dir):          # the runtime object, not the kernel
            if name.startswith("runtime-") and not name.endswith(".lock"):
                shutil.copy2(os.path.join(runtime_dir, name), os.path.join(cache, name))
        env = child_env(cache)
        try:
            out = subprocess.run([sys.executable, "-c", CHILD, str(depth)], env=env,
                                 capture_output=True, text=True, check=True, timeout=timeout,
                                 cwd=cache)
        except subprocess.TimeoutExpired:
            return None
        return json.loads(out.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(cache, ignore_errors=True)


def row(case, times, peer):
    """One line of the table."""
    if times is None:
        return "%-28s %9s" % (case, "stopped")
    return "%-28s %9.2f %9.2f %9.2f %9.2fx" % (
        case, times["compile_s"], times["python_cpu_s"], times["gcc_cpu_s"],
        times["compile_s"] / peer["compile_s"])


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
        subprocess.run([sys.executable, "-c", CHILD, "-1"], env=child_env(runtime_dir),
                       check=True, cwd=runtime_dir,
                       capture_output=True, timeout=args.timeout)    # builds the runtime object
        peer = compile_times(-1, runtime_dir, args.timeout)
        print("%-28s %9s %9s %9s %10s" % ("case", "wall s", "py cpu s", "gcc cpu s", "vs LSTM"))
        print(row("LSTM I=8 H=16 (peer)", peer, peer))
        for depth in depths:
            print(row("tanh chain N=%d I=8 H=16" % depth,
                      compile_times(depth, runtime_dir, args.timeout), peer), flush=True)
        print("stopped: past --timeout=%g s" % args.timeout)
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)
    print("load average after: %.2f %.2f %.2f" % os.getloadavg())


if __name__ == "__main__":
    main()
