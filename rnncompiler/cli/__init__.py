"""The `rnnc` command line: check, show, export, graph, bench and demo a cell named
path/to/file.py:name or package.module:name. User mistakes end in one line on stderr
and exit code 2; a failed gradient check exits with 1.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import sys

from ..errors import CellError, CompileError

CELL_HELP = ("the cell: path/to/file.py:name (a file defining it with @rc.cell) or "
             "package.module:name, e.g. rnncompiler.cells:lstm")


class UsageError(Exception):
    """A mistake on the command line: printed as one line, exit code 2."""


# ---------------------------------------------------------------- cells and sizes

def load_cell(ref):
    """The cell named by 'path/to/file.py:name' or 'package.module:name'."""
    import rnncompiler as rc
    where, _, name = ref.rpartition(":")
    if not where or not name:
        raise UsageError("CELL: expected path/to/file.py:name or package.module:name, got %r"
                         % ref)
    module = _load_file(where) if where.endswith(".py") else _import(where)
    cell = getattr(module, name, None)
    if not isinstance(cell, rc.Cell):
        found = sorted(k for k, v in vars(module).items() if isinstance(v, rc.Cell))
        raise UsageError("CELL: %s has no cell named %r (cells there: %s)"
                         % (where, name, ", ".join(found) or "none"))
    return cell


def _load_file(path):
    if not os.path.isfile(path):
        raise UsageError("CELL: no such file: %s" % path)
    spec = importlib.util.spec_from_file_location("_rnnc_cli_cells", path)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, os.path.dirname(os.path.abspath(path)))   # its sibling imports
    try:
        spec.loader.exec_module(module)
    except CellError:
        raise
    except SyntaxError as exc:
        raise UsageError("CELL: %s:%s: %s" % (path, exc.lineno, exc.msg)) from None
    except Exception as exc:
        raise UsageError("CELL: running %s failed: %s: %s" % (path, type(exc).__name__, exc)) from None
    finally:
        sys.path.pop(0)
    return module


def _import(name):
    try:
        return importlib.import_module(name)
    except CellError:
        raise
    except ImportError as exc:
        raise UsageError("CELL: cannot import %s: %s" % (name, exc)) from None


def parse_sizes(items):
    """{'P': 3} from ['P=3']; None when there are none."""
    sizes = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key or not value.strip().isdigit():
            raise UsageError("--size: expected NAME=N with N a positive int, got %r" % item)
        sizes[key.strip()] = int(value)
    return sizes or None


def bound_sizes(cell, args):
    """name -> int for every size, checked (H, I and --size)."""
    from ..compiler.dsl import bind_sizes
    return bind_sizes(cell, args.input_size, args.hidden_size, parse_sizes(args.size))


def _positive(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a positive int, got %r" % text) from None
    if v < 1:
        raise argparse.ArgumentTypeError("expected a positive int, got %d" % v)
    return v


# ---------------------------------------------------------------- commands

def cmd_check(args):
    import rnncompiler as rc
    cell = load_cell(args.cell)
    sizes = parse_sizes(args.size)
    # the full check below reports what the build's self-check would only refuse
    kern = rc.compile(cell, args.input_size, args.hidden_size, "float64", sizes=sizes,
                      verify=False)
    report = rc.gradcheck(kern, T=args.steps, B=args.batch, seed=args.seed)
    print(report)
    if args.plot:
        _plot_flow(cell, kern, args)
    return 0 if report.ok else 1


def _plot_flow(cell, kern, args):
    import numpy as np
    import rnncompiler as rc
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install matplotlib") from None
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.plot_steps, args.batch, kern.input_size))
    flow = rc.gradient_flow(kern, kern.init_params(seed=args.seed), x)
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    flow.plot(ax=ax)
    ax.set_title("%s: gradient flow over T = %d (%s)" % (cell.name, args.plot_steps, flow.seed),
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(args.plot)
    print("wrote %s (‖dL/ds_t‖ per step; ‖dL/ds_0‖ / ‖dL/ds_T-1‖ = %.3g)"
          % (args.plot, flow.ratio()))


def cmd_show(args):
    import rnncompiler as rc
    cell = load_cell(args.cell)
    kern = rc.compile(cell, args.input_size, args.hidden_size, "float64",
                      sizes=parse_sizes(args.size))
    eqs = kern.equations()
    print(eqs.latex() if args.latex else eqs)
    return 0


def cmd_export(args):
    import rnncompiler as rc
    cell = load_cell(args.cell)
    exp = rc.export_c(cell, args.output, args.input_size, args.hidden_size, args.dtype,
                      name=args.name, sizes=parse_sizes(args.size),
                      blas="cblas" if args.blas else False)
    print("wrote %s and %s (%s, %s; %d parameters)"
          % (exp.header, exp.source, "float" if exp.dtype == "float32" else "double",
             "CBLAS" if args.blas else "plain C loops", exp.param_count))
    print("build: cc -std=c99 -O2 -c %s  (link with %s)"
          % (exp.source, "-lm and a CBLAS, e.g. -lopenblas" if args.blas else "-lm"))
    return 0


def cmd_graph(args):
    from .graphs import write_graph
    cell = load_cell(args.cell)
    view = write_graph(cell, bound_sizes(cell, args), args.output, T=args.unroll,
                       level=args.level)
    what = "step graph" if args.unroll is None else "graph unrolled over T = %d" % args.unroll
    print("wrote %s: the %s of %s (%d nodes, %d edges)"
          % (args.output, what, cell.name, view.number_of_nodes(), view.number_of_edges()))
    return 0


def cmd_bench(args):
    from .bench import run_bench
    cell = load_cell(args.cell)
    if args.input_size is None:
        args.input_size = args.hidden_size
    return run_bench(cell, args, bound_sizes(cell, args))


def cmd_demo(argv):
    """The demo parses its own options (rnnc demo --help lists them)."""
    from ..demo import main as demo_main
    return demo_main(argv, prog="rnnc demo")


# ---------------------------------------------------------------- the parser

def _cell_args(p, hidden=4, input_help="input size I (default 3)"):
    p.add_argument("cell", metavar="CELL", help=CELL_HELP)
    p.add_argument("--input-size", type=_positive, default=None if "H" in input_help else 3,
                   metavar="I", help=input_help)
    p.add_argument("--hidden-size", type=_positive, default=hidden, metavar="H",
                   help="hidden size H (default %d)" % hidden)
    p.add_argument("--size", action="append", metavar="NAME=N",
                   help="bind another size the cell uses (repeat for several)")


def build_parser():
    fmt = argparse.HelpFormatter
    ap = argparse.ArgumentParser(
        prog="rnnc", formatter_class=fmt,
        description="rnncompiler: check, show, export, draw and time recurrent cells.",
        epilog="CELL is path/to/file.py:name or package.module:name. "
               "`rnnc COMMAND --help` describes each command.")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("check", formatter_class=fmt, help="gradcheck a cell (exit 1 on failure)",
                       description="Compare every gradient of the cell (float64) with central "
                       "finite differences and print the table. Exit code 0 when every block "
                       "passes, 1 when one fails, 2 on a usage error.")
    _cell_args(p)
    p.add_argument("--steps", type=_positive, default=5, metavar="T", help="sequence length (default 5)")
    p.add_argument("--batch", type=_positive, default=2, metavar="B", help="batch rows (default 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--plot", metavar="FILE.png",
                   help="also draw the gradient flow ‖dL/ds_t‖ over --plot-steps steps "
                   "(rc.gradient_flow) into FILE (needs matplotlib)")
    p.add_argument("--plot-steps", type=_positive, default=50, metavar="T",
                   help="sequence length of the --plot (default 50)")
    p.set_defaults(fn=cmd_check)

    p = sub.add_parser("show", formatter_class=fmt, help="print the forward and derived backward equations",
                       description="Print the cell's forward equations and the backward "
                       "(BPTT) equations derived from them, as kern.equations() does.")
    _cell_args(p)
    p.add_argument("--latex", action="store_true", help="print LaTeX align environments")
    p.set_defaults(fn=cmd_show)

    p = sub.add_parser("export", formatter_class=fmt, help="write the cell as standalone C (NAME.h, NAME.c)",
                       description="Write NAME.h and NAME.c: the forward and backward kernels "
                       "in portable C99 (libm only, or a CBLAS with --blas), as rc.export_c. "
                       "The header documents every function and the memory layouts.")
    _cell_args(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory (created)")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="float32 (C float, default) or float64 (double)")
    p.add_argument("--name", help="prefix of every C symbol and the file names (default: the cell's name)")
    p.add_argument("--blas", action="store_true",
                   help="call cblas_sgemm/cblas_dgemm for linear maps (default: plain C loops)")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("graph", formatter_class=fmt, help="draw the step graph or the unrolled DAG",
                       description="Write the cell's step graph, or the graph unrolled over T "
                       "steps (parameters drawn once, with an edge into every step that uses "
                       "them), as Graphviz .dot text or drawn into .svg/.png (matplotlib).")
    _cell_args(p)
    p.add_argument("-o", "--output", required=True, metavar="FILE",
                   help="FILE.dot, FILE.svg or FILE.png")
    p.add_argument("--unroll", type=_positive, metavar="T", help="unroll over T steps")
    p.add_argument("--level", choices=("ops", "named", "fused"), default="named",
                   help="ops: every traced operation; named (default): the values the cell's "
                   "code names (gates) kept, the rest folded in; fused: what the kernel computes")
    p.set_defaults(fn=cmd_graph)

    p = sub.add_parser("bench", formatter_class=fmt, help="time forward+backward (with PyTorch when it has a peer)",
                       description="Time forward+backward over a (T, B, I) batch: the median of "
                       "--repeats runs, after a warm-up. When the cell is, operation for "
                       "operation, the LSTM or the GRU of rnncompiler's docs and PyTorch is "
                       "installed, torch.nn.LSTM/GRU of the same sizes runs alongside, "
                       "interleaved, on the same number of threads.")
    _cell_args(p, hidden=128, input_help="input size I (default: H)")
    p.add_argument("--batch", type=_positive, default=32, metavar="B", help="batch rows (default 32)")
    p.add_argument("--steps", type=_positive, default=100, metavar="T", help="sequence length (default 100)")
    p.add_argument("--hidden", type=_positive, dest="hidden_size", metavar="H",
                   default=argparse.SUPPRESS,
                   help="the same as --hidden-size")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="default float32")
    p.add_argument("--repeats", type=_positive, default=10, help="timed runs (default 10)")
    p.add_argument("--threads", type=_positive, default=1, help="threads for both (default 1)")
    p.add_argument("--torch", choices=("auto", "lstm", "gru", "none"), default="auto",
                   help="the PyTorch peer: auto (detect an LSTM or GRU), lstm or gru "
                   "(time that module of the same sizes even if the cell differs), or none")
    p.set_defaults(fn=cmd_bench)

    sub.add_parser("demo", add_help=False, help="what `make demo` runs (rnnc demo --help: "
                   "its options)")

    p = sub.add_parser("cache", formatter_class=fmt, help="show or empty the kernel cache",
                       description="info: the cache directory ($RNNC_CACHE_DIR, else "
                       "$XDG_CACHE_HOME/rnncompiler, else ~/.cache/rnncompiler), its entries, "
                       "their total size and the runtime object. clear: remove the entries "
                       "(only files the cache names; a directory that is not yours or that "
                       "others can write is refused).")
    p.add_argument("action", choices=("info", "clear"))
    p.set_defaults(fn=_cmd_cache)
    return ap


def _cmd_cache(args):
    from .cache import cmd_cache
    return cmd_cache(args)


def _one_line(exc):
    text = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(str(text).split()) or type(exc).__name__


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["demo"]:
        return cmd_demo(argv[1:])
    args = build_parser().parse_args(argv)
    if args.fn is cmd_bench:
        from .bench import pinned_env
        env = pinned_env(args.threads)
        if env is not None:
            return _rerun_pinned(argv, env)
    try:
        return args.fn(args)
    except CompileError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "the C compiler failed"
        print("rnnc: %s" % first, file=sys.stderr)
        return 2
    except (UsageError, CellError, ValueError, KeyError, TypeError, OSError, ImportError) as exc:
        print("rnnc: %s" % _in_cli_terms(_one_line(exc)), file=sys.stderr)
        return 2


def _rerun_pinned(argv, env):
    """`rnnc bench` again in a process whose BLAS and OpenMP pools have the thread count
    asked for from the start (they are sized when their libraries load: idle workers
    spinning on a small machine would tilt the comparison), its output passed on."""
    import subprocess
    proc = subprocess.run([sys.executable, "-m", "rnncompiler.cli"] + argv, env=env,
                          capture_output=True, text=True)
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    return proc.returncode


def _in_cli_terms(message):
    """The library's advice as the command line takes it: sizes are bound by --size."""
    return re.sub(r"pass rc\.compile\(\.\.\., sizes=\{'(\w+)': n\}\)",
                  r"pass --size \1=N (e.g. --size \1=8)", message)


if __name__ == "__main__":
    raise SystemExit(main())
