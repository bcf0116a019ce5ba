"""The runtime: `Kernel` checks numpy arguments, allocates buffers and calls the compiled
C (no sympy, no networkx here). cffi releases the GIL during each call and every call
has its own workspace, so threads may share a kernel.
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import numpy as np

from . import checkpoint, finite, parallel
from .inputs import Columns, row_view
from .meta import Equations, from_meta
from .stream import STREAM_FUNCTIONS, Stream
from .workspace import WorkspacePool
from . import threads as _threads

_INT_MAX = 2**31 - 1
_SIZE_MAX = 2**64 - 1


class _Tape:
    """A workspace kept for backward. Results hold this owner, never the array itself, so
    a copy of a result (copy.copy, dataclasses.replace) shares the owner, and the array
    goes back to the pool only when the last result referring to it is gone."""
    __slots__ = ("array", "__weakref__")

    def __init__(self, array, pool=None):
        self.array = array
        if pool is not None:
            weakref.finalize(self, pool.give, array)

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return _Tape(self.array.copy())

    def __reduce__(self):
        # a copy, so that even out-of-band pickle buffers never alias pooled memory
        return _Tape, (self.array.copy(),)


@dataclass
class ForwardResult:
    """What forward returns: outputs (T, B, O), final states, and the tape for backward.
    Copies share the tape (kept alive while any copy is); deep copies and unpickled
    results carry their own copy of it."""
    outputs: np.ndarray
    states: dict
    _key: str = field(repr=False, default="")
    _args: tuple = field(repr=False, default=())     # (T, B, params, x, lengths, state0)
    _work: _Tape = field(repr=False, default=None)
    _checkpoints: list = field(repr=False, default=None)   # checkpointed: segment starts
    _parts: list = field(repr=False, default=None)   # batch split: [(slice args, _Tape)]
    _batch_first: bool = field(repr=False, default=False)   # outputs (B, T, O); backward alike
    masks: dict = None       # the masks this run used (rc.dropout, rc.zoneout), by name

    def __copy__(self):
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __getstate__(self):
        # the copy of x kept after the tape's workspace is pickled (and deep-copied) as an
        # array of its own, so that even out-of-band pickle buffers never alias pooled memory
        state = dict(self.__dict__)
        x = self._args[3] if len(self._args) > 3 else None
        if self._work is not None and isinstance(x, np.ndarray) and np.shares_memory(x, self._work.array):
            state["_args"] = self._args[:3] + (x.copy(),) + self._args[4:]
        return state


@dataclass
class Gradients:
    """What backward returns: gradients of the trainable params (none for those declared
    trainable=False), x (T, B, I), state0, and optionally of every state at every step
    (state_grads=True); for a cell with several inputs, `inputs` holds each one's part of
    x, and for one with context inputs `context` their gradients summed over time."""
    params: dict
    x: np.ndarray
    state0: dict
    states: dict = None
    inputs: dict = None
    context: dict = None


def check_lengths(lengths, T, B):
    """lengths as an int array (B,) with every length in [0, T], or None."""
    if lengths is None:
        return None
    arr = np.asarray(lengths)
    if arr.dtype.kind not in "iu":
        raise TypeError("lengths: expected integers, got dtype %s" % arr.dtype)
    if arr.shape != (B,):
        raise ValueError("lengths: expected shape (%d,) (one length per batch row), got %s"
                         % (B, arr.shape))
    if arr.size and (arr.min() < 0 or arr.max() > T):
        raise ValueError("lengths: every length must be in [0, %d] (T), got %s"
                         % (T, arr.tolist()))
    return arr


class Kernel:
    """A compiled cell: forward/backward/infer/step over whole sequences on numpy arrays."""

    loaded_from_cache = None     # rc.compile: True when the binary came from the cache

    def __init__(self, module, meta, key, rebuild, cell=None, checkpoint=None):
        self._module, self._lib, self._ffi = module, module.lib, module.ffi
        self._meta, self._key, self._rebuild = meta, key, rebuild
        self.cell = cell          # the rc.Cell compiled, when known (not after unpickling)
        self.checkpoint = checkpoint   # k: forward keeps states every k steps (checkpoint.py)
        p = meta["prefix"]
        self._fn = {n: getattr(self._lib, "%s_%s" % (p, n)) for n in
                    ("run_forward", "run_backward", "workspace_size", "infer_workspace_size")
                    + STREAM_FUNCTIONS}
        # inference at batch 1 in a unit of its own (codegen.with_batch1_unit), if built
        self._batch1 = bool(meta.get("batch1"))
        if self._batch1:
            self._fn.update({"b1_" + n: getattr(self._lib, "%s_b1_%s" % (p, n)) for n in
                             ("infer", "infer_workspace_size") + STREAM_FUNCTIONS})
        if hasattr(self._lib, p + "_set_blas_threads"):
            getattr(self._lib, p + "_set_blas_threads")(1)
        self.name = meta["name"]
        self.input_size = meta["input_size"]
        # the blocks of the C's input row: inputs, context inputs, masks (inputs.py)
        self.columns = Columns.from_meta(meta.get("columns")) or Columns(
            (("x", self.input_size),))
        self.inputs = dict(self.columns.inputs)
        self.context = dict(self.columns.context)
        self.masks = {m.name: m for m in self.columns.masks}
        self.hidden_size = meta["hidden_size"]
        self.dtype = np.dtype(meta["dtype"])
        self.sizes = dict(meta["sizes"])
        self.state_sizes = {s: n for s, n in meta["states"]}
        self.output_size = meta["output_size"]
        self.param_shapes = {name: tuple(shape) for name, shape in meta["params"]}
        # parameters declared trainable=False: inputs like the others, without a gradient
        self.frozen = frozenset(meta.get("frozen", ()))
        self.trainable = {name: name not in self.frozen for name in self.param_shapes}
        # where each parameter sits in the flat vector the C reads
        self._param_slices, off = {}, 0
        for name, shape in self.param_shapes.items():
            n = int(np.prod(shape, dtype=np.int64))
            self._param_slices[name] = (slice(off, off + n), shape)
            off += n
        self._param_count = off
        self._ctype = "float" if self.dtype == np.float32 else "double"
        self._buffer_type = self._ctype + "[]"
        self._shapes = tuple(shape for _, shape in self._param_slices.values())
        self._S = sum(self.state_sizes.values())
        self._pool = WorkspacePool()

    def __repr__(self):
        return "<rnncompiler.Kernel %s I=%d H=%d %s>" % (self.name, self.input_size,
                                                        self.hidden_size, self.dtype.name)

    # ------------------------------------------------------------ pickling

    def __reduce__(self):
        return (_rebuild_kernel, (self._rebuild, self.checkpoint))

    def equations(self):
        """The forward and derived backward equations (`str()` text, `.latex()`)."""
        return Equations.from_dict(self._meta["equations"])

    def recurrence(self):
        """state -> Recurrence(kind, reason): how each new state depends on the states at
        t-1, "diagonal-linear", "linear" or "nonlinear" (defined in rnncompiler.compiler.recurrence)."""
        return from_meta(self._meta["recurrence"])

    def tape_plan(self, T=100, B=32):
        """What forward keeps per step for backward, and the workspace bytes for (T, B)."""
        lines = ["tape of %s (%s), per step and batch row:" % (self.name, self.dtype.name)]
        for row in self._meta["tape"]:
            if row["taped"]:
                lines.append("  %4d scalars  %s" % (row["width"], ", ".join(row["holds"])))
        dropped = [h for row in self._meta["tape"] if not row["taped"] for h in row["holds"]]
        lines.append("not kept (recomputed or not needed): %s" % (", ".join(dropped) or "-"))
        mem = self.tape_bytes(T, B)
        if self._segmented(T):
            lines.append("checkpoint=%d: forward keeps the states every %d steps (%.2f MB for "
                         "T=%d, B=%d); backward recomputes one segment at a time in %.2f MB"
                         % (self.checkpoint, self.checkpoint, mem["kept"] / 1e6, T, B,
                            (mem["peak"] - mem["kept"]) / 1e6))
        else:
            lines.append("workspace for T=%d, B=%d: %.2f MB (tape and backward scratch)"
                         % (T, B, mem["kept"] / 1e6))
        return "\n".join(lines)

    def tape_bytes(self, T=100, B=32):
        """{"kept": bytes a ForwardResult holds for backward (besides its copy of x),
        "peak": bytes of tape and scratch while backward runs}."""
        item = self.dtype.itemsize
        if not self._segmented(T):
            n = self._fn["workspace_size"](T, B) * item
            return {"kept": n, "peak": n}
        kept = len(checkpoint.segments(T, self.checkpoint)) * B * self._S * item
        return {"kept": kept, "peak": kept + self._fn["workspace_size"](self.checkpoint, B) * item}

    # ------------------------------------------------------------ parameters

    def init_params(self, seed=0):
        """Parameters drawn uniform(-1/sqrt(H), 1/sqrt(H)), as PyTorch's RNN layers do."""
        rng = np.random.default_rng(seed)
        k = 1.0 / np.sqrt(self.hidden_size)
        return {name: rng.uniform(-k, k, size=shape).astype(self.dtype)
                for name, shape in self.param_shapes.items()}

    # ------------------------------------------------------------ running

    def forward(self, params, x, state0=None, lengths=None, *, context=None, masks=None,
                seed=None, training=True, batch_first=False, check_finite=False):
        """Run the whole sequence, keeping the tape for backward (with checkpoint=k, the
        states every k steps: backward recomputes the rest). With batch_first=True, x is
        (B, T, I) and the outputs (B, T, O). A cell with several inputs takes x as a dict
        of them (or one array, side by side); `context` gives its per-sequence inputs.
        A cell with masks (rc.dropout, rc.zoneout) draws them from `seed` (training),
        takes them from `masks`, or uses their expectations (training=False)."""
        res = self._forward(params, x, state0, lengths, batch_first, check_finite,
                            context, masks, seed, training)
        if batch_first:
            res.outputs, res._batch_first = res.outputs.swapaxes(0, 1), True
        return res

    def draw_masks(self, T, B, seed=None):
        """Every mask of the cell drawn as forward(seed=seed) draws them: name -> (B, size)
        per sequence, (T, B, size) per step; the same seed gives the same masks."""
        return self.columns.draw_masks(T, B, seed, self.dtype)

    def rows(self):
        """This kernel as the C sees it: x is the whole input row (T, B, columns.width),
        every input, context and mask side by side, and backward's x its gradient."""
        return row_view(self)

    def _forward(self, params, x, state0, lengths, batch_first, check_finite,
                 context=None, masks=None, seed=None, training=True):
        """forward on time-major arrays (x is put in time order first)."""
        args, n_work, used = self._prepare(params, x, state0, lengths, keep=True,
                                           batch_first=batch_first, context=context,
                                           masks=masks, seed=seed, training=training)
        T, B = args[0], args[1]
        spans = None if self._segmented(T) else self._spans(B)
        # the tape keeps its own x: the columns built one, else it is copied (after the
        # workspace in one run, so that recycled memory takes it without page faults)
        copy_x = self.columns.plain
        if copy_x and (spans or self._segmented(T)):
            args, copy_x = args[:3] + (args[3].copy(),) + args[4:], False
        if self._segmented(T):
            work = self._pool.take(self._workspace_size(False, self.checkpoint, B), self.dtype)
            try:
                y, rows, marks = checkpoint.forward(self, args, self.checkpoint, work)
            finally:
                self._pool.give(work)
            res = ForwardResult(y, self._split_states(rows), self._key, args, None, marks)
            history = {}                 # per-step states are not kept: outputs are checked
        elif spans:
            y, rows, parts = parallel.forward(self, args, spans, keep=True)
            tapes = [(part, _Tape(work, self._pool)) for part, work in parts]
            res = ForwardResult(y, self._split_states(rows), self._key, args, None, None, tapes)
            history = self._split_history(parts) if check_finite else None
        else:
            work = self._pool.take(n_work + args[3].size if copy_x else n_work, self.dtype)
            if copy_x:
                kept = work[n_work:].reshape(args[3].shape)
                np.copyto(kept, args[3])
                args = args[:3] + (kept,) + args[4:]
            y, rows = self._run_rows(1, args, work)
            res = ForwardResult(y, self._split_states(rows), self._key, args,
                                _Tape(work, self._pool))
            history = self._state_history(work, T, B) if check_finite else None
        if check_finite:
            finite.check_forward(self._split_params(args[2]), self._split_states(args[5])
                                 if args[5] is not None else {}, args[3], history, y, args[4])
        res.masks = used
        return res

    def _segmented(self, T):
        return self.checkpoint is not None and T > self.checkpoint

    def _spans(self, B):
        """Row slices to run on threads at once (parallel.py), or None."""
        if B < 2 * parallel.MIN_ROWS:     # one slice at most: the settings need not be read
            return None
        return parallel.spans(B, self.hidden_size, _threads.loop_threads())

    def _split_history(self, parts):
        """The state history of a batch run in slices, joined along the rows."""
        histories = [self._state_history(work, args[0], args[1]) for args, work in parts]
        return {s: np.concatenate([h[s] for h in histories], axis=1) for s in self.state_sizes}

    def infer(self, params, x, state0=None, lengths=None, *, context=None,
              batch_first=False):
        """Forward without a tape (less memory): (outputs, final states); with
        batch_first=True, x is (B, T, I) and the outputs (B, T, O). Masks are at their
        expectations (inference)."""
        y, states = self._infer(params, x, state0, lengths, batch_first, context)
        return (y.swapaxes(0, 1) if batch_first else y), states

    def _infer(self, params, x, state0, lengths, batch_first, context=None):
        """infer on time-major arrays (x is put in time order first)."""
        args, n_work, _ = self._prepare(params, x, state0, lengths, keep=False,
                                        batch_first=batch_first, context=context,
                                        training=False)
        spans = self._spans(args[1])          # None at batch 1
        if spans:
            y, rows, parts = parallel.forward(self, args, spans, keep=False)
            for _, work in parts:
                self._pool.give(work)
            return y, self._split_states(rows)
        y, rows = self._infer_rows(args, n_work)
        return y, self._split_states(rows)

    def _infer_rows(self, args, n_work):
        """Inference over checked args (_prepare's) on this thread, in a workspace of n_work
        scalars from the pool: (outputs, final state rows)."""
        work = self._pool.take(n_work, self.dtype)
        try:
            return self._run_rows(0, args, work, batch1=self._infers_batch1(False, args[1]))
        finally:
            self._pool.give(work)

    def _infers_batch1(self, keep, B):
        """Whether a run goes through the batch-1 unit (codegen.with_batch1_unit): inference
        at batch 1, a step at a time over the portable microkernel (its sums in another
        order than the kernel's own loop: forward's results to rounding, not its bits)."""
        return self._batch1 and not keep and B == 1

    def step(self, params, x_t, states=None, *, context=None):
        """One step: x_t (B, I) -> (y_t (B, O), new states). `states` is None on the first
        step (every state starts at zero), then the dict the previous step returned: a
        state missing from it is an error, not a silent restart at zero."""
        if isinstance(x_t, dict):
            x_t = {k: np.asarray(v)[None] for k, v in x_t.items()}
            x_t = self.columns.step_inputs(x_t, False, self.dtype)[0]
        x_t = self._array("x_t", x_t)
        if x_t.ndim != 2 or x_t.shape[1] != self.input_size:
            raise ValueError("x_t: expected shape (B, %d), got %s" % (self.input_size, x_t.shape))
        check_step_states(states, self.name, self.state_sizes)
        y, new = self.infer(params, x_t[None], states, context=context)
        return y[0], new


    def stream(self, params, state0=None, *, context=None):
        """A Stream: this cell over one sequence one sample at a time, `s.step(x_t)` ->
        y_t, or a block at a time, `s.steps(x)` -> y (T, O), the state carried; the
        weights packed once, one C call per sample or block (masks at their expectations,
        as in infer). For batch 1 in a loop, where `step` would check, copy and pack
        everything at every call."""
        return Stream(self, params, state0, context)

    def backward(self, result, d_outputs=None, d_states=None, *, state_grads=False,
                 check_finite=False):
        """Exact gradients of the forward function (BPTT over all T), for one result."""
        if not isinstance(result, ForwardResult):
            raise TypeError("result: expected the ForwardResult of this kernel's forward, "
                            "got %s" % type(result).__name__)
        if result._key != self._key:
            raise ValueError("result: expected the ForwardResult of this kernel's forward "
                             "(%s), got one from another kernel" % self.name)
        T, B = result._args[0], result._args[1]
        bf = result._batch_first
        dy = None
        if d_outputs is not None:
            dy = self._time_major("d_outputs", d_outputs, (T, B, self.output_size), bf)
        dst = self._state_rows("d_states", d_states, B) if d_states is not None else None
        with_states = state_grads or check_finite
        if result._checkpoints is not None:
            k = self.checkpoint or T
            work = self._pool.take(self._workspace_size(True, k, B), self.dtype)
            try:
                dparams, dx, dstate0, dstates = checkpoint.backward(
                    self, result._args, result._checkpoints, k, dy, dst, with_states, work)
            finally:
                self._pool.give(work)
        elif result._parts is not None:
            parts = [(part, tape.array) for part, tape in result._parts]
            dparams, dx, dstate0, dstates = parallel.backward(
                self, parts, _row_spans(parts), dy, dst, with_states)
        else:
            if not isinstance(result._work, _Tape):
                raise ValueError("result: it holds no tape for backward; pass the "
                                 "ForwardResult that forward returned, or a copy of it")
            dparams, dx, dstate0, dstates = self._backward_pass(
                result._args, result._work.array, dy, dst, with_states)
        dx, dcontext = self.columns.split_dx(dx)
        grads = Gradients(self._split_params(dparams, trainable_only=True), dx, self._split_states(dstate0),
                          self._split_states(dstates) if state_grads else None,
                          context=dcontext if self.context else None)
        if bf:
            grads.x = dx.swapaxes(0, 1)
            if state_grads:
                grads.states = {s: v.swapaxes(0, 1) for s, v in grads.states.items()}
        if len(self.inputs) > 1:
            grads.inputs = self.columns.split_inputs(grads.x)
        if check_finite:
            named = {"params[%r]" % k: v for k, v in grads.params.items()}
            named.update({"state0[%r]" % k: v for k, v in grads.state0.items()})
            finite.check_backward(dy, d_states, self._split_states(dstates), dx, named,
                                  result._args[4])
        return grads

    # ------------------------------------------------------------ helpers

    def _run_rows(self, keep, args, work, threads=None, batch1=False):
        """One call of the compiled forward: (outputs, final state rows); `threads` for its
        big GEMMs (default: the setting); batch1: the batch-1 unit's inference instead."""
        T, B, params, x, lengths, state0 = args
        y = np.empty((T, B, self.output_size), self.dtype)
        state_T = np.empty((B, self._S), self.dtype)
        ptr = self._ptr
        common = (T, B, ptr(params), ptr(x), self._iptr(lengths), ptr(state0), ptr(y),
                  ptr(state_T), ptr(work))
        rc = (self._fn["b1_infer"](*common) if batch1 else
              self._fn["run_forward"](*common, keep, threads or _threads.get_num_threads()))
        self._raise_on_code(rc)
        return y, state_T

    def _backward_pass(self, args, work, dy, dst, with_states, threads=None):
        """One call of the compiled backward over the tape in `work`:
        (dparams, dx, dstate0 rows, dstates or None)."""
        T, B, params, x, lengths, state0 = args
        dparams = np.empty(params.size, self.dtype)
        dx = np.empty((T, B, self.columns.width), self.dtype)
        dstate0 = np.empty((B, self._S), self.dtype)
        dstates = np.empty((T, B, self._S), self.dtype) if with_states else None
        ptr = self._ptr
        rc = self._fn["run_backward"](
            T, B, ptr(params), ptr(x), self._iptr(lengths), ptr(state0), ptr(work),
            ptr(dy), ptr(dst), ptr(dparams), ptr(dx), ptr(dstate0), ptr(dstates),
            threads or _threads.get_num_threads())
        self._raise_on_code(rc)
        return dparams, dx, dstate0, dstates

    def _ptr(self, arr):
        if arr is None:
            return self._ffi.NULL
        # cffi itself would accept float32 memory as double[]: check before every call
        if arr.dtype != self.dtype or not arr.flags.c_contiguous:
            raise TypeError("internal: a %s buffer reached a %s kernel" % (arr.dtype, self.dtype))
        return self._ffi.from_buffer(self._buffer_type, arr)

    def _iptr(self, lengths):
        return self._ffi.NULL if lengths is None else self._ffi.from_buffer("int[]", lengths)

    @staticmethod
    def _raise_on_code(rc):
        if rc:
            raise ValueError("the kernel rejected its arguments (code %d)" % rc)

    def _workspace_size(self, keep, T, B, batch1=False):
        """Scalars of workspace for (T, B) (batch1: the batch-1 unit's inference), refused
        before anything is allocated when the sizes overflow."""
        n = self._fn["b1_infer_workspace_size" if batch1 else
                     "workspace_size" if keep else "infer_workspace_size"](T, B)
        if n >= _SIZE_MAX or n * self.dtype.itemsize >= 2**62:
            raise ValueError("x: a sequence of T=%d steps and B=%d rows needs a workspace "
                             "beyond the address space; use shorter sequences or smaller "
                             "batches" % (T, B))
        return n

    def _array(self, name, value):
        arr = np.asarray(value)
        self._check_kind(name, arr.dtype)
        return arr

    def _check_kind(self, name, dtype):
        if dtype != self.dtype and not np.can_cast(dtype, self.dtype, casting="same_kind"):
            raise TypeError("%s: expected real numbers convertible to %s, got dtype %s"
                            % (name, self.dtype.name, dtype))

    def _shaped(self, name, value, shape):
        arr = self._array(name, value)
        if arr.shape != tuple(shape):
            raise ValueError("%s: expected shape %s, got %s" % (name, tuple(shape), arr.shape))
        return np.array(arr, dtype=self.dtype, order="C", copy=None)

    def _time_major(self, name, value, shape, batch_first):
        """A (T, B, ...) C-ordered array of the kernel's dtype from `value`, which has
        `shape` or, with batch_first, `shape` with its first two axes swapped."""
        if not batch_first:
            return self._shaped(name, value, shape)
        arr = self._array(name, value)
        bt = (shape[1], shape[0]) + tuple(shape[2:])
        if arr.shape != bt:
            raise ValueError("%s: expected shape %s (batch_first=True: B, T first), got %s"
                             % (name, bt, arr.shape))
        return np.ascontiguousarray(arr.swapaxes(0, 1), dtype=self.dtype)

    def _prepare(self, params, x, state0, lengths, keep, batch_first=False, context=None,
                 masks=None, seed=None, training=True):
        """(T, B, flat params, x, lengths, state rows) checked and converted (forward makes
        the copy of x its tape keeps), the workspace size, and the masks used (or None).
        With batch_first, x comes as (B, T, I) and is put in time order. For a cell with
        context inputs or masks, x becomes the C's whole input row."""
        if isinstance(x, dict):
            x = self.columns.step_inputs(x, batch_first, self.dtype)
        x = self._array("x", x)
        if x.ndim != 3 or x.shape[2] != self.input_size or 0 in x.shape[:2]:
            raise ValueError("x: expected shape (%s, %d) with T, B >= 1, got %s"
                             % ("B, T" if batch_first else "T, B", self.input_size, x.shape))
        if batch_first:
            x = x.swapaxes(0, 1)
        T, B = x.shape[0], x.shape[1]
        if T > _INT_MAX or B > _INT_MAX:
            raise ValueError("x: T and B must be below 2**31, got %s" % (x.shape,))
        n_work = self._workspace_size(keep, T, B, self._infers_batch1(keep, B))
        cols = self.columns
        x = self._shaped("x", x, x.shape)
        flat = self._flat_params(params)
        rows = self._state_rows("state0", state0, B) if state0 is not None else None
        x, used = cols.rows(x, B, context, masks, seed, training, self.dtype)
        return (T, B, flat, x, self._lengths(lengths, T, B), rows), n_work, used

    def _flat_params(self, params):
        """The flat parameter vector the C reads, a new array (params may change after)."""
        if not isinstance(params, dict):
            raise TypeError("params: expected a dict name -> array, got %s" % type(params).__name__)
        if len(params) == len(self._param_slices):
            # arrays of this dtype and shape (what init_params and training give): one
            # concatenation, a third of the time of a copy per parameter at batch 1
            try:
                values = [params[name] for name in self._param_slices]
            except KeyError:
                values = ()
            dtype = self.dtype
            for v, shape in zip(values, self._shapes):     # a loop: half all()'s time
                if type(v) is not np.ndarray or v.dtype != dtype or v.shape != shape:
                    break
            else:
                if values:
                    return np.concatenate(values, axis=None)
        unknown = [k for k in params if k not in self.param_shapes]
        if unknown:
            raise KeyError("params: unknown parameter %r; this kernel has %s"
                           % (unknown[0], list(self.param_shapes)))
        flat = np.empty(self._param_count, self.dtype)
        for name, (where, shape) in self._param_slices.items():
            if name not in params:
                raise KeyError("params: missing parameter %r of shape %s" % (name, shape))
            value = params[name]
            if not (isinstance(value, np.ndarray) and value.shape == shape):
                value = self._array("params[%r]" % name, value)
                if value.shape != shape:
                    raise ValueError("params[%r]: expected shape %s, got %s"
                                     % (name, shape, value.shape))
            self._check_kind("params[%r]" % name, value.dtype)
            flat[where].reshape(shape)[...] = value
        return flat

    def _state_rows(self, name, states, B):
        if not isinstance(states, dict):
            raise TypeError("%s: expected a dict state name -> array, got %s"
                            % (name, type(states).__name__))
        if len(states) == len(self.state_sizes):
            # every state given as a (B, size) array of this dtype (what infer and step
            # return): one concatenation, half the time of the loop below at batch 1
            values = [states.get(s) for s in self.state_sizes]
            for v, size in zip(values, self.state_sizes.values()):
                if type(v) is not np.ndarray or v.dtype != self.dtype or v.shape != (B, size):
                    break
            else:
                rows = np.concatenate(values, axis=1)     # in the inputs' order
                return rows if rows.flags.c_contiguous else np.ascontiguousarray(rows)
        rows = np.zeros((B, self._S), self.dtype)
        off = 0
        for s, size in self.state_sizes.items():
            if s in states and states[s] is not None:
                v = self._array("%s[%r]" % (name, s), states[s])
                if v.shape not in ((B, size), (size,)):
                    raise ValueError("%s[%r]: expected shape (%d, %d) or (%d,), got %s"
                                     % (name, s, B, size, size, v.shape))
                rows[:, off:off + size] = v
            off += size
        unknown = [s for s in states if s not in self.state_sizes]
        if unknown:
            raise KeyError("%s: unknown state %r; this kernel has %s"
                           % (name, unknown[0], list(self.state_sizes)))
        return rows

    @staticmethod
    def _lengths(lengths, T, B):
        arr = check_lengths(lengths, T, B)
        return None if arr is None else np.array(arr, dtype=np.intc, order="C")

    def _split_params(self, flat, trainable_only=False):
        return {name: flat[where].reshape(shape) for name, (where, shape) in self._param_slices.items()
                if not (trainable_only and name in self.frozen)}

    def _split_states(self, rows):
        out, off = {}, 0
        for s, size in self.state_sizes.items():
            out[s] = np.ascontiguousarray(rows[..., off:off + size])
            off += size
        return out

    def _state_history(self, work, T, B):
        """state -> (T+1, B, size) view of the tape: the states before step 0 .. after T-1,
        where the manifest's `history` says they are."""
        history = self._meta["history"]
        out, off = {}, history["offset"]
        for s, size in history["states"]:
            n = (T + 1) * B * size
            out[s] = work[off:off + n].reshape(T + 1, B, size)
            off += n
        return out


def check_step_states(states, cell_name, state_sizes):
    """A KeyError naming the first state that step's `states` dict lacks (None, the first
    step, starts every state at zero; a type other than dict is refused later by name)."""
    if not isinstance(states, dict):
        return
    missing = [s for s in state_sizes if s not in states]
    if missing:
        raise KeyError("states: missing state %r; step needs every state of %s (%s): pass "
                       "states=None for the first step, then the states the previous step "
                       "returned" % (missing[0], cell_name, list(state_sizes)))


def _row_spans(parts):
    """The (lo, hi) batch rows of each slice of a split run."""
    edges = np.cumsum([0] + [args[1] for args, _ in parts])
    return list(zip(edges[:-1].tolist(), edges[1:].tolist()))


def _rebuild_kernel(rebuild, checkpoint=None):
    kern = rebuild()
    kern.checkpoint = checkpoint
    return kern
