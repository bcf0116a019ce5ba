"""How the new value of each state depends on the states of the step before: the
classification behind `kern.recurrence()`, decided on the fused step graph at compile time
and stored with the kernel (the kernel itself needs neither sympy nor networkx).

For a state s, with all the states at t-1 taken together as one vector S[t-1]:

- diagonal-linear: s[t] = a[t] ⊙ s[t-1] + b[t], where a[t] and b[t] read no state at t-1
  (only x[t] and parameters). Equivalently: s[t] is affine in S[t-1], its Jacobian in
  s[t-1] is diagonal and reads no state, and its Jacobian in every other state is zero.
  a[t] = 0 (s[t] reads no state) and a[t] = 1 (a copy) are included.
- linear: s[t] is affine in S[t-1] with a coefficient that reads no state, but not of the
  diagonal form: a linear map or a reduction (rc.sum, rc.mean) of a state lies on the
  way to s[t], or s[t] reads another state, or concatenation moves a state's units.
- nonlinear: anything else, e.g. tanh of a value that reads a state, or a gate that reads
  h[t-1] multiplying c[t-1] (the standard LSTM's c is nonlinear in (h, c) for that reason).

The decision is structural: an elementwise node is affine in its state-dependent operands
when each of its partial derivatives (sympy) reads none of them, which also catches kinks
(relu' reads its argument); a linear map or reduction of a state counts as dense even at
size 1 or when its matrix happens to be diagonal. What sympy cannot show to be affine
counts as nonlinear, so "diagonal-linear" and "linear" are safe to rely on.
"""
from __future__ import annotations

from .notation import math_text
from ..runtime.meta import KINDS, Recurrence, to_meta, from_meta  # noqa: F401 (re-exported)

from .activations import BY_SYMPY_NAME
_ORDER = {"none": 0, "diagonal": 1, "linear": 2, "nonlinear": 3}
_MAX_COEFF_TERMS = 60      # a longer coefficient is not spelled out in the reason
_MAX_RHS_CHARS = 90        # right-hand sides quoted in reasons are cut here


class _Dep:
    """How one value of the step depends on the states at t-1.

    kind: "none" (reads no state), "diagonal" (Σ_s a_s ⊙ s placed at `offsets` + b, with
    a_s, b reading no state), "linear" (affine, coefficient reads no state) or
    "nonlinear". coeff: state -> the display expression of a_s, or None when not kept.
    why: (node, phrase) of the first place the value stopped being diagonal."""

    def __init__(self, kind, states=(), offsets=(), coeff=None, why=None):
        self.kind, self.states, self.offsets = kind, frozenset(states), frozenset(offsets)
        self.coeff, self.why = coeff or {}, why


_NONE = _Dep("none")


def of_cell(cell, input_size=3, hidden_size=4, sizes=None):
    """state -> Recurrence for a cell at the given sizes, without compiling it."""
    from .graph import build_graph, fuse_elementwise
    from .dsl import bind_sizes
    return classify(fuse_elementwise(build_graph(cell.spec, bind_sizes(
        cell, input_size, hidden_size, sizes))))


def classify(g):
    """state -> Recurrence for fused (or unfused) step graph g."""
    from .equations import display_names
    from .graph import LEAVES
    names = display_names(g)
    deps = {n: _leaf(n, d) for n, d in g.items() if d.op in LEAVES}
    for n in g.ops():
        rule = RULES.get(g[n].op, _unknown)
        deps[n] = rule(g, n, deps, names)
    return {s: _verdict(g, s, node, deps[node], names) for s, node in g.new_states}


def _leaf(n, d):
    """A state at t-1 is diagonal in itself with coefficient 1; other leaves read none."""
    if d.op != "state":
        return _NONE
    import sympy
    s = n.split(".", 1)[1]
    return _Dep("diagonal", {s}, {(s, 0)}, {s: sympy.S.One})


# ---------------------------------------------------------------- rules per node kind

def _ew(g, n, deps, names):
    """Elementwise: affine when no partial in a state-dependent operand reads one."""
    import sympy
    from .mathfn import expand_activations
    d = g[n]
    args, expr = d.args, expand_activations(d.expr)
    syms = [sympy.Symbol("a%d" % k, real=True) for k in range(len(args))]
    partials = {k: _derivative(expr, syms[k]) for k, a in enumerate(args)
                if deps[a].kind != "none"}
    live = [k for k, p in partials.items() if p != 0]
    if not live:
        return _NONE
    bad = _first_nonaffine(live, partials, syms, args)
    if bad is not None:
        i, j = bad
        return _Dep("nonlinear", _union(deps, [args[k] for k in live]),
                    why=(n, _nonaffine_phrase(expr, partials[i], i, j, syms, args, deps, names)))
    return _combine(deps, [(args[k], 0, _display(_shown_partial(d.expr, syms[k], partials[k]),
                                                  args, names)) for k in live])


def _linear(g, n, deps, names):
    """A linear map of a state-dependent value mixes that value's units: dense."""
    from .graph import param_name
    terms = g[n].terms
    live = [(v, W) for v, W in terms if deps[v].kind != "none"]
    if not live:
        return _NONE
    inherited = _inherit(deps, [v for v, _ in live])
    if inherited is not None:
        return inherited
    v, W = live[0]
    why = _first_why(deps, [v for v, _ in live]) or (
        n, "the matrix %s maps %s" % (param_name(W), _reading(v, deps, names)))
    return _Dep("linear", _union(deps, [v for v, _ in live]), why=why)


def _reduce(g, n, deps, names):
    """rc.sum / rc.mean over the units of a state-dependent value: dense."""
    d = g[n]
    v = d.args[0]
    if deps[v].kind == "none":
        return _NONE
    inherited = _inherit(deps, [v])
    if inherited is not None:
        return inherited
    if d.how not in ("sum", "mean"):
        return _Dep("nonlinear", deps[v].states, why=(n, "%s over the units of %s"
                                                      % (d.how, _reading(v, deps, names))))
    why = _first_why(deps, [v]) or (
        n, "the %s over the units of %s mixes them" % (d.how, _reading(v, deps, names)))
    return _Dep("linear", deps[v].states, why=why)


def _concat(g, n, deps, names):
    """Concatenation passes its parts through, each at its offset in the result."""
    parts, off = [], 0
    for a in g[n].args:
        if deps[a].kind != "none":
            parts.append((a, off, None))
        off += g[a].size
    if not parts:
        return _NONE
    return _combine(deps, parts)


def _slice(g, n, deps, names):
    """A slice passes units through; taken whole it is its operand, else it moves units
    (or drops some), which the diagonal form cannot show: dense."""
    d, (a,) = g[n], g[n].args
    if deps[a].kind != "diagonal" or (d.offset == 0 and d.size == g[a].size):
        return deps[a]
    return _Dep("linear", deps[a].states, why=(n, "the slice %s moves the units of %s"
                                                 % (names[n][0], _state_list(deps[a].states))))


def _unknown(g, n, deps, names):
    """A node kind this analysis does not model: nonlinear when it reads a state."""
    live = [a for a in g[n].args if deps[a].kind != "none"]
    if not live:
        return _NONE
    phrase = ("%s is a %r node, which this analysis does not model (counted as nonlinear)"
              % (names[n][0], g[n].op))
    return _Dep("nonlinear", _union(deps, live), why=(n, phrase))


# op -> how its value depends on the states at t-1, from its operands' dependences: the
# part of an op that needs this analysis (rnncompiler.compiler.ops holds the rest)
RULES = {"ew": _ew, "linear": _linear, "reduce": _reduce, "concat": _concat, "slice": _slice}


# ---------------------------------------------------------------- combining operands

def _combine(deps, parts):
    """The affine combination of operands (arg, unit offset, display factor or None)."""
    inherited = _inherit(deps, [a for a, _, _ in parts])
    if inherited is not None:
        return inherited
    ops = [deps[a] for a, _, _ in parts]
    states = frozenset().union(*(o.states for o in ops))
    why = _first_why(deps, [a for a, _, _ in parts])
    if any(o.kind == "linear" for o in ops):
        return _Dep("linear", states, why=why)
    offsets = {(s, off + o_off) for (_, off, _), o in zip(parts, ops) for s, o_off in o.offsets}
    return _Dep("diagonal", states, offsets, _coefficients(parts, ops, states), why)


def _coefficients(parts, ops, states):
    """state -> Σ factor · coefficient over the operands, or None when unknown or long."""
    import sympy
    coeff = {}
    for s in states:
        terms = [(f, o.coeff.get(s)) for (_, _, f), o in zip(parts, ops) if s in o.states]
        if any(f is None or c is None for f, c in terms):
            coeff[s] = None
            continue
        total = sympy.Add(*[f * c for f, c in terms])
        coeff[s] = total if sympy.count_ops(total) <= _MAX_COEFF_TERMS else None
    return coeff


def _inherit(deps, args):
    """The first nonlinear operand's dependence (a value affine in a nonlinear one is
    nonlinear for the same reason), or None."""
    for a in args:
        if deps[a].kind == "nonlinear":
            return _Dep("nonlinear", _union(deps, args), why=deps[a].why)
    return None


def _first_why(deps, nodes):
    """The first cause recorded by any of `nodes` (where the value left the diagonal
    form), or None."""
    return next((deps[a].why for a in nodes if deps[a].why is not None), None)


def _union(deps, nodes):
    """The states read by any of `nodes`."""
    return frozenset().union(*(deps[a].states for a in nodes))


# ---------------------------------------------------------------- sympy helpers

def _derivative(expr, sym):
    """d expr / d sym, with Mod's derivative written out; None if sympy cannot."""
    import sympy
    from .mathfn import mod_derivatives
    try:
        return mod_derivatives(sympy.diff(expr, sym))
    except (TypeError, ValueError, NotImplementedError):
        return None


def _shown_partial(expr, sym, checked):
    """The partial to show: taken with user activations kept by name (gatefn(u), not its
    formula) unless sympy needs their derivative; `checked` is the one from the formula."""
    import sympy
    kept = _derivative(expr, sym)
    return checked if kept is None or kept.has(sympy.Derivative) else kept


def _first_nonaffine(live, partials, syms, args):
    """(i, j): the partial in operand i reads state-dependent operand j; None if affine.

    Looked for in the order that explains best: a state's coefficient reading another
    operand (the gate of a gated cell), then an operand entering nonlinearly itself (the
    states first), then any pair."""
    import sympy

    def reads(i, j):           # an unevaluated derivative may read anything it names
        p = partials[i]
        return p is None or syms[j] in p.free_symbols or (p.has(sympy.Derivative)
                                                          and bool(p.free_symbols))
    states = [k for k in live if args[k].startswith("state.")]
    for i in states:
        for j in live:
            if j != i and reads(i, j) and not reads(i, i):
                return i, j
    for i in states + [k for k in live if k not in states]:
        if reads(i, i):
            return i, i
    return next(((i, j) for i in live for j in live if reads(i, j)), None)


def _nonaffine_phrase(expr, p, i, j, syms, args, deps, names):
    """Why an elementwise expression is not affine in its state-dependent operands."""
    import sympy
    x = names[args[i]][0]
    shown = None if p is None else _display(p, args, names)
    if i != j and args[i].startswith("state.") and p is not None and syms[i] not in p.free_symbols:
        y = _reading(args[j], deps, names)
        if shown == sympy.Symbol(names[args[j]][0], real=True):
            return "the coefficient of %s is %s" % (x, y)
        return "the coefficient of %s, %s, reads %s" % (x, _cut(math_text(shown)), y)
    if i == j:
        for f in sorted(expr.atoms(sympy.Function), key=lambda f: len(str(f))):
            if syms[i] in f.free_symbols and len(f.args) == 1:
                if f.args[0] == syms[i]:
                    return "%s of %s" % (_function_name(f), _reading(args[i], deps, names))
                return "%s, a nonlinear function of %s" % (
                    _cut(math_text(_display(f, args, names))), _reading(args[i], deps, names))
        return "it is not affine in %s" % _reading(args[i], deps, names)
    return "its derivative in %s, %s, reads %s" % (x, _cut(math_text(shown)),
                                                    _reading(args[j], deps, names))


def _function_name(f):
    """σ, tanh, relu, ...: the name a reader knows a function by."""
    name = type(f).__name__
    row = BY_SYMPY_NAME.get(name)
    if row is not None and row.symbol is not None:
        return row.symbol
    return getattr(f, "_rnnc_name", name.lower())


def _display(expr, args, names):
    """expr in a0..ak with each operand written by its display name (h[t-1], a_f[t])."""
    import sympy
    if expr is None:
        return None
    return expr.xreplace({sympy.Symbol("a%d" % k, real=True): sympy.Symbol(names[a][0], real=True)
                          for k, a in enumerate(args)})


def _reading(a, deps, names):
    """'h[t-1]' for a state, else 'a_f[t], which reads h[t-1]'."""
    name = names[a][0]
    if a.startswith("state."):
        return name
    return "%s, which reads %s" % (name, _state_list(deps[a].states))


def _state_list(states):
    return " and ".join("%s[t-1]" % s for s in sorted(states))


def _cut(text):
    return text if len(text) <= _MAX_RHS_CHARS else text[:_MAX_RHS_CHARS - 1] + "…"


# ---------------------------------------------------------------- the verdict per state

def _rhs(g, n, names):
    """The right-hand side of n's forward equation, cut to a readable length (a leaf: its
    name)."""
    from .equations import forward_rhs
    from .graph import LEAVES
    return names[n][0] if g[n].op in LEAVES else _cut(forward_rhs(g, n, names)[0])


def _verdict(g, s, node, dep, names):
    """The Recurrence of state s, whose new value is `node`."""
    head = "%s[t] = %s" % (s, _rhs(g, node, names))
    if dep.kind == "none":
        return Recurrence("diagonal-linear", "%s reads no state at t-1, so %s[t] = 0 ⊙ %s[t-1] "
                          "+ b[t]" % (head, s, s))
    if dep.kind == "diagonal":
        return _diagonal_verdict(s, dep, head)
    where, phrase = dep.why
    if where != node:
        head = "%s, where %s = %s" % (head, names[where][0], _rhs(g, where, names))
    if dep.kind == "nonlinear":
        return Recurrence("nonlinear", "%s: %s" % (head, phrase))
    return Recurrence("linear", "%s: affine in the states, but %s" % (head, phrase))


def _diagonal_verdict(s, dep, head):
    """A new value of the diagonal form: diagonal-linear in s only when it reads no
    other state and keeps s's units in place."""
    others = sorted(dep.states - {s})
    if others:
        return Recurrence("linear", "%s: affine in the states, but it reads %s, %s" % (
            head, _state_list(others), "another state" if len(others) == 1 else "other states"))
    if dep.offsets != {(s, 0)}:
        return Recurrence("linear", "%s: affine in the states, but concatenation moves the "
                          "units of %s[t-1] to other positions" % (head, s))
    a = dep.coeff.get(s)
    shown = "(not shown)" if a is None else _cut(math_text(a))
    return Recurrence("diagonal-linear", "%s: %s[t] = a[t] ⊙ %s[t-1] + b[t] with a[t] = %s; "
                      "a[t] and b[t] read no state" % (head, s, s, shown))
