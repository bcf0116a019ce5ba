"""Inference at batch 1 in a unit of its own: a JIT kernel built at -O2/-O3 whose weights
stay in L1 links the exported kernel's forward (the portable microkernel inlined with
constant sizes, a step at a time) under PREFIX_b1, and kern.infer at B=1, kern.step at
B=1 and kern.stream run it. The stage on its own (which kernels get the unit, its C, the
kept text split again), then end to end against the numpy reference evaluator, forward's
outputs and the stream, and the stand-ins of a kernel without it."""
import os
from dataclasses import replace

import numpy as np
import pytest

import rnncompiler as rc
from rnncompiler.compiler.codegen import UNIT_BREAK, kept_source, with_batch1_unit
from rnncompiler.compiler.dsl import bind_sizes
from rnncompiler.compiler.pipeline import lower

from test_inputs import two_inputs
from test_masks import zoneout_lstm


@rc.cell(states=("h", "c"), output="h")
def written_out_lstm(x, h, c, p):
    """An LSTM as users write it: the logistic by hand, a product over a concatenation."""
    z = rc.concat(x, h)
    f = 1 / (1 + rc.exp(-p.linear("W_f", z, bias="b_f")))
    i = 1 / (1 + rc.exp(-p.linear("W_i", z, bias="b_i")))
    o = 1 / (1 + rc.exp(-p.linear("W_o", z, bias="b_o")))
    c_new = f * c + i * rc.tanh(p.linear("W_c", z, bias="b_c"))
    return {"h": o * rc.tanh(c_new), "c": c_new}


def _csrc(cell, I, H, dtype="float32", batch1=True):
    bound = bind_sizes(cell, I, H, None)
    return lower(cell, bound, dtype, True, batch1=batch1)[2]


@pytest.mark.parametrize("cell, H, dtype, has", [
    (rc.cells.lstm, 8, "float32", True), (rc.cells.lstm, 32, "float32", True),
    (rc.cells.lstm, 33, "float32", False), (rc.cells.lstm, 16, "float64", True),
    (rc.cells.lstm, 32, "float64", False), (rc.cells.gru, 33, "float32", True),
    (rc.cells.min_gru, 8, "float32", True)], ids=lambda v: getattr(v, "name", str(v)))
def test_kernels_whose_weights_fit_l1_get_a_batch1_unit(cell, H, dtype, has):
    """32 KB of weights at most (an LSTM up to H=32 in float, H=16 in double)."""
    src = _csrc(cell, H, H, dtype)
    assert src.batch1 is has
    assert len(src.units) == (3 if has else 2)
    assert (UNIT_BREAK in src.text) is has
    if has:
        unit = src.units[-1]
        assert "int rnnc_b1_infer(" in unit and "one_step(" in unit
        assert "run_backward" not in unit           # its forward only
        # its own microkernel, inlined: nothing of the runtime object or OpenBLAS
        assert "MK_INLINE void RNNC_T(mk_gemm)" in unit
        assert "scipy_openblas" not in unit and "mk_gemm_rows" not in unit


def test_only_runtime_kernels_asked_for_it_get_the_unit():
    assert not _csrc(rc.cells.lstm, 8, 8, batch1=False).batch1
    bound = bind_sizes(rc.cells.lstm, 8, 8, None)
    plain = lower(rc.cells.lstm, bound, "float32", False, batch1=True)[2]      # blas=False
    assert not plain.batch1 and "_b1_" not in plain.text


def test_every_runtime_kernel_declares_the_unit_and_stands_in_for_it():
    """One cffi wrapper for all kernels of a real type: the declarations are in every
    cdef, and a kernel without the unit defines weak stand-ins."""
    with_unit, without = _csrc(rc.cells.lstm, 8, 8), _csrc(rc.cells.lstm, 64, 64)
    assert with_unit.cdef == without.cdef and "rnnc_b1_step(" in without.cdef
    assert "__attribute__((weak)) int rnnc_b1_infer(" in without.units[0]


def test_the_kept_text_is_split_into_its_units_again():
    src = _csrc(rc.cells.gru, 8, 8)
    meta = {"runtime": True, "dtype": "float32", "prefix": "rnnc", "tuned": False}
    kept = kept_source(src.text, src.cdef, meta, True)
    assert kept.batch1 and kept.units == (src.text.partition(UNIT_BREAK)[0], src.units[-1])
    no_unit = kept_source(_csrc(rc.cells.gru, 64, 64).text, src.cdef, meta, True)
    assert not no_unit.batch1 and no_unit.units == ()


def test_with_batch1_unit_leaves_big_kernels_alone():
    src = _csrc(rc.cells.lstm, 64, 64, batch1=False)
    bound = bind_sizes(rc.cells.lstm, 64, 64, None)
    from rnncompiler.compiler.autodiff import differentiate
    from rnncompiler.compiler.graph import build_graph, fuse_elementwise
    g = fuse_elementwise(build_graph(rc.cells.lstm.spec, bound))
    assert with_batch1_unit(src, g, differentiate(g)) is src


def _counting(kern, name):
    """Count the calls of kern's C function `name`."""
    fn, calls = kern._fn[name], []

    def counted(*args):
        calls.append(1)
        return fn(*args)
    kern._fn[name] = counted
    return calls


# a cell written out by hand in the fast tests; masks, several inputs and a context in
# the whole suite
CELLS = [pytest.param((c, sizes), id=c.name, marks=() if fast else pytest.mark.slow)
         for c, sizes, fast in [
             (written_out_lstm, {}, True), (zoneout_lstm, {}, False), (two_inputs, {"E": 2}, False),
             (rc.cells.gru, {}, False), (rc.cells.min_gru, {}, False)]]


@pytest.fixture(scope="module", params=CELLS)
def built(request):
    cell, sizes = request.param
    kern = rc.compile(cell, 3, 5, "float64", sizes=sizes, opt_level=2)
    return cell, sizes, kern


def test_built_at_o2_infer_at_batch1_runs_the_unit_and_matches_the_reference(built):
    """float64: outputs and final states against the numpy reference evaluator and
    forward's (the same sums in another order: to rounding), with and without state0
    and lengths; B=2 does not run the unit."""
    cell, sizes, kern = built
    assert kern._batch1 and kern._meta["batch1"]
    ref = rc.reference(cell, 3, 5, sizes=sizes)
    rng = np.random.default_rng(3)
    p = kern.init_params(seed=3)
    context = {"e": rng.standard_normal(2)} if kern.context else None
    calls = _counting(kern, "b1_infer")
    for T, lengths, with_state in [(1, None, False), (7, None, True), (70, None, True),
                                   (9, [4], True), (9, [0], False)]:
        x = rng.standard_normal((T, 1, kern.input_size))
        state0 = ({s: rng.standard_normal((1, n)) for s, n in kern.state_sizes.items()}
                  if with_state else None)
        y, st = kern.infer(p, x, state0, lengths, context=context)
        y_ref, st_ref = ref.infer(p, x, state0, lengths, context=context)
        np.testing.assert_allclose(y, y_ref, rtol=1e-11, atol=1e-12)
        res = kern.forward(p, x, state0, lengths, context=context, training=False)
        np.testing.assert_allclose(y, res.outputs, rtol=1e-12, atol=1e-13)
        for s in kern.state_sizes:
            np.testing.assert_allclose(st[s], st_ref[s], rtol=1e-11, atol=1e-12)
            np.testing.assert_allclose(st[s], res.states[s], rtol=1e-12, atol=1e-13)
    assert len(calls) == 5
    kern.infer(p, rng.standard_normal((4, 2, kern.input_size)), context=context)
    assert len(calls) == 5


def test_step_and_stream_run_the_unit_and_give_infer_s_bits(built):
    cell, sizes, kern = built
    rng = np.random.default_rng(4)
    p = kern.init_params(seed=4)
    context = {"e": rng.standard_normal(2)} if kern.context else None
    x = rng.standard_normal((12, 1, kern.input_size))
    y, st = kern.infer(p, x, context=context)
    stepped = _counting(kern, "b1_step")
    s = kern.stream(p, context=context)
    np.testing.assert_array_equal(np.stack([s.step(x[t, 0]) for t in range(12)]), y[:, 0])
    assert len(stepped) == 12
    blocks = _counting(kern, "b1_steps")
    s2 = kern.stream(p, context=context)
    np.testing.assert_array_equal(np.concatenate([s2.steps(x[:5, 0]), s2.steps(x[5:, 0])]), y[:, 0])
    assert len(blocks) == 2
    states = None
    for t in range(12):
        y_t, states = kern.step(p, x[t], states, context=context)
        np.testing.assert_array_equal(y_t, y[t])
    for name in kern.state_sizes:
        np.testing.assert_array_equal(states[name], st[name])
        np.testing.assert_array_equal(s.states[name], st[name][0])


@pytest.mark.slow
def test_float32_at_batch1_is_forward_to_rounding():
    kern = rc.compile(rc.cells.lstm, 16, 32, "float32", opt_level=2)
    assert kern._batch1
    rng = np.random.default_rng(5)
    p = kern.init_params(seed=5)
    x = rng.standard_normal((300, 1, 16)).astype(np.float32)
    y, _ = kern.infer(p, x)
    np.testing.assert_allclose(y, kern.forward(p, x).outputs, rtol=1e-5, atol=1e-6)
    y2, _ = kern.infer(p, np.concatenate([x, x], axis=1))        # the kernel's own loop
    np.testing.assert_allclose(y, y2[:, :1], rtol=1e-5, atol=1e-6)


def test_bad_input_at_batch1_is_refused_by_name():
    kern = rc.compile(rc.cells.gru, 3, 5, "float64", opt_level=2)
    p = kern.init_params()
    with pytest.raises(ValueError, match="x: expected shape"):
        kern.infer(p, np.zeros((4, 1, 2)))
    with pytest.raises(ValueError, match="lengths"):
        kern.infer(p, np.zeros((4, 1, 3)), lengths=[5])
    with pytest.raises(KeyError, match="params"):
        kern.infer({}, np.zeros((4, 1, 3)))


def test_a_kernel_built_at_o1_has_no_unit_and_its_stand_ins_refuse():
    kern = rc.compile(rc.cells.gru, 3, 5, "float64", opt_level=1)
    assert not kern._batch1 and not kern._meta["batch1"]
    lib, ffi = kern._lib, kern._ffi
    assert lib.rnnc_b1_infer_workspace_size(3, 1) == 0 and lib.rnnc_b1_step_workspace_size() == 0
    null = ffi.NULL
    assert lib.rnnc_b1_infer(3, 1, null, null, null, null, null, null, null) == 6
    assert lib.rnnc_b1_pack(null, null) == 6
    assert lib.rnnc_b1_step(null, null, null, null, null, null) == 6
    assert lib.rnnc_b1_steps(1, null, null, null, null, null, null) == 6


@pytest.mark.slow
def test_a_wrong_batch1_unit_is_refused_by_the_check(tmp_path, monkeypatch):
    """A fault planted in the batch-1 unit alone (every step reads the first sample):
    forward agrees with the reference, inference at batch 1 does not, and the kernel is
    refused and not cached."""
    from rnncompiler.compiler import codegen
    from rnncompiler.errors import CompileError
    monkeypatch.setenv("RNNC_CACHE_DIR", str(tmp_path / "cache"))
    real = codegen.with_batch1_unit
    loop = "one_step(params, x + (ptrdiff_t)t * "

    def planted(csrc, g, bwd):
        out = real(csrc, g, bwd)
        assert out.units[-1].count(loop) == 1
        unit = out.units[-1].replace(loop, "one_step(params, x + (ptrdiff_t)0 * ")
        return replace(out, units=out.units[:-1] + (unit,),
                       text=out.text.partition(UNIT_BREAK)[0] + UNIT_BREAK + unit)
    monkeypatch.setattr(codegen, "with_batch1_unit", planted)
    with pytest.raises(CompileError, match=r"its inference at batch 1 differs from the "
                       r"reference evaluator first at the outputs at step 1"):
        rc.compile(rc.cells.gru, 3, 4, "float64", opt_level=2)
    def entries():
        return [f for f in os.listdir(tmp_path / "cache") if f.endswith((".json", ".so", ".c"))
                and not f.startswith(("runtime-", "wrapper-", "tuning-"))]
    assert not entries()
    monkeypatch.undo()
    monkeypatch.setenv("RNNC_CACHE_DIR", str(tmp_path / "cache"))
    assert rc.compile(rc.cells.gru, 3, 4, "float64", opt_level=2)._batch1 and entries()


@pytest.mark.slow
def test_a_kernel_whose_entry_is_gone_is_rebuilt_with_its_unit(tmp_path, monkeypatch):
    """Unpickled after its cache entry was removed, a kernel is built again from the C it
    kept (the unit a translation unit of its own again) and infers at batch 1 as before."""
    import pickle

    from rnncompiler.compiler import build
    monkeypatch.setenv("RNNC_CACHE_DIR", str(tmp_path / "cache"))
    kern = rc.compile(rc.cells.lstm, 3, 4, "float64", opt_level=2)
    p, x = kern.init_params(seed=6), np.random.default_rng(6).standard_normal((9, 1, 3))
    y, _ = kern.infer(p, x)
    blob = pickle.dumps(kern)
    build.discard(kern._key)
    assert build.load_cached(kern._key) is None
    again = pickle.loads(blob)
    assert build.load_cached(kern._key) is not None             # built again
    assert again._batch1 and again.loaded_from_cache is None
    calls = _counting(again, "b1_infer")
    np.testing.assert_array_equal(again.infer(p, x)[0], y)
    assert calls == [1]
