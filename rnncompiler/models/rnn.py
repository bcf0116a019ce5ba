"""`RNN`: layers of compiled cells, stacked (any depth, any cell per layer) and optionally
bidirectional, with dropout between layers and learnable initial states.

One `kern.forward` and one `kern.backward` per layer and direction per batch: the time
loops run in C. The backward direction reads each row reversed within its own length
(row b reads x[L_b-1], ..., x[0]) and its outputs are put back in time order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..diagnostics import gradient_flow
from ..compiler.pipeline import compile as compile_cell
from .layers import as_rng, check_lengths, dropout_mask, reversal_index, reverse_steps


@dataclass
class RNNResult:
    """What `RNN.forward` returns: outputs (T, B, F) with F = output_size, the final states
    as a tree {"layer<l>": {"fwd"|"bwd": {state: (B, size)}}}, and the tape."""
    outputs: np.ndarray
    states: dict
    lengths: np.ndarray = None
    _layers: list = field(default_factory=list, repr=False)
    _rev: np.ndarray = field(default=None, repr=False)
    _context: dict = field(default=None, repr=False)


@dataclass
class RNNGrads:
    """What `RNN.backward` returns: params (the tree of `init`), x (T, B, I), and state0, a
    tree like `RNNResult.states` holding dL/d(initial state) per batch row."""
    params: dict
    x: np.ndarray
    state0: dict
    _seeds: list = field(default_factory=list, repr=False)   # per layer: (d_outputs, d_states)
    context: dict = None     # name -> (B, size): summed over steps, layers and directions


@dataclass
class _LayerTape:
    inputs: np.ndarray          # the layer's input after dropout
    mask: np.ndarray            # the dropout mask applied to it, or None
    results: dict               # direction -> ForwardResult
    state0: dict                # direction -> the state0 dict passed to the kernel
    external: dict              # direction -> names of states given by the caller


def _per_layer(name, value, n):
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ValueError("%s: expected one value per layer (%d), got %d"
                             % (name, n, len(value)))
        return list(value)
    return [value] * n


class RNN:
    """A stack of recurrent layers of compiled cells.

    Parameters: `cell` (an `rc.Cell`, or a list with one per layer), `input_size`,
    `hidden_size` (an int or one per layer), `num_layers`; `bidirectional` runs a second
    cell over each row reversed within its length and concatenates both outputs;
    `dropout` is the rate applied to the inputs of layers 1.. when `train=True`;
    `learn_state0` makes every initial state a learnable vector; `dtype`; `sizes` for
    cells with extra size names; `seed` seeds the dropout masks when no `rng` is given;
    `batch_first=True` takes x as (B, T, I) and gives outputs, d_outputs and the input
    gradient as (B, T, ...), as torch.nn.LSTM(batch_first=True) does (default time-major).

        >>> rnn = RNN(lstm, 3, 8, num_layers=2, bidirectional=True)  # doctest: +SKIP
        >>> out = rnn.forward(params, x, lengths)                          # doctest: +SKIP
        >>> grads = rnn.backward(out, d_outputs)                           # doctest: +SKIP
    """

    def __init__(self, cell, input_size, hidden_size, num_layers=1, *, bidirectional=False,
                 dropout=0.0, learn_state0=False, dtype="float32", sizes=None, seed=0,
                 batch_first=False):
        if not isinstance(num_layers, (int, np.integer)) or num_layers < 1:
            raise ValueError("num_layers: expected an int >= 1, got %r" % (num_layers,))
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError("dropout: expected a rate in [0, 1), got %r" % (dropout,))
        self.num_layers, self.dropout = int(num_layers), float(dropout)
        self.bidirectional, self.learn_state0 = bool(bidirectional), bool(learn_state0)
        self.batch_first = bool(batch_first)
        # the constructor's arguments: what `rm.save` writes to rebuild this RNN
        self.config = dict(cell=cell, input_size=input_size, hidden_size=hidden_size,
                           num_layers=int(num_layers), bidirectional=self.bidirectional,
                           dropout=self.dropout, learn_state0=self.learn_state0,
                           dtype=np.dtype(dtype).name, sizes=sizes, seed=seed,
                           batch_first=self.batch_first)
        self.directions = ("fwd", "bwd") if bidirectional else ("fwd",)
        self.input_size = input_size
        self.kernels = []
        n_in = input_size
        for c, h in zip(_per_layer("cell", cell, num_layers),
                        _per_layer("hidden_size", hidden_size, num_layers), strict=True):
            kern = compile_cell(c, input_size=n_in, hidden_size=h, dtype=dtype, sizes=sizes)
            if kern.input_size != n_in:      # a cell whose inputs do not read I units
                raise ValueError(
                    "cell: layer %d's cell %s reads %d units per step (%s) but %s gives %d"
                    % (len(self.kernels), kern.name, kern.input_size, ", ".join(
                        "%s: %d" % kv for kv in kern.inputs.items()),
                       "the layer below" if self.kernels else "input_size", n_in))
            self.kernels.append(kern)
            n_in = len(self.directions) * kern.output_size
        self.output_size = n_in
        self.dtype = self.kernels[0].dtype
        self._rng = np.random.default_rng(seed)

    def __repr__(self):
        cells = ", ".join("%s(%d->%d)" % (k.name, k.input_size, k.hidden_size)
                          for k in self.kernels)
        return "RNN[%s%s%s]" % (cells, ", bidirectional" if self.bidirectional else "",
                                ", batch_first" if self.batch_first else "")

    # ------------------------------------------------------------ parameters

    def init(self, seed=0):
        """The parameter tree {"layer<l>": {"fwd"|"bwd": {"cell": {...}, "state0": {...}}}}:
        each cell's `init_params`, learnable initial states (if any) at zero."""
        rng = np.random.default_rng(seed)
        params = {}
        for l, kern in enumerate(self.kernels):
            layer = {}
            for d in self.directions:
                p = {"cell": kern.init_params(seed=int(rng.integers(2**31)))}
                if self.learn_state0:
                    p["state0"] = {s: np.zeros(n, kern.dtype) for s, n in kern.state_sizes.items()}
                layer[d] = p
            params["layer%d" % l] = layer
        return params

    def initial_states(self, params, batch):
        """The states a sequence starts from: learned initial states or zeros, (B, size)."""
        out = {}
        for l, kern in enumerate(self.kernels):
            layer = out["layer%d" % l] = {}
            for d in self.directions:
                learned = self._layer(params, l, d).get("state0", {})
                layer[d] = {s: np.tile(learned.get(s, np.zeros(n, kern.dtype)), (batch, 1))
                            for s, n in kern.state_sizes.items()}
        return out

    def _layer(self, params, l, d):
        try:
            return params["layer%d" % l][d]
        except (KeyError, TypeError):
            raise KeyError("params: missing 'layer%d/%s'; build params with RNN.init"
                           % (l, d)) from None

    def _state0(self, p, state0, l, d):
        """The state0 dict for one layer and direction, and the names given by the caller
        (which then replace the learned ones)."""
        s0 = dict(p.get("state0", {}))
        given = {}
        if state0 is not None:
            if not isinstance(state0, dict):
                raise TypeError("state0: expected a tree {'layer<l>': {'fwd': {state: array}}}, "
                                "got %s" % type(state0).__name__)
            layers = ["layer%d" % i for i in range(self.num_layers)]
            unknown = [k for k in state0 if k not in layers]
            if unknown:
                raise KeyError("state0: unknown layer %r; this RNN has layer0..layer%d"
                               % (unknown[0], self.num_layers - 1))
            entry = state0.get("layer%d" % l) or {}
            stray = [k for k in entry if k not in self.directions]
            if stray:
                raise KeyError("state0['layer%d']: unknown direction %r; expected %s"
                               % (l, stray[0], self.directions))
            given = entry.get(d) or {}
        s0.update(given)
        return (s0 or None), frozenset(given)

    # ------------------------------------------------------------ running

    def _check_x(self, x):
        """x as a time-major (T, B, I) array (a view of a batch-first one)."""
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[2] != self.input_size or 0 in x.shape[:2]:
            raise ValueError("x: expected shape (%s, %d) with T, B >= 1, got %s"
                             % ("B, T" if self.batch_first else "T, B", self.input_size,
                                x.shape))
        return x.swapaxes(0, 1) if self.batch_first else x

    def _layout(self, a):
        """A time-major (T, B, ...) array in the caller's layout, and back (a view)."""
        return a.swapaxes(0, 1) if self.batch_first and a is not None else a

    def _context_of(self, kern, context):
        """The part of `context` (name -> (B, size) or (size,)) that kern reads, or None."""
        if not kern.context:
            return None
        if not isinstance(context, dict):
            raise ValueError("context: the cell %s takes per-sequence inputs %s; pass "
                             "context={name: array (B, size)}" % (kern.name, list(kern.context)))
        return {k: context[k] for k in kern.context if k in context}

    def _check_context(self, context):
        if context is None:
            return
        if not isinstance(context, dict):
            raise TypeError("context: expected a dict name -> array, got %s" % type(context).__name__)
        known = {k for kern in self.kernels for k in kern.context}
        unknown = [k for k in context if k not in known]
        if unknown:
            raise KeyError("context: unknown context input %r; the cells take %s"
                           % (unknown[0], sorted(known) or "none"))

    def forward(self, params, x, lengths=None, state0=None, *, train=False, rng=None,
                context=None):
        """Run every layer over x (T, B, I), or (B, T, I) with batch_first; keeps the tapes
        for `backward`.

        `state0` (optional) is a tree like `RNNResult.states` with (B, size) or (size,)
        arrays; what it gives replaces the learned or zero initial state. `train=True`
        applies dropout between layers, and draws the masks of cells that have their own
        (rc.dropout, rc.zoneout), with `rng` (a Generator or seed; default: the model's
        own generator); otherwise those masks are at their expectations. `context` gives
        the per-sequence inputs of cells that declare them (the same dict for every layer:
        each reads its own names)."""
        x = self._check_x(x)
        self._check_context(context)
        T, B = x.shape[:2]
        lengths = check_lengths(lengths, T, B)
        rev = reversal_index(lengths, T, B) if self.bidirectional else None
        drop = train and self.dropout > 0
        # cells with masks of their own (rc.dropout, rc.zoneout) draw them in training
        masked = train and any(kern.masks for kern in self.kernels)
        rng = (self._rng if rng is None else as_rng(rng)) if drop or masked else None
        h, layers = x, []
        for l, kern in enumerate(self.kernels):
            mask = None
            if drop and l > 0:
                mask = dropout_mask(rng, h.shape, self.dropout, kern.dtype)
                h = h * mask
            tape = _LayerTape(h, mask, {}, {}, {})
            outs = []
            for d in self.directions:
                p = self._layer(params, l, d)
                s0, given = self._state0(p, state0, l, d)
                xin = h if d == "fwd" else reverse_steps(h, rev)
                res = kern.forward(p["cell"], xin, s0, lengths, training=train,
                                   seed=int(rng.integers(2**63)) if train and kern.masks else None,
                                   context=self._context_of(kern, context))
                tape.results[d], tape.state0[d], tape.external[d] = res, s0, given
                outs.append(res.outputs if d == "fwd" else reverse_steps(res.outputs, rev))
            layers.append(tape)
            h = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=2)
        states = {"layer%d" % l: {d: t.results[d].states for d in self.directions}
                  for l, t in enumerate(layers)}
        return RNNResult(self._layout(h), states, lengths, layers, rev, context)

    def backward(self, result, d_outputs=None, d_states=None):
        """Gradients of a loss L given dL/d(outputs) (T, B, F), or (B, T, F) with
        batch_first, and dL/d(final states) (a tree like `result.states`; missing parts are
        zero), through every layer."""
        if not isinstance(result, RNNResult):
            raise TypeError("result: expected the RNNResult of RNN.forward, got %s"
                            % type(result).__name__)
        dh = None
        if d_outputs is not None:
            dh = np.asarray(d_outputs)
            if dh.shape != result.outputs.shape:
                raise ValueError("d_outputs: expected shape %s (that of the outputs), got %s"
                                 % (result.outputs.shape, dh.shape))
            dh = self._layout(dh)
        d_states = d_states or {}
        grads, d_state0, seeds, d_context = {}, {}, [None] * self.num_layers, {}
        for l in reversed(range(self.num_layers)):
            grads["layer%d" % l], d_state0["layer%d" % l], dh, seeds[l] = self._layer_backward(
                l, result._layers[l], result._rev, dh, d_states.get("layer%d" % l, {}),
                d_context)
        order = ["layer%d" % l for l in range(self.num_layers)]
        return RNNGrads({k: grads[k] for k in order}, self._layout(dh),
                        {k: d_state0[k] for k in order}, seeds, d_context or None)

    def _layer_backward(self, l, tape, rev, dh, d_states, d_context):
        kern = self.kernels[l]
        O = kern.output_size
        g_layer, ds_layer, seed, dx = {}, {}, {}, None
        for i, d in enumerate(self.directions):
            dy = None if dh is None else dh[..., i * O:(i + 1) * O]
            if dy is not None and d == "bwd":
                dy = reverse_steps(dy, rev)
            ds = d_states.get(d)
            seed[d] = (dy, ds)
            g = kern.backward(tape.results[d], dy, ds)
            gp = {"cell": g.params}
            if self.learn_state0:
                gp["state0"] = {s: (np.zeros(n, kern.dtype) if s in tape.external[d]
                                    else g.state0[s].sum(axis=0))
                                for s, n in kern.state_sizes.items()}
            g_layer[d], ds_layer[d] = gp, g.state0
            for k, v in (g.context or {}).items():   # a context read by several layers
                d_context[k] = v if k not in d_context else d_context[k] + v
            gx = g.x if d == "fwd" else reverse_steps(g.x, rev)
            dx = gx if dx is None else dx + gx
        if tape.mask is not None:
            dx = dx * tape.mask
        return g_layer, ds_layer, dx, seed

    def infer(self, params, x, lengths=None, state0=None, *, context=None):
        """Outputs (in the layout of x) and final states without tapes (less memory);
        dropout off."""
        x = self._check_x(x)
        self._check_context(context)
        T, B = x.shape[:2]
        lengths = check_lengths(lengths, T, B)
        rev = reversal_index(lengths, T, B) if self.bidirectional else None
        h, states = x, {}
        for l, kern in enumerate(self.kernels):
            outs, states["layer%d" % l] = [], {}
            for d in self.directions:
                p = self._layer(params, l, d)
                s0, _ = self._state0(p, state0, l, d)
                xin = h if d == "fwd" else reverse_steps(h, rev)
                y, s = kern.infer(p["cell"], xin, s0, lengths,
                                  context=self._context_of(kern, context))
                states["layer%d" % l][d] = s
                outs.append(y if d == "fwd" else reverse_steps(y, rev))
            h = outs[0] if len(outs) == 1 else np.concatenate(outs, axis=2)
        return self._layout(h), states

    def step(self, params, x_t, states, *, context=None):
        """One time step of a unidirectional stack: x_t (B, I) -> (y_t (B, F), new states);
        `states` is a full tree (see `initial_states`), or None for the first step."""
        if self.bidirectional:
            raise ValueError("step: a bidirectional RNN reads the whole sequence backwards; "
                             "step-by-step generation needs bidirectional=False")
        h, new = np.asarray(x_t), {}
        if states is None:
            states = self.initial_states(params, h.shape[0] if h.ndim else 1)
        for l, kern in enumerate(self.kernels):
            key = "layer%d" % l
            if not isinstance(states.get(key), dict) or "fwd" not in states[key]:
                raise KeyError("states: missing %r/'fwd'; pass states=None for the first step "
                               "(initial states), then the states the previous step returned"
                               % key)
            h, s = kern.step(self._layer(params, l, "fwd")["cell"], h, states[key]["fwd"],
                             context=self._context_of(kern, context))
            new[key] = {"fwd": s}
        return h, new

    def gradient_flow(self, params, result, grads, layer=0, direction="fwd"):
        """‖dL/ds_t‖ for every step t inside one layer, for the loss whose gradients `grads`
        are (from `backward(result, ...)`): `rc.gradient_flow` on that layer's kernel, fed
        the gradients that reached its outputs and final states. For direction "bwd" step t
        is the t-th step the backward cell took (reversed time)."""
        if not 0 <= layer < self.num_layers or direction not in self.directions:
            raise ValueError("layer, direction: expected 0..%d and one of %s, got %r, %r"
                             % (self.num_layers - 1, self.directions, layer, direction))
        tape, (dy, ds) = result._layers[layer], grads._seeds[layer][direction]
        xin = tape.inputs if direction == "fwd" else reverse_steps(tape.inputs, result._rev)
        kern = self.kernels[layer]
        if dy is None and ds is None:
            dy = np.zeros(tape.results[direction].outputs.shape, kern.dtype)
        # the masks and contexts of the run itself: the norms are that run's
        return gradient_flow(kern, self._layer(params, layer, direction)["cell"], xin,
                             tape.state0[direction], result.lengths, d_outputs=dy, d_states=ds,
                             context=self._context_of(kern, result._context),
                             masks=tape.results[direction].masks)
