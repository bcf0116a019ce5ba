"""`rnnc bench`: forward+backward timing of a cell, with torch.nn.LSTM/GRU alongside when
the cell is one of those (operation for operation) and PyTorch is installed.

A peer is only shown when it computes the same function: the cell's traced step graph
must match a reference LSTM or GRU up to the names of values and parameters (and so the
order of the gates), or the user names the peer with --torch and is told it is unchecked.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np

import rnncompiler as rc

# the single-thread fp32 GEMM rate of the core, measured in a child process whose BLAS is
# pinned to one thread before numpy loads it (this process's BLAS may already run many)
_GEMM_RATE = r"""
import time, numpy as np
a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
a @ a
best = min((lambda t0: (a @ a, time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(7))
print(2 * 1024 ** 3 / best / 1e9)
"""


PIN = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def pinned_env(threads):
    """The environment that pins every BLAS and OpenMP pool to `threads` (as
    benchmarks/bench_speed.py sets before loading them), or None when this process
    already has it."""
    want = {k: str(threads) for k in PIN}
    if all(os.environ.get(k) == v for k, v in want.items()):
        return None
    return dict(os.environ, **want)


def machine_facts():
    """(core, its vector ISA, single-thread fp32 GEMM GFLOP/s, 1-minute load): printed with
    every speed figure, since ratios move with the core and the machine's load. The core
    is its name with its family and model: the ISA does not tell the FMA datapath (AMD
    family 25 runs AVX-512 on 256-bit units, family 26 and Intel's server cores on 512-bit
    ones); the measured GEMM rate does."""
    from ..compiler.variants import core_name, cpu_flags, openblas_cores
    name, flags = core_name(), cpu_flags()
    isa = ("AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else
           "unknown ISA" if not flags else "SSE")
    return name, isa, gemm_peak(openblas_cores(flags)), os.getloadavg()[0]


def gemm_peak(kernel_sets=()):
    """The best single-thread fp32 GEMM rate of numpy's OpenBLAS, GFLOP/s, over its own
    pick of kernels and each of `kernel_sets` (OPENBLAS_CORETYPE names): OpenBLAS can pick
    kernels below the core's rate, or be told to by the environment. NaN if unmeasured."""
    rates = []
    for core in ("",) + tuple(kernel_sets):
        env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
        env.update({k: "1" for k in PIN})
        if core:
            env["OPENBLAS_CORETYPE"] = core
        try:
            out = subprocess.run([sys.executable, "-c", _GEMM_RATE], env=env, capture_output=True,
                                 text=True, timeout=120, check=True).stdout
            rates.append(float(out.strip()))
        except (subprocess.SubprocessError, ValueError, OSError):
            pass
    return max(rates, default=float("nan"))


def machine_line():
    name, isa, rate, load = machine_facts()
    return ("core: %s, %s, single-thread fp32 GEMM %.0f GFLOP/s; load %.2f"
            % (name, isa, rate, load))


def tuning_line(dtype="float32"):
    """What this core's kernels of dtype were tuned to (rnncompiler.compiler.tuning)."""
    from ..compiler import build, tuning
    t = tuning.for_dtype(dtype)
    blas = "OpenBLAS's %s kernels" % build.load_openblas(t.blas_core)
    if t.variant is None:
        return "%s: the ISA's default microkernel, hoisted products on OpenBLAS (%s)" % (dtype, t.source)
    mk = sum(1 for _, _, use in t.hoisted if use)
    where = ("on the microkernel at all %d measured shapes" % mk if mk == len(t.hoisted) else
             "on OpenBLAS at all %d measured shapes" % len(t.hoisted) if not mk else
             "on the microkernel at %d of %d measured shapes, on OpenBLAS at the others"
             % (mk, len(t.hoisted)))
    tn = sum(1 for _, _, use in t.tn if use)
    return ("%s: microkernel %s, hoisted products %s, weight gradients on it at %d of %d shapes; "
            "%s (%s)" % (dtype, t.variant, where, tn, len(t.tn), blas, t.source))


def summary(times):
    """name -> (min ms, median ms) of interleaved run times."""
    return {name: (float(min(t)), float(np.median(t))) for name, t in times.items()}


def reference_forms():
    """kind -> cells of rnncompiler.cells that torch.nn.LSTM / torch.nn.GRU compute: the
    concatenated LSTM (with or without a constant forget bias, which is one of torch's
    biases) and PyTorch's own forms. rc.cells.gru is not one: it resets h before the
    product, torch.nn.GRU after it."""
    from .. import cells
    return {"lstm": [cells.lstm_np, cells.lstm, cells.lstm_torch], "gru": [cells.gru_torch]}


def _comparable(cell, sizes):
    """The traced step graph with what defines the computation on nodes and edges (the
    operand position), and nothing of the names."""
    import networkx as nx
    import sympy
    from ..compiler.graph import build_graph
    g = build_graph(cell.spec, sizes)
    out = nx.DiGraph()
    results = dict((node, s) for s, node in g.new_states)
    for n, d in g.items():
        key = (d.op, d.size, d.how, tuple(d.shape),
               sympy.srepr(d.expr) if d.expr is not None else "",
               "state" if n in results else "", n == g.output)
        out.add_node(n, key=key)
        for k, a in enumerate(d.args):
            if out.has_edge(a, n):
                out.edges[a, n]["k"] += (k,)
            else:
                out.add_edge(a, n, k=(k,))
    return out


def torch_peer(cell, sizes):
    """'lstm', 'gru' or None: which torch.nn module computes what the cell computes."""
    from networkx.algorithms.isomorphism import DiGraphMatcher
    if len(cell.spec.states) > 2:
        return None
    mine = _comparable(cell, sizes)
    for kind, refs in reference_forms().items():
        for ref in refs:
            try:
                theirs = _comparable(ref, {"H": sizes["H"], "I": sizes["I"]})
            except rc.CellError:
                continue
            if mine.number_of_nodes() != theirs.number_of_nodes():
                continue
            matcher = DiGraphMatcher(mine, theirs, node_match=lambda a, b: a["key"] == b["key"],
                                     edge_match=lambda a, b: a["k"] == b["k"])
            if matcher.is_isomorphic():
                return kind
    return None


# ---------------------------------------------------------------- timing

def rnncompiler_step(kern, x, dy):
    """One forward and one backward call over the whole sequence (what the table times)."""
    params = kern.init_params(seed=0)
    return lambda: kern.backward(kern.forward(params, x), dy)


def torch_step(kind, I, H, x, dy):
    """torch.nn.LSTM / GRU as their docs show it: module call, loss, backward."""
    import torch
    torch.manual_seed(0)
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](I, H)
    module = module.to(getattr(torch, x.dtype.name))
    xt = torch.from_numpy(x).requires_grad_(True)
    dyt = torch.from_numpy(dy)

    def step():
        module.zero_grad(set_to_none=True)
        xt.grad = None
        out, _ = module(xt)
        (out * dyt).sum().backward()
    return step


def time_interleaved(fns, repeats, warmup=2):
    """name -> run times in ms, the callables taking turns after a warm-up."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(1e3 * (time.perf_counter() - t0))
    return times


def _choose_peer(cell, sizes, mode, out_size):
    """(kind or None, a sentence saying why) for --torch mode."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return None, "PyTorch is not installed: rnncompiler alone"
    if mode == "none":
        return None, "no PyTorch peer (--torch none)"
    if mode in ("lstm", "gru"):
        if out_size != sizes["H"]:
            return None, ("no PyTorch peer: torch.nn.%s outputs H = %d values per step, this "
                          "cell %d" % (mode.upper(), sizes["H"], out_size))
        return mode, ("peer torch.nn.%s of the same sizes, as asked (--torch %s); not checked "
                      "to compute what this cell computes" % (mode.upper(), mode))
    kind = torch_peer(cell, sizes)
    if kind is None:
        return None, ("no PyTorch peer: only cells that are, operation for operation, an "
                      "LSTM or a GRU have one (--torch lstm|gru times one anyway)")
    return kind, "peer torch.nn.%s: the cell computes the same function" % kind.upper()


def run_bench(cell, args, sizes):
    """Print the timing table; 0. sizes: every size bound (H, I and the cell's own)."""
    T, B, I, H = args.steps, args.batch, sizes["I"], sizes["H"]
    t0 = time.perf_counter()
    kern = rc.compile(cell, I, H, args.dtype, sizes=_own_sizes(sizes))
    compile_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    x = rng.standard_normal((T, B, I)).astype(args.dtype)
    dy = rng.standard_normal((T, B, kern.output_size)).astype(args.dtype)
    kind, why = _choose_peer(cell, sizes, args.torch, kern.output_size)
    fns = {"rnncompiler": rnncompiler_step(kern, x, dy)}
    rc.set_num_threads(args.threads)
    if kind:
        import torch
        torch.set_num_threads(args.threads)
        fns["torch.nn." + kind.upper()] = torch_step(kind, I, H, x, dy)
    print(machine_line())
    print("tuning: " + tuning_line())
    times = time_interleaved(fns, args.repeats)
    print("%s: forward+backward, T=%d, B=%d, I=%d, H=%d, %s, %d thread%s (%s in %.2f s)"
          % (cell.name, T, B, I, H, args.dtype, args.threads, "" if args.threads == 1 else "s",
             "loaded from the cache" if kern.loaded_from_cache else "compiled", compile_s))
    print(why)
    stats = summary(times)
    ours = stats["rnncompiler"]
    for name, (lo, med) in stats.items():
        # the ratio of benchmarks/bench_speed.py: rnncompiler's time over the peer's
        ratio = ("  ratio %.2f (median), %.2f (min)" % (ours[1] / med, ours[0] / lo)
                 if name != "rnncompiler" else "")
        print("  %-16s median %9.3f ms  min %9.3f ms  of %d runs%s"
              % (name, med, lo, len(times[name]), ratio))
    print("(interleaved runs, %d warm-up each; load now %.2f)" % (2, os.getloadavg()[0]))
    return 0


def _own_sizes(sizes):
    """The sizes a cell names besides H and I, as rc.compile takes them."""
    return {k: v for k, v in sizes.items() if k not in ("H", "I")} or None
