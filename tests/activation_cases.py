"""The activation table (rnncompiler/compiler/activations.py) as the tests use it: every
public row as a function of a cell's vector, and every row's numpy reference, so that the
tests iterating over the table cover a new row without being edited."""
import numpy as np

import rnncompiler as rc
from rnncompiler.compiler.activations import TABLE

PUBLIC = tuple(row for row in TABLE if row.public)


def bounds(row):
    """The row's example bounds (clip's lo and hi), in order."""
    return tuple(value for _, value in row.bounds)


def applied(row):
    """v -> rc.<name>(v) with the example bounds; a function defined for positive
    arguments only (log) of 1 + v², so that every value of v is in its domain."""
    fn = getattr(rc, row.name)
    if row.domain[0] >= 0:
        return lambda v: fn(1 + v * v, *bounds(row))
    return lambda v: fn(v, *bounds(row))


# rc.<name> -> v -> its value in a cell, for every public row
CASES = {row.name: applied(row) for row in PUBLIC}


def reference(row):
    """u -> the row's value in numpy, as the reference evaluator computes it (bounds bound)."""
    from rnncompiler.compiler import mathfn
    fn = getattr(np, row.sympy_name) if row.builtin else mathfn.NUMPY_FUNCTIONS[row.sympy_name]
    return lambda u: fn(u, *bounds(row))


def stays_finite(row):
    """Whether the row's value (in its domain, as `applied` maps it) is finite at large
    arguments: every activation but those that grow like exp."""
    u = np.array([-1e4, 1e4])
    with np.errstate(all="ignore"):
        value = reference(row)(1 + u * u if row.domain[0] >= 0 else u)
    return bool(np.isfinite(value).all())
