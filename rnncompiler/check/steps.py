"""Per-step checks: step t's backward on its own, through the public kernel API.

For a loss L = <u_y, outputs> + <u_s, final states>, step t's backward takes dL/dy[t] and
the adjoint δs[t]⁺ carried into it and produces the rest. Each is checked at every t:

- δs[t]⁺ as the full backward pass carries it (`backward(state_grads=True)`, less dL/dy[t]
  for a state that is the output), against central differences of L in the states after
  step t (the sequence restarted at step t+1);
- step t's contribution to each (tied) parameter's gradient: the gradient of a one-step
  run from the states after step t-1, seeded with dL/dy[t] and that δs[t]⁺, against
  central differences of L when only step t's use of the parameter moves (the steps before
  and after keep the unperturbed value);
- the adjoint δs[t-1] the same one-step run passes back, against central differences of L
  in the states after step t-1 (the sequence restarted at step t);
- δx[t] of the full backward pass, against central differences in x[t].

Going back from t = T-1, the first step that disagrees is where the error enters: what it
was given was checked right one row earlier.
"""
from __future__ import annotations

import numpy as np

from .blocks import compare
from .report import StepCheck


class Probe:
    """Compares an analytic array with the truth: elementwise central differences
    ('jacobian'), central differences along `count` random unit directions ('projection'),
    or a float64 twin's analytic array."""

    def __init__(self, mode, eps, rng, count):
        self.mode, self.eps, self.rng, self.count = mode, eps, rng, count

    def __call__(self, loss, base, analytic, expected=None):
        analytic = np.asarray(analytic, np.float64)
        if self.mode == "projection":
            dirs = [self._unit(base.shape) for _ in range(self.count)]
            a = np.array([np.sum(analytic * d) for d in dirs])
            if expected is not None:
                return a, np.array([np.sum(np.asarray(expected, np.float64) * d) for d in dirs])
            return a, np.array([(loss(base + self.eps * d) - loss(base - self.eps * d))
                                / (2 * self.eps) for d in dirs])
        if expected is not None:
            return analytic.ravel(), np.asarray(expected, np.float64).ravel()
        num = np.zeros(base.size)
        for j in range(base.size):
            step = np.zeros(base.size)
            step[j] = self.eps
            step = step.reshape(base.shape)
            num[j] = (loss(base + step) - loss(base - step)) / (2 * self.eps)
        return analytic.ravel(), num

    def _unit(self, shape):
        d = self.rng.standard_normal(shape)
        return d / max(np.linalg.norm(d), 1e-300)


class _Run:
    """One kernel, one draw: the full forward/backward and the states after every step."""

    def __init__(self, kern, params, x, state0, lengths, u_y, u_s):
        self.kern, self.params, self.x, self.lengths = kern, params, x, lengths
        self.u_y, self.u_s = u_y, u_s
        self.T, self.B = x.shape[:2]
        self.valid = np.ones((self.T, self.B), bool) if lengths is None else \
            np.arange(self.T)[:, None] < np.asarray(lengths)[None, :]
        res = kern.forward(params, x, state0, lengths)
        self.g = kern.backward(res, u_y, u_s, state_grads=True)
        self.before = [{s: np.array(v, np.float64) for s, v in state0.items()}]
        for t in range(self.T - 1):
            self.before.append(self.one_step(t, params, x[t], self.before[t])[1])
        self.out_states = self._output_states(res)
        self.carry_in = [self._carried_in(t) for t in range(self.T)]

    def _lengths(self, t0, t1):
        """Lengths of the run over steps [t0, t1), or None when all rows are full."""
        if self.lengths is None:
            return None
        return np.clip(np.asarray(self.lengths) - t0, 0, t1 - t0).astype(np.intc)

    def one_step(self, t, params, x_t, states):
        res = self.kern.forward(params, x_t[None], states, self._lengths(t, t + 1))
        return res, {s: np.asarray(v, np.float64) for s, v in res.states.items()}

    def _output_states(self, res):
        """States whose g.states include dL/dy[t]: moving dL/dy at the last valid step
        moves them by exactly that (one extra backward)."""
        t0 = int(np.flatnonzero(self.valid.any(axis=1))[-1]) if self.valid.any() else None
        if t0 is None:
            return []
        bumped = np.array(self.u_y, np.float64)
        bumped[t0] += 1.0
        g2 = self.kern.backward(res, bumped, self.u_s, state_grads=True)
        rows = self.valid[t0]
        out = []
        for s, n in self.kern.state_sizes.items():
            if n == self.kern.output_size:
                moved = np.asarray(g2.states[s][t0] - self.g.states[s][t0], np.float64)[rows]
                if np.allclose(moved, 1.0, rtol=0, atol=1e-3):
                    out.append(s)
        return out

    def _carried_in(self, t):
        """δs[t]⁺ of the full backward pass: g.states[s][t], less dL/dy[t] for a state that
        is the output (state -> (B, n))."""
        if t == self.T - 1:
            return {s: np.asarray(v, np.float64) for s, v in self.u_s.items()}
        out = {}
        for s in self.kern.state_sizes:
            v = np.array(self.g.states[s][t], np.float64)
            if s in self.out_states:
                v -= np.where(self.valid[t][:, None], self.u_y[t], 0)
            out[s] = v
        return out

    def one_step_backward(self, t):
        """Step t alone, seeded with dL/dy[t] and δs[t]⁺: (contributions to the parameter
        gradients, δs[t-1] passed back)."""
        res, _ = self.one_step(t, self.params, self.x[t], self.before[t])
        g1 = self.kern.backward(res, self.u_y[t:t + 1], self.carry_in[t])
        return ({k: np.asarray(v, np.float64) for k, v in g1.params.items()},
                {s: np.asarray(v, np.float64) for s, v in g1.state0.items()})

    def loss_from(self, t, params_t, x_t, states):
        """L's part from step t on, step t run with params_t on x_t from `states`."""
        res, after = self.one_step(t, params_t, x_t, states)
        total = float(np.sum(np.asarray(res.outputs[0], np.float64) * self.u_y[t]))
        if t + 1 < self.T:
            rest = self.kern.forward(self.params, self.x[t + 1:], after,
                                     self._lengths(t + 1, self.T))
            total += float(np.sum(np.asarray(rest.outputs, np.float64) * self.u_y[t + 1:]))
            after = rest.states
        return total + sum(float(np.sum(np.asarray(after[s], np.float64) * self.u_s[s]))
                           for s in self.u_s)


def _columns(kern):
    states = list(kern.state_sizes)
    return (["δ%s[t]⁺" % s for s in states] + _trained(kern) + ["x[t]"]
            + ["δ%s[t-1]" % s for s in states])


def _step_values(run, t):
    """Column -> analytic array at step t."""
    contrib, back = run.one_step_backward(t)
    vals = dict(contrib)
    vals["x[t]"] = np.asarray(run.g.x[t], np.float64)
    vals.update({"δ%s[t-1]" % s: v for s, v in back.items()})
    vals.update({"δ%s[t]⁺" % s: v for s, v in run.carry_in[t].items()})
    return vals


def _trained(kern):
    """The parameters with a gradient: all but those declared trainable=False."""
    frozen = getattr(kern, "frozen", frozenset())
    return [k for k in kern.param_shapes if k not in frozen]


def _truth_losses(run, t):
    """Column -> (loss of the column's input, base value) for finite differences; None
    for δs[T-1]⁺, which is d_states itself."""
    out = {}
    for k in _trained(run.kern):
        def loss_p(v, k=k):
            return run.loss_from(t, dict(run.params, **{k: v}), run.x[t], run.before[t])
        out[k] = (loss_p, np.array(run.params[k], np.float64))
    out["x[t]"] = (lambda v: run.loss_from(t, run.params, v, run.before[t]),
                   np.array(run.x[t], np.float64))
    for s in run.kern.state_sizes:
        def loss_s(v, s=s):
            return run.loss_from(t, run.params, run.x[t], dict(run.before[t], **{s: v}))
        out["δ%s[t-1]" % s] = (loss_s, np.array(run.before[t][s], np.float64))
        if t + 1 < run.T:
            def loss_next(v, s=s):
                return run.loss_from(t + 1, run.params, run.x[t + 1],
                                     dict(run.before[t + 1], **{s: v}))
            out["δ%s[t]⁺" % s] = (loss_next, np.array(run.before[t + 1][s], np.float64))
    return out


def check_steps(kern, params, x, state0, lengths, u_y, u_s, probe, rtol, atol, twin=None):
    """A StepCheck of `kern` (against finite differences, or against `twin`)."""
    run = _Run(kern, params, x, state0, lengths, u_y, u_s)
    truth = _Run(twin, params, x, state0, lengths, u_y, u_s) if twin is not None else None
    cols = _columns(kern)
    T = run.T
    errors, passed = np.zeros((T, len(cols))), np.ones((T, len(cols)), bool)
    sums = {k: 0.0 for k in _trained(kern)}
    for t in range(T):
        vals = _step_values(run, t)
        expected = _step_values(truth, t) if truth is not None else \
            {"δ%s[t]⁺" % s: v for s, v in run.carry_in[t].items()} if t == T - 1 else {}
        losses = _truth_losses(run, t) if truth is None else {}
        a, n = {}, {}
        for c in cols:
            loss, base = losses.get(c, (None, vals[c]))
            a[c], n[c] = probe(loss, base, vals[c], expected.get(c))
        e, p, _ = compare(a, n, rtol, atol)
        errors[t], passed[t] = [e[c] for c in cols], [p[c] for c in cols]
        for k in sums:
            sums[k] = sums[k] + vals[k]
    full = {k: np.asarray(run.g.params[k], np.float64) for k in sums}
    sum_errors, sum_passed, _ = compare(sums, full, rtol, atol)
    return StepCheck(cols, errors, passed, sum_errors, sum_passed, run.out_states)
