"""The on-disk kernel cache, pickling and threads, with real processes and real cache dirs:
warm loads without a compiler, concurrent builds, corrupt and planted entries, permissions,
killed builds, compiler failures, pickling/multiprocessing, deterministic C, shared kernels."""
import hashlib
import json
import multiprocessing
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import rnncompiler as rc
from rnncompiler.compiler import build
from rnncompiler.compiler.build import SHARED_WRAPPER
from rnncompiler.compiler.pipeline import bind_sizes, lower

from cells import elman, lstm

TESTS_DIR = Path(__file__).resolve().parent
CHILD_TIMEOUT = 120

# A child process: compiles a tiny cell (float64, I=3, H=4) into $RNNC_CACHE_DIR, runs
# forward and backward on fixed inputs, saves everything to an .npz and prints one JSON
# line. With $RNNC_TEST_READY/$RNNC_TEST_GO it signals readiness and waits for a start file.
CHILD_SRC = '''\
import json, os, sys, time
import numpy as np
import rnncompiler as rc


@rc.cell(states=("h",))
def tiny(x, h, p):
    return {"h": rc.tanh(p.linear("W", rc.concat(h, x), bias="b"))}


@rc.cell(states=("h",))
def tiny_sig(x, h, p):
    return {"h": rc.sigmoid(p.linear("W", rc.concat(h, x), bias="b"))}


CELLS = {"tiny": tiny, "tiny_sig": tiny_sig}
I, H, T, B = 3, 4, 5, 2


def main():
    name, out = sys.argv[1], sys.argv[2]
    ready, go = os.environ.get("RNNC_TEST_READY"), os.environ.get("RNNC_TEST_GO")
    if ready:
        open(ready, "w").close()
        deadline = time.monotonic() + 60
        while not os.path.exists(go):
            if time.monotonic() > deadline:
                sys.exit("no start signal")
            time.sleep(0.005)
    t0 = time.perf_counter()
    kern = rc.compile(CELLS[name], I, H, "float64")
    seconds = time.perf_counter() - t0
    params = kern.init_params(seed=0)
    x = np.random.default_rng(1).standard_normal((T, B, I))
    res = kern.forward(params, x)
    g = kern.backward(res, d_outputs=np.ones_like(res.outputs))
    np.savez(out, x=x, W=params["W"], b=params["b"], y=res.outputs, h=res.states["h"],
             dW=g.params["W"], db=g.params["b"], dx=g.x, dh0=g.state0["h"])
    print(json.dumps({"compile_seconds": seconds, "key": kern._key}))


if __name__ == "__main__":
    main()
'''

ACTS = {"tiny": np.tanh, "tiny_sig": lambda a: 1.0 / (1.0 + np.exp(-a))}


# ---------------------------------------------------------------- helpers

@pytest.fixture
def cache_dir(tmp_path):
    d = tmp_path / "cache"
    d.mkdir()
    os.chmod(d, 0o700)
    return d


@pytest.fixture
def child(tmp_path):
    path = tmp_path / "rnnc_child.py"
    path.write_text(CHILD_SRC)
    return path


def child_env(cache, **extra):
    env = dict(os.environ)
    env.pop("CC", None)
    env.update(RNNC_CACHE_DIR=str(cache), RNNC_OPT_LEVEL="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_child(script, cell, out, cache, **extra_env):
    """Run the child to completion; (its JSON line, its saved arrays)."""
    proc = subprocess.run([sys.executable, str(script), cell, str(out)],
                          env=child_env(cache, **extra_env), capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT)
    assert proc.returncode == 0, "child failed:\n" + proc.stderr[-4000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    with np.load(out) as data:
        return info, dict(data)


def reference_outputs(d, cell="tiny"):
    """The tiny cell's forward in numpy: h_t = act(W [h_{t-1}; x_t] + b), h_0 = 0."""
    W, b, x = d["W"], d["b"], d["x"]
    h = np.zeros((x.shape[1], W.shape[0]))
    ys = []
    for t in range(x.shape[0]):
        h = ACTS[cell](np.concatenate([h, x[t]], axis=1) @ W.T + b)
        ys.append(h)
    return np.stack(ys)


def assert_same_arrays(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def assert_close_arrays(a, b):
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-12, atol=1e-14, err_msg=k)


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def manifest(cache, key):
    return json.loads((Path(cache) / (key + ".json")).read_text())


def assert_entry_valid(cache, key):
    entry = manifest(cache, key)
    assert sha256(Path(cache) / entry["binary"]) == entry["sha256"]
    return entry


def write_script(path, body):
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    os.chmod(path, 0o700)
    return path


def use_cache(monkeypatch, cache):
    monkeypatch.setenv("RNNC_CACHE_DIR", str(cache))
    monkeypatch.setenv("RNNC_OPT_LEVEL", "1")
    monkeypatch.delenv("CC", raising=False)


# ---------------------------------------------------------------- 1. warm loads

@pytest.mark.slow
def test_second_process_loads_from_cache_without_a_compiler(cache_dir, child, tmp_path):
    """A second process loads the cached kernel with CC=/bin/false: a hit never builds."""
    cold, first = run_child(child, "tiny", tmp_path / "cold.npz", cache_dir)
    warm, second = run_child(child, "tiny", tmp_path / "warm.npz", cache_dir, CC="/bin/false")
    print("cold rc.compile in child: %.3f s, warm rc.compile in child (CC=/bin/false): %.4f s"
          % (cold["compile_seconds"], warm["compile_seconds"]))
    assert warm["key"] == cold["key"]
    assert_same_arrays(first, second)
    np.testing.assert_allclose(second["y"], reference_outputs(second), rtol=1e-12, atol=1e-14)
    assert len(list(cache_dir.glob("*.so"))) == 1


# ---------------------------------------------------------------- 2. concurrent builds

@pytest.mark.slow
def test_concurrent_processes_build_one_entry(cache_dir, child, tmp_path):
    """Four processes compiling one new cell at once all succeed: one entry, no debris."""
    go = tmp_path / "go"
    procs, readies = [], []
    try:
        for i in range(4):
            ready = tmp_path / ("ready%d" % i)
            readies.append(ready)
            procs.append(subprocess.Popen(
                [sys.executable, str(child), "tiny", str(tmp_path / ("out%d.npz" % i))],
                env=child_env(cache_dir, RNNC_TEST_READY=ready, RNNC_TEST_GO=go),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        deadline = time.monotonic() + 60
        while not all(r.exists() for r in readies):
            assert time.monotonic() < deadline, "children never got ready"
            assert all(p.poll() is None for p in procs), "a child exited before the start"
            time.sleep(0.01)
        go.touch()
        outs = [p.communicate(timeout=CHILD_TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, "child failed:\n" + err[-4000:]
    keys = {json.loads(out.strip().splitlines()[-1])["key"] for out, _ in outs}
    assert len(keys) == 1
    key = keys.pop()
    results = []
    for i in range(4):
        with np.load(tmp_path / ("out%d.npz" % i)) as data:
            results.append(dict(data))
    for r in results[1:]:
        assert_same_arrays(results[0], r)
    np.testing.assert_allclose(results[0]["y"], reference_outputs(results[0]), rtol=1e-12,
                               atol=1e-14)
    names = os.listdir(cache_dir)
    kernels = [n for n in names if not n.startswith(("runtime-", "wrapper-"))]   # shared objects
    assert [n for n in kernels if n.endswith(".json")] == [key + ".json"]
    assert [n for n in names if n.startswith("build-")] == []
    assert len([n for n in names if n.endswith(".so")]) == 1, names    # built exactly once
    # built once: the helpers and the microkernel's default shape, of the kernel's real type
    # (a -O1 kernel is not tuned)
    assert len([n for n in names if n.startswith("runtime-") and n.endswith(".o")]) == 2, names
    assert_entry_valid(cache_dir, key)


# ---------------------------------------------------------------- 3. corrupt entries

def _truncate_binary(cache, entry, key):
    path = cache / entry["binary"]
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)


def _garbage_binary(cache, entry, key):
    path = cache / entry["binary"]
    path.write_bytes(np.random.default_rng(0).bytes(path.stat().st_size))


def _garbage_manifest(cache, entry, key):
    (cache / (key + ".json")).write_bytes(b"\x00\xffnot json{{" + os.urandom(64))


@pytest.mark.slow
@pytest.mark.parametrize("corrupt", [_truncate_binary, _garbage_binary, _garbage_manifest],
                         ids=["truncated-binary", "garbage-binary", "garbage-manifest"])
def test_corrupt_entry_is_rebuilt(cache_dir, child, tmp_path, corrupt):
    """A truncated/overwritten binary or a garbage manifest is rebuilt by the next process."""
    info, first = run_child(child, "tiny", tmp_path / "first.npz", cache_dir)
    key = info["key"]
    corrupt(cache_dir, assert_entry_valid(cache_dir, key), key)
    info2, second = run_child(child, "tiny", tmp_path / "second.npz", cache_dir)
    assert info2["key"] == key
    assert_close_arrays(first, second)
    np.testing.assert_allclose(second["y"], reference_outputs(second), rtol=1e-12, atol=1e-14)
    assert_entry_valid(cache_dir, key)


# ---------------------------------------------------------------- 4. permissions, planted binary

@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_cache_dir_writable_by_others_is_refused(tmp_path, monkeypatch, mode):
    """A cache dir that group or others can write is refused with a CacheSecurityError."""
    cache = tmp_path / "shared-cache"
    cache.mkdir()
    os.chmod(cache, mode)
    use_cache(monkeypatch, cache)
    with pytest.raises(rc.CacheSecurityError) as ei:
        rc.compile(elman, input_size=3, hidden_size=4, dtype="float64")
    assert isinstance(ei.value, PermissionError)
    assert str(cache) in str(ei.value)
    assert not list(cache.iterdir())          # nothing was written into it


def test_cache_dir_that_is_a_file_is_named(tmp_path, monkeypatch):
    """RNNC_CACHE_DIR naming a file: an error naming the variable and the path, not
    makedirs' FileExistsError."""
    cache = tmp_path / "not-a-dir"
    cache.write_text("")
    use_cache(monkeypatch, cache)
    with pytest.raises(NotADirectoryError, match=r"RNNC_CACHE_DIR=%s: the kernel cache is a "
                       r"file, not a directory" % re.escape(str(cache))):
        rc.compile(elman, input_size=3, hidden_size=4, dtype="float64")
    monkeypatch.delenv("RNNC_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))      # the default, under a file
    with pytest.raises(NotADirectoryError, match=r"\(the default\) cannot be created.*set "
                       r"RNNC_CACHE_DIR"):
        rc.compile(elman, input_size=3, hidden_size=4, dtype="float64")


@pytest.mark.slow
@pytest.mark.parametrize("part,mode", [("manifest", 0o664), ("manifest", 0o646),
                                       ("binary", 0o775), ("binary", 0o757)])
def test_entry_writable_by_others_is_refused(cache_dir, monkeypatch, part, mode):
    """A manifest or binary that group or others can write is refused, naming its path."""
    use_cache(monkeypatch, cache_dir)
    kern = rc.compile(elman, input_size=3, hidden_size=4, dtype="float64")
    entry = assert_entry_valid(cache_dir, kern._key)
    path = cache_dir / (kern._key + ".json" if part == "manifest" else entry["binary"])
    os.chmod(path, mode)
    with pytest.raises(rc.CacheSecurityError) as ei:
        rc.compile(elman, input_size=3, hidden_size=4, dtype="float64")
    assert isinstance(ei.value, PermissionError)
    assert str(path) in str(ei.value)


@pytest.mark.slow
def test_planted_binary_is_not_loaded(cache_dir, child, tmp_path):
    """Another valid module planted in place of an entry's binary fails the hash: rebuilt."""
    info, first = run_child(child, "tiny", tmp_path / "tiny.npz", cache_dir)
    other, other_out = run_child(child, "tiny_sig", tmp_path / "sig.npz", cache_dir)
    assert not np.allclose(first["y"], other_out["y"])   # planting would be visible
    entry = assert_entry_valid(cache_dir, info["key"])
    planted = cache_dir / entry["binary"]
    shutil.copyfile(cache_dir / manifest(cache_dir, other["key"])["binary"], planted)
    planted_hash = sha256(planted)
    info2, second = run_child(child, "tiny", tmp_path / "tiny2.npz", cache_dir)
    assert info2["key"] == info["key"]
    np.testing.assert_allclose(second["y"], reference_outputs(second, "tiny"), rtol=1e-12,
                               atol=1e-14)
    assert_close_arrays(first, second)
    entry2 = assert_entry_valid(cache_dir, info["key"])
    assert entry2["sha256"] != planted_hash


@pytest.mark.slow
def test_entries_written_under_umask_002_load_again(cache_dir, child, tmp_path):
    """Under the common umask 002 the cache must not write entries it then refuses to load."""
    cmd = "umask 002 && exec \"$0\" \"$@\""
    keys = []
    for i, extra in enumerate([{}, {"CC": "/bin/false"}]):     # the second run must load
        proc = subprocess.run(["sh", "-c", cmd, sys.executable, str(child), "tiny",
                               str(tmp_path / ("u%d.npz" % i))], env=child_env(cache_dir, **extra),
                              capture_output=True, text=True, timeout=CHILD_TIMEOUT)
        assert proc.returncode == 0, "run %d failed:\n%s" % (i, proc.stderr[-4000:])
        keys.append(json.loads(proc.stdout.strip().splitlines()[-1])["key"])
    assert keys[0] == keys[1]


# ---------------------------------------------------------------- 5. killed builds

@pytest.mark.slow
def test_killed_build_leaves_no_blocking_lock(cache_dir, child, tmp_path):
    """A build killed by SIGKILL while holding the lock does not block the next build,
    which removes the build directory the killed one left."""
    marker = tmp_path / "compiler-started"
    # sleeps longer than the next build's timeout: a lock surviving the kill would fail it
    slow_cc = write_script(tmp_path / "slow-cc", """\
        touch "$RNNC_TEST_MARKER"
        sleep 300
        exec gcc "$@"
        """)
    victim = subprocess.Popen([sys.executable, str(child), "tiny", str(tmp_path / "dead.npz")],
                              env=child_env(cache_dir, CC=slow_cc, RNNC_TEST_MARKER=marker),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert victim.poll() is None, "the child exited before compiling"
            assert time.monotonic() < deadline, "the compiler wrapper never started"
            time.sleep(0.02)
        os.kill(victim.pid, signal.SIGKILL)       # only the Python process holding the lock
        victim.wait(timeout=30)
        left = list(cache_dir.glob("build-*"))
        assert left, "the killed build left no build directory"
        for d in left:                             # older than a build that is starting
            then = time.time() - 60
            os.utime(d, (then, then))
        info, out = run_child(child, "tiny", tmp_path / "next.npz", cache_dir)
    finally:
        try:
            os.killpg(victim.pid, signal.SIGKILL)   # the orphaned compiler wrapper
        except ProcessLookupError:
            pass
        if victim.poll() is None:
            victim.wait()
    np.testing.assert_allclose(out["y"], reference_outputs(out), rtol=1e-12, atol=1e-14)
    assert_entry_valid(cache_dir, info["key"])
    assert not list(cache_dir.glob("build-*")), "the next build did not remove the dead one's"


# ---------------------------------------------------------------- 6. compiler failure

def test_compiler_failure_raises_compile_error(cache_dir, tmp_path, monkeypatch):
    """A failing compiler raises CompileError with its stderr and the kept C file."""
    use_cache(monkeypatch, cache_dir)
    message = "rnnc-test: the simulated compiler refuses this file"
    monkeypatch.setenv("CC", str(write_script(tmp_path / "bad-cc", """\
        echo "%s" >&2
        exit 1
        """ % message)))
    with pytest.raises(rc.CompileError) as ei:
        rc.compile(elman, input_size=3, hidden_size=4, dtype="float32")
    err = ei.value
    try:
        assert isinstance(err, RuntimeError)
        assert message in str(err)
        assert message in err.stderr
        assert err.c_file and os.path.isfile(err.c_file)
        assert str(err.c_file) in str(err)
        csrc = lower(elman, bind_sizes(elman, 3, 4, None), "float32", blas=True)[2]
        with open(err.c_file) as f:      # the translation unit the compiler failed on
            kept = f.read()
        assert kept == csrc.text or any(unit in kept for unit in csrc.units)
    finally:
        if err.c_file and os.path.isfile(err.c_file):
            os.remove(err.c_file)
    names = os.listdir(cache_dir)
    assert not [n for n in names if n.endswith((".json", ".so")) or n.startswith("build-")]


# ---------------------------------------------------------------- 7. pickling

def _forward_backward(kern, params, x):
    res = kern.forward(params, x)
    g = kern.backward(res, d_outputs=np.ones_like(res.outputs))
    return {"y": res.outputs, "h": res.states["h"], "dx": g.x, "dh0": g.state0["h"],
            **{"d" + k: v for k, v in g.params.items()}}


def _forward_in_worker(args):
    kern, params, x = args
    return os.getpid(), _forward_backward(kern, params, x)


@pytest.mark.slow
def test_kernels_link_one_wrapper_object_under_their_own_module_names(cache_dir, monkeypatch):
    """Kernels of one real type link the cffi wrapper compiled once, each with its own module
    name (one name for all would make each load replace the last in sys.modules); after
    many loads every kernel still computes what the reference evaluator does."""
    use_cache(monkeypatch, cache_dir)
    kerns = [rc.compile(elman, input_size=3, hidden_size=h, dtype="float64") for h in (2, 3, 4, 5)]
    kerns.append(rc.compile(lstm, input_size=3, hidden_size=4, dtype="float64"))
    wrappers = [n for n in os.listdir(cache_dir) if n.startswith("wrapper-") and n.endswith(".o")]
    assert len(wrappers) == 1, wrappers
    names = [k._module.__name__ for k in kerns]
    assert len(set(names)) == len(kerns) and SHARED_WRAPPER not in names
    import gc
    gc.collect()
    rng = np.random.default_rng(0)
    for kern in kerns:
        params = kern.init_params(seed=1)
        x = rng.standard_normal((4, 2, 3))
        ref = rc.reference(kern.cell, 3, kern.hidden_size).forward(params, x)
        np.testing.assert_allclose(kern.forward(params, x).outputs, ref.outputs, rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_an_unrecognised_cffi_init_compiles_the_whole_wrapper(cache_dir, monkeypatch):
    """If cffi writes its module init in another shape, each kernel compiles its own wrapper."""
    use_cache(monkeypatch, cache_dir)
    monkeypatch.setattr(build, "shared_wrapper_c", lambda cdef: None)
    kern = rc.compile(elman, input_size=3, hidden_size=4, dtype="float64")
    assert not [n for n in os.listdir(cache_dir) if n.startswith("wrapper-")]
    params = kern.init_params(seed=1)
    x = np.random.default_rng(0).standard_normal((4, 2, 3))
    ref = rc.reference(elman, 3, 4).forward(params, x)
    np.testing.assert_allclose(kern.forward(params, x).outputs, ref.outputs, rtol=1e-12, atol=1e-14)


@pytest.mark.slow
def test_kernel_pickles_in_process(cache_dir, monkeypatch):
    """pickle.dumps/loads gives a kernel computing the same forward and backward."""
    use_cache(monkeypatch, cache_dir)
    kern = rc.compile(elman, input_size=3, hidden_size=4, dtype="float64")
    params = kern.init_params(seed=0)
    x = np.random.default_rng(1).standard_normal((6, 3, 3))
    kern2 = pickle.loads(pickle.dumps(kern))
    assert isinstance(kern2, rc.Kernel)
    assert (kern2.param_shapes, kern2.state_sizes, kern2.dtype) == \
        (kern.param_shapes, kern.state_sizes, kern.dtype)
    assert_same_arrays(_forward_backward(kern, params, x), _forward_backward(kern2, params, x))


@pytest.mark.slow
def test_kernel_works_through_multiprocessing_spawn(cache_dir, monkeypatch):
    """A spawn Pool maps kern.forward in worker processes with the parent's results."""
    use_cache(monkeypatch, cache_dir)
    kern = rc.compile(elman, input_size=3, hidden_size=4, dtype="float64")
    params = kern.init_params(seed=0)
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((5, 2, 3)) for _ in range(4)]
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        got = pool.map_async(_forward_in_worker, [(kern, params, x) for x in xs]).get(
            timeout=CHILD_TIMEOUT)
    assert all(pid != os.getpid() for pid, _ in got)
    for x, (_, res) in zip(xs, got):
        assert_same_arrays(_forward_backward(kern, params, x), res)


@pytest.mark.slow
def test_unpickling_after_the_entry_is_deleted_rebuilds(cache_dir, tmp_path, monkeypatch):
    """A pickled kernel unpickles in a new process after its cache entry is deleted."""
    use_cache(monkeypatch, cache_dir)
    kern = rc.compile(elman, input_size=3, hidden_size=4, dtype="float64")
    params = kern.init_params(seed=0)
    x = np.random.default_rng(3).standard_normal((5, 2, 3))
    expected = _forward_backward(kern, params, x)
    blob = tmp_path / "kernel.pkl"
    blob.write_bytes(pickle.dumps((kern, params, x)))
    for f in cache_dir.iterdir():
        f.unlink()
    code = textwrap.dedent("""\
        import pickle, sys
        import numpy as np
        sys.path.insert(0, %r)
        from test_cache import _forward_backward
        with open(sys.argv[1], "rb") as f:
            kern, params, x = pickle.load(f)
        np.savez(sys.argv[2], **_forward_backward(kern, params, x))
        """ % str(TESTS_DIR))
    out = tmp_path / "unpickled.npz"
    proc = subprocess.run([sys.executable, "-c", code, str(blob), str(out)],
                          env=child_env(cache_dir), capture_output=True, text=True,
                          timeout=CHILD_TIMEOUT)
    assert proc.returncode == 0, "child failed:\n" + proc.stderr[-4000:]
    with np.load(out) as data:
        assert_close_arrays(expected, dict(data))
    assert_entry_valid(cache_dir, kern._key)      # the entry is back, rebuilt from its C


# ---------------------------------------------------------------- 8. determinism

@pytest.mark.slow
def test_generated_c_is_identical_across_hash_seeds():
    """The generated C (and the cache key) does not depend on PYTHONHASHSEED."""
    code = textwrap.dedent("""\
        import hashlib, json, sys
        sys.path.insert(0, %r)
        from cells import lstm, gated_bump, two_sizes
        from rnncompiler.compiler.pipeline import bind_sizes, cache_key, lower
        out = {}
        for cell, sizes in ((lstm, None), (gated_bump, None), (two_sizes, {"P": 3, "O": 2})):
            bound = bind_sizes(cell, 3, 4, sizes)
            text = lower(cell, bound, "float32", blas=True)[2].text
            out[cell.name] = [hashlib.sha256(text.encode()).hexdigest(),
                              cache_key(cell, bound, "float32", 1, True)]
        print(json.dumps(out))
        """ % str(TESTS_DIR))
    seeds = ["0", "1", "12345", "random"]
    procs = [subprocess.Popen([sys.executable, "-c", code],
                              env=dict(os.environ, PYTHONHASHSEED=seed),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in seeds]
    outs = [p.communicate(timeout=CHILD_TIMEOUT) for p in procs]
    results = {}
    for seed, p, (out, err) in zip(seeds, procs, outs):
        assert p.returncode == 0, "PYTHONHASHSEED=%s failed:\n%s" % (seed, err[-4000:])
        results[seed] = json.loads(out.strip().splitlines()[-1])
    assert set(results["0"]) == {"lstm", "gated_bump", "two_sizes"}
    for seed in seeds[1:]:
        assert results[seed] == results["0"], "PYTHONHASHSEED=%s differs" % seed


# ---------------------------------------------------------------- 9. threads

def test_threads_share_one_kernel():
    """Eight threads running forward+backward on one kernel get the single-threaded results."""
    kern = rc.compile(lstm, input_size=3, hidden_size=4, dtype="float64")
    params = kern.init_params(seed=0)
    n, rounds = 8, 10
    inputs = []
    for i in range(n):
        rng = np.random.default_rng(100 + i)
        x = rng.standard_normal((20, 5, 3))
        state0 = {s: rng.standard_normal((5, k)) for s, k in kern.state_sizes.items()}
        inputs.append((x, state0, rng.standard_normal((20, 5, kern.output_size))))

    def run(i):
        x, state0, dy = inputs[i]
        res = kern.forward(params, x, state0)
        g = kern.backward(res, d_outputs=dy)
        return {"y": res.outputs, **{"s." + k: v for k, v in res.states.items()},
                "dx": g.x, **{"d0." + k: v for k, v in g.state0.items()},
                **{"d." + k: v for k, v in g.params.items()}}

    expected = [run(i) for i in range(n)]
    barrier = threading.Barrier(n)
    got, errors = [[] for _ in range(n)], []

    def worker(i):
        try:
            barrier.wait(timeout=60)
            for _ in range(rounds):
                got[i].append(run(i))
        except Exception as exc:         # reported below
            errors.append((i, exc))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=CHILD_TIMEOUT)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    for i in range(n):
        assert len(got[i]) == rounds
        for r in got[i]:
            assert_same_arrays(expected[i], r)


# ---------------------------------------------------------------- 10. what the key covers

def _package_imports(path, package_dir):
    """The package files a module imports (relative imports, at any depth of the file)."""
    import ast
    here = os.path.dirname(path)
    found = set()
    for node in ast.walk(ast.parse(Path(path).read_text())):
        if not isinstance(node, ast.ImportFrom) or not node.level:
            continue
        base = here
        for _ in range(node.level - 1):
            base = os.path.dirname(base)
        names = [node.module] if node.module else [a.name for a in node.names]
        for name in names:
            target = os.path.join(base, *name.split("."))
            for candidate in (target + ".py", os.path.join(target, "__init__.py")):
                if os.path.exists(candidate):
                    found.add(os.path.relpath(candidate, package_dir))
    return found


def test_the_cache_key_hashes_every_source_that_shapes_the_c():
    """GENERATOR_SOURCES covers the cell language (dsl.py, expr.py) and every package module
    the generator imports, so that editing any of them never loads a binary of the old C."""
    from rnncompiler.compiler import pipeline
    package = os.path.dirname(os.path.abspath(pipeline.__file__))
    listed = set()
    for rel in pipeline.GENERATOR_SOURCES:
        path = os.path.join(package, rel)
        listed |= ({os.path.join(rel, f) for f in os.listdir(path) if f.endswith(".py")}
                   if os.path.isdir(path) else {rel})
    assert {"dsl.py", "expr.py", "graph.py", "codegen/__init__.py"} <= listed
    # exceptions only; graph.evaluate's numpy evaluator is not on the way to the C
    not_shaping = {"../errors.py", "evaluator.py", "../options.py"}
    todo, seen = ["graph.py", "autodiff.py", "mathfn.py", "equations.py", "codegen/__init__.py"], set()
    while todo:
        rel = todo.pop()
        if rel in seen or rel in not_shaping:
            continue
        seen.add(rel)
        todo += sorted(_package_imports(os.path.join(package, rel), package))
    assert seen <= listed, "shapes the C but is not in the cache key: %s" % sorted(seen - listed)
