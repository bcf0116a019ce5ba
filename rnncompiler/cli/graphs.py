"""Graphs you can see: a cell's step graph (or its unrolled DAG) as Graphviz .dot text, or
drawn with matplotlib (networkx's drawing) into .svg/.png.

The step graph is shown at one of three levels: "ops" (every traced operation), "named"
(the values the cell's code names — gates such as f, i, g, o — are kept, anonymous
arithmetic is folded into them) or "fused" (what the kernel computes). Nodes carry the
names of the equations (`h[t-1]`, `a_f[t]`, `W_f`); parameters are drawn once, with an
edge into every step that uses them.
"""
from __future__ import annotations


LEVELS = ("ops", "named", "fused")
FORMATS = (".dot", ".svg", ".png")
COLOURS = {"param": "#f6c28b", "state": "#9cc3e6", "input": "#9cc3e6", "state0": "#9cc3e6",
           "linear": "#b7dfa8", "ew": "#ffffff", "concat": "#d9c8ee", "reduce": "#d9c8ee",
           "output": "#f4a6a6", "final_state": "#f4a6a6"}


# ---------------------------------------------------------------- the graph and its names

def step_graph(cell, sizes, level="named"):
    """(graph, names): the step IR at `level` and node -> (text, latex) names; the names
    are the cell's own (its variables, recorded when it was traced)."""
    from ..compiler.equations import display_names
    from ..compiler.graph import build_graph, fuse_elementwise
    if level not in LEVELS:
        raise ValueError("level: expected one of %s, got %r" % (", ".join(LEVELS), level))
    g = build_graph(cell.spec, sizes)
    if level == "fused":
        g = fuse_elementwise(g)
    elif level == "named":
        g = fuse_elementwise(g, keep={n for n in g.ops() if g[n].name})
    return g, display_names(g)


def equations_of(cell, sizes, level="named"):
    """(graph, names, Equations) of the step IR at `level`, derived by the autodiff stage
    and written with the cell's own names."""
    from ..compiler.autodiff import differentiate
    from ..compiler.equations import derive_equations
    g, names = step_graph(cell, sizes, level)
    return g, names, derive_equations(g, differentiate(g))


# ---------------------------------------------------------------- labels

def node_label(g, names, n):
    """Two lines: the value's name, and what computes it."""
    from ..compiler.ops import OPS
    d = g[n]
    name = names[n][0]
    if d.op == "param":
        return "%s\n%s" % (name, "x".join(str(s) for s in d.shape) or "scalar")
    if OPS[d.op].leaf:
        return name
    what = OPS[d.op].display(g, d, names)[0]
    if len(what) > 34:
        what = what[:31] + "..."
    return "%s = %s" % (name, what) if len(name) + len(what) < 26 else "%s =\n%s" % (name, what)


def _at_step(label, t):
    return label.replace("[t-1]", "[%d]" % (t - 1)).replace("[t]", "[%d]" % t)


def labelled(g, names, T=None):
    """A plain DiGraph to show: node -> attributes kind, label (and t when unrolled)."""
    import networkx as nx
    from ..compiler.unroll import unroll_graph
    out = nx.DiGraph(name=g.name)
    if T is None:
        for n, d in g.items():
            out.add_node(n, kind=d.op, label=node_label(g, names, n))
        out.add_edges_from((n, u) for n in g for u in g.users(n))
        return out
    dag = unroll_graph(g, T)
    for key, d in dag.nodes(data=True):
        kind = d["kind"]
        if kind == "param":
            label = node_label(g, names, "param." + key)
        elif kind == "state0":
            label = "%s[-1]\n(state0)" % key[0].split(".", 1)[1]
        elif kind == "final_state":
            label = "%s[%d]\n(final)" % (key[0].split(".", 1)[1], T - 1)
        elif kind == "output":
            label = "y[%d]" % key[1]
        else:
            label = _at_step(node_label(g, names, key[0]), key[1])
        out.add_node(key, kind=kind, label=label, t=d.get("t"))
    out.add_edges_from(dag.edges)
    return out


# ---------------------------------------------------------------- .dot

def _dot_id(key):
    text = key if isinstance(key, str) else "%s@%s" % key
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"')


def _dot_label(text):
    return '"%s"' % text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def dot_text(view, T=None):
    """Graphviz source of a `labelled` view; unrolled steps in clusters t = 0 ... T-1."""
    lines = ["digraph %s {" % _dot_id(view.graph["name"]),
             "  rankdir=%s;" % ("LR" if T else "TB"),
             '  node [shape=box, style="rounded,filled", fillcolor="#ffffff", '
             'fontname="Helvetica", fontsize=10];']

    def node_line(n, d):
        shape = ", shape=ellipse" if d["kind"] in ("state", "input", "state0", "final_state",
                                                   "output") else ""
        return "  %s [label=%s, fillcolor=\"%s\"%s];" % (
            _dot_id(n), _dot_label(d["label"]), COLOURS.get(d["kind"], "#ffffff"), shape)
    steps = sorted({d["t"] for _, d in view.nodes(data=True) if d.get("t") is not None})
    for n, d in view.nodes(data=True):
        if d.get("t") is None:
            lines.append(node_line(n, d))
    for t in steps:
        lines.append('  subgraph "cluster_t%d" {\n    label="t = %d"; style=dashed;' % (t, t))
        lines += ["  " + node_line(n, d) for n, d in view.nodes(data=True) if d.get("t") == t]
        lines.append("  }")
    for a, b in view.edges:
        faint = ' [color="#c98a3c"]' if view.nodes[a]["kind"] == "param" else ""
        lines.append("  %s -> %s%s;" % (_dot_id(a), _dot_id(b), faint))
    lines.append("}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- drawing

def _layers(view):
    """node -> row: the longest path from the inputs, parameters left out."""
    import networkx as nx
    depth = {}
    for n in nx.topological_sort(view):
        preds = [p for p in view.predecessors(n) if view.nodes[p]["kind"] != "param"]
        depth[n] = 1 + max((depth[p] for p in preds), default=-1)
    return {n: r for n, r in depth.items() if view.nodes[n]["kind"] != "param"}


def _order_rows(view, rows):
    """Reorder each row by the mean position of its neighbours above (then below, then
    above again): a few barycentre sweeps, to keep edges short and mostly uncrossed."""
    x = {n: k for ns in rows.values() for k, n in enumerate(ns)}

    def sweep(order, neighbours):
        for r in order:
            ns = rows[r]
            def centre(n):
                near = [x[m] - (len(rows[_row[m]]) - 1) / 2 for m in neighbours(n) if m in x]
                return sum(near) / len(near) if near else x[n] - (len(ns) - 1) / 2
            rows[r] = sorted(ns, key=lambda n: (centre(n), x[n]))
            x.update({n: k for k, n in enumerate(rows[r])})
    _row = {n: r for r, ns in rows.items() for n in ns}
    down, up = sorted(rows), sorted(rows, reverse=True)
    sweep(down, view.predecessors)
    sweep(up, view.successors)
    sweep(down, view.predecessors)
    return rows


def positions(view, T=None):
    """(x, y) per node: rows by depth, top to bottom, each parameter just above its first
    consumer; unrolled steps side by side, with the parameters in one row above them all."""
    steps = [n for n, d in view.nodes(data=True) if d.get("t") == 0] if T else list(view)
    sub = view.subgraph(steps)
    rows = {}
    for n, r in sorted(_layers(sub).items(), key=lambda item: item[1]):
        rows.setdefault(r, []).append(n)
    rows = _order_rows(sub, rows)
    pos = {n: (k - (len(ns) - 1) / 2, -r) for r, ns in rows.items() for k, n in enumerate(ns)}
    if T is None:
        for consumer, params in _params_by_consumer(view).items():
            cx, cy = pos[consumer]
            for k, n in enumerate(params):
                pos[n] = (cx + 0.32 * (k - (len(params) - 1) / 2), cy + 0.5)
        return pos
    width = max(x for x, _ in pos.values()) - min(x for x, _ in pos.values()) + 1.5
    pos = {n: (pos[(n[0], 0)][0] + d["t"] * width, pos[(n[0], 0)][1])
           for n, d in view.nodes(data=True) if d.get("t") is not None}
    left = min(x for x, _ in pos.values()) - 1.2
    right = max(x for x, _ in pos.values()) + 1.2
    top = max(y for _, y in pos.values())
    bottom = min(y for _, y in pos.values())
    params = [n for n, d in view.nodes(data=True) if d["kind"] == "param"]
    for k, n in enumerate(params):
        pos[n] = (left + 1.2 + (k + 0.5) * (right - left - 2.4) / len(params), top + 1.5)
    for kind, x, y0, step in (("state0", left, top, -1), ("final_state", right, bottom, 1)):
        ns = [n for n, d in view.nodes(data=True) if d["kind"] == kind]
        for k, n in enumerate(ns):
            pos[n] = (x, y0 + step * (len(ns) - 1 - k))
    return pos


def _params_by_consumer(view):
    """Consumer -> the parameters placed above it (each parameter at its first consumer)."""
    out = {}
    for n, d in view.nodes(data=True):
        if d["kind"] == "param":
            users = list(view.successors(n))
            if users:
                out.setdefault(users[0], []).append(n)
    return out


def draw(view, path, T=None, title=None, dpi=100):
    """Draw a `labelled` view into path (.svg or .png) with matplotlib."""
    import networkx as nx
    try:
        from matplotlib.figure import Figure     # no pyplot: no GUI backend, no global state
    except ImportError:
        raise ImportError("drawing .svg/.png needs matplotlib: pip install matplotlib "
                          "(or write .dot)") from None
    pos = positions(view, T)
    xs = [x for x, _ in pos.values()] or [0]
    ys = [y for _, y in pos.values()] or [0]
    fig = Figure(figsize=(min(1.5 + 1.75 * (max(xs) - min(xs) + 1), 60),
                          min(0.8 + 0.8 * (max(ys) - min(ys) + 1), 30)))
    ax = fig.add_subplot()
    params = [e for e in view.edges if view.nodes[e[0]]["kind"] == "param"]
    others = [e for e in view.edges if view.nodes[e[0]]["kind"] != "param"]
    common = dict(ax=ax, arrows=True, arrowsize=9, node_size=1400,
                  connectionstyle="arc3,rad=0.04", min_source_margin=14, min_target_margin=16)
    nx.draw_networkx_edges(view, pos, edgelist=others, edge_color="#555555", width=0.8, **common)
    nx.draw_networkx_edges(view, pos, edgelist=params, edge_color="#c98a3c", width=0.6,
                           alpha=0.55, style="dashed" if T else "solid", **common)
    for n, d in view.nodes(data=True):
        x, y = pos[n]
        ax.text(x, y, d["label"], ha="center", va="center", fontsize=8, zorder=3,
                bbox=dict(boxstyle="round,pad=0.3", fc=COLOURS.get(d["kind"], "#ffffff"),
                          ec="#444444", lw=0.6))
    ax.set_title(title or view.graph["name"], fontsize=10)
    ax.margins(0.06, 0.1)
    ax.axis("off")
    fig.tight_layout()
    meta = {"Software": None} if str(path).endswith(".png") else {"Creator": None, "Date": None}
    fig.savefig(path, dpi=dpi, metadata=meta)


def write_graph(cell, sizes, path, T=None, level="named"):
    """The step graph (T None) or the DAG unrolled over T steps, written to path by its
    extension: .dot (Graphviz text), .svg or .png (matplotlib)."""
    ext = str(path)[str(path).rfind("."):].lower() if "." in str(path) else ""
    if ext not in FORMATS:
        raise ValueError("-o: expected a file ending in %s, got %r" % (", ".join(FORMATS), str(path)))
    g, names = step_graph(cell, sizes, level)
    view = labelled(g, names, T)
    if ext == ".dot":
        with open(path, "w", encoding="utf-8") as f:
            f.write(dot_text(view, T))
    else:
        title = "%s: %s" % (cell.name, "step graph" if T is None else "unrolled over T = %d" % T)
        draw(view, path, T, title=title)
    return view
