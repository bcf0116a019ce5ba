"""Dropout and zoneout masks (rc.dropout, rc.zoneout): with the masks a run drew, the
kernel equals the same equations in PyTorch (outputs and every gradient, ragged batch);
masks are deterministic under a seed, have the rate asked for, and are at their
expectations at inference; misuse is refused by name."""
import numpy as np
import pytest

import rnncompiler as rc

torch = pytest.importorskip("torch")

T, B, I, H = 7, 3, 3, 4
LENGTHS = [T, T - 2, 1]


@rc.cell(states=("h", "c"), output="h")
def variational_lstm(x, h, c, p):
    """Gal & Ghahramani: one mask per sequence on x and on h[t-1], before every gate."""
    z = rc.concat(rc.dropout(h, 0.3, name="m_h"), rc.dropout(x, 0.2, name="m_x"))
    f = rc.sigmoid(p.linear("W_f", z, bias="b_f"))
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i"))
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o"))
    c_new = f * c + i * g
    return {"h": o * rc.tanh(c_new), "c": c_new}


@rc.cell(states=("h", "c"), output="h")
def zoneout_lstm(x, h, c, p):
    """Krueger et al.: each unit of h and c keeps its old value with its rate, per step."""
    z = rc.concat(h, x)
    f = rc.sigmoid(p.linear("W_f", z, bias="b_f"))
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i"))
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o"))
    c_new = rc.zoneout(f * c + i * g, c, 0.25, name="z_c")
    h_new = rc.zoneout(o * rc.tanh(c_new), h, 0.1, name="z_h")
    return {"h": h_new, "c": c_new}


def _gates(P, z, c):
    f = torch.sigmoid(z @ P["W_f"].T + P["b_f"])
    i = torch.sigmoid(z @ P["W_i"].T + P["b_i"])
    g = torch.tanh(z @ P["W_g"].T + P["b_g"])
    o = torch.sigmoid(z @ P["W_o"].T + P["b_o"])
    return f, i, g, o


def torch_variational(P, x, h, c, masks, t):
    z = torch.cat([h * masks["m_h"], x * masks["m_x"]], 1)
    f, i, g, o = _gates(P, z, c)
    c_new = f * c + i * g
    return o * torch.tanh(c_new), c_new


def torch_zoneout(P, x, h, c, masks, t):
    f, i, g, o = _gates(P, torch.cat([h, x], 1), c)
    mc, mh = masks["z_c"][t], masks["z_h"][t]
    c_new = mc * c + (1 - mc) * (f * c + i * g)
    h_new = mh * h + (1 - mh) * (o * torch.tanh(c_new))
    return h_new, c_new


def torch_run(step, P, x, h, c, masks, lengths):
    ys = []
    for t in range(x.shape[0]):
        h_new, c_new = step(P, x[t], h, c, masks, t)
        valid = torch.tensor([t < n for n in lengths])[:, None]
        h, c = torch.where(valid, h_new, h), torch.where(valid, c_new, c)
        ys.append(torch.where(valid, h_new, torch.zeros_like(h_new)))
    return torch.stack(ys), h, c


CASES = {"variational": (variational_lstm, torch_variational),
         "zoneout": (zoneout_lstm, torch_zoneout)}


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


@pytest.mark.parametrize("case", sorted(CASES))
def test_with_the_same_masks_the_kernel_equals_torch(case):
    cell, step = CASES[case]
    kern = rc.compile(cell, input_size=I, hidden_size=H, dtype="float64")
    rng = np.random.default_rng(1)
    params = kern.init_params(seed=2)
    x = rng.standard_normal((T, B, I))
    h0, c0 = 0.3 * rng.standard_normal((B, H)), 0.3 * rng.standard_normal((B, H))
    dy, dh, dc = rng.standard_normal((T, B, H)), rng.standard_normal((B, H)), rng.standard_normal((B, H))
    res = kern.forward(params, x, {"h": h0, "c": c0}, LENGTHS, seed=5)
    g = kern.backward(res, dy, {"h": dh, "c": dc})
    assert sorted(res.masks) == sorted(kern.masks)

    P = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    tx, th, tc = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    masks = {k: torch.tensor(v) for k, v in res.masks.items()}
    y, hT, cT = torch_run(step, P, tx, th, tc, masks, LENGTHS)
    ((y * torch.tensor(dy)).sum() + (hT * torch.tensor(dh)).sum()
     + (cT * torch.tensor(dc)).sum()).backward()
    assert _rel(res.outputs, y.detach()) < 1e-12
    assert _rel(res.states["h"], hT.detach()) < 1e-12 and _rel(res.states["c"], cT.detach()) < 1e-12
    for k in params:
        assert _rel(g.params[k], P[k].grad) < 1e-10, k
    assert _rel(g.x, tx.grad) < 1e-10
    assert _rel(g.state0["h"], th.grad) < 1e-10 and _rel(g.state0["c"], tc.grad) < 1e-10
    # the masks are at work: a run with others differs
    other = kern.forward(params, x, {"h": h0, "c": c0}, LENGTHS, seed=6)
    assert not np.allclose(other.outputs, res.outputs)


def test_masks_are_deterministic_under_a_seed_and_have_their_rates():
    kern = rc.compile(variational_lstm, input_size=I, hidden_size=H, dtype="float64")
    params, x = kern.init_params(), np.random.default_rng(0).standard_normal((T, B, I))
    a, b = kern.forward(params, x, seed=3), kern.forward(params, x, seed=3)
    np.testing.assert_array_equal(a.outputs, b.outputs)
    for k in kern.masks:
        np.testing.assert_array_equal(a.masks[k], b.masks[k])
        np.testing.assert_array_equal(a.masks[k], kern.draw_masks(T, B, seed=3)[k])
    assert a.masks["m_h"].shape == (B, H) and a.masks["m_x"].shape == (B, I)   # per sequence
    big = kern.draw_masks(2, 20000, seed=0)["m_h"]
    assert set(np.unique(big)) == {0.0, 1 / 0.7}
    assert abs(np.mean(big == 0) - 0.3) < 0.01
    zk = rc.compile(zoneout_lstm, input_size=I, hidden_size=H, dtype="float64")
    z = zk.draw_masks(50, 400, seed=1)
    assert z["z_c"].shape == (50, 400, H) and set(np.unique(z["z_c"])) == {0.0, 1.0}
    assert abs(z["z_c"].mean() - 0.25) < 0.01 and abs(z["z_h"].mean() - 0.1) < 0.01


@pytest.mark.parametrize("case", sorted(CASES))
def test_inference_uses_the_expectations(case):
    cell, step = CASES[case]
    kern = rc.compile(cell, input_size=I, hidden_size=H, dtype="float64")
    params = kern.init_params(seed=1)
    x = np.random.default_rng(2).standard_normal((T, B, I))
    y, _ = kern.infer(params, x, lengths=LENGTHS)
    np.testing.assert_array_equal(y, kern.forward(params, x, lengths=LENGTHS, training=False).outputs)
    ref_y, _ = rc.reference(cell, I, H).infer(params, x, lengths=LENGTHS)
    np.testing.assert_allclose(y, ref_y, rtol=1e-12, atol=1e-14)
    expected = {k: torch.full((T, B, m.size) if m.per == "step" else (B, m.size), m.expectation,
                              dtype=torch.float64) for k, m in kern.masks.items()}
    ty, _, _ = torch_run(step, {k: torch.tensor(v) for k, v in params.items()}, torch.tensor(x),
                         torch.zeros(B, H, dtype=torch.float64), torch.zeros(B, H, dtype=torch.float64),
                         expected, LENGTHS)
    np.testing.assert_allclose(y, ty.numpy(), rtol=1e-12, atol=1e-14)
    if case == "variational":       # dropout at inference is the identity
        assert all(m.expectation == 1.0 for m in kern.masks.values())
    else:                           # zoneout: rate·old + (1-rate)·new
        assert kern.masks["z_c"].expectation == 0.25


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradcheck_holds_with_the_masks(case):
    report = rc.gradcheck(CASES[case][0], input_size=I, hidden_size=H, lengths=[5, 2])
    assert report.ok, report


def test_a_float32_kernel_with_the_same_masks_agrees_with_float64():
    k64 = rc.compile(zoneout_lstm, input_size=I, hidden_size=H, dtype="float64")
    k32 = rc.compile(zoneout_lstm, input_size=I, hidden_size=H, dtype="float32")
    params, x = k64.init_params(seed=0), np.random.default_rng(0).standard_normal((T, B, I))
    masks = k64.draw_masks(T, B, seed=9)
    a, b = k64.forward(params, x, masks=masks), k32.forward(params, x, masks=masks)
    np.testing.assert_allclose(b.outputs, a.outputs, rtol=1e-5, atol=1e-6)


def _declare(body):
    return rc.cell(states=("h",))(body)


BAD_CELLS = [
    (lambda x, h, p: {"h": rc.dropout(h, 1.0)}, "rate is the probability"),
    (lambda x, h, p: {"h": rc.dropout(h, -0.1)}, r"\[0, 1\)"),
    (lambda x, h, p: {"h": rc.dropout(h, "half")}, "rate"),
    (lambda x, h, p: {"h": rc.dropout(h, 0.1, per="batch")}, "per="),
    (lambda x, h, p: {"h": rc.dropout(h, 0.1, name="m") + rc.dropout(h, 0.1, name="m")}, "taken"),
    (lambda x, h, p: {"h": rc.dropout(h, 0.1, name="h w")}, "not a valid name"),
    (lambda x, h, p: {"h": rc.zoneout(h, 0.5, 0.1)}, "old value as a vector"),
    (lambda x, h, p: {"h": rc.zoneout(h, rc.sum(h), 0.1)}, "old value as a vector"),
    (lambda x, h, p: {"h": rc.dropout(rc.sum(h), 0.1) + h}, "takes a vector"),
]


@pytest.mark.parametrize("body, text", BAD_CELLS)
def test_misused_masks_are_refused_by_name(body, text):
    with pytest.raises(rc.CellError, match=text):
        _declare(body)


def test_a_mask_outside_a_cell_is_refused():
    with pytest.raises(rc.CellError, match="inside a cell function"):
        rc.dropout(object(), 0.1)
    with pytest.raises(rc.CellError, match="rc.zoneout is used inside a cell function"):
        rc.zoneout(np.ones(3), np.zeros(3), 0.5)


BAD_MASKS = [
    (lambda k: {"m_h": np.ones((B, H))}, KeyError, "missing 'm_x'"),
    (lambda k: {**k.draw_masks(T, B), "m_q": 1}, KeyError, "unknown mask 'm_q'"),
    (lambda k: {**k.draw_masks(T, B), "m_h": np.ones((T, B, H))}, ValueError, r"masks\['m_h'\]"),
    (lambda k: [1], TypeError, "masks: expected a dict"),
]


@pytest.mark.parametrize("masks, error, text", BAD_MASKS)
def test_bad_masks_given_to_forward_are_named(masks, error, text):
    kern = rc.compile(variational_lstm, input_size=I, hidden_size=H, dtype="float64")
    with pytest.raises(error, match=text):
        kern.forward(kern.init_params(), np.zeros((T, B, I)), masks=masks(kern))


def test_a_model_of_a_masked_cell_draws_masks_in_training_only():
    from rnncompiler import models as rm
    model = rm.SequenceModel(zoneout_lstm, 8, input_size=2, output_size=1, readout="last",
                             loss="mse")
    params = model.init(seed=0)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((12, 16, 2)).astype(np.float32)
    y = x[:, :, :1].sum(axis=0)
    a = model.forward(params, x, train=True, rng=1).rnn.outputs
    b = model.forward(params, x, train=True, rng=2).rnn.outputs
    c = model.forward(params, x, train=True, rng=1).rnn.outputs
    assert not np.allclose(a, b) and np.array_equal(a, c)
    np.testing.assert_array_equal(model.predict(params, x), model.predict(params, x))
    infer = model.forward(params, x).rnn.outputs             # train=False: expectations
    kern = model.rnn.kernels[0]
    np.testing.assert_allclose(infer, kern.infer(params["rnn"]["layer0"]["fwd"]["cell"], x)[0],
                               rtol=1e-6)
    opt = rm.Adam(0.02)
    first = None
    for step in range(60):
        loss, grads = model.loss_and_grads(params, x, y, train=True, rng=step)
        first = loss if first is None else first
        opt.step(params, grads)
    assert loss < 0.5 * first


def test_rtrl_reads_the_whole_row_of_a_masked_cell():
    rt = rc.rtrl(zoneout_lstm, I, H)
    ref = rc.reference(zoneout_lstm, I, H).rows()
    assert rt.input_size == I + 2 * H == ref.input_size
    params = rt.init_params(seed=0)
    x = np.random.default_rng(0).standard_normal((5, 2, rt.input_size))
    dy = np.random.default_rng(1).standard_normal((5, 2, H))
    g, gb = rt.gradients(params, x, d_outputs=dy), ref.backward(ref.forward(params, x), dy)
    for k in gb.params:
        np.testing.assert_allclose(g.params[k], gb.params[k], rtol=1e-10, atol=1e-13)


def test_the_gradient_flow_of_a_training_run_is_that_run_s():
    """RNN.gradient_flow on a result of forward(train=True) reads the masks that run drew:
    its norms are those of kern.backward(state_grads=True) on the run itself."""
    from rnncompiler import models as rm
    rnn = rm.RNN(zoneout_lstm, I, H, dtype="float64")
    params = rnn.init(seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, I))
    res = rnn.forward(params, x, train=True, rng=3)
    dy = np.zeros_like(res.outputs)
    dy[-1] = 1.0
    g = rnn.backward(res, dy)
    flow = rnn.gradient_flow(params, res, g)
    kern, run = rnn.kernels[0], res._layers[0].results["fwd"]
    own = kern.backward(run, dy, state_grads=True).states["c"]
    np.testing.assert_allclose(flow.norms["c"], np.sqrt((own ** 2).sum(axis=(1, 2))), rtol=1e-10)


def test_tracing_puts_the_masks_after_the_inputs_of_the_row():
    """The cell-language stage alone: a mask is a slice of the input row after the inputs;
    a cell that read the row as its one input now reads it through a slice of its first
    columns, also where it returns x itself."""
    @rc.cell(states=("h",))
    def echo(x, h, p):
        return {"h": rc.dropout(h, 0.5, name="m") + p.linear("W", x, size="H")}, x

    nodes = {n.id: n for n in echo.spec.nodes}
    assert str(nodes["x"].size) == "H+I"
    assert nodes["input.x"].op == "slice" and nodes["input.x"].args == ("x",)
    assert str(nodes["input.x"].size) == "I" and str(nodes["input.x"].offset) == "0"
    assert str(nodes["mask.m"].offset) == "I" and str(nodes["mask.m"].size) == "H"
    readers = [n for n in echo.spec.nodes if "x" in n.args]
    assert {n.id for n in readers} == {"input.x", "mask.m"}
    assert nodes[echo.spec.output].args == ("input.x",)       # y = x reads the slice
    assert echo.masks == {"m": ("dropout", 0.5, "sequence")}
