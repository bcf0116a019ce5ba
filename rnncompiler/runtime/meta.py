"""What a compiled kernel carries about its cell besides the binary, as plain values read
from its manifest: the derived equations and how each state recurs. The compiler makes
them (rnncompiler.compiler.equations, .recurrence); a kernel loaded from the cache shows
them without importing the compiler.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

KINDS = ("diagonal-linear", "linear", "nonlinear")


@dataclass(frozen=True)
class Equations:
    """forward/backward: tuples of (lhs, op, rhs) text; *_latex the same in LaTeX."""
    forward: tuple
    backward: tuple
    forward_latex: tuple
    backward_latex: tuple

    def __str__(self):
        out = ["Forward (step t):"]
        out += ["  %s %s %s" % eq for eq in self.forward]
        out += ["", "Backward (step t = T-1 down to 0; δv = dL/dv; δs[t]⁺ is the adjoint of "
                "state s carried back from step t+1, dL/ds[T-1] at the last step):"]
        out += ["  %s %s %s" % eq for eq in self.backward]
        return "\n".join(out)

    def as_dict(self):
        """Plain lists of strings, for the kernel's JSON manifest."""
        return {k: [list(eq) for eq in getattr(self, k)] for k in
                ("forward", "backward", "forward_latex", "backward_latex")}

    @classmethod
    def from_dict(cls, d):
        return cls(**{k: tuple(tuple(eq) for eq in v) for k, v in d.items()})

    def latex(self):
        """Both systems as LaTeX align environments."""
        def block(eqs):
            rows = [r"%s &%s %s" % (l, "=" if op == "=" else r"\mathrel{+}=", r) for l, op, r in eqs]
            return "\\begin{align*}\n" + " \\\\\n".join(rows) + "\n\\end{align*}"
        return "Forward:\n%s\nBackward:\n%s" % (block(self.forward_latex),
                                                block(self.backward_latex))



class Recurrence(NamedTuple):
    """How one state's new value depends on the states at t-1 (kind is one of KINDS)."""
    kind: str
    reason: str

    def __str__(self):
        return "%s: %s" % (self.kind, self.reason)


def to_meta(classes):
    """[[state, kind, reason], ...]: the JSON form kept in the kernel's manifest."""
    return [[s, r.kind, r.reason] for s, r in classes.items()]


def from_meta(rows):
    """state -> Recurrence from the manifest form."""
    return {s: Recurrence(kind, reason) for s, kind, reason in rows}
