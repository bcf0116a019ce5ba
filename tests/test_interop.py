"""rc.from_torch / rc.to_torch against the torch built-ins: after from_torch the kernel's
outputs, final states and every gradient equal the module's (float64 < 1e-9, float32
< 1e-4, with packed sequences for lengths), and the weight exchange round-trips exactly
in both directions."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import rnncompiler as rc  # noqa: E402
from rnncompiler import interop  # noqa: E402

I, H, P = 3, 4, 2
T, B = 6, 4
TOL = {torch.float64: 1e-9, torch.float32: 1e-4}

# torch tensor -> the cell parameters stacked in its rows, written out here from torch's
# documentation (gate orders i, f, g, o and r, z, n), independently of rc.cells.TORCH_WEIGHTS
RNN_MAP = {"weight_ih": ["W_ih"], "weight_hh": ["W_hh"], "bias_ih": ["b_ih"], "bias_hh": ["b_hh"]}
LSTM_MAP = {"weight_ih": ["W_ii", "W_if", "W_ig", "W_io"],
            "weight_hh": ["W_hi", "W_hf", "W_hg", "W_ho"],
            "bias_ih": ["b_ii", "b_if", "b_ig", "b_io"],
            "bias_hh": ["b_hi", "b_hf", "b_hg", "b_ho"],
            "weight_hr": ["W_hr"]}
GRU_MAP = {"weight_ih": ["W_ir", "W_iz", "W_in"], "weight_hh": ["W_hr", "W_hz", "W_hn"],
           "bias_ih": ["b_ir", "b_iz", "b_in"], "bias_hh": ["b_hr", "b_hz", "b_hn"]}

MODULES = {   # name -> (constructor, mapping, expected cell)
    "rnn_tanh": (lambda: nn.RNN(I, H), RNN_MAP, "rnn_tanh_torch"),
    "rnn_relu": (lambda: nn.RNN(I, H, nonlinearity="relu"), RNN_MAP, "rnn_relu_torch"),
    "lstm": (lambda: nn.LSTM(I, H), LSTM_MAP, "lstm_torch"),
    "lstm_proj": (lambda: nn.LSTM(I, H, proj_size=P), LSTM_MAP, "lstm_proj_torch"),
    "gru": (lambda: nn.GRU(I, H), GRU_MAP, "gru_torch"),
    "lstm_nobias": (lambda: nn.LSTM(I, H, bias=False), LSTM_MAP, "lstm_torch"),
    "gru_batch_first": (lambda: nn.GRU(I, H, batch_first=True), GRU_MAP, "gru_torch"),
}
CELL_MODULES = {
    "rnn_cell": (lambda: nn.RNNCell(I, H, nonlinearity="relu"), RNN_MAP, "rnn_relu_torch"),
    "lstm_cell": (lambda: nn.LSTMCell(I, H), LSTM_MAP, "lstm_torch"),
    "gru_cell": (lambda: nn.GRUCell(I, H, bias=False), GRU_MAP, "gru_torch"),
}


@pytest.fixture(autouse=True)
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make(name, dtype=torch.float64, seed=0):
    ctor, _, _ = {**MODULES, **CELL_MODULES}[name]
    torch.manual_seed(seed)
    return ctor().to(dtype)


def split(module, mapping, grad=False):
    """The module's tensors (or their .grad) split by the test's own table."""
    out = {}
    for tname, tensor in module.named_parameters():
        names = mapping[tname.removesuffix("_l0")]
        rows = (tensor.grad if grad else tensor).detach().numpy()
        out.update(zip(names, np.split(rows, len(names))))
    return out


def rel_err(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.max(np.abs(got - ref)) / max(1.0, np.max(np.abs(ref))))


def run_torch(module, x, state0, lengths, u_y, u_s):
    """Outputs, final states and all gradients of the loss, from the module itself."""
    module.zero_grad()
    batch_first = getattr(module, "batch_first", False)
    xt = torch.tensor(x, requires_grad=True)
    s0 = {k: torch.tensor(v[None], requires_grad=True) for k, v in state0.items()}
    hx = s0["h"] if len(s0) == 1 else (s0["h"], s0["c"])
    inp = xt.transpose(0, 1) if batch_first else xt
    if lengths is None:
        y, hn = module(inp, hx)
    else:
        packed = nn.utils.rnn.pack_padded_sequence(inp, torch.as_tensor(lengths),
                                                   batch_first=batch_first, enforce_sorted=False)
        out, hn = module(packed, hx)
        y, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=batch_first, total_length=T)
    y = y.transpose(0, 1) if batch_first else y
    sT = {"h": hn} if len(s0) == 1 else {"h": hn[0], "c": hn[1]}
    loss = (y * torch.as_tensor(u_y)).sum() + sum((sT[k][0] * torch.as_tensor(u_s[k])).sum()
                                                  for k in sT)
    loss.backward()
    return (y.detach().numpy(), {k: v[0].detach().numpy() for k, v in sT.items()}, xt.grad.numpy(),
            {k: v.grad[0].numpy() for k, v in s0.items()})


def compare(name, dtype):
    """The module against its kernel, with and without lengths; the largest errors."""
    module = make(name, dtype, seed=1)
    _, mapping, cell_name = MODULES[name]
    kern, params = rc.from_torch(module)
    assert kern.name == cell_name and kern.dtype == np.dtype(str(dtype).split(".")[1])
    expected = split(module, mapping)
    assert list(params) == list(kern.param_shapes) and set(params) == set(expected)
    for k in params:        # from_torch read exactly the rows the table says
        np.testing.assert_array_equal(params[k], expected[k])
    rng = np.random.default_rng(2)
    npdt = kern.dtype
    x = rng.standard_normal((T, B, I)).astype(npdt)
    state0 = {s: (0.5 * rng.standard_normal((B, n))).astype(npdt)
              for s, n in kern.state_sizes.items()}
    u_y = rng.standard_normal((T, B, kern.output_size)).astype(npdt)
    u_s = {s: rng.standard_normal((B, n)).astype(npdt) for s, n in kern.state_sizes.items()}
    worst = {}
    for lengths in (None, [T, 1, 3, T - 1]):    # torch packs lengths >= 1 only
        res = kern.forward(params, x, state0, lengths)
        g = kern.backward(res, d_outputs=u_y, d_states=u_s)
        y, sT, dx, ds0 = run_torch(module, x, state0, lengths, u_y, u_s)
        errs = {"outputs": rel_err(res.outputs, y), "x": rel_err(g.x, dx)}
        errs.update({"state " + k: rel_err(res.states[k], sT[k]) for k in sT})
        errs.update({"state0 " + k: rel_err(g.state0[k], ds0[k]) for k in ds0})
        grads = split(module, mapping, grad=True)
        errs.update({"d " + k: rel_err(g.params[k], grads[k]) for k in grads})
        assert set(g.params) == set(grads)
        for k, e in errs.items():
            worst[k] = max(worst.get(k, 0.0), e)
    return worst


@pytest.mark.parametrize("name", sorted(MODULES))
def test_float64_module_equals_kernel(name):
    """Outputs, h_n (c_n), and the gradients of every weight, x and h0 (c0): < 1e-9."""
    worst = compare(name, torch.float64)
    bad = {k: e for k, e in worst.items() if not e < TOL[torch.float64]}
    assert not bad, "%s: %s" % (name, bad)


@pytest.mark.parametrize("name", ["lstm", "lstm_proj", "gru", "rnn_relu"])
def test_float32_module_equals_kernel(name):
    """The float32 kernel against the float32 module: < 1e-4."""
    worst = compare(name, torch.float32)
    bad = {k: e for k, e in worst.items() if not e < TOL[torch.float32]}
    assert not bad, "%s float32: %s" % (name, bad)


def test_cell_module_step_equals_kernel():
    """An nn.GRUCell (no biases) step is the kernel's one-step forward."""
    module = make("gru_cell", seed=3)
    kern, params = rc.from_torch(module)
    x = torch.randn(B, I, dtype=torch.float64)
    h0 = torch.randn(B, H, dtype=torch.float64)
    y, states = kern.step(params, x.numpy(), interop.state_from_torch(module, h0))
    np.testing.assert_allclose(y, module(x, h0).detach().numpy(), rtol=0, atol=1e-12)
    assert torch.equal(interop.state_to_torch(module, states), torch.from_numpy(states["h"]))


@pytest.mark.parametrize("name", sorted(MODULES) + sorted(CELL_MODULES))
def test_weights_round_trip_bit_for_bit(name):
    """to_torch(params_from_torch(m), m2) makes m2's tensors m's, bit for bit; and
    params_from_torch(to_torch(params, m)) gives params back, for float32 and float64."""
    for dtype in (torch.float32, torch.float64):
        src, dst = make(name, dtype, seed=4), make(name, dtype, seed=5)
        params = interop.params_from_torch(src)
        assert rc.to_torch(params, dst) is dst
        for (n1, t1), (n2, t2) in zip(src.named_parameters(), dst.named_parameters()):
            assert n1 == n2 and torch.equal(t1, t2), n1
        rng = np.random.default_rng(6)
        new = {k: rng.standard_normal(v.shape).astype(v.dtype) for k, v in params.items()}
        back = interop.params_from_torch(rc.to_torch(new, dst))
        assert list(back) == list(new)
        for k in new:
            assert back[k].dtype == new[k].dtype and np.array_equal(back[k], new[k]), k


def test_from_torch_round_trip_through_the_kernel_params():
    """The kernel's own params dict (from_torch) also round-trips exactly."""
    src, dst = make("lstm_proj", torch.float32, seed=7), make("lstm_proj", torch.float32, seed=8)
    _, params = rc.from_torch(src)
    rc.to_torch(params, dst)
    assert all(torch.equal(a, b) for a, b in zip(src.parameters(), dst.parameters()))


def test_to_torch_writes_in_place_and_keeps_autograd():
    """The module's Parameter objects are kept (an optimiser holding them sees the new
    values); they still require grad; grad=True writes .grad instead."""
    module = make("gru", seed=9)
    before = {n: t for n, t in module.named_parameters()}
    params = {k: np.full_like(v, 0.25) for k, v in interop.params_from_torch(module).items()}
    rc.to_torch(params, module)
    for n, t in module.named_parameters():
        assert t is before[n] and t.requires_grad and bool((t == 0.25).all())
    grads = {k: np.full_like(v, -1.5) for k, v in params.items()}
    rc.to_torch(grads, module, grad=True)
    for t in module.parameters():
        assert bool((t.grad == -1.5).all()) and bool((t == 0.25).all())
    back = interop.params_from_torch(module, grad=True)
    assert all((v == -1.5).all() for v in back.values())


def test_dtype_override_and_inference():
    """dtype= converts (float32 -> float64 exactly); a half module needs dtype=."""
    module = make("lstm", torch.float32, seed=10)
    kern, params = rc.from_torch(module, dtype="float64")
    assert kern.dtype == np.float64 and all(v.dtype == np.float64 for v in params.values())
    ref = split(module, LSTM_MAP)
    assert all(np.array_equal(params[k], ref[k].astype(np.float64)) for k in ref)
    with pytest.raises(ValueError, match="dtype="):
        rc.from_torch(make("lstm", torch.float16))
    kern16, params16 = rc.from_torch(make("lstm", torch.float16), dtype="float32")
    assert kern16.dtype == np.float32 and params16["W_ii"].dtype == np.float32


@pytest.mark.parametrize("module, exc, match", [
    (lambda: nn.LSTM(I, H, num_layers=2), ValueError, "num_layers: expected 1, got 2"),
    (lambda: nn.GRU(I, H, bidirectional=True), ValueError, "bidirectional"),
    (lambda: nn.Linear(I, H), TypeError, "expected torch.nn.RNN.*got Linear"),
    (lambda: "lstm", TypeError, "module: expected"),
])
def test_unsupported_modules_are_refused(module, exc, match):
    with pytest.raises(exc, match=match):
        rc.from_torch(module())
    with pytest.raises(exc, match=match):
        rc.to_torch({}, module())


def test_bad_params_are_named_and_nothing_is_written():
    module = make("lstm", seed=11)
    good = interop.params_from_torch(module)
    snapshot = [t.detach().clone() for t in module.parameters()]
    cases = [
        ({k: v for k, v in good.items() if k != "b_hf"}, KeyError, r"missing \['b_hf'\]"),
        (dict(good, W_extra=np.zeros(3)), KeyError, r"unknown \['W_extra'\]"),
        (dict(good, W_hi=np.zeros((H, H + 1))), ValueError,
         r"params\['W_hi'\]: expected shape \(4, 4\) .*weight_hh_l0, shape \(16, 4\)"
         r".*got \(4, 5\)"),
        (dict(good, b_ii=np.zeros(H, complex)), TypeError, r"params\['b_ii'\]: expected a real"),
        ([("W_ii", good["W_ii"])], TypeError, "params: expected a dict"),
    ]
    for params, exc, match in cases:
        with pytest.raises(exc, match=match):
            rc.to_torch(params, module)
    assert all(torch.equal(a, b) for a, b in zip(snapshot, module.parameters()))
    with pytest.raises(ValueError, match=r"module.weight_ih_l0.grad is None"):
        interop.params_from_torch(module, grad=True)


def test_state_helpers_match_torch_layout():
    """state_from_torch strips the layer axis; state_to_torch puts it back, in the module's
    dtype; an LSTM takes (h0, c0)."""
    module = make("lstm_proj", torch.float32, seed=12)
    h0, c0 = torch.randn(1, B, P), torch.randn(1, B, H)
    state0 = interop.state_from_torch(module, (h0, c0))
    assert state0["h"].shape == (B, P) and state0["c"].shape == (B, H)
    assert state0["h"].dtype == np.float32 and np.array_equal(state0["c"], c0[0].numpy())
    h, c = interop.state_to_torch(module, state0)
    assert torch.equal(h, h0) and torch.equal(c, c0)
    with pytest.raises(ValueError, match="hx: LSTM takes 2 state tensors, got 1"):
        interop.state_from_torch(module, (h0,))
    with pytest.raises(ValueError, match="leading layer axis"):
        interop.state_from_torch(module, (h0[0], c0[0]))
    with pytest.raises(KeyError, match="missing 'c'"):
        interop.state_to_torch(module, {"h": state0["h"]})
