"""rc.reference: what a cell computes, evaluated slowly in numpy over the unrolled time DAG.

`evaluate` runs the unfused step graph once per step: it is the executable definition of
a cell. The backward pass walks the same DAG in
reverse, node by node and step by step, taking each node's derivative afresh: sympy's
derivative of the node's own unfused expression (a named activation expanded into its
forward expression, so a hand-written derivative is not trusted here) and the matrix
adjoints of linear maps. Nothing below the graph is shared with the compiled path: no
fusion, tape selection, cse, hoisting or C.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import sympy

from . import mathfn
from ..errors import CellError
from .ops import OPS, differentiate_expr, unbroadcast  # noqa: F401 (unbroadcast: re-exported)
from ..runtime.kernel import check_step_states



def lambdify_node(expr, n_args, extra=()):
    """A numpy function of the node's operands a0..ak (and `extra` symbols), user
    activations expanded into their forward expressions."""
    syms = [sympy.Symbol("a%d" % k, real=True) for k in range(n_args)] + list(extra)
    return sympy.lambdify(syms, mathfn.expand_activations(sympy.sympify(expr)),
                          modules=[mathfn.NUMPY_FUNCTIONS, "numpy"], printer=_numpy_printer(),
                          docstring_limit=0)       # its docstring prints the expression again


@functools.lru_cache(maxsize=None)
def _numpy_printer_class():
    """sympy's numpy printer, but a condition holding an if-then-else is printed as one
    (numpy.where) instead of being simplified first: sympy's simplify_logic on the
    conditions of a Piecewise inside a Piecewise took minutes."""
    from sympy.printing.numpy import NumPyPrinter

    class Printer(NumPyPrinter):
        def _print_ITE(self, expr):
            return "%s(%s, %s, %s)" % (self._module_format(self._module + ".where"),
                                       *(self._print(a) for a in expr.args))

        def _print_Piecewise(self, expr):
            exprs = ",".join(self._print(arg.expr) for arg in expr.args)
            conds = ",".join(self._print(arg.cond) for arg in expr.args)
            return "%s([%s], [%s], default=%s)" % (self._module_format(self._module + ".select"),
                                                   conds, exprs, self._print(sympy.S.NaN))
    return Printer


def _numpy_printer():
    """A numpy printer for lambdify that knows the kernels' own numpy functions."""
    names = {k: k for k in mathfn.NUMPY_FUNCTIONS}
    return _numpy_printer_class()({"fully_qualified_modules": False, "inline": True,
                                   "allow_unknown_functions": True, "user_functions": names})


def partial(expr, k, hand_written=False, where=""):
    """d expr / d a_k as a sympy expression in a0..ak, user activations expanded.

    hand_written=False differentiates the forward expressions of named activations (the
    truth); True uses their declared derivatives, as the compiled kernel does.
    """
    a = sympy.Symbol("a%d" % k, real=True)
    f = expr if hand_written else mathfn.expand_activations(expr)
    d = differentiate_expr(f, a)          # kinks and jumps as in PyTorch, as the kernel has them
    if d.has(sympy.Derivative) or d.has(sympy.Subs):
        raise CellError("%s: sympy cannot differentiate %s with respect to operand %d (got %s)"
                        % (where, expr, k, d))
    return mathfn.expand_activations(d)


# ---------------------------------------------------------------- forward

class _Run:
    """What the ops' numpy rules (ops.Op.evaluate, .pullback) ask of the evaluator: an
    elementwise node's numpy function and partials, the batch size and the real type."""

    def __init__(self, fns, B, dtype, partials=None):
        self.fns, self.B, self.dtype, self.partial = fns, B, dtype, partials

    def function(self, n):
        if n.id not in self.fns:
            self.fns[n.id] = lambdify_node(n.expr, len(n.args))
        return self.fns[n.id]


def evaluate_step(g, params, x_t, states, fns=None):
    """One step of the graph in numpy: (new states dict, output, all node values)."""
    run = _Run(fns if fns is not None else {}, x_t.shape[0], x_t.dtype)
    val = {"x": x_t}
    for s, _ in g.states:
        val["state." + s] = states[s]
    for name, _ in g.params:
        val["param." + name] = params[name]
    for n in g.ops():
        d = g[n]
        val[n] = OPS[d.op].evaluate(d, [val[a] for a in d.args], run)
    new = {s: val[node] for s, node in g.new_states}
    return new, val[g.output], val


@dataclass
class Trace:
    """A forward run kept whole: outputs, final states, and per step t the values of every
    node (`values[t]`; the states read at t among them)."""
    outputs: np.ndarray
    states: dict
    values: list
    valid: np.ndarray          # (T, B) bool: step t counts for row b


def trace(g, params, x, state0=None, lengths=None, fns=None):
    """Run the step graph over x (T, B, I), keeping every node value of every step."""
    T, B, _ = x.shape
    states = {s: np.zeros((B, size), x.dtype) for s, size in g.states}
    for s, v in (state0 or {}).items():
        if v is not None:
            states[s] = np.array(np.broadcast_to(v, states[s].shape), x.dtype)
    lengths = np.full(B, T) if lengths is None else np.asarray(lengths)
    valid = np.arange(T)[:, None] < lengths[None, :]
    ys = np.zeros((T, B, g[g.output].size), x.dtype)
    fns = {} if fns is None else fns
    values = []
    for t in range(T):
        new, y, val = evaluate_step(g, params, x[t], states, fns)
        values.append(val)
        keep = valid[t][:, None]
        states = {s: np.where(keep, new[s], states[s]) for s in states}
        ys[t] = np.where(keep, y, 0)
    return Trace(ys, states, values, valid)


def evaluate(g, params, x, state0=None, lengths=None):
    """Run the step graph over x (T, B, I) in numpy; returns (outputs, final states)."""
    tr = trace(g, params, x, state0, lengths)
    return tr.outputs, tr.states


# ---------------------------------------------------------------- backward

def result_root(g, node):
    """The node a result copies (identity copies followed), so that a state and the output
    that copy the same value are recognised as one."""
    a0 = sympy.Symbol("a0", real=True)
    while g[node].op == "ew" and g[node].expr == a0:
        node = g[node].args[0]
    return node


def output_states(g):
    """States that are also the step output (their dL/ds[t] includes dL/dy[t])."""
    out = result_root(g, g.output)
    return {s for s, node in g.new_states if result_root(g, node) == out}


class Partials:
    """Lambdified partials of each unfused elementwise node, derived on first use."""

    def __init__(self, g, hand_written=False):
        self.g, self.hand_written, self._fns = g, hand_written, {}

    def __call__(self, node, k):
        if (node, k) not in self._fns:
            d = self.g[node]
            p = partial(d.expr, k, self.hand_written, d.where)
            self._fns[node, k] = None if p == 0 else lambdify_node(p, len(d.args))
        return self._fns[node, k]


def backward_step(g, val, seeds, partials):
    """Reverse mode over one step: adjoints of every node, given seeds node -> adjoint."""
    adj = dict()

    def add(a, c):
        adj[a] = adj[a] + c if a in adj else np.array(c, dtype=np.float64)

    for n, s in seeds.items():
        add(n, s)
    run = _Run({}, None, None, partials)
    for n in reversed(g.ops()):
        if n in adj:
            d = g[n]
            OPS[d.op].pullback(d, adj[n], [val[a] for a in d.args], run, add)
    return adj


# ---------------------------------------------------------------- the kernel-like object

@dataclass
class ReferenceResult:
    """What Reference.forward returns: outputs, final states and the kept Trace."""
    outputs: np.ndarray
    states: dict
    trace: Trace
    x: np.ndarray            # the input rows: every input, context and mask
    masks: dict = None


@dataclass
class ReferenceGradients:
    """Gradients as a Kernel gives them, plus what only a node-by-node walk can show:
    `per_step[name][t]`, step t's contribution to each parameter's gradient, and
    `adjoints[t][node]`, the adjoint of every node of the unfused step graph at step t."""
    params: dict
    x: np.ndarray
    state0: dict
    states: dict
    per_step: dict
    adjoints: list
    inputs: dict = None
    context: dict = None


class Reference:
    """A cell at bound sizes, evaluated by the numpy reference (float64).

    It has the kernel's attributes and methods (forward, backward with state_grads,
    infer, step, init_params), so it can stand wherever a float64 kernel does, e.g. as
    `rc.gradcheck(kern32, reference=rc.reference(cell, ...))`.
    """

    dtype = np.dtype("float64")

    def __init__(self, cell, input_size=3, hidden_size=4, sizes=None):
        from .dsl import Cell
        from .graph import build_graph, frozen_params
        from .dsl import bind_columns, bind_sizes
        if not isinstance(cell, Cell):
            raise TypeError("cell: expected a cell made with @rc.cell, got %r" % (cell,))
        bound = bind_sizes(cell, input_size, hidden_size, sizes)
        self.graph = build_graph(cell.spec, bound)
        self.name, self.sizes = cell.name, bound
        self.columns = bind_columns(cell.spec, bound)
        self.inputs, self.context = dict(self.columns.inputs), dict(self.columns.context)
        self.masks = {m.name: m for m in self.columns.masks}
        self.input_size, self.hidden_size = self.columns.step_width, bound["H"]
        self.state_sizes = dict(self.graph.states)
        self.output_size = self.graph[self.graph.output].size
        self.param_shapes = dict(self.graph.params)
        self.frozen = frozen_params(self.graph)
        self.trainable = {name: name not in self.frozen for name in self.param_shapes}
        self._fns, self._partials = {}, Partials(self.graph)
        self._output_states = output_states(self.graph)

    def __repr__(self):
        return "<rnncompiler.Reference %s I=%d H=%d>" % (self.name, self.input_size,
                                                        self.hidden_size)

    def init_params(self, seed=0):
        """Parameters drawn uniform(-1/sqrt(H), 1/sqrt(H)), as Kernel.init_params does."""
        rng = np.random.default_rng(seed)
        k = 1.0 / np.sqrt(self.hidden_size)
        return {name: rng.uniform(-k, k, size=shape)
                for name, shape in self.param_shapes.items()}

    def forward(self, params, x, state0=None, lengths=None, *, context=None, masks=None,
                seed=None, training=True):
        """Run the whole sequence, keeping every node value for backward (the inputs,
        contexts and masks as Kernel.forward takes them)."""
        if isinstance(x, dict):
            x = self.columns.step_inputs(x, False, np.float64)
        params, x, state0, lengths = self._checked(params, x, state0, lengths)
        x, used = self.columns.rows(x, x.shape[1], context, masks, seed, training, np.float64)
        tr = trace(self.graph, params, x, state0, lengths, self._fns)
        return ReferenceResult(tr.outputs, tr.states, tr, x, used)

    def draw_masks(self, T, B, seed=None):
        """The masks Kernel.draw_masks draws from the same seed."""
        return self.columns.draw_masks(T, B, seed, np.float64)

    def rows(self):
        """This reference over whole input rows, as Kernel.rows()."""
        from ..runtime.inputs import row_view
        return row_view(self)

    def infer(self, params, x, state0=None, lengths=None, *, context=None):
        res = self.forward(params, x, state0, lengths, context=context, training=False)
        return res.outputs, res.states

    def step(self, params, x_t, states=None, *, context=None):
        check_step_states(states, self.name, self.state_sizes)
        if isinstance(x_t, dict):
            x_t = {k: np.asarray(v, np.float64)[None] for k, v in x_t.items()}
        else:
            x_t = np.asarray(x_t, np.float64)[None]
        y, new = self.infer(params, x_t, states, context=context)
        return y[0], new

    def backward(self, result, d_outputs=None, d_states=None, *, state_grads=False):
        """Exact gradients by walking the unrolled DAG backwards, node by node."""
        if not isinstance(result, ReferenceResult):
            raise TypeError("result: expected the result of this Reference's forward, got %s"
                            % type(result).__name__)
        tr, g = result.trace, self.graph
        T, B = tr.valid.shape
        dy = np.zeros((T, B, self.output_size)) if d_outputs is None else \
            self._shaped("d_outputs", d_outputs, (T, B, self.output_size))
        carry = self._state_dict("d_states", d_states, B)
        # constants (trainable=False) get no gradient, as in the kernel
        trained = {p: shape for p, shape in self.param_shapes.items() if p not in self.frozen}
        grads = {p: np.zeros(shape) for p, shape in trained.items()}
        per_step = {p: np.zeros((T,) + shape) for p, shape in trained.items()}
        dx = np.zeros_like(result.x)
        dstates = {s: np.zeros((T, B, n)) for s, n in self.state_sizes.items()}
        adjoints = [None] * T
        for t in reversed(range(T)):
            keep = tr.valid[t][:, None]
            for s in carry:
                dstates[s][t] = carry[s] + (np.where(keep, dy[t], 0)
                                            if s in self._output_states else 0)
            seeds = {g.output: np.where(keep, dy[t], 0)}
            for s, node in g.new_states:
                seeds[node] = seeds.get(node, 0) + np.where(keep, carry[s], 0)
            adj = backward_step(g, tr.values[t], seeds, self._partials)
            adjoints[t] = adj
            for p in grads:
                c = adj.get("param." + p)
                if c is not None:
                    per_step[p][t] = c
                    grads[p] += c
            if "x" in adj:
                dx[t] = adj["x"]
            carry = {s: np.where(keep, adj.get("state." + s, 0), carry[s]) for s in carry}
        dx, dcontext = self.columns.split_dx(dx)
        return ReferenceGradients(grads, dx, carry, dstates if state_grads else None,
                                  per_step, adjoints,
                                  self.columns.split_inputs(dx) if len(self.inputs) > 1 else None,
                                  dcontext if self.context else None)

    # ------------------------------------------------------------ argument checks

    def _shaped(self, name, value, shape):
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            raise TypeError("%s: expected real numbers, got dtype %s" % (name, arr.dtype))
        if arr.shape != tuple(shape):
            raise ValueError("%s: expected shape %s, got %s" % (name, tuple(shape), arr.shape))
        return np.array(arr, dtype=np.float64)

    def _state_dict(self, name, states, B):
        if states is not None and not isinstance(states, dict):
            raise TypeError("%s: expected a dict state name -> array, got %s"
                            % (name, type(states).__name__))
        unknown = [s for s in (states or {}) if s not in self.state_sizes]
        if unknown:
            raise KeyError("%s: unknown state %r; this cell has %s"
                           % (name, unknown[0], list(self.state_sizes)))
        out = {}
        for s, n in self.state_sizes.items():
            v = (states or {}).get(s)
            v = np.zeros((B, n)) if v is None else np.asarray(v, dtype=np.float64)
            if v.shape not in ((B, n), (n,)):
                raise ValueError("%s[%r]: expected shape (%d, %d) or (%d,), got %s"
                                 % (name, s, B, n, n, v.shape))
            out[s] = np.array(np.broadcast_to(v, (B, n)))
        return out

    def _checked(self, params, x, state0, lengths):
        x = np.asarray(x)
        if x.ndim != 3 or x.shape[2] != self.input_size or 0 in x.shape[:2]:
            raise ValueError("x: expected shape (T, B, %d) with T, B >= 1, got %s"
                             % (self.input_size, x.shape))
        x = self._shaped("x", x, x.shape)
        T, B = x.shape[:2]
        if not isinstance(params, dict):
            raise TypeError("params: expected a dict name -> array, got %s"
                            % type(params).__name__)
        unknown = [k for k in params if k not in self.param_shapes]
        if unknown:
            raise KeyError("params: unknown parameter %r; this cell has %s"
                           % (unknown[0], list(self.param_shapes)))
        missing = [k for k in self.param_shapes if k not in params]
        if missing:
            raise KeyError("params: missing parameter %r of shape %s"
                           % (missing[0], self.param_shapes[missing[0]]))
        params = {k: self._shaped("params[%r]" % k, params[k], shape)
                  for k, shape in self.param_shapes.items()}
        if lengths is not None:
            lengths = np.asarray(lengths)
            if lengths.dtype.kind not in "iu" or lengths.shape != (B,) or \
                    (lengths.size and (lengths.min() < 0 or lengths.max() > T)):
                raise ValueError("lengths: expected %d integers in [0, %d], got %r"
                                 % (B, T, lengths.tolist()))
        return params, x, self._state_dict("state0", state0, B), lengths


def reference(cell, input_size=3, hidden_size=4, sizes=None):
    """The numpy reference evaluator of `cell` at bound sizes: a kernel-like object whose
    forward runs the unfused step graph and whose backward walks the unrolled DAG node by
    node (`.per_step` and `.adjoints` on its gradients). Slow; for checking.

        >>> ref = rc.reference(lstm, input_size=3, hidden_size=4)      # doctest: +SKIP
        >>> g = ref.backward(ref.forward(params, x), d_outputs=dy)     # doctest: +SKIP
    """
    return Reference(cell, input_size, hidden_size, sizes)
