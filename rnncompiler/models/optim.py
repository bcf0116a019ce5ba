"""Optimizers over parameter trees, updating the arrays in place, step for step the same
arithmetic as torch.optim (SGD with momentum/Nesterov, RMSprop, Adam/AdamW), and gradient
clipping by global norm as torch.nn.utils.clip_grad_norm_."""
from __future__ import annotations

import math

import numpy as np

from .tree import flatten, unflatten


def _slot(state, name, p):
    """The optimizer state `name` of parameter p, zeros when first asked for (made once,
    not on every step)."""
    if name not in state:
        state[name] = np.zeros_like(p)
    return state[name]


def _lerp(start, end, weight):
    """torch.lerp's formula (two branches for accuracy near either end)."""
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)


class Optimizer:
    """Base: `step(params, grads)` updates params in place. `lr` is a float or a function
    of the number of updates done so far (a schedule). State lives in `self.state`, one dict
    per parameter path; `state_dict`/`load_state_dict` turn it into a tree for `save`."""

    def __new__(cls, *args, **kwargs):
        """Refuses a parameter tree where the learning rate goes (torch.optim's habit:
        here parameters are given to `step`), and keeps the arguments for `rm.save`."""
        first = args[0] if args else kwargs.get("lr")
        if isinstance(first, (dict, list, tuple)) or hasattr(first, "parameters"):
            raise TypeError(
                "%s: the first argument is the learning rate, got %s; parameters are not "
                "given to the optimizer here but to each update: opt = rm.%s(lr=0.01), then "
                "opt.step(params, grads)" % (cls.__name__, type(first).__name__, cls.__name__))
        obj = super().__new__(cls)
        obj._arguments = (args, dict(kwargs))
        return obj

    def __init__(self, lr):
        if not callable(lr) and not float(lr) >= 0:
            raise ValueError("lr: expected a learning rate >= 0 or a schedule, got %r" % (lr,))
        self.lr, self.state, self.updates = lr, {}, 0

    def current_lr(self):
        return float(self.lr(self.updates)) if callable(self.lr) else float(self.lr)

    def step(self, params, grads):
        """One update of every parameter that has a gradient (a missing one is skipped,
        as torch skips a parameter whose .grad is None)."""
        flat_p, flat_g = flatten(params), flatten(grads)
        lr = self.current_lr()
        for path, g in flat_g.items():
            if path not in flat_p:
                raise KeyError("grads: %r is not a parameter; params has %s"
                               % (path, list(flat_p)))
            p = flat_p[path]
            if not isinstance(p, np.ndarray) or p.dtype.kind != "f" or not p.flags.writeable:
                raise TypeError("params[%r]: expected a writeable float numpy array (updated "
                                "in place), got %s" % (path, type(p).__name__))
            g = np.asarray(g)
            if g.shape != p.shape:
                raise ValueError("grads[%r]: expected shape %s, got %s" % (path, p.shape, g.shape))
            self._update(p, g.astype(p.dtype, copy=False), self.state.setdefault(path, {}), lr)
        self.updates += 1

    def _update(self, p, g, state, lr):
        raise NotImplementedError

    def state_dict(self):
        """{"updates": array, "slots": tree path -> {slot: array}}."""
        slots = {path + "/" + k: v for path, st in self.state.items() for k, v in st.items()}
        return {"updates": np.array(self.updates), "slots": unflatten(slots)}

    def load_state_dict(self, tree):
        self.updates = int(tree["updates"])
        self.state = {}
        for path, v in flatten(tree.get("slots", {})).items():
            param, slot = path.rsplit("/", 1)
            self.state.setdefault(param, {})[slot] = np.array(v)


class SGD(Optimizer):
    """torch.optim.SGD: momentum (buffer seeded with the first gradient), dampening,
    Nesterov, L2 weight decay."""

    def __init__(self, lr, momentum=0.0, *, dampening=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov: needs momentum > 0 and dampening = 0, got momentum=%r, "
                             "dampening=%r" % (momentum, dampening))
        self.momentum, self.dampening = momentum, dampening
        self.nesterov, self.weight_decay = nesterov, weight_decay

    def _update(self, p, g, state, lr):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.array(g, p.dtype)   # an array even for 0-d
            else:
                buf *= self.momentum
                buf += (1 - self.dampening) * g
            g = g + self.momentum * buf if self.nesterov else buf
        p -= lr * g


class RMSProp(Optimizer):
    """torch.optim.RMSprop: a running mean of squared gradients (decay `alpha`), optionally
    centred, with momentum and L2 weight decay; eps added outside the square root."""

    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, *, momentum=0.0, centered=False,
                 weight_decay=0.0):
        super().__init__(lr)
        self.alpha, self.eps, self.momentum = alpha, eps, momentum
        self.centered, self.weight_decay = centered, weight_decay

    def _update(self, p, g, state, lr):
        if self.weight_decay:
            g = g + self.weight_decay * p
        sq = _slot(state, "square_avg", p)
        sq *= self.alpha
        sq += (1 - self.alpha) * g * g
        if self.centered:
            ga = state["grad_avg"] = _lerp(_slot(state, "grad_avg", p), g,
                                           1 - self.alpha)
            avg = np.sqrt(sq - ga * ga) + self.eps
        else:
            avg = np.sqrt(sq) + self.eps
        if self.momentum > 0:
            buf = _slot(state, "momentum_buffer", p)
            buf *= self.momentum
            buf += g / avg
            p -= lr * buf
        else:
            p -= lr * (g / avg)


class Adam(Optimizer):
    """torch.optim.Adam: bias-corrected first and second moments, optional AMSGrad, L2
    weight decay (or decoupled, as AdamW)."""

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, *, weight_decay=0.0,
                 amsgrad=False, decoupled_weight_decay=False):
        super().__init__(lr)
        if not all(0.0 <= b < 1.0 for b in betas) or len(betas) != 2:
            raise ValueError("betas: expected two values in [0, 1), got %r" % (betas,))
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay, self.amsgrad = eps, weight_decay, amsgrad
        self.decoupled = decoupled_weight_decay

    def _update(self, p, g, state, lr):
        step = state["step"] = state.get("step", 0) + 1
        if self.weight_decay:
            if self.decoupled:
                p *= 1 - lr * self.weight_decay
            else:
                g = g + self.weight_decay * p
        m = state["exp_avg"] = _lerp(_slot(state, "exp_avg", p), g, 1 - self.beta1)
        v = _slot(state, "exp_avg_sq", p)
        v *= self.beta2
        v += (1 - self.beta2) * g * g
        if self.amsgrad:
            v = state["max_exp_avg_sq"] = np.maximum(state.get("max_exp_avg_sq", v), v)
        step_size = lr / (1 - self.beta1 ** step)
        denom = np.sqrt(v) / math.sqrt(1 - self.beta2 ** step) + self.eps
        p -= step_size * (m / denom)


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay (default 0.01)."""

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, *, weight_decay=0.01,
                 amsgrad=False):
        super().__init__(lr, betas, eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         decoupled_weight_decay=True)


def clip_grad_norm(grads, max_norm, norm_type=2.0, *, error_if_nonfinite=False):
    """Scale every gradient in place by min(1, max_norm / (total + 1e-6)), where total is
    the norm of all gradients together; returns total (before clipping), exactly as
    torch.nn.utils.clip_grad_norm_."""
    flat = flatten(grads)
    for path, g in flat.items():
        if not isinstance(g, np.ndarray) or not g.flags.writeable:
            raise TypeError("grads[%r]: expected a writeable numpy array (scaled in place), "
                            "got %s" % (path, type(g).__name__))
    leaves = list(flat.values())
    if not leaves:
        return 0.0
    norm_type = float(norm_type)
    if norm_type == math.inf:
        total = max(float(np.max(np.abs(g))) if g.size else 0.0 for g in leaves)
    else:
        norms = np.array([np.sum(np.abs(g) ** norm_type) ** (1 / norm_type) for g in leaves])
        total = float(np.sum(norms ** norm_type) ** (1 / norm_type))
    if error_if_nonfinite and not math.isfinite(total):
        raise FloatingPointError("clip_grad_norm: the total gradient norm is %r; pass "
                                 "error_if_nonfinite=False to clip anyway" % total)
    coef = min(float(max_norm) / (total + 1e-6), 1.0)
    for g in leaves:
        g *= np.asarray(coef, g.dtype)
    return total
