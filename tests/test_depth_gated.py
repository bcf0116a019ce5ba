"""A depth-gated LSTM stack (rc.cells.lstm_hc, then rc.cells.depth_gated_lstm layers) in
rc.models equals the same stack written in torch: outputs, every layer's gradients and
the input's, with ragged lengths. (Each cell alone is checked in tests/test_cells.py.)"""
import numpy as np
import pytest

import rnncompiler as rc
from rnncompiler import models as rm

torch = pytest.importorskip("torch")

T, B, I, H, LAYERS = 6, 3, 2, 4, 3
LENGTHS = [T, T - 2, 1]


def torch_layer(p, x, first, lengths):
    """One layer over x (T, B, in) with rows past their length kept and zero outputs."""
    h = torch.zeros(x.shape[1], H, dtype=torch.float64)
    c = torch.zeros_like(h)
    ys = []
    for t in range(x.shape[0]):
        xt, below = (x[t], None) if first else (x[t, :, :H], x[t, :, H:])
        z = torch.cat([h, xt], 1)
        f = torch.sigmoid(z @ p["W_f"].T + p["b_f"])
        i = torch.sigmoid(z @ p["W_i"].T + p["b_i"])
        o = torch.sigmoid(z @ p["W_o"].T + p["b_o"])
        g = torch.tanh(z @ p["W_g"].T + p["b_g"])
        c_new = f * c + i * g
        if below is not None:
            d = torch.sigmoid(xt @ p["W_d"].T + p["b_d"] + p["w_cd"] * c + p["w_ld"] * below)
            c_new = c_new + d * below
        h_new = o * torch.tanh(c_new)
        valid = torch.tensor([t < n for n in lengths])[:, None]
        h, c = torch.where(valid, h_new, h), torch.where(valid, c_new, c)
        ys.append(torch.where(valid, torch.cat([h_new, c_new], 1), torch.zeros(x.shape[1], 2 * H,
                                                                          dtype=torch.float64)))
    return torch.stack(ys)


def test_a_depth_gated_stack_equals_torch():
    cells = [rc.cells.lstm_hc] + [rc.cells.depth_gated_lstm] * (LAYERS - 1)
    rnn = rm.RNN(cells, I, H, num_layers=LAYERS, dtype="float64")
    params = rnn.init(seed=1)
    rng = np.random.default_rng(0)
    x, dy = rng.standard_normal((T, B, I)), rng.standard_normal((T, B, 2 * H))
    res = rnn.forward(params, x, LENGTHS)
    g = rnn.backward(res, dy)

    tp = [{k: torch.tensor(v, requires_grad=True) for k, v in params["layer%d" % l]["fwd"]["cell"].items()}
          for l in range(LAYERS)]
    tx = torch.tensor(x, requires_grad=True)
    h = tx
    for l in range(LAYERS):
        h = torch_layer(tp[l], h, l == 0, LENGTHS)
    (h * torch.tensor(dy)).sum().backward()
    scale = lambda a: max(1.0, float(np.abs(a).max()))      # noqa: E731
    assert np.abs(res.outputs - h.detach().numpy()).max() < 1e-12
    assert np.abs(g.x - tx.grad.numpy()).max() / scale(tx.grad.numpy()) < 1e-10
    for l in range(LAYERS):
        got = g.params["layer%d" % l]["fwd"]["cell"]
        for k, t in tp[l].items():
            assert np.abs(got[k] - t.grad.numpy()).max() / scale(t.grad.numpy()) < 1e-10, (l, k)


def test_a_stack_whose_widths_do_not_meet_is_named():
    with pytest.raises(ValueError, match=r"layer 1's cell depth_gated_lstm reads 16 units per "
                                         r"step \(x: 8, c_below: 8\) but the layer below gives 4"):
        rm.RNN([rc.cells.lstm, rc.cells.depth_gated_lstm], 3, [4, 8], num_layers=2)
