"""Sequence models on compiled cells: whole-model gradients (stacked + bidirectional +
head + loss, with lengths) against central finite differences and against the same model
written step by step in torch; bidirectional reading within lengths; dropout; losses;
generation; the encoder–decoder; gradient flow inside a model; errors."""
import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import rnncompiler as rc  # noqa: E402
from rnncompiler import models as rm  # noqa: E402

import cells  # noqa: E402  (tests/cells.py)


@pytest.fixture(autouse=True)
def one_torch_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# --- the torch reference: the same model, step by step, differentiated by autograd ---------

def t_lstm(p, x, s):
    z = torch.cat([s["h"], x], 1)
    f = torch.sigmoid(z @ p["W_f"].T + p["b_f"])
    i = torch.sigmoid(z @ p["W_i"].T + p["b_i"])
    g = torch.tanh(z @ p["W_g"].T + p["b_g"])
    o = torch.sigmoid(z @ p["W_o"].T + p["b_o"])
    c = f * s["c"] + i * g
    h = o * torch.tanh(c)
    return {"h": h, "c": c}, h


def t_elman(p, x, s):
    h = torch.tanh(torch.cat([s["h"], x], 1) @ p["W"].T + p["b"])
    return {"h": h}, h


def t_gru(p, x, s):
    h = s["h"]
    r = torch.sigmoid(x @ p["W_ir"].T + p["b_ir"] + h @ p["W_hr"].T + p["b_hr"])
    u = torch.sigmoid(x @ p["W_iz"].T + p["b_iz"] + h @ p["W_hz"].T + p["b_hz"])
    n = torch.tanh(x @ p["W_in"].T + p["b_in"] + r * (h @ p["W_hn"].T + p["b_hn"]))
    h = (1 - u) * n + u * h
    return {"h": h}, h


TORCH_CELLS = {"lstm": t_lstm, "elman": t_elman, "gru": t_gru}


def t_run(step, p, x, lengths, s0):
    """One direction over (T, B, I): rows past their length keep state, output zero."""
    s, ys = dict(s0), []
    for t in range(x.shape[0]):
        new, y = step(p, x[t], s)
        valid = torch.tensor([t < L for L in lengths]).unsqueeze(1)
        s = {k: torch.where(valid, new[k], s[k]) for k in s}
        ys.append(torch.where(valid, y, torch.zeros_like(y)))
    return torch.stack(ys), s


def t_reverse(x, lengths):
    """Each row's first L steps reversed, written row by row."""
    rows = [torch.cat([x[:L, b].flip(0), x[L:, b]]) for b, L in enumerate(lengths)]
    return torch.stack(rows, 1)


def torch_model(model, P, x, lengths, state0=None, keep=None):
    """The predictions of `model` (a SequenceModel) computed in torch from the tensors P
    (path -> tensor). `keep` collects every layer's state sequence for gradient-flow checks."""
    rnn = model.rnn
    T, B = x.shape[:2]
    lengths = [T] * B if lengths is None else list(lengths)
    h = P["embed/table"][torch.as_tensor(x)] if model.embedding else x
    for l, kern in enumerate(rnn.kernels):
        outs = []
        for d in rnn.directions:
            pre = "rnn/layer%d/%s/" % (l, d)
            cell = {k[len(pre) + 5:]: v for k, v in P.items() if k.startswith(pre + "cell/")}
            s0 = {}
            for s, n in kern.state_sizes.items():
                given = (state0 or {}).get("layer%d" % l, {}).get(d, {}).get(s)
                if given is not None:
                    s0[s] = given
                elif pre + "state0/" + s in P:
                    s0[s] = P[pre + "state0/" + s].expand(B, n)
                else:
                    s0[s] = torch.zeros(B, n, dtype=torch.float64)
            xin = h if d == "fwd" else t_reverse(h, lengths)
            y, _ = t_run_keep(TORCH_CELLS[kern.name], cell, xin, lengths, s0, keep, (l, d))
            outs.append(y if d == "fwd" else t_reverse(y, lengths))
        h = torch.cat(outs, 2)
    if model.readout != "steps":
        rows = range(B)
        half = h.shape[2] // 2
        if model.readout == "last" or (model.readout == "ends" and len(rnn.directions) == 1):
            h = torch.stack([h[lengths[b] - 1, b] for b in rows])
        elif model.readout == "mean":
            h = torch.stack([h[:lengths[b], b].mean(0) for b in rows])
        else:
            h = torch.stack([torch.cat([h[lengths[b] - 1, b, :half], h[0, b, half:]])
                             for b in rows])
    if model.head:
        h = h @ P["head/W"].T + P["head/b"]
    return h, lengths


def t_run_keep(step, p, x, lengths, s0, keep, key):
    if keep is None:
        return t_run(step, p, x, lengths, s0)
    s, ys, seq = dict(s0), [], []
    for t in range(x.shape[0]):
        new, y = step(p, x[t], s)
        valid = torch.tensor([t < L for L in lengths]).unsqueeze(1)
        s = {k: torch.where(valid, new[k], s[k]) for k in s}
        for v in s.values():
            v.retain_grad()
        seq.append(s)
        # the output read from the kept state: the kernel's dL/ds_t is the gradient of the
        # state after step t as what the next step and the output (a state) read
        ys.append(torch.where(valid, s["h"], torch.zeros_like(y)))
    keep[key] = seq
    return torch.stack(ys), s


def torch_loss(model, preds, targets, lengths):
    if model.readout == "steps":
        valid = torch.tensor([[t < L for L in lengths] for t in range(preds.shape[0])])
        preds, targets = preds[valid], torch.as_tensor(targets)[valid]
    else:
        targets = torch.as_tensor(targets)
    if model.loss_name == "cross_entropy":
        return F.cross_entropy(preds, targets)
    return F.mse_loss(preds, targets)


def torch_grads(model, params, x, targets, lengths, state0=None, token_input=False):
    P = {k: torch.tensor(v, requires_grad=True) for k, v in rm.flatten(params).items()}
    xt = x if token_input else torch.tensor(x, requires_grad=True)
    s0 = None
    if state0 is not None:
        s0 = rm.tree_map(lambda a: torch.tensor(a, requires_grad=True), state0)
    preds, L = torch_model(model, P, xt, lengths, s0)
    loss = torch_loss(model, preds, targets, L)
    loss.backward()
    grads = {k: v.grad.numpy() if v.grad is not None else np.zeros(v.shape) for k, v in P.items()}
    return (loss.item(), grads, None if token_input else xt.grad.numpy(),
            None if s0 is None else rm.tree_map(lambda t: t.grad.numpy(), s0))


# --- models under test ------------------------------------------------------------------

I, T, B = 3, 5, 4
LENGTHS = np.array([5, 3, 1, 4])

CONFIGS = {
    # stacked (two different cells, two hidden sizes) + bidirectional + learned state0,
    # a label at every step, softmax cross-entropy masked by lengths (one row is empty)
    "stacked_bi_tagger": dict(cell=[cells.lstm, cells.elman], hidden_size=[4, 3], num_layers=2,
                              bidirectional=True, learn_state0=True, output_size=5,
                              readout="steps", loss="cross_entropy", lengths=[5, 3, 0, 4]),
    # classification from both ends of a bidirectional GRU
    "bi_classifier_ends": dict(cell=cells.gru, hidden_size=4, bidirectional=True, output_size=3,
                               readout="ends", loss="cross_entropy"),
    # regression from the mean over valid steps of a stacked LSTM
    "stacked_mean_mse": dict(cell=cells.lstm, hidden_size=4, num_layers=2, learn_state0=True,
                             output_size=2, readout="mean", loss="mse"),
    # regression on the last valid step, no head: the RNN outputs are the predictions
    "last_mse_no_head": dict(cell=cells.lstm, hidden_size=4, readout="last", loss="mse"),
}


def build(name):
    cfg = dict(CONFIGS[name])
    lengths = np.array(cfg.pop("lengths", LENGTHS))
    model = rm.SequenceModel(input_size=I, dtype="float64", **cfg)
    rng = np.random.default_rng(7)
    params = model.init(seed=3)
    for leaf in rm.flatten(params).values():     # non-zero learned states and biases
        leaf += rng.uniform(-0.3, 0.3, leaf.shape)
    x = rng.standard_normal((T, B, I))
    O = model.output_size
    if model.loss_name == "cross_entropy":
        targets = rng.integers(0, O, (T, B) if model.readout == "steps" else (B,))
    else:
        targets = rng.standard_normal((T, B, O) if model.readout == "steps" else (B, O))
    return model, params, x, targets, lengths


def numeric_grad(f, arr, eps=1e-6):
    g = np.zeros_like(arr)
    for i in np.ndindex(arr.shape):
        old = arr[i]
        arr[i] = old + eps
        up = f()
        arr[i] = old - eps
        down = f()
        arr[i] = old
        g[i] = (up - down) / (2 * eps)
    return g


def assert_close_fd(analytic, numeric, name, rtol=1e-6):
    scale = max(np.max(np.abs(numeric)), 1e-3)
    err = np.max(np.abs(analytic - numeric)) / scale
    assert err < rtol, "%s: max relative error %.2e" % (name, err)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_whole_model_gradients_match_finite_differences(name):
    model, params, x, targets, lengths = build(name)
    res = model.forward(params, x, lengths)
    value, d_pred = model.loss(res, targets)
    grads = model.backward(res, d_pred)

    def loss():
        return model.loss(model.forward(params, x, lengths), targets)[0]

    assert value == pytest.approx(loss(), rel=1e-14)
    flat_g = rm.flatten(grads.params)
    assert list(flat_g) == list(rm.flatten(params))
    for path, leaf in rm.flatten(params).items():
        assert_close_fd(flat_g[path], numeric_grad(loss, leaf), path)
    assert_close_fd(grads.x, numeric_grad(loss, x), "x")


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_whole_model_matches_torch_autograd(name):
    model, params, x, targets, lengths = build(name)
    value, grads = model.loss_and_grads(params, x, targets, lengths)
    res = model.forward(params, x, lengths)
    g = model.backward(res, model.loss(res, targets)[1])
    t_value, t_grads, t_x, _ = torch_grads(model, params, x, targets, lengths)
    assert value == pytest.approx(t_value, rel=1e-12, abs=1e-14)
    for path, v in rm.flatten(grads).items():
        np.testing.assert_allclose(v, t_grads[path], rtol=1e-9, atol=1e-12, err_msg=path)
    np.testing.assert_allclose(g.x, t_x, rtol=1e-9, atol=1e-12)


def test_external_initial_states_get_gradients_and_replace_learned_ones():
    model, params, x, targets, lengths = build("stacked_bi_tagger")
    rng = np.random.default_rng(1)
    state0 = {"layer0": {"bwd": {"c": rng.standard_normal((B, 4))}},
              "layer1": {"fwd": {"h": rng.standard_normal((B, 3))}}}
    res = model.forward(params, x, lengths, state0)
    value, d_pred = model.loss(res, targets)
    g = model.backward(res, d_pred)
    t_value, t_grads, _, t_s0 = torch_grads(model, params, x, targets, lengths, state0)
    assert value == pytest.approx(t_value, rel=1e-12)
    np.testing.assert_allclose(g.state0["layer0"]["bwd"]["c"], t_s0["layer0"]["bwd"]["c"],
                               rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g.state0["layer1"]["fwd"]["h"], t_s0["layer1"]["fwd"]["h"],
                               rtol=1e-9, atol=1e-12)
    # the learned vectors that were replaced get no gradient; the others do
    assert not g.params["rnn"]["layer0"]["bwd"]["state0"]["c"].any()
    assert g.params["rnn"]["layer0"]["bwd"]["state0"]["h"].any()
    for path, v in rm.flatten(g.params).items():
        np.testing.assert_allclose(v, t_grads[path], rtol=1e-9, atol=1e-12, err_msg=path)

    def loss():
        return model.loss(model.forward(params, x, lengths, state0), targets)[0]
    given = state0["layer1"]["fwd"]["h"]
    assert_close_fd(g.state0["layer1"]["fwd"]["h"], numeric_grad(loss, given), "state0")


def test_token_model_embedding_gradients_match_torch():
    model = rm.SequenceModel(cells.lstm, 4, vocab_size=6, embed_size=I, output_size=6,
                             num_layers=2, dtype="float64")
    params = model.init(seed=0)
    ids = np.random.default_rng(0).integers(0, 6, (T, B))
    targets = np.roll(ids, -1, axis=0)
    value, grads = model.loss_and_grads(params, ids, targets, LENGTHS)
    t_value, t_grads, _, _ = torch_grads(model, params, ids, targets, LENGTHS, token_input=True)
    assert value == pytest.approx(t_value, rel=1e-12)
    for path, v in rm.flatten(grads).items():
        np.testing.assert_allclose(v, t_grads[path], rtol=1e-9, atol=1e-12, err_msg=path)


def test_backward_direction_reads_each_row_reversed_within_its_length():
    rnn = rm.RNN(cells.lstm, I, 4, bidirectional=True, dtype="float64")
    params = rnn.init(seed=1)
    x = np.random.default_rng(2).standard_normal((T, B, I))
    out = rnn.forward(params, x, LENGTHS)
    kern = rnn.kernels[0]
    for b, L in enumerate(LENGTHS):
        y, s = kern.infer(params["layer0"]["bwd"]["cell"], x[:L, b:b + 1][::-1])
        np.testing.assert_allclose(out.outputs[:L, b, 4:], y[::-1, 0], rtol=1e-13)
        np.testing.assert_allclose(out.states["layer0"]["bwd"]["h"][b], s["h"][0], rtol=1e-13)
        assert not out.outputs[L:, b].any()
    idx = rm.reversal_index(LENGTHS, T, B)
    np.testing.assert_array_equal(rm.reverse_steps(rm.reverse_steps(x, idx), idx), x)


def test_dropout_is_identity_at_eval_and_a_fixed_mask_in_training():
    rnn = rm.RNN(cells.lstm, I, 4, num_layers=2, dropout=0.5, dtype="float64")
    params = rnn.init(seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, I))
    plain = rm.RNN(cells.lstm, I, 4, num_layers=2, dtype="float64")
    np.testing.assert_array_equal(rnn.forward(params, x).outputs, plain.forward(params, x).outputs)
    a = rnn.forward(params, x, train=True, rng=5)
    b = rnn.forward(params, x, train=True, rng=5)
    c = rnn.forward(params, x, train=True, rng=6)
    np.testing.assert_array_equal(a.outputs, b.outputs)
    assert not np.allclose(a.outputs, c.outputs)
    mask = a._layers[1].mask
    assert set(np.unique(mask)) == {0.0, 2.0} and 0.3 < (mask == 0).mean() < 0.7
    d_out = np.random.default_rng(1).standard_normal(a.outputs.shape)
    g = rnn.backward(a, d_out)

    def loss():
        return float(np.sum(rnn.forward(params, x, train=True, rng=5).outputs * d_out))
    for path, leaf in rm.flatten(params).items():
        assert_close_fd(rm.flatten(g.params)[path], numeric_grad(loss, leaf), path)


def grad_or_zero(t):
    """A state nothing reads (the last c) has no .grad: its gradient is zero."""
    return torch.zeros_like(t) if t.grad is None else t.grad


def test_gradient_flow_inside_a_model_matches_torch_state_gradients():
    model, params, x, targets, lengths = build("stacked_bi_tagger")
    P = {k: torch.tensor(v, requires_grad=True) for k, v in rm.flatten(params).items()}
    keep = {}
    preds, L = torch_model(model, P, torch.tensor(x), lengths, keep=keep)
    torch_loss(model, preds, targets, L).backward()
    for layer, d in ((0, "fwd"), (0, "bwd"), (1, "fwd")):
        flow = model.gradient_flow(params, x, targets, lengths, layer=layer, direction=d)
        for s, norms in flow.norms.items():
            want = [float(torch.linalg.vector_norm(grad_or_zero(kept[s])))
                    for kept in keep[(layer, d)]]
            np.testing.assert_allclose(norms, want, rtol=1e-9, atol=1e-14)
    assert isinstance(flow, rc.GradientFlow)


class CountingKernel:
    """A kernel that counts its forward and backward calls."""

    def __init__(self, kern):
        self.kern, self.calls = kern, {"forward": 0, "backward": 0, "step": 0}

    def __getattr__(self, name):
        attr = getattr(self.kern, name)
        if name in self.calls:
            def counted(*args, **kw):
                self.calls[name] += 1
                return attr(*args, **kw)
            return counted
        return attr


def test_one_kernel_call_per_layer_and_direction_whatever_T():
    model, params, x, targets, lengths = build("stacked_bi_tagger")
    model.rnn.kernels = [CountingKernel(k) for k in model.rnn.kernels]
    model.loss_and_grads(params, x, targets, lengths)
    for k in model.rnn.kernels:            # two directions share each layer's kernel
        assert k.calls == {"forward": 2, "backward": 2, "step": 0}


# --- losses ------------------------------------------------------------------------------

def test_cross_entropy_is_stable_and_matches_torch_with_masks():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((6, 3, 7)) * 1e4          # naive exp overflows
    targets = rng.integers(0, 7, (6, 3))
    mask = rng.random((6, 3)) > 0.3
    value, grad = rm.cross_entropy(logits, targets, mask)
    lt = torch.tensor(logits, requires_grad=True)
    ref = F.cross_entropy(lt[torch.tensor(mask)], torch.tensor(targets)[torch.tensor(mask)])
    ref.backward()
    assert np.isfinite(value) and value == pytest.approx(ref.item(), rel=1e-12)
    np.testing.assert_allclose(grad, lt.grad.numpy(), atol=1e-15)
    assert rm.cross_entropy(logits, targets, np.zeros((6, 3)))[0] == 0.0


def test_mse_matches_torch():
    rng = np.random.default_rng(1)
    p, t = rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 3, 2))
    value, grad = rm.mse(p, t)
    pt = torch.tensor(p, requires_grad=True)
    ref = F.mse_loss(pt, torch.tensor(t))
    ref.backward()
    assert value == pytest.approx(ref.item(), rel=1e-13)
    np.testing.assert_allclose(grad, pt.grad.numpy(), rtol=1e-13)


def test_loss_errors_name_the_argument():
    with pytest.raises(ValueError, match="targets: class ids must be in"):
        rm.cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(TypeError, match="targets: expected integer"):
        rm.cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="targets: expected shape"):
        rm.mse(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="mask: expected a mask of shape"):
        rm.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), np.ones(3))


# --- generation and translation -----------------------------------------------------------

@pytest.fixture(scope="module")
def lm():
    model = rm.SequenceModel(cells.lstm, 4, vocab_size=6, embed_size=I, output_size=6,
                             num_layers=2, learn_state0=True, dtype="float64")
    params = model.init(seed=4)
    for leaf in rm.flatten(params).values():
        leaf += np.random.default_rng(0).uniform(-0.5, 0.5, leaf.shape)
    return model, params


def test_step_by_step_equals_the_whole_sequence(lm):
    model, params = lm
    ids = np.random.default_rng(3).integers(0, 6, (T, 2))
    logits = model.forward(params, ids).predictions
    states = model.initial_states(params, 2)
    for t in range(T):
        y, states = model.step(params, ids[t], states)
        np.testing.assert_allclose(y, logits[t], rtol=1e-12, atol=1e-14)


def test_greedy_sampling_follows_the_argmax_and_sampling_follows_softmax(lm):
    model, params = lm
    prompt = np.array([1, 4, 2])
    out = rm.sample(model, params, prompt, 6, temperature=0)
    full = np.concatenate([prompt, out])
    logits = model.predict(params, full[:, None])[:, 0]
    np.testing.assert_array_equal(np.argmax(logits[2:-1], axis=1), out)
    a = rm.sample(model, params, prompt, 8, temperature=1.0, seed=1)
    assert np.array_equal(a, rm.sample(model, params, prompt, 8, temperature=1.0, seed=1))
    logits = np.array([[0.0, 1.0, 2.0, -1.0]])
    draws = rm.pick(np.repeat(logits, 20000, 0), 0.7, np.random.default_rng(0))
    freq = np.bincount(draws, minlength=4) / 20000
    np.testing.assert_allclose(freq, rm.softmax(logits / 0.7)[0], atol=0.015)


def test_seq2seq_gradients_and_greedy_decoding():
    s2s = rm.Seq2Seq(cells.lstm, src_vocab=5, tgt_vocab=6, hidden_size=4, embed_size=I,
                     dtype="float64")
    params = s2s.init(seed=0)
    rng = np.random.default_rng(0)
    src, src_len = rng.integers(0, 5, (4, 3)), np.array([4, 2, 3])
    tgt_in, tgt_out = rng.integers(0, 6, (5, 3)), rng.integers(0, 6, (5, 3))
    tgt_len = np.array([5, 3, 1])
    value, grads = s2s.loss_and_grads(params, src, tgt_in, tgt_out, src_len, tgt_len)

    def loss():
        return s2s.loss_and_grads(params, src, tgt_in, tgt_out, src_len, tgt_len)[0]
    flat = rm.flatten(grads)
    assert any(k.startswith("encoder/rnn") for k in flat)
    for path, leaf in rm.flatten(params).items():
        assert_close_fd(flat[path], numeric_grad(loss, leaf), path)
    ids, lengths = s2s.greedy(params, src, src_len, bos=0, max_len=4, eos=5)
    _, dec = s2s.forward(params, src, np.vstack([np.zeros((1, 3), int), ids.T[:-1]]), src_len)
    np.testing.assert_array_equal(np.argmax(dec.predictions, axis=2).T, ids)
    assert lengths.shape == (3,) and (lengths <= 4).all()


# --- errors ------------------------------------------------------------------------------

def test_bad_input_names_the_argument():
    model, params, x, targets, lengths = build("stacked_mean_mse")
    with pytest.raises(ValueError, match=r"x: expected shape \(T, B, 3\)"):
        model.forward(params, x[..., :2])
    with pytest.raises(ValueError, match="lengths: every length must be in"):
        model.forward(params, x, [5, 6, 1, 1])
    with pytest.raises(ValueError, match="lengths: readout 'mean' needs every sequence"):
        model.forward(params, x, [5, 0, 1, 1])
    with pytest.raises(KeyError, match="params: missing 'layer1/fwd'"):
        model.forward({"rnn": {"layer0": params["rnn"]["layer0"]}, "head": params["head"]}, x)
    with pytest.raises(KeyError, match="state0: unknown layer 'layer7'"):
        model.forward(params, x, state0={"layer7": {}})
    with pytest.raises(KeyError, match="unknown direction 'bwd'"):
        model.forward(params, x, state0={"layer0": {"bwd": {}}})
    with pytest.raises(ValueError, match="input_size, vocab_size: give exactly one"):
        rm.SequenceModel(cells.lstm, 4, input_size=3, vocab_size=3)
    with pytest.raises(ValueError, match="readout: expected one of"):
        rm.SequenceModel(cells.lstm, 4, input_size=3, readout="first")
    with pytest.raises(ValueError, match="dropout: expected a rate"):
        rm.RNN(cells.lstm, 3, 4, dropout=1.0)
    with pytest.raises(ValueError, match="hidden_size: expected one value per layer"):
        rm.RNN(cells.lstm, 3, [4, 4, 4], num_layers=2)
    bi = rm.SequenceModel(cells.lstm, 4, vocab_size=5, bidirectional=True, dtype="float64")
    with pytest.raises(ValueError, match="step: a bidirectional RNN"):
        rm.sample(bi, bi.init(), [1], 3)
    with pytest.raises(ValueError, match=r"x: token ids must be in \[0, 5\)"):
        bi.forward(bi.init(), np.full((2, 2), 5))


def test_progress_bar_writes_to_its_stream():
    out = io.StringIO()
    bar = rm.Progress(total=20, stream=out)
    for _ in range(20):
        bar.update(1, loss=0.5)
    bar.close()
    lines = out.getvalue().splitlines()
    assert 5 <= len(lines) <= 11 and lines[-1].startswith("[" + "#" * 24 + "] 20/20 loss 0.5000")
