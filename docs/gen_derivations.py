"""Regenerate docs/derivations.md (its generated blocks) and its step-graph pictures from
the package itself.

    python docs/gen_derivations.py            # rewrite the blocks, redraw stale pictures
    python docs/gen_derivations.py --check    # exit 1 if the page or a picture is stale

A generated block is everything between the marker lines
`<!-- BEGIN GENERATED: NAME -->` and `<!-- END GENERATED: NAME -->` (as in
docs/gen_bptt.py). For each cell (LSTM, GRU, Elman; I=3, H=4, float64): its source, its
step graph drawn by `rnnc graph`'s code into docs/img/derivations-NAME.png, its forward
and backward equations as the autodiff stage derives them over the graph whose named
values (the gates) are kept, and a table that reads the backward lines. The page records
a digest of each graph, so a changed graph makes --check fail until the picture is redrawn.
"""
from __future__ import annotations

import argparse
import difflib
import hashlib
import inspect
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))     # the checkout's package, installed or not
sys.path.insert(0, HERE)                      # gen_bptt's marker handling

import rnncompiler as rc  # noqa: E402
from rnncompiler.cli import graphs  # noqa: E402
from gen_bptt import render  # noqa: E402

DOC = os.path.join(HERE, "derivations.md")
SIZES = {"I": 3, "H": 4}


@rc.cell(states=("h", "c"), output="h")
def lstm(x, h, c, p):
    z = rc.concat(h, x)                              # [h_{t-1}; x_t]
    f = rc.sigmoid(p.linear("W_f", z, bias="b_f"))   # forget gate
    i = rc.sigmoid(p.linear("W_i", z, bias="b_i"))   # input gate
    g = rc.tanh(p.linear("W_g", z, bias="b_g"))      # candidate
    o = rc.sigmoid(p.linear("W_o", z, bias="b_o"))   # output gate
    c_new = f * c + i * g
    h_new = o * rc.tanh(c_new)
    return {"h": h_new, "c": c_new}


@rc.cell(states=("h",))
def gru(x, h, p):
    r = rc.sigmoid(p.linear("W_ir", x, bias="b_ir") + p.linear("W_hr", h, bias="b_hr"))
    u = rc.sigmoid(p.linear("W_iz", x, bias="b_iz") + p.linear("W_hz", h, bias="b_hz"))
    n = rc.tanh(p.linear("W_in", x, bias="b_in") + r * p.linear("W_hn", h, bias="b_hn"))
    return {"h": (1 - u) * n + u * h}


@rc.cell(states=("h",))
def elman(x, h, p):
    return {"h": rc.tanh(p.linear("W", rc.concat(h, x), bias="b"))}


# What each table row of a cell reads: (the textbook quantity, the left-hand sides of the
# derived lines that make it, what it says). A left-hand side that no longer occurs is an
# error: the page must be rewritten, not silently emptied.
READINGS = {
    "lstm": [
        ("δh_t", ["δh[t]"], "the seed: dL/dy_t, plus the adjoint step t+1 carries back"),
        ("δo_t", ["δo[t]"], "the output gate, through h_t = o_t ⊙ tanh(c_t)"),
        ("δc_t", ["δc[t]"], "carried back from step t+1, plus the path through "
         "h_t = o_t ⊙ tanh(c_t): δh_t ⊙ o_t ⊙ (1 − tanh² c_t)"),
        ("δf_t", ["δf[t]"], "c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t by f_t"),
        ("δi_t", ["δi[t]"], "... by i_t"),
        ("δg_t", ["δg[t]"], "... by g_t"),
        ("δc_{t-1}", ["δc[t-1]"], "... by c_{t-1}: the memory path, scaled only by the "
         "forget gate; carried to step t−1"),
        ("δa_·", ["δa_o[t]", "δa_g[t]", "δa_i[t]", "δa_f[t]"],
         "through each activation, written with the saved gate: σ' = σ(1 − σ), "
         "tanh' = 1 − tanh²"),
        ("δh_{t-1}", ["δz[t]", "δh[t-1]"], "the four W_·ᵀ δa_· into z_t = [h_{t-1}; x_t], "
         "whose first H entries are δh_{t-1} (the rest δx_t)"),
        ("δW_·, δb_·", ["δW_o", "δb_o", "δW_g", "δb_g", "δW_i", "δb_i", "δW_f", "δb_f"],
         "summed over t: one weight serves every step"),
    ],
    "gru": [
        ("δh_t", ["δh[t]"], "the seed: dL/dy_t, plus the adjoint step t+1 carries back"),
        ("δu_t", ["δu[t]"], "h_t = (1 − u_t) ⊙ n_t + u_t ⊙ h_{t-1} by u_t"),
        ("δn_t", ["δn[t]"], "... by n_t"),
        ("δr_t", ["δr[t]"], "n_t = tanh(a_in + r_t ⊙ a_hn) by r_t"),
        ("δa_·", ["δa_in[t]", "δa_hn[t]", "δa_iz[t]", "δa_ir[t]"],
         "through each activation, with the saved n_t, u_t, r_t; a_iz = W_iz x_t + W_hz h_{t-1} "
         "+ b_iz + b_hz is one linear map of two operands (a_ir likewise)"),
        ("δh_{t-1}", ["δh[t-1]"], "four paths: directly through u_t ⊙ h_{t-1}, and through "
         "W_hnᵀ, W_hzᵀ and W_hrᵀ"),
        ("δx_t", ["δx[t]"], "through W_inᵀ, W_izᵀ and W_irᵀ"),
        ("δW_·, δb_·", ["δW_hn", "δb_hn", "δW_in", "δb_in", "δW_iz", "δW_hz", "δb_iz", "δb_hz",
                        "δW_ir", "δW_hr", "δb_ir", "δb_hr"],
         "summed over t"),
    ],
    "elman": [
        ("δh_t", ["δh[t]"], "the seed: dL/dy_t, plus the adjoint step t+1 carries back"),
        ("δa_t", ["δa_W[t]"], "through tanh, with the saved h_t: tanh' = 1 − h_t²"),
        ("δh_{t-1}", ["δz[t]", "δh[t-1]"], "Wᵀ δa_t into z_t = [h_{t-1}; x_t]: its first "
         "H entries"),
        ("δW, δb", ["δW", "δb"], "summed over t"),
    ],
}


def _fence(lang, text):
    return "```%s\n%s\n```" % (lang, text.rstrip("\n"))


def _code(text):
    return "`%s`" % text.replace("`", "'")


def reading_table(name, eqs):
    """The table that maps textbook quantities to the derived lines."""
    rows = ["| quantity | derived lines | what they say |", "|---|---|---|"]
    for quantity, lhss, meaning in READINGS[name]:
        lines = [eq for eq in eqs.backward if eq[0] in lhss]
        missing = [lhs for lhs in lhss if not any(eq[0] == lhs for eq in lines)]
        if missing:
            raise ValueError("%s: no derived line for %s; update READINGS" % (name, missing[0]))
        cells = "<br>".join(_code("%s %s %s" % eq) for eq in lines)
        rows.append("| %s | %s | %s |" % (quantity, cells, meaning))
    return "\n".join(rows)


def graph_digest(cell):
    """A digest of the step graph as drawn (its .dot text)."""
    g, names = graphs.step_graph(cell, SIZES, "named")
    text = graphs.dot_text(graphs.labelled(g, names))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def picture(name, doc=DOC):
    """The picture of cell `name`, in img/ next to the page."""
    return os.path.join(os.path.dirname(os.path.abspath(doc)), "img", "derivations-%s.png" % name)


def graph_block(name, cell):
    return "\n".join([
        "![The step graph of %s](img/derivations-%s.png)" % (name, name),
        "",
        "<!-- graph digest %s -->" % graph_digest(cell),
    ])


def blocks():
    """NAME -> the Markdown between the NAME markers."""
    out = {}
    for name, cell in (("lstm", lstm), ("gru", gru), ("elman", elman)):
        _, _, eqs = graphs.equations_of(cell, SIZES, "named")
        out[name + "-cell"] = _fence("python", "import rnncompiler as rc\n\n"
                                     + inspect.getsource(cell.fn))
        out[name + "-graph"] = graph_block(name, cell)
        out[name] = _fence("text", str(eqs))
        out[name + "-latex"] = "\n".join([
            "<details><summary>The same as LaTeX</summary>", "",
            _fence("latex", eqs.latex()), "", "</details>"])
        out[name + "-reading"] = reading_table(name, eqs)
    return out


def stale_pictures(old_text, new_text, doc=DOC):
    """Cells whose picture is missing or whose graph digest changed."""
    stale = []
    for name in ("lstm", "gru", "elman"):
        mark = re.compile(r"!\[[^\]]*\]\(img/derivations-%s\.png\)\s*<!-- graph digest (\w+) -->" % name)
        before, after = mark.search(old_text), mark.search(new_text)
        if (not os.path.exists(picture(name, doc)) or before is None or after is None
                or before.group(1) != after.group(1)):
            stale.append(name)
    return stale


def draw(name, doc=DOC):
    cell = {"lstm": lstm, "gru": gru, "elman": elman}[name]
    os.makedirs(os.path.dirname(picture(name, doc)), exist_ok=True)
    g, names = graphs.step_graph(cell, SIZES, "named")
    graphs.draw(graphs.labelled(g, names), picture(name, doc),
                title="%s: step graph (values the cell names kept)" % name, dpi=80)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true",
                    help="write nothing; exit 1 if the page or a picture is stale")
    ap.add_argument("--file", default=DOC,
                    help="the page (default: docs/derivations.md); pictures go to img/ beside it")
    args = ap.parse_args(argv)
    doc = args.file
    with open(doc, encoding="utf-8") as f:
        old = f.read()
    try:
        new = render(old, blocks())
    except ValueError as exc:
        print("%s: %s" % (doc, exc), file=sys.stderr)
        return 1
    stale = stale_pictures(old, new, doc)
    if args.check:
        if new != old or stale:
            diff = difflib.unified_diff(old.splitlines(), new.splitlines(), doc,
                                        doc + " (regenerated)", lineterm="", n=1)
            print("\n".join(list(diff)[:80]), file=sys.stderr)
            print("%s is stale%s: run python docs/gen_derivations.py"
                  % (doc, " (pictures: %s)" % ", ".join(stale) if stale else ""), file=sys.stderr)
            return 1
        return 0
    for name in stale:
        draw(name, doc)
        print("drew %s" % picture(name, doc))
    if new != old:
        with open(doc, "w", encoding="utf-8") as f:
            f.write(new)
        print("rewrote the generated blocks of %s" % doc)
    else:
        print("%s is up to date" % doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
