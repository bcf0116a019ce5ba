"""Regenerate the generated blocks of docs/bptt.md from the package itself.

    python docs/gen_bptt.py            # rewrite every generated block in place
    python docs/gen_bptt.py --check    # exit 1 if docs/bptt.md is stale, 0 if up to date

A generated block is everything between a pair of marker lines

    <!-- BEGIN GENERATED: NAME -->
    <!-- END GENERATED: NAME -->

NAME is one of the keys of `blocks()`: the source of a cell, its equations as
`kern.equations()` prints them (text and LaTeX), and what its tape keeps; and the table of
the activations' derivatives (from the activation table, see docs/gen_activations.py). The cells are
the LSTM of the public contract (section 1) and an Elman cell, compiled with I=3, H=4 in
float64; compiled kernels come from the usual cache ($RNNC_CACHE_DIR).
"""
from __future__ import annotations

import argparse
import difflib
import inspect
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))     # the checkout's package, installed or not

import rnncompiler as rc  # noqa: E402
from gen_activations import derivative_table  # noqa: E402

DOC = os.path.join(HERE, "bptt.md")
INPUT_SIZE, HIDDEN_SIZE = 3, 4
MARKER = re.compile(r"^<!-- (BEGIN|END) GENERATED: ([A-Za-z0-9_-]+) -->[ \t]*$", re.M)


@rc.cell(states=("h", "c"), output="h")
def lstm(x, h, c, p):
    z = rc.concat(h, x)                              # [h_{t-1}; x_t]
    f = rc.sigmoid(p.linear("W_f", z, bias="b_f"))   # W_f z + b_f, W_f: (H, H+I)
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i"))
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o"))
    c_new = f * c + i * g
    h_new = o * rc.tanh(c_new)
    return {"h": h_new, "c": c_new}


@rc.cell(states=("h",))
def elman(x, h, p):
    return {"h": rc.tanh(p.linear("W", rc.concat(h, x), bias="b"))}


def _fence(lang, text):
    return "```%s\n%s\n```" % (lang, text.rstrip("\n"))


def _source(cell):
    return _fence("python", "import rnncompiler as rc\n\n" + inspect.getsource(cell.fn))


def _latex(eqs):
    return "\n".join([
        "<details><summary>The same as LaTeX (<code>kern.equations().latex()</code>)</summary>",
        "",
        _fence("latex", eqs.latex()),
        "",
        "</details>",
    ])


def blocks():
    """NAME -> the Markdown that belongs between the NAME markers."""
    out = {}
    for name, cell in (("lstm", lstm), ("elman", elman)):
        kern = rc.compile(cell, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE, dtype="float64")
        eqs = kern.equations()
        out[name + "-cell"] = _source(cell)
        out[name] = _fence("text", str(eqs))
        out[name + "-latex"] = _latex(eqs)
        out[name + "-tape"] = _fence("text", kern.tape_plan(T=100, B=32))
    out["activation-derivatives"] = derivative_table()
    return out


def render(text, generated):
    """`text` with every generated block replaced; raises ValueError on broken markers."""
    out, pos, seen = [], 0, set()
    markers = list(MARKER.finditer(text))
    if len(markers) % 2:
        raise ValueError("unbalanced GENERATED markers")
    for begin, end in zip(markers[::2], markers[1::2]):
        name = begin.group(2)
        if begin.group(1) != "BEGIN" or end.group(1) != "END" or end.group(2) != name:
            raise ValueError("marker %r at offset %d is not closed by its END marker"
                             % (name, begin.start()))
        if name not in generated:
            raise ValueError("unknown generated block %r (known: %s)"
                             % (name, ", ".join(sorted(generated))))
        if name in seen:
            raise ValueError("generated block %r appears twice" % name)
        seen.add(name)
        out.append(text[pos:begin.end()])
        out.append("\n" + generated[name] + "\n")
        pos = end.start()
    out.append(text[pos:])
    missing = sorted(set(generated) - seen)
    if missing:
        raise ValueError("generated blocks missing from the file: %s" % ", ".join(missing))
    return "".join(out)


def regenerate(argv, doc, make_blocks, script):
    """The command line of a page generator: rewrite the generated blocks of `doc`, or with
    --check write nothing and exit 1 if the page is stale."""
    ap = argparse.ArgumentParser(description="Regenerate the generated blocks of docs/%s."
                                             % os.path.basename(doc))
    ap.add_argument("--check", action="store_true",
                    help="do not write; exit 1 if the file differs from what would be written")
    ap.add_argument("--file", default=doc, help="the Markdown file (default: docs/%s)"
                    % os.path.basename(doc))
    args = ap.parse_args(argv)
    with open(args.file, encoding="utf-8") as f:
        old = f.read()
    try:
        new = render(old, make_blocks())
    except ValueError as exc:
        print("%s: %s" % (args.file, exc), file=sys.stderr)
        return 1
    if args.check:
        if new != old:
            diff = difflib.unified_diff(old.splitlines(), new.splitlines(), args.file,
                                        args.file + " (regenerated)", lineterm="", n=1)
            print("\n".join(list(diff)[:80]), file=sys.stderr)
            print("%s is stale: run python docs/%s" % (args.file, script), file=sys.stderr)
            return 1
        return 0
    if new != old:
        with open(args.file, "w", encoding="utf-8") as f:
            f.write(new)
        print("rewrote the generated blocks of %s" % args.file)
    else:
        print("%s is up to date" % args.file)
    return 0


def main(argv=None):
    return regenerate(argv, DOC, blocks, "gen_bptt.py")


if __name__ == "__main__":
    raise SystemExit(main())
