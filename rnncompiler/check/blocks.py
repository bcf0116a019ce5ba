"""Per-block checks: each gradient block (a parameter, x, a state0) of a kernel against
central finite differences (float64) or a float64 twin, as a full Jacobian for small
cases or as random projections uᵀJv for large ones. Only the kernel's public attributes
are used, so duck-typed kernels are checked too."""
from __future__ import annotations

import numpy as np


def input_blocks(params, x, state0):
    """block name -> float64 array: the parameters, then x, then state0.<s>."""
    blocks = {k: np.array(v, np.float64) for k, v in params.items()}
    blocks["x"] = np.array(x, np.float64)
    blocks.update({"state0." + s: np.array(v, np.float64) for s, v in state0.items()})
    return blocks


def _call(kern, blocks, lengths):
    params = {k: v for k, v in blocks.items() if k != "x" and not k.startswith("state0.")}
    state0 = {k[len("state0."):]: v for k, v in blocks.items() if k.startswith("state0.")}
    return kern.forward(params, blocks["x"], state0, lengths)


def _flat_outputs(kern, res):
    parts = [np.asarray(res.outputs, np.float64).ravel()]
    parts += [np.asarray(res.states[s], np.float64).ravel() for s in kern.state_sizes]
    return np.concatenate(parts)


def _grads(g, names):
    out = {k: g.params[k] for k in names if k in g.params}
    out["x"] = g.x
    out.update({"state0." + s: v for s, v in g.state0.items()})
    return {k: np.asarray(out[k], np.float64).ravel() for k in names}


def _seed(kern, T, B, flat):
    """Split a flat vector over (outputs, final states) into d_outputs and d_states."""
    n = T * B * kern.output_size
    dy = flat[:n].reshape(T, B, kern.output_size)
    ds, off = {}, n
    for s, size in kern.state_sizes.items():
        ds[s] = flat[off:off + B * size].reshape(B, size)
        off += B * size
    return dy, ds


def output_label(kern, T, B, i):
    """'y[t, b, j]' or 'h_T[b, j]' for index i of the flat outputs."""
    n = T * B * kern.output_size
    if i < n:
        return "y[%s]" % ", ".join(map(str, np.unravel_index(i, (T, B, kern.output_size))))
    i -= n
    for s, size in kern.state_sizes.items():
        if i < B * size:
            return "%s_T[%s]" % (s, ", ".join(map(str, np.unravel_index(i, (B, size)))))
        i -= B * size
    return "?"


def _index_label(name, shape, j):
    return "%s[%s]" % (name, ", ".join(map(str, np.unravel_index(j, shape)))) if shape else name


def analytic_jacobian(kern, blocks, lengths, T, B):
    """block -> (n_out, n_block): one backward per output with a unit seed."""
    res = _call(kern, blocks, lengths)
    n_out = _flat_outputs(kern, res).size
    rows = {k: np.zeros((n_out, v.size)) for k, v in blocks.items()}
    for o in range(n_out):
        unit = np.zeros(n_out)
        unit[o] = 1.0
        dy, ds = _seed(kern, T, B, unit)
        grads = _grads(kern.backward(res, d_outputs=dy, d_states=ds), list(blocks))
        for k in blocks:
            rows[k][o] = grads[k]
    return rows


def numeric_jacobian(kern, blocks, lengths, eps):
    """block -> (n_out, n_block): central differences, one input element at a time."""
    out = {}
    for k, arr in blocks.items():
        flat = arr.reshape(-1)
        cols = []
        for j in range(flat.size):
            old = flat[j]
            flat[j] = old + eps
            up = _flat_outputs(kern, _call(kern, blocks, lengths))
            flat[j] = old - eps
            down = _flat_outputs(kern, _call(kern, blocks, lengths))
            flat[j] = old
            cols.append((up - down) / (2 * eps))
        n_out = _flat_outputs(kern, _call(kern, blocks, lengths)).size if not cols else cols[0].size
        out[k] = np.stack(cols, axis=1) if cols else np.zeros((n_out, 0))
    return out


def projections(kern, blocks, lengths, T, B, rng, count):
    """(u_k, {block: v_k}) pairs: u over the outputs, v of unit norm in each block."""
    n_out = _flat_outputs(kern, _call(kern, blocks, lengths)).size
    out = []
    for _ in range(count):
        u = rng.standard_normal(n_out)
        v = {}
        for k, arr in blocks.items():
            d = rng.standard_normal(arr.shape)
            v[k] = d / max(np.linalg.norm(d), 1e-300)
        out.append((u, v))
    return out


def analytic_projected(kern, blocks, lengths, T, B, probes):
    """block -> (count,): uᵀ J v from one backward per u."""
    res = _call(kern, blocks, lengths)
    out = {k: np.zeros(len(probes)) for k in blocks}
    for i, (u, v) in enumerate(probes):
        dy, ds = _seed(kern, T, B, u)
        grads = _grads(kern.backward(res, d_outputs=dy, d_states=ds), list(blocks))
        for k in blocks:
            out[k][i] = grads[k] @ v[k].ravel()
    return out


def numeric_projected(kern, blocks, lengths, probes, eps):
    """block -> (count,): central differences of uᵀf along v."""
    out = {k: np.zeros(len(probes)) for k in blocks}
    for i, (u, v) in enumerate(probes):
        for k, arr in blocks.items():
            base = arr.copy()
            blocks[k] = base + eps * v[k]
            up = u @ _flat_outputs(kern, _call(kern, blocks, lengths))
            blocks[k] = base - eps * v[k]
            down = u @ _flat_outputs(kern, _call(kern, blocks, lengths))
            blocks[k] = base
            out[k][i] = (up - down) / (2 * eps)
    return out


def compare(analytic, expected, rtol, atol):
    """(errors, passed, worst flat index) per block; the contract's relative error."""
    errors, passed, worst = {}, {}, {}
    for k, a in analytic.items():
        n = np.asarray(expected[k], np.float64)
        a = np.asarray(a, np.float64)
        if n.size == 0:
            errors[k], passed[k], worst[k] = 0.0, True, None
            continue
        diff = np.abs(a - n)
        bad = ~np.isfinite(diff)
        scale = float(np.max(np.abs(n[np.isfinite(n)]), initial=0.0))
        d = float("inf") if bad.any() else float(diff.max())
        errors[k] = d / max(scale, atol / rtol)
        passed[k] = d <= atol + rtol * scale
        worst[k] = int(np.argmax(np.where(bad, np.inf, diff)))
    return errors, passed, worst


def check_blocks(kern, blocks, lengths, T, B, mode, rtol, atol, eps, twin=None, rng=None,
                 count=3):
    """Compare every block with a gradient (not the parameters declared trainable=False,
    which are passed but not differentiated); returns (errors, passed, worst-place labels)."""
    frozen = getattr(kern, "frozen", frozenset())
    if frozen:
        held = {k: v for k, v in blocks.items() if k in frozen}
        kern = _Holding(kern, held)
        if twin is not None:
            twin = _Holding(twin, held)
        blocks = {k: v for k, v in blocks.items() if k not in frozen}
    if mode == "jacobian":
        analytic = analytic_jacobian(kern, blocks, lengths, T, B)
        expected = analytic_jacobian(twin, blocks, lengths, T, B) if twin is not None else \
            numeric_jacobian(kern, blocks, lengths, eps)
    else:
        probes = projections(kern, blocks, lengths, T, B, rng, count)
        analytic = analytic_projected(kern, blocks, lengths, T, B, probes)
        expected = analytic_projected(twin, blocks, lengths, T, B, probes) \
            if twin is not None else numeric_projected(kern, blocks, lengths, probes, eps)
    errors, passed, worst = compare(analytic, expected, rtol, atol)
    labels = {}
    for k, w in worst.items():
        if w is None:
            labels[k] = ""
        elif mode == "jacobian":
            o, j = np.unravel_index(w, analytic[k].shape)
            labels[k] = "%s by %s" % (_index_label(k, blocks[k].shape, j),
                                      output_label(kern, T, B, o))
        else:
            labels[k] = "projection %d" % w
    return errors, passed, labels


class _Holding:
    """A kernel with some parameters held at fixed values: forward takes the others and
    adds these, so that the blocks checked are only those that have a gradient."""

    def __init__(self, kern, held):
        self._kern, self._held = kern, held

    def __getattr__(self, name):
        return getattr(self._kern, name)

    def forward(self, params, *args, **kw):
        return self._kern.forward({**params, **self._held}, *args, **kw)
