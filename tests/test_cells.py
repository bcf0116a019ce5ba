"""Every cell of rc.cells, verified twice: rc.gradcheck against central finite differences
(float64, rtol 1e-6, with lengths), and agreement with the same cell written again here
in PyTorch and differentiated by torch.autograd (float64 < 1e-9, float32 < 1e-4 on a
subset): outputs, final states and the gradients of every parameter, x and state0."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import rnncompiler as rc  # noqa: E402
from rnncompiler.check import draw  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
I, H = 3, 4
T, B = 6, 4
EXTRA_SIZES = {"P": 2, "O": 2}
LENGTHS = [[T, 0, 2, T - 1], None]
TOL = {"float64": 1e-9, "float32": 1e-4}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors: torch's intra-op threads only add contention."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- the cells again, in torch: step(p, x_t (B, I), states {name: (B, n)}) -> (new, y_t) ---

def lin(W, v, b=None):
    out = v @ W.T
    return out if b is None else out + b


def cat(*vs):
    return torch.cat(vs, 1)


def t_rnn(act):
    def step(p, x, s):
        h = act(lin(p["W"], cat(s["h"], x), p["b"]))
        return {"h": h}, h
    return step


def t_jordan(p, x, s):
    a = torch.tanh(lin(p["W_h"], cat(s["y"], x), p["b_h"]))
    y = torch.sigmoid(lin(p["W_y"], a, p["b_y"]))
    return {"y": y}, y


def t_indrnn(p, x, s):
    h = torch.relu(lin(p["W"], x, p["b"]) + p["u"] * s["h"])
    return {"h": h}, h


def t_gru(p, x, s):
    """Cho et al.: the reset gate scales h before the candidate's matrix product."""
    h = s["h"]
    r = torch.sigmoid(lin(p["W_r"], cat(h, x), p["b_r"]))
    z = torch.sigmoid(lin(p["W_z"], cat(h, x), p["b_z"]))
    n = torch.tanh(lin(p["W_n"], cat(r * h, x), p["b_n"]))
    h = z * h + (1 - z) * n
    return {"h": h}, h


def t_mgu(p, x, s):
    h = s["h"]
    f = torch.sigmoid(lin(p["W_f"], cat(h, x), p["b_f"]))
    n = torch.tanh(lin(p["W_n"], cat(f * h, x), p["b_n"]))
    h = (1 - f) * h + f * n
    return {"h": h}, h


def t_lstm(forget_bias=0.0, forget_gate=True):
    def step(p, x, s):
        z, c = cat(s["h"], x), s["c"]
        i = torch.sigmoid(lin(p["W_i"], z, p["b_i"]))
        g = torch.tanh(lin(p["W_g"], z, p["b_g"]))
        o = torch.sigmoid(lin(p["W_o"], z, p["b_o"]))
        f = torch.sigmoid(lin(p["W_f"], z, p["b_f"]) + forget_bias) if forget_gate else 1.0
        c = f * c + i * g
        h = o * torch.tanh(c)
        return {"h": h, "c": c}, h
    return step


def t_depth_gated(first):
    """lstm_hc (first layer: x is the input) and depth_gated_lstm (x = [h_below; c_below])."""
    def step(p, x, s):
        if first:
            below = None
        else:
            x, below = x[:, :x.shape[1] // 2], x[:, x.shape[1] // 2:]
        z, c = cat(s["h"], x), s["c"]
        f = torch.sigmoid(lin(p["W_f"], z, p["b_f"]))
        i = torch.sigmoid(lin(p["W_i"], z, p["b_i"]))
        o = torch.sigmoid(lin(p["W_o"], z, p["b_o"]))
        g = torch.tanh(lin(p["W_g"], z, p["b_g"]))
        c_new = f * c + i * g
        if below is not None:
            d = torch.sigmoid(lin(p["W_d"], x, p["b_d"]) + p["w_cd"] * c + p["w_ld"] * below)
            c_new = c_new + d * below
        h = o * torch.tanh(c_new)
        return {"h": h, "c": c_new}, cat(h, c_new)
    return step


def t_greff(variant):
    """Greff et al.'s peephole LSTM ("vanilla") and its variants, by switches."""
    def step(p, x, s):
        z, c = cat(s["h"], x), s["c"]
        ones = torch.ones_like(c)

        def gate(k, cell):
            a = lin(p["W_" + k], z, p["b_" + k])
            if variant == "fgr":
                a = a + lin(p["R_" + k], cat(s["i"], s["f"], s["o"]))
            if variant != "np":
                a = a + p["p_" + k] * cell
            return torch.sigmoid(a)
        i = ones if variant == "nig" else gate("i", c)
        f = 1 - i if variant == "cifg" else ones if variant == "nfg" else gate("f", c)
        a_g = lin(p["W_g"], z, p["b_g"])
        g = a_g if variant == "niaf" else torch.tanh(a_g)
        c_new = f * c + i * g
        o = ones if variant == "nog" else gate("o", c_new)
        h = o * (c_new if variant == "noaf" else torch.tanh(c_new))
        new = {"h": h, "c": c_new}
        if variant == "fgr":
            new.update(i=i, f=f, o=o)
        return new, h
    return step


def t_lstm_proj(num_proj=True, cell_clip=None, proj_clip=None, peepholes=True, forget_bias=1.0):
    """TensorFlow's LSTMCell, written from its documentation."""
    def step(p, x, s):
        z, c = cat(s["h"], x), s["c"]
        a_i = lin(p["W_i"], z, p["b_i"])
        a_f = lin(p["W_f"], z, p["b_f"]) + forget_bias
        if peepholes:
            a_i, a_f = a_i + p["p_i"] * c, a_f + p["p_f"] * c
        c = torch.sigmoid(a_f) * c + torch.sigmoid(a_i) * torch.tanh(lin(p["W_g"], z, p["b_g"]))
        if cell_clip is not None:
            c = torch.clamp(c, -cell_clip, cell_clip)
        a_o = lin(p["W_o"], z, p["b_o"]) + (p["p_o"] * c if peepholes else 0)
        h = torch.sigmoid(a_o) * torch.tanh(c)
        if num_proj:
            h = lin(p["W_p"], h)
            if proj_clip is not None:
                h = torch.clamp(h, -proj_clip, proj_clip)
        return {"h": h, "c": c}, h
    return step


def t_layernorm_lstm(p, x, s):
    """haste's LayerNormLSTM with torch's own layer_norm (no affine part, eps 1e-5)."""
    gates = "ifgo"
    ln = lambda v: F.layer_norm(v, v.shape[1:], eps=1e-5)  # noqa: E731
    stack = lambda fmt: torch.cat([p[fmt % k] for k in gates])  # noqa: E731
    wx = ln(cat(*[lin(p["W_" + k], x) for k in gates])) * stack("gamma_x_%s")
    rh = ln(cat(*[lin(p["R_" + k], s["h"]) for k in gates])) * stack("gamma_h_%s")
    a_i, a_f, a_g, a_o = (wx + rh + stack("b_%s")).split(H, 1)
    c = torch.sigmoid(a_f) * s["c"] + torch.sigmoid(a_i) * torch.tanh(a_g)
    h = torch.sigmoid(a_o) * torch.tanh(ln(c) * p["gamma_c"] + p["beta_c"])
    return {"h": h, "c": c}, h


def t_min_gru(p, x, s):
    z = torch.sigmoid(lin(p["W_z"], x, p["b_z"]))
    h = (1 - z) * s["h"] + z * lin(p["W_h"], x, p["b_h"])
    return {"h": h}, h


def t_min_lstm(p, x, s):
    f = torch.sigmoid(lin(p["W_f"], x, p["b_f"]))
    i = torch.sigmoid(lin(p["W_i"], x, p["b_i"]))
    h = f / (f + i) * s["h"] + i / (f + i) * lin(p["W_h"], x, p["b_h"])
    return {"h": h}, h


def t_slstm(forget_gate, margins=None, maximum=torch.maximum):
    """xLSTM's sLSTM, one head; appends log f + m[t-1] - log i (the max's margin) to
    `margins` when given; `maximum` is the max of the stabiliser, with its tie rule."""
    def step(p, x, s):
        def pre(k):
            return lin(p["W_" + k], x, p["b_" + k]) + lin(p["R_" + k], s["h"])
        log_i = pre("i")
        log_f = pre("f") if forget_gate == "exp" else F.logsigmoid(pre("f"))
        if margins is not None:
            margins.append((log_f + s["m"] - log_i).detach())
        m = maximum(log_f + s["m"], log_i)
        i_s, f_s = torch.exp(log_i - m), torch.exp(log_f + s["m"] - m)
        c = f_s * s["c"] + i_s * torch.tanh(pre("z"))
        n = f_s * s["n"] + i_s
        h = torch.sigmoid(pre("o")) * c / n
        return {"h": h, "c": c, "n": n, "m": m}, h
    return step


def t_rnn_torch(act):
    def step(p, x, s):
        h = act(lin(p["W_ih"], x, p["b_ih"]) + lin(p["W_hh"], s["h"], p["b_hh"]))
        return {"h": h}, h
    return step


def t_lstm_torch(proj):
    def step(p, x, s):
        h, c = s["h"], s["c"]
        a = {k: lin(p["W_i" + k], x, p["b_i" + k]) + lin(p["W_h" + k], h, p["b_h" + k])
             for k in "ifgo"}
        c = torch.sigmoid(a["f"]) * c + torch.sigmoid(a["i"]) * torch.tanh(a["g"])
        h = torch.sigmoid(a["o"]) * torch.tanh(c)
        if proj:
            h = lin(p["W_hr"], h)
        return {"h": h, "c": c}, h
    return step


def t_gru_torch(p, x, s):
    """The cuDNN form: reset applied to the hidden product, biases included."""
    h = s["h"]
    r = torch.sigmoid(lin(p["W_ir"], x, p["b_ir"]) + lin(p["W_hr"], h, p["b_hr"]))
    z = torch.sigmoid(lin(p["W_iz"], x, p["b_iz"]) + lin(p["W_hz"], h, p["b_hz"]))
    n = torch.tanh(lin(p["W_in"], x, p["b_in"]) + r * lin(p["W_hn"], h, p["b_hn"]))
    h = (1 - z) * n + z * h
    return {"h": h}, h


def t_esn(leak):
    """The leaky-integrator ESN; its W_in, W, b are constants (requires_grad=False below)."""
    def step(p, x, s):
        h = s["h"]
        h = (1 - leak) * h + leak * torch.tanh(lin(p["W_in"], x) + lin(p["W"], h, p["b"]))
        return {"h": h}, h
    return step


C = rc.cells
TORCH_STEPS = {
    "elman": t_rnn(torch.tanh), "elman_relu": t_rnn(torch.relu), "jordan": t_jordan,
    "indrnn": t_indrnn, "gru": t_gru, "mgu": t_mgu,
    "lstm1997": t_lstm(forget_gate=False), "lstm": t_lstm(forget_bias=1.0),
    "peephole_lstm": t_greff("vanilla"), "lstm_proj": t_lstm_proj(),
    "layernorm_lstm": t_layernorm_lstm,
    **{"lstm_" + v: t_greff(v) for v in ("nig", "nfg", "nog", "niaf", "noaf", "np", "cifg", "fgr")},
    "rnn_tanh_torch": t_rnn_torch(torch.tanh), "rnn_relu_torch": t_rnn_torch(torch.relu),
    "min_gru": t_min_gru, "min_lstm": t_min_lstm, "slstm": t_slstm("exp"),
    "lstm_torch": t_lstm_torch(False), "lstm_proj_torch": t_lstm_torch(True),
    "gru_torch": t_gru_torch, "esn": t_esn(1.0),
    "lstm_hc": t_depth_gated(True), "depth_gated_lstm": t_depth_gated(False),
}
# name -> (cell, torch step): every ready-made cell, and factory options off their defaults
CASES = {name: (cell, TORCH_STEPS[name]) for name, cell in C.ALL.items()}
CASES["lstm_proj_clipped"] = (
    C.make_lstm_proj(num_proj=2, cell_clip=0.3, proj_clip=0.2, use_peepholes=False,
                     forget_bias=0.5),
    t_lstm_proj(cell_clip=0.3, proj_clip=0.2, peepholes=False, forget_bias=0.5))
CASES["slstm_sigmoid_forget"] = (C.make_slstm(forget_gate="sigmoid"), t_slstm("sigmoid"))
CASES["esn_leaky"] = (C.make_esn(leak=0.3), t_esn(0.3))
FLOAT32 = ["lstm", "layernorm_lstm", "lstm_fgr", "slstm"]      # the torch forms: tests/test_interop.py


@pytest.fixture(scope="module")
def kernel():
    """kernel(name, dtype): each case compiled once per test module."""
    made = {}

    def get(name, dtype="float64"):
        if (name, dtype) not in made:
            cell = CASES[name][0]
            sizes = {n: EXTRA_SIZES[n] for n in C.size_names(cell)}
            made[name, dtype] = rc.compile(cell, input_size=I, hidden_size=H, dtype=dtype,
                                           sizes=sizes)
        return made[name, dtype]
    return get


# --- the oracle -----------------------------------------------------------------------------

def torch_unroll(step, p, x, state0, lengths):
    """Runs step over T; past lengths[b] row b keeps its state and outputs zero."""
    steps, batch = x.shape[:2]
    lens = torch.full((batch,), steps) if lengths is None else torch.as_tensor(lengths)
    states, ys = dict(state0), []
    for t in range(steps):
        new, y = step(p, x[t], states)
        valid = (t < lens)[:, None]
        states = {k: torch.where(valid, new[k], v) for k, v in states.items()}
        ys.append(torch.where(valid, y, torch.zeros_like(y)))
    return torch.stack(ys), states


# cell name -> states whose meaningful values are >= 0: sLSTM's normaliser n sums positive
# terms from n[0]; a negative n[0] could bring n[t] near 0 and h = c/n to huge values
NONNEGATIVE = {"slstm": ("n",)}


def problem(kern, seed):
    """Parameters, x, a non-zero state0 (in the cell's domain) and the loss weights,
    representable in kern's dtype."""
    rng = np.random.default_rng(seed)
    r = lambda a: np.asarray(a, kern.dtype).astype(np.float64)  # noqa: E731
    params = {k: r(v) for k, v in kern.init_params(seed=seed).items()}
    x = r(rng.standard_normal((T, B, kern.input_size)))
    state0 = {s: r(0.5 * rng.standard_normal((B, n)) + 0.1) for s, n in kern.state_sizes.items()}
    for s in NONNEGATIVE.get(kern.name, ()):
        state0[s] = np.abs(state0[s])
    u_y = r(rng.standard_normal((T, B, kern.output_size)))
    u_s = {s: r(rng.standard_normal((B, n))) for s, n in kern.state_sizes.items()}
    return params, x, state0, u_y, u_s


def torch_reference(step, params, x, state0, lengths, u_y, u_s, frozen=()):
    """Outputs, final states and d(sum(y*u_y) + sum(s_T*u_s)) by torch autograd, float64;
    the params in `frozen` (the cell's trainable=False ones) have requires_grad=False."""
    leaf = lambda a, grad=True: torch.tensor(a, dtype=torch.float64, requires_grad=grad)  # noqa: E731
    p = {k: leaf(v, k not in frozen) for k, v in params.items()}
    trained = [k for k in p if k not in frozen]
    xt, s0 = leaf(x), {k: leaf(v) for k, v in state0.items()}
    y, sT = torch_unroll(step, p, xt, s0, lengths)
    loss = (y * torch.as_tensor(u_y)).sum() + sum((sT[k] * torch.as_tensor(u_s[k])).sum()
                                                  for k in sT)
    grads = torch.autograd.grad(loss, [*(p[k] for k in trained), xt, *s0.values()])
    n = len(trained)
    out = {"y": y.detach().numpy(), "x": grads[n].numpy()}
    out.update({"d_" + k: g.numpy() for k, g in zip(trained, grads[:n])})
    out.update({"s_" + k: v.detach().numpy() for k, v in sT.items()})
    out.update({"d0_" + k: g.numpy() for k, g in zip(s0, grads[n + 1:])})
    return out


def rel_err(got, ref):
    """max|got - ref| / max(1, max|ref|), in float64."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, (got.shape, ref.shape)
    scale = max(1.0, np.max(np.abs(ref), initial=0.0))
    return float(np.max(np.abs(got - ref), initial=0.0) / scale)


def compare_with_torch(kern, step, seed):
    """Largest error over every array and both lengths settings; asserts the masking too."""
    params, x, state0, u_y, u_s = problem(kern, seed)
    worst = {}
    for lengths in LENGTHS:
        res = kern.forward(params, x, state0, lengths)
        g = kern.backward(res, d_outputs=u_y, d_states=u_s)
        ref = torch_reference(step, params, x, state0, lengths, u_y, u_s,
                              getattr(kern, "frozen", ()))
        got = {"y": res.outputs, "x": g.x}
        got.update({"d_" + k: v for k, v in g.params.items()})
        got.update({"s_" + k: v for k, v in res.states.items()})
        got.update({"d0_" + k: v for k, v in g.state0.items()})
        assert set(got) == set(ref), (sorted(got), sorted(ref))
        for k in ref:
            worst[k] = max(worst.get(k, 0.0), rel_err(got[k], ref[k]))
        if lengths is not None:
            for b, n in enumerate(lengths):
                assert not res.outputs[n:, b].any() and not g.x[n:, b].any()
    return worst


# --- the proofs -----------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CASES))
def test_gradcheck(name, kernel):
    """Every gradient against central finite differences, float64, rel < 1e-6, with a
    zero, a partial and a full length in the batch."""
    report = rc.gradcheck(kernel(name), T=5, B=3, seed=3, lengths=[5, 0, 3], rtol=1e-6)
    print(name, report.max_rel_error)
    assert report.ok, str(report)


@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_torch_autograd(name, kernel):
    """Outputs, states and every gradient (parameters, x, state0) equal torch's, float64."""
    worst = compare_with_torch(kernel(name), CASES[name][1], seed=7)
    bad = {k: e for k, e in worst.items() if not e < TOL["float64"]}
    assert not bad, "%s: errors above 1e-9: %s" % (name, bad)


@pytest.mark.parametrize("name", FLOAT32)
def test_float32_matches_torch_autograd(name, kernel):
    """The float32 kernels against torch in float64 on the same (float32) data: < 1e-4."""
    kern = kernel(name, "float32")
    worst = compare_with_torch(kern, CASES[name][1], seed=8)
    bad = {k: e for k, e in worst.items() if not e < TOL["float32"]}
    assert not bad, "%s float32: errors above 1e-4: %s" % (name, bad)


def test_oracle_notices_a_wrong_cell(kernel):
    """The comparison is sensitive: the Cho GRU against the torch form of the GRU differs."""
    worst = compare_with_torch(kernel("gru"), t_gru_cho_swapped, seed=7)
    assert max(worst.values()) > 1e-3


def t_gru_cho_swapped(p, x, s):
    """The Cho GRU with the reset gate moved after the product: a different function."""
    h = s["h"]
    r = torch.sigmoid(lin(p["W_r"], cat(h, x), p["b_r"]))
    z = torch.sigmoid(lin(p["W_z"], cat(h, x), p["b_z"]))
    W_nh, W_nx = p["W_n"][:, :H], p["W_n"][:, H:]
    n = torch.tanh(r * lin(W_nh, h) + lin(W_nx, x, p["b_n"]))
    h = z * h + (1 - z) * n
    return {"h": h}, h


def test_cell_clip_bites(kernel):
    """The clipped LSTMP really clips: c and h reach their bounds, and stay inside."""
    kern = kernel("lstm_proj_clipped")
    params, x, state0, _, _ = problem(kern, 5)
    res = kern.forward({k: 3 * v for k, v in params.items()}, x, state0)
    assert np.isclose(np.abs(res.states["c"]).max(), 0.3)
    assert np.isclose(np.abs(res.outputs).max(), 0.2)


# --- sLSTM: the max of its stabiliser -------------------------------------------------------

class PinnedParams:
    """A kernel whose init_params returns given parameters: rc.gradcheck and problem() draw
    x and state0 from their seed but take the parameters from init_params."""

    def __init__(self, kern, params):
        self._kern, self._params = kern, params

    def init_params(self, seed=0):
        return {k: v.copy() for k, v in self._params.items()}

    def __getattr__(self, name):
        return getattr(self._kern, name)


SLSTM_CASES = {"slstm": "exp", "slstm_sigmoid_forget": "sigmoid"}   # case -> forget gate
GC = {"T": 5, "B": 3, "seed": 3, "lengths": [5, 0, 3]}             # the rc.gradcheck point


def regime_params(kern, forget_gate, regime):
    """Parameters that decide m[t] = max(log f[t] + m[t-1], log i[t]) by a margin of about
    1e-3 at every step after the first ("near"), or by more than ½ at every step ("input
    wins", "forget wins")."""
    p = kern.init_params(seed=11)
    if regime == "near":
        # log i ≈ 2 and log f ≈ 0 (f~ ≈ 0 for exp, σ(8) ≈ 1 for sigmoid), each within
        # about 1e-3: the input gate wins at t = 1 (m[0] is far below 2), so m[1] ≈ 2 and
        # from then on the margin is a sum of those 1e-3 terms, of either sign
        for k in ("W_i", "R_i", "W_f", "R_f", "b_i", "b_f"):
            p[k] = 1e-3 * p[k]
        p["b_i"] += 2.0
        p["b_f"] += 0.0 if forget_gate == "exp" else 8.0
    elif regime == "input wins":
        p["b_f"] -= 6.0
    else:
        # h = o c / n stays near o c[0] / n[0], which a random state0 can make large:
        # smaller recurrent weights keep it from swinging the gates
        for k in ("R_i", "R_f"):
            p[k] = 0.1 * p[k]
        # log f ≈ 1 (exp; m grows by about 1 a step) or ≈ -0.02 (σ(4)), log i ≈ -3:
        # margins of 1 to 15, not more, so that the input's share i' is not negligible
        p["b_i"] -= 3.0
        p["b_f"] += 1.0 if forget_gate == "exp" else 4.0
    return p


def slstm_margins(forget_gate, params, x, state0, lengths):
    """log f[t] + m[t-1] - log i[t] over the steps, rows and units that run, from torch."""
    margins = []
    as_t = lambda a: torch.as_tensor(np.asarray(a, np.float64))  # noqa: E731
    torch_unroll(t_slstm(forget_gate, margins), {k: as_t(v) for k, v in params.items()},
                 as_t(x), {k: as_t(v) for k, v in state0.items()}, lengths)
    lens = [len(x)] * x.shape[1] if lengths is None else lengths
    return [m.numpy()[[t < n for n in lens]].ravel() for t, m in enumerate(margins)]


def assert_regime(regime, margins, floor=0.0):
    """The margins are what the regime says: the test checks the point it claims to.
    `floor`: the smallest margin allowed near the switch (finite differences with steps
    of 1e-6 must not cross it)."""
    if regime == "near":
        later = np.concatenate(margins[1:])
        assert floor < np.abs(later).min() and np.abs(later).max() < 1e-2, later
        assert (later > 0).any() and (later < 0).any(), later
    else:
        every = np.concatenate(margins)
        assert np.all(every < -0.5 if regime == "input wins" else every > 0.5), every


@pytest.mark.parametrize("regime", ["near", "input wins", "forget wins"])
@pytest.mark.parametrize("case", sorted(SLSTM_CASES))
def test_slstm_gradients_near_and_away_from_the_switch_of_the_max(case, regime, kernel):
    """rc.gradcheck (rel < 1e-6) and torch autograd (< 1e-9) where the stabiliser's max is
    decided by less than 1e-2 at every step after the first (by more than 1e-5 where
    finite differences are taken), both sides winning somewhere, and where one side wins
    everywhere by more than ½."""
    forget_gate = SLSTM_CASES[case]
    kern = PinnedParams(kernel(case), regime_params(kernel(case), forget_gate, regime))
    params, x, state0, _, _, _ = draw(kern, GC["T"], GC["B"], GC["seed"], GC["lengths"])
    assert_regime(regime, slstm_margins(forget_gate, params, x, state0, GC["lengths"]), 1e-5)
    report = rc.gradcheck(kern, rtol=1e-6, **GC)
    assert report.ok, str(report)
    params, x, state0, _, _ = problem(kern, 7)
    for lengths in LENGTHS:
        assert_regime(regime, slstm_margins(forget_gate, params, x, state0, lengths))
    worst = compare_with_torch(kern, CASES[case][1], seed=7)
    assert max(worst.values()) < TOL["float64"], worst


def test_slstm_gives_half_the_gradient_to_each_side_of_an_exact_tie(kernel):
    """One step with x = 0, h[0] = 0, b_i = 0.5, b_f = 0.25, m[0] = 0.25: log f + m[0] and
    log i are both exactly 0.5. The gradient of m[1] goes half to each side of the max, as
    torch.maximum's; the gradients of h alone do not depend on the tie rule."""
    kern = kernel("slstm")
    rng = np.random.default_rng(4)
    params = dict(kern.init_params(seed=5), b_i=np.full(H, 0.5), b_f=np.full(H, 0.25))
    x = np.zeros((1, 1, I))
    state0 = {"h": np.zeros((1, H)), "c": rng.standard_normal((1, H)),
              "n": rng.uniform(0.5, 1.5, (1, H)), "m": np.full((1, H), 0.25)}
    assert np.concatenate(slstm_margins("exp", params, x, state0, None)).tolist() == [0.0] * H
    zeros = {s: np.zeros((1, H)) for s in state0}
    res = kern.forward(params, x, state0)
    np.testing.assert_array_equal(res.states["m"], np.full((1, H), 0.5))
    g = kern.backward(res, d_outputs=np.zeros((1, 1, H)), d_states=dict(zeros, m=np.ones((1, H))))
    for got in (g.state0["m"], g.params["b_i"], g.params["b_f"]):
        np.testing.assert_array_equal(got.ravel(), np.full(H, 0.5))
    ref = torch_reference(t_slstm("exp"), params, x, state0, None, np.zeros((1, 1, H)),
                          dict(zeros, m=np.ones((1, H))))
    np.testing.assert_array_equal(ref["d0_m"], g.state0["m"])
    np.testing.assert_array_equal(ref["d_b_i"], g.params["b_i"])
    # all to the first operand at a tie: other gradients of m, the same gradients of h
    first = lambda a, b: torch.where(a >= b, a, b)  # noqa: E731
    ref_first = torch_reference(t_slstm("exp", maximum=first), params, x, state0, None,
                                np.zeros((1, 1, H)), dict(zeros, m=np.ones((1, H))))
    assert np.all(ref_first["d0_m"] == 1.0) and np.all(ref_first["d_b_i"] == 0.0)
    u_y = rng.standard_normal((1, 1, H))
    g_h = kern.backward(res, d_outputs=u_y, d_states=zeros)
    for maximum in (torch.maximum, first):
        ref_h = torch_reference(t_slstm("exp", maximum=maximum), params, x, state0, None, u_y,
                                zeros)
        for k, v in g_h.params.items():
            assert rel_err(v, ref_h["d_" + k]) < 1e-12, k
        for s, v in g_h.state0.items():
            assert rel_err(v, ref_h["d0_" + s]) < 1e-12, s


# --- the registry ---------------------------------------------------------------------------

def test_registry_lists_every_cell():
    """ALL holds every Cell of rc.cells under its own name, with docs; SIZES says what to bind."""
    in_module = {n for n in dir(C) if isinstance(getattr(C, n), rc.Cell)}
    assert in_module == set(C.ALL) == set(C.SIZES)
    for name, cell in C.ALL.items():
        assert getattr(C, name) is cell and cell.name == name
        doc = cell.fn.__doc__ or ""
        assert re.search(r"\((19|20)\d\d\)", doc), "%s: no citation in its docstring" % name
        assert "[t]" in doc, "%s: no equations in its docstring" % name
    assert C.SIZES["lstm_proj"] == ("P",) and C.SIZES["jordan"] == ("O",)
    assert {n for n, s in C.SIZES.items() if s} == {"lstm_proj", "lstm_proj_torch", "jordan"}


def test_unbound_size_is_named():
    """A cell that needs a size names it when the size is not given."""
    with pytest.raises(rc.CellError, match="'P' is not bound"):
        rc.compile(C.lstm_proj, input_size=I, hidden_size=H)


def test_variants_have_the_parameters_their_definition_says(kernel):
    """Each Greff variant drops (or adds) exactly the parameters of the thing it changes."""
    full = set(kernel("peephole_lstm").param_shapes)
    drop = {"lstm_nig": {"W_i", "b_i", "p_i"}, "lstm_nfg": {"W_f", "b_f", "p_f"},
            "lstm_nog": {"W_o", "b_o", "p_o"}, "lstm_cifg": {"W_f", "b_f", "p_f"},
            "lstm_np": {"p_i", "p_f", "p_o"}, "lstm_niaf": set(), "lstm_noaf": set()}
    for name, gone in drop.items():
        assert set(kernel(name).param_shapes) == full - gone, name
    fgr = kernel("lstm_fgr")
    assert set(fgr.param_shapes) == full | {"R_i", "R_f", "R_o"}
    assert fgr.param_shapes["R_f"] == (H, 3 * H)
    assert list(fgr.state_sizes) == ["h", "c", "i", "f", "o"]
    assert kernel("indrnn").param_shapes["u"] == (H,)
    jordan = kernel("jordan")
    assert jordan.state_sizes == {"y": 2} and jordan.param_shapes["W_y"] == (2, H)
    proj = kernel("lstm_proj")
    assert proj.state_sizes == {"h": 2, "c": H} and proj.param_shapes["W_p"] == (2, H)


def test_forget_bias_is_a_constant_on_the_forget_gate(kernel):
    """lstm (forget_bias=1) with b_f equals lstm_np (no bias) with b_f + 1; the peephole LSTM
    with zero peepholes equals lstm_np."""
    lstm, np_kern, peep = kernel("lstm"), kernel("lstm_np"), kernel("peephole_lstm")
    params, x, state0, _, _ = problem(lstm, 2)
    ref = np_kern.forward(dict(params, b_f=params["b_f"] + 1.0), x, state0).outputs
    np.testing.assert_allclose(lstm.forward(params, x, state0).outputs, ref, rtol=0, atol=1e-14)
    zeros = {k: np.zeros(H) for k in ("p_i", "p_f", "p_o")}
    np.testing.assert_array_equal(peep.forward(dict(params, **zeros), x, state0).outputs,
                                  np_kern.forward(params, x, state0).outputs)


@pytest.mark.parametrize("call, exc, match", [
    (lambda: C.make_lstm(forget_bias="1"), TypeError, "forget_bias"),
    (lambda: C.make_lstm(forget_bias=float("nan")), ValueError, "forget_bias"),
    (lambda: C.make_lstm_proj(num_proj=0), ValueError, "num_proj"),
    (lambda: C.make_lstm_proj(cell_clip=-1.0), ValueError, "cell_clip"),
    (lambda: C.make_lstm_proj(proj_clip="big"), TypeError, "proj_clip"),
    (lambda: C.make_lstm_proj(use_peepholes=1), TypeError, "use_peepholes"),
    (lambda: C.make_layernorm_lstm(eps=0), ValueError, "eps"),
    (lambda: C.make_rnn_torch("sigmoid"), ValueError, "nonlinearity"),
    (lambda: C.make_lstm_torch(proj_size=-2), ValueError, "proj_size"),
    (lambda: C.make_gru_torch(bias="yes"), TypeError, "bias"),
    (lambda: C.make_slstm(forget_gate="tanh"), ValueError, "forget_gate"),
    (lambda: C.size_names("lstm"), TypeError, "cell"),
])
def test_bad_options_are_named(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_factories_make_what_they_say():
    """Options change the traced cell: no projection gives h of size H; bias=False drops biases."""
    assert C.make_lstm_proj(num_proj=None).states == {"h": "H", "c": "H"}
    assert C.make_lstm_proj(num_proj=3).states == {"h": 3, "c": "H"}
    nobias = C.make_gru_torch(bias=False)
    assert not [n for n in nobias.spec.params if n.startswith("param.b")]
    assert C.make_lstm_torch(proj_size=0).name == "lstm_torch"
    assert C.make_lstm_torch(proj_size=5).states == {"h": 5, "c": "H"}


def test_cells_page_is_current():
    """docs/cells.md's generated blocks (sources, equations, the torch table) are up to date."""
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "docs", "gen_cells.py"), "--check"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
