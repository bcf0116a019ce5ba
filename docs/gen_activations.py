"""Regenerate the activation table of docs/dsl.md from the package's activation table
(rnncompiler/compiler/activations.py).

    python docs/gen_activations.py            # rewrite the generated block in place
    python docs/gen_activations.py --check    # exit 1 if docs/dsl.md is stale, 0 if up to date

The block sits between the marker lines `<!-- BEGIN GENERATED: activations -->` and
`<!-- END GENERATED: activations -->`: one line per public row, its value, the derivative
the kernels use and its sympy function for rc.elementwise. docs/bptt.md's table of
derivatives (`derivative_table`) is written by docs/gen_bptt.py, with that page's blocks.
Nothing is compiled: the page is made from the table alone.
"""
from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))     # the checkout's package, installed or not

from rnncompiler.compiler.activations import TABLE  # noqa: E402

DOC = os.path.join(HERE, "dsl.md")


def _sympy_function(row):
    """How rc.elementwise spells the row: sympy.tanh or mathfn.Sigmoid."""
    args = ", ".join(("u",) + tuple(b for b, _ in row.bounds))
    return "`%s.%s(%s)`" % ("sympy" if row.builtin else "mathfn", row.sympy_name, args)


def activation_table():
    """The Markdown table of docs/dsl.md: every public row."""
    lines = ["| function | value | derivative used | in `rc.elementwise` |", "|---|---|---|---|"]
    for row in TABLE:
        if row.public:
            lines.append("| `%s` | %s | %s | %s |" % (row.signature, row.value_doc,
                                                     row.derivative_doc, _sympy_function(row)))
    return "\n".join(lines)


def derivative_table():
    """The Markdown table of docs/bptt.md: the derivative of every public row, and what
    the backward pass reads for it."""
    lines = ["| activation | derivative used | the backward pass reads |", "|---|---|---|"]
    for row in TABLE:
        if row.public:
            reads = "its saved output" if row.output_differentiable else "its argument u"
            lines.append("| `%s` | %s | %s |" % (row.signature, row.derivative_doc, reads))
    return "\n".join(lines)


def blocks():
    """NAME -> the Markdown that belongs between the NAME markers of docs/dsl.md."""
    return {"activations": activation_table()}


def main(argv=None):
    from gen_bptt import regenerate     # here: gen_bptt imports this module for bptt.md
    return regenerate(argv, DOC, blocks, "gen_activations.py")


if __name__ == "__main__":
    raise SystemExit(main())
