"""`SequenceModel`: an optional embedding, an `RNN`, a readout, a linear head and a loss —
the four uses of recurrent networks (classification, labelling, generation, and the two
halves of translation) as one explicit, numpy-native object."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .heads import check_readout, pool, unpool
from .layers import Embedding, Linear, step_mask
from .losses import cross_entropy, mse
from .rnn import RNN

LOSSES = {"cross_entropy": cross_entropy, "mse": mse, None: None}


@dataclass
class ModelResult:
    """What `SequenceModel.forward` returns: predictions ((T, B, O) for readout "steps",
    (B, T, O) with batch_first, else (B, O)), the RNN's final states, the lengths, and the tape for `backward`."""
    predictions: np.ndarray
    states: dict
    lengths: np.ndarray = None
    rnn: object = field(default=None, repr=False)         # the RNNResult
    _inputs: np.ndarray = field(default=None, repr=False)  # token ids, or None
    _features: np.ndarray = field(default=None, repr=False)
    _head: dict = field(default=None, repr=False)


@dataclass
class ModelGrads:
    """What `SequenceModel.backward` returns: params (the tree of `init`), x ((T, B, I), or
    None for token inputs) and state0 (dL/d(initial states), a tree like `states`)."""
    params: dict
    x: np.ndarray
    state0: dict
    rnn: object = field(default=None, repr=False)         # the RNNGrads


class SequenceModel:
    """Embedding (token inputs) or vectors → RNN → readout → linear head → loss.

    Parameters: `cell`, `hidden_size` (see `RNN`); the input is either vectors
    (`input_size=I`, x of shape (T, B, I)) or token ids (`vocab_size=V`, x of shape (T, B),
    through an embedding of `embed_size`, default the first hidden size); `output_size`
    adds a linear head (none: the predictions are the RNN outputs); `readout` is "steps",
    "last", "mean" or "ends" (see `heads.pool`); `loss` is "cross_entropy" (integer
    targets), "mse" or None. `num_layers`, `bidirectional`, `dropout`, `learn_state0`,
    `dtype`, `sizes`, `seed` go to the `RNN`. `batch_first=True` puts the batch first in
    everything indexed by time: x (B, T, I) or ids (B, T), "steps" predictions (B, T, O),
    their targets and masks (B, T), d_predictions and the input gradient (as torch).
    """

    def __init__(self, cell, hidden_size, *, input_size=None, vocab_size=None, embed_size=None,
                 output_size=None, readout="steps", loss="cross_entropy", num_layers=1,
                 bidirectional=False, dropout=0.0, learn_state0=False, dtype="float32",
                 sizes=None, seed=0, batch_first=False):
        if (input_size is None) == (vocab_size is None):
            raise ValueError("input_size, vocab_size: give exactly one (vectors of input_size "
                             "or token ids below vocab_size), got %r and %r"
                             % (input_size, vocab_size))
        if loss not in LOSSES:
            raise ValueError("loss: expected one of %s, got %r" % (list(LOSSES), loss))
        self.readout, self.loss_name = check_readout(readout), loss
        self.batch_first = bool(batch_first)
        # the constructor's arguments: what `rm.save` writes to rebuild this model
        self.config = dict(cell=cell, hidden_size=hidden_size, input_size=input_size,
                           vocab_size=vocab_size, embed_size=embed_size,
                           output_size=output_size, readout=readout, loss=loss,
                           num_layers=num_layers, bidirectional=bidirectional,
                           dropout=dropout, learn_state0=learn_state0,
                           dtype=np.dtype(dtype).name, sizes=sizes, seed=seed,
                           batch_first=self.batch_first)
        dtype = np.dtype(dtype)
        self.embedding = None
        if vocab_size is not None:
            first_h = hidden_size[0] if isinstance(hidden_size, (list, tuple)) else hidden_size
            self.embedding = Embedding(int(vocab_size), int(embed_size or first_h), dtype)
            input_size = self.embedding.size
        self.rnn = RNN(cell, input_size, hidden_size, num_layers, bidirectional=bidirectional,
                       dropout=dropout, learn_state0=learn_state0, dtype=dtype, sizes=sizes,
                       seed=seed)
        self.dtype = self.rnn.dtype
        self.head = None if output_size is None else Linear(self.rnn.output_size,
                                                            int(output_size), self.dtype)
        self.output_size = self.rnn.output_size if self.head is None else self.head.out_size

    def __repr__(self):
        parts = [repr(self.rnn), "readout=%s" % self.readout]
        if self.embedding:
            parts.insert(0, "Embedding(%d, %d)" % (self.embedding.vocab_size, self.embedding.size))
        if self.head:
            parts.append("Linear(%d, %d)" % (self.head.in_size, self.head.out_size))
        return "SequenceModel[%s, loss=%s%s]" % (" -> ".join(parts), self.loss_name,
                                                 ", batch_first" if self.batch_first else "")

    def init(self, seed=0):
        """The parameter tree {"embed"?: {"table"}, "rnn": {...}, "head"?: {"W", "b"}}."""
        rng = np.random.default_rng(seed)
        seeds = [int(s) for s in rng.integers(2**31, size=3)]
        params = {}
        if self.embedding:
            params["embed"] = self.embedding.init(seeds[0])
        params["rnn"] = self.rnn.init(seeds[1])
        if self.head:
            params["head"] = self.head.init(seeds[2])
        return params

    def initial_states(self, params, batch):
        return self.rnn.initial_states(params["rnn"], batch)

    # ------------------------------------------------------------ running

    def _time_major(self, a):
        """An array indexed (B, T, ...) as (T, B, ...) and back (a view) with batch_first;
        otherwise `a` itself."""
        return a.swapaxes(0, 1) if self.batch_first and a is not None else a

    def _inputs(self, params, x):
        """(token ids or None, input vectors), both time-major."""
        if self.embedding is None:
            x = np.asarray(x)
            if x.ndim != 3 or x.shape[2] != self.rnn.input_size or 0 in x.shape[:2]:
                raise ValueError("x: expected shape (%s, %d) with T, B >= 1, got %s" % (
                    "B, T" if self.batch_first else "T, B", self.rnn.input_size, x.shape))
            return None, self._time_major(x)
        ids = self.embedding.check_ids("x", x)
        if ids.ndim != 2:
            raise ValueError("x: expected token ids of shape (%s), got %s"
                             % ("B, T" if self.batch_first else "T, B", ids.shape))
        ids = self._time_major(ids)
        return ids, self.embedding.forward(params["embed"], ids)

    def _steps_layout(self, preds):
        """Predictions in the caller's layout: (B, T, O) for "steps" with batch_first."""
        return self._time_major(preds) if self.readout == "steps" else preds

    def forward(self, params, x, lengths=None, state0=None, *, train=False, rng=None,
                context=None):
        """Run the model, keeping what `backward` needs (see `RNN.forward` for the
        arguments; `context`: the per-sequence inputs of cells that take them)."""
        ids, inputs = self._inputs(params, x)
        res = self.rnn.forward(params["rnn"], inputs, lengths, state0, train=train, rng=rng,
                               context=context)
        feats = res.outputs
        if self.readout != "steps":
            feats = pool(feats, res.lengths, self.readout, len(self.rnn.directions))
        head = None
        preds = feats
        if self.head:
            head = {k: v.copy() for k, v in params["head"].items()}  # backward sees these
            preds = self.head.forward(head, feats)
        return ModelResult(self._steps_layout(preds), res.states, res.lengths, res, ids, feats,
                           head)

    def infer(self, params, x, lengths=None, state0=None, *, context=None):
        """(predictions, final states) without tapes; dropout off."""
        ids, inputs = self._inputs(params, x)
        outputs, states = self.rnn.infer(params["rnn"], inputs, lengths, state0, context=context)
        if self.readout != "steps":
            lengths = None if lengths is None else np.asarray(lengths)
            outputs = pool(outputs, lengths, self.readout, len(self.rnn.directions))
        preds = self.head.forward(params["head"], outputs) if self.head else outputs
        return self._steps_layout(preds), states

    def predict(self, params, x, lengths=None, state0=None, *, context=None):
        return self.infer(params, x, lengths, state0, context=context)[0]

    def step(self, params, x_t, states, *, context=None):
        """One step of a unidirectional "steps" model: x_t ((B,) ids or (B, I)) ->
        (prediction (B, O), new states); `states` None on the first step (the initial
        states), then what the previous step returned. The one per-step call: for
        generation."""
        if self.readout != "steps":
            raise ValueError("step: needs readout='steps' (a prediction at every step), "
                             "this model has readout=%r" % self.readout)
        if self.embedding:
            x_t = self.embedding.forward(params["embed"], self.embedding.check_ids("x_t", x_t))
        y, states = self.rnn.step(params["rnn"], x_t, states, context=context)
        return (self.head.forward(params["head"], y) if self.head else y), states

    # ------------------------------------------------------------ loss and gradients

    def loss(self, result, targets, mask=None):
        """(value, dL/d(predictions)) of the model's loss, over the valid steps given by
        the lengths (readout "steps") or over rows; `mask` ((T, B), (B, T) with batch_first,
        or (B,)) weights entries further (0 drops one)."""
        fn = LOSSES[self.loss_name]
        if fn is None:
            raise ValueError("loss: this model was built with loss=None; give d_predictions "
                             "to backward yourself")
        preds = result.predictions
        lead = preds.shape[:-1]
        w = None
        if self.readout == "steps" and result.lengths is not None:
            T, B = lead[::-1] if self.batch_first else lead
            w = self._time_major(step_mask(result.lengths, T, B, preds.dtype))
        if mask is not None:
            m = np.asarray(mask, preds.dtype)
            if m.shape != lead:
                raise ValueError("mask: expected shape %s, got %s" % (lead, m.shape))
            w = m if w is None else w * m
        return fn(preds, targets, w)

    def backward(self, result, d_predictions=None, d_states=None):
        """Gradients for every parameter, the input and the initial states, given
        dL/d(predictions) and dL/d(final states) (either may be None: zero)."""
        if not isinstance(result, ModelResult):
            raise TypeError("result: expected the ModelResult of SequenceModel.forward, got %s"
                            % type(result).__name__)
        grads, d_feats = {}, None
        if d_predictions is not None:
            d_predictions = np.asarray(d_predictions, self.dtype)
            if d_predictions.shape != result.predictions.shape:
                raise ValueError("d_predictions: expected shape %s, got %s"
                                 % (result.predictions.shape, d_predictions.shape))
            d_feats = d_predictions = self._steps_layout(d_predictions)
            if self.head:
                grads["head"], d_feats = self.head.backward(result._head, result._features,
                                                            d_predictions)
        d_out = d_feats
        if d_feats is not None and self.readout != "steps":
            d_out = unpool(d_feats, result.rnn.outputs.shape, result.lengths, self.readout,
                           len(self.rnn.directions))
        g = self.rnn.backward(result.rnn, d_out, d_states)
        grads["rnn"] = g.params
        x_grad = self._time_major(g.x)
        if self.embedding:
            grads["embed"], x_grad = self.embedding.backward(result._inputs, g.x), None
        if self.head and "head" not in grads:
            grads["head"] = {k: np.zeros_like(v) for k, v in result._head.items()}
        order = [k for k in ("embed", "rnn", "head") if k in grads]
        return ModelGrads({k: grads[k] for k in order}, x_grad, g.state0, g)

    def loss_and_grads(self, params, x, targets, lengths=None, state0=None, *, mask=None,
                       train=False, rng=None, context=None):
        """(loss value, gradient tree like params): forward, loss and backward in one call —
        what `fit` and the optimizers take."""
        res = self.forward(params, x, lengths, state0, train=train, rng=rng, context=context)
        value, d_pred = self.loss(res, targets, mask)
        return value, self.backward(res, d_pred).params

    def gradient_flow(self, params, x, targets, lengths=None, *, layer=0, direction="fwd"):
        """‖dL/ds_t‖ at every step inside one recurrent layer for this model's loss on
        (x, targets): `rc.gradient_flow` on that layer (see `RNN.gradient_flow`)."""
        res = self.forward(params, x, lengths)
        _, d_pred = self.loss(res, targets)
        g = self.backward(res, d_pred)
        return self.rnn.gradient_flow(params["rnn"], res.rnn, g.rnn, layer, direction)
