"""Training: optimizers step for step against torch.optim (float64), clipping against
torch.nn.utils.clip_grad_norm_, truncated BPTT against full BPTT and a torch reference
with detached states, the training loop, and checkpoints."""
import io
import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from rnncompiler import models as rm  # noqa: E402

import cells  # noqa: E402  (tests/cells.py)


@pytest.fixture(autouse=True)
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- optimizers and clipping --------------------------------------------------------------

OPTIMIZERS = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("SGD", dict(lr=0.05, momentum=0.5, dampening=0.3)),
    ("RMSProp", dict(lr=0.01)),
    ("RMSProp", dict(lr=0.01, alpha=0.9, momentum=0.8, centered=True, weight_decay=0.1)),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), amsgrad=True, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1)),
]
TORCH_NAMES = {"RMSProp": "RMSprop"}


def random_tree(rng):
    return {"enc": {"W": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)},
            "gain": np.array(rng.standard_normal())}


@pytest.mark.parametrize("name,kw", OPTIMIZERS, ids=lambda v: str(v) if isinstance(v, str) else
                         ",".join("%s=%s" % kv for kv in v.items()))
def test_optimizer_matches_torch_step_for_step(name, kw):
    rng = np.random.default_rng(0)
    params = random_tree(rng)
    paths = list(rm.flatten(params))
    tensors = [torch.tensor(v.copy(), requires_grad=True) for v in rm.flatten(params).values()]
    ours = getattr(rm, name)(**kw)
    theirs = getattr(torch.optim, TORCH_NAMES.get(name, name))(tensors, **kw)
    for step in range(8):
        grads = rm.tree_map(lambda v: rng.standard_normal(v.shape), params)
        if step == 3:                   # a parameter without a gradient is skipped
            del grads["enc"]["b"]
        flat = rm.flatten(grads)
        for path, t in zip(paths, tensors):
            t.grad = torch.tensor(flat[path]) if path in flat else None
        ours.step(params, grads)
        theirs.step()
        for path, t in zip(paths, tensors):
            np.testing.assert_allclose(rm.flatten(params)[path], t.detach().numpy(), rtol=0,
                                       atol=1e-12, err_msg="%s at step %d" % (path, step))


def test_learning_rate_schedule_matches_torch_lambda_lr():
    rng = np.random.default_rng(1)
    params = random_tree(rng)
    tensors = [torch.tensor(v.copy(), requires_grad=True) for v in rm.flatten(params).values()]
    schedule = lambda k: 0.1 / (1 + k)        # noqa: E731
    ours = rm.SGD(lr=schedule, momentum=0.9)
    theirs = torch.optim.SGD(tensors, lr=1.0, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(theirs, schedule)
    for _ in range(5):
        grads = rm.tree_map(lambda v: rng.standard_normal(v.shape), params)
        for t, g in zip(tensors, rm.flatten(grads).values()):
            t.grad = torch.tensor(g)
        ours.step(params, grads)
        theirs.step()
        sched.step()
    for v, t in zip(rm.flatten(params).values(), tensors):
        np.testing.assert_allclose(v, t.detach().numpy(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("max_norm", [0.5, 1e3])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_clip_grad_norm_matches_torch(max_norm, norm_type):
    rng = np.random.default_rng(2)
    grads = rm.tree_map(lambda v: np.asarray(3 * rng.standard_normal(v.shape)),
                        random_tree(rng))
    tensors = [torch.zeros(v.shape, dtype=torch.float64, requires_grad=True)
               for v in rm.flatten(grads).values()]
    for t, g in zip(tensors, rm.flatten(grads).values()):
        t.grad = torch.tensor(g.copy())
    total = rm.clip_grad_norm(grads, max_norm, norm_type)
    want = torch.nn.utils.clip_grad_norm_(tensors, max_norm, norm_type)
    assert total == pytest.approx(float(want), rel=1e-13)
    for t, g in zip(tensors, rm.flatten(grads).values()):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-13)
    # afterwards the norm is max_norm (up to torch's 1e-6) when it was larger, else unchanged
    assert rm.clip_grad_norm(grads, 1e30, norm_type) == pytest.approx(min(total, max_norm),
                                                                      rel=1e-5)


def test_optimizer_errors_name_the_argument():
    params = {"W": np.zeros((2, 2))}
    with pytest.raises(KeyError, match="grads: 'V' is not a parameter"):
        rm.SGD(0.1).step(params, {"V": np.zeros((2, 2))})
    with pytest.raises(ValueError, match=r"grads\['W'\]: expected shape \(2, 2\)"):
        rm.Adam().step(params, {"W": np.zeros(3)})
    with pytest.raises(TypeError, match=r"params\['W'\]: expected a writeable float"):
        rm.SGD(0.1).step({"W": [[0.0]]}, {"W": np.zeros((1, 1))})
    with pytest.raises(ValueError, match="nesterov: needs momentum > 0"):
        rm.SGD(0.1, nesterov=True)
    with pytest.raises(ValueError, match="lr: expected a learning rate"):
        rm.SGD(-1.0)


# --- truncated BPTT -----------------------------------------------------------------------

I, H, V, B = 3, 4, 5, 2


@pytest.fixture(scope="module")
def stream_model():
    model = rm.SequenceModel(cells.lstm, H, input_size=I, output_size=V, num_layers=2,
                             learn_state0=True, dtype="float64")
    rng = np.random.default_rng(0)
    params = model.init(seed=1)
    for leaf in rm.flatten(params).values():
        leaf += rng.uniform(-0.2, 0.2, leaf.shape)
    x = rng.standard_normal((11, B, I))
    y = rng.integers(0, V, (11, B))
    return model, params, x, y


def t_lstm_step(p, x, h, c):
    z = torch.cat([h, x], 1)
    f = torch.sigmoid(z @ p["W_f"].T + p["b_f"])
    i = torch.sigmoid(z @ p["W_i"].T + p["b_i"])
    g = torch.tanh(z @ p["W_g"].T + p["b_g"])
    o = torch.sigmoid(z @ p["W_o"].T + p["b_o"])
    c = f * c + i * g
    return o * torch.tanh(c), c


def torch_tbptt(params, x, y, k1, k2, lr):
    """Williams & Peng's BPTT(k2; k1), written directly: after every k1 steps, restart from
    the detached state recorded k2 steps back, run to the present, take the loss of the last
    k1 steps, backpropagate, update (torch.optim.SGD)."""
    P = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in rm.flatten(params).items()}
    opt = torch.optim.SGD(list(P.values()), lr=lr)
    layers = ["rnn/layer0/fwd/", "rnn/layer1/fwd/"]
    cell = [{k[len(pre) + 5:]: v for k, v in P.items() if k.startswith(pre + "cell/")}
            for pre in layers]
    N, recorded, losses = len(x), {0: None}, []
    for n in range(-(-N // k1)):
        t_end = min((n + 1) * k1, N)
        w = max(0, t_end - k2)
        states = recorded[w] or [(P[pre + "state0/h"].expand(B, H),
                                  P[pre + "state0/c"].expand(B, H)) for pre in layers]
        logits = []
        for t in range(w, t_end):
            inp, new = torch.tensor(x[t]), []
            for p, (h, c) in zip(cell, states):
                h, c = t_lstm_step(p, inp, h, c)
                new.append((h, c))
                inp = h
            states = new
            recorded[t + 1] = [(h.detach(), c.detach()) for h, c in new]
            logits.append(inp @ P["head/W"].T + P["head/b"])
        logits = torch.stack(logits[n * k1 - w:])
        loss = F.cross_entropy(logits.reshape(-1, V), torch.tensor(y[n * k1:t_end]).reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {k: v.detach().numpy() for k, v in P.items()}, losses


@pytest.mark.parametrize("k1,k2", [(3, 5), (4, 4), (2, 7), (5, 11)])
def test_truncated_bptt_matches_torch_with_detached_states(stream_model, k1, k2):
    model, params, x, y = stream_model
    params = rm.tree_map(np.copy, params)
    want, want_losses = torch_tbptt(params, x, y, k1, k2, lr=0.5)
    tb = rm.TBPTT(model, k1, k2)
    hist = rm.fit(tb.loss_and_grads, params, rm.SGD(0.5), lambda epoch: tb.windows(x, y),
                  progress=False)
    np.testing.assert_allclose(hist.losses, want_losses, rtol=1e-12)
    for path, v in rm.flatten(params).items():
        np.testing.assert_allclose(v, want[path], rtol=0, atol=1e-12, err_msg=path)


def test_truncated_bptt_with_k1_equal_k2_equal_T_is_full_bptt(stream_model):
    model, params, x, y = stream_model
    tb = rm.TBPTT(model, len(x))
    (batch,) = list(tb.windows(x, y))
    loss, grads = tb.loss_and_grads(params, *batch)
    full_loss, full = model.loss_and_grads(params, x, y)
    assert loss == full_loss
    for path, v in rm.flatten(full).items():
        np.testing.assert_array_equal(rm.flatten(grads)[path], v, err_msg=path)
    res = model.forward(params, x)
    for s, v in rm.flatten(res.states).items():
        np.testing.assert_array_equal(rm.flatten(tb.state)[s], v)


def test_truncated_bptt_errors(stream_model):
    model = stream_model[0]
    with pytest.raises(ValueError, match="k2: expected k2 >= k1"):
        rm.TBPTT(model, 5, 3)
    with pytest.raises(ValueError, match="k1: expected an int >= 1"):
        rm.TBPTT(model, 0)
    bi = rm.SequenceModel(cells.lstm, H, input_size=I, output_size=V, bidirectional=True,
                          dtype="float64")
    with pytest.raises(ValueError, match="model: truncated BPTT needs a unidirectional"):
        rm.TBPTT(bi, 5)


# --- the training loop --------------------------------------------------------------------

def toy_classification(n_batches, seed=0):
    """Is the sum of a variable-length sequence's first feature positive?"""
    rng = np.random.default_rng(seed)
    batches = []
    for _ in range(n_batches):
        x = rng.standard_normal((6, 8, I))
        L = rng.integers(2, 7, 8)
        total = (x[..., 0] * (np.arange(6)[:, None] < L)).sum(0)
        batches.append((x, (total > 0).astype(np.int64), L))
    return batches


def test_fit_lowers_the_loss_and_records_history():
    model = rm.SequenceModel(cells.lstm, H, input_size=I, output_size=2, readout="last",
                             dtype="float64")
    params = model.init(seed=0)
    batches = toy_classification(10)
    out = io.StringIO()

    def loss_and_grads(p, x, y, L):
        return model.loss_and_grads(p, x, y, L)
    hist = rm.fit(loss_and_grads, params, rm.Adam(0.05), batches, epochs=6, clip=5.0, stream=out)
    assert len(hist.losses) == 60 and len(hist.epochs) == 6 and len(hist.grad_norms) == 60
    assert hist.epochs[-1] < 0.7 * hist.epochs[0]
    assert "60/60" in out.getvalue() and "updates" in str(hist)
    assert hist.smoothed(10).shape == (51,)


def test_fit_stops_on_time_limit_or_callback_and_refuses_nan():
    params = {"w": np.ones(2)}

    def quadratic(p):
        return float(np.sum(p["w"] ** 2)), {"w": 2 * p["w"]}
    hist = rm.fit(quadratic, params, rm.SGD(0.1), [()] * 50, time_limit=0.0, progress=False)
    assert len(hist.losses) == 1 and hist.stopped == "time limit"
    hist = rm.fit(quadratic, params, rm.SGD(0.1), [()] * 50, progress=False,
                  callback=lambda k, loss, p: k == 3)
    assert len(hist.losses) == 3 and hist.stopped == "callback"
    assert hist.losses[2] < hist.losses[0]
    with pytest.raises(FloatingPointError, match="the loss is nan at update 0"):
        rm.fit(lambda p: (float("nan"), {"w": p["w"]}), params, rm.SGD(0.1), [()], progress=False)
    with pytest.raises(TypeError, match="batches: an iterator is used up"):
        rm.fit(quadratic, params, rm.SGD(0.1), iter([()]), epochs=2, progress=False)
    with pytest.raises(ValueError, match="epochs: None .* needs a time_limit or a callback"):
        rm.fit(quadratic, params, rm.SGD(0.1), [()], epochs=None, progress=False)
    hist = rm.fit(quadratic, params, rm.SGD(0.1), [()] * 4, epochs=None, progress=False,
                  callback=lambda k, loss, p: k == 10)
    assert len(hist.losses) == 10 and len(hist.epochs) == 3


def test_history_plots_the_loss():
    pytest.importorskip("matplotlib")
    hist = rm.History(losses=list(np.linspace(2, 1, 40)))
    ax = hist.plot(label="run")
    assert len(ax.lines) == 2 and ax.get_legend() is not None
    np.testing.assert_allclose(ax.lines[1].get_ydata(), hist.smoothed())


# --- checkpoints --------------------------------------------------------------------------

def test_save_and_load_round_trip_with_optimizer_state(stream_model, tmp_path):
    model, params, x, y = stream_model
    params = rm.tree_map(np.copy, params)
    opt = rm.Adam(0.01)
    for _ in range(3):
        opt.step(params, model.loss_and_grads(params, x, y)[1])
    path = str(tmp_path / "ckpt.npz")
    rm.save(path, {"params": params, "opt": opt.state_dict()})
    assert os.listdir(tmp_path) == ["ckpt.npz"]           # no temporary file left behind
    saved = rm.load(path)
    p2 = rm.load(path, like={"params": params, "opt": opt.state_dict()})["params"]
    for k, v in rm.flatten(params).items():
        assert rm.flatten(p2)[k].dtype == v.dtype
        np.testing.assert_array_equal(rm.flatten(p2)[k], v)
    opt2 = rm.Adam(0.01)
    opt2.load_state_dict(saved["opt"])
    for _ in range(2):
        opt.step(params, model.loss_and_grads(params, x, y)[1])
        opt2.step(p2, model.loss_and_grads(p2, x, y)[1])
    for k, v in rm.flatten(params).items():
        np.testing.assert_array_equal(rm.flatten(p2)[k], v)


def test_load_refuses_a_checkpoint_of_another_model(stream_model, tmp_path):
    model, params = stream_model[:2]
    path = str(tmp_path / "p.npz")
    rm.save(path, params)
    other = rm.tree_map(np.copy, params)
    other["head"]["W"] = np.zeros((V + 1, H))
    with pytest.raises(ValueError, match=r"load\(.*\)\['head/W'\]: expected shape \(6, 4\)"):
        rm.load(path, like=other)
    del other["head"]
    with pytest.raises(KeyError, match="unexpected 'head/W'"):
        rm.load(path, like=other)
