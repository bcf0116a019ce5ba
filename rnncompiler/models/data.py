"""Data helpers for the examples: the texts shipped with the package, a character
vocabulary, and long token streams cut into parallel rows for truncated BPTT."""
from __future__ import annotations

from importlib import resources

import numpy as np


def texts():
    """Names of the texts shipped in rnncompiler/data."""
    root = resources.files("rnncompiler") / "data"
    return sorted(p.name[:-4] for p in root.iterdir() if p.name.endswith(".txt"))


def load_text(name="sonnets"):
    """A text shipped with the package, without its header lines (those starting "#")."""
    path = resources.files("rnncompiler") / "data" / (name + ".txt")
    if not path.is_file():
        raise KeyError("load_text: no text %r; the package ships %s" % (name, texts()))
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    return "".join(line for line in lines if not line.startswith("#")).lstrip("\n")


class CharVocab:
    """Characters <-> ids, the sorted set of characters of a text."""

    def __init__(self, text):
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self):
        return len(self.chars)

    def encode(self, text):
        try:
            return np.array([self.index[c] for c in text], np.int64)
        except KeyError as e:
            raise KeyError("encode: character %r is not in the vocabulary" % e.args[0]) from None

    def decode(self, ids):
        return "".join(self.chars[int(i)] for i in np.asarray(ids).reshape(-1))


def streams(ids, batch):
    """Cut a token sequence into `batch` contiguous rows: (N, batch), time-major, with
    N = len(ids) // batch; row b continues where it left off from one window to the next."""
    ids = np.asarray(ids)
    n = len(ids) // batch
    if n < 2:
        raise ValueError("batch: %d rows of a %d-token text leave fewer than 2 steps per row"
                         % (batch, len(ids)))
    return np.ascontiguousarray(ids[:n * batch].reshape(batch, n).T)
