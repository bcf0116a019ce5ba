"""The echo state network (a reservoir): fixed random input and recurrent weights,
declared trainable=False, and a readout trained outside the kernel (ridge regression on
the states it returns)."""
import numpy as np

import rnncompiler as rc


def make_esn(leak=1.0):
    """An echo state network cell with leak rate `leak` in (0, 1] (1: no leak)."""
    leak = float(leak)
    if not 0.0 < leak <= 1.0:
        raise ValueError("leak: expected a number in (0, 1], got %r" % (leak,))

    @rc.cell(states=("h",))
    def esn(x, h, p):
        """Echo state network with leaky-integrator units; fixed reservoir weights.

            h[t] = (1 - a) h[t-1] + a tanh(W_in x[t] + W h[t-1] + b)      a = leak

        W_in (H x I), W (H x H) and b (H) are constants of the kernel (trainable=False):
        passed in `params`, given no gradient; draw them with rc.cells.esn_weights
        (W scaled to a spectral radius below 1) and fit a readout on the states.

        Jaeger, H. (2001). The "echo state" approach to analysing and training recurrent
        neural networks. GMD Report 148, German National Research Center for Information
        Technology. Leaky units: Jaeger, H., Lukoševičius, M., Popovici, D., Siewert, U.
        (2007). Optimization and applications of echo state networks with leaky-integrator
        neurons. Neural Networks 20(3), 335-352.
        """
        u = rc.tanh(p.linear("W_in", x, trainable=False)
                    + p.linear("W", h, bias="b", trainable=False))
        return {"h": u if leak == 1.0 else h + leak * (u - h)}
    return esn


esn = make_esn()


def esn_weights(kern, spectral_radius=0.9, input_scale=1.0, bias_scale=0.0, seed=0,
                density=1.0):
    """A params dict for an ESN kernel: W_in uniform(-input_scale, input_scale), b
    uniform(-bias_scale, bias_scale), and W a random matrix (with a fraction `density` of
    nonzero entries) scaled so that its largest |eigenvalue| is `spectral_radius` (below 1
    for the echo state property in practice). Arrays in the kernel's dtype."""
    for what, v in (("spectral_radius", spectral_radius), ("input_scale", input_scale),
                    ("bias_scale", bias_scale)):
        if not np.isfinite(v) or v < 0:
            raise ValueError("%s: expected a finite number >= 0, got %r" % (what, v))
    if not 0.0 < density <= 1.0:
        raise ValueError("density: expected a number in (0, 1], got %r" % (density,))
    shapes = kern.param_shapes
    for name in ("W_in", "W", "b"):
        if name not in shapes:
            raise ValueError("kern: expected an ESN kernel with parameters W_in, W and b "
                             "(rc.cells.esn), got one with %s" % sorted(shapes))
    rng = np.random.default_rng(seed)
    H = shapes["W"][0]
    W = rng.uniform(-1.0, 1.0, size=(H, H)) * (rng.random((H, H)) < density)
    radius = float(np.max(np.abs(np.linalg.eigvals(W)))) if H else 0.0
    W = W * (spectral_radius / radius) if radius > 0 else W
    dtype = np.dtype(getattr(kern, "dtype", np.float64))
    out = {"W_in": rng.uniform(-input_scale, input_scale, size=shapes["W_in"]),
           "W": W, "b": rng.uniform(-bias_scale, bias_scale, size=shapes["b"])}
    return {k: np.asarray(v, dtype) for k, v in out.items()}
