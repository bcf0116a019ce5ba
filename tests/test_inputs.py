"""Cells with several per-step inputs (inputs=) and per-sequence context inputs (context=):
the same equations in PyTorch give the same outputs and gradients (a context's summed
over time), the dict and side-by-side forms of x agree, and misuse is refused by name."""
import numpy as np
import pytest

import rnncompiler as rc

torch = pytest.importorskip("torch")

T, B, I, H, E = 6, 3, 3, 4, 2
LENGTHS = [T, T - 2, 1]


@rc.cell(states=("h", "c"), output="h", context={"spk": "E"})
def speaker_lstm(x, spk, h, c, p):
    """An LSTM whose gates all read a per-sequence speaker vector."""
    z = rc.concat(h, x, spk)
    f = rc.sigmoid(p.linear("W_f", z, bias="b_f"))
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i"))
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o"))
    c_new = f * c + i * g
    return {"h": o * rc.tanh(c_new), "c": c_new}


@rc.cell(states=("h",), inputs={"x": "I", "u": "H"}, context={"e": "E"})
def two_inputs(x, u, e, h, p):
    """A gated Elman cell: u enters elementwise and through a product, e (per sequence)
    scales the candidate."""
    a = rc.tanh(p.linear("W", rc.concat(h, x), bias="b") + u * p.vector("w_u"))
    gate = rc.sigmoid(p.linear("V", rc.concat(u, e)))
    return {"h": gate * a + (1 - gate) * h}


def _t(a):
    return torch.tensor(np.asarray(a, np.float64), requires_grad=True)


def torch_speaker_lstm(P, x, spk, h0, c0, lengths):
    """The same equations step by step; rows past their length keep their state and give
    zero outputs."""
    h, c, ys = h0, c0, []
    for t in range(x.shape[0]):
        z = torch.cat([h, x[t], spk], 1)
        f = torch.sigmoid(z @ P["W_f"].T + P["b_f"])
        i = torch.sigmoid(z @ P["W_i"].T + P["b_i"])
        g = torch.tanh(z @ P["W_g"].T + P["b_g"])
        o = torch.sigmoid(z @ P["W_o"].T + P["b_o"])
        c_new = f * c + i * g
        h_new = o * torch.tanh(c_new)
        valid = torch.tensor([t < n for n in lengths], dtype=torch.bool)[:, None]
        h, c = torch.where(valid, h_new, h), torch.where(valid, c_new, c)
        ys.append(torch.where(valid, h_new, torch.zeros_like(h_new)))
    return torch.stack(ys), h, c


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-12))


def test_a_context_input_equals_torch_with_its_gradient_summed_over_time():
    kern = rc.compile(speaker_lstm, input_size=I, hidden_size=H, sizes={"E": E}, dtype="float64")
    assert kern.context == {"spk": E} and kern.input_size == I
    rng = np.random.default_rng(0)
    params = kern.init_params(seed=1)
    x, spk = rng.standard_normal((T, B, I)), rng.standard_normal((B, E))
    h0, c0 = 0.3 * rng.standard_normal((B, H)), 0.3 * rng.standard_normal((B, H))
    dy, dh, dc = (rng.standard_normal(s) for s in ((T, B, H), (B, H), (B, H)))
    res = kern.forward(params, x, {"h": h0, "c": c0}, LENGTHS, context={"spk": spk})
    g = kern.backward(res, dy, {"h": dh, "c": dc})

    P = {k: _t(v) for k, v in params.items()}
    tx, ts, th, tc = _t(x), _t(spk), _t(h0), _t(c0)
    y, hT, cT = torch_speaker_lstm(P, tx, ts, th, tc, LENGTHS)
    loss = (y * torch.tensor(dy)).sum() + (hT * torch.tensor(dh)).sum() + (cT * torch.tensor(dc)).sum()
    loss.backward()
    assert _rel(res.outputs, y.detach()) < 1e-12
    assert _rel(res.states["h"], hT.detach()) < 1e-12
    assert _rel(res.states["c"], cT.detach()) < 1e-12
    for name in params:
        assert _rel(g.params[name], P[name].grad) < 1e-9, name
    assert _rel(g.x, tx.grad) < 1e-9
    assert g.context["spk"].shape == (B, E)
    assert _rel(g.context["spk"], ts.grad) < 1e-9
    assert _rel(g.state0["h"], th.grad) < 1e-9 and _rel(g.state0["c"], tc.grad) < 1e-9


def test_a_context_broadcast_from_one_vector_and_infer_and_step_agree():
    kern = rc.compile(speaker_lstm, input_size=I, hidden_size=H, sizes={"E": E}, dtype="float64")
    rng = np.random.default_rng(1)
    params, x, e = kern.init_params(seed=0), rng.standard_normal((T, B, I)), rng.standard_normal(E)
    full = kern.forward(params, x, context={"spk": np.tile(e, (B, 1))})
    one = kern.forward(params, x, context={"spk": e})
    np.testing.assert_array_equal(full.outputs, one.outputs)
    y, states = kern.infer(params, x, context={"spk": e})
    np.testing.assert_allclose(y, full.outputs, rtol=1e-13)
    s = None
    for t in range(T):
        y_t, s = kern.step(params, x[t], s, context={"spk": e})
        np.testing.assert_allclose(y_t, full.outputs[t], rtol=1e-12, atol=1e-14)


def test_several_inputs_as_a_dict_or_side_by_side_and_the_reference_agree():
    sizes = {"E": E}
    kern = rc.compile(two_inputs, input_size=I, hidden_size=H, sizes=sizes, dtype="float64")
    ref = rc.reference(two_inputs, I, H, sizes)
    assert kern.inputs == {"x": I, "u": H} and kern.input_size == I + H
    rng = np.random.default_rng(2)
    params = kern.init_params(seed=0)
    x, u, e = rng.standard_normal((T, B, I)), rng.standard_normal((T, B, H)), rng.standard_normal((B, E))
    dy = rng.standard_normal((T, B, H))
    a = kern.forward(params, {"x": x, "u": u}, None, LENGTHS, context={"e": e})
    b = kern.forward(params, np.concatenate([x, u], 2), None, LENGTHS, context={"e": e})
    r = ref.forward(params, {"x": x, "u": u}, None, LENGTHS, context={"e": e})
    np.testing.assert_array_equal(a.outputs, b.outputs)
    np.testing.assert_allclose(a.outputs, r.outputs, rtol=1e-12, atol=1e-14)
    ga, rg = kern.backward(a, dy), ref.backward(r, dy)
    assert set(ga.inputs) == {"x", "u"} and ga.inputs["u"].shape == (T, B, H)
    np.testing.assert_array_equal(ga.inputs["x"], ga.x[..., :I])
    np.testing.assert_allclose(ga.x, rg.x, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(ga.context["e"], rg.context["e"], rtol=1e-10, atol=1e-13)
    for name in ga.params:
        np.testing.assert_allclose(ga.params[name], rg.params[name], rtol=1e-10, atol=1e-13)
    # batch-first dicts: each input (B, T, size)
    bf = kern.forward(params, {"x": x.swapaxes(0, 1), "u": u.swapaxes(0, 1)}, None, LENGTHS,
                      context={"e": e}, batch_first=True)
    np.testing.assert_array_equal(bf.outputs, a.outputs.swapaxes(0, 1))


@pytest.mark.parametrize("cell, sizes", [(speaker_lstm, {"E": E}), (two_inputs, {"E": E})])
def test_gradcheck(cell, sizes):
    report = rc.gradcheck(cell, input_size=I, hidden_size=H, sizes=sizes, lengths=[5, 2])
    assert report.ok, report


def test_the_products_of_every_input_are_hoisted_out_of_the_time_loop():
    """x and spk reach the gates through GEMMs over T*B rows read from the row in place:
    no per-step copy of either."""
    exp = rc.export_c(speaker_lstm, "/tmp/rnnc-inputs-export", input_size=I, hidden_size=H,
                      sizes={"E": E})
    src = open(exp.source).read()
    assert "x + (ptrdiff_t)t0 * B * %d + RNNC_SLICE_x_spk" % (I + E) in src
    assert "x_t[b * %d + RNNC_SLICE" % (I + E) not in src


BAD_RUNTIME = [
    (dict(x={"x": 0}), KeyError, "missing input 'u'"),
    (dict(x={"x": 0, "u": 0, "w": 0}), KeyError, "unknown input 'w'"),
    (dict(x={"x": np.zeros((T, B, I)), "u": np.zeros((T, B, H + 1))}), ValueError, "x['u']"),
    (dict(x={"x": np.zeros((T, B, I)), "u": np.zeros((T, B + 1, H))}), ValueError, "disagree"),
    (dict(context=None), ValueError, "context={'e'"),
    (dict(context={"e": np.zeros((B, E + 1))}), ValueError, "context['e']"),
    (dict(context={"e": np.zeros((B, E)), "f": 0}), KeyError, "unknown context input 'f'"),
    (dict(context={}), KeyError, "missing 'e'"),
    (dict(context=[1]), TypeError, "context: expected a dict"),
    (dict(context={"e": np.zeros((B, E), complex)}), TypeError, "context['e']"),
]


@pytest.mark.parametrize("change, error, text", BAD_RUNTIME)
def test_bad_inputs_and_contexts_are_named(change, error, text):
    kern = rc.compile(two_inputs, input_size=I, hidden_size=H, sizes={"E": E}, dtype="float64")
    args = dict(x={"x": np.zeros((T, B, I)), "u": np.zeros((T, B, H))},
                context={"e": np.zeros((B, E))})
    args.update(change)
    with pytest.raises(error, match=text.replace("[", r"\[").replace("(", r"\(")):
        kern.forward(kern.init_params(), args["x"], context=args["context"])


def test_a_context_given_to_a_cell_without_one_is_refused():
    kern = rc.compile(rc.cells.elman, input_size=I, hidden_size=H, dtype="float64")
    with pytest.raises(KeyError, match="unknown context input 'e'"):
        kern.forward(kern.init_params(), np.zeros((T, B, I)), context={"e": np.zeros(2)})


def _cell(fn, **kw):
    return rc.cell(states=("h",), **kw)(fn)


BAD_CELLS = [
    (lambda x, h, p: {"h": h}, dict(inputs={"x": "I", "h": "H"}), "'h' names both"),
    (lambda x, h, p: {"h": h}, dict(inputs=("x", "x")), "repeated"),
    (lambda x, h, p: {"h": h}, dict(inputs={"x": "I", "2u": "H"}), "not a valid name"),
    (lambda x, h, p: {"h": h}, dict(inputs=()), "at least one per-step input"),
    (lambda x, h, p: {"h": h}, dict(inputs={"x": "I", "u": "H"}), "expected the 2 inputs"),
    (lambda x, e, h, p: {"h": h}, dict(context={"e": 0}), "size"),
    (lambda x, e, h, p: {"h": h}, dict(context={"x": 2}), "'x' names both"),
    (lambda x, h, p: {"h": h}, dict(context=5), "tuple of names or a dict"),
]


@pytest.mark.parametrize("fn, kw, text", BAD_CELLS)
def test_misdeclared_inputs_are_refused_by_name(fn, kw, text):
    with pytest.raises(rc.CellError, match=text):
        _cell(fn, **kw)


def test_rc_models_pass_contexts_to_the_layers_that_read_them():
    """A 2-layer stack of speaker LSTMs reading one context: the model's gradient of the
    context is the sum over layers of each kernel's, and equals finite differences."""
    from rnncompiler import models as rm
    rnn = rm.RNN(speaker_lstm, I, H, num_layers=2, dtype="float64", sizes={"E": E})
    params = rnn.init(seed=0)
    rng = np.random.default_rng(4)
    x, e = rng.standard_normal((T, B, I)), rng.standard_normal((B, E))
    dy = rng.standard_normal((T, B, H))
    res = rnn.forward(params, x, LENGTHS, context={"spk": e})
    g = rnn.backward(res, dy)
    assert g.context["spk"].shape == (B, E)

    def loss(ee):
        return float((rnn.forward(params, x, LENGTHS, context={"spk": ee}).outputs * dy).sum())
    eps, num = 1e-6, np.zeros_like(e)
    for idx in np.ndindex(e.shape):
        d = np.zeros_like(e)
        d[idx] = eps
        num[idx] = (loss(e + d) - loss(e - d)) / (2 * eps)
    np.testing.assert_allclose(g.context["spk"], num, rtol=1e-6, atol=1e-9)
    y, _ = rnn.infer(params, x, LENGTHS, context={"spk": e})
    np.testing.assert_allclose(y, res.outputs, rtol=1e-12, atol=1e-14)
    with pytest.raises(KeyError, match="unknown context input 'q'"):
        rnn.forward(params, x, context={"spk": e, "q": e})
    with pytest.raises(KeyError, match="missing 'spk'"):
        rnn.forward(params, x, context={})


def test_the_layout_hoists_every_product_of_an_input_block():
    """The codegen stage alone: a product of an input or context block is a static part
    (a GEMM over T*B rows of the row, in place); a block read only by products is never
    copied per step (elided); with hoisted panels (exported kernels) a static part gets
    a forward panel only, a per-step part both."""
    from rnncompiler.compiler.autodiff import differentiate
    from rnncompiler.compiler.codegen.layout import plan_layout
    from rnncompiler.compiler.dsl import bind_sizes
    from rnncompiler.compiler.graph import build_graph, fuse_elementwise
    g = fuse_elementwise(build_graph(two_inputs.spec, bind_sizes(two_inputs, I, H, {"E": E})))
    bwd = differentiate(g)
    L = plan_layout(g, bwd, microkernel="float", hoisted_panels=True)
    parts = {p.operand: p for b in L.bundles for p in b.parts}
    assert set(parts) == {"state.h", "input.x", "input.u", "input.e"}
    for name in ("input.x", "input.u", "input.e"):
        assert parts[name].static and len(parts[name].panels) == 1, name
    assert not parts["state.h"].static and len(parts["state.h"].panels) == 2
    assert {"input.x", "input.e"} <= L.elided and "input.u" not in L.elided   # u * w_u reads u
    assert L.I == I + H + E
