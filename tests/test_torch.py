"""Compiled kernels against an independent oracle: the same cells written step by step in
PyTorch and differentiated by torch.autograd, plus torch.nn.GRU / torch.nn.LSTM themselves."""
import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import rnncompiler as rc  # noqa: E402

from cells import elman, lstm, gru, peephole_lstm, gated_bump, two_sizes  # noqa: E402

I, H = 3, 4
TOL = {"float64": 1e-9, "float32": 1e-4}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors: torch's intra-op threads only add contention (seconds on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- the cells of tests/cells.py, written again in torch ------------------------------------
# Each step takes (params, x_t (B, I), states {name: (B, n)}) and returns (new_states, y_t).

def lin(W, v, b=None):
    """W v (+ b) applied to every row of v."""
    out = v @ W.T
    return out if b is None else out + b


def torch_elman(p, x, s):
    """h' = tanh(W [h; x] + b)."""
    h = torch.tanh(lin(p["W"], torch.cat([s["h"], x], 1), p["b"]))
    return {"h": h}, h


def torch_lstm(p, x, s):
    """The concatenated-input LSTM without peepholes."""
    z = torch.cat([s["h"], x], 1)
    f = torch.sigmoid(lin(p["W_f"], z, p["b_f"]))
    i = torch.sigmoid(lin(p["W_i"], z, p["b_i"]))
    g = torch.tanh(lin(p["W_g"], z, p["b_g"]))
    o = torch.sigmoid(lin(p["W_o"], z, p["b_o"]))
    c = f * s["c"] + i * g
    h = o * torch.tanh(c)
    return {"h": h, "c": c}, h


def torch_gru(p, x, s):
    """The GRU with separate input and hidden weights and biases per gate."""
    h = s["h"]
    r = torch.sigmoid(lin(p["W_ir"], x, p["b_ir"]) + lin(p["W_hr"], h, p["b_hr"]))
    u = torch.sigmoid(lin(p["W_iz"], x, p["b_iz"]) + lin(p["W_hz"], h, p["b_hz"]))
    n = torch.tanh(lin(p["W_in"], x, p["b_in"]) + r * lin(p["W_hn"], h, p["b_hn"]))
    h = (1 - u) * n + u * h
    return {"h": h}, h


def torch_peephole_lstm(p, x, s):
    """The LSTM with peepholes: f and i see c_{t-1}, o sees c_t."""
    z = torch.cat([s["h"], x], 1)
    c0 = s["c"]
    f = torch.sigmoid(lin(p["W_f"], z, p["b_f"]) + p["p_f"] * c0)
    i = torch.sigmoid(lin(p["W_i"], z, p["b_i"]) + p["p_i"] * c0)
    g = torch.tanh(lin(p["W_g"], z, p["b_g"]))
    c = f * c0 + i * g
    o = torch.sigmoid(lin(p["W_o"], z, p["b_o"]) + p["p_o"] * c)
    h = o * torch.tanh(c)
    return {"h": h, "c": c}, h


def torch_gated_bump(p, x, s):
    """Gaussian-bump gate, leaky-linear leak through softsign, learnable scalar gain."""
    h = s["h"]
    a = lin(p["W_a"], torch.cat([h, x], 1), p["b_a"])
    gate = torch.sigmoid(a) * torch.exp(-a ** 2)
    l_in = lin(p["W_l"], x)
    leak = torch.where(l_in > 0, l_in, 0.1 * l_in)
    h = p["gain"] * gate + (1 - gate) * h + p["w"] * (leak / (1 + leak.abs()))
    return {"h": h}, h


def hard_sigmoid(v):
    """PyTorch's hardsigmoid, clamp(v/6 + 1/2, 0, 1), written out: F.hardsigmoid's backward
    multiplies by a float32 1/6 even in float64 (a 3e-8 relative error)."""
    return torch.clamp(v / 6 + 0.5, 0.0, 1.0)


def torch_two_sizes(p, x, s):
    """Layer-normalised gate on c (size H), relu update of h (size P), output of size O."""
    h, c = s["h"], s["c"]
    u = lin(p["W_u"], torch.cat([h, x], 1), p["b_u"])
    centred = u - u.mean(1, keepdim=True)
    norm = centred / torch.sqrt((centred * centred).mean(1, keepdim=True) + 0.01)
    c_new = hard_sigmoid(norm) * c + F.softplus(lin(p["W_c"], x))
    h_new = torch.relu(lin(p["W_h"], c_new)) + torch.clamp(h, -2.0, 2.0)
    y = torch.tanh(lin(p["W_y"], torch.cat([h_new, c_new], 1))) + c_new.sum(1, keepdim=True)
    return {"h": h_new, "c": c_new}, y


CELLS = {"elman": (elman, {}, torch_elman),
         "lstm": (lstm, {}, torch_lstm),
         "gru": (gru, {}, torch_gru),
         "peephole_lstm": (peephole_lstm, {}, torch_peephole_lstm),
         "gated_bump": (gated_bump, {}, torch_gated_bump),
         "two_sizes": (two_sizes, {"P": 3, "O": 2}, torch_two_sizes)}


def torch_unroll(step, p, x, state0, lengths):
    """Runs step over T; past lengths[b] row b keeps its state and outputs zero."""
    T, B = x.shape[:2]
    lens = torch.full((B,), T) if lengths is None else torch.as_tensor(np.asarray(lengths))
    states = dict(state0)
    ys = []
    for t in range(T):
        new, y = step(p, x[t], states)
        valid = (t < lens)[:, None]
        states = {k: torch.where(valid, new[k], v) for k, v in states.items()}
        ys.append(torch.where(valid, y, torch.zeros_like(y)))
    return torch.stack(ys), states


# --- comparing ------------------------------------------------------------------------------

def rel_err(got, ref):
    """max|got - ref| / max(1, max|ref|), in float64."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    return float(np.max(np.abs(got - ref), initial=0.0) / max(1.0, np.max(np.abs(ref), initial=0.0)))


def assert_close(got, ref, tol, what):
    """Every array of got within tol (scale-aware) of ref; returns the errors."""
    assert set(got) == set(ref), (what, sorted(got), sorted(ref))
    errs = {k: rel_err(got[k], ref[k]) for k in ref}
    bad = {k: e for k, e in errs.items() if not e < tol}
    assert not bad, f"{what}: errors above {tol:g}: {bad} (all: {errs})"
    return errs


def random_problem(kern, T, B, seed, dtype):
    """Parameters, x, a non-zero state0 and the functional's weights, rounded to dtype."""
    rng = np.random.default_rng(seed)
    r = lambda a: np.asarray(a, dtype).astype(np.float64)  # noqa: E731
    params = {k: r(v) for k, v in kern.init_params(seed=seed).items()}
    x = r(rng.standard_normal((T, B, kern.input_size)))
    state0 = {s: r(0.5 * rng.standard_normal((B, n)) + 0.1) for s, n in kern.state_sizes.items()}
    u_y = r(rng.standard_normal((T, B, kern.output_size)))
    u_s = {s: r(rng.standard_normal((B, n))) for s, n in kern.state_sizes.items()}
    return params, x, state0, u_y, u_s


def torch_reference(step, params, x, state0, lengths, u_y, u_s):
    """Outputs, final states and d(sum(y*u_y) + sum(s_T*u_s)) by torch autograd in float64."""
    tt = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)  # noqa: E731
    p = {k: tt(v) for k, v in params.items()}
    xt = tt(x)
    s0 = {k: tt(v) for k, v in state0.items()}
    y, sT = torch_unroll(step, p, xt, s0, lengths)
    loss = (y * torch.as_tensor(u_y)).sum() + sum((sT[k] * torch.as_tensor(u_s[k])).sum() for k in sT)
    leaves = list(p.values()) + [xt] + list(s0.values())
    grads = torch.autograd.grad(loss, leaves)
    n = len(p)
    return (y.detach().numpy(), {k: v.detach().numpy() for k, v in sT.items()},
            {"params": dict(zip(p, (g.numpy() for g in grads[:n]))), "x": grads[n].numpy(),
             "state0": dict(zip(s0, (g.numpy() for g in grads[n + 1:])))})


def check_against_torch(cell, sizes, step, input_size, hidden_size, dtype, T, B, lengths_list,
                        seed=0):
    """Compiles the cell, runs forward/backward and torch on the same data; returns the
    largest error over all runs, per kind."""
    kern = rc.compile(cell, input_size=input_size, hidden_size=hidden_size, dtype=dtype,
                      sizes=sizes)
    params, x, state0, u_y, u_s = random_problem(kern, T, B, seed, dtype)
    tol = TOL[dtype]
    worst = {}
    for lengths in lengths_list:
        what = f"{cell.name} {dtype} lengths={lengths}"
        res = kern.forward(params, x, state0, lengths)
        g = kern.backward(res, d_outputs=u_y, d_states=u_s)
        assert res.outputs.dtype == np.dtype(dtype) and g.x.dtype == np.dtype(dtype)
        y_ref, s_ref, g_ref = torch_reference(step, params, x, state0, lengths, u_y, u_s)
        errs = {"outputs": assert_close({"y": res.outputs}, {"y": y_ref}, tol, what)["y"],
                "states": max(assert_close(res.states, s_ref, tol, what + " states").values()),
                "d_params": max(assert_close(g.params, g_ref["params"], tol, what + " d_params").values()),
                "d_x": assert_close({"x": g.x}, {"x": g_ref["x"]}, tol, what + " d_x")["x"],
                "d_state0": max(assert_close(g.state0, g_ref["state0"], tol, what + " d_state0").values())}
        if lengths is not None:   # the contract's masking, directly
            lens = np.asarray(lengths)
            for b, n in enumerate(lens):
                assert not res.outputs[n:, b].any() and not g.x[n:, b].any(), what
                if n == 0:
                    for s in state0:
                        np.testing.assert_array_equal(res.states[s][b], np.asarray(state0[s][b], dtype))
        for k, e in errs.items():
            worst[k] = max(worst.get(k, 0.0), e)
    return worst


# --- the cells of tests/cells.py ------------------------------------------------------------

T_SMALL, B_SMALL = 6, 4
LENGTHS_SMALL = [None, [T_SMALL, 0, 2, T_SMALL - 1]]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", CELLS)
def test_kernel_matches_torch_autograd(name, dtype):
    """Outputs, final states and all gradients equal torch float64: to 1e-9 (relative) for
    float64 kernels, 1e-4 for float32 ones."""
    cell, sizes, step = CELLS[name]
    worst = check_against_torch(cell, sizes, step, I, H, dtype, T_SMALL, B_SMALL,
                                LENGTHS_SMALL, seed=11 if dtype == "float64" else 12)
    print(name, dtype, worst)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_large_sizes_match_torch_autograd(name, dtype):
    """I=H=33, T=70 (past a 64-step chunk, sizes off the vector width) still equal torch."""
    cell, sizes, step = CELLS[name]
    T = 70
    worst = check_against_torch(cell, sizes, step, 33, 33, dtype, T, 5,
                                [None, [T, 0, 2, T - 1, 65]], seed=13)
    print(name, dtype, "I=H=33 T=70", worst)


def test_torch_oracle_is_sensitive():
    """The comparison notices a wrong torch cell (elman with tanh replaced by a scaled tanh)."""
    cell, sizes, _ = CELLS["elman"]

    def wrong(p, x, s):
        h = torch.tanh(1.001 * lin(p["W"], torch.cat([s["h"], x], 1), p["b"]))
        return {"h": h}, h

    with pytest.raises(AssertionError, match="errors above"):
        check_against_torch(cell, sizes, wrong, I, H, "float64", 4, 2, [None])


def test_hard_sigmoid_is_torch_hardsigmoid():
    """The written-out hard_sigmoid is F.hardsigmoid's forward; off the kinks its gradient is 1/6."""
    v = torch.linspace(-4, 4, 801, dtype=torch.float64, requires_grad=True)
    np.testing.assert_allclose(hard_sigmoid(v).detach(), F.hardsigmoid(v).detach(), rtol=0, atol=1e-15)
    (g,) = torch.autograd.grad(hard_sigmoid(v).sum(), v)
    vd = v.detach()
    inside, outside = vd.abs() < 2.999, vd.abs() > 3.001
    assert torch.equal(g[inside], torch.full_like(g[inside], 1 / 6)) and not g[outside].any()


# --- the real torch.nn modules --------------------------------------------------------------

@rc.cell(states=("h", "c"), output="h")
def nn_lstm(x, h, c, p):
    """torch.nn.LSTM's parameterisation: input and hidden weights and two biases per gate."""
    i = rc.sigmoid(p.linear("W_ii", x, bias="b_ii") + p.linear("W_hi", h, bias="b_hi"))
    f = rc.sigmoid(p.linear("W_if", x, bias="b_if") + p.linear("W_hf", h, bias="b_hf"))
    g = rc.tanh(p.linear("W_ig", x, bias="b_ig") + p.linear("W_hg", h, bias="b_hg"))
    o = rc.sigmoid(p.linear("W_io", x, bias="b_io") + p.linear("W_ho", h, bias="b_ho"))
    c_new = f * c + i * g
    return {"h": o * rc.tanh(c_new), "c": c_new}


# torch parameter -> the DSL parameters stacked in its rows, in torch's gate order
GRU_MAP = {"weight_ih_l0": ["W_ir", "W_iz", "W_in"], "weight_hh_l0": ["W_hr", "W_hz", "W_hn"],
           "bias_ih_l0": ["b_ir", "b_iz", "b_in"], "bias_hh_l0": ["b_hr", "b_hz", "b_hn"]}
LSTM_MAP = {"weight_ih_l0": ["W_ii", "W_if", "W_ig", "W_io"],
            "weight_hh_l0": ["W_hi", "W_hf", "W_hg", "W_ho"],
            "bias_ih_l0": ["b_ii", "b_if", "b_ig", "b_io"],
            "bias_hh_l0": ["b_hi", "b_hf", "b_hg", "b_ho"]}


def check_against_nn_module(cell, module_cls, mapping, lengths_list, T=7, B=4, seed=21):
    """The float64 kernel against module_cls (one layer) with the mapped parameters."""
    kern = rc.compile(cell, input_size=I, hidden_size=H, dtype="float64")
    assert {n for names in mapping.values() for n in names} == set(kern.param_shapes)
    params, x, state0, u_y, u_s = random_problem(kern, T, B, seed, "float64")
    mod = module_cls(I, H, num_layers=1).double()
    assert {n for n, _ in mod.named_parameters()} == set(mapping)
    with torch.no_grad():
        for tname, names in mapping.items():
            getattr(mod, tname).copy_(torch.from_numpy(np.concatenate([params[n] for n in names])))
    states = list(kern.state_sizes)   # ("h",) or ("h", "c"): torch's (h0, c0) order
    worst = 0.0
    for lengths in lengths_list:
        res = kern.forward(params, x, state0, lengths)
        g = kern.backward(res, d_outputs=u_y, d_states=u_s)
        mod.zero_grad()
        xt = torch.tensor(x, requires_grad=True)
        s0 = [torch.tensor(state0[s][None], requires_grad=True) for s in states]
        hx = s0[0] if len(s0) == 1 else tuple(s0)
        if lengths is None:
            y, hn = mod(xt, hx)
        else:
            packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.as_tensor(lengths),
                                                             enforce_sorted=False)
            out, hn = mod(packed, hx)
            y, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
        sT = dict(zip(states, (hn,) if len(states) == 1 else hn))
        loss = (y * torch.from_numpy(u_y)).sum() + sum(
            (sT[s][0] * torch.from_numpy(u_s[s])).sum() for s in states)
        loss.backward()
        d_params = {}
        for tname, names in mapping.items():
            for n, chunk in zip(names, getattr(mod, tname).grad.chunk(len(names), 0)):
                d_params[n] = chunk.numpy()
        what = f"{cell.name} vs {module_cls.__name__} lengths={lengths}"
        errs = [assert_close({"y": res.outputs}, {"y": y.detach().numpy()}, 1e-9, what),
                assert_close(res.states, {s: sT[s][0].detach().numpy() for s in states}, 1e-9,
                             what + " states"),
                assert_close(g.params, d_params, 1e-9, what + " d_params"),
                assert_close({"x": g.x}, {"x": xt.grad.numpy()}, 1e-9, what + " d_x"),
                assert_close(g.state0, {s: v.grad[0].numpy() for s, v in zip(states, s0)}, 1e-9,
                             what + " d_state0")]
        worst = max([worst] + [e for d in errs for e in d.values()])
    return worst


def test_dsl_gru_equals_torch_nn_gru():
    """tests.cells.gru is torch.nn.GRU: outputs, h_n and all gradients agree in float64."""
    worst = check_against_nn_module(gru, torch.nn.GRU, GRU_MAP, [None, [7, 1, 2, 6]])
    print("gru vs nn.GRU", worst)


def test_dsl_lstm_equals_torch_nn_lstm():
    """A DSL cell with torch's LSTM parameterisation is torch.nn.LSTM, gradients included."""
    worst = check_against_nn_module(nn_lstm, torch.nn.LSTM, LSTM_MAP, [None, [7, 1, 2, 6]])
    print("nn_lstm vs nn.LSTM", worst)
