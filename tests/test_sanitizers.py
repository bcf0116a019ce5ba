"""The JIT kernels (the code the Python API runs: kernel units, runtime object, microkernel)
built with RNNC_SANITIZE=address,undefined and run in a child interpreter with the ASan
runtime preloaded, over odd shapes: B=1, T=1, H=1, sizes that are not multiples of the
vector width, lengths 0, 1 and T, T beyond one chunk of the hoisted GEMMs, NULL seeds and
state0, the threaded GEMM path. Every run must be clean (any finding aborts the child) and,
in float64, equal the numpy reference evaluator.

A control run writes one row past an output on purpose and must be caught, so a clean run
means something. CI runs a few cells; `make fuzz` (RNNC_SANITIZE_FULL=1) runs every cell of
rc.cells.ALL in float32 and float64 and more random cells.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import Phase, given, settings

import rnncompiler as rc
from rnncompiler.compiler import build

from test_fuzz import programs

pytestmark = pytest.mark.slow      # instrumented builds, run in subprocesses

TESTS = Path(__file__).resolve().parent
FULL = os.environ.get("RNNC_SANITIZE_FULL", "") not in ("", "0")
CHILD_TIMEOUT = 1800 if FULL else 600
LIBASAN = subprocess.run([os.environ.get("CC") or "gcc", "-print-file-name=libasan.so"],
                         capture_output=True, text=True).stdout.strip()

# (T, B, lengths): B=1, T=1, lengths 0, 1 and T, a row of each, T beyond one chunk (64)
SHAPES = [(1, 1, None), (1, 1, [0]), (1, 1, [1]), (2, 1, [1]), (3, 3, [0, 1, 3]),
          (5, 2, None), (70, 2, [70, 1])]
BIG = [(70, 64, None)]          # large enough for the hoisted GEMMs to use two threads

# A child: runs the jobs of a JSON file and prints one JSON line of counts.
CHILD = r'''
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[2])
import rnncompiler as rc
from test_fuzz import Program


def make_cell(spec):
    kind, _, what = spec.partition(":")
    return rc.cells.ALL[what] if kind == "library" else eval(what, {"Program": Program}).cell()


def close(a, b, what, tol):
    scale = max(1.0, float(np.abs(b).max(initial=0)))
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol * scale, err_msg=what)


def run_shape(kern, ref, T, B, lengths, seed, check):
    rng = np.random.default_rng(seed)
    params = kern.init_params(seed=seed)
    x = rng.standard_normal((T, B, kern.input_size))
    state0 = {s: 0.5 * rng.standard_normal((B, n)) for s, n in kern.state_sizes.items()}
    dy = rng.standard_normal((T, B, kern.output_size))
    ds = {s: rng.standard_normal((B, n)) for s, n in kern.state_sizes.items()}
    # a cell's context inputs and masks (drawn from the seed) are columns of x's rows
    ctx = {c: rng.standard_normal((B, n)) for c, n in kern.context.items()} or None
    res = kern.forward(params, x, state0, lengths, check_finite=check, context=ctx, seed=seed)
    g = kern.backward(res, dy, ds, state_grads=True, check_finite=check)
    kern.backward(res)                                   # NULL seeds
    bare = kern.forward(params, x, context=ctx)          # NULL state0 and lengths
    kern.backward(bare, dy)
    y, states = kern.infer(params, x, state0, lengths, context=ctx)
    expected = kern.forward(params, x, state0, lengths, context=ctx, training=False)
    close(y, expected.outputs, "infer", 1e-12)
    kern.step(params, x[0], state0, context=ctx)
    if ref is not None:
        r = ref.forward(params, x, state0, lengths, context=ctx, masks=res.masks)
        rg = ref.backward(r, dy, ds)
        close(res.outputs, r.outputs, "outputs", 1e-9)
        close(g.x, rg.x, "d x", 1e-8)
        for name in kern.param_shapes:
            close(g.params[name], rg.params[name], "d " + name, 1e-8)
        for s in kern.state_sizes:
            close(g.state0[s], rg.state0[s], "d state0 " + s, 1e-8)
    return 6


def main():
    with open(sys.argv[1]) as f:
        jobs = json.load(f)
    runs = calls = 0
    for job in jobs:
        cell = make_cell(job["cell"])
        rc.set_num_threads(job.get("threads", 1))
        kern = rc.compile(cell, job["I"], job["H"], job["dtype"], sizes=job["sizes"])
        ref = None
        if job["dtype"] == "float64" and job.get("reference", True):
            ref = rc.reference(cell, job["I"], job["H"], job["sizes"])
        for k, (T, B, lengths) in enumerate(job["shapes"]):
            calls += run_shape(kern, ref, T, B, lengths, k, job.get("check_finite", True))
            runs += 1
        print("ok", job["cell"][:60], job["dtype"], file=sys.stderr, flush=True)
    print(json.dumps({"runs": runs, "calls": calls, "jobs": len(jobs)}))


main()
'''

# the control: y one step short, so the last step writes past it
CONTROL = r'''
import sys
import numpy as np
import rnncompiler as rc
from rnncompiler.cells import elman
kern = rc.compile(elman, 3, 4, "float64")
T, B = 40, 2
params = np.concatenate([v.ravel() for v in kern.init_params().values()])
x = np.zeros((T, B, 3))
y = np.empty((T - 1, B, 4))              # one step short
state_T = np.empty((B, 4))
work = np.empty(kern._fn["workspace_size"](T, B))
ffi = kern._ffi
p = lambda a: ffi.from_buffer("double[]", a)
print("calling", flush=True)
kern._fn["run_forward"](T, B, p(params), p(x), ffi.NULL, ffi.NULL, p(y), p(state_T), p(work), 1, 1)
print("not caught", flush=True)
'''


def sanitizer_env(**extra):
    env = dict(os.environ)
    env.update(LD_PRELOAD=LIBASAN, ASAN_OPTIONS="detect_leaks=0",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1",
               RNNC_SANITIZE="address,undefined", RNNC_OPT_LEVEL="1")
    env.update(extra)
    return env


@pytest.fixture(scope="module", autouse=True)
def sanitizers_available(tmp_path_factory):
    """Skip when this compiler cannot build and run an ASan+UBSan program."""
    if not os.path.isabs(LIBASAN) or not os.path.exists(LIBASAN):
        pytest.skip("the compiler has no AddressSanitizer runtime (libasan.so)")
    d = tmp_path_factory.mktemp("probe")
    src = d / "probe.c"
    src.write_text("int main(void) { return 0; }\n")
    cc = os.environ.get("CC") or "gcc"
    if subprocess.run([cc, "-fsanitize=address,undefined", str(src), "-o", str(d / "probe")],
                      capture_output=True).returncode != 0:
        pytest.skip("%s cannot build with -fsanitize=address,undefined" % cc)


def run_jobs(tmp_path, jobs):
    """Run the jobs in a sanitized child; its counts. Fails on any sanitizer finding."""
    spec = tmp_path / "jobs.json"
    spec.write_text(json.dumps(jobs))
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    proc = subprocess.run([sys.executable, str(script), str(spec), str(TESTS)],
                          env=sanitizer_env(), capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT)
    report = proc.stderr[-6000:]
    assert "Sanitizer" not in proc.stderr and "runtime error" not in proc.stderr, report
    assert proc.returncode == 0, report
    counts = json.loads(proc.stdout.strip().splitlines()[-1])
    assert counts["jobs"] == len(jobs) and counts["runs"] == sum(len(j["shapes"]) for j in jobs)
    print("sanitized: %(jobs)d kernels, %(runs)d shapes, %(calls)d kernel calls" % counts)
    return counts


def library_job(name, dtype, H, I=3, shapes=SHAPES, threads=1):
    sizes = {s: 2 for s in rc.cells.SIZES[name]} or None
    return {"cell": "library:" + name, "I": I, "H": H, "sizes": sizes, "dtype": dtype,
            "shapes": shapes, "threads": threads}


def random_programs(n):
    """The first n distinct programs of the fuzz strategy (derandomized: the same every
    run)."""
    found = []

    @settings(max_examples=3 * n, derandomize=True, database=None, phases=[Phase.generate],
              deadline=None)
    @given(programs(max_ops=6))
    def collect(prog):
        if prog not in found:
            found.append(prog)
    collect()
    assert len(found) >= n
    return found[:n]


def random_job(prog, dtype="float64"):
    return {"cell": "fuzz:" + repr(prog), "I": prog.input_size, "H": prog.state_sizes[0],
            "sizes": None, "dtype": dtype, "shapes": SHAPES[:5], "check_finite": False}


CI_GROUPS = {
    # H=1 and H=17 (no multiple of any vector width), I=1 and 5, both dtypes
    "elman-gru-mgu": [library_job("elman", "float64", 1, I=1), library_job("gru", "float32", 17),
                      library_job("mgu", "float64", 5)],
    "lstms": [library_job("lstm", "float64", 17, I=5), library_job("lstm_proj", "float32", 3),
              library_job("lstm", "float64", 17, shapes=BIG, threads=2)],
}


@pytest.mark.parametrize("group", sorted(CI_GROUPS))
def test_library_cells_run_clean_under_asan_and_ubsan(group, tmp_path):
    """Built-in cells at odd sizes and shapes: no finding, float64 equal to the reference."""
    jobs = CI_GROUPS[group]
    if FULL and group == "lstms":
        jobs = [library_job(n, dt, H, I) for n in sorted(rc.cells.ALL)
                for dt, H, I in (("float64", 1, 1), ("float32", 17, 5), ("float64", 5, 3))] + jobs
    run_jobs(tmp_path, jobs)


def test_random_cells_run_clean_under_asan_and_ubsan(tmp_path):
    """Random cells (the fuzz strategy's first ones) in float64 and float32."""
    progs = random_programs(24 if FULL else 3)
    jobs = [random_job(p, "float32" if k % 3 == 2 else "float64") for k, p in enumerate(progs)]
    assert len({j["cell"] for j in jobs}) == len(jobs)
    run_jobs(tmp_path, jobs)


def test_an_out_of_bounds_write_is_caught(tmp_path):
    """The control: a kernel given an output buffer one step short is stopped by ASan
    at the write, naming a heap-buffer-overflow in the kernel's own code."""
    script = tmp_path / "control.py"
    script.write_text(CONTROL)
    proc = subprocess.run([sys.executable, str(script)], env=sanitizer_env(),
                          capture_output=True, text=True, timeout=CHILD_TIMEOUT)
    assert "calling" in proc.stdout and "not caught" not in proc.stdout, proc.stdout
    assert proc.returncode != 0
    assert "AddressSanitizer: heap-buffer-overflow" in proc.stderr, proc.stderr[-3000:]
    assert "WRITE" in proc.stderr and "rnnc_run_forward" in proc.stderr, proc.stderr[-3000:]


def test_sanitized_binaries_are_instrumented_and_keyed_apart(monkeypatch):
    """RNNC_SANITIZE changes the cache key (sanitized and plain binaries never mix) and
    the compiler flags of every compile and link."""
    from rnncompiler.cells import elman
    from rnncompiler.compiler.pipeline import bind_sizes, cache_key
    sizes = bind_sizes(elman, 3, 4, None)
    plain = cache_key(elman, sizes, "float64", 1, True)
    monkeypatch.setenv("RNNC_SANITIZE", "address,undefined")
    sanitized = cache_key(elman, sizes, "float64", 1, True)
    assert sanitized != plain
    for cmd in (build.compiler_command("a.c", "a.o", 1, True, compile_only=True),
                build.compiler_command("a.c", "a.so", 1, True),
                build.link_command(["a.o"], "a.so", True)):
        assert "-fsanitize=address,undefined" in cmd and "-fno-omit-frame-pointer" in cmd
    monkeypatch.setenv("RNNC_SANITIZE", "address,bogus")
    with pytest.raises(ValueError, match=r"RNNC_SANITIZE.*bogus"):
        rc.compile(elman, 3, 4, "float64")


def test_asan_kernel_in_a_plain_interpreter_is_refused_not_a_crash(tmp_path):
    """Without the ASan runtime preloaded, loading a sanitized kernel would abort Python;
    rc.compile raises a RuntimeError saying how to run instead."""
    code = ("import rnncompiler as rc\nfrom rnncompiler.cells import elman\n"
            "try:\n    rc.compile(elman, 3, 4, 'float64')\n"
            "except RuntimeError as exc:\n    print('refused:', exc)\n")
    env = sanitizer_env()
    env.pop("LD_PRELOAD")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=CHILD_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused:" in proc.stdout and "LD_PRELOAD" in proc.stdout, proc.stdout
