"""The streaming entry points of exported kernels: NAME_pack once, then NAME_step per sample
(batch 1, state carried) gives what NAME_infer gives over the whole sequence, in place or
not, from zeros or a given state, and NAME_steps over blocks of samples what NAME_step
gives sample by sample; NULLs are refused with code 2, T < 1 with 1."""
import ctypes

import numpy as np
import pytest

import rnncompiler as rc
from cells import gru, lstm, peephole_lstm, two_sizes
from test_export import I, H, build_shared

T = 7
CELLS = {"lstm": (lstm, None), "gru": (gru, None), "peephole_lstm": (peephole_lstm, None),
         "two_sizes": (two_sizes, {"P": 3, "O": 2})}


class Stream:
    """NAME_pack, NAME_step and NAME_infer of one exported kernel, on numpy arrays."""

    def __init__(self, lib, prefix, dtype):
        self.dtype = np.dtype(dtype)
        real = ctypes.c_float if self.dtype == np.float32 else ctypes.c_double
        P, IP, i = ctypes.POINTER(real), ctypes.POINTER(ctypes.c_int), ctypes.c_int
        sigs = {"step_workspace_size": ([], ctypes.c_size_t),
                "infer_workspace_size": ([i, i], ctypes.c_size_t),
                "param_count": ([], ctypes.c_size_t), "state_size": ([], ctypes.c_size_t),
                "output_size": ([], ctypes.c_size_t), "input_size": ([], ctypes.c_size_t),
                "pack": ([P, P], i), "step": ([P, P, P, P, P, P], i),
                "steps": ([i, P, P, P, P, P, P], i),
                "infer": ([i, i, P, P, IP, P, P, P, P], i)}
        self.fn = {}
        for name, (args, res) in sigs.items():
            f = getattr(lib, "%s_%s" % (prefix, name))
            f.argtypes, f.restype = args, res
            self.fn[name] = f
        self.P = P
        self.n, self.S, self.O, self.I = (self.fn[k]() for k in
                                          ("param_count", "state_size", "output_size", "input_size"))

    def p(self, a):
        return None if a is None else a.ctypes.data_as(self.P)

    def infer(self, params, x, state0):
        """NAME_infer over x (T, B, I): y (T, B, O) and state_T (B, S)."""
        T, B = x.shape[:2]
        y = np.zeros((T, B, self.O), self.dtype)
        sT = np.zeros((B, self.S), self.dtype)
        work = np.zeros(self.fn["infer_workspace_size"](T, B), self.dtype)
        assert self.fn["infer"](T, B, self.p(params), self.p(np.ascontiguousarray(x)), None,
                                self.p(state0), self.p(y), self.p(sT), self.p(work)) == 0
        return y, sT

    def packed(self, params):
        """A step workspace (NaN where nothing is written) with params packed into it."""
        work = np.full(self.fn["step_workspace_size"](), np.nan, self.dtype)
        assert self.fn["pack"](self.p(params), self.p(work)) == 0
        return work

    def stream(self, params, x, state0, in_place):
        work = self.packed(params)
        state = None if state0 is None else state0.copy()
        ys = []
        for t in range(x.shape[0]):
            y = np.full(self.O, np.nan, self.dtype)
            out = state if (in_place and state is not None) else np.full(self.S, np.nan, self.dtype)
            assert self.fn["step"](self.p(params), self.p(np.ascontiguousarray(x[t, 0])),
                                   self.p(state), self.p(y), self.p(out), self.p(work)) == 0
            ys.append(y)
            state = out
        return np.stack(ys), state


@pytest.fixture(scope="module", params=["float64", "float32"])
def streams(request, tmp_path_factory):
    dtype = request.param
    out = str(tmp_path_factory.mktemp("stream_" + dtype))
    exports = {n: rc.export_c(c, out, I, H, dtype, name="s_" + n, sizes=s)
               for n, (c, s) in CELLS.items()}
    lib = build_shared(out, [e.source for e in exports.values()])
    return {n: (Stream(lib, e.name, dtype), e) for n, e in exports.items()}, dtype


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("from_zeros", [False, True])
@pytest.mark.parametrize("T", [T, T + 1])      # NAME_infer's last state in either slot
def test_step_by_step_is_the_sequence_run_at_once(streams, name, in_place, from_zeros, T):
    table, dtype = streams
    s, exp = table[name]
    cell, sizes = CELLS[name]
    kern = rc.compile(cell, I, H, dtype, sizes=sizes)
    rng = np.random.default_rng(3)
    params = kern.init_params(seed=2)
    flat = np.ascontiguousarray(exp.flat_params(params), dtype)
    x = rng.standard_normal((T, 1, s.I)).astype(dtype)
    state0 = None if from_zeros else (0.5 * rng.standard_normal(s.S)).astype(dtype)
    y_all, s_all = s.infer(flat, x, None if state0 is None else state0[None])
    y_st, s_st = s.stream(flat, x, state0, in_place)
    # the same products row by row, the same loops: the same numbers
    np.testing.assert_array_equal(y_st, y_all[:, 0])
    np.testing.assert_array_equal(s_st, s_all[0])
    # at batch 1 inference may run a step at a time; two rows take the chunked path
    # (the input's products hoisted over a chunk's rows): each row the same numbers still
    y_two, s_two = s.infer(flat, np.concatenate([x, x], axis=1),
                           None if state0 is None else np.stack([state0, state0]))
    for b in range(2):
        np.testing.assert_array_equal(y_st, y_two[:, b])
        np.testing.assert_array_equal(s_st, s_two[b])
    y_py, _ = kern.infer(params, x, None if state0 is None else
                         {k: v[None] for k, v in _split(kern, state0).items()})
    np.testing.assert_allclose(y_st, y_py[:, 0], rtol=1e-5 if dtype == "float32" else 1e-12,
                               atol=1e-6 if dtype == "float32" else 1e-14)


def _exported(streams, name, seed):
    """(the exported kernel's functions, dtype, its flat parameters drawn from seed)."""
    table, dtype = streams
    s, exp = table[name]
    cell, sizes = CELLS[name]
    kern = rc.compile(cell, I, H, dtype, sizes=sizes)
    return s, dtype, np.ascontiguousarray(exp.flat_params(kern.init_params(seed=seed)), dtype)


def _split(kern, row):
    out, off = {}, 0
    for name, size in kern.state_sizes.items():
        out[name] = row[off:off + size]
        off += size
    return out


def test_step_refuses_null_pointers(streams):
    table, dtype = streams
    s, exp = table["lstm"]
    params = np.zeros(s.n, s.dtype)
    work = np.zeros(s.fn["step_workspace_size"](), s.dtype)
    x, y, st = np.zeros(s.I, s.dtype), np.zeros(s.O, s.dtype), np.zeros(s.S, s.dtype)
    p = s.p
    assert s.fn["pack"](None, p(work)) == 2 and s.fn["pack"](p(params), None) == 2
    assert s.fn["pack"](p(params), p(work)) == 0
    for k in (0, 1, 3, 4, 5):
        args = [p(params), p(x), p(st), p(y), p(st), p(work)]
        args[k] = None
        assert s.fn["step"](*args) == 2
        assert s.fn["steps"](1, *args) == 2
    y[:] = 7
    for T in (0, -1):
        assert s.fn["steps"](T, p(params), p(x), p(st), p(y), p(st), p(work)) == 1
    assert (y == 7).all()


def test_the_header_documents_the_streaming_entry_points(streams):
    table, _ = streams
    _, exp = table["lstm"]
    header = open(exp.header).read()
    for decl in ("size_t s_lstm_step_workspace_size(void);",
                 "int s_lstm_pack(const", "int s_lstm_step(const", "int s_lstm_steps(int T, const"):
        assert decl in header
    assert "real-time safe" in header


@pytest.mark.parametrize("name", sorted(CELLS))
def test_a_step_reads_the_state_row_it_is_given(streams, name):
    """NAME_step may read a state from the workspace's slot that the last step wrote when
    the row passed in holds its bits; any other row (the state before the last step, which
    the other slot holds, a changed one, zeros) gives what a fresh workspace gives."""
    s, dtype, flat = _exported(streams, name, seed=4)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((6, s.I)).astype(dtype)

    def step(work, x_t, state):
        y, out = np.zeros(s.O, dtype), np.zeros(s.S, dtype)
        assert s.fn["step"](s.p(flat), s.p(x_t), s.p(state), s.p(y), s.p(out), s.p(work)) == 0
        return y, out

    work, rows = s.packed(flat), [(0.5 * rng.standard_normal(s.S)).astype(dtype)]
    for t in range(4):
        rows.append(step(work, x[t], rows[-1])[1])
    for given in (rows[-2], rows[-1], rows[0], rows[-1] + 0.25, -rows[-1], None):
        got = step(work, x[4], given)
        want = step(s.packed(flat), x[4], given)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])
        if given is not None:
            rows.append(got[1])


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("from_zeros", [False, True])
def test_blocks_of_samples_are_the_samples_one_by_one(streams, name, from_zeros):
    """NAME_steps over blocks of 1, 4 and 6 samples (in place, then not) gives the bits
    of NAME_step sample by sample, and NAME_step after it goes on from the state it
    left."""
    s, dtype, flat = _exported(streams, name, seed=6)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((12, 1, s.I)).astype(dtype)
    state0 = None if from_zeros else (0.5 * rng.standard_normal(s.S)).astype(dtype)
    y_one, s_one = s.stream(flat, x, state0, in_place=False)
    work = s.packed(flat)
    state, ys = state0, []
    for t0, t1, in_place in ((0, 1, False), (1, 5, True), (5, 11, False)):
        y = np.full((t1 - t0, s.O), np.nan, dtype)
        out = state if (in_place and state is not None) else np.full(s.S, np.nan, dtype)
        xs = np.ascontiguousarray(x[t0:t1, 0])
        assert s.fn["steps"](t1 - t0, s.p(flat), s.p(xs), s.p(state), s.p(y), s.p(out),
                             s.p(work)) == 0
        ys.append(y)
        state = out
    y_last, s_last = np.zeros(s.O, dtype), np.zeros(s.S, dtype)
    assert s.fn["step"](s.p(flat), s.p(np.ascontiguousarray(x[11, 0])), s.p(state),
                        s.p(y_last), s.p(s_last), s.p(work)) == 0
    np.testing.assert_array_equal(np.concatenate(ys + [y_last[None]]), y_one)
    np.testing.assert_array_equal(s_last, s_one)


@pytest.mark.slow
def test_blocks_of_samples_where_weights_outgrow_l1(tmp_path):
    """A kernel whose weights outgrow L1 (no step at a time: NAME_steps runs forward's
    loop a sample at a time, the state through state_out): blocks, their state passed
    apart from the one they write, give the bits of NAME_step sample by sample."""
    exp = rc.export_c(rc.cells.lstm, str(tmp_path), 4, 48, "float64", name="big")
    assert "steps_b1" not in open(exp.source).read()
    s = Stream(build_shared(str(tmp_path), [exp.source]), "big", "float64")
    kern = rc.compile(rc.cells.lstm, 4, 48, "float64")
    flat = np.ascontiguousarray(exp.flat_params(kern.init_params(seed=8)))
    rng = np.random.default_rng(9)
    x = rng.standard_normal((9, 1, 4))
    state0 = 0.5 * rng.standard_normal(s.S)
    y_one, s_one = s.stream(flat, x, state0, in_place=False)
    work = s.packed(flat)
    state, ys = state0.copy(), []
    for t0, t1 in ((0, 4), (4, 9)):
        y, out = np.full((t1 - t0, s.O), np.nan), np.full(s.S, np.nan)
        assert s.fn["steps"](t1 - t0, s.p(flat), s.p(np.ascontiguousarray(x[t0:t1, 0])),
                             s.p(state), s.p(y), s.p(out), s.p(work)) == 0
        ys.append(y)
        state = out
    np.testing.assert_array_equal(np.concatenate(ys), y_one)
    np.testing.assert_array_equal(state, s_one)
