"""Elementwise expressions as the cell language traces them: small immutable trees of
arithmetic and named activations over operand slots a0, a1, ..., built without sympy, so
that declaring a cell and loading its kernel from the cache never import it. `to_sympy`
turns a tree into the sympy expression the graph stages differentiate and print; the
sympy operations are applied in the order the cell wrote them, so the result is the
expression sympy would have built directly.
"""
from __future__ import annotations

import math
import numbers

class Term:
    """One node of an expression tree: ("arg", k), ("num", value), an operator
    ("+", "-", "*", "/", "**", "neg") over terms, or ("call", name, *terms)."""
    __slots__ = ("op", "args")

    def __init__(self, op, args):
        self.op, self.args = op, tuple(args)

    def __eq__(self, other):
        return isinstance(other, Term) and (self.op, self.args) == (other.op, other.args)

    def __hash__(self):
        return hash((self.op, self.args))

    def __repr__(self):
        return "Term(%s)" % self.key()

    def key(self):
        """A canonical text of the tree: equal trees, equal keys, in every process."""
        if self.op == "arg":
            return "a%d" % self.args[0]
        if self.op == "num":
            return number_key(self.args[0])
        if self.op == "call":
            return "%s(%s)" % (self.args[0], ", ".join(a.key() for a in self.args[1:]))
        return "(%s %s)" % (self.op, " ".join(a.key() for a in self.args))

    def __neg__(self):
        return Term("neg", (self,))

    def __pos__(self):
        return self


def _binary(op):
    def forward(self, other):
        return Term(op, (self, as_term(other)))

    def reverse(self, other):
        return Term(op, (as_term(other), self))
    return forward, reverse


for _name, _op in {"add": "+", "sub": "-", "mul": "*", "truediv": "/", "pow": "**"}.items():
    _fwd, _rev = _binary(_op)
    setattr(Term, "__%s__" % _name, _fwd)
    setattr(Term, "__r%s__" % _name, _rev)


def arg(k):
    """Operand slot k (a_k in the expressions)."""
    return Term("arg", (k,))


def call(name, *args):
    """An activation applied to terms (numbers allowed, e.g. the bounds of Clip)."""
    return Term("call", (name,) + tuple(as_term(a) for a in args))


def as_term(value):
    return value if isinstance(value, Term) else Term("num", (value,))


def real_number(value):
    """value if it is a finite real number (Python, numpy or sympy), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return value if beyond_double(value) is False and math.isfinite(float(value)) else None
    if type(value).__module__.startswith("sympy") and getattr(value, "is_number", False):
        return value if value.is_real and value.is_finite else None
    return None


def beyond_double(value):
    """True when a real number (e.g. 10**400) is too large for a C double, else False."""
    if not isinstance(value, numbers.Real):
        return False
    try:
        float(value)
    except OverflowError:
        return True
    return False


def number_key(value):
    if type(value).__module__.startswith("sympy"):
        import sympy
        return sympy.srepr(value)
    return repr(float(value)) if isinstance(value, float) else repr(value)


def to_sympy(term):
    """The sympy expression of a tree (real symbols a0, a1, ...)."""
    import sympy
    from . import mathfn
    functions = mathfn.SYMPY_FUNCTIONS      # a call's name -> the activation table's function
    operators = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b,
                 "/": lambda a, b: a / b, "**": lambda a, b: a ** b, "neg": lambda a: -a}

    def convert(t):
        if t.op == "arg":
            return sympy.Symbol("a%d" % t.args[0], real=True)
        if t.op == "num":
            return sympy.sympify(t.args[0], strict=True)
        if t.op == "call":
            return functions[t.args[0]](*[convert(a) for a in t.args[1:]])
        return operators[t.op](*[convert(a) for a in t.args])
    return convert(term)
