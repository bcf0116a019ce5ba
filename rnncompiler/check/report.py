"""What rc.gradcheck found, as plain values, and the same report as text, Markdown and
HTML: one table per kind of check, then a diagnosis naming what is wrong."""
from __future__ import annotations

import html
from dataclasses import dataclass, field

import numpy as np

MAX_STEP_ROWS = 16      # longer sequences show their wrong steps and both ends


@dataclass
class StepCheck:
    """Step t's backward, checked on its own (columns): the adjoint δs[t]⁺ the full backward
    carries into it, its contribution to each parameter's gradient, δx[t], and the adjoint
    δs[t-1] it passes back, for t = T-1 down to 0.

    errors[t, j] and passed[t, j] are those of column j at step t; sum_errors compares
    Σ_t of the contributions with the gradient of the full backward pass."""
    columns: list
    errors: np.ndarray
    passed: np.ndarray
    sum_errors: dict
    sum_passed: dict
    output_states: list

    @property
    def ok(self):
        return bool(self.passed.all()) and all(self.sum_passed.values())

    @property
    def first_wrong(self):
        """The latest step whose backward disagrees (the steps after it all agree): where
        the error enters. None when every step agrees."""
        bad = np.flatnonzero(~self.passed.all(axis=1))
        return int(bad[-1]) if bad.size else None

    def wrong_columns(self, t):
        return [c for c, p in zip(self.columns, self.passed[t], strict=True) if not p]


@dataclass
class PartialCheck:
    """One derived partial ∂f/∂a of one fused elementwise node, against central
    differences of f at sampled points."""
    node: str
    where: str
    equation: str           # the forward equation, e.g. "c[t] = c[t-1]*σ(a_f[t]) + ..."
    result: str             # its left side, e.g. "c[t]"
    operand: str            # e.g. "c[t-1]"
    derived: str            # the partial as derived, in the same names
    error: float
    ok: bool
    points: int
    at: dict = field(default_factory=dict)     # operand values at the worst point
    derived_value: float = 0.0
    numeric_value: float = 0.0


@dataclass
class ActivationCheck:
    """A hand-written derivative (rc.activation(..., derivative=...)) against sympy's
    derivative of the forward expression and against central differences."""
    name: str
    forward: str
    given: str
    sympy: str
    error: float            # largest relative difference to either
    ok: bool
    points: int
    at: float = 0.0
    given_value: float = 0.0
    sympy_value: float = 0.0
    numeric_value: float = 0.0


@dataclass
class GradcheckReport:
    """ok, max_rel_error and errors per block (params, x, state0.<s>), then what localises:
    `steps` (per time step), `partials` (per derived equation), `activations` (per
    hand-written derivative), and `diagnosis()` in words. print(report) shows it all;
    to_markdown() and to_html() render it."""
    ok: bool
    max_rel_error: float
    errors: dict
    passed: dict = field(default_factory=dict)
    rtol: float = 1e-5
    atol: float = 1e-8
    reference: str = "central finite differences"
    name: str = ""
    dtype: str = "float64"
    mode: str = "jacobian"
    seeds: dict = field(default_factory=dict)
    sizes: dict = field(default_factory=dict)     # T, B, I, H
    worst: dict = field(default_factory=dict)     # block -> where its largest difference is
    steps: StepCheck = None
    forward: object = None      # a ForwardCheck (check/forward.py), when there is a reference
    partials: list = field(default_factory=list)
    activations: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def wrong_partials(self):
        return [p for p in self.partials if not p.ok]

    def wrong_activations(self):
        return [a for a in self.activations if not a.ok]

    def diagnosis(self):
        """Sentences naming each wrong activation, partial, step and block."""
        return diagnose(self)

    def __str__(self):
        return "\n".join(_render(self, _text_table, lambda s: s, ""))

    def to_markdown(self):
        return "\n".join(_render(self, _markdown_table, lambda s: s, ""))

    def to_html(self):
        body = "\n".join(_render(self, _html_table, lambda s: "<p>%s</p>" % html.escape(s), ""))
        return '<div class="rnnc-gradcheck">\n%s\n</div>' % body


# ---------------------------------------------------------------- diagnosis

def _fmt(v):
    return "%.4g" % v


def diagnose(r):
    forward_wrong = r.forward is not None and not r.forward.ok
    out = [_forward_diagnosis(r.forward)] if forward_wrong else []
    for a in r.wrong_activations():
        out.append("the hand-written derivative of %s is wrong: given %s, sympy derives %s; at "
                   "u = %s the given one is %s, sympy's %s, finite differences %s"
                   % (a.name, a.given, a.sympy, _fmt(a.at), _fmt(a.given_value),
                      _fmt(a.sympy_value), _fmt(a.numeric_value)))
    for p in r.wrong_partials():
        at = ", ".join("%s = %s" % (k, _fmt(v)) for k, v in p.at.items())
        value = "" if p.derived == _fmt(p.derived_value) else " = %s" % _fmt(p.derived_value)
        out.append("∂%s/∂%s is derived wrongly in %s (%s): derived %s%s, finite "
                   "differences give %s at %s"
                   % (p.result, p.operand, p.equation, p.where, p.derived, value,
                      _fmt(p.numeric_value), at))
    s = None if forward_wrong else r.steps       # its blame would fall on the backward
    if s is not None and s.first_wrong is not None:
        out.append(_step_diagnosis(s))
    if s is not None and s.first_wrong is None and not all(s.sum_passed.values()):
        bad = [k for k, ok in s.sum_passed.items() if not ok]
        out.append("every step's contribution agrees, but their sum over t differs from the "
                   "full backward's gradient of %s: the accumulation over time is wrong"
                   % ", ".join(bad))
    bad = [k for k, ok in r.passed.items() if not ok]
    if bad:
        worst = max(bad, key=lambda k: r.errors[k])
        where = ", at %s" % r.worst[worst] if r.worst.get(worst) else ""
        out.append("blocks that disagree: %s; the largest relative error is %s's (%s%s)"
                   % (", ".join(bad), worst, _fmt(r.errors[worst]), where))
    return out


def _forward_diagnosis(f):
    return ("the forward pass is wrong, before any gradient: the kernel's %s at step t = %d "
            "(batch row %d, unit %d) is %s where %s gives %s (relative error %s); the "
            "gradients are those of the function the kernel computes, so the checks of the "
            "backward below cannot be trusted until the forward agrees"
            % (f.what, f.step, f.row, f.unit, _fmt(f.kernel_value), f.against,
               _fmt(f.reference_value), _fmt(f.error)))


def _step_diagnosis(s):
    t = s.first_wrong
    later = "the steps after it agree" if t < len(s.errors) - 1 else "it is the last step"
    cols = s.wrong_columns(t)
    entering = [c for c in cols if c.endswith("⁺")]
    back = [c for c in cols if c.startswith("δ") and c.endswith("[t-1]")]
    what = ""
    if entering:
        what = ": the adjoint %s that the full backward pass carries into step %d is wrong, " \
               "although step %d alone passes back the right one — the error is between the " \
               "steps (the carry of the time loop, or dL/dy[%d] read from the wrong place)" \
               % (", ".join(entering), t, t + 1, t)
    elif back and len(back) == len(cols):
        what = ": only the adjoint it carries back (%s) is wrong, so a term of the carry " \
               "through the state is missing or wrong" % ", ".join(back)
    return "step t = %d is where the backward pass first goes wrong (%s); wrong there: %s%s" \
        % (t, later, ", ".join(cols), what)


# ---------------------------------------------------------------- tables

def _e(v):
    return "%.1e" % v


def _tables(r):
    """(title, header, rows, legend) of each part of the report; a row that is a string
    heads a group of rows (the equation its partials belong to)."""
    word = "numeric" if "finite" in r.reference else "reference"
    tables = [("blocks: gradcheck against " + r.reference,
               ["block", "rel. error", "", "largest difference at"],
               [[k, _e(e), "ok" if r.passed.get(k, True) else "FAIL", r.worst.get(k, "")]
                for k, e in r.errors.items()],
               "rel. error = max|analytic − %s| / max(max|%s|, atol/rtol)" % (word, word))]
    if r.forward is not None:
        f = r.forward
        tables.insert(0, ("forward: outputs and states after every step against " + f.against,
                          ["compared", "rel. error", "", "first difference at"],
                          [["outputs, states", _e(f.error), "ok" if f.ok else "FAIL",
                            "" if f.ok else "%s, t = %d, row %d, unit %d"
                            % (f.what, f.step, f.row, f.unit)]], ""))
    if r.steps is not None:
        tables.append(_step_table(r.steps))
    if r.partials:
        rows, node = [], None
        for p in r.partials:
            if p.node != node:
                rows.append("%s    (%s)" % (p.equation, p.where) if p.where else p.equation)
                node = p.node
            rows.append(["∂/∂" + p.operand, _e(p.error), "ok" if p.ok else "FAIL",
                         str(p.points), p.derived])
        tables.append(("derived partials: each ∂f/∂a of each fused elementwise node f against "
                       "central differences of f",
                       ["operand", "rel. error", "", "points", "derived ∂f/∂a"], rows, ""))
    if r.activations:
        tables.append(("hand-written derivatives against sympy's and central differences",
                       ["activation", "rel. error", "", "points", "forward f(u)", "given f'(u)",
                        "sympy's f'(u)"],
                       [[a.name, _e(a.error), "ok" if a.ok else "FAIL", str(a.points), a.forward,
                         a.given, a.sympy] for a in r.activations], ""))
    return tables


def _step_table(s):
    """One row per step (t = T-1 first) and one column per quantity — or, when there are
    more quantities than steps shown, the same grid transposed, to keep it narrow."""
    T = len(s.errors)
    shown = list(range(T - 1, -1, -1))
    if T > MAX_STEP_ROWS:
        keep = set(range(T - 3, T)) | set(range(3)) | {t for t in range(T) if not s.passed[t].all()}
        shown = [t for t in shown if t in keep]
    lines, prev = [], None          # (label, a cell per quantity)
    for t in shown:
        if prev is not None and prev - t > 1:
            lines.append(("…", [""] * len(s.columns)))
        lines.append((str(t), [_e(e) + ("" if ok else " *") for e, ok
                               in zip(s.errors[t], s.passed[t], strict=True)]))
        prev = t
    lines.append(("Σ_t", [(_e(s.sum_errors[c]) + ("" if s.sum_passed[c] else " *"))
                          if c in s.sum_errors else "" for c in s.columns]))
    if len(s.columns) <= len(lines):
        header = ["t"] + list(s.columns)
        rows = [[label] + cells for label, cells in lines]
    else:
        header = ["t ="] + [label for label, _ in lines]
        rows = [[c] + [cells[j] for _, cells in lines] for j, c in enumerate(s.columns)]
    return ("time steps: what step t's backward receives (δs[t]⁺) and gives (its share of "
            "each parameter's gradient, δx[t], δs[t-1])",
            header, rows,
            "* above tolerance; Σ_t: the sum of the contributions against the full backward")


def _render(r, table, para, sep):
    head = ("gradcheck of %s (%s, T=%s, B=%s): %s"
            % (r.name or "a kernel", r.dtype, r.sizes.get("T", "?"), r.sizes.get("B", "?"),
               "OK" if r.ok else "FAILED"))
    seeds = ", ".join("%s %s" % kv for kv in r.seeds.items())
    mode = {"jacobian": "full Jacobian", "projection": "random projections uᵀJv"}.get(r.mode,
                                                                                    r.mode)
    out = [para(head), para("mode: %s; seeds: %s; rtol=%g, atol=%g"
                            % (mode, seeds or "-", r.rtol, r.atol))]
    for title, header, rows, legend in _tables(r):
        out += [sep, table(title, header, rows, legend)]
    for title, words in (("diagnosis", r.diagnosis()), ("notes", list(r.notes))):
        if words:
            out += [sep, table(title, None, words, "")]
    return out


def _text_table(title, header, rows, legend):
    lines = [title]
    if header is None:
        return "\n".join(lines + ["  - " + row for row in rows])
    grid = [row for row in rows if not isinstance(row, str)]
    widths = [max(len(str(c)) for c in col) for col in zip(header, *grid, strict=True)]
    indent = "    " if len(grid) < len(rows) else "  "
    for row in [header] + rows:
        if isinstance(row, str):
            lines.append("  " + row)
            continue
        lines.append(indent + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True))
                     .rstrip())
    if legend:
        lines.append("  (%s)" % legend)
    return "\n".join(lines)


def _md(c):
    return str(c).replace("|", "\\|").replace("*", "\\*")


def _markdown_table(title, header, rows, legend):
    lines = ["**%s**" % _md(title), ""]
    if header is None:
        return "\n".join(lines + ["- " + _md(row) for row in rows])
    lines.append("| " + " | ".join(_md(h) for h in header) + " |")
    lines.append("|" + "---|" * len(header))
    for row in rows:
        cells = ["**%s**" % _md(row)] + [""] * (len(header) - 1) if isinstance(row, str) else row
        lines.append("| " + " | ".join(_md(c) if not isinstance(row, str) or k else c
                                       for k, c in enumerate(cells)) + " |")
    if legend:
        lines += ["", "_%s_" % _md(legend)]
    return "\n".join(lines)


def _html_table(title, header, rows, legend):
    esc = html.escape
    if header is None:
        return "<h4>%s</h4>\n<ul>\n%s\n</ul>" % (esc(title), "\n".join(
            "<li>%s</li>" % esc(row) for row in rows))
    cells = ["<tr>%s</tr>" % "".join("<th>%s</th>" % esc(h) for h in header)]
    for row in rows:
        if isinstance(row, str):
            cells.append('<tr><th colspan="%d">%s</th></tr>' % (len(header), esc(row)))
            continue
        cls = ' class="fail"' if any(c == "FAIL" or str(c).endswith(" *") for c in row) else ""
        cells.append("<tr%s>%s</tr>" % (cls, "".join("<td>%s</td>" % esc(str(c)) for c in row)))
    cap = "<caption>%s</caption>" % esc(title)
    foot = "<p><small>%s</small></p>" % esc(legend) if legend else ""
    return "<table>%s\n%s\n</table>%s" % (cap, "\n".join(cells), foot)
