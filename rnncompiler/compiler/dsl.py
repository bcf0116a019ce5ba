"""The cell language: `@rc.cell` traces a Python function over symbolic vectors into a
frozen CellSpec (a list of nodes in trace order). Every arithmetic operation becomes one
small elementwise node; the graph stage fuses chains of them later.

Arithmetic and the built-in activations trace into expr.Term trees without sympy (a
kernel loads from the cache without importing it); rc.elementwise and rc.activation take
sympy math, and keep it as sympy.
"""
from __future__ import annotations

import builtins
import inspect
import keyword
import numbers
import operator
import os
import re
import sys
import threading
from dataclasses import dataclass, field, replace

from . import activations, advice
from . import expr as ex
from ..errors import CellError
from ..runtime.inputs import Columns, Mask

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_MULTIPLE = re.compile(r"[0-9]+\*[A-Za-z_][A-Za-z0-9_]*\Z")
_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # rnncompiler/
_CELLS_DIR = os.path.join(_PKG_DIR, "cells") + os.sep
_DEMO_FILE = os.path.join(_PKG_DIR, "demo.py")     # its cell is the user's example too


# ---------------------------------------------------------------- sizes

@dataclass(frozen=True, order=True)
class Size:
    """A size expression: sum of coeff*name terms plus a constant (e.g. H+I, 2*H)."""
    terms: tuple = ()
    const: int = 0

    def __add__(self, other):
        coeffs = dict(self.terms)
        for name, c in other.terms:
            coeffs[name] = coeffs.get(name, 0) + c
        return Size(tuple(sorted(coeffs.items())), self.const + other.const)

    def __neg__(self):
        return Size(tuple((n, -c) for n, c in self.terms), -self.const)

    def __sub__(self, other):
        return self + (-other)

    def bind(self, sizes):
        """The integer value of this size given name -> int bindings."""
        missing = [n for n, _ in self.terms if n not in sizes]
        if missing:
            raise CellError("size %r is not bound: pass rc.compile(..., sizes={%r: n})"
                            % (missing[0], missing[0]))
        return self.const + builtins.sum(c * sizes[n] for n, c in self.terms)

    def __str__(self):
        parts = [(n if c == 1 else "%d*%s" % (c, n)) for n, c in self.terms]
        if self.const or not parts:
            parts.append(str(self.const))
        return "+".join(parts)


def as_size(spec, what):
    """Parse a size spec: an int, "H", "I", a bound name, a multiple like "4*H", or a sum
    of those like "H+I"."""
    if isinstance(spec, Size):
        return spec
    if type(spec).__name__ == "Vec":
        raise CellError("%s: a size is fixed when the cell is compiled, but this is a value "
                        "of the step (a vector, or the step index rc.step()): use an int, "
                        "'H', 'I' or a size name" % what)
    if isinstance(spec, bool) or not isinstance(spec, (int, str)):
        raise CellError("%s: a size must be an int, 'H', 'I' or a name, got %r" % (what, spec))
    if isinstance(spec, int):
        if spec < 1:
            raise CellError("%s: a size must be >= 1, got %d" % (what, spec))
        return Size((), spec)
    total = Size()
    for part in spec.replace(" ", "").split("+"):
        if part.isdigit():
            total = total + Size((), int(part))
        elif _IDENT.match(part):
            total = total + Size(((part, 1),), 0)
        elif _MULTIPLE.match(part):
            k, name = part.split("*")
            total = total + Size(((name, int(k)),), 0)
        else:
            raise CellError("%s: cannot read the size %r (use an int, 'H', 'I', a name, a "
                            "multiple such as '4*H', or a sum of those)" % (what, spec))
    return total


def check_identifier(name, what):
    """Names reach generated code only as validated identifiers."""
    if not isinstance(name, str) or not _IDENT.match(name) or keyword.iskeyword(name):
        raise CellError("%s: %r is not a valid name (expected an identifier "
                        "[A-Za-z_][A-Za-z0-9_]*)" % (what, name))
    return name


def bind_sizes(cell, input_size, hidden_size, sizes):
    """name -> int for every size the cell uses, H and I included."""
    for what, v in (("input_size", input_size), ("hidden_size", hidden_size)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError("%s: expected an int >= 1, got %r" % (what, v))
    bound = {"H": int(hidden_size), "I": int(input_size)}
    for name, v in (sizes or {}).items():
        check_identifier(name, "sizes")
        if name in ("H", "I"):
            raise CellError("sizes: %r is set by %s" % (name, "hidden_size" if name == "H"
                                                          else "input_size"))
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError("sizes[%r]: expected an int >= 1, got %r" % (name, v))
        bound[name] = int(v)
    return bound



def bind_columns(spec, bound):
    """The blocks of the cell's input row with their sizes bound (runtime/inputs.py)."""
    return Columns(tuple((n, s.bind(bound)) for n, s in spec.inputs),
                   tuple((n, s.bind(bound)) for n, s in spec.context),
                   tuple(Mask(n, s.bind(bound), per, kind, rate)
                         for n, s, per, kind, rate in spec.masks))


# ---------------------------------------------------------------- the spec

@dataclass(frozen=True)
class Node:
    """One traced operation. op is input/state/param/ew/linear/concat/reduce."""
    id: str
    op: str
    args: tuple = ()
    size: Size = Size((), 1)
    scalar: bool = False       # broadcast scalar: a p.scalar or a per-row reduction
    expr: object = None        # ew: an expr.Term tree or a sympy expression in a0..a{k-1}
    how: str = ""              # reduce: "sum"/"mean"; param: "matrix"/"vector"/"scalar"
    shape: tuple = ()          # param: tuple of Size
    where: str = ""
    name: str = ""             # the cell's variable bound to this value ("" if none)
    offset: Size = Size()      # slice: the first unit it takes
    frozen: bool = False       # param: a constant of the kernel (trainable=False): no gradient


@dataclass(frozen=True)
class CellSpec:
    """What a cell means, independent of sizes: nodes in trace order and the results."""
    name: str
    states: tuple             # ((name, Size), ...)
    nodes: tuple              # (Node, ...)
    new_states: tuple         # ((state name, node id), ...)
    output: str               # node id of the step output
    params: tuple             # param node ids in declaration order
    where: str
    # the blocks of the input row x_t, in order (runtime/inputs.py): per-step inputs and
    # per-sequence contexts ((name, Size), ...), masks ((name, Size, per, kind, rate), ...)
    inputs: tuple = (("x", Size((("I", 1),), 0)),)
    context: tuple = ()
    masks: tuple = ()


@dataclass(frozen=True, eq=False)
class Cell:
    """A traced cell: `.name`, `.states` (name -> size spec as declared, e.g. "H") and
    its frozen `.spec`."""
    name: str
    states: dict
    spec: CellSpec
    fn: object = field(repr=False, default=None)

    def __call__(self, *args, **kwargs):
        return self.fn(*args, **kwargs)

    @property
    def inputs(self):
        """Per-step input name -> size spec, in the order the function takes them."""
        return {name: str(size) for name, size in self.spec.inputs}

    @property
    def context(self):
        """Per-sequence (context) input name -> size spec."""
        return {name: str(size) for name, size in self.spec.context}

    @property
    def masks(self):
        """Mask name -> (kind, rate, per) of every rc.dropout and rc.zoneout."""
        return {name: (kind, rate, per) for name, _, per, kind, rate in self.spec.masks}


# ---------------------------------------------------------------- tracing

def _user_frame():
    """(path, line) of the innermost frame outside this package's machinery (the cell's
    line; the cells library counts as user code), or (None, 0)."""
    frame = inspect.currentframe()
    while frame is not None:
        path = os.path.abspath(frame.f_code.co_filename)
        if not path.startswith(_PKG_DIR + os.sep) or path.startswith(_CELLS_DIR) \
                or path == _DEMO_FILE:
            return path, frame.f_lineno
        frame = frame.f_back
    return None, 0


def _user_where():
    """file:line of the cell's line (see _user_frame)."""
    path, line = _user_frame()
    return "%s:%d" % (os.path.basename(path), line) if path else "<cell>"


class _Tracer:
    """Collects nodes while a cell function runs."""

    def __init__(self):
        self.nodes = {}
        self.params = []
        self.step = None          # rc.step(): (the state node counting steps, its scalar)
        self.masks = []           # rc.dropout/rc.zoneout: (name, Size, per, kind, rate)
        self.columns = {}         # name of every block of the input row -> where declared
        self.alias = {}           # node id -> the node that stands for it once traced


    def add(self, op, **kw):
        node_id = kw.pop("id", None) or "n%d" % len(self.nodes)
        node = Node(node_id, op, where=kw.pop("where", None) or _user_where(), **kw)
        self.nodes[node_id] = node
        return Vec(self, node_id, node.size, node.scalar)

    def param(self, name, how, shape, where, trainable=True):
        check_identifier(name, "%s: parameter name" % where)
        if name == "x":
            raise CellError("%s: 'x' is reserved for the input" % where)
        if not isinstance(trainable, bool):
            raise CellError("%s: trainable= of parameter %r must be True or False, got %r"
                            % (where, name, trainable))
        node_id = "param." + name
        old = self.nodes.get(node_id)
        if old is not None and old.frozen == trainable:
            raise CellError(
                "%s: parameter %r is %s here but was declared %s at %s — one parameter is "
                "either trained or constant: use another name, or the same trainable= in "
                "both places" % (where, name, _trainable_text(trainable), _trainable_text(not old.frozen),
                                 old.where))
        if old is not None:
            if old.how != how or old.shape != shape:
                raise CellError(
                    "%s: parameter %r was declared at %s as a %s of shape (%s); here it is a %s "
                    "of shape (%s) — use another name, or the same shape to share it"
                    % (where, name, old.where, old.how, ", ".join(map(str, old.shape)),
                       how, ", ".join(map(str, shape))))
            return Vec(self, node_id, old.size, old.scalar)
        self.params.append(node_id)
        size = shape[0] if shape else Size((), 1)
        return self.add("param", id=node_id, how=how, shape=shape, size=size,
                        scalar=(how == "scalar"), where=where, frozen=not trainable)


def _trainable_text(trainable):
    return "trainable" if trainable else "frozen (trainable=False)"

def _to_vec(tracer, value, where):
    if isinstance(value, Vec):
        if value._tracer is not tracer:
            raise CellError("%s: a vector from another cell was used here" % where)
        return value
    return None


def _number(value, where):
    num = ex.real_number(value)
    if num is None and ex.beyond_double(value):
        text = str(value)
        raise CellError("%s: the number %s is too large for a double (at most about 1.8e308)"
                        % (where, text if len(text) < 40 else "%s...(%d digits)" % (text[:12], len(text))))
    if num is None:
        raise CellError("%s: expected a vector or a real number, got %r" % (where, value))
    return num


def _elementwise(fn, operands, where, what="elementwise", sympy_math=False):
    """Trace one elementwise node: fn maps one leaf per operand (a Term slot per vector,
    the number itself otherwise) to an expression; with sympy_math, real sympy symbols
    and a sympy expression (rc.elementwise, rc.activation)."""
    tracer = next((v._tracer for v in operands if isinstance(v, Vec)), None)
    if tracer is None:
        raise CellError("%s: %s takes a vector of the cell, got %s"
                        % (where, what, ", ".join(repr(v) for v in operands)))
    vecs, leaves = [], []
    for value in operands:
        vec = _to_vec(tracer, value, where)
        if vec is None:
            leaves.append(_number(value, where))
        else:
            leaves.append(ex.arg(len(vecs)))
            vecs.append(vec)
    expr = _sympy_expr(fn, leaves, where, what) if sympy_math else ex.as_term(fn(*leaves))
    vectors = [v for v in vecs if not v.scalar]
    size = vectors[0].size if vectors else Size((), 1)
    for v in vectors[1:]:
        if not v.size.terms and not size.terms and v.size != size:
            raise CellError("%s: elementwise operands have sizes %s and %s" % (where, size, v.size))
    return tracer.add("ew", args=tuple(v.id for v in vecs), expr=expr, size=size,
                      scalar=not vectors, where=where)


def _sympy_expr(fn, leaves, where, what):
    """fn over real sympy symbols, checked: a real sympy expression of its operands only,
    that C and numpy can compute."""
    import sympy
    from . import mathfn
    syms = [sympy.Symbol("a%d" % a.args[0], real=True) if isinstance(a, ex.Term)
            else sympy.sympify(a, strict=True) for a in leaves]
    expr = sympy.sympify(fn(*syms))
    if not isinstance(expr, sympy.Expr):
        raise CellError("%s: %s must give a sympy expression, got %r" % (where, what, expr))
    stray = sorted(str(s) for s in expr.free_symbols - set(syms))
    if stray:
        raise CellError("%s: %s uses the symbol %s, which is none of its operands; pass it "
                        "as a vector, or make it a parameter (p.scalar)" % (where, what, stray[0]))
    mathfn.check_expression(expr, where)
    return expr


def _per_row(v, where):
    """A learnable vector used where per-row values are needed (a linear map's operand, a
    concat, a reduction) becomes a broadcast copy: those operations read rows."""
    if v._tracer.nodes[v.id].op != "param":
        return v
    return v._tracer.add("ew", args=(v.id,), expr=ex.arg(0), size=v.size, where=where)


class Vec:
    """A symbolic vector (one value per unit and batch row) inside a traced cell."""
    __slots__ = ("_tracer", "id", "size", "scalar")
    __array_priority__ = 1000

    def __init__(self, tracer, node_id, size, scalar):
        self._tracer, self.id, self.size, self.scalar = tracer, node_id, size, scalar

    def __repr__(self):
        return "Vec(%s, size=%s%s)" % (self.id, self.size, ", scalar" if self.scalar else "")

    def __len__(self):
        raise CellError("%s: len(v): the size of a symbolic vector is %s, bound at compile "
                        "time; give sizes by name (size=\"H\", sizes={...})"
                        % (_user_where(), self.size))

    def __bool__(self):
        raise CellError("%s: a symbolic vector has no truth value; use sympy.Piecewise "
                        "inside rc.elementwise for conditions" % _user_where())

    def _compare(self, other):
        raise CellError("%s: symbolic vectors cannot be compared in Python; write the "
                        "condition inside rc.elementwise, e.g. rc.elementwise(lambda u: "
                        "sympy.Piecewise((u, u > 0), (0, True)), v)" % _user_where())

    __lt__ = __le__ = __gt__ = __ge__ = __eq__ = __ne__ = _compare
    __hash__ = object.__hash__

    # Python and numpy hooks that would otherwise fail with their own texts

    def _needs_number(what):
        def refuse(self, *args):
            path, line = _user_frame()
            raise CellError(advice.number_advice(_user_where(), path, line, what))
        return refuse

    __float__ = _needs_number("float()")
    __complex__ = _needs_number("complex()")
    __int__ = _needs_number("int()")
    __index__ = _needs_number("an integer (an index, range(), a size)")
    __round__ = _needs_number("round()")
    __trunc__ = __floor__ = __ceil__ = _needs_number("math.trunc/floor/ceil")
    del _needs_number

    def _sympy_(self):
        # sympy numbers meeting a vector (Rational(1, 2) * v) ask it to become sympy first,
        # by float() where this is missing; refused, they leave the operation to the vector
        from sympy.core.sympify import SympifyError
        raise SympifyError(self)

    def __getitem__(self, key):
        """v[a:b]: units a..b-1 of the vector (bounds are ints, sizes such as "H", or
        None; negative ones count from the end)."""
        where = _user_where()
        if not isinstance(key, builtins.slice):
            raise CellError(advice.slice_advice(where))
        return _slice(self, key.start, key.stop, key.step, where)

    def __iter__(self):
        raise CellError(advice.iterate_advice(_user_where()))

    def __abs__(self):
        raise CellError(advice.function_advice(_user_where(), "abs()", "abs"))

    def __matmul__(self, other):
        raise CellError(advice.function_advice(_user_where(), "@", "matmul"))

    __rmatmul__ = __matmul__

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        """numpy scalars in arithmetic work as numbers; any other numpy use is refused
        with the rc function to use instead."""
        where = _user_where()
        op = _NUMPY_ARITHMETIC.get(ufunc.__name__)
        if op is None or method != "__call__" or kwargs:
            raise CellError(advice.function_advice(where, "np." + ufunc.__name__,
                                                   ufunc.__name__))
        return op(*[_from_numpy(a, where) for a in inputs])

    def __array_function__(self, func, types, args, kwargs):
        raise CellError(advice.function_advice(_user_where(), "np." + func.__name__,
                                               func.__name__))


_NUMPY_ARITHMETIC = {"add": operator.add, "subtract": operator.sub,
                     "multiply": operator.mul, "true_divide": operator.truediv,
                     "divide": operator.truediv, "power": operator.pow,
                     "negative": operator.neg, "positive": operator.pos}


def _from_numpy(value, where):
    """A numpy scalar as a Python number; a numpy array is refused (sizes are symbolic)."""
    if isinstance(value, Vec):
        return value
    if getattr(value, "ndim", 0) != 0:
        raise CellError(advice.numpy_array_advice(where))
    return value.item() if hasattr(value, "item") else value


def _binary(op):
    def forward(self, other):
        return _elementwise(op, (self, other), _user_where())

    def reverse(self, other):
        return _elementwise(op, (other, self), _user_where())
    return forward, reverse


for _name, _op in {"add": lambda a, b: a + b, "sub": lambda a, b: a - b,
                   "mul": lambda a, b: a * b, "truediv": lambda a, b: a / b,
                   "pow": lambda a, b: a ** b}.items():
    _fwd, _rev = _binary(_op)
    setattr(Vec, "__%s__" % _name, _fwd)
    setattr(Vec, "__r%s__" % _name, _rev)
Vec.__neg__ = lambda self: _elementwise(lambda a: -a, (self,), _user_where())
Vec.__pos__ = lambda self: self


class Params:
    """The parameter factory `p` passed to a cell: linear maps, vectors, scalars."""

    def __init__(self, tracer):
        self._tracer = tracer

    def linear(self, weight, v, *, bias=None, size=None, trainable=True):
        """W v (+ b): W has shape (size, len(v)), b shape (size,); size defaults to H.
        trainable=False makes W (and b) constants of the kernel: inputs in `params`, with
        no gradient computed or returned (an echo state network's reservoir)."""
        where = _user_where()
        vec = self._operand(v, where, "p.linear(%r, v)" % weight)
        rows = as_size("H" if size is None else size, "%s: size of %s" % (where, weight))
        W = self._tracer.param(weight, "matrix", (rows, vec.size), where, trainable)
        args = (vec.id, W.id)
        if bias is not None:
            args += (self._tracer.param(bias, "vector", (rows,), where, trainable).id,)
        return self._tracer.add("linear", args=args, size=rows, where=where)

    def vector(self, name, size=None, *, trainable=True):
        """A learnable vector of `size` units (default H); trainable=False: a constant."""
        where = _user_where()
        return self._tracer.param(name, "vector",
                                  (as_size("H" if size is None else size, where),), where,
                                  trainable)

    def scalar(self, name, *, trainable=True):
        """A learnable scalar, broadcast in every elementwise use; trainable=False: a
        constant."""
        return self._tracer.param(name, "scalar", (), _user_where(), trainable)

    def _operand(self, v, where, what):
        if not isinstance(v, Vec) or v._tracer is not self._tracer:
            raise CellError("%s: %s needs a vector of this cell, got %r" % (where, what, v))
        if v.scalar:
            raise CellError("%s: %s needs a vector, got a broadcast scalar" % (where, what))
        return _per_row(v, where)


# ---------------------------------------------------------------- public DSL functions

def _table_function(row):
    """rc.<row.name>: a row of the activation table traced as one call of it."""
    def apply(v):
        return _elementwise(lambda a: ex.call(row.sympy_name, a), (v,), _user_where(), row.name)
    apply.__name__ = apply.__qualname__ = row.name
    apply.__doc__ = row.doc
    return apply


def clip(v, lo, hi):
    """clip(v, lo, hi) with constant bounds; derivative 1 on [lo, hi] (torch.clamp's)."""
    where = _user_where()
    lo_n, hi_n = _number(lo, where), _number(hi, where)
    if not lo_n <= hi_n:
        raise CellError("%s: rc.clip needs lo <= hi, got %s > %s" % (where, lo, hi))
    return _elementwise(lambda a: ex.call("Clip", a, lo_n, hi_n), (v,), where, "clip")


# rows with bounds have their function written above, the others are made from the row
_WITH_BOUNDS = {"clip": clip}

# rc.<name> -> its function, for every public row of the activation table, in table order:
# the package exports them as they are
ACTIVATION_FUNCTIONS = {row.name: _WITH_BOUNDS[row.name] if row.bounds else _table_function(row)
                        for row in activations.TABLE if row.public}
globals().update(ACTIVATION_FUNCTIONS)


def elementwise(fn, *vectors):
    """Any elementwise math: fn gets one real sympy symbol per vector, returns an expression."""
    where = _user_where()
    if not vectors or not any(isinstance(v, Vec) for v in vectors):
        raise CellError("%s: rc.elementwise needs at least one vector" % where)
    return _elementwise(fn, vectors, where, sympy_math=True)


def activation(name, forward, derivative=None):
    """A named elementwise function; derivative(u, y) optionally hand-written."""
    import sympy
    from . import mathfn
    check_identifier(name, "rc.activation name")
    fn_class = mathfn.make_activation(name, forward, derivative)
    u = sympy.Symbol("u", real=True)
    mathfn.check_expression(sympy.sympify(forward(u)), "rc.activation(%r)" % name)

    def apply(v):
        return _elementwise(fn_class, (v,), _user_where(), name, sympy_math=True)
    apply.__name__ = name
    apply.sympy_function = fn_class
    return apply


def concat(*vectors):
    """Stack vectors: concat(h, x) has size H+I."""
    where = _user_where()
    if not vectors:
        raise CellError("%s: rc.concat needs at least one vector" % where)
    tracer = None
    for v in vectors:
        if not isinstance(v, Vec) or v.scalar:
            raise CellError("%s: rc.concat takes vectors, got %r" % (where, v))
        tracer = tracer or v._tracer
    vectors = [_per_row(v, where) for v in vectors]
    size = Size()
    for v in vectors:
        size = size + v.size
    return tracer.add("concat", args=tuple(v.id for v in vectors), size=size, where=where)


def _bound(value, size, what, where):
    """A slice bound as a Size: an int (negative: from the end), a size spec, or None."""
    if isinstance(value, Size):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise CellError("%s: the %s of a slice must be an int, a size such as \"H\" or "
                        "None, got %r" % (where, what, value))
    if isinstance(value, int):
        return size + Size((), value) if value < 0 else Size((), value)
    return as_size(value, "%s: the %s of a slice" % (where, what))


def _slice(v, start, stop, step, where):
    if step not in (None, 1):
        raise CellError("%s: a slice of a vector takes consecutive units (step 1), got step "
                        "%r" % (where, step))
    if v.scalar:
        raise CellError("%s: a broadcast scalar has no units to slice" % where)
    v = _per_row(v, where)
    first = Size() if start is None else _bound(start, v.size, "start", where)
    end = v.size if stop is None else _bound(stop, v.size, "stop", where)
    return v._tracer.add("slice", args=(v.id,), size=end - first, offset=first, where=where)


def split(v, sizes):
    """rc.split(v, (n1, n2, ...)): consecutive slices of v of those sizes (ints or size
    specs such as "H"), which must add up to v's size."""
    where = _user_where()
    if not isinstance(v, Vec) or v.scalar:
        raise CellError("%s: rc.split takes a vector, got %r" % (where, v))
    if isinstance(sizes, (str, int)) or not sizes:
        raise CellError("%s: rc.split(v, sizes) takes a tuple of sizes, got %r" % (where, sizes))
    sizes = [as_size(size, "%s: size %d of rc.split" % (where, k)) for k, size in enumerate(sizes)]
    total = Size()
    for n in sizes:
        total = total + n
    if _canonical(total) != _canonical(v.size):
        raise CellError("%s: rc.split: the parts add up to %s but the vector has size %s"
                        % (where, total, v.size))
    parts, first = [], Size()
    for n in sizes:
        parts.append(_slice(v, first, first + n, None, where))
        first = first + n
    return tuple(parts)


def _canonical(size):
    """A size with its zero terms dropped, for comparing two of them."""
    return Size(tuple((n, c) for n, c in size.terms if c), size.const)


_TRACING = threading.local()      # the tracer of the cell being traced in this thread


def step():
    """rc.step(): the index t of the step being computed (0 at the first step), a per-row
    scalar for elementwise math, e.g. a clock: 1[t mod 4 = 0]. The cell gets a state
    `step` of one unit counting the steps, step[t] = step[t-1] + 1, whose state0 is the
    index of the first step (0 by default): carried like any state, it keeps counting
    across truncated BPTT chunks, and stops for a row past its length."""
    tracer = getattr(_TRACING, "tracer", None)
    where = _user_where()
    if tracer is None:
        raise CellError("%s: rc.step() is the index of the step inside a cell function; "
                        "call it while the cell is traced (in the function of @rc.cell)" % where)
    if tracer.step is None:
        state = tracer.add("state", id="state.step", size=Size((), 1), where=where)
        t = tracer.add("reduce", args=(state.id,), how="sum", scalar=True, where=where)
        tracer.step = (state, t)
    return tracer.step[1]


def _reduction(how):
    def reduce(v):
        where = _user_where()
        if not isinstance(v, Vec) or v.scalar:
            raise CellError("%s: rc.%s takes a vector, got %r" % (where, how, v))
        v = _per_row(v, where)
        return v._tracer.add("reduce", args=(v.id,), how=how, scalar=True, where=where)
    reduce.__name__ = how
    reduce.__doc__ = "The %s over the units of a vector: a per-row scalar." % how
    return reduce


sum = _reduction("sum")    # noqa: A001 - rc.sum is the contract's name
mean = _reduction("mean")


# ---------------------------------------------------------------- @rc.cell

def _states_spec(states, where):
    """name -> Size, in declaration order."""
    if isinstance(states, str):
        states = (states,)
    if isinstance(states, dict):
        items = list(states.items())
    elif isinstance(states, (tuple, list)):
        items = [(s, "H") for s in states]
    else:
        raise CellError("%s: states= must be a tuple of names or a dict name -> size" % where)
    if not items:
        raise CellError("%s: a cell needs at least one state" % where)
    out = {}
    for name, size in items:
        check_identifier(name, "%s: state name" % where)
        if name == "x" or name in out:
            raise CellError("%s: state name %r is reserved or repeated" % (where, name))
        out[name] = as_size(size, "%s: size of state %r" % (where, name))
    return out


def _blocks_spec(blocks, default, what, where):
    """name -> Size for inputs= or context=: a tuple of names (each of size `default`) or
    a dict name -> size."""
    if isinstance(blocks, str):
        blocks = (blocks,)
    if isinstance(blocks, dict):
        items = list(blocks.items())
    elif isinstance(blocks, (tuple, list)):
        items = [(n, default) for n in blocks]
    else:
        raise CellError("%s: %s= must be a tuple of names or a dict name -> size, got %r"
                        % (where, what, blocks))
    out = {}
    for name, size in items:
        check_identifier(name, "%s: %s name" % (where, what))
        if name in out:
            raise CellError("%s: %s name %r is repeated" % (where, what, name))
        out[name] = as_size(size, "%s: size of %s %r" % (where, what, name))
    return out


def trace_cell(fn, states, output, inputs=("x",), context=()):
    """Run `fn` on symbolic vectors and return its CellSpec."""
    code = fn.__code__
    where = "%s:%d" % (os.path.basename(code.co_filename), code.co_firstlineno)
    state_sizes = _states_spec(states, where)
    input_sizes = _blocks_spec(inputs, "I", "inputs", where)
    if not input_sizes:
        raise CellError("%s: a cell needs at least one per-step input (inputs=)" % where)
    context_sizes = _blocks_spec(context, "I", "context", where)
    clash = sorted((set(input_sizes) & set(context_sizes))
                   | ((set(input_sizes) | set(context_sizes)) & set(state_sizes)))
    if clash:
        raise CellError("%s: %r names both an input and a state or context; give each its "
                        "own name" % (where, clash[0]))
    bind = _binder(fn, len(input_sizes) + len(context_sizes), state_sizes, where)
    tracer = _Tracer()
    width = Size()
    for size in list(input_sizes.values()) + list(context_sizes.values()):
        width = width + size
    x = tracer.add("input", id="x", size=width, where=where)
    prev = [tracer.add("state", id="state." + s, size=size, where=where)
            for s, size in state_sizes.items()]
    blocks = {**input_sizes, **context_sizes}
    tracer.columns = {name: where for name in blocks}
    if len(blocks) == 1:
        lead = [x]                  # the common cell: its input is the row itself
    else:
        lead, col = [], Size()
        for name, size in blocks.items():
            lead.append(tracer.add("slice", id="input." + name, args=("x",), size=size,
                                   offset=col, name=name, where=where))
            col = col + size
    outer, _TRACING.tracer = getattr(_TRACING, "tracer", None), tracer
    try:
        result, local_names = _call_recording_names(fn, *bind(lead, prev, Params(tracer)))
    finally:
        _TRACING.tracer = outer
    if tracer.masks:
        _row_with_masks(tracer, width, len(blocks) == 1 and next(iter(blocks)), where)
    _name_nodes(tracer, local_names, set(state_sizes) | {"x"} | set(tracer.columns))
    new_states, y, output = _split_result(result, state_sizes, output, where)
    if tracer.step is not None:             # rc.step(): its counter is a state of the cell
        if "step" in state_sizes:
            raise CellError("%s: a cell that calls rc.step() has a state 'step' counting the "
                            "steps; rename its own state 'step'" % where)
        state_sizes["step"] = Size((), 1)
        new_states = dict(new_states, step=tracer.step[0] + 1)
    new_ids = tuple((s, _materialise(tracer, v, "state %r" % s, where).id)
                    for s, v in new_states.items())
    # an output named by output= is that state's node itself: y_t is the state after step t
    y_id = dict(new_ids)[output] if output else _materialise(tracer, y, "output", where).id
    for s, node_id in new_ids:
        node = tracer.nodes[node_id]
        if node.size != state_sizes[s] and not (node.size.terms or state_sizes[s].terms):
            raise CellError("%s: state %r has size %s but the cell returns a vector of size %s"
                            % (node.where, s, state_sizes[s], node.size))
    return CellSpec(fn.__name__, tuple(state_sizes.items()), tuple(tracer.nodes.values()),
                    new_ids, y_id, tuple(tracer.params), where,
                    tuple(input_sizes.items()), tuple(context_sizes.items()),
                    tuple(tracer.masks))


def _row_with_masks(tracer, width, whole, where):
    """Widen the input row by the masks' columns (they come after the inputs). A cell
    that was handed the row itself as its one input now reads it through a slice of the
    row's first columns."""
    total = width
    for _, size, *_ in tracer.masks:
        total = total + size
    nodes = dict(tracer.nodes)
    nodes["x"] = replace(nodes["x"], size=total)
    if whole:
        first = Node("input." + whole, "slice", ("x",), size=width, offset=Size(), name=whole,
                     where=where)
        out = {}
        for node_id, node in nodes.items():
            if node.op != "slice" or not node_id.startswith("mask."):
                node = replace(node, args=tuple(first.id if a == "x" else a for a in node.args))
            out[node_id] = node
            if node_id == "x":
                out[first.id] = first
        nodes = out
        tracer.alias["x"] = first.id        # x returned as a result is the slice too
    tracer.nodes = nodes


def _binder(fn, lead, state_sizes, where):
    """How the cell function takes its arguments: (x, s1, ..., sn, p), or (x, *states, p)
    with p keyword-only, for a cell whose state list is built at run time (a stack of
    layers, a shift register); with several inputs or contexts, all of them first, in the
    order declared. Returns (inputs, prev, p) -> (args, kwargs)."""
    params = list(inspect.signature(fn).parameters.values())
    var = [k for k, q in enumerate(params) if q.kind is inspect.Parameter.VAR_POSITIONAL]
    if var:
        head, tail = params[:var[0]], params[var[0] + 1:]
        required = [q for q in tail if q.default is inspect.Parameter.empty]
        if (len(head) != lead or any(q.kind is inspect.Parameter.KEYWORD_ONLY for q in head)
                or len(required) != 1 or required[0].kind is not inspect.Parameter.KEYWORD_ONLY):
            raise CellError("%s: %s%s: a cell with a variable number of states is written "
                            "def %s(%s, *states, p): %s, then *states, then the parameter "
                            "factory p" % (where, fn.__name__, inspect.signature(fn),
                                           fn.__name__, _lead_text(lead), _lead_text(lead)))
        p_name = required[0].name
        return lambda xs, prev, p: ((*xs, *prev), {p_name: p})
    if len(params) != len(state_sizes) + lead + 1:
        raise CellError("%s: %s takes %d arguments; expected %s, one per state (%s), then p "
                        "(or %s, *states, p)" % (where, fn.__name__, len(params),
                                                 _lead_text(lead), ", ".join(state_sizes),
                                                 _lead_text(lead)))
    return lambda xs, prev, p: ((*xs, *prev, p), {})


def _lead_text(lead):
    return "x" if lead == 1 else "the %d inputs and contexts" % lead


# ---------------------------------------------------------------- masks

def _mask(v, kind, rate, per, name, where):
    """A new block of the input row holding a random mask of v's size (runtime/inputs.py
    draws it), as a vector of the cell."""
    tracer = getattr(_TRACING, "tracer", None)
    if tracer is None:
        raise CellError("%s: rc.%s is used inside a cell function, while @rc.cell traces it"
                        % (where, kind))
    if not isinstance(v, Vec) or v.scalar or v._tracer is not tracer:
        raise CellError("%s: rc.%s takes a vector of this cell, got %r" % (where, kind, v))
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0 <= rate < 1:
        raise CellError("%s: rc.%s: rate is the probability that a unit is %s, a number in "
                        "[0, 1), got %r" % (where, kind, "dropped" if kind == "dropout"
                                            else "kept at its old value", rate))
    if per not in ("sequence", "step"):
        raise CellError("%s: rc.%s: per= is \"sequence\" (one mask per sequence, the same at "
                        "every step) or \"step\" (a new mask at every step), got %r"
                        % (where, kind, per))
    if name is None:
        name = "%s%d" % (kind, builtins.sum(1 for m in tracer.masks if m[3] == kind))
    check_identifier(name, "%s: rc.%s name" % (where, kind))
    if name in tracer.columns:
        raise CellError("%s: rc.%s: the name %r is taken (at %s); give each mask its own "
                        "name=" % (where, kind, name, tracer.columns[name]))
    tracer.columns[name] = where
    offset = tracer.nodes["x"].size
    for m in tracer.masks:
        offset = offset + m[1]
    tracer.masks.append((name, v.size, per, kind, float(rate)))
    return tracer.add("slice", id="mask." + name, args=("x",), size=v.size, offset=offset,
                      name=name, where=where)


def dropout(v, rate, *, per="sequence", name=None):
    """rc.dropout(v, rate): v ⊙ m with a random mask m, m = 1/(1-rate) with probability
    1-rate, else 0 (inverted dropout: E[m] = 1). per="sequence" (the default) draws one
    mask per sequence, the same at every step: variational dropout (Gal & Ghahramani),
    also on states; per="step" a new one at every step. The kernel's forward draws the
    masks from its seed; infer and step use m = 1."""
    where = _user_where()
    return v * _mask(v, "dropout", rate, per, name, where)


def zoneout(new, old, rate, *, per="step", name=None):
    """rc.zoneout(new, old, rate): m ⊙ old + (1-m) ⊙ new, m = 1 with probability rate:
    each unit keeps its old value with that probability (Krueger et al.), a new mask at
    every step by default. Inference uses m = rate, the expectation."""
    where = _user_where()
    if getattr(_TRACING, "tracer", None) is None:
        raise CellError("%s: rc.zoneout is used inside a cell function, while @rc.cell "
                        "traces it" % where)
    if not isinstance(old, Vec) or old.scalar:
        raise CellError("%s: rc.zoneout(new, old, rate) takes the old value as a vector, got "
                        "%r" % (where, old))
    m = _mask(new, "zoneout", rate, per, name, where)
    return m * old + (1 - m) * new


def _call_recording_names(fn, args, kwargs):
    """fn(*args), and value id -> the first of fn's local variables bound to it when fn
    returns: the names the cell's code gives its values (f, i, c_new), kept to the C and
    the equations. Left empty when a profiler already watches this thread."""
    names = {}
    if sys.getprofile() is not None:
        return fn(*args, **kwargs), names
    code = fn.__code__

    def watch(frame, event, arg):
        if event == "return" and frame.f_code is code:
            for var, value in frame.f_locals.items():
                if isinstance(value, Vec):
                    names.setdefault(value.id, var)
    sys.setprofile(watch)
    try:
        result = fn(*args, **kwargs)
    finally:
        sys.setprofile(None)
    return result, names


_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,31}\Z")


def _name_nodes(tracer, names, reserved):
    """Give computed nodes the cell's names for them: plain ASCII identifiers only (they
    reach C identifiers), never an input's or a state's name, each name once."""
    taken = set(reserved)
    for node_id, var in names.items():
        node = tracer.nodes[node_id]
        if node.op in ("input", "state", "param") or var in taken or not _NAME.match(var):
            continue
        taken.add(var)
        tracer.nodes[node_id] = replace(node, name=var)


def _split_result(result, state_sizes, output, where):
    """(new states, y, the state that is the output or None) from what a cell returned."""
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], dict):
        if output is not None:
            raise CellError("%s: the cell returns an explicit output y and also names "
                            "output=%r; drop one of them" % (where, output))
        new_states, y = result
    elif isinstance(result, dict):
        new_states = result
        if output is None:
            if len(state_sizes) != 1:
                raise CellError("%s: with several states, name the output (output='h') or "
                                "return (states, y)" % where)
            output = next(iter(state_sizes))
        if output not in new_states:
            raise CellError("%s: output=%r is not one of the returned states %s"
                            % (where, output, sorted(new_states)))
        y = new_states[output]
    else:
        raise CellError("%s: a cell returns a dict of new states or (states_dict, y), got %r"
                        % (where, type(result).__name__))
    missing = [s for s in state_sizes if s not in new_states]
    extra = [s for s in new_states if s not in state_sizes]
    if missing or extra:
        raise CellError("%s: the cell must return exactly its states %s; missing %s, unknown %s"
                        % (where, list(state_sizes), missing, extra))
    return new_states, y, output


def _materialise(tracer, value, what, where):
    """A fresh node for a result, so that states and outputs are never leaves or params."""
    if not isinstance(value, Vec) or value._tracer is not tracer:
        raise CellError("%s: %s must be a vector of this cell, got %r" % (where, what, value))
    if value.scalar:
        raise CellError("%s: %s is a broadcast scalar; results must be vectors" % (where, what))
    return tracer.add("ew", args=(tracer.alias.get(value.id, value.id),), expr=ex.arg(0),
                      size=value.size, where=where)


def cell(fn=None, *, states=("h",), output=None, inputs=("x",), context=()):
    """Declare a recurrent cell: ``@rc.cell(states=("h", "c"), output="h")``.

    The function receives x, one vector per state (its value at t-1), and the parameter
    factory p; it returns a dict of new states, or (states_dict, y). inputs= declares
    several per-step inputs (names, or a dict name -> size; default one, x, of size I),
    context= per-sequence inputs (constant over time); the function then receives every
    input, then every context, before the states.
    """
    def decorate(f):
        spec = trace_cell(f, states, output, inputs, context)
        given = dict(states) if isinstance(states, dict) else {s: "H" for s in (
            (states,) if isinstance(states, str) else states)}
        given.update({s: size.const for s, size in spec.states if s not in given})   # rc.step()
        return Cell(f.__name__, given, spec, f)
    return decorate(fn) if fn is not None else decorate
