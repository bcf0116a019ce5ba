"""What to write instead, when a cell hands a symbolic vector to numpy, `math` or a Python
construct that needs a number (float(v), if v > 0, v[0:2], for u in v): the texts of the
`CellError`s raised by the vector's hooks in dsl.py. A cell's values exist only when the
compiled kernel runs, so those libraries cannot compute with them; the rc functions can.
"""
from __future__ import annotations

import linecache
import re

from .activations import TABLE

# functions of the cell language, some with the same name as numpy's or math's
RC_FUNCTIONS = tuple(row.name for row in TABLE if row.public) + ("sum", "mean")

# other numpy/math/scipy names and what does their work in a cell
INSTEAD = {
    "concatenate": "rc.concat(u, v)", "hstack": "rc.concat(u, v)", "stack": "rc.concat(u, v)",
    "maximum": "rc.relu(v) for max(v, 0), else rc.elementwise(lambda a, b: sympy.Max(a, b), u, v)",
    "fmax": "rc.relu(v) for max(v, 0), else rc.elementwise(lambda a, b: sympy.Max(a, b), u, v)",
    "minimum": "rc.elementwise(lambda a, b: sympy.Min(a, b), u, v)",
    "fmin": "rc.elementwise(lambda a, b: sympy.Min(a, b), u, v)",
    "dot": "p.linear(name, v) for a learned matrix product", "matmul":
    "p.linear(name, v) for a learned matrix product", "inner": "rc.sum(u * v)",
    "sqrt": "v ** 0.5", "square": "v ** 2", "reciprocal": "1 / v", "negative": "-v",
    "abs": "rc.elementwise(lambda u: sympy.Abs(u), v)",
    "absolute": "rc.elementwise(lambda u: sympy.Abs(u), v)",
    "fabs": "rc.elementwise(lambda u: sympy.Abs(u), v)",
    "expit": "rc.sigmoid", "log1p": "rc.log(1 + v)", "expm1": "rc.exp(v) - 1",
    "where": "rc.elementwise(lambda u: sympy.Piecewise((u, u > 0), (0, True)), v)",
    "average": "rc.mean",
}


def function_advice(where, qualified, name):
    """`qualified` (e.g. "np.tanh") used on a symbolic vector at `where`."""
    return ("%s: %s cannot compute with a symbolic vector (a cell's values exist only when "
            "the compiled kernel runs); use %s" % (where, qualified, instead(name)))


def instead(name):
    """What to write in a cell for the numpy/math function `name`."""
    if name in RC_FUNCTIONS:
        return "rc.%s" % name
    if name in INSTEAD:
        return INSTEAD[name]
    return ("rc.elementwise(lambda u: sympy.%s(u), v) (any sympy math, elementwise)" % name)


def number_advice(where, path, lineno, what):
    """A vector used where Python needs a number (`what`: "float()", "int()", ...); a
    `math.f(...)` call on the cell's line gets the rc function for f."""
    call = re.search(r"\bmath\.(\w+)\s*\(", linecache.getline(path, lineno) if path else "")
    if call:
        return function_advice(where, "math." + call.group(1), call.group(1))
    return ("%s: %s needs a number, got a symbolic vector (one value per unit, known only "
            "when the kernel runs); compute with the vector itself (+ - * / **, rc.tanh, "
            "rc.exp, ...), or take a reduction with rc.sum / rc.mean" % (where, what))


def slice_advice(where):
    return ("%s: indexing a vector (v[0]) is not supported: its units are computed "
            "together; take a slice of one unit, v[0:1], or parts with v[a:b] and "
            "rc.split(v, sizes)" % where)


def iterate_advice(where):
    return ("%s: a vector cannot be iterated or unpacked (for u in v, list(v), sum(v), "
            "a, b = v): its units are computed together; use rc.sum(v) / rc.mean(v) over the "
            "units, and separate p.linear maps for parts" % where)


def numpy_array_advice(where):
    return ("%s: a numpy array cannot enter a cell (its size is symbolic until compile "
            "time); use Python numbers as constants and p.vector(name) for a learnable "
            "vector" % where)
