"""The `rnnc` command line: cells are named path/to/file.py:name or module:name."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys

from .errors import CellError


def load_cell(ref):
    """The cell named by 'path/to/file.py:name' or 'package.module:name'."""
    import rnncompiler as rc
    where, _, name = ref.rpartition(":")
    if not where or not name:
        raise SystemExit("rnnc: expected CELL as path/to/file.py:name, got %r" % ref)
    if where.endswith(".py"):
        if not os.path.exists(where):
            raise SystemExit("rnnc: no such file: %s" % where)
        spec = importlib.util.spec_from_file_location("_rnnc_cli_cells", where)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(where)
    cell = getattr(module, name, None)
    if not isinstance(cell, rc.Cell):
        raise SystemExit("rnnc: %s has no cell named %r" % (where, name))
    return cell


def _sizes(args):
    return dict(kv.split("=") for kv in args.size) if args.size else None


def cmd_check(args):
    import rnncompiler as rc
    sizes = {k: int(v) for k, v in (_sizes(args) or {}).items()} or None
    report = rc.gradcheck(load_cell(args.cell), input_size=args.input_size,
                          hidden_size=args.hidden_size, sizes=sizes)
    print(report)
    return 0 if report.ok else 1


def cmd_show(args):
    import rnncompiler as rc
    sizes = {k: int(v) for k, v in (_sizes(args) or {}).items()} or None
    kern = rc.compile(load_cell(args.cell), args.input_size, args.hidden_size, "float64",
                      sizes=sizes)
    eq = kern.equations()
    print(eq.latex() if args.latex else eq)
    return 0


def cmd_demo(args):
    from .demo import main as demo_main
    return demo_main([])


def main(argv=None):
    ap = argparse.ArgumentParser(prog="rnnc", description="rnncompiler: compile recurrent cells")
    sub = ap.add_subparsers(dest="command", required=True)
    for name, fn, help_ in (("check", cmd_check, "gradcheck a cell against finite differences"),
                            ("show", cmd_show, "print the forward and derived backward equations")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("cell", help="path/to/file.py:name or package.module:name")
        p.add_argument("--input-size", type=int, default=3)
        p.add_argument("--hidden-size", type=int, default=4)
        p.add_argument("--size", action="append", metavar="NAME=N", help="bind a named size")
        if name == "show":
            p.add_argument("--latex", action="store_true", help="print LaTeX")
        p.set_defaults(fn=fn)
    p = sub.add_parser("demo", help="what `make demo` runs")
    p.set_defaults(fn=cmd_demo)
    args = ap.parse_args(argv)
    try:
        return args.fn(args)
    except (CellError, ValueError, KeyError, TypeError) as exc:
        print("rnnc: %s" % exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
