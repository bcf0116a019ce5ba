"""rc.rtrl: real-time recurrent learning (Williams & Zipser 1989) — the forward-mode
alternative to BPTT that Graves describes. The sensitivities of the states with respect to
the parameters, dS_t/dθ, are carried forward in time with the states:

    dS_t/dθ = ∂F/∂s · dS_{t-1}/dθ + ∂F/∂θ,        dy_t/dθ likewise,

so the gradient of a loss on y_t is known at step t — no tape, no backward pass, which is
what online learning needs. Each step costs O(|S|·|θ|) memory and more time than BPTT: for
small cells. The derivation is forward mode over the unfused step graph (numpy), with
each elementwise node's partials from sympy (hand-written derivatives used as declared,
as the compiled kernel uses them); it shares no code with the compiled backward pass.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .evaluator import Partials, evaluate_step


@dataclass
class RTRLGradients:
    """Gradients found forward in time: `params` (name -> array) and `state0`
    (state -> (B, size)); for a whole sequence also its `outputs` and final `states`."""
    params: dict
    state0: dict
    outputs: np.ndarray = None
    states: dict = None


class _Columns:
    """The tangent columns: every parameter element (shared by all rows), then every
    unit of this row's state0."""

    def __init__(self, param_shapes, state_sizes, frozen=frozenset()):
        self.frozen = frozen        # constants (trainable=False): carried, not reported
        self.param, off = {}, 0
        for name, shape in param_shapes.items():
            n = int(np.prod(shape, dtype=np.int64))
            self.param[name] = (off, shape)
            off += n
        self.P = off
        self.state, self.S = {}, 0
        for s, n in state_sizes.items():
            self.state[s] = (off + self.S, n)
            self.S += n
        self.C = self.P + self.S

    def split(self, flat):
        """(B, C) or (C,) row sums -> params dict (summed over rows) and state0 dict."""
        flat = np.atleast_2d(flat)
        params = {name: flat[:, off:off + int(np.prod(shape, dtype=np.int64))].sum(axis=0)
                  .reshape(shape) for name, (off, shape) in self.param.items()
                  if name not in self.frozen}
        state0 = {s: flat[:, off:off + n].copy() for s, (off, n) in self.state.items()}
        return params, state0


def _tangent_linear(v, W, t_v, col_W, col_b, n_out, B, C):
    """Tangent of y = v Wᵀ (+ b): W t_v, plus v in W's columns, plus 1 in b's."""
    t = np.zeros((B, n_out, C)) if t_v is None else np.einsum("ij,bjc->bic", W, t_v)
    off, n_in = col_W
    block = t[:, :, off:off + n_out * n_in].reshape(B, n_out, n_out, n_in)
    idx = np.arange(n_out)
    block[:, idx, idx, :] += v[:, None, :]
    if col_b is not None:
        t[:, idx, col_b + idx] += 1.0
    return t


class OnlineRTRL:
    """One running sequence (a batch of B rows): states and their sensitivities.

    `params` may be changed between steps (online learning: the sensitivities carried so
    far are kept, RTRL's usual approximation). Make one with `RTRL.start`.
    """

    def __init__(self, rtrl, params, B, state0=None):
        self.rtrl, self.params, self.B = rtrl, params, B
        cols = rtrl.columns
        self.states, self.sens = {}, {}
        for s, n in rtrl.state_sizes.items():
            v = None if state0 is None else state0.get(s)
            self.states[s] = np.zeros((B, n)) if v is None else \
                np.array(np.broadcast_to(np.asarray(v, np.float64), (B, n)))
            sens = np.zeros((B, n, cols.C))
            off, _ = cols.state[s]
            sens[:, np.arange(n), off + np.arange(n)] = 1.0    # dS_{-1}/dstate0 = I
            self.sens[s] = sens
        self.t, self.dy_dtheta = 0, None     # dy_t/d(columns) of the latest step

    def step(self, x_t, valid=None):
        """Advance one step on x_t (B, I) and return y_t (B, O). valid: (B,) bools, False
        for rows whose sequence has ended (their state is kept and y_t is 0)."""
        r = self.rtrl
        x_t = np.asarray(x_t, np.float64)
        if x_t.shape != (self.B, r.input_size):
            raise ValueError("x_t: expected shape (%d, %d), got %s"
                             % (self.B, r.input_size, x_t.shape))
        params = {k: np.asarray(v, np.float64) for k, v in self.params.items()}
        new, y, val = evaluate_step(r.graph, params, x_t, self.states, r.fns)
        tangents = r.step_tangents(val, self.sens, self.B)
        keep = np.ones(self.B, bool) if valid is None else np.asarray(valid, bool)
        k2, k3 = keep[:, None], keep[:, None, None]
        self.dy_dtheta = np.where(k3, tangents[r.graph.output], 0)
        for s, node in r.graph.new_states:
            self.states[s] = np.where(k2, new[s], self.states[s])
            self.sens[s] = np.where(k3, tangents[node], self.sens[s])
        self.t += 1
        return np.where(k2, y, 0)

    def gradient(self, d_output=None, d_states=None):
        """The gradient of <d_output, y_t> (the latest step's output) + <d_states, the
        current states>, known now: an RTRLGradients (params, state0)."""
        pairs = []
        if d_output is not None:
            if self.t == 0:
                raise ValueError("d_output: no step has been taken yet")
            seed = self._seed("d_output", d_output, self.dy_dtheta.shape[:2])
            pairs.append((self.dy_dtheta, seed))
        unknown = [s for s in (d_states or {}) if s not in self.sens]
        if unknown:
            raise KeyError("d_states: unknown state %r; this cell has %s"
                           % (unknown[0], list(self.sens)))
        pairs += [(self.sens[s], self._seed("d_states[%r]" % s, v, self.sens[s].shape[:2]))
                  for s, v in (d_states or {}).items() if v is not None]
        return self._contract(pairs)

    @staticmethod
    def _seed(name, value, shape):
        arr = np.asarray(value, np.float64)
        if arr.shape not in (shape, shape[1:]):
            raise ValueError("%s: expected shape %s, got %s" % (name, shape, arr.shape))
        return arr

    def _contract(self, pairs):
        """Σ_b Σ_i seed[b, i] tangent[b, i, :], split into parameters and state0."""
        total = np.zeros((self.B, self.rtrl.columns.C))
        for tangent, seed in pairs:
            total += np.einsum("bi,bic->bc", np.broadcast_to(seed, tangent.shape[:2]), tangent)
        params, state0 = self.rtrl.columns.split(total)
        return RTRLGradients(params, state0)


class RTRL:
    """A cell's forward-mode (RTRL) derivation at bound sizes, float64, numpy."""

    def __init__(self, cell, input_size=3, hidden_size=4, sizes=None):
        from .evaluator import Reference
        # a cell's contexts and masks are columns of its input row: RTRL reads whole rows
        ref = Reference(cell, input_size, hidden_size, sizes).rows()
        self.graph, self.name = ref.graph, ref.name
        self.input_size, self.hidden_size = ref.input_size, ref.hidden_size
        self.state_sizes, self.output_size = ref.state_sizes, ref.output_size
        self.param_shapes = ref.param_shapes
        self.frozen, self.trainable = ref.frozen, ref.trainable
        self.init_params = ref.init_params
        self._check = ref._checked
        self.columns = _Columns(self.param_shapes, self.state_sizes, self.frozen)
        self.partials = Partials(self.graph, hand_written=True)
        self.fns = {}

    def start(self, params, batch=1, state0=None):
        """An OnlineRTRL at step 0 for `batch` rows."""
        x = np.zeros((1, batch, self.input_size))
        params, _, state0, _ = self._check(params, x, state0, None)
        return OnlineRTRL(self, params, batch, state0)

    def gradients(self, params, x, state0=None, lengths=None, d_outputs=None, d_states=None):
        """Gradients of <d_outputs, outputs> + <d_states, final states> for a whole
        sequence, found forward in time (the same numbers BPTT gives)."""
        params, x, state0, lengths = self._check(params, x, state0, lengths)
        T, B, _ = x.shape
        if d_outputs is not None and np.shape(d_outputs) != (T, B, self.output_size):
            raise ValueError("d_outputs: expected shape %s, got %s"
                             % ((T, B, self.output_size), np.shape(d_outputs)))
        run = OnlineRTRL(self, params, B, state0)
        total = RTRLGradients({k: np.zeros(v) for k, v in self.param_shapes.items()
                               if k not in self.frozen},
                              {s: np.zeros((B, n)) for s, n in self.state_sizes.items()})
        ys = np.zeros((T, B, self.output_size))
        for t in range(T):
            ys[t] = run.step(x[t], None if lengths is None else t < lengths)
            if d_outputs is not None:
                _accumulate(total, run.gradient(d_outputs[t]))
        _accumulate(total, run.gradient(d_states=d_states))
        total.outputs, total.states = ys, dict(run.states)
        return total

    def step_tangents(self, val, sens, B):
        """Forward-mode over one step: node -> tangent (B, size, C), or None when zero."""
        g, C, cols = self.graph, self.columns.C, self.columns
        tan = {"x": None}
        for s, _ in g.states:
            tan["state." + s] = sens[s]
        for name, shape in g.params:
            tan["param." + name] = _param_tangent(cols.param[name][0], shape, C)
        for n in g.ops():
            d = g[n]
            tan[n] = TANGENTS[d.op](self, d, [val[a] for a in d.args], [tan[a] for a in d.args], B)
        return tan

    def _ew_tangent(self, n, d, ops, tans, B):
        out = None
        for k, t_a in enumerate(tans):
            fn = self.partials(n, k)
            if t_a is None or fn is None:
                continue
            p = np.broadcast_to(np.asarray(fn(*ops), np.float64), (B, d.size))
            c = p[:, :, None] * t_a
            out = c if out is None else out + c
        if out is None:
            return None
        return np.array(np.broadcast_to(out, (B, d.size, out.shape[-1])))


def _linear_tangent(rt, d, vals, tans, B):
    """d(W v + b)/dθ: W's own columns, plus W times v's tangent (one term, one bias)."""
    args, cols, C = d.args, rt.columns, rt.columns.C
    col_b = cols.param[args[2][len("param."):]][0] if len(args) == 3 else None
    W = vals[1]
    return _tangent_linear(vals[0], W, tans[0], (cols.param[args[1][len("param."):]][0], W.shape[1]),
                           col_b, W.shape[0], B, C)


def _concat_tangent(rt, d, vals, tans, B):
    C = rt.columns.C
    return np.concatenate([np.zeros((B, v.shape[1], C)) if t is None
                           else np.broadcast_to(t, (B, v.shape[1], C))
                           for v, t in zip(vals, tans, strict=True)], axis=1)


def _reduce_tangent(rt, d, vals, tans, B):
    t = tans[0]
    if t is not None:
        t = t.sum(axis=1, keepdims=True)
        t = t / vals[0].shape[1] if d.how == "mean" else t
    return t


# op -> its tangent (forward mode) from its operands' values and tangents: the part of an
# op that needs RTRL's columns (rnncompiler.compiler.ops holds the rest)
TANGENTS = {
    "ew": lambda rt, d, vals, tans, B: rt._ew_tangent(d.id, d, vals, tans, B),
    "linear": _linear_tangent,
    "concat": _concat_tangent,
    "reduce": _reduce_tangent,
    "slice": lambda rt, d, vals, tans, B: (None if tans[0] is None else np.array(
        np.broadcast_to(tans[0], (B,) + np.shape(tans[0])[-2:])[:, d.offset:d.offset + d.size])),
}


def _param_tangent(off, shape, C):
    """d p / dθ for a parameter used elementwise: (size, C) for a vector, (1, C) for a
    scalar; None for a matrix (linear maps handle their weights themselves)."""
    if len(shape) == 2:
        return None
    n = shape[0] if shape else 1
    t = np.zeros((n, C))
    t[np.arange(n), off + np.arange(n)] = 1.0
    return t


def _accumulate(total, g):
    for k in total.params:
        total.params[k] += g.params[k]
    for s in total.state0:
        total.state0[s] += g.state0[s]


def rtrl(cell, input_size=3, hidden_size=4, sizes=None):
    """Real-time recurrent learning for `cell`: `.gradients(params, x, ...)` for a whole
    sequence, or `.start(params, batch)`, then per step `.step(x_t)` and `.gradient(dL/dy_t)`
    for the gradient of that step's loss at once (online learning). For a cell with
    context inputs or masks, x_t is the whole input row (`rt.input_size` wide: inputs,
    contexts, masks side by side, as the exported C reads it).

        >>> rt = rc.rtrl(elman, input_size=3, hidden_size=4)          # doctest: +SKIP
        >>> run = rt.start(params, batch=2)                            # doctest: +SKIP
        >>> y_t = run.step(x[0])                                       # doctest: +SKIP
        >>> g_t = run.gradient(d_output=y_t - target[0])               # doctest: +SKIP
    """
    return RTRL(cell, input_size, hidden_size, sizes)
