"""An echo state network (Jaeger 2001) predicting the Mackey–Glass series one step ahead.

The reservoir is a compiled kernel whose input and recurrent weights are constants
(declared trainable=False in rc.cells.esn); only a linear readout is trained, by ridge
regression on the states the kernel returns:

    h[t] = (1 - a) h[t-1] + a tanh(W_in u[t] + W h[t-1] + b)     W scaled to spectral radius ρ
    ŷ[t] = w_out · [1; h[t]]                                     fitted to u[t+1]

The series is dx/dt = 0.2 x(t-τ) / (1 + x(t-τ)^10) - 0.1 x(t) with τ = 17 (chaotic),
integrated with Euler steps of 0.1 and sampled every 1.0 time unit. Prints the test
NRMSE, the RMS error over the standard deviation of the targets.

    python examples/esn_mackey_glass.py --hidden 200 --train 2000 --test 500
"""
import argparse

import numpy as np

import rnncompiler as rc


def mackey_glass(n, tau=17.0, dt=0.1, sample=1.0, washout=1000, seed=0):
    """n samples of the Mackey–Glass series, one every `sample` time units, after
    `washout` samples that let the transient from the initial history die out."""
    rng = np.random.default_rng(seed)
    lag, every = int(round(tau / dt)), int(round(sample / dt))
    steps = (n + washout) * every
    x = np.empty(steps + lag + 1)
    x[:lag + 1] = 1.2 + 0.1 * rng.standard_normal(lag + 1)
    for t in range(lag, steps + lag):
        d = x[t - lag]
        x[t + 1] = x[t] + dt * (0.2 * d / (1.0 + d ** 10) - 0.1 * x[t])
    return x[lag + 1::every][washout:washout + n]


def ridge(states, targets, alpha):
    """Readout weights minimising |[1; h] w - y|² + alpha |w|², by lstsq on the
    augmented system."""
    X = np.hstack([np.ones((len(states), 1)), states])
    A = np.vstack([X, np.sqrt(alpha) * np.eye(X.shape[1])])
    b = np.concatenate([targets, np.zeros(X.shape[1])])
    return np.linalg.lstsq(A, b, rcond=None)[0]


def run(hidden, train, test, washout, leak, radius, alpha, seed):
    series = mackey_glass(train + test + 1, seed=seed)
    u = np.tanh(series - 1.0)                # centred and bounded, as ESN inputs usually are
    cell = rc.cells.make_esn(leak=leak)
    kern = rc.compile(cell, input_size=1, hidden_size=hidden, dtype="float64")
    params = rc.cells.esn_weights(kern, spectral_radius=radius, input_scale=1.0,
                                  bias_scale=0.2, seed=seed)
    # one sequence of T steps, batch 1: the states after each input
    states, _ = kern.infer(params, u[:-1, None, None])
    H = states[:, 0, :]
    target = u[1:]
    fit = slice(washout, train)
    w = ridge(H[fit], target[fit], alpha)
    pred = np.hstack([np.ones((len(H), 1)), H]) @ w
    test_part = slice(train, train + test)
    err = pred[test_part] - target[test_part]
    nrmse = float(np.sqrt(np.mean(err ** 2)) / np.std(target[test_part]))
    print("ESN: %d units, leak %g, spectral radius %g, ridge %g; constant (trainable=False) weights: %s"
          % (hidden, leak, radius, alpha, sorted(kern.frozen)))
    print("Mackey-Glass (tau=17) one step ahead: train %d (washout %d), test %d"
          % (train, washout, test))
    print("test NRMSE %.3e" % nrmse)
    return nrmse


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hidden", type=int, default=200)
    ap.add_argument("--train", type=int, default=2000)
    ap.add_argument("--test", type=int, default=500)
    ap.add_argument("--washout", type=int, default=100)
    ap.add_argument("--leak", type=float, default=0.5)
    ap.add_argument("--radius", type=float, default=0.9)
    ap.add_argument("--ridge", type=float, default=1e-8)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    nrmse = run(args.hidden, args.train, args.test, args.washout, args.leak, args.radius,
                args.ridge, args.seed)
    if not nrmse < 0.1:
        print("FAILED: test NRMSE %.3g is not below 0.1" % nrmse)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
