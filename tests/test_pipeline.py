"""The core pipeline end to end: gradients against finite differences, kernels against the
numpy reference evaluator, lengths, infer/step, state gradients, the graph and equations."""
import re

import networkx as nx
import numpy as np
import pytest
import sympy

import rnncompiler as rc
from rnncompiler.compiler import mathfn
from rnncompiler.compiler.graph import build_graph
from rnncompiler.compiler.evaluator import evaluate
from rnncompiler.compiler.pipeline import bind_sizes

from activation_cases import CASES, PUBLIC, stays_finite
from cells import elman, lstm, gru, peephole_lstm, gated_bump, two_sizes
from corner_cells import CORNER_CELLS

CELLS = {"elman": (elman, {}), "lstm": (lstm, {}), "gru": (gru, {}),
         "peephole_lstm": (peephole_lstm, {}), "gated_bump": (gated_bump, {}),
         "two_sizes": (two_sizes, {"P": 3, "O": 2})}
I, H = 3, 4


def compiled(name, dtype="float64"):
    cell, sizes = CELLS[name]
    return rc.compile(cell, input_size=I, hidden_size=H, dtype=dtype, sizes=sizes)


def random_inputs(kern, T=6, B=4, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((T, B, kern.input_size))
    state0 = {s: 0.5 * rng.standard_normal((B, n)) for s, n in kern.state_sizes.items()}
    return x, state0


@pytest.mark.parametrize("name", CELLS)
def test_gradients_match_finite_differences(name):
    cell, sizes = CELLS[name]
    report = rc.gradcheck(cell, input_size=I, hidden_size=H, T=5, B=3, seed=2, sizes=sizes,
                          rtol=1e-6, atol=1e-9)
    assert report.ok, str(report)
    assert set(report.errors) >= {"x"} | {"state0." + s for s in cell.states}


@pytest.mark.parametrize("name", CELLS)
def test_gradients_with_lengths_match_finite_differences(name):
    cell, sizes = CELLS[name]
    report = rc.gradcheck(cell, input_size=I, hidden_size=H, T=5, B=4, seed=3, sizes=sizes,
                          lengths=[5, 0, 2, 4], rtol=1e-6, atol=1e-9)
    assert report.ok, str(report)


@pytest.mark.parametrize("name", CELLS)
def test_kernel_matches_reference_evaluator(name):
    kern = compiled(name)
    cell, sizes = CELLS[name]
    g = build_graph(cell.spec, bind_sizes(cell, I, H, sizes))
    params = kern.init_params(seed=4)
    x, state0 = random_inputs(kern)
    lengths = np.array([6, 3, 0, 5])
    for lens in (None, lengths):
        res = kern.forward(params, x, state0, lens)
        y_ref, s_ref = evaluate(g, params, x, state0, lens)
        np.testing.assert_allclose(res.outputs, y_ref, rtol=1e-12, atol=1e-12)
        for s in s_ref:
            np.testing.assert_allclose(res.states[s], s_ref[s], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["lstm", "two_sizes"])
def test_lengths_equal_running_each_sequence_alone(name):
    kern = compiled(name)
    params = kern.init_params(seed=5)
    x, state0 = random_inputs(kern, T=6, B=4)
    lengths = np.array([6, 0, 3, 1])
    rng = np.random.default_rng(0)
    dy = rng.standard_normal((6, 4, kern.output_size))
    ds = {s: rng.standard_normal((4, n)) for s, n in kern.state_sizes.items()}
    res = kern.forward(params, x, state0, lengths)
    g = kern.backward(res, dy, ds)
    for b, n in enumerate(lengths):
        s0 = {s: v[b:b + 1] for s, v in state0.items()}
        if n == 0:
            for s in s0:
                np.testing.assert_allclose(res.states[s][b:b + 1], s0[s])
                np.testing.assert_allclose(g.state0[s][b:b + 1], ds[s][b:b + 1])
            assert not res.outputs[:, b].any() and not g.x[:, b].any()
            continue
        alone = kern.forward(params, x[:n, b:b + 1], s0)
        ga = kern.backward(alone, dy[:n, b:b + 1], {s: v[b:b + 1] for s, v in ds.items()})
        np.testing.assert_allclose(res.outputs[:n, b:b + 1], alone.outputs, rtol=1e-12, atol=1e-14)
        assert not res.outputs[n:, b].any(), "outputs past the length must be zero"
        assert not g.x[n:, b].any(), "d_outputs past the length must be ignored"
        np.testing.assert_allclose(g.x[:n, b:b + 1], ga.x, rtol=1e-10, atol=1e-13)
        for s in s0:
            np.testing.assert_allclose(res.states[s][b:b + 1], alone.states[s], rtol=1e-12)
            np.testing.assert_allclose(g.state0[s][b:b + 1], ga.state0[s], rtol=1e-10, atol=1e-13)


def test_parameter_gradients_are_sums_over_sequences():
    kern = compiled("lstm")
    params = kern.init_params(seed=6)
    x, state0 = random_inputs(kern, T=4, B=3)
    dy = np.random.default_rng(1).standard_normal((4, 3, H))
    g = kern.backward(kern.forward(params, x, state0), dy)
    total = {k: 0 for k in params}
    for b in range(3):
        gb = kern.backward(kern.forward(params, x[:, b:b + 1], {s: v[b:b + 1] for s, v in state0.items()}),
                           dy[:, b:b + 1])
        for k in total:
            total[k] = total[k] + gb.params[k]
    for k in params:
        np.testing.assert_allclose(g.params[k], total[k], rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("name", ["lstm", "two_sizes"])
def test_infer_and_step_equal_forward(name):
    kern = compiled(name)
    params = kern.init_params(seed=7)
    x, state0 = random_inputs(kern)
    res = kern.forward(params, x, state0, [6, 2, 0, 4])
    y, states = kern.infer(params, x, state0, [6, 2, 0, 4])
    np.testing.assert_array_equal(y, res.outputs)
    for s in states:
        np.testing.assert_array_equal(states[s], res.states[s])
    full = kern.forward(params, x, state0)
    st = state0
    for t in range(x.shape[0]):
        y_t, st = kern.step(params, x[t], st)
        np.testing.assert_allclose(y_t, full.outputs[t], rtol=1e-13, atol=1e-15)
    for s in st:
        np.testing.assert_allclose(st[s], full.states[s], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("name", ["lstm", "elman", "two_sizes"])
def test_state_grads_are_dL_dstate_at_every_step(name):
    """g.states[s][t] = dL/d(state after step t) with the other states held fixed (the
    adjoint carried through time), checked by restarting the sequence at step t+1."""
    kern = compiled(name)
    params = kern.init_params(seed=8)
    T, B = 5, 2
    x, state0 = random_inputs(kern, T=T, B=B)
    rng = np.random.default_rng(2)
    dy = rng.standard_normal((T, B, kern.output_size))
    ds = {s: rng.standard_normal((B, n)) for s, n in kern.state_sizes.items()}
    res = kern.forward(params, x, state0)
    g = kern.backward(res, dy, ds, state_grads=True)
    assert all(g.states[s].shape == (T, B, n) for s, n in kern.state_sizes.items())
    if name == "elman":   # h is the output and nothing else reads it within the step
        np.testing.assert_allclose(g.states["h"][T - 1], ds["h"] + dy[T - 1])
    t = 2
    at_t = kern.forward(params, x[:t + 1], state0).states

    def loss(states):
        rest = kern.forward(params, x[t + 1:], states)
        out = np.sum(rest.outputs * dy[t + 1:]) + sum(np.sum(rest.states[k] * ds[k]) for k in ds)
        if name != "two_sizes":   # output is the state h itself at step t
            out += np.sum(states["h"] * dy[t])
        return out

    for s in kern.state_sizes:
        num = np.zeros_like(at_t[s])
        for idx in np.ndindex(*num.shape):
            up = {k: v.copy() for k, v in at_t.items()}
            dn = {k: v.copy() for k, v in at_t.items()}
            up[s][idx] += 1e-6
            dn[s][idx] -= 1e-6
            num[idx] = (loss(up) - loss(dn)) / 2e-6
        np.testing.assert_allclose(g.states[s][t], num, rtol=1e-6, atol=1e-8)


def test_float32_close_to_float64():
    k32, k64 = compiled("lstm", "float32"), compiled("lstm")
    params = k64.init_params(seed=9)
    x, state0 = random_inputs(k64)
    r32, r64 = k32.forward(params, x, state0), k64.forward(params, x, state0)
    assert r32.outputs.dtype == np.float32
    np.testing.assert_allclose(r32.outputs, r64.outputs, rtol=1e-4, atol=1e-5)
    report = rc.gradcheck(k32, T=5, B=2, reference=k64, rtol=1e-3, atol=1e-5)
    assert report.ok, str(report)


class WrongBackward:
    """A kernel whose backward is off in one weight: gradcheck must notice."""

    def __init__(self, kern):
        self._k = kern
        for a in ("input_size", "hidden_size", "dtype", "state_sizes", "output_size",
                  "param_shapes", "init_params", "forward"):
            setattr(self, a, getattr(kern, a))

    def backward(self, res, d_outputs=None, d_states=None, **kw):
        g = self._k.backward(res, d_outputs, d_states, **kw)
        g.params["W_f"] = g.params["W_f"] * 1.01
        return g


def test_gradcheck_fails_on_a_wrong_backward():
    kern = compiled("lstm")
    assert rc.gradcheck(kern, T=4, B=2).ok
    report = rc.gradcheck(WrongBackward(kern), T=4, B=2)
    assert not report.ok
    assert report.errors["W_f"] > 1e-3 and report.errors["W_i"] < 1e-6
    assert "W_f" in str(report) and "FAIL" in str(report)


def test_shared_parameter_gets_the_sum_of_both_uses():
    @rc.cell(states=("h",))
    def tied(x, h, p):
        a = p.linear("W", h)             # the same (H, H) weight twice
        return {"h": rc.tanh(a + p.linear("W", rc.tanh(a)) + p.linear("U", x))}

    kern = rc.compile(tied, 3, 4, "float64")
    assert list(kern.param_shapes) == ["W", "U"]
    assert rc.gradcheck(kern, T=4, B=2).ok


def test_hand_written_activation_derivative_is_used_and_checked():
    good = rc.activation("mish", lambda u: u * sympy.tanh(mathfn.Softplus(u)))
    swish = rc.activation("swish", lambda u: u * mathfn.Sigmoid(u),
                          derivative=lambda u, y: y + mathfn.Sigmoid(u) * (1 - y))
    wrong = rc.activation("swish_bad", lambda u: u * mathfn.Sigmoid(u),
                          derivative=lambda u, y: mathfn.Sigmoid(u))

    def make(act):
        @rc.cell(states=("h",))
        def cell(x, h, p):
            return {"h": act(p.linear("W", rc.concat(h, x)))}
        return cell

    assert rc.gradcheck(make(good), T=3, B=2).ok
    assert rc.gradcheck(make(swish), T=3, B=2).ok
    report = rc.gradcheck(make(wrong), T=3, B=2)
    assert not report.ok and report.errors["W"] > 1e-3


ACTIVATIONS = dict(CASES, clip=lambda v: rc.clip(v, -0.3, 0.4))   # every row of the table


@pytest.mark.parametrize("act", ACTIVATIONS)
def test_activation_derivative_matches_finite_differences(act):
    fn = ACTIVATIONS[act]

    @rc.cell(states=("h",))
    def cell(x, h, p):
        return {"h": fn(p.linear("W", rc.concat(h, x), bias="b")) * 0.5}

    report = rc.gradcheck(cell, input_size=3, hidden_size=4, T=3, B=3, seed=5,
                          rtol=1e-6, atol=1e-9)
    assert report.ok, str(report)


@pytest.mark.parametrize("act", [row.name for row in PUBLIC if stays_finite(row)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_activation_derivatives_finite_at_large_inputs(act, dtype):
    fn = ACTIVATIONS[act]

    @rc.cell(states=("h",))
    def cell(x, h, p):
        return {"h": fn(p.linear("W", x))}

    kern = rc.compile(cell, 1, 2, dtype)
    params = {"W": np.array([[1.0], [1.0]])}
    x = np.array([[[1e4]], [[-1e4]], [[0.0]], [[-100.0]], [[100.0]]])
    res = kern.forward(params, x)
    g = kern.backward(res, np.ones_like(res.outputs))
    assert np.isfinite(res.outputs).all() and np.isfinite(g.x).all()
    assert np.isfinite(g.params["W"]).all()


def test_kinks_follow_pytorch():
    @rc.cell(states={"h": 9})
    def cell(x, h, p):
        v = p.linear("W", x)
        return {"h": rc.concat(rc.relu(v), rc.hard_sigmoid(v - 3), rc.clip(v, 0, 1))}

    @rc.cell(states=("h",))
    def relu_at_zero(x, h, p):
        return {"h": rc.relu(p.linear("W", x))}

    kern = rc.compile(relu_at_zero, 1, 1, "float64")
    g = kern.backward(kern.forward({"W": np.ones((1, 1))}, np.zeros((1, 1, 1))), np.ones((1, 1, 1)))
    assert g.x[0, 0, 0] == 0.0                       # relu'(0) = 0
    with pytest.raises(rc.CellError, match="state 'h' has size 9"):   # 3 H = 3 units, not 9
        rc.compile(cell, 1, 1, "float64")
    kern = rc.compile(cell, 1, 3, "float64")
    W = np.ones((3, 1))
    res = kern.forward({"W": W}, np.zeros((1, 1, 1)))
    g = kern.backward(res, np.ones((1, 1, 9)))
    # relu'(0) = 0 (x3), hard_sigmoid'(-3) = 0 (open interval, x3), clip'(0) = 1 on [lo, hi] (x3)
    assert g.x[0, 0, 0] == pytest.approx(3.0)


def test_unroll_is_a_dag_with_tied_parameters():
    dag = rc.unroll(lstm, 4)
    assert isinstance(dag, nx.DiGraph) and nx.is_directed_acyclic_graph(dag)
    params = [n for n, d in dag.nodes(data=True) if d.get("kind") == "param"]
    assert sorted(params) == sorted(lstm.spec.params and [p.split(".", 1)[1] for p in lstm.spec.params])
    for p in params:
        steps = {dag.nodes[s]["t"] for s in dag.successors(p)}
        assert steps == {0, 1, 2, 3}, p
    ts = {d["t"] for _, d in dag.nodes(data=True) if "t" in d}
    assert ts == {0, 1, 2, 3}


def test_equations_text_and_latex():
    eq = compiled("lstm").equations()
    text = str(eq)
    assert "c[t] = " in text and "δW_f += Σ_t" in text and "δh[t-1] += δz[t][0:4]" in text
    assert "δc[t-1] += " in text
    latex = eq.latex()
    assert r"\begin{align*}" in latex and r"\sigma" in latex and r"\delta" in latex


def test_compiled_kernel_is_cached_within_the_process():
    a, b = compiled("gru"), compiled("gru")
    assert a._key == b._key


def test_c_uses_64_bit_indexing_and_no_user_names():
    from rnncompiler.compiler.pipeline import lower
    _, _, csrc = lower(lstm, {"H": 4, "I": 3}, "float32", blas=False)
    assert "ptrdiff_t b = 0" in csrc.text and "int b = 0; b < B; ++b) {" not in csrc.text
    # parameter names reach the C only inside the layout's constants, prefixed (RNNC_P_W_f)
    words = set(re.findall(r"\w+", csrc.text))
    assert not {"W_f", "b_f", "lstm"} & words and {"RNNC_P_W_f", "RNNC_P_b_f"} <= words
    code = re.sub(r"/\*.*?\*/", "", csrc.text, flags=re.S)   # float functions in float32 code
    assert "tanhf(" in code and "rnnc_exp_nonposf(" in code
    assert not re.search(r"\b(exp|tanh|log1p|fabs)\(", code)


def directional_check(kern, params, x, state0, lengths, seed=0, directions=3):
    """<grad, v> against central differences along random directions v (all inputs)."""
    rng = np.random.default_rng(seed)
    T, B = x.shape[:2]
    u_y = rng.standard_normal((T, B, kern.output_size))
    u_s = {s: rng.standard_normal((B, n)) for s, n in kern.state_sizes.items()}
    res = kern.forward(params, x, state0, lengths)
    g = kern.backward(res, u_y, u_s)

    def loss(p, xx, s0):
        r = kern.forward(p, xx, s0, lengths)
        return np.sum(r.outputs * u_y) + sum(np.sum(r.states[k] * u_s[k]) for k in u_s)

    for _ in range(directions):
        vp = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        vx = rng.standard_normal(x.shape)
        vs = {k: rng.standard_normal(v.shape) for k, v in state0.items()}
        eps = 1e-6
        up = loss({k: params[k] + eps * vp[k] for k in params}, x + eps * vx,
                  {k: state0[k] + eps * vs[k] for k in state0})
        dn = loss({k: params[k] - eps * vp[k] for k in params}, x - eps * vx,
                  {k: state0[k] - eps * vs[k] for k in state0})
        numeric = (up - dn) / (2 * eps)
        analytic = (sum(np.sum(g.params[k] * vp[k]) for k in params) + np.sum(g.x * vx)
                    + sum(np.sum(g.state0[k] * vs[k]) for k in state0))
        assert abs(analytic - numeric) <= 1e-6 * max(1.0, abs(numeric)), (analytic, numeric)
    return g


@pytest.mark.parametrize("name", ["lstm", "gru", "two_sizes"])
def test_long_sequences_across_chunks(name):
    """T = 150 crosses the 64-step chunks of the hoisted GEMMs, the last one partial."""
    kern = compiled(name)
    cell, sizes = CELLS[name]
    params = kern.init_params(seed=10)
    x, state0 = random_inputs(kern, T=150, B=3)
    lengths = np.array([150, 70, 64])
    y, st = evaluate(build_graph(cell.spec, bind_sizes(cell, I, H, sizes)), params, x, state0,
                     lengths)
    res = kern.forward(params, x, state0, lengths)
    np.testing.assert_allclose(res.outputs, y, rtol=1e-11, atol=1e-12)
    directional_check(kern, params, x, state0, lengths)


def test_threads_give_the_same_results():
    """Big hoisted GEMMs split over threads compute what one thread computes."""
    kern = rc.compile(lstm, input_size=48, hidden_size=64, dtype="float64")
    params = kern.init_params(seed=11)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((130, 40, 48))
    dy = rng.standard_normal((130, 40, 64))
    from rnncompiler.runtime import threads as setting
    before = setting._num_threads
    try:
        out = {}
        for n in (1, 3):
            rc.set_num_threads(n)
            res = kern.forward(params, x)
            out[n] = (res.outputs, kern.backward(res, dy))
    finally:
        setting._num_threads = before
    np.testing.assert_allclose(out[1][0], out[3][0], rtol=1e-12, atol=1e-13)
    for k in params:
        np.testing.assert_allclose(out[1][1].params[k], out[3][1].params[k], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(out[1][1].x, out[3][1].x, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="n: expected an int >= 1"):
        rc.set_num_threads(0)


def test_tape_plan_names_what_is_kept():
    plan = compiled("lstm").tape_plan(T=10, B=2)
    # the state history (h and c after every step) and the gate pre-activations: nothing
    # else, and nothing twice
    assert "8 scalars  h[t], c[t]" in plan
    assert "16 scalars  σ(a_f[t]), σ(a_i[t]), tanh(a_g[t]), σ(a_o[t])" in plan
    assert "not kept (recomputed or not needed): -" in plan
    assert "workspace for T=10, B=2" in plan


@rc.cell(states=("h", "c"), output="h")
def odd_corners(x, h, c, p):
    """Learnable vectors where rows are needed, an unused input, a constant state part."""
    u = p.vector("u")
    a = p.linear("W", rc.concat(h, u), bias="b") + p.linear("V", u, size="H")
    m = rc.mean(u) + rc.sum(p.vector("w") * h)
    return {"h": rc.tanh(a + m), "c": c * 0.5 + p.vector("k")}


@rc.cell(states=("h",))
def ignores_x(x, h, p):
    return {"h": rc.tanh(p.linear("W", h)) + h * p.scalar("s")}


@pytest.mark.parametrize("cell", [odd_corners, ignores_x], ids=lambda c: c.name)
def test_corner_cells(cell):
    report = rc.gradcheck(cell, input_size=2, hidden_size=3, T=4, B=2, lengths=[4, 1])
    assert report.ok, str(report)
    kern = rc.compile(cell, 2, 3, "float64")
    g = build_graph(cell.spec, {"H": 3, "I": 2})
    params = kern.init_params(seed=1)
    x, state0 = random_inputs(kern, T=4, B=2)
    y_ref, _ = evaluate(g, params, x, state0)
    np.testing.assert_allclose(kern.forward(params, x, state0).outputs, y_ref, rtol=1e-12)


SYMPY_MATH = {
    "abs": lambda u: sympy.Abs(u),
    "sign": lambda u: u * sympy.sign(u) + sympy.sign(u),
    "heaviside": lambda u: sympy.Heaviside(u) * u,
    "floor": lambda u: sympy.floor(u) + u,
    "max_min": lambda u: sympy.Max(u, u / 10) + sympy.Min(u, 1),
    "erf_atan": lambda u: sympy.erf(u) + sympy.atan(u),
    "sqrt_pow": lambda u: sympy.sqrt(1 + u ** 2) + (1 + u ** 2) ** sympy.Rational(3, 2) / 4,
    "trig_hyp": lambda u: sympy.sin(u) * sympy.cos(u) + sympy.asinh(u) + sympy.cosh(u) / 4,
    "exp2": lambda u: 2 ** u,
    "piecewise": lambda u: sympy.Piecewise((u ** 2, u > 0), (sympy.exp(u) - 1, True)),
    "lambda": sympy.Lambda(sympy.Symbol("z"), sympy.Symbol("z") ** 3),
}


@pytest.mark.parametrize("name", SYMPY_MATH)
def test_sympy_math_in_elementwise(name):
    """Any sympy math sympy can differentiate and print works; step functions have
    derivative 0 (PyTorch's choice for sign, floor, heaviside), never a DiracDelta."""
    fn = SYMPY_MATH[name]

    @rc.cell(states=("h",))
    def cell(x, h, p):
        return {"h": rc.elementwise(fn, p.linear("W", rc.concat(h, x), bias="b")) * 0.3}

    report = rc.gradcheck(cell, T=3, B=2, seed=3, rtol=1e-6, atol=1e-9)
    assert report.ok, str(report)
    kern = rc.compile(cell, 3, 4, "float64")
    params = kern.init_params(seed=1)
    x, state0 = random_inputs(kern, T=3, B=2)
    y_ref, _ = evaluate(build_graph(cell.spec, {"H": 4, "I": 3}), params, x, state0)
    np.testing.assert_allclose(kern.forward(params, x, state0).outputs, y_ref, rtol=1e-12,
                               atol=1e-13)


def test_step_functions_have_zero_derivative():
    @rc.cell(states=("h",))
    def cell(x, h, p):
        v = p.linear("W", x)
        return {"h": rc.elementwise(lambda u: sympy.sign(u) + sympy.floor(u)
                                    + sympy.Heaviside(u), v)}

    kern = rc.compile(cell, 1, 1, "float64")
    res = kern.forward({"W": np.ones((1, 1))}, np.array([[[0.0]], [[1.5]], [[-2.0]]]))
    np.testing.assert_array_equal(res.outputs[:, 0, 0], [0.5, 3.0, -3.0])
    g = kern.backward(res, np.ones_like(res.outputs))
    np.testing.assert_array_equal(g.x, 0.0)


def test_a_derivative_with_no_c_form_is_a_cell_error():
    with pytest.raises(rc.CellError, match=r"test_pipeline.py:\d+: the derivative of .*gamma"
                                           r".* cannot be written as C .*polygamma"):
        @rc.cell(states=("h",))
        def cell(x, h, p):
            return {"h": rc.elementwise(lambda u: sympy.gamma(2 + u ** 2), p.linear("W", x))}

        rc.compile(cell, 3, 4, "float64")


def test_cell_states_are_the_declared_size_specs():
    assert lstm.name == "lstm" and lstm.states == {"h": "H", "c": "H"}
    assert list(two_sizes.states.items()) == [("h", "P"), ("c", "H")]


LEAN_CHILD = """
import sys
import rnncompiler as rc
loaded = {m for m in ("sympy", "networkx", "cffi") if m in sys.modules}

@rc.cell(states=("h", "c"), output="h")
def lstm(x, h, c, p):
    z = rc.concat(h, x)
    f = rc.sigmoid(p.linear("W_f", z, bias="b_f"))
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i"))
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o"))
    c_new = f * c + i * g
    return {"h": o * rc.tanh(c_new), "c": c_new}

k = rc.compile(lstm, 3, 4, "float64")
print(k.equations())
print(sorted(loaded), sorted(m for m in ("sympy", "networkx", "cffi") if m in sys.modules))
"""


@pytest.mark.slow
def test_a_cache_hit_needs_neither_sympy_nor_networkx(tmp_path):
    """Importing rnncompiler, declaring a cell and loading its kernel from the cache load
    no sympy, networkx or cffi; the equations come with the kernel; a miss loads sympy and
    cffi (the step IR is not a networkx graph)."""
    import os
    import subprocess
    import sys
    env = dict(os.environ, RNNC_CACHE_DIR=str(tmp_path))
    outs = [subprocess.run([sys.executable, "-c", LEAN_CHILD], env=env, capture_output=True,
                           text=True, timeout=300) for _ in range(2)]
    for out in outs:
        assert out.returncode == 0, out.stderr
    miss, hit = (out.stdout.splitlines() for out in outs)
    assert miss[:-1] == hit[:-1] and "  δc[t-1] += f[t]*δc[t]" in hit
    assert miss[-1] == "[] ['cffi', 'sympy']" and hit[-1] == "[] []"     # the IR needs no networkx


@pytest.mark.parametrize("name", sorted(CORNER_CELLS))
def test_corner_cells_of_lowering(name):
    """Gradients against finite differences, and outputs against the reference evaluator
    over 70 steps (two chunks), with lengths."""
    cell = CORNER_CELLS[name]
    report = rc.gradcheck(cell, input_size=3, hidden_size=4, T=4, B=3, lengths=[4, 0, 2],
                          rtol=1e-6, atol=1e-9)
    assert report.ok, str(report)
    kern = rc.compile(cell, 3, 4, "float64")
    params = kern.init_params(seed=1)
    x, state0 = random_inputs(kern, T=70, B=3)
    lengths = [70, 3, 66]
    y_ref, s_ref = evaluate(build_graph(cell.spec, {"H": 4, "I": 3}), params, x, state0, lengths)
    res = kern.forward(params, x, state0, lengths)
    np.testing.assert_allclose(res.outputs, y_ref, rtol=1e-11, atol=1e-12)
    for s in s_ref:
        np.testing.assert_allclose(res.states[s], s_ref[s], rtol=1e-11, atol=1e-12)
