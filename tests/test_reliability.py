"""Reliability points not covered by test_errors.py, test_cache.py and test_export.py
(docs/reliability.md maps every point to its test): saturation, what exp/log/÷/** do at
overflow, the contract checks (bitwise repeats, no aliasing, 100 000 steps, byte-identical
C under 5 PYTHONHASHSEEDs), names that collide with C, no compiler on PATH, the compiler
timeout, and `rnnc cache info|clear`."""
import fcntl
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import rnncompiler as rc
from rnncompiler.compiler import build
from rnncompiler.compiler.codegen.helpers import runtime_units
from rnncompiler.cli import main as rnnc
from rnncompiler.cli import cache as cache_cli
from rnncompiler.compiler.activations import BY_NAME

from activation_cases import CASES, PUBLIC, reference, stays_finite

TESTS = Path(__file__).resolve().parent
I, H, T, B = 3, 4, 5, 2
LIBRARY_SIZES = {"P": 2, "O": 2}       # as tests/test_cells.py: shared cache entries


def library_kernel(name, dtype="float64"):
    cell = rc.cells.ALL[name]
    return rc.compile(cell, I, H, dtype,
                      sizes={n: LIBRARY_SIZES[n] for n in rc.cells.SIZES[name]} or None)


def draw(kern, T=T, B=B, seed=0):
    rng = np.random.default_rng(seed)
    params = kern.init_params(seed=seed)
    x = rng.standard_normal((T, B, kern.input_size))
    state0 = {s: 0.5 * rng.standard_normal((B, n)) for s, n in kern.state_sizes.items()}
    dy = rng.standard_normal((T, B, kern.output_size))
    ds = {s: rng.standard_normal((B, n)) for s, n in kern.state_sizes.items()}
    return params, x, state0, dy, ds


def arrays_of(*things):
    """Every ndarray in nested dicts, tuples and results, with a label."""
    out = []

    def walk(label, v):
        if isinstance(v, np.ndarray):
            out.append((label, v))
        elif isinstance(v, dict):
            for k, u in v.items():
                walk("%s[%r]" % (label, k), u)
        elif isinstance(v, (tuple, list)):
            for k, u in enumerate(v):
                walk("%s[%d]" % (label, k), u)
        elif isinstance(v, (rc.ForwardResult, rc.Gradients)):
            for k in ("outputs", "states", "params", "x", "state0"):
                if hasattr(v, k) and getattr(v, k) is not None:
                    walk("%s.%s" % (label, k), getattr(v, k))
    for k, t in enumerate(things):
        walk(str(k), t)
    return out


# ================================================================ saturation

# every activation of the table defined on all reals and finite there, with torch's form
SATURATING = {row.name: (CASES[row.name], functools.partial(row.torch, torch, **dict(row.bounds)))
              for row in PUBLIC if stays_finite(row) and row.domain[0] < 0 and row.torch}
SATURATING["log_sigmoid"] = (lambda v: -rc.softplus(-v), F.logsigmoid)


def saturating_cell(act):
    @rc.cell(states=("h",))
    def saturating(x, h, p):
        return {"h": act(p.linear("W", rc.concat(h, x), bias="b"))}
    return saturating


def torch_run(act, params, x, h0, dy, ds):
    """The same recurrence in torch (float64 autograd): outputs, final h and gradients."""
    W, b = (torch.tensor(params[k], dtype=torch.float64, requires_grad=True) for k in "Wb")
    xs = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    h = h0_t = torch.tensor(h0, dtype=torch.float64, requires_grad=True)
    ys = []
    for t in range(x.shape[0]):
        h = act(torch.cat([h, xs[t]], dim=1) @ W.T + b)
        ys.append(h)
    y = torch.stack(ys)
    (y * torch.tensor(dy)).sum().add((h * torch.tensor(ds)).sum()).backward()
    return y.detach().numpy(), h.detach().numpy(), \
        {"W": W.grad.numpy(), "b": b.grad.numpy(), "x": xs.grad.numpy(), "h0": h0_t.grad.numpy()}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_saturating_activations_stay_finite_and_right(dtype):
    """Weights x400 and inputs x50 (pre-activations in the thousands): outputs and every
    gradient finite, and equal to torch's (float64 autograd of the same recurrence)."""
    for name in sorted(SATURATING):
        saturating_activation_is_right(name, dtype)


def saturating_activation_is_right(name, dtype):
    act, torch_act = SATURATING[name]
    kern = rc.compile(saturating_cell(act), I, H, dtype)
    params, x, state0, dy, ds = draw(kern)
    params = {k: 400 * v for k, v in params.items()}
    x = 50 * x
    res = kern.forward(params, x, state0, check_finite=True)
    g = kern.backward(res, dy, ds, check_finite=True)
    for label, a in arrays_of(res, g):
        assert np.isfinite(a).all(), (name, label)
    unbounded = name in BY_NAME and abs(reference(BY_NAME[name])(np.array(1e3))) > 100
    assert np.abs(res.outputs).max() > 100 or not unbounded, name
    p64 = {k: v.astype(np.float64) for k, v in params.items()}
    y, h, grads = torch_run(torch_act, p64, x.astype(kern.dtype).astype(np.float64),
                            state0["h"].astype(kern.dtype).astype(np.float64), dy, ds["h"])
    tol = 1e-9 if dtype == "float64" else 2e-4

    def close(got, want, what):
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale, err_msg=name + ": " + what)
    close(res.outputs, y, "outputs")
    close(res.states["h"], h, "h_T")
    for k in "Wb":
        close(g.params[k], grads[k], "d " + k)
    close(g.x, grads["x"], "d x")
    close(g.state0["h"], grads["h0"], "d h0")


@pytest.mark.parametrize("name", ["layernorm_lstm", "lstm", "gru"])
def test_library_cells_saturate_finitely(name):
    """Weights x400, inputs x50: outputs and gradients finite (the layer-normalised LSTM's
    mean/variance reductions too), and equal to the numpy reference evaluator."""
    kern = library_kernel(name)
    params, x, state0, dy, ds = draw(kern)
    params = {k: 400 * v for k, v in params.items()}
    x = 50 * x
    res = kern.forward(params, x, state0, check_finite=True)
    g = kern.backward(res, dy, ds, check_finite=True)
    ref = rc.reference(rc.cells.ALL[name], I, H)
    with np.errstate(over="ignore"):
        r = ref.forward(params, x, state0)
        rg = ref.backward(r, dy, ds)
    for got, want, what in [(res.outputs, r.outputs, "outputs"), (g.x, rg.x, "d x")] + \
            [(g.params[k], rg.params[k], "d " + k) for k in kern.param_shapes]:
        assert np.isfinite(got).all(), what
        scale = max(1.0, float(np.abs(want).max()))
        np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-9 * scale, err_msg=what)


def test_cross_entropy_of_saturated_logits_is_finite_and_torchs():
    """The losses of rc.models go through log-sum-exp: logits in the tens of thousands
    give a finite loss and gradient, torch's F.cross_entropy's."""
    from rnncompiler.models.losses import cross_entropy
    rng = np.random.default_rng(0)
    logits = 2e4 * rng.standard_normal((6, 5))
    targets = rng.integers(0, 5, 6)
    value, grad = cross_entropy(logits, targets)
    z = torch.tensor(logits, requires_grad=True)
    loss = F.cross_entropy(z, torch.tensor(targets))
    loss.backward()
    assert np.isfinite(value) and np.isfinite(grad).all()
    np.testing.assert_allclose(value, loss.item(), rtol=1e-12)
    np.testing.assert_allclose(grad, z.grad.numpy(), atol=1e-15)


# ================================================================ overflow: as numpy

# (operation, numpy's form): arithmetic, then every activation of the table against the
# reference's numpy form, then log-sigmoid
EDGE_OPS = {
    "1/x": (lambda v: 1 / v, lambda v: 1 / v),
    "x/relu(x)": (lambda v: v / rc.relu(v), lambda v: v / np.maximum(v, 0)),
    "x**0.5": (lambda v: v ** 0.5, lambda v: v ** 0.5), "x**3": (lambda v: v ** 3, lambda v: v ** 3),
    **{row.name: (functools.partial(getattr(rc, row.name), **dict(row.bounds)), reference(row))
       for row in PUBLIC},
    "log_sigmoid": (lambda v: -rc.softplus(-v), lambda v: -np.logaddexp(0, -v)),
}


@rc.cell(states=("h",))
def edges(x, h, p):
    return {"h": h}, rc.concat(*[op(x) for op, _ in EDGE_OPS.values()])


EDGE_VALUES = [0.0, -0.0, 1.0, -1.0, 20, -20, 40, -40, 88.5, -88.5, 89, -104, 100, -100, 700,
               -700, 710, -746, 800, -800, 1e200, -1e200, 1e308, -1e308, 1e-310, 5e-324,
               np.inf, -np.inf, np.nan]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_overflow_gives_what_numpy_gives(dtype):
    """exp, log, division and powers at overflow, at 0, at inf and NaN: the kernel's inf,
    -inf, NaN and 0 are numpy's (values within 4 ulp), and the saturating activations
    give their limits; nothing traps, nothing is silently replaced."""
    with np.errstate(over="ignore"):
        v = np.array(EDGE_VALUES).astype(dtype)
    kern = rc.compile(edges, len(v), 1, dtype)
    with np.errstate(all="ignore"):
        y, _ = kern.infer(kern.init_params(), v[None, None, :])
        for k, (name, (_, fn)) in enumerate(EDGE_OPS.items()):
            got, want = y[0, 0, k * len(v):(k + 1) * len(v)], fn(v).astype(dtype)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=name)
            np.testing.assert_array_equal(np.isinf(got) * np.sign(got),
                                          np.isinf(want) * np.sign(want), err_msg=name)
            fin = np.isfinite(want)
            np.testing.assert_allclose(got[fin], want[fin], rtol=4 * np.finfo(dtype).eps,
                                       atol=0, err_msg=name)


def relu_only():
    @rc.cell(states=("h",))
    def relu_nan(x, h, p):
        return {"h": h}, rc.relu(x)
    return relu_nan


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_relu_propagates_nan(dtype):
    """relu(NaN) is NaN (torch.relu, the reference evaluator): a NaN input must not vanish."""
    cell = relu_only()
    kern = rc.compile(cell, 2, 1, dtype)
    x = np.array([[[np.nan, -1.0]]])
    y, _ = kern.infer(kern.init_params(), x)
    ref = rc.reference(cell, 2, 1).infer({}, x)[0]
    assert np.isnan(ref[0, 0, 0]) and torch.relu(torch.tensor(np.nan)).isnan()
    assert np.isnan(y[0, 0, 0]), "relu(NaN) gave %r" % y[0, 0, 0]


# ================================================================ contract checks

@pytest.mark.parametrize("name", sorted(rc.cells.ALL))
def test_repeated_calls_are_bitwise_identical_and_never_alias(name):
    """forward, backward, infer and step called again give bitwise-equal results; no output
    shares memory with an input or with another output, also when the inputs are already
    C-contiguous arrays of the kernel's dtype (nothing needs copying); inputs unchanged."""
    kern = library_kernel(name)
    params, x, state0, dy, ds = draw(kern, seed=7)
    lengths = np.array([T, 0], dtype=np.intc)
    inputs = (params, x, state0, dy, ds, lengths)
    before = [(label, a.copy()) for label, a in arrays_of(*inputs)]

    def run():
        res = kern.forward(params, x, state0, lengths)
        g = kern.backward(res, dy, ds, state_grads=True)
        return res, g, kern.infer(params, x, state0, lengths), kern.step(params, x[0], state0)
    first, second = run(), run()
    outs1, outs2 = arrays_of(*first), arrays_of(*second)
    assert [l for l, _ in outs1] == [l for l, _ in outs2] and len(outs1) > 8
    for (label, a), (_, b) in zip(outs1, outs2):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes(), "%s differs between two calls" % label
    ins = arrays_of(*inputs)
    outs = outs1 + outs2
    for k, (label, a) in enumerate(outs):
        for in_label, b in ins:
            assert not np.shares_memory(a, b), "output %s aliases input %s" % (label, in_label)
        for other, b in outs[k + 1:]:
            assert not np.shares_memory(a, b), "outputs %s and %s share memory" % (label, other)
    for (label, a), (_, b) in zip(arrays_of(*inputs), before):
        assert a.tobytes() == b.tobytes(), "input %s was modified" % label


def test_results_survive_later_calls_that_reuse_workspaces():
    """Outputs and gradients of one call are unchanged by many later calls (freed tapes
    are recycled), and a result's backward still works after other results are freed."""
    kern = library_kernel("lstm")
    params, x, state0, dy, ds = draw(kern, seed=3)
    res = kern.forward(params, x, state0)
    g = kern.backward(res, dy, ds)
    kept = [(label, a.copy()) for label, a in arrays_of(res, g)]
    for k in range(20):
        other = kern.forward(params, x * (k + 2), state0)
        kern.backward(other, dy)
        del other
    for (label, a), (_, b) in zip(arrays_of(res, g), kept):
        assert a.tobytes() == b.tobytes(), label
    again = kern.backward(res, dy, ds)
    for (label, a), (_, b) in zip(arrays_of(again), arrays_of(g)):
        assert a.tobytes() == b.tobytes(), label


def test_a_100000_step_sequence_runs_in_linear_memory():
    """T = 100 000 (B=2, H=4): forward and backward finish with finite results; the peak of
    numpy's allocations is the documented tape plus a few copies of x and y, and infer
    (no tape) needs none of it; the last steps' gradients equal a short run's."""
    kern = library_kernel("lstm")
    T_long, K = 100_000, 50
    params, x, state0, dy, ds = draw(kern, T=T_long, seed=5)
    tape_bytes = kern._fn["workspace_size"](T_long, B) * kern.dtype.itemsize
    tracemalloc.start()
    try:
        res = kern.forward(params, x, state0)
        g = kern.backward(res, dy, ds, state_grads=True)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        y_inf, _ = kern.infer(params, x, state0)
        peak_infer = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    io_bytes = x.nbytes + res.outputs.nbytes
    print("T=%d: peak %.1f MB (tape %.1f MB, x+y %.1f MB); infer %.1f MB"
          % (T_long, peak / 1e6, tape_bytes / 1e6, io_bytes / 1e6, peak_infer / 1e6))
    assert peak < tape_bytes + 4 * io_bytes + 2 * sum(a.nbytes for a in g.states.values())
    assert peak_infer < 2 * io_bytes and tape_bytes > 2 * io_bytes
    assert res.outputs.tobytes() == y_inf.tobytes()
    for label, a in arrays_of(res, g):
        assert np.isfinite(a).all(), label
    # the last K steps again, from the state before them: the same outputs and gradients
    mid = kern.infer(params, x[:T_long - K], state0)[1]
    short = kern.forward(params, x[T_long - K:], mid)
    gs = kern.backward(short, dy[T_long - K:], ds)
    np.testing.assert_allclose(short.outputs, res.outputs[T_long - K:], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gs.x, g.x[T_long - K:], rtol=1e-10, atol=1e-13)
    for s in kern.state_sizes:
        np.testing.assert_allclose(gs.state0[s], g.states[s][T_long - K - 1] -
                                   (dy[T_long - K - 1] if s == "h" else 0), rtol=1e-10, atol=1e-13)


HASHSEED_CHILD = textwrap.dedent("""\
    import hashlib, json, os, sys, tempfile
    sys.path.insert(0, sys.argv[1])
    import rnncompiler as rc
    from rnncompiler.compiler.pipeline import bind_sizes, lower
    from test_fuzz import Program
    out = {}
    cells = {"layernorm_lstm": rc.cells.layernorm_lstm, "gru_torch": rc.cells.gru_torch,
             "random": eval(sys.argv[2], {"Program": Program}).cell()}
    d = tempfile.mkdtemp()
    for name, cell in cells.items():
        bound = bind_sizes(cell, 3, 4, None)
        text = lower(cell, bound, "float32", blas=True)[2].text
        exp = rc.export_c(cell, d, 3, 4, "float64", name="c_" + name)
        files = [open(p, "rb").read() for p in (exp.header, exp.source)]
        out[name] = [hashlib.sha256(x).hexdigest() for x in [text.encode()] + files]
    print(json.dumps(out))
    """)
HASHSEED_PROGRAM = (
    "Program(input_size=5, state_sizes=(3, 17), ops=(('linear', 'W0', (0, 1), 'b0', 17), "
    "('softplus', 3), ('mul', 4, 2), ('mean', 5), ('div', 5, 6), ('clip', 7, (-0.5, 2.0)), "
    "('linear', 'W6', (1, 7, 0), None, 3), ('hard_sigmoid', 9), ('vector', 10, 'v8', 3, '*')),"
    " new_states=((11, True), (8, False)), output=('y', 4))")


@pytest.mark.slow
def test_generated_and_exported_c_are_identical_under_five_hash_seeds(tmp_path):
    """The JIT C and the exported NAME.h/NAME.c of a layer-normalised LSTM, PyTorch's GRU
    and a random cell are byte-identical under PYTHONHASHSEED=0, 1, 2, 12345, random."""
    seeds = ["0", "1", "2", "12345", "random"]
    procs = [subprocess.Popen([sys.executable, "-c", HASHSEED_CHILD, str(TESTS), HASHSEED_PROGRAM],
                              env=dict(os.environ, PYTHONHASHSEED=seed), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for seed in seeds]
    results = []
    for seed, p in zip(seeds, procs):
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, "PYTHONHASHSEED=%s failed:\n%s" % (seed, err[-3000:])
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert set(results[0]) == {"layernorm_lstm", "gru_torch", "random"}
    for seed, r in zip(seeds[1:], results[1:]):
        assert r == results[0], "PYTHONHASHSEED=%s gives other C" % seed


# ================================================================ names that collide with C

def test_parameter_and_state_names_that_collide_with_c_work():
    """Parameters and states named like C keywords, libm functions and the generated
    code's own identifiers compile, match the reference and export strictly."""
    @rc.cell(states={"restrict": "H", "double": 3}, output="restrict")
    def collide(x, restrict, double, p):
        z = rc.concat(restrict, x, double)
        a = p.linear("int", z, bias="exp") * p.vector("tanh") + p.scalar("main")
        b = p.linear("params", z, bias="work", size=3) * p.scalar("NULL")
        return {"restrict": rc.tanh(a) * p.vector("size_t"), "double": rc.sigmoid(b) + p.vector("T", 3)}
    kern = rc.compile(collide, I, H, "float64")
    assert list(kern.param_shapes) == ["int", "exp", "tanh", "main", "params", "work", "NULL",
                                       "size_t", "T"]
    report = rc.gradcheck(kern, T=3, B=2, localize=False)
    assert report.ok, report
    params, x, state0, dy, ds = draw(kern)
    res = kern.forward(params, x, state0)
    ref = rc.reference(collide, I, H)
    r = ref.forward(params, x, state0)
    np.testing.assert_allclose(res.outputs, r.outputs, rtol=1e-12, atol=1e-14)
    g, rg = kern.backward(res, dy, ds), ref.backward(r, dy, ds)
    for k in kern.param_shapes:
        np.testing.assert_allclose(g.params[k], rg.params[k], rtol=1e-10, atol=1e-13, err_msg=k)


def test_exported_c_with_colliding_names_compiles_strictly(tmp_path):
    """The same names in an exported kernel: -Wall -Wextra -pedantic -Werror clean.
    (Python's own keywords are refused by the cell language: a CellError naming them.)"""
    @rc.cell(states=("register",))
    def collide_export(x, h, p):
        a = p.linear("int", rc.concat(h, x), bias="unsigned") * p.scalar("static")
        return {"register": rc.tanh(a) * p.vector("sizeof")}
    for keyword in ("while", "return"):
        with pytest.raises(rc.CellError, match=repr(keyword)):
            rc.cell(states=("h",))(lambda x, h, p: {"h": h * p.scalar(keyword)})
    exp = rc.export_c(collide_export, str(tmp_path), I, H, "float64")
    proc = subprocess.run([os.environ.get("CC") or "gcc", "-std=c99", "-O2", "-Wall", "-Wextra",
                           "-pedantic", "-Werror", "-c", exp.source, "-o", str(tmp_path / "a.o")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# ================================================================ compiler: absent, slow

@rc.cell(states=("h",))
def never_built(x, h, p):
    """A cell no other test compiles: its compile always misses the cache."""
    return {"h": rc.softsign(p.linear("W_never", rc.concat(x, h), bias="b_never")) * 0.75}


def private_cache(tmp_path, monkeypatch, name="cache"):
    """A private cache dir for one test, holding a copy of the session's runtime objects
    (built once per cache at -O3: copying them saves seconds per test)."""
    d = tmp_path / name
    d.mkdir(mode=0o700)
    for obj in build.runtime_objects(runtime_units(False)):
        for suffix in (".o", ".json"):
            shutil.copy2(Path(obj).with_suffix(suffix), d)
    monkeypatch.setenv("RNNC_CACHE_DIR", str(d))
    monkeypatch.delenv("CC", raising=False)
    return d


def test_no_compiler_on_path_fails_fast_naming_it(tmp_path, monkeypatch):
    """With no gcc on PATH a cache miss raises CompileError naming 'gcc' and PATH before
    any C is generated (the slow part, here replaced by a failure), and writes no entry."""
    cache = private_cache(tmp_path, monkeypatch)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    import rnncompiler.compiler.pipeline as pipeline

    def no_lowering(*args, **kwargs):
        raise AssertionError("the C was generated although no compiler can build it")
    monkeypatch.setattr(pipeline, "lower", no_lowering)
    with pytest.raises(rc.CompileError) as info:
        rc.compile(never_built, I, H, "float64")
    assert "'gcc'" in str(info.value) and "PATH" in str(info.value) and "CC" in str(info.value)
    assert not [p for p in cache.iterdir() if p.suffix in (".json", ".so")
                and not p.name.startswith("runtime-")]
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    with pytest.raises(rc.CompileError, match="no-such-cc"):
        rc.compile(never_built, I, H, "float64")


def test_cached_kernels_load_without_a_compiler(tmp_path, monkeypatch):
    """A kernel built before loads and runs with no compiler on PATH (and CC unset)."""
    private_cache(tmp_path, monkeypatch)
    kern = rc.compile(never_built, I, H, "float64")
    params, x, state0, _, _ = draw(kern)
    expected = kern.forward(params, x, state0).outputs
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    build._LOADED.clear()                 # load the binary again, as a new process would
    again = rc.compile(never_built, I, H, "float64")
    assert again.forward(params, x, state0).outputs.tobytes() == expected.tobytes()


def test_a_hung_compiler_is_stopped_by_the_timeout(tmp_path, monkeypatch):
    """A compiler that never finishes is killed after RNNC_CC_TIMEOUT seconds: CompileError
    naming the timeout and a kept C file; no process is left and no entry written."""
    cache = private_cache(tmp_path, monkeypatch)
    pids = tmp_path / "pids"
    hung = tmp_path / "hung-cc"
    hung.write_text('#!/bin/sh\necho $$ >> "%s"\nexec sleep 300\n' % pids)
    hung.chmod(0o700)
    monkeypatch.setenv("CC", str(hung))
    monkeypatch.setenv("RNNC_CC_TIMEOUT", "1.5")
    t0 = time.monotonic()
    with pytest.raises(rc.CompileError) as info:
        rc.compile(never_built, I, H, "float64")
    assert time.monotonic() - t0 < 60
    msg = str(info.value)
    assert "1.5 s" in msg and "RNNC_CC_TIMEOUT" in msg
    assert info.value.c_file and os.path.isfile(info.value.c_file)
    started = [int(p) for p in pids.read_text().split()]
    assert started
    for pid in started:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    assert not [p for p in cache.iterdir() if p.name.startswith("build-") or
                (p.suffix in (".json", ".so") and not p.name.startswith("runtime-"))]


@pytest.mark.parametrize("value", ["0", "-3", "soon", "inf"])
def test_a_bad_timeout_is_named(tmp_path, monkeypatch, value):
    private_cache(tmp_path, monkeypatch)
    monkeypatch.setenv("RNNC_CC_TIMEOUT", value)
    with pytest.raises(ValueError, match="RNNC_CC_TIMEOUT.*%s" % value):
        rc.compile(never_built, I, H, "float64")


# ================================================================ rnnc cache info|clear

@pytest.mark.slow
def test_cache_info_and_clear(tmp_path, monkeypatch, capsys):
    """info counts the entries, their size and the runtime object; clear removes exactly
    the cache's files (a stranger's file and a symlink's target survive), and the next
    compile rebuilds."""
    cache = private_cache(tmp_path, monkeypatch)
    assert rnnc(["cache", "info"]) == 0
    assert "cache directory: %s" % cache in capsys.readouterr().out
    rc.compile(never_built, I, H, "float64")
    rc.compile(saturating_cell(rc.softsign), I, H, "float64")
    (cache / "notes.txt").write_text("mine")
    outside = tmp_path / "outside.txt"
    outside.write_text("keep")
    (cache / ("f" * 64 + ".c")).symlink_to(outside)
    assert rnnc(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert "kernels: 2 entries" in out
    # the helpers and the microkernel in the default shape, of both real types (copied by
    # private_cache; a -O1 kernel is not tuned)
    runtime = [p for p in cache.iterdir() if p.name.startswith("runtime-") and p.suffix == ".o"]
    assert len(runtime) == 4 and all(str(p) in out for p in runtime)
    total = cache_cli.scan().bytes
    assert total > 10000 and ("%.1f MB" % (total / 1e6)) in out
    assert rnnc(["cache", "clear"]) == 0
    # those four and the float64 cffi wrapper
    assert "removed 2 kernel entries and 5 runtime objects" in capsys.readouterr().out
    assert sorted(p.name for p in cache.iterdir()) == ["notes.txt"]
    assert outside.read_text() == "keep"
    build._LOADED.clear()
    kern = rc.compile(never_built, I, H, "float64")
    assert kern.forward(*draw(kern)[:3]).outputs.shape == (T, B, H)
    assert len(list(cache.glob("*.json"))) == 4          # the kernel and the runtime objects


def backdate(path, seconds):
    """Make a path look `seconds` old."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def left_by_a_killed_build(cache, name, seconds=60):
    """A build directory as a killed build leaves it: files, and a .lock nobody holds."""
    d = cache / name
    d.mkdir()
    (d / "unit0.c").write_text("int x;\n")
    (d / ".lock").write_text("")
    backdate(d, seconds)
    return d


def test_cache_clear_leaves_an_entry_being_built(tmp_path, monkeypatch, capsys):
    """An entry whose build holds its flock is left alone, and so is a build directory
    whose build runs (its lock held) or that is too new to tell; a killed build's goes."""
    cache = private_cache(tmp_path, monkeypatch)
    kern = rc.compile(never_built, I, H, "float64")
    (cache / "build-abc123").mkdir()                      # no lock yet: just made
    live = build.new_build_dir(str(cache))
    backdate(live, 3600)
    left_by_a_killed_build(cache, "build-dead01")
    fd = os.open(cache / (kern._key + ".lock"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        assert rnnc(["cache", "clear"]) == 0
    finally:
        os.close(fd)
    assert "left 1 entry that is being built" in capsys.readouterr().out
    names = {p.name for p in cache.iterdir()}
    assert {kern._key + ".json", kern._key + ".c", "build-abc123", os.path.basename(live)} <= names
    assert "build-dead01" not in names
    assert not [n for n in names if n.startswith("runtime-")]
    build.remove_build_dir(live)
    backdate(cache / "build-abc123", build.UNLOCKED_BUILD_SECONDS + 1)   # an older version's
    assert rnnc(["cache", "clear"]) == 0
    assert list(cache.iterdir()) == []


def test_the_next_compile_removes_what_killed_builds_left(tmp_path, monkeypatch, capsys):
    """build-* directories whose lock is free are removed by the next compile that builds,
    and counted by rnnc cache info until then; a running build's directory is kept."""
    cache = private_cache(tmp_path, monkeypatch)
    left_by_a_killed_build(cache, "build-dead01")
    left_by_a_killed_build(cache, "build-dead02", seconds=10)
    live = build.new_build_dir(str(cache))
    backdate(live, 3600)
    assert rnnc(["cache", "info"]) == 0
    assert "unfinished builds: 3 (running, or left by a killed build;" in capsys.readouterr().out
    kern = rc.compile(never_built, I, H, "float64")
    assert kern.loaded_from_cache is False
    builds = sorted(p.name for p in cache.iterdir() if p.name.startswith("build-"))
    assert builds == [os.path.basename(live)]
    build.remove_build_dir(live)
    assert not list(cache.glob("build-*"))
    assert rnnc(["cache", "info"]) == 0
    out = capsys.readouterr().out
    assert "kernels: 1 entry\n" in out and "unfinished builds" not in out


def test_a_cache_hit_says_it_was_loaded_not_compiled(tmp_path, monkeypatch):
    """The demo's line for a kernel from the cache does not claim "compiled in 0.00 s"."""
    from rnncompiler.demo import compiled_how
    private_cache(tmp_path, monkeypatch)
    first = rc.compile(never_built, I, H, "float64")
    assert first.loaded_from_cache is False
    assert compiled_how(first, "the cell", 1.5) == "compiled the cell in 1.50 s"
    again = rc.compile(never_built, I, H, "float64")
    assert again.loaded_from_cache is True
    assert compiled_how(again, "the cell", 0.001).startswith("loaded the cell from the kernel "
                                                            "cache in 0.00 s")


def test_cache_clear_refuses_a_directory_others_can_write(tmp_path, monkeypatch, capsys):
    cache = private_cache(tmp_path, monkeypatch)
    (cache / ("a" * 64 + ".json")).write_text("{}")
    cache.chmod(0o777)
    assert rnnc(["cache", "clear"]) == 2
    err = capsys.readouterr().err
    assert str(cache) in err and "writable by other users" in err
    assert (cache / ("a" * 64 + ".json")).exists()
    assert rnnc(["cache", "info"]) == 0
    assert "WARNING" in capsys.readouterr().out


@pytest.mark.skipif(os.getuid() != 0, reason="giving a directory to another user needs root")
def test_cache_clear_refuses_a_directory_it_does_not_own(tmp_path, monkeypatch, capsys):
    cache = private_cache(tmp_path, monkeypatch)
    (cache / ("a" * 64 + ".json")).write_text("{}")
    os.chown(cache, 65534, 65534)
    assert rnnc(["cache", "clear"]) == 2
    assert "owned by another user" in capsys.readouterr().err
    assert (cache / ("a" * 64 + ".json")).exists()


def test_the_case_counts_in_the_reliability_page_are_current():
    """docs/reliability.md counts the cases of three test files: they are what pytest
    collects now."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "reliability.md").read_text()
    row = re.search(r"\| hostile and careless inputs \| (.*) \|", page).group(1)
    claimed = {name: int(n) for n, name in re.findall(r"(\d+)(?: cases)? in `tests/(\w+\.py)`", row)}
    assert sorted(claimed) == ["test_cache.py", "test_errors.py", "test_reliability.py"]
    here = os.path.dirname(os.path.abspath(__file__))
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p",
                          "no:cacheprovider"] + sorted(claimed), cwd=here,
                         capture_output=True, text=True).stdout
    for name, n in claimed.items():
        collected = sum(line.split("::")[0].endswith(name) for line in out.splitlines())
        assert collected == n, "docs/reliability.md says %d cases in %s, pytest collects %d" \
            % (n, name, collected)
