"""Verification that points at the wrong thing: rc.gradcheck's localised report (per block,
per time step, per derived equation, per hand-written derivative) catching injected
mistakes; the reference evaluator against every compiled kernel; RTRL as a third
derivation (BPTT vs RTRL vs reference vs finite differences)."""
from xml.etree import ElementTree

import numpy as np
import pytest
import sympy

import rnncompiler as rc
from rnncompiler.compiler import autodiff
from rnncompiler.compiler.equations import display_names
from rnncompiler.compiler.evaluator import evaluate
from rnncompiler.compiler.mathfn import Sigmoid

from cells import elman, lstm, gru, peephole_lstm, gated_bump, two_sizes
from corner_cells import CORNER_CELLS

CELLS = {"elman": (elman, {}), "lstm": (lstm, {}), "gru": (gru, {}),
         "peephole_lstm": (peephole_lstm, {}), "gated_bump": (gated_bump, {}),
         "two_sizes": (two_sizes, {"P": 3, "O": 2})}
ALL_CELLS = dict(CELLS, **{name: (cell, {}) for name, cell in CORNER_CELLS.items()})
I, H = 3, 4


def compiled(name):
    cell, sizes = ALL_CELLS[name]
    return rc.compile(cell, input_size=I, hidden_size=H, dtype="float64", sizes=sizes)


def draw(kern, T=6, B=3, seed=1):
    rng = np.random.default_rng(seed)
    params = {k: np.asarray(v, np.float64) for k, v in kern.init_params(seed=seed).items()}
    x = rng.standard_normal((T, B, kern.input_size))
    state0 = {s: 0.5 * rng.standard_normal((B, n)) for s, n in kern.state_sizes.items()}
    dy = rng.standard_normal((T, B, kern.output_size))
    ds = {s: rng.standard_normal((B, n)) for s, n in kern.state_sizes.items()}
    return params, x, state0, dy, ds


def assert_close(a, b, tol=1e-10, what=""):
    """|a - b| <= tol * max(1, max|b|): agreement to `tol` relative to the scale."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, what
    scale = max(1.0, float(np.max(np.abs(b), initial=0.0)))
    err = float(np.max(np.abs(a - b), initial=0.0))
    assert err <= tol * scale, "%s: differs by %.3g (scale %.3g)" % (what, err, scale)


# ---------------------------------------------------------------- the reference evaluator

@pytest.mark.parametrize("name", sorted(ALL_CELLS))
def test_reference_agrees_with_every_compiled_kernel(name):
    """Outputs, final states, every gradient and every state gradient, float64 < 1e-10,
    with and without lengths; and graph.evaluate is this evaluator's forward."""
    cell, sizes = ALL_CELLS[name]
    kern, ref = compiled(name), rc.reference(cell, input_size=I, hidden_size=H, sizes=sizes)
    assert ref.param_shapes == kern.param_shapes and ref.state_sizes == kern.state_sizes
    params, x, state0, dy, ds = draw(kern)
    for lengths in (None, np.array([6, 0, 4])):
        res = kern.forward(params, x, state0, lengths)
        rres = ref.forward(params, x, state0, lengths)
        y_graph, _ = evaluate(ref.graph, params, x, state0, lengths)
        np.testing.assert_array_equal(y_graph, rres.outputs)
        assert_close(res.outputs, rres.outputs, what="outputs")
        for s in state0:
            assert_close(res.states[s], rres.states[s], what="state " + s)
        g = kern.backward(res, dy, ds, state_grads=True)
        gr = ref.backward(rres, dy, ds, state_grads=True)
        for k in params:
            assert_close(g.params[k], gr.params[k], what="d" + k)
            assert_close(gr.per_step[k].sum(axis=0), gr.params[k], what="Σ_t d" + k)
        assert_close(g.x, gr.x, what="dx")
        for s in state0:
            assert_close(g.state0[s], gr.state0[s], what="dstate0 " + s)
            if name != "constant_state":
                assert_close(g.states[s], gr.states[s], what="dL/ds_t " + s)


def test_state_grads_of_a_state_that_is_the_output_include_dy():
    """constant_state returns k unchanged and outputs k: dL/dk[t] includes dL/dy[t]
    (docs/bptt.md), as the reference has it."""
    kern = compiled("constant_state")
    ref = rc.reference(CORNER_CELLS["constant_state"], input_size=I, hidden_size=H)
    params, x, state0, dy, ds = draw(kern)
    g = kern.backward(kern.forward(params, x, state0), dy, ds, state_grads=True)
    gr = ref.backward(ref.forward(params, x, state0), dy, ds, state_grads=True)
    np.testing.assert_allclose(gr.states["k"][2], gr.states["k"][3] + dy[2])
    assert_close(g.states["k"], gr.states["k"])


@pytest.mark.parametrize("name", ["lstm", "two_sizes", "gated_bump", "vec_pow"])
def test_reference_backward_against_finite_differences(name):
    """The reference is kernel-like, so rc.gradcheck checks its own backward pass."""
    cell, sizes = ALL_CELLS[name]
    ref = rc.reference(cell, input_size=I, hidden_size=H, sizes=sizes)
    report = rc.gradcheck(ref, T=3, B=2, lengths=[3, 1], rtol=1e-6, atol=1e-9)
    assert report.ok, str(report)
    assert report.steps is not None and report.steps.ok


def test_reference_per_step_contributions_are_one_step_gradients():
    """per_step[W][t] is the gradient of step t alone, seeded with the carried adjoints:
    the compiled kernel's one-step backward gives the same numbers."""
    kern, ref = compiled("lstm"), rc.reference(lstm, input_size=I, hidden_size=H)
    params, x, state0, dy, ds = draw(kern, T=4, B=2)
    gr = ref.backward(ref.forward(params, x, state0), dy, ds, state_grads=True)
    t = 1
    before = kern.forward(params, x[:t], state0).states
    carried = {s: gr.states[s][t] - (dy[t] if s == "h" else 0) for s in ds}
    g1 = kern.backward(kern.forward(params, x[t:t + 1], before), dy[t:t + 1], carried)
    for k in params:
        assert_close(g1.params[k], gr.per_step[k][t], what=k)
    assert_close(gr.adjoints[t]["x"], gr.x[t])


def test_reference_takes_the_true_derivative_of_a_named_activation():
    """A wrong hand-written derivative reaches the kernel and RTRL, not the reference."""
    wrong = rc.activation("wrong_tanh", forward=sympy.tanh, derivative=lambda u, y: 1 - y)

    @rc.cell(states=("h",))
    def cell(x, h, p):
        return {"h": wrong(p.linear("W", rc.concat(h, x), bias="b"))}

    kern = rc.compile(cell, I, H, "float64")
    params, x, state0, dy, ds = draw(kern, T=3, B=2)
    ref = rc.reference(cell, input_size=I, hidden_size=H)
    gr = ref.backward(ref.forward(params, x, state0), dy, ds)
    g = kern.backward(kern.forward(params, x, state0), dy, ds)
    gt = rc.rtrl(cell, input_size=I, hidden_size=H).gradients(params, x, state0, None, dy, ds)
    assert_close(gt.params["W"], g.params["W"], what="RTRL uses the hand-written one")
    assert np.max(np.abs(g.params["W"] - gr.params["W"])) > 1e-2
    assert rc.gradcheck(ref, T=3, B=2).ok            # the reference is right


def test_reference_errors_name_the_argument():
    ref = rc.reference(lstm, input_size=I, hidden_size=H)
    params = ref.init_params()
    with pytest.raises(ValueError, match=r"x: expected shape \(T, B, 3\)"):
        ref.forward(params, np.zeros((2, 3)))
    with pytest.raises(KeyError, match="params: missing parameter 'b_o'"):
        ref.forward({k: v for k, v in params.items() if k != "b_o"}, np.zeros((2, 1, 3)))
    with pytest.raises(ValueError, match=r"state0\['c'\]: expected shape"):
        ref.forward(params, np.zeros((2, 1, 3)), {"c": np.zeros(5)})
    with pytest.raises(ValueError, match="lengths: expected 1 integers in"):
        ref.forward(params, np.zeros((2, 1, 3)), lengths=[3])
    with pytest.raises(TypeError, match="result: expected the result of this Reference"):
        ref.backward(None)
    with pytest.raises(TypeError, match="cell: expected a cell made with @rc.cell"):
        rc.reference("lstm")


# ---------------------------------------------------------------- RTRL

def rtrl_agreement(kern, cell, sizes, T=5, B=3, lengths=(5, 0, 2), fd_directions=None):
    """BPTT (the kernel), RTRL and the reference agree to 1e-10, and finite differences
    of the kernel's forward agree with all three (every element, or random directions)."""
    params, x, state0, dy, ds = draw(kern, T=T, B=B, seed=4)
    lengths = None if lengths is None else np.array(lengths)
    g = kern.backward(kern.forward(params, x, state0, lengths), dy, ds)
    ref = rc.reference(cell, input_size=kern.input_size, hidden_size=kern.hidden_size, sizes=sizes)
    gr = ref.backward(ref.forward(params, x, state0, lengths), dy, ds)
    gt = rc.rtrl(cell, input_size=kern.input_size, hidden_size=kern.hidden_size,
                 sizes=sizes).gradients(params, x, state0, lengths, dy, ds)
    assert set(gt.params) == set(gr.params) == set(g.params)     # constants: no gradient
    for k in g.params:
        assert_close(gt.params[k], g.params[k], what="RTRL vs BPTT d" + k)
        assert_close(gr.params[k], g.params[k], what="reference vs BPTT d" + k)
    for s in state0:
        assert_close(gt.state0[s], g.state0[s], what="RTRL vs BPTT dstate0 " + s)
        assert_close(gr.state0[s], g.state0[s], what="reference vs BPTT dstate0 " + s)

    def loss(p, s0):
        r = kern.forward(p, x, s0, lengths)
        return np.sum(r.outputs * dy) + sum(np.sum(r.states[k] * ds[k]) for k in ds)

    blocks = dict(params, **{"state0." + s: v for s, v in state0.items()})
    grads = dict(gt.params, **{"state0." + s: v for s, v in gt.state0.items()})
    rng = np.random.default_rng(0)
    for name, base in blocks.items():
        if name not in grads:           # a constant (trainable=False)
            continue
        dirs = [np.eye(base.size)[j].reshape(base.shape) for j in range(base.size)] \
            if fd_directions is None else [rng.standard_normal(base.shape)
                                           for _ in range(fd_directions)]
        for v in dirs:
            def at(e):
                moved = dict(blocks, **{name: base + e * v})
                return loss({k: moved[k] for k in params},
                            {s: moved["state0." + s] for s in state0})
            numeric = (at(1e-6) - at(-1e-6)) / 2e-6
            analytic = float(np.sum(grads[name] * v))
            assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(numeric)), (name, numeric,
                                                                              analytic)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_bptt_rtrl_reference_and_finite_differences_agree(name):
    cell, sizes = CELLS[name]
    rtrl_agreement(compiled(name), cell, sizes)


LIBRARY = getattr(getattr(rc, "cells", None), "ALL", None) or {}


@pytest.mark.skipif(not LIBRARY, reason="no rc.cells library")
@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_bptt_rtrl_reference_and_finite_differences_agree_on_library_cells(name):
    cell = LIBRARY[name]
    sizes = {n: {"P": 2, "O": 2}[n] for n in rc.cells.SIZES[name]} or None
    kern = rc.compile(cell, input_size=I, hidden_size=H, dtype="float64", sizes=sizes)
    rtrl_agreement(kern, cell, sizes, T=4, B=2, lengths=(4, 1), fd_directions=2)


def test_online_rtrl_gives_each_steps_gradient_and_learns():
    """run.gradient(d_output) after run.step(x_t) is the gradient of <d_output, y_t> as BPTT
    gives it (d_outputs zero elsewhere); updating params at every step learns online."""
    kern = compiled("elman")
    rt = rc.rtrl(elman, input_size=I, hidden_size=H)
    params, x, state0, dy, _ = draw(kern, T=4, B=2)
    run = rt.start(params, batch=2, state0=state0)
    for t in range(4):
        y_t = run.step(x[t])
        g_t = run.gradient(d_output=dy[t])
        only_t = np.zeros_like(dy)
        only_t[t] = dy[t]
        g = kern.backward(kern.forward(params, x, state0), only_t)
        assert_close(y_t, kern.forward(params, x[:t + 1], state0).outputs[t])
        for k in params:
            assert_close(g_t.params[k], g.params[k], what="step %d d%s" % (t, k))
        assert_close(g_t.state0["h"], g.state0["h"])
    # online regression: predict x_{t+1}[0] from the sequence so far, learning as it goes
    rng = np.random.default_rng(5)
    series = np.sin(0.3 * np.arange(401))[:, None, None] + 0.05 * rng.standard_normal((401, 1, 1))
    inputs = np.repeat(series, I, axis=2)
    run = rt.start(rt.init_params(seed=3), batch=1)
    errors = []
    for t in range(400):
        y_t = run.step(inputs[t])
        err = y_t[:, :1] - series[t + 1]
        errors.append(float(err[0, 0] ** 2))
        d_out = np.zeros_like(y_t)
        d_out[:, :1] = err
        g_t = run.gradient(d_out)
        for k in run.params:
            run.params[k] -= 0.05 * g_t.params[k]
    assert np.mean(errors[-100:]) < 0.25 * np.mean(errors[:100])


def test_rtrl_errors_name_the_argument():
    rt = rc.rtrl(lstm, input_size=I, hidden_size=H)
    run = rt.start(rt.init_params(), batch=2)
    with pytest.raises(ValueError, match=r"x_t: expected shape \(2, 3\)"):
        run.step(np.zeros((3, 3)))
    with pytest.raises(KeyError, match="d_states: unknown state 'q'"):
        run.gradient(d_states={"q": np.zeros((2, 4))})
    with pytest.raises(ValueError, match="d_output: no step has been taken yet"):
        run.gradient(np.zeros((2, 4)))
    run.step(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"d_output: expected shape \(2, 4\)"):
        run.gradient(np.zeros((2, 5)))
    with pytest.raises(ValueError, match="d_outputs: expected shape"):
        rt.gradients(rt.init_params(), np.zeros((2, 2, 3)), d_outputs=np.zeros((2, 2)))
    with pytest.raises(KeyError, match="params: unknown parameter 'W'"):
        rt.start({"W": np.zeros(2)})


# ---------------------------------------------------------------- the report

def test_report_keeps_the_contract_and_renders():
    report = rc.gradcheck(lstm, input_size=3, hidden_size=4, T=5, B=2, seed=0, sizes=None,
                          lengths=None, rtol=1e-5, atol=1e-8)
    assert report.ok is True and isinstance(report.max_rel_error, float)
    assert report.max_rel_error == max(report.errors.values()) < 1e-6
    assert list(report.errors) == ["W_f", "b_f", "W_i", "b_i", "W_g", "b_g", "W_o", "b_o",
                                   "x", "state0.h", "state0.c"]
    assert report.mode == "jacobian" and report.seeds["data"] == 0
    assert report.steps.ok and report.steps.first_wrong is None
    assert report.steps.output_states == ["h"]
    names = {(p.result, p.operand) for p in report.partials}
    assert ("c[t]", "c[t-1]") in names and ("h[t]", "c[t]") in names and len(names) == 6
    assert all(p.ok and p.points > 10 for p in report.partials)
    text = str(report)
    for part in ("gradcheck of lstm (float64, T=5, B=2): OK",
                 "forward: outputs and states after every step against the numpy reference",
                 "blocks: gradcheck against central finite differences", "W_f", "state0.c", "time steps", "δc[t-1]",
                 "c[t] = c[t-1]*σ(a_f[t]) + tanh(a_g[t])*σ(a_i[t])", "seeds: data 0"):
        assert part in text, part
    md = report.to_markdown()
    assert "| block | rel. error |" in md and "| W_f |" in md and "**blocks: " in md
    page = report.to_html()
    root = ElementTree.fromstring(page)          # well-formed: every tag closed, text escaped
    assert root.get("class") == "rnnc-gradcheck" and len(root.findall("table")) == 4
    assert "<td>W_f</td>" in page


def test_hand_written_derivatives_are_checked_and_a_wrong_one_is_named():
    good = rc.activation("swish_ok", lambda u: u * Sigmoid(u),
                         derivative=lambda u, y: y + Sigmoid(u) * (1 - y))
    bad = rc.activation("swish_bad", lambda u: u * Sigmoid(u),
                        derivative=lambda u, y: Sigmoid(u))

    @rc.cell(states=("h",))
    def cell(x, h, p):
        a = p.linear("W", rc.concat(h, x), bias="b")
        return {"h": good(a) * 0.5 + bad(p.linear("U", h))}

    report = rc.gradcheck(cell, T=3, B=2)
    assert not report.ok
    by_name = {a.name: a for a in report.activations}
    assert by_name["swish_ok"].ok and not by_name["swish_bad"].ok
    assert [a.name for a in report.wrong_activations()] == ["swish_bad"]
    wrong = by_name["swish_bad"]
    assert wrong.given == "σ(u)" and wrong.sympy == "u*(1 - σ(u))*σ(u) + σ(u)"
    assert abs(wrong.sympy_value - wrong.numeric_value) < 1e-6
    assert abs(wrong.given_value - wrong.numeric_value) > 1e-3
    partials = report.wrong_partials()
    assert [(p.operand, p.derived) for p in partials] == [("a_U[t]", "σ(a_U[t])")]
    assert "swish_bad(a_U[t])" in partials[0].equation
    assert "test_verification.py" in partials[0].where
    assert not report.passed["U"]
    words = "\n".join(report.diagnosis())
    assert "the hand-written derivative of swish_bad is wrong: given σ(u)" in words
    assert "∂h[t]/∂a_U[t] is derived wrongly" in words
    assert "derivative of swish_ok" not in words


@pytest.fixture
def wrong_derivation(monkeypatch, tmp_path):
    """patch(result, change): the derivation of the fused node `result` (a display name
    such as "c[t]") altered by change(operand name, contribution) -> new contribution or
    None; kernels compiled meanwhile go to a private cache."""
    monkeypatch.setenv("RNNC_CACHE_DIR", str(tmp_path))
    original = autodiff.differentiate

    def patch(result, change):
        def differentiate(g):
            bwd = original(g)
            names = {n: v[0] for n, v in display_names(g).items()}
            ops = []
            for op in bwd.ops:
                if isinstance(op, autodiff.EwGrad) and names[op.node] == result:
                    new = tuple((k, c2) for k, c in op.contributions
                                for c2 in [change(names[op.args[k]], c)] if c2 is not None)
                    op = autodiff.EwGrad(op.node, op.args, new,
                                         any(c.has(autodiff.Y) for _, c in new))
                ops.append(op)
            return autodiff.Backward(tuple(ops), bwd.tape)
        monkeypatch.setattr(autodiff, "differentiate", differentiate)
    return patch


def test_a_sign_flip_in_one_partial_is_named(wrong_derivation):
    wrong_derivation("c[t]", lambda operand, c: -c if operand == "a_i[t]" else c)
    kern = rc.compile(lstm, I, H, "float64", blas=False, verify=False)  # planted: unchecked
    report = rc.gradcheck(kern, cell=lstm, T=4, B=2)
    assert not report.ok
    [p] = report.wrong_partials()
    assert (p.result, p.operand) == ("c[t]", "a_i[t]")
    assert p.derived == "-(1 - σ(a_i[t]))*tanh(a_g[t])*σ(a_i[t])"
    assert p.derived_value == pytest.approx(-p.numeric_value, rel=1e-6)
    steps = report.steps
    assert steps.first_wrong == 3
    assert set(steps.wrong_columns(3)) == {"W_i", "b_i", "x[t]", "δh[t-1]"}
    assert "∂c[t]/∂a_i[t] is derived wrongly in c[t] = " in "\n".join(report.diagnosis())


def test_a_missing_carry_term_is_named(wrong_derivation):
    """δc[t-1] += δc[t]*σ(a_f[t]) dropped: the partial ∂c[t]/∂c[t-1] is named, and the
    last step is the first to go wrong, in its carried adjoint δc[t-1] alone."""
    wrong_derivation("c[t]", lambda operand, c: None if operand == "c[t-1]" else c)
    kern = rc.compile(lstm, I, H, "float64", blas=False, verify=False)  # planted: unchecked
    assert "δc[t-1] +=" not in str(kern.equations())
    report = rc.gradcheck(kern, cell=lstm, T=4, B=2)
    [p] = report.wrong_partials()
    assert (p.result, p.operand, p.derived) == ("c[t]", "c[t-1]", "0")
    assert p.numeric_value == pytest.approx(1 / (1 + np.exp(-p.at["a_f[t]"])), rel=1e-6)
    assert report.steps.first_wrong == 3 and report.steps.wrong_columns(3) == ["δc[t-1]"]
    assert not report.passed["state0.c"]
    assert "only the adjoint it carries back (δc[t-1]) is wrong" in "\n".join(report.diagnosis())


class Wrapped:
    """A duck-typed kernel around a real one; subclasses alter backward."""

    def __init__(self, kern):
        self.k = kern
        for a in ("input_size", "hidden_size", "dtype", "state_sizes", "output_size",
                  "param_shapes", "init_params", "forward", "name"):
            setattr(self, a, getattr(kern, a))

    def backward(self, res, d_outputs=None, d_states=None, **kw):
        return self.k.backward(res, d_outputs, d_states, **kw)


class SeedFromWrongStep(Wrapped):
    """At step 2 the backward reads dL/dy of step 1: a wrong time step."""

    def backward(self, res, d_outputs=None, d_states=None, **kw):
        if d_outputs is not None and len(d_outputs) > 2:
            d_outputs = np.array(d_outputs)
            d_outputs[2] = d_outputs[1]
        return self.k.backward(res, d_outputs, d_states, **kw)


class ScaledWeight(Wrapped):
    """Every backward returns W_f's gradient 1 % too large."""

    def backward(self, res, d_outputs=None, d_states=None, **kw):
        g = self.k.backward(res, d_outputs, d_states, **kw)
        g.params["W_f"] = g.params["W_f"] * 1.01
        return g


class WrongSum(Wrapped):
    """Runs of several steps add a constant to W_o: right step by step, wrong in the sum."""

    def backward(self, res, d_outputs=None, d_states=None, **kw):
        g = self.k.backward(res, d_outputs, d_states, **kw)
        if res.outputs.shape[0] > 1:
            g.params["W_o"] = g.params["W_o"] + 1e-3
        return g


def test_a_wrong_time_step_is_named():
    kern = compiled("lstm")
    report = rc.gradcheck(SeedFromWrongStep(kern), T=5, B=2)
    assert not report.ok
    assert report.steps.first_wrong == 2
    assert {"x[t]", "δh[t-1]", "δc[t-1]"} <= set(report.steps.wrong_columns(2))
    assert report.steps.passed[3:].all()
    assert "step t = 2 is where the backward pass first goes wrong (the steps after it agree)" \
        in "\n".join(report.diagnosis())
    assert any("pass cell= " in n for n in report.notes)


def test_a_wrong_parameter_and_a_wrong_sum_over_time_are_named():
    kern = compiled("lstm")
    report = rc.gradcheck(ScaledWeight(kern), T=4, B=2)
    assert [k for k, ok in report.passed.items() if not ok] == ["W_f"]
    assert report.steps.first_wrong == 3 and report.steps.wrong_columns(3) == ["W_f"]
    assert (~report.steps.passed).sum() == 4        # W_f at every step, nothing else
    report = rc.gradcheck(WrongSum(kern), T=4, B=2)
    assert not report.ok and report.steps.first_wrong is None
    assert [k for k, ok in report.steps.sum_passed.items() if not ok] == ["W_o"]
    assert "the accumulation over time is wrong" in "\n".join(report.diagnosis())


def test_projection_mode_for_large_cases():
    kern = rc.compile(elman, input_size=3, hidden_size=64, dtype="float64")
    report = rc.gradcheck(kern, T=3, B=2)
    assert report.mode == "projection" and report.ok, str(report)
    assert report.seeds == {"data": 0, "projections": 1, "points": 2}    # kern.cell: equations too
    assert "random projections" in str(report)
    again = rc.gradcheck(kern, T=3, B=2, mode="projection", projections=2, seed=7)
    assert again.ok and again.seeds["projections"] == 8 and again.errors != report.errors

    class ScaledW(Wrapped):
        def backward(self, res, d_outputs=None, d_states=None, **kw):
            g = self.k.backward(res, d_outputs, d_states, **kw)
            g.params["W"] = g.params["W"] * 1.001
            return g

    bad = rc.gradcheck(ScaledW(kern), T=3, B=2)
    assert bad.mode == "projection" and [k for k, ok in bad.passed.items() if not ok] == ["W"]
    small = rc.gradcheck(compiled("elman"), T=3, B=2, mode="projection")
    assert small.mode == "projection" and small.ok


def test_float32_kernels_are_checked_against_their_float64_twin():
    k32 = rc.compile(lstm, I, H, "float32")
    report = rc.gradcheck(k32, T=4, B=2, reference=compiled("lstm"), cell=lstm)
    assert report.ok, str(report)
    assert (report.rtol, report.atol) == rc.check.TOLERANCES["float32"]
    assert "float64 reference" in report.reference and report.dtype == "float32"
    assert report.steps.ok and report.partials
    twin = rc.reference(lstm, input_size=I, hidden_size=H)
    assert rc.gradcheck(k32, T=3, B=2, reference=twin).ok
    bad = rc.gradcheck(ScaledWeight(k32), T=3, B=2, reference=twin)
    assert not bad.ok and bad.steps.wrong_columns(2) == ["W_f"]
    with pytest.raises(ValueError, match="reference: a float32 kernel is checked against"):
        rc.gradcheck(k32)


def test_gradcheck_argument_errors():
    kern = compiled("elman")
    with pytest.raises(ValueError, match="mode: expected one of auto, jacobian, projection"):
        rc.gradcheck(kern, mode="full")
    with pytest.raises(ValueError, match="T: expected an int >= 1, got 0"):
        rc.gradcheck(kern, T=0)
    with pytest.raises(ValueError, match="projections: expected an int >= 1"):
        rc.gradcheck(kern, projections=0)
    with pytest.raises(TypeError, match="cell: expected a cell made with @rc.cell"):
        rc.gradcheck(kern, cell="elman")


def test_kinks_do_not_fail_the_equation_checks():
    """relu, clip, hard_sigmoid, |u| and a Piecewise at their kinks: points within a step
    of a kink are skipped, never reported wrong."""
    @rc.cell(states=("h",))
    def kinky(x, h, p):
        a = p.linear("W", rc.concat(h, x))
        k = rc.elementwise(lambda u: sympy.Abs(u) + sympy.Piecewise((u, u > 0), (0, True)), a)
        return {"h": rc.relu(a) + rc.clip(h, -0.5, 0.5) + rc.hard_sigmoid(a * 10) * 0.1 + k * 0.1}

    report = rc.gradcheck(kinky, T=3, B=2, rtol=1e-6, atol=1e-9)
    assert report.ok, str(report)
    assert len(report.partials) >= 2 and all(p.points > 0 for p in report.partials)


@pytest.mark.parametrize("name", ["rnn_tanh_torch", "lstm_torch", "gru_torch"])
def test_the_evaluator_reads_merged_linear_maps_whole(name):
    """PyTorch's forms fuse W_ih x + W_hh h + b_ih + b_hh into one linear node of two terms:
    evaluating the fused graph (as the localised gradcheck does) gives the unfused graph's
    values, and one backward step the same adjoints of parameters, input and states."""
    from rnncompiler.compiler.evaluator import Partials, backward_step, evaluate_step
    from rnncompiler.compiler.graph import build_graph, fuse_elementwise
    cell = getattr(rc.cells, name)
    g = build_graph(cell.spec, {"I": 3, "H": 4})
    fg = fuse_elementwise(g)
    assert any(len(fg[n].terms) > 1 for n in fg), "no merged linear map to test"
    rng = np.random.default_rng(0)
    params = {p: rng.standard_normal(s) for p, s in g.params}
    x_t = rng.standard_normal((2, 3))
    states = {s: rng.standard_normal((2, n)) for s, n in g.states}
    runs = []
    for graph in (g, fg):
        new, y, val = evaluate_step(graph, params, x_t, states)
        adj = backward_step(graph, val, {graph.output: np.ones_like(y)}, Partials(graph))
        runs.append((new, y, {n: adj[n] for n in adj if n == "x" or n.startswith(("param.", "state."))}))
    (new0, y0, adj0), (new1, y1, adj1) = runs
    np.testing.assert_allclose(y1, y0, rtol=1e-12, atol=1e-12)
    for s in new0:
        np.testing.assert_allclose(new1[s], new0[s], rtol=1e-12, atol=1e-12)
    assert sorted(adj1) == sorted(adj0)
    for n in adj0:
        np.testing.assert_allclose(adj1[n], adj0[n], rtol=1e-12, atol=1e-12, err_msg=n)


class WrongForward(Wrapped):
    """A duck-typed kernel whose subclasses alter forward (Wrapped copies the kernel's)."""

    def __init__(self, kern):
        super().__init__(kern)
        del self.forward


class ShiftedInput(WrongForward):
    """A forward that computes wrong values from step 2 on (x[2] read 0.1 off), as a
    miscompiled kernel would; its backward is the right one for its own forward."""

    def forward(self, params, x, state0=None, lengths=None, **kw):
        x = np.array(x, np.float64)
        if len(x) > 2:
            x[2] += 0.1
        return self.k.forward(params, x, state0, lengths, **kw)


class ScaledForgetGate(WrongForward):
    """A forward whose forget gate weights are 1 % off at every step."""

    def forward(self, params, x, state0=None, lengths=None, **kw):
        return self.k.forward(dict(params, W_f=np.asarray(params["W_f"]) * 1.01), x, state0,
                              lengths, **kw)


def test_a_wrong_forward_is_named_before_the_backward_is_blamed():
    """The forward is compared with the reference evaluator first: a forward wrong from
    step 2 is named there (which value, step, row), and the backward is not blamed."""
    kern = compiled("lstm")
    report = rc.gradcheck(ShiftedInput(kern), T=5, B=2, cell=lstm)
    assert not report.ok and not report.forward.ok
    assert (report.forward.what, report.forward.step) == ("outputs", 2)
    words = "\n".join(report.diagnosis())
    assert words.startswith("the forward pass is wrong, before any gradient: the kernel's "
                            "outputs at step t = 2 (batch row 0, unit ")
    assert "the numpy reference evaluator gives" in words
    assert "backward pass first goes wrong" not in words
    assert "FAIL" in str(report).splitlines()[5]          # the forward table comes first
    report = rc.gradcheck(ScaledForgetGate(kern), T=4, B=2, cell=lstm)
    assert not report.ok and report.forward.step == 0
    assert "backward pass first goes wrong" not in "\n".join(report.diagnosis())


def test_a_right_forward_passes_its_check_and_a_twin_checks_float32():
    kern = compiled("lstm")
    report = rc.gradcheck(kern, T=4, B=2, lengths=[4, 2])
    assert report.ok and report.forward.ok and report.forward.error < 1e-12, str(report)
    k32 = rc.compile(lstm, I, H, "float32")
    bad = rc.gradcheck(ShiftedInput(k32), T=4, B=2, reference=kern)
    assert bad.forward.against == "the float64 reference kernel" and bad.forward.step == 2
    assert any("no forward check" in n for n in rc.gradcheck(Wrapped(kern), T=3).notes)


def test_the_tolerances_are_reachable_in_a_fresh_process():
    """rc.check.TOLERANCES (cited in the docs) without rc.gradcheck having been used."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import rnncompiler as rc; "
                          "print(rc.check.TOLERANCES['float64'])"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(1e-05, 1e-08)"
