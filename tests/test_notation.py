"""The notation stage on its own (rnncompiler.compiler.notation): each printing rule of
MathPrinter, and the ASCII form the C comments take."""
import pytest
import sympy

from rnncompiler.compiler import mathfn
from rnncompiler.compiler.notation import ascii_text, math_text

a, b = sympy.symbols("a b", real=True)

PRINTED = [
    (sympy.Piecewise((1, a > 0), (0, True)), "1[a > 0]"),                       # an indicator
    (sympy.Piecewise((a, a > 0), (0, True)), "a*1[a > 0]"),
    (3 * sympy.Piecewise((1, sympy.And(a >= 0, a <= 1)), (0, True)), "3*1[a ≥ 0 ∧ a ≤ 1]"),
    (sympy.Piecewise((a, a > 0), (b, a < -1), (0, True)), "{a if a > 0; b if a < -1; 0 otherwise}"),
    (sympy.Piecewise((a, a > 0), (b, a < -1)), "{a if a > 0; b if a < -1}"),    # no default
    (sympy.Piecewise((1, sympy.Or(a > 1, a < -1)), (0, True)), "1[a > 1 ∨ a < -1]"),
    (sympy.Piecewise((1, sympy.Ne(a, 0)), (0, True)), "1[a ≠ 0]"),
    (sympy.Max(0, a), "max(0, a)"),
    (sympy.Min(a, b), "min(a, b)"),
    (1 - sympy.tanh(a) ** 2, "1 - tanh(a)²"),
    ((a + b) ** 3, "(a + b)³"),
    (sympy.sqrt(a + 1), "√(a + 1)"),
    (a ** 12, "a**12"),                                                          # no superscript past 9
    (1 / a, "1/a"),
    (sympy.Abs(a), "|a|"),
    (sympy.Heaviside(a), "H(a)"),
    (mathfn.Sigmoid(a) * (1 - mathfn.Sigmoid(a)), "(1 - σ(a))*σ(a)"),
    (mathfn.Relu(a), "max(a, 0)"),                                               # the table's text
]


@pytest.mark.parametrize("expr, text", PRINTED, ids=[t for _, t in PRINTED])
def test_each_rule_prints_the_docs_notation(expr, text):
    assert math_text(expr) == text


def test_no_sympy_syntax_is_left_in_a_derived_relu_equation():
    text = math_text(sympy.diff(mathfn.Relu(a), a))
    assert "Piecewise" not in text and "True" not in text


@pytest.mark.parametrize("text, ascii", [
    ("c[t] = σ(a) + tanh(c)²", "c[t] = sigmoid(a) + tanh(c)^2"),
    ("δh[t-1] += Wᵀ δa[t]", "dh[t-1] += W^T da[t]"),
    ("1[a ≥ 0 ∧ a ≤ 1] ≠ √(u)", "1[a >= 0 and a <= 1] != sqrt(u)"),
    ("x */ y", "x * / y"),                                # cannot end the C comment early
])
def test_ascii_text_is_plain_and_cannot_close_a_comment(text, ascii):
    out = ascii_text(text)
    assert out == ascii and out.isascii()
