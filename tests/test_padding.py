"""What the padding holds does not matter: NaN, +inf or -inf in x past a row's length, and
NaN in the state0 of a row of length 0, give the outputs, final states and gradients of
zero padding (float64 to 1e-12), all finite; dx there is exactly 0 and a length-0 row's
dstate0 is its d_states. In the JIT kernels (one chunk, several chunks, checkpointed),
the exported C (plain loops and CBLAS), models.RNN and SequenceModel, rc.torch.RNN with
lengths and PackedSequence, and check_finite; the gradients still match central finite
differences and the numpy reference on the valid part."""
import numpy as np
import pytest

import rnncompiler as rc
from rnncompiler import models as rm
from cells import gru, lstm, two_sizes
from test_export import STRICT, CKernel, build_shared

I, H, T, B = 3, 4, 6, 4
LENGTHS = np.array([6, 3, 0, 1])
CELLS = {"lstm": (lstm, None), "gru": (gru, None), "two_sizes": (two_sizes, {"P": 3, "O": 2})}
POLLUTIONS = ("x=nan", "x=+inf", "x=-inf", "state0=nan")
FILL = {"x=nan": np.nan, "x=+inf": np.inf, "x=-inf": -np.inf}
TOL = {"float64": 1e-12, "float32": 1e-6}


def padded(lengths, T):
    """(T, B) True where step t of row b lies past its length."""
    return np.arange(T)[:, None] >= np.asarray(lengths)[None, :]


def pollute(x, state0, lengths, how):
    """Copies of x (T, B, ...) and state0 (state -> (B, n)) with their padding filled:
    x past each length for "x=...", the state0 rows of length 0 for "state0=nan"."""
    x, state0 = x.copy(), {s: v.copy() for s, v in state0.items()}
    if how in FILL:
        x[padded(lengths, x.shape[0])] = FILL[how]
    else:
        for v in state0.values():
            v[np.asarray(lengths) == 0] = np.nan
    return x, state0


def draw(kern, lengths, T=T, seed=0):
    """params, x with zero padding, state0 with zero rows of length 0, dy, d_states."""
    rng = np.random.default_rng(seed)
    Bn = len(lengths)
    x = rng.standard_normal((T, Bn, kern.input_size)).astype(kern.dtype)
    x[padded(lengths, T)] = 0
    state0 = {s: (0.5 * rng.standard_normal((Bn, n))).astype(kern.dtype)
              for s, n in kern.state_sizes.items()}
    for v in state0.values():
        v[np.asarray(lengths) == 0] = 0
    dy = rng.standard_normal((T, Bn, kern.output_size)).astype(kern.dtype)
    ds = {s: rng.standard_normal((Bn, n)).astype(kern.dtype) for s, n in kern.state_sizes.items()}
    return kern.init_params(seed=seed), x, state0, dy, ds


def assert_close(got, want, tol, what):
    """All of got finite and within tol of want, relative to max(1, |want|)."""
    got, want = np.asarray(got), np.asarray(want)
    assert np.isfinite(got).all(), "%s: not finite where the padding is not" % what
    err = float(np.max(np.abs(got - want), initial=0)) / max(1.0, float(np.max(np.abs(want), initial=0)))
    assert err <= tol, "%s: differs from zero padding by %.3g" % (what, err)


def run(kern, params, x, state0, lengths, dy, ds):
    res = kern.forward(params, x, state0, lengths)
    return res, kern.backward(res, dy, ds)


def assert_padding_ignored(kern, lengths, how, T=T, tol=None):
    """A kernel's results with polluted padding equal those with zero padding."""
    tol = TOL[kern.dtype.name] if tol is None else tol
    params, x, state0, dy, ds = draw(kern, lengths, T)
    want_res, want = run(kern, params, x, state0, lengths, dy, ds)
    got_res, got = run(kern, params, *pollute(x, state0, lengths, how), lengths, dy, ds)
    pad, empty = padded(lengths, T), np.asarray(lengths) == 0
    assert np.all(got_res.outputs[pad] == 0) and np.all(got.x[pad] == 0)
    assert_close(got_res.outputs, want_res.outputs, tol, "outputs")
    assert_close(got.x, want.x, tol, "dx")
    for name, v in got.params.items():
        assert_close(v, want.params[name], tol, "d" + name)
    for s in kern.state_sizes:
        # a row of length 0 passes its state0 through, and dstate0 back
        assert np.array_equal(got.state0[s][empty], ds[s][empty])
        passed = got_res.states[s][empty]
        assert np.all(np.isnan(passed)) if how == "state0=nan" else np.isfinite(passed).all()
        assert_close(got_res.states[s][~empty], want_res.states[s][~empty], tol, "state " + s)
        assert_close(got.state0[s], want.state0[s], tol, "dstate0 " + s)


# ---------------------------------------------------------------- JIT kernels

@pytest.mark.parametrize("how", POLLUTIONS)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", sorted(CELLS))
def test_kernel_ignores_the_padding(name, dtype, how):
    cell, sizes = CELLS[name]
    assert_padding_ignored(rc.compile(cell, I, H, dtype, sizes=sizes), LENGTHS, how)


@pytest.mark.parametrize("checkpoint", [None, 16])
@pytest.mark.parametrize("how", ["x=nan", "state0=nan"])
def test_kernel_ignores_the_padding_over_several_chunks(how, checkpoint):
    """T = 70: two chunks of steps, the first without padding when no row is empty (the
    operands are read in place there), and with checkpoints, segments of 16 steps."""
    kern = rc.compile(lstm, I, H, "float64", checkpoint=checkpoint)
    lengths = np.array([70, 66, 9, 0]) if how == "state0=nan" else np.array([70, 66, 9, 7])
    assert_padding_ignored(kern, lengths, how, T=70)


def test_polluted_gradients_match_the_reference_and_finite_differences():
    """float64, every pollution at once: equal to rc.reference on the zero-padded input,
    and central differences of a loss through the polluted input agree."""
    for name, (cell, sizes) in CELLS.items():
        kern = rc.compile(cell, I, H, "float64", sizes=sizes)
        params, x, state0, dy, ds = draw(kern, LENGTHS, seed=3)
        ref = rc.reference(cell, I, H, sizes)
        want = ref.backward(ref.forward(params, x, state0, LENGTHS), dy, ds)
        bad_x, _ = pollute(x, state0, LENGTHS, "x=nan")
        _, bad_s0 = pollute(x, state0, LENGTHS, "state0=nan")
        _, got = run(kern, params, bad_x, bad_s0, LENGTHS, dy, ds)
        for p, v in got.params.items():
            assert_close(v, want.params[p], 1e-9, "%s d%s vs reference" % (name, p))
        assert_close(got.x, want.x, 1e-9, name + " dx vs reference")

        def loss():
            res = kern.forward(params, bad_x, bad_s0, LENGTHS)
            keep = LENGTHS > 0           # a row of length 0 returns its (NaN) state0
            return float(np.sum(res.outputs * dy) +
                         sum(np.sum((res.states[s] * ds[s])[keep]) for s in ds))
        for p, v in params.items():
            for k in range(0, v.size, max(1, v.size // 3)):
                flat, old = v.reshape(-1), v.reshape(-1)[k]
                flat[k] = old + 1e-6
                up = loss()
                flat[k] = old - 1e-6
                down = loss()
                flat[k] = old
                fd = (up - down) / 2e-6
                assert abs(fd - got.params[p].reshape(-1)[k]) <= 1e-6 * max(1.0, abs(fd)), \
                    "%s d%s[%d]: finite differences %g" % (name, p, k, fd)


def test_check_finite_looks_only_at_the_valid_steps():
    kern = rc.compile(lstm, I, H, "float64")
    params, x, state0, dy, ds = draw(kern, LENGTHS)
    bad_x, _ = pollute(x, state0, LENGTHS, "x=nan")
    bad_dy, _ = pollute(dy, state0, LENGTHS, "x=+inf")
    res = kern.forward(params, bad_x, state0, LENGTHS, check_finite=True)
    g = kern.backward(res, bad_dy, ds, check_finite=True)
    assert np.isfinite(g.x).all()
    bad_x[0, 0, 0] = np.nan             # a valid step is still checked
    with pytest.raises(rc.NonFiniteError, match="x is not finite"):
        kern.forward(params, bad_x, state0, LENGTHS, check_finite=True)


# ---------------------------------------------------------------- exported C

@pytest.mark.parametrize("blas", [False, pytest.param("cblas", marks=pytest.mark.slow)])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_exported_c_ignores_the_padding(dtype, blas, tmp_path):
    flags, extra = STRICT, []
    if blas:
        openblas = pytest.importorskip("scipy_openblas32")
        flags = STRICT + ["-I" + openblas.get_include_dir(), "-Dcblas_sgemm=scipy_cblas_sgemm",
                          "-Dcblas_dgemm=scipy_cblas_dgemm"]
        extra = ["-L" + openblas.get_lib_dir(), "-l" + openblas.get_library(),
                 "-Wl,-rpath," + openblas.get_lib_dir()]
    exports = {name: rc.export_c(cell, str(tmp_path), I, H, dtype, name="pad_" + name,
                                 sizes=sizes, blas=blas)
               for name, (cell, sizes) in CELLS.items()}
    lib = build_shared(str(tmp_path), [e.source for e in exports.values()], flags, extra)
    for name, exp in exports.items():
        cell, sizes = CELLS[name]
        ck = CKernel(lib, exp.name, dtype)
        kern = rc.compile(cell, I, H, dtype, sizes=sizes)
        for how in POLLUTIONS:
            assert_export_ignores_padding(ck, exp, kern, how, TOL[dtype])


def c_run(ck, exp, kern, params, x, state0, dy, ds):
    """Forward and backward of an exported kernel: {block: array}."""
    rows = lambda d: np.ascontiguousarray(np.concatenate([d[s] for s in kern.state_sizes], 1))
    flat, lengths = exp.flat_params(params), LENGTHS.astype(np.intc)
    y, state_T, work = ck.buffers(T, B)
    assert ck.forward(T, B, flat, x, lengths, rows(state0), y, state_T, work) == 0
    dparams = np.empty(ck.n, ck.dtype)
    dx, dstate0 = np.empty_like(x), np.empty((B, ck.S), ck.dtype)
    assert ck.backward(T, B, flat, x, lengths, rows(state0), work, dy, rows(ds),
                       dparams, dx, dstate0) == 0
    out = {"y": y, "dx": dx, "dstate0": dstate0, "state_T": state_T[LENGTHS > 0]}
    out.update(("d" + k, v) for k, v in exp.split_params(dparams).items())
    return out


def assert_export_ignores_padding(ck, exp, kern, how, tol):
    params, x, state0, dy, ds = draw(kern, LENGTHS)
    want = c_run(ck, exp, kern, params, x, state0, dy, ds)
    got = c_run(ck, exp, kern, params, *pollute(x, state0, LENGTHS, how), dy, ds)
    pad = padded(LENGTHS, T)
    assert np.all(got["y"][pad] == 0) and np.all(got["dx"][pad] == 0)
    for block, v in got.items():
        assert_close(v, want[block], tol, "%s %s (%s)" % (exp.name, block, how))


# ---------------------------------------------------------------- models

def rnn_state0(rnn, state0):
    """A state0 tree giving every layer and direction the same rows (the layers of this
    stack have the same state sizes)."""
    return {"layer%d" % l: {d: state0 for d in rnn.directions} for l in range(rnn.num_layers)}


@pytest.mark.parametrize("how", POLLUTIONS)
def test_stacked_bidirectional_rnn_ignores_the_padding(how):
    """Two layers, both directions: the backward direction reads each row reversed within
    its length, so its padding stays padding, and layer 1 reads layer 0's zero outputs."""
    rnn = rm.RNN(lstm, I, H, num_layers=2, bidirectional=True, dtype="float64")
    params = rnn.init(seed=1)
    kern = rnn.kernels[0]
    _, x, state0, _, _ = draw(kern, LENGTHS)
    rng = np.random.default_rng(5)
    dy = rng.standard_normal((T, B, rnn.output_size))
    bad_x, bad_s0 = pollute(x, state0, LENGTHS, how)
    want_res = rnn.forward(params, x, LENGTHS, rnn_state0(rnn, state0))
    want = rnn.backward(want_res, dy)
    got_res = rnn.forward(params, bad_x, LENGTHS, rnn_state0(rnn, bad_s0))
    got = rnn.backward(got_res, dy)
    assert np.all(got_res.outputs[padded(LENGTHS, T)] == 0)
    assert_close(got_res.outputs, want_res.outputs, 1e-12, "outputs")
    assert_close(got.x, want.x, 1e-12, "dx")
    assert np.all(got.x[padded(LENGTHS, T)] == 0)
    for layer, dirs in got.params.items():
        for d, p in dirs.items():
            for k, v in p["cell"].items():
                assert_close(v, want.params[layer][d]["cell"][k], 1e-12, "%s %s d%s" % (layer, d, k))


def test_sequence_model_loss_ignores_padded_inputs_and_targets():
    """Per-step regression: NaN in the padding of x and of the targets changes neither the
    loss nor any gradient (the loss is masked by the lengths; the head sees zeros)."""
    model = rm.SequenceModel(gru, H, input_size=I, output_size=2, readout="steps", loss="mse",
                             num_layers=2, bidirectional=True, dtype="float64")
    params = model.init(seed=2)
    lengths = np.array([6, 3, 2, 1])
    rng = np.random.default_rng(4)
    x = rng.standard_normal((T, B, I))
    targets = rng.standard_normal((T, B, 2))
    x[padded(lengths, T)] = 0
    targets[padded(lengths, T)] = 0
    want_loss, want = model.loss_and_grads(params, x, targets, lengths)
    x[padded(lengths, T)] = np.nan
    targets[padded(lengths, T)] = np.inf
    got_loss, got = model.loss_and_grads(params, x, targets, lengths)
    assert np.isfinite(got_loss) and abs(got_loss - want_loss) <= 1e-12 * max(1.0, abs(want_loss))
    assert_close(got["head"]["W"], want["head"]["W"], 1e-12, "dW head")
    for layer, dirs in got["rnn"].items():
        for d, p in dirs.items():
            for k, v in p["cell"].items():
                assert_close(v, want["rnn"][layer][d]["cell"][k], 1e-12,
                             "%s %s d%s" % (layer, d, k))


def test_mse_drops_masked_entries_that_are_not_finite():
    pred, targets = np.ones((3, 2)), np.array([[0.0, 0.0], [np.nan, np.inf], [2.0, 2.0]])
    value, grad = rm.mse(pred, targets, mask=np.array([1.0, 0.0, 1.0]))
    assert value == 1.0 and np.array_equal(grad, [[0.5, 0.5], [0, 0], [-0.5, -0.5]])


# ---------------------------------------------------------------- torch adapter

def torch_grads(module, x, lengths=None, hx=None, packed=False):
    """(output in time order, gradients of sum(output * w) for params and x, by name)."""
    torch = pytest.importorskip("torch")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
    x = x.clone().requires_grad_(True)
    module.zero_grad()
    if packed:
        seq = pack_padded_sequence(x, torch.as_tensor(lengths), enforce_sorted=False)
        out, _ = pad_packed_sequence(module(seq)[0], total_length=x.shape[0])
    else:
        out, _ = module(x, hx, lengths=lengths)
    w = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).reshape(out.shape)
    (out * w).sum().backward()
    grads = {n: p.grad.detach().numpy().copy() for n, p in module.named_parameters()}
    return out.detach().numpy(), dict(grads, x=x.grad.numpy().copy())


@pytest.mark.parametrize("how", POLLUTIONS)
def test_torch_rnn_ignores_the_padding(how):
    torch = pytest.importorskip("torch")
    module = rc.torch.RNN(gru, I, H, num_layers=2, bidirectional=True, dtype=torch.float64)
    kern = rc.compile(gru, I, H, "float64")
    _, x, state0, _, _ = draw(kern, LENGTHS)
    bad_x, bad_s0 = pollute(x, state0, LENGTHS, how)
    hx = lambda s0: torch.from_numpy(np.stack([s0["h"]] * 4))   # layers x directions
    want_out, want = torch_grads(module, torch.from_numpy(x), LENGTHS, hx(state0))
    got_out, got = torch_grads(module, torch.from_numpy(bad_x), LENGTHS, hx(bad_s0))
    assert np.all(got_out[padded(LENGTHS, T)] == 0)
    assert_close(got_out, want_out, 1e-12, "output")
    for name, v in got.items():
        assert_close(v, want[name], 1e-12, "d" + name)
    assert np.all(got["x"][padded(LENGTHS, T)] == 0)


def test_torch_rnn_with_lengths_equals_packed_sequence_whatever_the_padding():
    """A PackedSequence is padded with zeros inside; a padded tensor with lengths, holding
    NaN and inf in its padding, gives the same outputs and gradients."""
    torch = pytest.importorskip("torch")
    module = rc.torch.RNN(lstm, I, H, num_layers=2, bidirectional=True, dtype=torch.float64)
    lengths = np.array([6, 3, 5, 1])
    x = np.random.default_rng(6).standard_normal((T, B, I))
    want_out, want = torch_grads(module, torch.from_numpy(x), lengths, packed=True)
    x[padded(lengths, T)] = np.nan
    x[-1, -1] = -np.inf
    got_out, got = torch_grads(module, torch.from_numpy(x), lengths)
    assert_close(got_out, want_out, 1e-12, "output")
    for name, v in got.items():
        assert_close(v, want[name], 1e-12, "d" + name)
