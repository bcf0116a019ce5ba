"""The columns of a kernel's input row: per-step inputs, per-sequence context inputs and
random masks, side by side in one row x_t of the compiled C (the C signature has one x).

A cell with one input and nothing else has one column block, x itself, and none of this
costs anything. Otherwise `Columns.assemble` builds the C's rows from what the caller
gives (the per-step inputs, each context repeated at every step, the masks drawn from a
seed or their expectations), and `Columns.split_dx` turns the C's dL/dx rows back into
the gradients of the inputs and of the contexts (summed over time).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Mask:
    """A random input: each unit is `scale` with probability `keep`, else 0; drawn once per
    sequence (per="sequence": the same at every step) or anew at every step (per="step").
    At inference it is its expectation keep*scale. kind: "dropout" or "zoneout"."""
    name: str
    size: int
    per: str
    kind: str
    rate: float

    @property
    def keep(self):
        """Probability that a unit of the mask is non-zero."""
        return 1.0 - self.rate if self.kind == "dropout" else self.rate

    @property
    def scale(self):
        """The value of a unit that is kept: 1/(1-rate) for dropout (inverted dropout, so
        that the expectation is 1), 1 for zoneout."""
        return 1.0 / (1.0 - self.rate) if self.kind == "dropout" else 1.0

    @property
    def expectation(self):
        return self.keep * self.scale


@dataclass(frozen=True)
class Columns:
    """The blocks of an input row in order: inputs ((name, size), ...), then context
    ((name, size), ...), then masks (Mask, ...)."""
    inputs: tuple
    context: tuple = ()
    masks: tuple = ()

    @classmethod
    def from_meta(cls, d):
        if not d:
            return None
        return cls(tuple((n, int(s)) for n, s in d["inputs"]),
                   tuple((n, int(s)) for n, s in d["context"]),
                   tuple(Mask(*m) for m in d["masks"]))

    def to_meta(self):
        return {"inputs": [list(c) for c in self.inputs],
                "context": [list(c) for c in self.context],
                "masks": [[m.name, m.size, m.per, m.kind, m.rate] for m in self.masks]}

    @property
    def step_width(self):
        """Units of the per-step inputs: the last axis of x."""
        return sum(n for _, n in self.inputs)

    @property
    def width(self):
        """Units of the C's input row."""
        return (self.step_width + sum(n for _, n in self.context)
                + sum(m.size for m in self.masks))

    @property
    def plain(self):
        """Only per-step inputs: the C's rows are x itself."""
        return not self.context and not self.masks

    def blocks(self):
        """(name, first column, size, kind) of every block, kind input/context/mask."""
        out, col = [], 0
        for kind, items in (("input", self.inputs), ("context", self.context),
                            ("mask", [(m.name, m.size) for m in self.masks])):
            for name, n in items:
                out.append((name, col, n, kind))
                col += n
        return out

    # ------------------------------------------------------------ per-step inputs

    def step_inputs(self, x, batch_first, dtype):
        """x as one array (T, B, step_width), time-major, from an array of that width or a
        dict input name -> (T, B, size)."""
        if not isinstance(x, dict):
            return None
        unknown = [k for k in x if k not in dict(self.inputs)]
        if unknown:
            raise KeyError("x: unknown input %r; this cell's per-step inputs are %s"
                           % (unknown[0], [n for n, _ in self.inputs]))
        missing = [(name, n) for name, n in self.inputs if name not in x]
        if missing:
            raise KeyError("x: missing input %r (%d units per step); the cell's per-step "
                           "inputs are %s" % (*missing[0], [m for m, _ in self.inputs]))
        parts = []
        for name, n in self.inputs:
            a = np.asarray(x[name])
            if not np.can_cast(a.dtype, dtype, casting="same_kind"):
                raise TypeError("x[%r]: expected real numbers convertible to %s, got dtype %s"
                                % (name, np.dtype(dtype).name, a.dtype))
            if a.ndim != 3 or a.shape[2] != n:
                raise ValueError("x[%r]: expected shape (%s, %d), got %s"
                                 % (name, "B, T" if batch_first else "T, B", n, a.shape))
            parts.append(a)
        shapes = {a.shape[:2] for a in parts}
        if len(shapes) > 1:
            raise ValueError("x: the inputs disagree on (%s): %s" % (
                "B, T" if batch_first else "T, B",
                {name: a.shape[:2] for (name, _), a in zip(self.inputs, parts)}))
        return np.concatenate(parts, axis=2)

    # ------------------------------------------------------------ the C's rows

    def assemble(self, x, context, masks, dtype):
        """The C's rows (T, B, width) from x (T, B, step_width), the context dict and the
        masks dict (every mask given)."""
        T, B = x.shape[:2]
        if self.plain:
            return x
        rows = np.empty((T, B, self.width), dtype)
        rows[:, :, :self.step_width] = x
        col = self.step_width
        for name, n in self.context:
            rows[:, :, col:col + n] = context[name][None]
            col += n
        for m in self.masks:
            rows[:, :, col:col + m.size] = masks[m.name] if m.per == "step" else masks[m.name][None]
            col += m.size
        return rows

    def check_context(self, context, B, dtype):
        """name -> (B, size) array of the context dict, every context given."""
        if self.context and context is None:
            raise ValueError("context: this cell takes per-sequence inputs %s; pass "
                             "context={%s}" % ([n for n, _ in self.context], ", ".join(
                                 "%r: array (B, %d)" % c for c in self.context)))
        if context is None:
            return {}
        if not isinstance(context, dict):
            raise TypeError("context: expected a dict name -> array, got %s"
                            % type(context).__name__)
        known = dict(self.context)
        unknown = [k for k in context if k not in known]
        if unknown:
            raise KeyError("context: unknown context input %r; this cell has %s"
                           % (unknown[0], list(known) or "none"))
        out = {}
        for name, n in self.context:
            if name not in context:
                raise KeyError("context: missing %r, an array (B, %d) or (%d,)" % (name, n, n))
            a = np.asarray(context[name])
            if not np.can_cast(a.dtype, dtype, casting="same_kind"):
                raise TypeError("context[%r]: expected real numbers convertible to %s, got "
                                "dtype %s" % (name, np.dtype(dtype).name, a.dtype))
            if a.shape not in ((B, n), (n,)):
                raise ValueError("context[%r]: expected shape (%d, %d) or (%d,), got %s"
                                 % (name, B, n, n, a.shape))
            out[name] = np.broadcast_to(a.astype(dtype, copy=False), (B, n))
        return out

    def check_masks(self, masks, T, B, dtype):
        """name -> array of a dict of masks given by the caller (every mask of the cell):
        (B, size) per sequence, (T, B, size) per step (time-major, as draw_masks gives
        them, also when x is batch-first)."""
        if not isinstance(masks, dict):
            raise TypeError("masks: expected a dict name -> array (as draw_masks returns), "
                            "got %s" % type(masks).__name__)
        known = {m.name: m for m in self.masks}
        unknown = [k for k in masks if k not in known]
        if unknown:
            raise KeyError("masks: unknown mask %r; this cell has %s"
                           % (unknown[0], list(known) or "none"))
        out = {}
        for m in self.masks:
            if m.name not in masks:
                raise KeyError("masks: missing %r; pass every mask (kern.draw_masks gives "
                               "them all)" % m.name)
            a = np.asarray(masks[m.name])
            want = (T, B, m.size) if m.per == "step" else (B, m.size)
            if a.shape != want or a.dtype.kind not in "biuf":
                raise ValueError("masks[%r]: expected real numbers of shape %s, got %s %s"
                                 % (m.name, want, a.dtype, a.shape))
            out[m.name] = np.ascontiguousarray(a, dtype=dtype)
        return out

    def draw_masks(self, T, B, seed, dtype):
        """Every mask drawn at random: deterministic for an int seed (numpy's PCG64)."""
        rng = np.random.default_rng(seed)
        out = {}
        for m in self.masks:
            shape = (T, B, m.size) if m.per == "step" else (B, m.size)
            out[m.name] = ((rng.random(shape) < m.keep) * m.scale).astype(dtype)
        return out

    def expected_masks(self, T, B, dtype):
        """Every mask at its expectation: the cell at inference."""
        return {m.name: np.full((T, B, m.size) if m.per == "step" else (B, m.size),
                                m.expectation, dtype) for m in self.masks}

    def rows(self, x, B, context, masks, seed, training, dtype):
        """(the C's rows, the masks used or None) from time-major x (T, B, step_width):
        the masks given, else drawn from `seed` in training, else their expectations. A
        plain cell's rows are x itself (a context or masks given to it are refused by
        name)."""
        T = x.shape[0]
        ctx = self.check_context(context, B, dtype)
        used = None
        if masks is not None:
            used = self.check_masks(masks, T, B, dtype)
        elif self.masks:
            used = (self.draw_masks(T, B, seed, dtype) if training
                    else self.expected_masks(T, B, dtype))
        return (x if self.plain else self.assemble(x, ctx, used, dtype)), used

    # ------------------------------------------------------------ gradients

    def split_dx(self, dx):
        """(dL/dx (T, B, step_width), context name -> dL/dcontext (B, size)) from the C's
        dL/d(rows): a context's gradient is the sum of its columns over every step."""
        if self.plain:
            return dx, {}
        dctx, col = {}, self.step_width
        for name, n in self.context:
            dctx[name] = dx[:, :, col:col + n].sum(axis=0)
            col += n
        return np.ascontiguousarray(dx[:, :, :self.step_width]), dctx

    def split_inputs(self, dx):
        """input name -> its (T, B, size) part of dL/dx (views)."""
        out, col = {}, 0
        for name, n in self.inputs:
            out[name] = dx[..., col:col + n]
            col += n
        return out


def row_view(obj):
    """A copy of a kernel-like object (Kernel, Reference) as the C sees it: x is the whole
    input row, every input, context and mask side by side, and backward's x its gradient."""
    import copy
    width = obj.columns.width
    view = copy.copy(obj)
    view.columns = Columns((("x", width),))
    view.input_size, view.inputs, view.context, view.masks = width, {"x": width}, {}, {}
    return view
