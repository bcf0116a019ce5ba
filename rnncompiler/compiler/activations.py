"""The activation table: every built-in elementwise function of the cell language is one
`Activation` row of TABLE, and everything else about it is generated from that row: the
cell-language function rc.<name> (dsl.py), the sympy Function class with its derivative
and printed forms, the C helper and the numpy form (mathfn.py), the list of activations
whose derivative reads their saved output (codegen/layout.py), the documentation's
tables (docs/gen_activations.py) and the tests that iterate over the table.

This module imports neither sympy nor the compiler: declaring a cell reads the names and
docs here, and the sympy texts are parsed only when a kernel is compiled (mathfn.py).
docs/adding-an-op.md says what a new row needs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np


@dataclass(frozen=True)
class Activation:
    """One built-in elementwise function.

    The sympy texts (forward, derivative, where) are parsed with sympy's names (exp, tanh,
    Abs, Piecewise, pi, ...), the table's own functions by their sympy_name (Sigmoid,
    Softplus, Clip, ...), u the argument, y the function's value at u, the bound names and
    the `where` names. The C body is the body of `static inline real rnnc_<sympy_name
    lowercased>(real u)`, with EXP, LOG1P, FABS, FMAX, FMIN and CBRT for the math
    functions (the kernels' own exp and log1p in fast-math builds), EXP_NONPOS for exp of an
    argument <= 0 (-|u|: the kernels' has fewer clamps) and `real` the type.
    """
    name: str                    # rc.<name>, the text in error messages and docs
    sympy_name: str              # the traced call's name and the sympy Function class's
    forward: str                 # the value, as sympy text in u (and the bounds)
    derivative: str              # d/du as sympy text in u and y: through y where cheaper
    doc: str                     # the docstring of rc.<name>
    value_doc: str               # Markdown: the value, for the docs' tables
    derivative_doc: str          # Markdown: the derivative used, for the docs' tables
    c_body: Optional[str] = None       # None: sympy's own C (builtin) or a runtime helper (Clip)
    numpy: Optional[Callable] = None   # the reference's numpy form; None: the forward, lambdified
    torch: Optional[Callable] = None   # (torch, u, *bounds) -> the same function in torch, for tests
    latex: Optional[str] = None        # LaTeX with %(arg)s and %(power)s; None: sympy's
    symbol: Optional[str] = None       # the name in printed equations (σ); None: the class name
    text: Optional[str] = None         # the printed form when not symbol(u): max(%(arg)s, 0)
    output_differentiable: bool = False   # the derivative reads y only: the output is saved
    builtin: bool = False        # sympy's own function (tanh, exp, log), printed by sympy
    public: bool = True          # rc.<name> exists (Cbrt is only the compiler's)
    bounds: tuple = ()           # ((name, example value), ...): constant arguments after u
    where: tuple = ()            # ((name, sympy text), ...): subexpressions of the texts
    domain: tuple = (-math.inf, math.inf)   # the open interval where it is defined
    kinks: tuple = ()            # where the derivative jumps (besides the bounds)

    @property
    def helper(self):
        """The C helper's name without the float32 suffix, e.g. rnnc_sigmoid."""
        return "rnnc_" + self.sympy_name.lower()

    @property
    def signature(self):
        """How the docs write a call: rc.clip(v, lo, hi)."""
        return "rc.%s(%s)" % (self.name, ", ".join(("v",) + tuple(b for b, _ in self.bounds)))


TABLE = (
    Activation(
        "sigmoid", "Sigmoid", forward="1/(1 + exp(-u))", derivative="y*(1 - y)",
        doc="The logistic sigmoid σ(u) = 1/(1 + e^-u) of each element of a vector.",
        value_doc="σ(u) = 1 / (1 + e^−u)", derivative_doc="σ(u)(1 − σ(u))",
        # one division of e or 1 (chosen while e + 1 is added): a step at batch 1 waits
        # on it, and a multiply after the division would add its latency
        c_body="const real e = EXP_NONPOS(-FABS(u)); return (u >= 0 ? 1 : e) / (1 + e);",
        numpy=lambda u: np.where(u >= 0, 1 / (1 + np.exp(-np.abs(u))),
                                 np.exp(-np.abs(u)) / (1 + np.exp(-np.abs(u)))),
        torch=lambda torch, u: torch.sigmoid(u),
        latex=r"\sigma%(power)s\left(%(arg)s\right)", symbol="σ", output_differentiable=True),
    Activation(
        "tanh", "tanh", forward="tanh(u)", derivative="1 - y**2", builtin=True,
        doc="tanh of each element of a vector.",
        value_doc="tanh u", derivative_doc="1 − tanh² u",
        torch=lambda torch, u: torch.tanh(u), output_differentiable=True),
    Activation(
        "exp", "exp", forward="exp(u)", derivative="y", builtin=True,
        doc="e^u of each element of a vector (inf beyond the type's range, as numpy).",
        value_doc="e^u", derivative_doc="e^u",
        torch=lambda torch, u: torch.exp(u), output_differentiable=True),
    Activation(
        "log", "log", forward="log(u)", derivative="1/u", builtin=True, domain=(0.0, math.inf),
        doc="The natural logarithm of each element of a vector (NaN below 0, -inf at 0).",
        value_doc="ln u (NaN for u < 0, −inf at 0, as numpy)", derivative_doc="1/u",
        torch=lambda torch, u: torch.log(u)),
    Activation(
        "softplus", "Softplus", forward="log(1 + exp(u))", derivative="Sigmoid(u)",
        doc="softplus(u) = log(1 + e^u) of each element of a vector, without overflow.",
        value_doc="ln(1 + e^u), computed as max(u, 0) + log1p(e^−\\|u\\|)",
        derivative_doc="σ(u)",
        c_body="return (u > 0 ? u : 0) + LOG1P(EXP_NONPOS(-FABS(u)));",
        numpy=lambda u: np.maximum(u, 0) + np.log1p(np.exp(-np.abs(u))),
        torch=lambda torch, u: torch.nn.functional.softplus(u),
        latex=r"\operatorname{softplus}%(power)s\left(%(arg)s\right)"),
    Activation(
        "softsign", "Softsign", forward="u/(1 + Abs(u))", derivative="1/(1 + Abs(u))**2",
        doc="softsign(u) = u/(1 + |u|) of each element of a vector.",
        value_doc="u / (1 + \\|u\\|)", derivative_doc="1 / (1 + \\|u\\|)²",
        c_body="return u / (1 + FABS(u));",
        numpy=lambda u: u / (1 + np.abs(u)),
        torch=lambda torch, u: torch.nn.functional.softsign(u)),
    Activation(
        "hard_sigmoid", "HardSigmoid", forward="Min(Max(u/6 + 1/2, 0), 1)",
        derivative="Piecewise((1/6, (u > -3) & (u < 3)), (0, True))", kinks=(-3.0, 3.0),
        doc="PyTorch's hardsigmoid, clip(u/6 + 1/2, 0, 1), of each element of a vector.",
        value_doc="clip(u/6 + 1/2, 0, 1), PyTorch's `hardsigmoid`",
        derivative_doc="**1/6 on the open interval (−3, 3)**, 0 elsewhere (0 at ±3)",
        c_body="const real v = u / 6 + (real)0.5; return v < 0 ? 0 : (v > 1 ? 1 : v);",
        numpy=lambda u: np.clip(u / 6 + 0.5, 0, 1),
        torch=lambda torch, u: torch.nn.functional.hardsigmoid(u)),
    Activation(
        "relu", "Relu", forward="Max(u, 0)", derivative="Piecewise((1, u > 0), (0, True))",
        kinks=(0.0,), text="max(%(arg)s, 0)",
        doc="max(u, 0) of each element of a vector (NaN stays NaN); relu'(0) = 0.",
        value_doc="max(u, 0)", derivative_doc="1 for u > 0, else 0: **relu′(0) = 0**",
        c_body="return u <= 0 ? 0 : u;",        # NaN stays NaN, as in numpy and torch
        numpy=lambda u: np.where(u > 0, u, np.where(u != u, u, 0.0)),   # +0 below, as C
        torch=lambda torch, u: torch.relu(u)),
    Activation(
        "clip", "Clip", forward="Min(Max(u, lo), hi)",
        derivative="Piecewise((1, (u >= lo) & (u <= hi)), (0, True))",
        bounds=(("lo", -1.0), ("hi", 2.0)),
        doc="clip(v, lo, hi) with constant bounds; derivative 1 on [lo, hi] (torch.clamp's).",
        value_doc="min(max(u, lo), hi), constant bounds, lo ≤ hi",
        derivative_doc="**1 on the closed interval [lo, hi]**, 0 outside — like `torch.clamp`",
        numpy=lambda u, lo, hi: np.minimum(np.maximum(u, lo), hi),   # its C: the runtime's
        torch=lambda torch, u, lo, hi: torch.clamp(u, lo, hi)),
    Activation(
        "cbrt", "Cbrt", forward="Piecewise((u**(1/3), u >= 0), (-(-u)**(1/3), True))", derivative="1/(3*y**2)", public=False,
        kinks=(0.0,),
        doc="The real cube root (-2 at -8), as C's cbrt and numpy's: sympy's u**(1/3) is the "
            "principal (complex) root, and mathfn.real_roots rewrites it into this function.",
        value_doc="∛u, real (−2 at −8)", derivative_doc="1 / (3 ∛u²)",
        c_body="return CBRT(u);", numpy=np.cbrt,
        torch=lambda torch, u: torch.sign(u) * torch.abs(u) ** (1 / 3),
        latex=r"\sqrt[3]{%(arg)s}%(power)s", symbol="cbrt"),
    Activation(
        "gelu", "Gelu", forward="u*Sigmoid(w)",
        derivative="Sigmoid(w)*(1 + (1 - Sigmoid(w))*v*sqrt(8/pi)*(1 + 3*0.044715*v**2))",
        # v: u clipped where σ(w)(1 - σ(w)) is 0 in float64 already, so that u³ cannot
        # overflow to inf and meet that 0
        where=(("w", "sqrt(8/pi)*(u + 0.044715*u**3)"), ("v", "Clip(u, -30, 30)")),
        doc="GELU in its tanh approximation, u σ(√(8/π)(u + 0.044715 u³)) = "
            "u/2 (1 + tanh(√(2/π)(u + 0.044715 u³))), of each element of a vector.",
        value_doc="u σ(w) = ½u(1 + tanh(w/2)), w = √(8/π)(u + 0.044715u³): "
                  "PyTorch's `gelu(approximate=\"tanh\")`",
        derivative_doc="σ(w)(1 + u w′(u)(1 − σ(w))), w′(u) = √(8/π)(1 + 0.134145u²); u w′(u) "
                       "read at u clipped to ±30, where σ(w)(1 − σ(w)) is 0 already: no overflow",
        c_body="const real w = (real)1.5957691216057308 * (u + (real)0.044715 * u * u * u); "
               "const real e = EXP_NONPOS(-FABS(w)), s = 1 / (1 + e); return u * (w >= 0 ? s : e * s);",
        torch=lambda torch, u: torch.nn.functional.gelu(u, approximate="tanh")),
    Activation(
        "mish", "Mish", forward="u*tanh(Softplus(u))",
        derivative="tanh(Softplus(u)) + u*Sigmoid(u)*(1 - tanh(Softplus(u))**2)",
        doc="mish(u) = u tanh(softplus(u)) of each element of a vector.",
        value_doc="u tanh(softplus(u))", derivative_doc="t + u σ(u)(1 − t²), t = tanh(softplus(u))",
        # tanh(log(1 + e^u)) = n/(n + 2), n = e^u (e^u + 2): one exp of -|u|, no overflow
        c_body="const real e = EXP_NONPOS(-FABS(u)); const real n = u >= 0 ? 1 + 2 * e : e * (e + 2); "
               "const real d = u >= 0 ? n + 2 * e * e : n + 2; return u * (n / d);",
        torch=lambda torch, u: torch.nn.functional.mish(u)),
)

BY_NAME = {row.name: row for row in TABLE}
BY_SYMPY_NAME = {row.sympy_name: row for row in TABLE}
