"""rc.torch: the compiled kernels inside PyTorch. rc.torch.RNN of PyTorch's cell forms
equals torch.nn.LSTM / torch.nn.GRU with the same weights (outputs, final states and every
gradient, float64 < 1e-10, stacked and bidirectional, packed and padded); gradcheck
passes through the module and the function; it trains with torch.optim, clips, saves and
loads, and sits inside a larger model; bad input is refused with a clear error."""
import io
import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

import rnncompiler as rc  # noqa: E402

I, H, T, B = 4, 4, 6, 3          # I == H: layer 1 of a one-direction stack reuses layer 0's kernel
LENGTHS = [6, 2, 4]              # unsorted: packing has to permute the batch
TOL = 1e-10

# torch tensor -> the cell parameters stacked in its rows, written out here from torch's
# documentation (gate orders i, f, g, o and r, z, n), independently of the package's table
LSTM_MAP = {"weight_ih": ["W_ii", "W_if", "W_ig", "W_io"],
            "weight_hh": ["W_hi", "W_hf", "W_hg", "W_ho"],
            "bias_ih": ["b_ii", "b_if", "b_ig", "b_io"],
            "bias_hh": ["b_hi", "b_hf", "b_hg", "b_ho"]}
GRU_MAP = {"weight_ih": ["W_ir", "W_iz", "W_in"], "weight_hh": ["W_hr", "W_hz", "W_hn"],
           "bias_ih": ["b_ir", "b_iz", "b_in"], "bias_hh": ["b_hr", "b_hz", "b_hn"]}
FORMS = {"LSTM": (nn.LSTM, rc.cells.lstm_torch, LSTM_MAP),
         "GRU": (nn.GRU, rc.cells.gru_torch, GRU_MAP)}


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny tensors: torch's intra-op threads only add contention."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def copy_weights(ref, rnn, mapping):
    """Split each of the torch module's stacked tensors into the RNN's parameters, by the
    test's own table (not by the package's load_state_dict hook)."""
    with torch.no_grad():
        for key, tensor in ref.named_parameters():
            base, _, suffix = key.partition("_l")
            for name, chunk in zip(mapping[base], tensor.chunk(len(mapping[base]))):
                getattr(rnn, "%s_l%s" % (name, suffix)).copy_(chunk)


def stacked_grads(ref, rnn, mapping):
    """The RNN's parameter gradients stacked as the torch module's, by the test's table."""
    out = {}
    for key, _ in ref.named_parameters():
        base, _, suffix = key.partition("_l")
        out[key] = torch.cat([getattr(rnn, "%s_l%s" % (n, suffix)).grad for n in mapping[base]])
    return out


def pair(mode, num_layers=1, bidirectional=False, batch_first=False, seed=0):
    """A torch module and an rc.torch.RNN of the same cell holding the same weights."""
    ctor, cell, mapping = FORMS[mode]
    torch.manual_seed(seed)
    ref = ctor(I, H, num_layers=num_layers, bidirectional=bidirectional,
               batch_first=batch_first).double()
    rnn = rc.torch.RNN(cell, I, H, num_layers=num_layers, bidirectional=bidirectional,
                       batch_first=batch_first, dtype=torch.float64)
    copy_weights(ref, rnn, mapping)
    return ref, rnn, mapping


def hidden_states(mode, n, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = (n, B, H)
    h0 = torch.randn(shape, generator=g, dtype=torch.float64)
    return (h0, torch.randn(shape, generator=g, dtype=torch.float64)) if mode == "LSTM" else h0


def run(module, x, hx, packed, u):
    """Outputs, final states and the gradients of a fixed random functional of both."""
    module.zero_grad()
    x = x.clone().requires_grad_(True)
    hx = tuple(h.clone().requires_grad_(True) for h in (hx if isinstance(hx, tuple) else (hx,)))
    inp = pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False) if packed else x
    out, finals = module(inp, hx if len(hx) > 1 else hx[0])
    finals = finals if isinstance(finals, tuple) else (finals,)
    y = out.data if packed else out
    loss = (y * u[:y.numel()].reshape(y.shape)).sum()
    loss = loss + sum((f * f.flip(-1)).sum() for f in finals)
    loss.backward()
    return y.detach(), [f.detach() for f in finals], x.grad, [h.grad for h in hx]


def max_diff(a, b):
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a - b).detach().abs().max())


@pytest.mark.parametrize("mode", ["LSTM", "GRU"])
@pytest.mark.parametrize("num_layers, bidirectional, packed", [
    (1, False, True), (2, False, False), (2, True, True), (1, True, False)])
def test_equals_torch_module(mode, num_layers, bidirectional, packed):
    ref, rnn, mapping = pair(mode, num_layers, bidirectional)
    x = torch.randn(T, B, I, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    hx = hidden_states(mode, num_layers * (2 if bidirectional else 1))
    u = torch.randn(T * B * 2 * H, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    y0, s0, dx0, dh0 = run(ref, x, hx, packed, u)
    y1, s1, dx1, dh1 = run(rnn, x, hx, packed, u)
    assert max_diff(y1, y0) < TOL
    assert len(s1) == len(s0) and all(max_diff(a, b) < TOL for a, b in zip(s1, s0))
    assert max_diff(dx1, dx0) < TOL
    assert all(max_diff(a, b) < TOL for a, b in zip(dh1, dh0))
    grads = stacked_grads(ref, rnn, mapping)
    for key, tensor in ref.named_parameters():
        assert max_diff(grads[key], tensor.grad) < TOL, key
    assert float(dx0.abs().max()) > 0.01      # the comparison is not of zeros


def test_batch_first_and_lengths_argument():
    """batch_first (B, T, I) input, and lengths= on a padded tensor, as nn.GRU on a packed
    batch_first sequence."""
    ref, rnn, _ = pair("GRU", 2, True, batch_first=True)
    x = torch.randn(B, T, I, dtype=torch.float64)
    packed = pack_padded_sequence(x, torch.tensor(LENGTHS), batch_first=True,
                                  enforce_sorted=False)
    out0, h0 = ref(packed)
    out0, _ = pad_packed_sequence(out0, batch_first=True, total_length=T)
    out1, h1 = rnn(x, lengths=torch.tensor(LENGTHS))
    assert out1.shape == (B, T, 2 * H)
    assert max_diff(out1, out0) < TOL and max_diff(h1, h0) < TOL
    out2, h2 = rnn(x)                                   # no lengths: every step counts
    out3, h3 = ref(x)
    assert max_diff(out2, out3) < TOL and max_diff(h2, h3) < TOL


def test_torch_names_load_and_export():
    """load_state_dict takes nn.LSTM's keys; torch_state_dict gives them back exactly;
    from_torch builds the same model from the module."""
    ref, rnn, _ = pair("LSTM", 2, True)
    other = rc.torch.RNN(rc.cells.lstm_torch, I, H, num_layers=2, bidirectional=True,
                         dtype=torch.float64)
    other.load_state_dict(ref.state_dict())
    for name, p in rnn.named_parameters():
        assert torch.equal(p, getattr(other, name)), name
    exported = other.torch_state_dict()
    assert list(exported) == list(ref.state_dict())
    assert all(torch.equal(exported[k], v) for k, v in ref.state_dict().items())
    built = rc.torch.RNN.from_torch(ref)
    assert built.num_layers == 2 and built.bidirectional
    x = torch.randn(T, B, I, dtype=torch.float64)
    assert max_diff(built(x)[0], ref(x)[0]) < TOL
    assert set(rnn.state_dict()) == {n + s for n in rc.compile(
        rc.cells.lstm_torch, I, H, "float64").param_shapes for s in rnn.suffixes()}


# ---------------------------------------------------------------- gradcheck

def test_gradcheck_module_with_lengths_and_packed():
    """torch.autograd.gradcheck through every parameter, the input and hx of a stacked,
    bidirectional RNN of a cell that is not one of torch's (peepholes), float64."""
    torch.manual_seed(0)
    rnn = rc.torch.RNN(rc.cells.peephole_lstm, 2, 2, num_layers=2, bidirectional=True,
                       dtype=torch.float64)
    names = [n for n, _ in rnn.named_parameters()]
    x = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    c0 = torch.randn(4, 3, 2, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([4, 1, 3])

    def with_lengths(x, h0, c0, *params):
        out, (h, c) = torch.func.functional_call(rnn, dict(zip(names, params)), (x, (h0, c0)),
                                                 {"lengths": lengths})
        return out, h, c

    def packed(x, h0, c0, *params):
        seq = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, (h, c) = torch.func.functional_call(rnn, dict(zip(names, params)), (seq, (h0, c0)))
        return out.data, h, c

    inputs = (x, h0, c0, *[p.detach().clone().requires_grad_(True) for p in rnn.parameters()])
    assert torch.autograd.gradcheck(with_lengths, inputs, eps=1e-6, atol=1e-7)
    assert torch.autograd.gradcheck(packed, inputs, eps=1e-6, atol=1e-7)


def test_gradcheck_function_reversed():
    """rc.torch.rnn on one kernel, reading the sequences backwards within their lengths,
    with a partial state0."""
    kern = rc.compile(rc.cells.peephole_lstm, 2, 2, "float64")
    g = torch.Generator().manual_seed(4)
    params = {k: torch.tensor(v, requires_grad=True) for k, v in kern.init_params(1).items()}
    x = torch.randn(5, 2, 2, dtype=torch.float64, generator=g, requires_grad=True)
    c0 = torch.randn(2, 2, dtype=torch.float64, generator=g, requires_grad=True)

    def f(x, c0, *values):
        out, states = rc.torch.rnn(kern, dict(zip(params, values)), x, {"c": c0},
                                   lengths=[3, 5], reverse=True)
        return out, states["h"], states["c"]

    assert torch.autograd.gradcheck(f, (x, c0, *params.values()), eps=1e-6, atol=1e-7)
    # reversed: row 0 (length 3) ends after reading x[0]; its last output sits at t = 0
    out, h, _ = f(x, c0, *params.values())
    assert torch.equal(out[0, 0], h[0]) and torch.all(out[3:, 0] == 0)


def test_double_backward_is_refused():
    ref, rnn, _ = pair("GRU")
    x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)
    (gx,) = torch.autograd.grad(rnn(x)[0].pow(2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        gx.sum().backward()


# ---------------------------------------------------------------- inside a torch program

class CharModel(nn.Module):
    """embedding -> recurrent layers -> linear head."""

    def __init__(self, rnn, vocab=7):
        super().__init__()
        self.embed, self.rnn = nn.Embedding(vocab, I), rnn
        self.head = nn.Linear(H, vocab)

    def forward(self, ids):
        out, _ = self.rnn(self.embed(ids))
        return self.head(out)


def test_inside_a_model_one_backward_equals_nn_lstm():
    torch.manual_seed(0)
    ref_model = CharModel(nn.LSTM(I, H, num_layers=2)).double()
    ours = CharModel(rc.torch.RNN(rc.cells.lstm_torch, I, H, num_layers=2)).double()
    copy_weights(ref_model.rnn, ours.rnn, LSTM_MAP)
    ours.embed.load_state_dict(ref_model.embed.state_dict())
    ours.head.load_state_dict(ref_model.head.state_dict())
    ids = torch.randint(0, 7, (T + 1, B))
    for model in (ref_model, ours):
        logits = model(ids[:-1])
        nn.functional.cross_entropy(logits.reshape(-1, 7), ids[1:].reshape(-1)).backward()
    for part in ("embed.weight", "head.weight", "head.bias"):
        a, b = dict(ours.named_parameters())[part], dict(ref_model.named_parameters())[part]
        assert max_diff(a.grad, b.grad) < TOL, part
    grads = stacked_grads(ref_model.rnn, ours.rnn, LSTM_MAP)
    assert all(max_diff(grads[k], p.grad) < TOL for k, p in ref_model.rnn.named_parameters())


def test_trains_with_adam_and_clipping():
    """float32 (the default): a few Adam steps with clip_grad_norm_ lower the loss; the
    norm clip_grad_norm_ reports is that of the gradients backward produced."""
    torch.manual_seed(0)
    model = CharModel(rc.torch.RNN(rc.cells.lstm_torch, I, H))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    ids = (torch.arange(T + 1)[:, None] + torch.arange(8)[None, :]) % 7    # next = this + 1
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(ids[:-1]).reshape(-1, 7), ids[1:].reshape(-1))
        loss.backward()
        norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters()))
        reported = nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        assert abs(float(reported) - float(norm)) < 1e-4 * float(norm)
        after = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters()))
        assert float(after) <= 0.5 + 1e-5
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0]


def test_state_dict_and_pickle_round_trip():
    torch.manual_seed(0)
    rnn = rc.torch.RNN(rc.cells.gru_torch, I, H, num_layers=2, dtype=torch.float64)
    x = torch.randn(T, B, I, dtype=torch.float64)
    buf = io.BytesIO()
    torch.save(rnn.state_dict(), buf)
    torch.manual_seed(1)
    fresh = rc.torch.RNN(rc.cells.gru_torch, I, H, num_layers=2, dtype=torch.float64)
    assert max_diff(fresh(x)[0], rnn(x)[0]) > 1e-3          # different weights first
    buf.seek(0)
    fresh.load_state_dict(torch.load(buf))
    assert torch.equal(fresh(x)[0], rnn(x)[0])
    clone = pickle.loads(pickle.dumps(rnn))                # the kernels pickle too
    assert torch.equal(clone(x)[0], rnn(x)[0])


def test_double_converts_a_float32_module():
    """.double() on a float32 module compiles float64 kernels on first use."""
    torch.manual_seed(0)
    rnn = rc.torch.RNN(rc.cells.lstm_torch, I, H)
    x = torch.randn(T, B, I)
    out32, _ = rnn(x)
    out64, (h, c) = rnn.double()(x.double())
    assert out64.dtype == torch.float64 and h.dtype == torch.float64
    assert max_diff(out64.float(), out32) < 1e-5


def test_no_grad_runs_the_kernels_without_a_tape():
    """Under torch.no_grad the module runs kern.infer: the same outputs, no graph."""
    ref, rnn, _ = pair("LSTM", 2, True)
    x = torch.randn(T, B, I, dtype=torch.float64)
    out, (h, c) = rnn(x, lengths=LENGTHS)
    with torch.no_grad():
        out_ng, (h_ng, c_ng) = rnn(x, lengths=LENGTHS)
    assert out.grad_fn is not None and out_ng.grad_fn is None and not out_ng.requires_grad
    assert max(max_diff(out_ng, out), max_diff(h_ng, h), max_diff(c_ng, c)) < 1e-14


# ---------------------------------------------------------------- errors

def test_clear_errors():
    rnn = rc.torch.RNN(rc.cells.gru_torch, I, H, dtype=torch.float64)
    x = torch.randn(T, B, I, dtype=torch.float64)
    with pytest.raises(TypeError, match=r"input: expected dtype torch.float64.*got torch.float32"):
        rnn(x.float())
    with pytest.raises(ValueError, match=r"input: expected a CPU tensor, got one on meta"):
        rnn(torch.empty(T, B, I, dtype=torch.float64, device="meta"))
    with pytest.raises(ValueError, match=r"input: expected shape \(T, B, 4\)"):
        rnn(x[..., :3])
    with pytest.raises(ValueError, match=r"hx\['h'\]: expected shape .* \(1, 3, 4\), got \(2, 3, 4\)"):
        rnn(x, torch.zeros(2, B, H, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"hx: the cell has 1 states \(h\), got 2"):
        rnn(x, (torch.zeros(1, B, H, dtype=torch.float64),) * 2)
    with pytest.raises(ValueError, match=r"lengths: every length must be in \[0, 6\]"):
        rnn(x, lengths=[7, 1, 1])
    packed = pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False)
    with pytest.raises(ValueError, match="lengths: a PackedSequence carries its own lengths"):
        rnn(packed, lengths=LENGTHS)
    with pytest.raises(TypeError, match=r"parameters: expected all float32 or all float64"):
        rnn.half()(x.half())
    with pytest.raises(TypeError, match="cell: expected a cell made with @rc.cell"):
        rc.torch.RNN(nn.LSTM, I, H)
    elman = rc.torch.RNN(rc.cells.elman, I, H)
    with pytest.raises(ValueError, match="torch_state_dict: the cell 'elman' is not one of"):
        elman.torch_state_dict()
    kern = rc.compile(rc.cells.elman, I, H, "float64")
    params = {k: torch.tensor(v) for k, v in kern.init_params().items()}
    with pytest.raises(KeyError, match="params: missing parameter 'b'"):
        rc.torch.rnn(kern, {"W": params["W"]}, x)
    with pytest.raises(TypeError, match=r"params\['W'\]: expected dtype torch.float64"):
        rc.torch.rnn(kern, dict(params, W=params["W"].float()), x)
