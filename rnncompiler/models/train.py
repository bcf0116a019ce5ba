"""Training: `fit` (the loop, with a progress bar and a loss history), `Progress`, and
`TBPTT`, truncated backpropagation through time over long streams."""
from __future__ import annotations

import itertools
import math
import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .layers import step_mask
from .optim import clip_grad_norm
from .tree import global_norm, tree_add


@dataclass
class History:
    """What `fit` returns: the loss and the gradient norm (before clipping) of every
    update, the mean loss of every epoch, and the seconds spent."""
    losses: list = field(default_factory=list)
    grad_norms: list = field(default_factory=list)
    epochs: list = field(default_factory=list)
    seconds: float = 0.0
    stopped: str = ""            # why training ended early ("time limit", "callback"), or ""

    def __str__(self):
        if not self.losses:
            return "no updates"
        k = max(1, len(self.losses) // 10)
        stopped = "; stopped: " + self.stopped if self.stopped else ""
        return ("%d updates in %.1f s; loss %.4f (first %d) -> %.4f (last %d)%s"
                % (len(self.losses), self.seconds, np.mean(self.losses[:k]), k,
                   np.mean(self.losses[-k:]), k, stopped))

    def smoothed(self, window=None):
        """Running mean of the losses over `window` updates (default 1/20 of them)."""
        loss = np.asarray(self.losses, np.float64)
        window = int(window or max(1, len(loss) // 20))
        if len(loss) < window:
            return loss
        return np.convolve(loss, np.ones(window) / window, mode="valid")

    def plot(self, ax=None, label=None, window=None):
        """The loss against the update, raw and smoothed (needs matplotlib), on `ax` (a
        matplotlib Axes) or a new figure; given a file name instead (`plot("loss.png")`),
        the figure is saved there and closed. Returns the Axes."""
        try:
            import matplotlib.pyplot as plt
        except ImportError:
            raise ImportError("History.plot needs matplotlib: pip install matplotlib") from None
        path = None
        if isinstance(ax, (str, os.PathLike)):
            path, ax = ax, None
        elif ax is not None and not hasattr(ax, "plot"):
            raise TypeError("ax: expected a matplotlib Axes or a file name to save the figure "
                            "to (e.g. \"loss.png\"), got %s" % type(ax).__name__)
        if ax is None:
            _, ax = plt.subplots(figsize=(6, 3.5))
        self._draw(ax, label, window)
        if path is not None:
            ax.figure.savefig(path, dpi=120, bbox_inches="tight")
            plt.close(ax.figure)
        return ax

    def _draw(self, ax, label, window):
        """The raw and smoothed loss curves on ax."""
        line, = ax.plot(self.losses, alpha=0.25)
        sm = self.smoothed(window)
        ax.plot(np.arange(len(sm)) + (len(self.losses) - len(sm)), sm, color=line.get_color(),
                label=label)
        ax.set_xlabel("update")
        ax.set_ylabel("loss")
        if label:
            ax.legend()


class Progress:
    """A one-line text progress bar: redrawn in place on a terminal (at most ten times a
    second), a plain line every tenth of the way (or every 10 s) elsewhere."""

    def __init__(self, total=None, stream=None, prefix="", width=24):
        self.total, self.prefix, self.width = total, prefix, width
        self.stream = sys.stderr if stream is None else stream
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.n, self.start, self._last, self._last_tenth = 0, time.perf_counter(), 0.0, -1

    def _line(self, metrics):
        elapsed = time.perf_counter() - self.start
        text = " ".join("%s %s" % (k, ("%.4f" % v) if isinstance(v, float) else v)
                        for k, v in metrics.items())
        if self.total:
            filled = int(self.width * min(self.n, self.total) / self.total)
            eta = elapsed / self.n * (self.total - self.n) if self.n else 0.0
            return "%s[%s%s] %d/%d %s  %.0fs<%.0fs" % (
                self.prefix, "#" * filled, "." * (self.width - filled), self.n, self.total,
                text, elapsed, eta)
        return "%s%d %s  %.0fs" % (self.prefix, self.n, text, elapsed)

    def update(self, n=1, **metrics):
        self.n += n
        now = time.perf_counter()
        if self.tty:
            if now - self._last >= 0.1 or self.n == self.total:
                self.stream.write("\r" + self._line(metrics) + "\x1b[K")
                self.stream.flush()
                self._last = now
            return
        tenth = int(10 * self.n / self.total) if self.total else -1
        due = tenth != self._last_tenth if self.total else now - self._last >= 10
        if due:
            self.stream.write(self._line(metrics) + "\n")
            self.stream.flush()
            self._last, self._last_tenth = now, tenth

    def close(self):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def _epoch_batches(batches, epoch, epochs):
    if callable(batches):
        return batches(epoch)
    if epochs != 1 and iter(batches) is batches:
        raise TypeError("batches: an iterator is used up after one epoch; pass a list, or a "
                        "function epoch -> iterable of batches, for epochs=%s" % epochs)
    return batches


def fit(loss_and_grads, params, optimizer, batches, *, epochs=1, clip=None, progress=True,
        time_limit=None, callback=None, stream=None):
    """Train in place: for every batch (a tuple), `loss, grads = loss_and_grads(params,
    *batch)`, clip grads to global norm `clip` (if given), `optimizer.step(params, grads)`.

    `batches` is a sequence re-read each epoch, or a function `epoch -> iterable`;
    `epochs=None` repeats until `time_limit` or `callback` stops training.
    `time_limit` (seconds) stops after the update that crosses it; `callback(update, loss,
    params)` runs after every update and stops training by returning True. A non-finite
    loss raises FloatingPointError. Returns a `History`.
    """
    if epochs is None and time_limit is None and callback is None:
        raise ValueError("epochs: None (train until stopped) needs a time_limit or a callback")
    hist, start = History(), time.perf_counter()
    total = None
    if epochs is not None and not callable(batches) and hasattr(batches, "__len__"):
        total = len(batches) * epochs
    bar = Progress(total, stream) if progress else None
    try:
        for epoch in (range(epochs) if epochs is not None else itertools.count()):
            epoch_losses, epoch_batches = [], _epoch_batches(batches, epoch, epochs)
            if bar and bar.total is None and epochs and hasattr(epoch_batches, "__len__"):
                bar.total = len(epoch_batches) * epochs
            for batch in epoch_batches:
                batch = batch if isinstance(batch, tuple) else (batch,)
                loss, grads = loss_and_grads(params, *batch)
                if not math.isfinite(loss):
                    raise FloatingPointError(
                        "fit: the loss is %r at update %d (epoch %d); try a smaller learning "
                        "rate or clip=1.0" % (loss, len(hist.losses), epoch))
                norm = clip_grad_norm(grads, clip) if clip else global_norm(grads)
                optimizer.step(params, grads)
                hist.losses.append(float(loss))
                hist.grad_norms.append(float(norm))
                epoch_losses.append(float(loss))
                if bar:
                    bar.update(1, epoch=epoch, loss=float(loss))
                if callback is not None and callback(len(hist.losses), loss, params):
                    hist.stopped = "callback"
                elif time_limit is not None and time.perf_counter() - start >= time_limit:
                    hist.stopped = "time limit"
                if hist.stopped:
                    break
            if epoch_losses:
                hist.epochs.append(float(np.mean(epoch_losses)))
            if hist.stopped:
                break
    finally:
        hist.seconds = time.perf_counter() - start
        if bar:
            bar.close()
    return hist


class TBPTT:
    """Truncated BPTT(k1, k2) (Williams & Peng 1990) for a unidirectional "steps" model over
    streams x (N, B, ...) with targets (N, B, ...): an update every k1 steps, whose
    gradient is that of the loss on those k1 steps, back-propagated through the last k2
    steps (k2 >= k1). The state at the start of each window is carried over from the
    previous window's forward pass and treated as a constant; k1 = k2 = N is full BPTT.

    Use with `fit`:  ``tb = TBPTT(model, 50); fit(tb.loss_and_grads, params, opt,
    lambda epoch: tb.windows(x, y), epochs=5)``. Each window costs one forward and one
    backward per layer when k1 = k2, two when k2 > k1 (split where the next window starts,
    to keep the state there).
    """

    def __init__(self, model, k1, k2=None, *, state0=None, train=False, rng=None):
        k2 = k1 if k2 is None else k2
        for name, k in (("k1", k1), ("k2", k2)):
            if not isinstance(k, (int, np.integer)) or k < 1:
                raise ValueError("%s: expected an int >= 1, got %r" % (name, k))
        if k2 < k1:
            raise ValueError("k2: expected k2 >= k1 (every update back-propagates at least "
                             "through the k1 steps whose loss it takes), got k1=%d, k2=%d"
                             % (k1, k2))
        if getattr(model, "batch_first", False):
            raise ValueError("model: truncated BPTT cuts streams (N, B, ...) along their first "
                             "axis; build the model with batch_first=False")
        if model.rnn.bidirectional or model.readout != "steps":
            raise ValueError("model: truncated BPTT needs a unidirectional model with "
                             "readout='steps' (it reads streams forwards, one window at a time)")
        self.model, self.k1, self.k2 = model, int(k1), int(k2)
        self.state0, self.train, self.rng = state0, train, rng
        self.state = None          # the carried state at the next window's start

    def windows(self, x, targets):
        """A list of batches, one per update, of views of x and targets:
        (x[w:t], targets[w:t], loss_from, split, first) with t the update's end,
        w = max(0, t - k2) the window start, loss_from the first step of the k1 whose loss
        counts and split where the next window starts (both relative to w)."""
        N = len(x)
        if len(targets) != N:
            raise ValueError("targets: expected %d steps (those of x), got %d" % (N, len(targets)))
        n_updates = -(-N // self.k1)
        out = []
        for n in range(n_updates):
            t, w = min((n + 1) * self.k1, N), max(0, min((n + 1) * self.k1, N) - self.k2)
            w_next = t if n + 1 == n_updates else max(0, min((n + 2) * self.k1, N) - self.k2)
            out.append((x[w:t], targets[w:t], n * self.k1 - w, w_next - w, n == 0))
        return out

    def loss_and_grads(self, params, x, targets, loss_from, split, first):
        """The loss on steps [loss_from, len(x)) of the window and its gradients; keeps the
        state at `split` for the next window."""
        model, kw = self.model, {"train": self.train, "rng": self.rng}
        s0 = self.state0 if first else self.state
        parts, state = [], s0
        for a, b in ((0, split), (split, len(x))):
            if b > a:
                parts.append(model.forward(params, x[a:b], state0=state, **kw))
                state = parts[-1].states
            if b == split:
                self.state = state
        preds = np.concatenate([r.predictions for r in parts])
        mask = (np.arange(len(x)) >= loss_from)[:, None] * step_mask(None, *preds.shape[:2])
        loss, d_pred = _loss_fn(model)(preds, targets, mask.astype(preds.dtype))
        grads, d_states, end = None, None, len(x)
        for res in reversed(parts):
            n = len(res.predictions)
            g = model.backward(res, d_pred[end - n:end], d_states)
            grads = g.params if grads is None else tree_add(grads, g.params)
            d_states, end = g.state0, end - n
        return loss, grads


def _loss_fn(model):
    from .model import LOSSES
    fn = LOSSES[model.loss_name]
    if fn is None:
        raise ValueError("model: truncated BPTT trains a model with a loss; this one has loss=None")
    return fn
