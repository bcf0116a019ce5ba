"""Losses as (value, gradient) pairs, numerically stable: softmax cross-entropy through
log-sum-exp (finite for any finite logits) and mean squared error, each averaged over the
entries a mask keeps (the valid steps of variable-length sequences)."""
from __future__ import annotations

import numpy as np


def log_softmax(z, axis=-1):
    """log softmax(z) = z - logsumexp(z), shifted by the max so exp never overflows."""
    shifted = z - np.max(z, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax(z, axis=-1):
    return np.exp(log_softmax(z, axis))


def _weights(name, mask, shape, dtype):
    if mask is None:
        return np.ones(shape, dtype)
    w = np.asarray(mask, dtype)
    if w.shape != tuple(shape):
        raise ValueError("%s: expected a mask of shape %s, got %s" % (name, tuple(shape), w.shape))
    return w


def cross_entropy(logits, targets, mask=None):
    """Softmax cross-entropy of logits (..., V) against integer targets (...), averaged
    over the entries with non-zero `mask` (..., weights; default all): torch's
    F.cross_entropy with the masked entries ignored. Returns (value, dL/dlogits).

        >>> value, grad = cross_entropy(np.array([[2.0, 0.0]]), np.array([0]))
        >>> round(value, 4), grad.shape
        (0.1269, (1, 2))
    """
    logits = np.asarray(logits)
    targets = np.asarray(targets)
    if targets.dtype.kind not in "iu":
        raise TypeError("targets: expected integer class ids, got dtype %s" % targets.dtype)
    if logits.shape[:-1] != targets.shape:
        raise ValueError("targets: expected shape %s (logits %s without the class axis), got %s"
                         % (logits.shape[:-1], logits.shape, targets.shape))
    V = logits.shape[-1]
    if targets.size and (targets.min() < 0 or targets.max() >= V):
        raise ValueError("targets: class ids must be in [0, %d), got min %d max %d"
                         % (V, targets.min(), targets.max()))
    w = _weights("mask", mask, targets.shape, logits.dtype)
    logp = log_softmax(logits)
    nll = -np.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    n = float(w.sum())
    if n == 0:
        return 0.0, np.zeros_like(logits)
    grad = np.exp(logp)
    np.put_along_axis(grad, targets[..., None],
                      np.take_along_axis(grad, targets[..., None], axis=-1) - 1, axis=-1)
    grad *= (w / n)[..., None]
    return float(np.sum(nll * w) / n), grad


def mse(predictions, targets, mask=None):
    """Mean squared error over every kept element: predictions and targets (..., O), mask
    (...) weights per row of O values (default all). torch's MSELoss (mean) when no mask.
    Returns (value, dL/dpredictions)."""
    predictions = np.asarray(predictions)
    targets = np.asarray(targets)
    if targets.shape != predictions.shape:
        raise ValueError("targets: expected shape %s (that of the predictions), got %s"
                         % (predictions.shape, targets.shape))
    w = _weights("mask", mask, predictions.shape[:-1], predictions.dtype)[..., None]
    n = float(w.sum()) * predictions.shape[-1]
    if n == 0:
        return 0.0, np.zeros_like(predictions)
    # entries the mask drops are 0 even where a padded target is NaN or inf
    err = np.where(w != 0, predictions - targets, 0)
    return float(np.sum(w * err * err) / n), (2.0 / n) * w * err
