"""Fused elementwise loops: one loop over (row b, unit j) per elementwise node, its
expression (forward) or its operands' adjoint contributions (backward) printed by sympy's
C99 printer after sympy.cse.
"""
from __future__ import annotations

from dataclasses import dataclass

import sympy

from .. import mathfn
from ..graph import rename_symbols
from ..notation import ascii_text, math_text


def ref(L, n, adjoint=False, uses=None):
    """(C pointer expression, row stride) of node n's value (or adjoint) at this step;
    the step pointer it names is added to the set `uses` if given. A bundle member's
    column is its named constant."""
    name, col, stride = (L.adjoint if adjoint else L.value)[n]
    if uses is not None:
        uses.add(name)
    return (name if col == 0 else "(%s + %s)" % (name, L.consts.col(n))), stride


@dataclass(frozen=True)
class Loop:
    """A fused loop: its C lines (a comment first) and the step pointers they read or
    write, recorded as the lines were made (a loop becomes a function of those)."""
    lines: tuple
    pointers: frozenset


def operand_kind(g, a):
    """row (a per-row vector), rowscalar (per-row scalar), pvec or pscalar (parameters)."""
    d = g[a]
    if d.op == "param":
        return "pscalar" if d.scalar else "pvec"
    return "rowscalar" if d.scalar else "row"


def cse_lines(exprs, printer, ctype, indent):
    """Common subexpressions as `const T tK = ...;` lines, and the reduced expressions."""
    exprs = [mathfn.expand_activations(e) for e in exprs]
    temps, reduced = sympy.cse(exprs, symbols=sympy.numbered_symbols("t", real=True),
                               order="canonical")
    lines = ["%sconst %s %s = %s;" % (indent, ctype, s, printer.doprint(e)) for s, e in temps]
    return lines, [printer.doprint(e) for e in reduced]


def comment(text):
    """A C comment in ASCII (the equations write σ, δ, ²; compilers may read another
    charset)."""
    return "/* %s */" % ascii_text(text)


def label(L, n):
    """The name a node has in comments: its name in the equations (c[t], f[t], W_f)."""
    return L.names.get(n) or L.cvar.get(n) or L.value[n][0]


def _load(g, L, a, k, ctype, indent, uses):
    """The C line that binds a_k for one (b, j)."""
    kind = operand_kind(g, a)
    if kind == "row":
        return "%sconst %s a%d = r%d[j];" % (indent, ctype, k, k)
    if kind == "rowscalar":
        ptr, stride = ref(L, a, uses=uses)
        return "%sconst %s a%d = %s[b * %d];" % (indent, ctype, k, ptr, stride)
    off = L.consts.param(a)
    uses.add("params")
    if kind == "pvec":
        return "%sconst %s a%d = params[%s + j];" % (indent, ctype, k, off)
    return "%sconst %s a%d = params[%s];" % (indent, ctype, k, off)


def _row_pointers(g, L, args, used, ctype, indent, uses, writable=()):
    out = []
    for k, a in enumerate(args):
        if k in used and operand_kind(g, a) == "row":
            ptr, stride = ref(L, a, uses=uses)
            out.append("%s%s%s *restrict r%d = %s + b * %d;"
                       % (indent, "" if k in writable else "const ", ctype, k, ptr, stride))
    return out


def _label_expr(expr, g, L, args):
    return math_text(rename_symbols(expr, {sympy.Symbol("a%d" % k, real=True):
                                           sympy.Symbol(label(L, a), real=True)
                                           for k, a in enumerate(args)}))


def forward_loop(g, L, n, printer, ctype):
    """The loop computing elementwise node n for every valid row."""
    d = g[n]
    N, args = d.size, d.args
    uses = set()
    out, stride = ref(L, n, uses=uses)
    saved = L.saved.get(n, {})
    lines, (value, *kept) = cse_lines([d.expr] + list(saved.values()), printer, ctype, " " * 12)
    used = {int(s.name[1:]) for s in d.expr.free_symbols}
    code = [comment("%s = %s" % (label(L, n), _label_expr(d.expr, g, L, args))),
            "for (ptrdiff_t b = 0; b < B; ++b) {",
            "    %s *restrict o = %s + b * %d;" % (ctype, out, stride),
            "    if (!VALID(b)) { for (ptrdiff_t j = 0; j < %d; ++j) o[j] = %s; continue; }"
            % (N, _past_length(L, n, N, uses))]
    code += _row_pointers(g, L, args, used, ctype, " " * 4, uses, writable=set(saved))
    code.append("    for (ptrdiff_t j = 0; j < %d; ++j) {" % N)
    code += [_load(g, L, a, k, ctype, " " * 8, uses) for k, a in enumerate(args) if k in used]
    code += [ln[4:] for ln in lines]
    code += ["        o[j] = %s;" % value]
    # the activations the backward pass reads, over the pre-activations they came from
    code += ["        r%d[j] = %s;" % (k, v) for k, v in zip(saved, kept, strict=True)]
    code += ["    }", "}"]
    return Loop(tuple(code), frozenset(uses))


def _past_length(L, n, N, uses):
    """What a row past its length holds: the old state when n writes a state's history
    slot, else 0."""
    if n in L.direct_states:
        uses.add(L.prev[L.direct_states[n]])
        return "%s[b * %d + j]" % (L.prev[L.direct_states[n]], N)
    return "0"


def backward_loop(g, L, op, printer, ctype):
    """The loop adding each operand's adjoint contribution g * df/da_k, valid rows only;
    None when no operand has one."""
    d = g[op.node]
    N, args = d.size, op.args
    if not op.contributions:
        return None
    # a saved activation F(E) is read from operand k's slot, under a_k's name
    stored = {S: sympy.Symbol("a%d" % k, real=True) for k, S in L.saved.get(op.node, {}).items()}
    exprs = [c.xreplace(stored) for _, c in op.contributions]
    lines, values = cse_lines(exprs, printer, ctype, " " * 8)
    used = set()
    for e in exprs:
        used |= {int(s.name[1:]) for s in e.free_symbols if s.name.startswith("a")}
    uses = set()
    gptr, gstride = ref(L, op.node, adjoint=True, uses=uses)
    # an operand whose adjoint this is the one contribution to is written, not added to
    # (and zeroed in a row past its length)
    written = [k for k, _ in op.contributions
               if args[k] in L.assigned and operand_kind(g, args[k]) == "row"]
    skip = "    if (!VALID(b)) continue;"
    if written:
        zeros = " ".join("for (ptrdiff_t j = 0; j < %d; ++j) %s[b * %d + j] = 0;"
                         % (N, *ref(L, args[k], adjoint=True, uses=uses)) for k in written)
        skip = "    if (!VALID(b)) { %s continue; }" % zeros
    code = [comment("adjoints of the operands of %s" % label(L, op.node)),
            "for (ptrdiff_t b = 0; b < B; ++b) {",
            skip,
            "    const %s *restrict gr = %s + b * %d;" % (ctype, gptr, gstride)]
    if op.uses_y:
        yptr, ystride = ref(L, op.node, uses=uses)
        code.append("    const %s *restrict yr = %s + b * %d;" % (ctype, yptr, ystride))
    code += _row_pointers(g, L, args, used, ctype, " " * 4, uses)
    accum, after = [], []
    for (k, _), value in zip(op.contributions, values, strict=True):
        a, kind = args[k], operand_kind(g, args[k])
        if kind == "row":
            dptr, dstride = ref(L, a, adjoint=True, uses=uses)
            code.append("    %s *restrict dr%d = %s + b * %d;" % (ctype, k, dptr, dstride))
            accum.append("        dr%d[j] %s= %s;" % (k, "" if k in written else "+", value))
        elif kind == "pvec":
            uses.add("dparams")
            accum.append("        dparams[%s + j] += %s;" % (L.consts.param(a), value))
        else:
            code.append("    %s acc%d = 0;" % (ctype, k))
            accum.append("        acc%d += %s;" % (k, value))
            if kind == "rowscalar":
                dptr, dstride = ref(L, a, adjoint=True, uses=uses)
                target = "%s[b * %d]" % (dptr, dstride)
            else:
                uses.add("dparams")
                target = "dparams[%s]" % L.consts.param(a)
            after.append("    %s += acc%d;" % (target, k))
    code.append("    for (ptrdiff_t j = 0; j < %d; ++j) {" % N)
    code.append("        const %s g = gr[j];" % ctype)
    if op.uses_y:
        code.append("        const %s y = yr[j];" % ctype)
    code += [_load(g, L, a, k, ctype, " " * 8, uses) for k, a in enumerate(args) if k in used]
    code += lines + accum + ["    }"] + after + ["}"]
    return Loop(tuple(code), frozenset(uses))
