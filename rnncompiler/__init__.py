"""rnncompiler: write a recurrent cell's equations in Python; get compiled forward and
backward-through-time kernels over whole sequences on numpy arrays.

    >>> import rnncompiler as rc
    >>> @rc.cell(states=("h",))
    ... def elman(x, h, p):
    ...     return {"h": rc.tanh(p.linear("W", rc.concat(h, x), bias="b"))}
    >>> elman.states
    {'h': 'H'}
"""
from .errors import CellError, CompileError, CacheSecurityError, NonFiniteError
from .dsl import (Cell, cell, concat, elementwise, activation, sigmoid, tanh, relu, exp, log,
                  softplus, softsign, hard_sigmoid, clip, sum, mean)
from .pipeline import compile, VERSION as __version__
from .kernel import Kernel, ForwardResult, Gradients
from .unroll import unroll
from .check import gradcheck, GradcheckReport, StepCheck, PartialCheck, ActivationCheck
from .reference import reference, Reference
from .rtrl import rtrl, RTRL
from .threads import set_num_threads, get_num_threads
from .diagnostics import gradient_flow, GradientFlow
from . import cells
from .interop import from_torch, to_torch
from . import models
from .export import export_c, CExport

__all__ = ["CellError", "CompileError", "CacheSecurityError", "NonFiniteError", "Cell", "cell",
           "concat", "elementwise", "activation", "sigmoid", "tanh", "relu", "exp", "log",
           "softplus", "softsign", "hard_sigmoid", "clip", "sum", "mean", "compile", "Kernel",
           "ForwardResult", "Gradients", "unroll", "gradcheck", "GradcheckReport",
           "set_num_threads", "get_num_threads", "gradient_flow", "GradientFlow",
           "cells", "from_torch", "to_torch",
           "StepCheck", "PartialCheck", "ActivationCheck", "reference", "Reference", "rtrl",
           "RTRL", "export_c", "CExport"]
