"""Regenerate the generated blocks of docs/cells.md from the package itself.

    python docs/gen_cells.py            # rewrite every generated block in place
    python docs/gen_cells.py --check    # exit 1 if docs/cells.md is stale, 0 if up to date

A generated block is everything between a pair of marker lines

    <!-- BEGIN GENERATED: NAME -->
    <!-- END GENERATED: NAME -->

NAME is one of the keys of `blocks()`: `index` (the table of every cell in rc.cells.ALL),
`catalogue` (one section per cell: its source as it is in the package, its parameters,
and its equations as `kern.equations()` prints them) and `torch-mapping` (the table
rc.from_torch / rc.to_torch use, from rc.cells.TORCH_WEIGHTS). Cells are compiled with
I=3, H=4 and P=O=2 in float64; compiled kernels come from the usual cache
($RNNC_CACHE_DIR).
"""
from __future__ import annotations

import ast
import inspect
import os
import re
import sys
import textwrap

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))     # the checkout's package, installed or not

import rnncompiler as rc  # noqa: E402
from gen_bptt import regenerate  # noqa: E402

DOC = os.path.join(HERE, "cells.md")
INPUT_SIZE, HIDDEN_SIZE, OTHER_SIZE = 3, 4, 2
GROUPS = {      # rc.cells module -> the heading of its part of the catalogue
    "simple": "Elman, Jordan, IndRNN and the small gated units",
    "lstms": "The LSTM family",
    "odyssey": "LSTM: a search space odyssey (Greff et al.)",
    "recent": "Recent cells: minGRU, minLSTM and xLSTM's sLSTM",
    "torch_forms": "PyTorch's forms (for rc.from_torch / rc.to_torch)",
    "reservoir": "Reservoir computing: constant weights, a readout trained outside",
    "depth": "Reading the layer below's memory: the depth-gated LSTM",
}


def _fence(lang, text):
    return "```%s\n%s\n```" % (lang, text.rstrip("\n"))


def _group(cell):
    return cell.fn.__module__.rsplit(".", 1)[-1]


def _title(cell):
    """The first line of the cell's docstring."""
    return inspect.getdoc(cell.fn).splitlines()[0].strip()


def _factory(cell):
    """The rc.cells factory that made the cell, or None for a module-level cell."""
    outer = cell.fn.__qualname__.split(".<locals>.")
    return getattr(rc.cells, outer[0]) if len(outer) > 1 else None


def _options(cell):
    """The factory options the cell closes over, name -> value (literals only), in the
    order of the factory's signature."""
    values = [c.cell_contents for c in cell.fn.__closure__ or ()]
    closed = dict(zip(cell.fn.__code__.co_freevars, values))
    order = list(inspect.signature(_factory(cell)).parameters) if closed else []
    names = [n for n in order if n in closed] + sorted(set(closed) - set(order))
    options = {n: closed[n] for n in names}
    for name, value in options.items():
        if ast.literal_eval(repr(value)) != value:
            raise ValueError("%s: option %s=%r is not a literal" % (cell.name, name, value))
    return options


def _source(cell):
    """A runnable block: imports, the options it closes over, the cell's own source."""
    body = textwrap.dedent(inspect.getsource(cell.fn))
    head = (["import sympy"] if "sympy." in body else []) + ["import rnncompiler as rc", ""]
    factory = _factory(cell)
    if factory is not None:
        head += ["# options of this instance of rc.cells.%s" % factory.__name__]
        head += ["%s = %r" % item for item in _options(cell).items()] + ["", ""]
    else:
        head += [""]
    return _fence("python", "\n".join(head) + body)


def _sizes(cell):
    return {name: OTHER_SIZE for name in rc.cells.size_names(cell)}


def _compile(cell):
    return rc.compile(cell, input_size=INPUT_SIZE, hidden_size=HIDDEN_SIZE, dtype="float64",
                      sizes=_sizes(cell))


def _usage(name, cell, kern):
    """The bullet list under a cell's heading."""
    sizes = rc.cells.size_names(cell)
    call = "rc.compile(rc.cells.%s, input_size=I, hidden_size=H%s)" % (
        name, ", sizes={%s}" % ", ".join('"%s": n' % s for s in sizes) if sizes else "")
    states = ", ".join("`%s` (%s)" % (s, size) for s, size in cell.states.items())
    shapes = ", ".join("`%s` %s" % (p, tuple(shape)) for p, shape in kern.param_shapes.items())
    lines = ["- compile: `%s`" % call,
             "- states: %s; output size %d at the sizes below" % (states, kern.output_size)]
    factory = _factory(cell)
    if factory is not None:
        made = re.search(r"^%s = (%s\(.*\))$" % (name, factory.__name__),
                         inspect.getsource(sys.modules[cell.fn.__module__]), re.M)
        lines.append("- `rc.cells.%s = rc.cells.%s`; the options: `%s%s`" % (
            name, made.group(1), factory.__name__, inspect.signature(factory)))
    lines.append("- parameters (I=%d, H=%d%s): %s" % (
        INPUT_SIZE, HIDDEN_SIZE, "".join(", %s=%d" % (s, OTHER_SIZE) for s in sizes), shapes))
    return "\n".join(lines)


def _equations(kern):
    eqs = kern.equations()
    forward = "\n".join("%s %s %s" % eq for eq in eqs.forward)
    backward = "\n".join("%s %s %s" % eq for eq in eqs.backward)
    summary = "<details><summary>Backward (derived: %d lines)</summary>" % len(eqs.backward)
    return "\n".join(["Forward, as `kern.equations()` prints it:", "", _fence("text", forward), "",
                      summary, "", _fence("text", backward), "", "</details>"])


def _section(name, cell):
    kern = _compile(cell)
    return "\n\n".join(["### `rc.cells.%s`" % name, "**%s**" % _title(cell),
                        _usage(name, cell, kern), _source(cell), _equations(kern)])


def catalogue():
    parts, group = [], None
    for name, cell in rc.cells.ALL.items():
        if _group(cell) != group:
            group = _group(cell)
            parts.append("## %s" % GROUPS[group])
        parts.append(_section(name, cell))
    return "\n\n".join(parts)


def _anchor(name):
    """The anchor GitHub gives the heading "### `rc.cells.NAME`"."""
    return "#rccells" + name


def index():
    rows = ["| cell | what it is | states | sizes to bind |", "|---|---|---|---|"]
    for name, cell in rc.cells.ALL.items():
        title = _title(cell).rstrip(".")
        states = ", ".join("%s (%s)" % kv for kv in cell.states.items())
        sizes = ", ".join('`"%s"`' % s for s in rc.cells.SIZES[name]) or "—"
        rows.append("| [`%s`](%s) | %s | %s | %s |" % (name, _anchor(name), title, states, sizes))
    return "\n".join(rows)


MODULES = {     # TORCH_WEIGHTS key -> (torch modules, cell(s))
    "rnn": ("`nn.RNN`, `nn.RNNCell`", "`rnn_tanh_torch` / `rnn_relu_torch` (by `nonlinearity`)"),
    "lstm": ("`nn.LSTM`, `nn.LSTMCell`", "`lstm_torch`; `lstm_proj_torch` when `proj_size` > 0"),
    "gru": ("`nn.GRU`, `nn.GRUCell`", "`gru_torch`"),
}


def _torch_shape(tensor, gates):
    """Symbolic shape of a torch tensor with `gates` gates stacked (P: proj_size)."""
    rows = "P" if tensor == "weight_hr" else ("H" if gates == 1 else "%dH" % gates)
    cols = {"weight_ih": ", I", "weight_hh": ", H or P", "weight_hr": ", H"}.get(tensor, ",")
    return "(%s%s)" % (rows, cols)


def torch_mapping():
    rows = ["| module | cell | torch tensor (`_l0` on nn.RNN/LSTM/GRU) | shape | cell parameters, "
            "top rows first |", "|---|---|---|---|---|"]
    for kind, layout in rc.cells.TORCH_WEIGHTS.items():
        modules, cell = MODULES[kind]
        for tensor, names in layout.items():
            shape = _torch_shape(tensor, len(names))
            if kind != "lstm":
                shape = shape.replace(", H or P", ", H")
            rows.append("| %s | %s | `%s` | %s | %s |" % (
                modules, cell, tensor, shape, ", ".join("`%s`" % n for n in names)))
            modules = cell = ""
    return "\n".join(rows)


def blocks():
    """NAME -> the Markdown that belongs between the NAME markers."""
    return {"index": index(), "catalogue": catalogue(), "torch-mapping": torch_mapping()}


def main(argv=None):
    return regenerate(argv, DOC, blocks, "gen_cells.py")


if __name__ == "__main__":
    raise SystemExit(main())
