"""Whole models in one file: `rm.save(model, path, params, optimizer=opt)` and `rm.load`
rebuild architecture, parameters and optimizer state — in a fresh process the outputs and
gradients are the same and training continues exactly as without saving; cells that
cannot be re-imported, or that changed, are refused with advice."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import rnncompiler as rc
from rnncompiler import models as rm

import cells  # noqa: E402  (tests/cells.py: user-defined cells in an importable module)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
V, H, T, B = 6, 5, 7, 3


def _data():
    rng = np.random.default_rng(0)
    return rng.integers(0, V, (T, B)), rng.integers(0, V, (T, B)), np.array([7, 4, 6])


def _train(model, params, opt, n):
    ids, targets, lengths = _data()
    for _ in range(n):
        opt.step(params, model.loss_and_grads(params, ids, targets, lengths)[1])


def _model():
    """Two layers, two cells (one from the library, one user-defined), learned initial
    states: every part of the architecture that load must rebuild."""
    return rm.SequenceModel([rc.cells.lstm, cells.gru], [H, 4], vocab_size=V, output_size=V,
                            num_layers=2, learn_state0=True, dtype="float64")


CHILD = r"""
import sys
import numpy as np
from rnncompiler import models as rm
model, params, opt = rm.load(sys.argv[1])
ids, targets, lengths = (np.load(sys.argv[2])[k] for k in ("ids", "targets", "lengths"))
loss, grads = model.loss_and_grads(params, ids, targets, lengths)
preds = model.predict(params, ids, lengths)
for _ in range(3):
    opt.step(params, model.loss_and_grads(params, ids, targets, lengths)[1])
out = {"loss": np.array(loss), "preds": preds}
out.update({"grads/" + k: v for k, v in rm.flatten(grads).items()})
out.update({"after/" + k: v for k, v in rm.flatten(params).items()})
np.savez(sys.argv[3], **out)
print(repr(model), type(opt).__name__, opt.updates)
"""


def test_saved_model_reloads_in_a_fresh_process_and_trains_on_identically(tmp_path):
    model = _model()
    params = model.init(seed=1)
    opt = rm.Adam(0.02, betas=(0.8, 0.99))
    _train(model, params, opt, 3)
    path = str(tmp_path / "model.npz")
    rm.save(model, path, params, optimizer=opt)
    ids, targets, lengths = _data()
    np.savez(tmp_path / "data.npz", ids=ids, targets=targets, lengths=lengths)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, HERE]))
    proc = subprocess.run([sys.executable, "-c", CHILD, path, str(tmp_path / "data.npz"),
                           str(tmp_path / "out.npz")], capture_output=True, text=True,
                          env=env, cwd=str(tmp_path), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Adam 6" in proc.stdout and "lstm" in proc.stdout and "gru" in proc.stdout
    child = np.load(tmp_path / "out.npz")
    loss, grads = model.loss_and_grads(params, ids, targets, lengths)
    assert float(child["loss"]) == loss
    np.testing.assert_array_equal(child["preds"], model.predict(params, ids, lengths))
    for k, v in rm.flatten(grads).items():
        np.testing.assert_array_equal(child["grads/" + k], v)
    _train(model, params, opt, 3)                 # the same updates without saving
    for k, v in rm.flatten(params).items():
        np.testing.assert_array_equal(child["after/" + k], v)


def test_rnn_and_seq2seq_round_trip_with_their_options(tmp_path):
    rnn = rm.RNN(rc.cells.elman, 3, 4, num_layers=2, bidirectional=True, batch_first=True,
                 dtype="float64")
    p = rnn.init(seed=2)
    rm.save(rnn, tmp_path / "rnn.npz", p)
    back = rm.load(tmp_path / "rnn.npz")
    assert back.optimizer is None and back.model.batch_first and back.model.bidirectional
    x = np.random.default_rng(3).standard_normal((2, 5, 3))          # (B, T, I)
    np.testing.assert_array_equal(back.model.infer(back.params, x)[0], rnn.infer(p, x)[0])
    s2s = rm.Seq2Seq(rc.cells.gru, src_vocab=5, tgt_vocab=6, hidden_size=4, dtype="float64")
    q = s2s.init(seed=3)
    rm.save(s2s, tmp_path / "s2s.npz", q, optimizer=rm.SGD(0.1, momentum=0.9, nesterov=True))
    model, q2, opt = rm.load(tmp_path / "s2s.npz")
    assert isinstance(model, rm.Seq2Seq) and opt.nesterov and opt.momentum == 0.9
    for k, v in rm.flatten(q).items():
        np.testing.assert_array_equal(rm.flatten(q2)[k], v)


def _local_cell(scale):
    """A cell defined inside a function: not importable by reference."""
    @rc.cell(states=("h",))
    def local_elman(x, h, p):
        return {"h": rc.tanh(scale * p.linear("W", rc.concat(h, x), bias="b"))}
    return local_elman


def test_a_cell_that_cannot_be_imported_or_changed_is_refused_with_advice(tmp_path):
    cell = _local_cell(1.0)
    model = rm.SequenceModel(cell, 4, input_size=2, output_size=1, loss="mse")
    path = tmp_path / "m.npz"
    rm.save(model, path, model.init())
    with np.load(path) as data:
        header = json.loads(bytes(data["__rnnc__"]).decode())
    assert header["config"]["cell"]["cell"].endswith("_local_cell.<locals>.local_elman")
    with pytest.raises(ImportError, match=r"cell 'local_elman'.*cannot be imported here.*"
                       r"cells=\{'local_elman': local_elman\}"):
        rm.load(path)
    assert isinstance(rm.load(path, cells={"local_elman": cell}).model, rm.SequenceModel)
    with pytest.raises(ValueError, match="computes something else than the saved one"):
        rm.load(path, cells={"local_elman": _local_cell(2.0)})


def test_save_errors_say_how_to_call_it(tmp_path):
    model = rm.SequenceModel(rc.cells.elman, 4, input_size=2, output_size=1, loss="mse")
    with pytest.raises(TypeError, match=r"rm.save\(model, path, params\)"):
        rm.save(model, tmp_path / "m.npz")
    with pytest.raises(TypeError, match="schedule"):
        rm.save(model, tmp_path / "m.npz", model.init(), optimizer=rm.SGD(lambda n: 0.1))
    with pytest.raises(KeyError, match="params: missing"):
        rm.save(model, tmp_path / "m.npz", {"rnn": {}})
    with pytest.raises(TypeError, match="got int first"):
        rm.save(3, tmp_path / "m.npz")
    rm.save(model, tmp_path / "m.npz", model.init())
    with pytest.raises(TypeError, match="holds a whole model"):
        rm.load(tmp_path / "m.npz", like=model.init())
    assert os.listdir(tmp_path) == ["m.npz"]
