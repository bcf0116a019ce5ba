"""rnncompiler in JAX: a compiled kernel as a differentiable JAX function (CPU).

`rc.jax.rnn(kern, params, x, state0=None, lengths=None)` runs the kernel through
`jax.pure_callback` inside a `jax.custom_vjp`, so it works under `jax.jit` and `jax.grad`
(and `jax.vmap`, one call per mapped element). The backward callback runs the kernel's
forward again, then its backward: no tape outlives a call, at the price of a second
forward pass.

    >>> import jax.numpy as jnp, rnncompiler as rc
    >>> kern = rc.compile(rc.cells.elman, input_size=3, hidden_size=4)
    >>> params = {k: jnp.asarray(v) for k, v in kern.init_params(seed=0).items()}
    >>> outputs, states = rc.jax.rnn(kern, params, jnp.ones((5, 2, 3), jnp.float32))
    >>> outputs.shape, states["h"].shape
    ((5, 2, 4), (2, 4))
"""
from __future__ import annotations

import functools
import weakref

import jax
import jax.numpy as jnp
import numpy as np

from .runtime.kernel import check_lengths

# kernel -> its custom_vjp function, built once: JAX caches what it compiles for a callback
# by the callback's identity, so a new one per call would compile again on every call
_FUNCTIONS = weakref.WeakKeyDictionary()


def rnn(kern, params, x, state0=None, lengths=None):
    """Run a compiled kernel on JAX arrays, differentiably.

    Parameters: `kern` (from rc.compile); `params`, a dict name -> array of the kernel's
    `param_shapes`; `x`, time-major (T, B, I); `state0`, None or a dict state -> (B, size)
    or (size,) array (a missing state starts at zero); `lengths`, None or B ints in
    [0, T]. Arrays are in the kernel's dtype (a float64 kernel needs
    `jax.config.update("jax_enable_x64", True)`).
    Returns `(outputs, states)`: outputs (T, B, O), zero past each length, and the final
    states, a dict state -> (B, size). Differentiable with respect to params, x and state0.
    A cell's masks (rc.dropout, rc.zoneout) are at their expectations, as in kern.infer.
    """
    dtype = _check_dtype(kern)
    if kern.context:
        raise ValueError("kern: rc.jax.rnn runs cells without context inputs; this one "
                         "takes %s — give them as per-step inputs (inputs=) repeated over "
                         "time, or call the kernel with context=" % sorted(kern.context))
    x = _array("x", x, dtype)
    if x.ndim != 3 or x.shape[2] != kern.input_size or 0 in x.shape[:2]:
        raise ValueError("x: expected shape (T, B, %d) with T, B >= 1, got %s"
                         % (kern.input_size, x.shape))
    T, B = x.shape[0], x.shape[1]
    params = _params(kern, params, dtype)
    state0 = _state0(kern, state0, B, dtype)
    if lengths is None:
        lengths = jnp.full((B,), T, jnp.int32)
    else:
        lengths = jnp.asarray(lengths)
        if lengths.shape != (B,) or not jnp.issubdtype(lengths.dtype, jnp.integer):
            raise ValueError("lengths: expected %d ints (one per batch row), got %s %s"
                             % (B, lengths.dtype, lengths.shape))
        _check_range(lengths, T)
        lengths = lengths.astype(jnp.int32)
    return _function(kern)(params, x, state0, lengths)


def _function(kern):
    """The kernel's custom_vjp function f(params, x, state0, lengths), built once."""
    if kern not in _FUNCTIONS:
        _FUNCTIONS[kern] = _make_function(kern)
    return _FUNCTIONS[kern]


def _make_function(kern):
    # the callbacks hold the kernel weakly: the cache's values must not keep its keys alive
    run = functools.partial(_run, weakref.ref(kern))
    gradients = functools.partial(_gradients, weakref.ref(kern))
    sizes = (kern.output_size, dict(kern.state_sizes), kern.dtype)

    @jax.custom_vjp
    def f(params, x, state0, lengths):
        return jax.pure_callback(run, _outputs_like(x, *sizes), params, x, state0, lengths,
                                 vmap_method="sequential")

    def f_fwd(params, x, state0, lengths):
        return f(params, x, state0, lengths), (params, x, state0, lengths)

    def f_bwd(saved, cotangents):
        params, x, state0, lengths = saved
        like = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype),
                                      (params, x, state0))
        d_params, d_x, d_state0 = jax.pure_callback(gradients, like, *saved, *cotangents,
                                                    vmap_method="sequential")
        return d_params, d_x, d_state0, None       # lengths are integers: no cotangent

    f.defvjp(f_fwd, f_bwd)
    return f


def _outputs_like(x, output_size, state_sizes, dtype):
    T, B = x.shape[0], x.shape[1]
    return (jax.ShapeDtypeStruct((T, B, output_size), dtype),
            {s: jax.ShapeDtypeStruct((B, n), dtype) for s, n in state_sizes.items()})


def _numpy(tree):
    return jax.tree_util.tree_map(np.asarray, tree)


def _kernel(ref):
    kern = ref()
    if kern is None:
        raise RuntimeError("rc.jax.rnn: the kernel of this function was freed; keep a "
                           "reference to it while the function is in use")
    return kern


def _run(ref, params, x, state0, lengths):
    """The forward callback: outputs and final states, no tape."""
    params, x, state0, lengths = _numpy((params, x, state0, lengths))
    return _kernel(ref).infer(params, x, state0, lengths)


def _gradients(ref, params, x, state0, lengths, d_outputs, d_states):
    """The backward callback: the forward again (for its tape), then the backward."""
    kern = _kernel(ref)
    params, x, state0, lengths, d_outputs, d_states = _numpy(
        (params, x, state0, lengths, d_outputs, d_states))
    g = kern.backward(kern.forward(params, x, state0, lengths, training=False),
                      d_outputs, d_states)
    # a constant (trainable=False) has no gradient: its cotangent is zero, as JAX expects
    # one of every input's shape
    d_params = {k: g.params[k] if k in g.params else np.zeros_like(v) for k, v in params.items()}
    return d_params, g.x, g.state0


# ---------------------------------------------------------------- argument checks

def _check_dtype(kern):
    if kern.dtype == np.float64 and not jax.config.jax_enable_x64:
        raise TypeError("kern: a float64 kernel needs 64-bit JAX arrays; enable them with "
                        "jax.config.update('jax_enable_x64', True), or compile the cell with "
                        "dtype='float32'")
    return kern.dtype


def _array(name, value, dtype):
    arr = jnp.asarray(value)
    if arr.dtype != dtype:
        raise TypeError("%s: expected dtype %s (the kernel's), got %s; convert it with "
                        ".astype(%s)" % (name, dtype.name, arr.dtype, dtype.name))
    return arr


def _check_range(lengths, T):
    """Lengths in [0, T], checked here when they are concrete (under jit the kernel checks)."""
    try:
        values = np.asarray(lengths)
    except jax.errors.TracerArrayConversionError:
        return
    check_lengths(values, T, values.shape[0])


def _params(kern, params, dtype):
    if not isinstance(params, dict):
        raise TypeError("params: expected a dict name -> array, got %s" % type(params).__name__)
    unknown = [k for k in params if k not in kern.param_shapes]
    if unknown:
        raise KeyError("params: unknown parameter %r; this kernel has %s"
                       % (unknown[0], list(kern.param_shapes)))
    out = {}
    for name, shape in kern.param_shapes.items():
        if name not in params:
            raise KeyError("params: missing parameter %r of shape %s" % (name, shape))
        out[name] = _array("params[%r]" % name, params[name], dtype)
        if out[name].shape != shape:
            raise ValueError("params[%r]: expected shape %s, got %s"
                             % (name, shape, out[name].shape))
    return out


def _state0(kern, state0, B, dtype):
    """Every state as a (B, size) array: given ones broadcast, missing ones zero."""
    if state0 is not None and not isinstance(state0, dict):
        raise TypeError("state0: expected a dict state -> array, got %s"
                        % type(state0).__name__)
    state0 = state0 or {}
    unknown = [s for s in state0 if s not in kern.state_sizes]
    if unknown:
        raise KeyError("state0: unknown state %r; this kernel has %s"
                       % (unknown[0], list(kern.state_sizes)))
    out = {}
    for s, size in kern.state_sizes.items():
        if state0.get(s) is None:
            out[s] = jnp.zeros((B, size), dtype)
            continue
        v = _array("state0[%r]" % s, state0[s], dtype)
        if v.shape not in ((B, size), (size,)):
            raise ValueError("state0[%r]: expected shape (%d, %d) or (%d,), got %s"
                             % (s, B, size, size, v.shape))
        out[s] = jnp.broadcast_to(v, (B, size))
    return out
