"""Slices and splits of vectors: v[a:b] and rc.split(v, sizes), through every stage (the
op registry's "slice" entry), against finite differences, the reference, and an LSTM
written with one fused weight and split into its gates against torch.nn.LSTM."""
import re

import numpy as np
import pytest

import rnncompiler as rc


@rc.cell(states=("h", "c"), output="h")
def lstm_split(x, h, c, p):
    a = p.linear("W_ih", x, size="4*H", bias="b_ih") + p.linear("W_hh", h, size="4*H", bias="b_hh")
    i, f, g, o = rc.split(a, ("H", "H", "H", "H"))
    c_new = rc.sigmoid(f) * c + rc.sigmoid(i) * rc.tanh(g)
    return {"h": rc.sigmoid(o) * rc.tanh(c_new), "c": c_new}


@rc.cell(states={"h": "H", "r": "I"})
def slicer(x, h, r, p):
    """Every way of writing bounds: ints, negative ints, None, size names."""
    z = rc.concat(h, x, r)
    head, tail = z[:"H"], z[-2:]
    mid = z[1:3]
    y = rc.tanh(p.linear("W", rc.concat(head, tail, mid)))
    return {"h": y, "r": z["H":"H+I"] * 0.5}, y[0:2]


def test_a_split_lstm_gradchecks_with_lengths():
    report = rc.gradcheck(lstm_split, input_size=3, hidden_size=4, T=5, B=3, lengths=[5, 0, 3])
    assert report.ok, report


def test_every_bound_form_gradchecks_and_matches_the_reference():
    assert rc.gradcheck(slicer, input_size=3, hidden_size=4, T=4, B=2).ok
    kern = rc.compile(slicer, 3, 4, "float64")
    ref = rc.reference(slicer, 3, 4)
    rng = np.random.default_rng(0)
    params = kern.init_params(seed=0)
    x = rng.standard_normal((4, 2, 3))
    got, want = kern.forward(params, x), ref.forward(params, x)
    assert got.outputs.shape == (4, 2, 2)
    assert np.allclose(got.outputs, want.outputs, rtol=1e-12, atol=1e-14)
    # r[t] = x[t] / 2 exactly: the slice z[H:H+I] of concat(h, x, r) is x
    assert np.array_equal(got.states["r"], x[-1] * 0.5)


def _torch_lstm_run(params, x, state0, lengths, dy):
    import torch
    T, B, I = x.shape
    H = dy.shape[2]
    lstm = torch.nn.LSTM(I, H, dtype=torch.float64)
    with torch.no_grad():
        for k in ("W_ih", "W_hh", "b_ih", "b_hh"):
            name = ("weight_" if k[0] == "W" else "bias_") + k[2:] + "_l0"
            getattr(lstm, name).copy_(torch.as_tensor(params[k]))
    xt = torch.tensor(x, requires_grad=True)
    h0 = torch.tensor(state0["h"], requires_grad=True)
    c0 = torch.tensor(state0["c"], requires_grad=True)
    ys, hT, cT = [], [], []
    for b in range(B):
        n = int(lengths[b])
        if n == 0:
            ys.append(torch.zeros(T, H, dtype=torch.float64))
            hT.append(h0[b])
            cT.append(c0[b])
            continue
        y, (h, c) = lstm(xt[:n, b:b + 1], (h0[None, b:b + 1], c0[None, b:b + 1]))
        ys.append(torch.cat([y[:, 0], torch.zeros(T - n, H, dtype=torch.float64)]))
        hT.append(h[0, 0])
        cT.append(c[0, 0])
    y = torch.stack(ys, 1)
    (y * torch.as_tensor(dy)).sum().backward()
    grads = {k: getattr(lstm, ("weight_" if k[0] == "W" else "bias_") + k[2:] + "_l0").grad.numpy()
             for k in ("W_ih", "W_hh", "b_ih", "b_hh")}
    return (y.detach().numpy(), {"h": torch.stack(hT).detach().numpy(),
                                 "c": torch.stack(cT).detach().numpy()},
            grads, xt.grad.numpy(), {"h": h0.grad.numpy(), "c": c0.grad.numpy()})


def test_a_split_lstm_is_torch_nn_lstm():
    """One fused (4H x I) weight split into the gates i, f, g, o is torch's own layout."""
    pytest.importorskip("torch")
    kern = rc.compile(lstm_split, 3, 4, "float64")
    rng = np.random.default_rng(1)
    params = {k: rng.uniform(-0.5, 0.5, v.shape) for k, v in kern.init_params(seed=1).items()}
    x = rng.standard_normal((5, 3, 3))
    state0 = {s: rng.standard_normal((3, 4)) for s in ("h", "c")}
    lengths = np.array([5, 0, 3])
    dy = rng.standard_normal((5, 3, 4))
    res = kern.forward(params, x, state0, lengths=lengths)
    g = kern.backward(res, dy)
    y, states, grads, dx, d0 = _torch_lstm_run(params, x, state0, lengths, dy)
    pairs = [(res.outputs, y), (g.x, dx)] + [(res.states[s], states[s]) for s in states]
    pairs += [(g.params[k], grads[k]) for k in grads] + [(g.state0[s], d0[s]) for s in d0]
    for got, want in pairs:
        assert np.max(np.abs(got - want)) <= 1e-9 * max(1.0, np.max(np.abs(want)))


def test_slices_read_as_slices():
    text = str(rc.compile(lstm_split, 3, 4).equations())
    assert "i[t] = a[t][0:4]" in text and "δa[t][4:8] += δf[t]" in text


def test_the_c_names_a_slice_offset():
    from rnncompiler.compiler.dsl import bind_sizes
    from rnncompiler.compiler.pipeline import lower
    _, _, csrc = lower(lstm_split, bind_sizes(lstm_split, 3, 4, None), "float64", blas=False)
    assert re.findall(r"RNNC_SLICE_\w+ = \d+", csrc.text) == [
        "RNNC_SLICE_v1_i = 0", "RNNC_SLICE_v2_f = 4", "RNNC_SLICE_v3_g = 8", "RNNC_SLICE_v4_o = 12"]
    assert "o[t] = a[t][12:16]" in csrc.text


@rc.cell(states=("h",))
def shifted(x, h, p):
    return {"h": rc.concat(h[1:], x[0:1]) * 0.5}


@rc.cell(states=("h",))
def whole(x, h, p):
    return {"h": h[0:"H"] * 0.5 + p.linear("W", x)}


def test_a_slice_that_moves_units_is_dense_and_a_whole_one_is_not():
    assert rc.compile(shifted, 2, 3).recurrence()["h"].kind == "linear"
    assert "slice" in rc.compile(shifted, 2, 3).recurrence()["h"].reason
    assert rc.compile(whole, 2, 3).recurrence()["h"].kind == "diagonal-linear"


def _cell(body):
    @rc.cell(states=("h",))
    def bad(x, h, p):
        return {"h": body(x, h, p)}
    return bad


@pytest.mark.parametrize("body, match", [
    (lambda x, h, p: h[0:2:2] * 1.0, "step 1"),
    (lambda x, h, p: h[0.5:2] * 1.0, "an int, a size"),
    (lambda x, h, p: h[0] * 1.0, "indexing"),
    (lambda x, h, p: rc.split(h, ("H", 1))[0], "add up to"),
    (lambda x, h, p: rc.split(h, "H")[0], "tuple of sizes"),
    (lambda x, h, p: rc.sum(h)[0:1] * h, "broadcast scalar"),
])
def test_misused_slices_are_refused_when_traced(body, match):
    with pytest.raises(rc.CellError, match=match):
        _cell(body)


def test_a_slice_out_of_range_is_refused_when_sizes_are_bound():
    cell = _cell(lambda x, h, p: rc.concat(h[2:6], h[0:2]))
    with pytest.raises(rc.CellError, match=r"slice \[2:6\] is out of range for h \(t-1\), of size 4"):
        rc.compile(cell, 3, 4)
    assert rc.gradcheck(cell, input_size=3, hidden_size=6).ok     # in range for H = 6
