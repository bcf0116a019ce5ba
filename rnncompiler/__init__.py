"""rnncompiler: write a recurrent cell's equations in Python; get compiled forward and
backward-through-time kernels over whole sequences on numpy arrays.

    >>> import rnncompiler as rc
    >>> @rc.cell(states=("h",))
    ... def elman(x, h, p):
    ...     return {"h": rc.tanh(p.linear("W", rc.concat(h, x), bias="b"))}
    >>> elman.states
    {'h': 'H'}

Importing the package loads numpy and the cell language only: sympy and networkx come
with the first compile that misses the cache, the other parts on first use (rc.gradcheck,
rc.cells, rc.models, rc.torch, ...).
"""
import importlib

from .errors import CellError, CompileError, CacheSecurityError, NonFiniteError
from .compiler.dsl import Cell, cell, concat, split, step, elementwise, activation, sum, mean
from .compiler.dsl import dropout, zoneout
from .compiler.dsl import ACTIVATION_FUNCTIONS as _ACTIVATION_FUNCTIONS
from .compiler.pipeline import compile, VERSION as __version__
from .runtime.kernel import Kernel, ForwardResult, Gradients
from .compiler.unroll import unroll
from .runtime.threads import set_num_threads, get_num_threads
from .diagnostics import gradient_flow, GradientFlow

# rc.sigmoid, rc.tanh, ..., rc.clip: one per public row of the activation table
# (rnncompiler/compiler/activations.py)
globals().update(_ACTIVATION_FUNCTIONS)

# name -> (submodule, attribute or None for the submodule itself), imported on first use
_LAZY = {
    "gradcheck": ("check", "gradcheck"), "GradcheckReport": ("check", "GradcheckReport"),
    "StepCheck": ("check", "StepCheck"), "PartialCheck": ("check", "PartialCheck"),
    "ActivationCheck": ("check", "ActivationCheck"), "check": ("check", None),
    "reference": ("compiler.evaluator", "reference"), "Reference": ("compiler.evaluator", "Reference"),
    "rtrl": ("compiler.forward_mode", "rtrl"), "RTRL": ("compiler.forward_mode", "RTRL"),
    "cells": ("cells", None), "models": ("models", None),
    "from_torch": ("interop", "from_torch"), "to_torch": ("interop", "to_torch"),
    "export_c": ("compiler.export", "export_c"), "CExport": ("compiler.export", "CExport"),
    "torch": ("torch", None), "jax": ("jax", None),
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError("module 'rnncompiler' has no attribute %r" % name)
    module, attr = _LAZY[name]
    value = importlib.import_module("." + module, __name__)
    value = value if attr is None else getattr(value, attr)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


__all__ = ["CellError", "CompileError", "CacheSecurityError", "NonFiniteError", "Cell", "cell",
           "concat", "split", "step", "dropout", "zoneout", "elementwise", "activation", *_ACTIVATION_FUNCTIONS, "sum", "mean", "compile",
           "Kernel", "ForwardResult", "Gradients", "unroll", "set_num_threads", "get_num_threads",
           "gradient_flow", "GradientFlow"] + [n for n in _LAZY if n not in ("torch", "jax", "check")]
