"""Parameter trees: nested dicts of numpy arrays (a JAX-style pytree with string keys).

Every model's parameters, gradients and optimizer state are such trees; leaves are
addressed by their path, the keys joined with "/" (``"rnn/layer0/fwd/cell/W_f"``).
"""
from __future__ import annotations

import numpy as np


def flatten(tree, prefix=""):
    """{path: leaf} in depth-first insertion order."""
    if not isinstance(tree, dict):
        raise TypeError("expected a dict of arrays (a parameter tree) at %r, got %s"
                        % (prefix or "/", type(tree).__name__))
    flat = {}
    for key, value in tree.items():
        if not isinstance(key, str) or not key or "/" in key:
            raise KeyError("tree keys must be non-empty strings without '/', got %r at %r"
                           % (key, prefix or "/"))
        path = prefix + "/" + key if prefix else key
        if isinstance(value, dict):
            flat.update(flatten(value, path))
        else:
            flat[path] = value
    return flat


def unflatten(flat):
    """The inverse of `flatten`: {"a/b": x} -> {"a": {"b": x}}."""
    tree = {}
    for path, value in flat.items():
        node = tree
        *parents, leaf = path.split("/")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return tree


def tree_map(fn, tree, *rest):
    """fn applied leaf by leaf to trees of the same structure."""
    if isinstance(tree, dict):
        return {k: tree_map(fn, v, *(r[k] for r in rest)) for k, v in tree.items()}
    return fn(tree, *rest)


def tree_add(a, b):
    """a + b leaf by leaf; a leaf missing from one side counts as zero."""
    out = dict(a)
    for k, v in b.items():
        if k not in out:
            out[k] = v
        elif isinstance(v, dict):
            out[k] = tree_add(out[k], v)
        else:
            out[k] = out[k] + v
    return out


def global_norm(tree):
    """sqrt of the sum of squares of every leaf."""
    return float(np.sqrt(sum(float(np.sum(np.square(v, dtype=np.float64)))
                             for v in flatten(tree).values())))


def check_like(name, tree, like):
    """Raise a KeyError/ValueError naming the first path where `tree` and `like` differ."""
    got, want = flatten(tree, ""), flatten(like, "")
    for path, ref in want.items():
        if path not in got:
            raise KeyError("%s: missing %r (shape %s)" % (name, path, np.shape(ref)))
        if np.shape(got[path]) != np.shape(ref):
            raise ValueError("%s[%r]: expected shape %s, got %s"
                             % (name, path, np.shape(ref), np.shape(got[path])))
    extra = [p for p in got if p not in want]
    if extra:
        raise KeyError("%s: unexpected %r; expected the paths %s"
                       % (name, extra[0], list(want)))
