"""Readouts: which RNN outputs a head sees. "steps" keeps every step (labelling, language
models); "last", "mean" and "ends" pool each row to one vector (classification).
Outputs past a row's length are zero (the kernel's contract), so sums may run over all T.
"""
from __future__ import annotations

import numpy as np

READOUTS = ("steps", "last", "mean", "ends")


def check_readout(readout):
    if readout not in READOUTS:
        raise ValueError("readout: expected one of %s, got %r" % (READOUTS, readout))
    return readout


def _lengths_or_full(lengths, T, B, readout):
    L = np.full(B, T) if lengths is None else np.asarray(lengths)
    if L.size and L.min() < 1:
        raise ValueError("lengths: readout %r needs every sequence to have at least one step, "
                         "got a length of 0 in row %d" % (readout, int(np.argmin(L))))
    return L


def pool(outputs, lengths, readout, directions=1):
    """(T, B, F) -> (B, F). "last": the output at each row's last valid step; "mean": the
    mean over valid steps; "ends": for a bidirectional F = [fwd | bwd], the forward half at
    the last valid step and the backward half at step 0 (each direction after reading the
    whole row; the same as "last" with one direction)."""
    T, B, F = outputs.shape
    L, rows = _lengths_or_full(lengths, T, B, readout), np.arange(B)
    if readout == "last" or (readout == "ends" and directions == 1):
        return outputs[L - 1, rows]
    if readout == "mean":
        return outputs.sum(axis=0) / L[:, None].astype(outputs.dtype)
    half = F // 2
    return np.concatenate([outputs[L - 1, rows, :half], outputs[0, rows, half:]], axis=1)


def unpool(d_pooled, shape, lengths, readout, directions=1):
    """The gradient of `pool` with respect to its (T, B, F) outputs."""
    T, B, F = shape
    L, rows = _lengths_or_full(lengths, T, B, readout), np.arange(B)
    d = np.zeros(shape, d_pooled.dtype)
    if readout == "last" or (readout == "ends" and directions == 1):
        d[L - 1, rows] = d_pooled
    elif readout == "mean":
        valid = np.arange(T)[:, None] < L[None, :]
        d[:] = (d_pooled / L[:, None].astype(d_pooled.dtype))[None]
        d *= valid[..., None]
    else:
        half = F // 2
        d[L - 1, rows, :half] = d_pooled[:, :half]
        d[0, rows, half:] += d_pooled[:, half:]
    return d
