"""The non-recurrent pieces of a sequence model, in numpy: the linear map, the embedding
table, inverted dropout, and reversing each sequence within its own length."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..runtime import kernel


def check_lengths(lengths, T, B):
    """lengths as an int64 array (B,) in [0, T], or None."""
    arr = kernel.check_lengths(lengths, T, B)
    return None if arr is None else arr.astype(np.int64)


def step_mask(lengths, T, B, dtype=np.float64):
    """(T, B) weights: 1 where step t of row b is valid (t < lengths[b]), else 0."""
    if lengths is None:
        return np.ones((T, B), dtype)
    return (np.arange(T)[:, None] < np.asarray(lengths)[None, :]).astype(dtype)


def reversal_index(lengths, T, B):
    """(T, B) time indices that reverse the first lengths[b] steps of each row b and keep
    the rest in place; the permutation is its own inverse."""
    t = np.arange(T)[:, None]
    if lengths is None:
        return np.broadcast_to(T - 1 - t, (T, B))
    L = np.asarray(lengths)[None, :]
    return np.where(t < L, L - 1 - t, t)


def reverse_steps(a, index):
    """a (T, B, ...) with each row's valid steps reversed (see `reversal_index`)."""
    return a[index, np.arange(a.shape[1])[None, :]]


def dropout_mask(rng, shape, rate, dtype):
    """Inverted dropout: 0 with probability `rate`, else 1/(1-rate)."""
    keep = rng.random(shape) >= rate
    return keep.astype(dtype) / np.asarray(1.0 - rate, dtype)


def as_rng(rng):
    """A numpy Generator from a Generator, an int seed or None (fresh entropy)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise TypeError("rng: expected a numpy.random.Generator or an int seed, got %s"
                    % type(rng).__name__)


@dataclass(frozen=True)
class Linear:
    """y = x Wᵀ + b over the last axis of x (any leading axes), as torch.nn.Linear."""
    in_size: int
    out_size: int
    dtype: np.dtype = np.dtype("float32")

    def init(self, seed=0):
        """uniform(-1/sqrt(in), 1/sqrt(in)) weights and bias, as torch.nn.Linear."""
        rng = np.random.default_rng(seed)
        k = 1.0 / np.sqrt(self.in_size)
        return {"W": rng.uniform(-k, k, (self.out_size, self.in_size)).astype(self.dtype),
                "b": rng.uniform(-k, k, self.out_size).astype(self.dtype)}

    def forward(self, params, x):
        if x.shape[-1] != self.in_size:
            raise ValueError("Linear input: expected last axis %d, got shape %s"
                             % (self.in_size, x.shape))
        return x @ params["W"].T + params["b"]

    def backward(self, params, x, dy):
        """(grads {"W", "b"}, dx) for y = forward(params, x) and dL/dy = dy."""
        x2, dy2 = x.reshape(-1, self.in_size), dy.reshape(-1, self.out_size)
        return {"W": dy2.T @ x2, "b": dy2.sum(axis=0)}, dy @ params["W"]


@dataclass(frozen=True)
class Embedding:
    """Token ids -> rows of a learnable table (vocab_size, size), as torch.nn.Embedding."""
    vocab_size: int
    size: int
    dtype: np.dtype = np.dtype("float32")

    def init(self, seed=0):
        """Standard normal rows, as torch.nn.Embedding."""
        rng = np.random.default_rng(seed)
        return {"table": rng.standard_normal((self.vocab_size, self.size)).astype(self.dtype)}

    def check_ids(self, name, ids):
        ids = np.asarray(ids)
        if ids.dtype.kind not in "iu":
            raise TypeError("%s: expected integer token ids, got dtype %s" % (name, ids.dtype))
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError("%s: token ids must be in [0, %d) (vocab_size), got min %d max %d"
                             % (name, self.vocab_size, ids.min(), ids.max()))
        return ids

    def forward(self, params, ids):
        return params["table"][ids]

    def backward(self, ids, dy):
        """{"table": gradient} for rows = forward(params, ids) and dL/drows = dy."""
        grad = np.zeros((self.vocab_size, self.size), self.dtype)
        np.add.at(grad, ids.reshape(-1), dy.reshape(-1, self.size))
        return {"table": grad}
