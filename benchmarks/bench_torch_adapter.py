"""One training step of a PyTorch model whose recurrent layer is a custom peephole LSTM:
rc.torch.RNN (the compiled kernels) against the same cell written as a torch eager loop,
in the same model, on one thread; torch.nn.LSTM (no peepholes) for scale."""
import os

# one BLAS/OpenMP thread everywhere: set before numpy and torch load their libraries
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import rnncompiler as rc  # noqa: E402
from rnncompiler.cli.bench import time_interleaved  # noqa: E402

FULL = {"steps": 100, "hidden": [32, 128, 512], "repeats": 10}
QUICK = {"steps": 20, "hidden": [32], "repeats": 3}
GATES = ("i", "f", "g", "o")
TOLERANCE = 1e-10


@rc.cell(states=("h", "c"), output="h")
def peephole(x, h, c, p):
    """An LSTM whose gates also see the cell state (Gers & Schmidhuber, 2000)."""
    z = rc.concat(h, x)
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i") + p.vector("p_i") * c)
    f = rc.sigmoid(p.linear("W_f", z, bias="b_f") + p.vector("p_f") * c)
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))
    c_new = f * c + i * g
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o") + p.vector("p_o") * c_new)
    return {"h": o * rc.tanh(c_new), "c": c_new}


class EagerPeephole(nn.Module):
    """The same cell as a torch loop over time, written to be fast in eager mode: the
    four gates in one matrix, the input products of all steps in one product before the
    loop, one (B, H) x (H, 4H) product per step."""

    def __init__(self, input_size, hidden_size, dtype):
        super().__init__()
        self.H = hidden_size
        for k in GATES:
            self.register_parameter("W_" + k, nn.Parameter(
                torch.empty(hidden_size, hidden_size + input_size, dtype=dtype)))
            self.register_parameter("b_" + k, nn.Parameter(torch.empty(hidden_size, dtype=dtype)))
        for k in ("i", "f", "o"):
            self.register_parameter("p_" + k, nn.Parameter(torch.empty(hidden_size, dtype=dtype)))

    def forward(self, x):
        T, B, I = x.shape
        H = self.H
        W = torch.cat([getattr(self, "W_" + k) for k in GATES])
        b = torch.cat([getattr(self, "b_" + k) for k in GATES])
        ax = (x.reshape(T * B, I) @ W[:, H:].T + b).reshape(T, B, 4 * H)
        Wh = W[:, :H].T
        h = x.new_zeros(B, H)
        c = x.new_zeros(B, H)
        outs = []
        for t in range(T):
            a_i, a_f, a_g, a_o = (ax[t] + h @ Wh).chunk(4, 1)
            i = torch.sigmoid(a_i + self.p_i * c)
            f = torch.sigmoid(a_f + self.p_f * c)
            c = f * c + i * torch.tanh(a_g)
            h = torch.sigmoid(a_o + self.p_o * c) * torch.tanh(c)
            outs.append(h)
        return torch.stack(outs), (h[None], c[None])


class Regressor(nn.Module):
    """A recurrent layer and a linear readout of every step."""

    def __init__(self, rnn, hidden_size):
        super().__init__()
        self.rnn, self.head = rnn, nn.Linear(hidden_size, hidden_size)
        self.head.to(next(rnn.parameters()).dtype)

    def forward(self, x):
        return self.head(self.rnn(x)[0])


def make_models(H, dtype, seed=0):
    """rc.torch.RNN, the eager loop (same weights) and nn.LSTM, each in a Regressor."""
    torch.manual_seed(seed)
    compiled = Regressor(rc.torch.RNN(peephole, H, H, dtype=dtype), H)
    eager = Regressor(EagerPeephole(H, H, dtype), H)
    with torch.no_grad():
        for name, p in named_like_eager(compiled).items():
            dict(eager.named_parameters())[name].copy_(p)
    torch.manual_seed(seed)
    builtin = Regressor(nn.LSTM(H, H).to(dtype), H)
    return {"rc.torch.RNN": compiled, "eager loop": eager, "nn.LSTM": builtin}


def named_like_eager(model):
    """A model's parameters under the eager loop's names (rc.torch.RNN's carry "_l0")."""
    return {name.removesuffix("_l0"): p for name, p in model.named_parameters()}


def training_step(model, x, target):
    """A callable: zero the gradients, forward, MSE loss, backward, an SGD step."""
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(x), target).backward()
        opt.step()
    return step


def verify(T=7, B=3, H=5):
    """Max abs. difference of outputs and every gradient, compiled vs eager, float64."""
    models = make_models(H, torch.float64, seed=1)
    x = torch.randn(T, B, H, dtype=torch.float64)
    results = []
    for name in ("rc.torch.RNN", "eager loop"):
        xx = x.clone().requires_grad_(True)
        out = models[name](xx)
        (out * torch.linspace(-1, 1, out.numel(), dtype=torch.float64).reshape(out.shape)).sum().backward()
        grads = {n: p.grad for n, p in named_like_eager(models[name]).items()}
        results.append([out.detach(), xx.grad] + [grads[n] for n in sorted(grads)])
    return max(float((a - b).abs().max()) for a, b in zip(*results))


def bench_size(H, args):
    dtype = getattr(torch, args.dtype)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.steps, args.batch, H, generator=g, dtype=dtype)
    target = torch.randn(args.steps, args.batch, H, generator=g, dtype=dtype)
    fns = {name: training_step(m, x, target) for name, m in make_models(H, dtype).items()}
    times = time_interleaved(fns, args.repeats, args.warmup)
    return {name: float(np.median(t)) for name, t in times.items()}


def print_table(rows, args):
    names = list(rows[0][1])
    print("one training step (forward, MSE of a linear readout, backward, SGD), T=%d, B=%d, "
          "I=H, %s, 1 thread, median of %d interleaved runs (ms)"
          % (args.steps, args.batch, args.dtype, args.repeats))
    print("  ratio = rc.torch.RNN / eager loop of the same cell: below 1 means faster")
    print("%6s" % "H" + "".join("%15s" % n for n in names) + "%10s" % "ratio")
    for H, med in rows:
        print("%6d" % H + "".join("%15.2f" % med[n] for n in names)
              + "%9.2fx" % (med["rc.torch.RNN"] / med["eager loop"]))


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="H=32, T=20, 3 repeats: seconds")
    ap.add_argument("--steps", "-T", type=int, help="sequence length (100)")
    ap.add_argument("--batch", "-B", type=int, default=32, help="batch size (32)")
    ap.add_argument("--hidden", type=int, nargs="+", help="hidden sizes (32 128 512)")
    ap.add_argument("--repeats", type=int, help="timed runs per implementation (10)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed runs first (2)")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    args = ap.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(1)
    rc.set_num_threads(1)
    print("python %s, torch %s, rnncompiler %s, %s, load average %.2f"
          % (platform.python_version(), torch.__version__, rc.__version__, platform.machine(),
             os.getloadavg()[0]))
    with tempfile.TemporaryDirectory(prefix="rnnc-bench-") as cache:
        os.environ["RNNC_CACHE_DIR"] = cache
        err = verify()
        ok = err <= TOLERANCE
        print("rc.torch.RNN vs the eager loop (float64, T=7, B=3, H=5), outputs and every "
              "gradient: max abs. difference %.1e %s"
              % (err, "OK" if ok else "FAILED (> %.0e)" % TOLERANCE))
        if not ok:
            return 1
        rows = [(H, bench_size(H, args)) for H in args.hidden]
    print_table(rows, args)
    print("load average after: %.2f" % os.getloadavg()[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
