"""Generation: sampling from a language model with a temperature, one `kern.step` per
layer per token — the one place where per-step calls are right, since each input is the
previous output."""
from __future__ import annotations

import numpy as np

from .layers import as_rng
from .losses import softmax


def pick(logits, temperature, rng):
    """One token per row of logits (B, V): argmax at temperature 0, else a draw from
    softmax(logits / temperature)."""
    if temperature < 0:
        raise ValueError("temperature: expected >= 0, got %r" % (temperature,))
    if temperature == 0:
        return np.argmax(logits, axis=1)
    probs = softmax(np.asarray(logits, np.float64) / temperature)
    cdf = np.cumsum(probs, axis=1)
    u = rng.random((len(cdf), 1)) * cdf[:, -1:]
    return np.minimum((cdf <= u).sum(axis=1), cdf.shape[1] - 1)


def sample(model, params, prompt, length, *, temperature=1.0, seed=0, states=None):
    """`length` token ids generated after `prompt` ((P,) or (B, P) ids, P >= 1) by a
    unidirectional token model (vocab_size=..., readout="steps"). The prompt is read in one
    call; then each token is fed back as the next input. Returns (length,) or (B, length)."""
    if model.embedding is None:
        raise ValueError("model: sample needs a token model (built with vocab_size=...)")
    prompt = np.asarray(prompt)
    single = prompt.ndim == 1
    ids = np.atleast_2d(prompt).T                       # (P, B), time-major
    if ids.shape[0] < 1:
        raise ValueError("prompt: expected at least one token")
    rng = as_rng(seed)
    if states is None:
        states = model.initial_states(params, ids.shape[1])
    if len(ids) > 1:
        prefix = ids[:-1].T if model.batch_first else ids[:-1]
        _, states = model.infer(params, prefix, state0=states)
    token, out = ids[-1], []
    for _ in range(length):
        logits, states = model.step(params, token, states)
        token = pick(logits, temperature, rng)
        out.append(token)
    out = np.stack(out, axis=1) if out else np.zeros((ids.shape[1], 0), np.int64)
    return out[0] if single else out
