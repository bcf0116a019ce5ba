"""Saving and loading parameter trees (or any tree of arrays: optimizer state too) as
`.npz` files, one array per path; no pickles."""
from __future__ import annotations

import os
import tempfile

import numpy as np

from .tree import check_like, flatten, unflatten


def save(path, tree):
    """Write `tree` to `path` (an .npz archive keyed by "a/b/c" paths), atomically: a
    crash leaves the old file or the new one, never half of one."""
    flat = {k: np.asarray(v) for k, v in flatten(tree).items()}
    for k, v in flat.items():
        if v.dtype == object:
            raise TypeError("tree[%r]: expected a numeric array, got objects" % k)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".save-", suffix=".npz", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **flat)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path, like=None):
    """The tree saved at `path`. With `like` (e.g. `model.init()`), check that every path
    and shape matches and cast to its dtypes, so a checkpoint of another model is refused
    with the first difference named."""
    with np.load(path, allow_pickle=False) as data:
        tree = unflatten({k: data[k] for k in data.files})
    if like is not None:
        check_like("load(%r)" % os.fspath(path), tree, like)
        ref = flatten(like)
        tree = unflatten({k: np.asarray(v, dtype=np.asarray(ref[k]).dtype)
                          for k, v in flatten(tree).items()})
    return tree
