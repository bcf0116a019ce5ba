"""Gradient-flow diagnostics: how large dL/ds_t is at every step t, for every state s —
the picture of vanishing and exploding gradients (Hochreiter 1991; Bengio et al. 1994).
Built on `Kernel.backward(..., state_grads=True)`; numpy only, matplotlib for the plot.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class GradientFlow:
    """norms[s][t] = ‖dL/ds_t‖ over all batch rows and units; per_row[s][t, b] the same
    for row b alone. s_t is the state after step t."""
    norms: dict
    per_row: dict
    seed: str

    def ratio(self, state=None):
        """‖dL/ds_0‖ / ‖dL/ds_{T-1}‖: far below 1 when gradients vanish, above when they
        explode (inf when the last is 0)."""
        n = self.norms[state or next(iter(self.norms))]
        return float(n[0] / n[-1]) if n[-1] else float("inf")

    def __str__(self):
        lines = ["gradient flow (%s): ‖dL/ds_t‖ by step t" % self.seed]
        for s, n in self.norms.items():
            lines.append("  %-6s %s" % (s, " ".join("%.2e" % v for v in n)))
        return "\n".join(lines)

    def plot(self, ax=None, label=None):
        """A log-scale plot of ‖dL/ds_t‖ against t, one line per state (needs matplotlib)."""
        try:
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("GradientFlow.plot needs matplotlib: pip install matplotlib") from None
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        for s, n in self.norms.items():
            name = s if label is None else "%s %s" % (label, s)
            if not np.any(n > 0):
                name += " (0 at every step)"
            # a zero norm has no place on a log axis: a gap in the line, not a point at
            # 1e-300 that would squash every other value into the top of the plot
            ax.semilogy(np.arange(len(n)), np.where(n > 0, n, np.nan), label=name)
        ax.set_xlabel("step t")
        ax.set_ylabel("‖dL/ds_t‖")
        ax.legend()
        return ax


def last_step_seed(output_size, T, B, lengths=None, dtype=np.float64):
    """d_outputs that are 1 at each row's last valid step and 0 elsewhere: the loss sees
    only the end of each sequence, so dL/ds_t shows how far back its gradient reaches."""
    d = np.zeros((T, B, output_size), dtype)
    last = np.full(B, T - 1) if lengths is None else np.asarray(lengths) - 1
    for b, t in enumerate(last):
        if t >= 0:
            d[t, b] = 1.0
    return d


def gradient_flow(kern, params, x, state0=None, lengths=None, d_outputs=None, d_states=None,
                  *, context=None, masks=None):
    """‖dL/ds_t‖ for every step and state of one forward+backward pass.

    Without d_outputs and d_states the loss is the sum of each row's last valid output
    (`last_step_seed`), the usual probe of how far back gradients reach. Returns a
    GradientFlow (`.norms`, `.per_row`, `.ratio()`, `.plot()`). A cell's masks are
    `masks` (those of a training run: its result's `.masks`) or at their expectations
    (the network as it predicts); `context` as for kern.forward.

        >>> flow = rc.gradient_flow(kern, params, x)        # doctest: +SKIP
        >>> flow.norms["h"].shape                           # doctest: +SKIP
        (100,)
    """
    res = kern.forward(params, x, state0, lengths, context=context, masks=masks,
                       training=False)
    T, B = res.outputs.shape[:2]
    seed = "given d_outputs/d_states"
    if d_outputs is None and d_states is None:
        d_outputs = last_step_seed(kern.output_size, T, B, lengths, kern.dtype)
        seed = "L = sum of each row's last valid output"
    g = kern.backward(res, d_outputs, d_states, state_grads=True)
    per_row = {s: np.sqrt(np.sum(np.asarray(v, np.float64) ** 2, axis=2))
               for s, v in g.states.items()}
    norms = {s: np.sqrt(np.sum(v ** 2, axis=1)) for s, v in per_row.items()}
    return GradientFlow(norms, per_row, seed)
