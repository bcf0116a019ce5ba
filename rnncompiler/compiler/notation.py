"""How expressions read in the equations, the step IR and the C comments: the notation
of the docs (σ, tanh, `*` for the elementwise product, c[t]²), with indicators, max and
min written as math — 1[a > 0], max(0, a) — instead of sympy's syntax
(`Piecewise((1, a > 0), (0, True))`, `Max(0, a)`, `a**2`)."""
from __future__ import annotations

from sympy import Integer, S
from sympy.printing.precedence import precedence
from sympy.printing.str import StrPrinter

from .activations import TABLE

_SUPERSCRIPTS = dict(zip("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻"))
_RELATIONS = {"==": "=", "!=": "≠", ">=": "≥", "<=": "≤", ">": ">", "<": "<"}


class MathPrinter(StrPrinter):
    """sympy's text printer with the docs' notation."""

    def _print_Pow(self, expr):
        base, exp = expr.as_base_exp()
        if exp == S.Half:
            return "√(%s)" % self._print(base)
        if isinstance(exp, Integer) and 2 <= exp <= 9:
            text = self.parenthesize(base, precedence(expr), strict=True)
            return text + "".join(_SUPERSCRIPTS[c] for c in str(exp))
        return super()._print_Pow(expr)

    def _print_Piecewise(self, expr):
        pieces = list(expr.args)
        if len(pieces) == 2 and pieces[1].cond == S.true and pieces[1].expr == 0:
            value, cond = pieces[0]
            indicator = "1[%s]" % self._print(cond)
            return indicator if value == 1 else "%s*%s" % (
                self.parenthesize(value, precedence(S(2) * value)), indicator)
        parts = ["%s if %s" % (self._print(e), self._print(c)) if c != S.true
                 else "%s otherwise" % self._print(e) for e, c in pieces]
        return "{%s}" % "; ".join(parts)

    def _print_Relational(self, expr):
        op = _RELATIONS.get(expr.rel_op, expr.rel_op)
        return "%s %s %s" % (self._print(expr.lhs), op, self._print(expr.rhs))

    def _print_And(self, expr):
        return " ∧ ".join(self.parenthesize(a, precedence(expr)) for a in expr.args)

    def _print_Or(self, expr):
        return " ∨ ".join(self.parenthesize(a, precedence(expr)) for a in expr.args)

    def _print_Max(self, expr):
        return "max(%s)" % ", ".join(self._print(a) for a in expr.args)

    def _print_Min(self, expr):
        return "min(%s)" % ", ".join(self._print(a) for a in expr.args)

    def _print_Abs(self, expr):
        return "|%s|" % self._print(expr.args[0])

    def _print_Heaviside(self, expr):
        return "H(%s)" % self._print(expr.args[0])


def math_text(expr):
    """An expression in the docs' notation (see MathPrinter)."""
    return MathPrinter().doprint(expr)


def ascii_text(text):
    """Notation text made ASCII, for C comments (compilers may read another charset): an
    activation's symbol becomes its name."""
    for row in TABLE:
        if row.symbol is not None and not row.symbol.isascii():
            text = text.replace(row.symbol, row.name)
    for a, b in ( ("√", "sqrt"), ("≥", ">="), ("≤", "<="), ("≠", "!="),
                 ("∧", "and"), ("∨", "or"), ("δ", "d"), ("Σ_t", "sum_t"), ("ᵀ", "^T"),
                 ("⁺", "+")):
        text = text.replace(a, b)
    for digit, sup in _SUPERSCRIPTS.items():
        text = text.replace(sup, "^" + digit)
    return "".join(c if ord(c) < 128 else "?" for c in text).replace("*/", "* /")
