"""`kern.stream(params)`: one sequence run one sample at a time (batch 1, the state carried
from call to call), as audio and control loops run a network. The weights are packed once
(the C's NAME_pack) and each `step` is one call of NAME_step over preallocated buffers:
no workspace, parameter vector or packing per sample, as `kern.step` has; `steps` runs a
block of samples (an audio buffer) in one C call."""
from __future__ import annotations

import numpy as np

from .workspace import aligned_empty

# the C functions a stream calls: the batch-1 unit's (b1_ ...) where the kernel has one
STREAM_FUNCTIONS = ("step_workspace_size", "pack", "step", "steps")


class Stream:
    """A kernel's streaming state: `step(x_t)` -> y_t (O,), `steps(x)` -> y (T, O) for a
    block of samples, `states` (name -> (size,)), `reset(state0=None)`. Made by
    `Kernel.stream`; one per sequence, not shared between threads (its buffers are its
    own)."""

    def __init__(self, kern, params, state0=None, context=None):
        self._kern = kern
        self._flat = kern._flat_params(params)
        cols = kern.columns
        # contexts and masks (at inference) are the constant tail of every row
        blank = np.zeros((1, 1, cols.step_width), kern.dtype)
        row, _ = cols.rows(blank, 1, context, None, None, False, kern.dtype)
        self._row = np.array(row[0, 0])
        # the batch-1 unit's NAME_step where the kernel has one (codegen.with_batch1_unit)
        fn = {n: kern._fn[("b1_" if kern._batch1 else "") + n] for n in STREAM_FUNCTIONS}
        # a block: the unit's NAME_steps, a step at a time over the packed weights; a
        # kernel without the unit runs its own inference (the input's products hoisted
        # over the block: an LSTM at H=128, 2.0 us a sample against 3.6 step by step)
        self._step, self._steps = fn["step"], fn["steps"] if kern._batch1 else None
        self._work = aligned_empty(fn["step_workspace_size"](), kern.dtype)
        self._state = np.zeros(kern._S, kern.dtype)
        self._y = np.empty(kern.output_size, kern.dtype)
        ptr = kern._ptr
        self._p = [ptr(a) for a in (self._flat, self._row, self._state, self._y, self._work)]
        if fn["pack"](self._p[0], self._p[4]):
            raise ValueError("the kernel rejected its parameters")   # not reached: checked
        self.reset(state0)

    def reset(self, state0=None):
        """Start a new sequence from state0 (a dict of (size,) or (1, size) arrays; None or
        a missing state: zeros)."""
        rows = self._kern._state_rows("state0", state0 or {}, 1)
        self._state[:] = rows[0]

    def step(self, x_t):
        """One sample: x_t (I,) or (1, I) -> y_t (O,), a new array; the state moves on."""
        x = np.asarray(x_t)
        n = self._kern.input_size
        if x.shape not in ((n,), (1, n)):
            raise ValueError("x_t: expected shape (%d,) or (1, %d), got %s" % (n, n, x.shape))
        self._kern._check_kind("x_t", x.dtype)
        self._row[:n] = x.reshape(n)
        p = self._p
        self._step(p[0], p[1], p[2], p[3], p[2], p[4])
        return self._y.copy()

    def steps(self, x):
        """A block of samples, x (T, I) -> y (T, O), a new array, in one C call: what
        `kern.infer` gives for the block from the stream's state, to the bit (and what T
        calls of `step` give, to the bit where the kernel has a batch-1 unit, else to
        rounding); the state moves on past them."""
        kern = self._kern
        x = np.asarray(x)
        n = kern.input_size
        if x.ndim != 2 or x.shape[1] != n or not 1 <= x.shape[0] < 2**31:
            raise ValueError("x: expected shape (T, %d) with 1 <= T < 2**31, got %s" % (n, x.shape))
        kern._check_kind("x", x.dtype)
        rows = np.empty((x.shape[0], self._row.size), kern.dtype)
        rows[:, n:] = self._row[n:]          # contexts and masks: every row's tail
        rows[:, :n] = x
        if self._steps is None:
            T = x.shape[0]
            y, state_T = kern._infer_rows((T, 1, self._flat, rows[:, None], None, self._state[None]),
                                          kern._workspace_size(False, T, 1))
            self._state[:] = state_T[0]
            return y[:, 0]
        y = np.empty((x.shape[0], kern.output_size), kern.dtype)
        p, ptr = self._p, kern._ptr
        kern._raise_on_code(self._steps(x.shape[0], p[0], ptr(rows), p[2], ptr(y), p[2], p[4]))
        return y

    @property
    def states(self):
        """The states after the last step, name -> (size,) copies."""
        return {s: v.copy() for s, v in self._kern._split_states(self._state).items()}
