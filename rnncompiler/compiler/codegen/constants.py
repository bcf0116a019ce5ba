"""The layout as named C constants: every offset the kernel's index arithmetic uses gets a
name, listed once near the top of the kernel with its value, so `params[RNNC_P_W_f + r * 7
+ RNNC_WCOL_L0_x_t + j]` says what a bare `params[0 + r * 7 + 4 + j]` did not. Names
are made from the layout's own structure (parameters, states, bundles and their parts),
never by rewriting emitted C; the emitters look them up by the same objects. Strides,
widths and loop bounds stay numbers: they are sizes, and the loops read better with them.

Every name starts with RNNC_ and a kind (no kind's prefix is a prefix of another, and no
macro of ../csrc starts with one), then the validated identifiers of the layout; a name
wanted twice gets a free _2, _3, ..., so names chosen to collide cannot.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..graph import param_name

# enum constants are int (C99 6.7.2.2): above this the block becomes #defines, whose
# literals take a wider type by themselves
INT_MAX = 2**31 - 1

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# the comment above the constants: the kinds of name, what each locates
HEADER = """\
/* The layout as named constants, in scalars (not bytes). Offsets:
   RNNC_P_<param>              a parameter in params and dparams
   RNNC_S_<state>              a state in a state row; times B, its block in dcarry
   RNNC_PACK_<L>_<operand>     bundle L's packed weight for one operand, in pack and gpack
   RNNC_BIAS_<L>               bundle L's packed bias, in pack and gpack
   RNNC_PANEL_NT_<L>_<operand> the microkernel panels of a packed weight, in pack: for
   RNNC_PANEL_NN_<L>_<operand>   the forward (rows += operand W^T) and backward products
   RNNC_COL_<L>_<member>       a member's first column in L's rows (its first row in L's
                               packed weights)
   RNNC_WCOL_<L>_<operand>     an operand's first column in a row of its weight parameter
                               (_<member> added when the members' weights differ there)
   RNNC_CAT_<value>_<operand>  an operand's first column in a concatenation's rows
   RNNC_SLICE_<value>          a slice's first column in its operand's rows
   RNNC_ADJ_<adjoint>          a step adjoint in adj, times B
   Sizes: RNNC_PARAM_COUNT, RNNC_PACK_SIZE (packed weights, biases and panels),
   RNNC_GPACK_SIZE (their gradients: weights and biases), RNNC_ADJ_WIDTH (a row of adj).
   Operands go by their C names (x_t, s_h), members by their names in the equations; a
   name made twice gets a free _2, _3, ... Strides and loop bounds are plain numbers:
   they are sizes. */"""


@dataclass(frozen=True)
class Group:
    """Constants listed together under one comment."""
    doc: str
    constants: tuple      # ((name, value), ...)


@dataclass(frozen=True)
class Constants:
    """A kernel's named constants: the groups the C lists, and the name of each offset
    by what it locates (the emitters look names up by the layout objects they print)."""
    groups: tuple
    of: dict              # key -> name; keys as made by name_layout

    def values(self):
        """name -> value, every constant."""
        return {n: v for grp in self.groups for n, v in grp.constants}

    def param(self, p):
        """The offset of a parameter, by its node id ("param.W") or name."""
        return self.of[("param", param_name(p) if p.startswith("param.") else p)]

    def state(self, name):
        return self.of[("state", name)]

    def pack(self, b, p):
        """Bundle b's packed weight of part p."""
        return self.of[("pack", b.name, p.pack)]

    def panel(self, b, p, k):
        """Part p's microkernel panel: k = 0 forward (NT), 1 backward (NN)."""
        return self.of[("panel", b.name, p.pack, k)]

    def bias(self, b):
        return self.of[("bias", b.name)]

    def col(self, node):
        """A bundle member's first column in its bundle's rows."""
        return self.of[("col", node)]

    def wcol(self, b, k, p):
        """Where part p's columns start in the rows of member k's weight."""
        return self.of[("wcol", b.name, k, p.pack)]

    def cat(self, node, col):
        """The part of concat `node` that starts at column col."""
        return self.of[("cat", node, col)]

    def slice(self, node):
        """Where slice `node` starts in its operand's rows."""
        return self.of[("slice", node)]

    def adj(self, name):
        return self.of[("adj", name)]

    def __getitem__(self, key):
        """The whole-layout sizes: "param_count", "pack_size", "gpack_size", "adj_width"."""
        return self.of[key]


class _Names:
    """Unique names for keys. Every name wanted once is given as it is, so a suffix never
    takes a name the layout makes by itself (the second read of h is not s_h_2 when a
    state h_2 has that name); a name wanted again gets the first free _2, _3, ..."""

    def __init__(self):
        self.wanted, self.alias, self.docs = {}, {}, []

    def group(self, doc):
        self.docs.append(doc)

    def add(self, key, want, value):
        self.wanted.setdefault(key, (want, int(value), len(self.docs) - 1))

    def same(self, key, other):
        """key names what other names."""
        self.alias[key] = other

    def constants(self):
        taken, of = set(), {}
        for key, (want, _, _) in self.wanted.items():
            if want not in taken:
                taken.add(want)
                of[key] = want
        for key, (want, _, _) in self.wanted.items():
            if key not in of:
                k = 2
                while "%s_%d" % (want, k) in taken:
                    k += 1
                of[key] = "%s_%d" % (want, k)
                taken.add(of[key])
        groups = [(doc, []) for doc in self.docs]
        for key, (_, value, grp) in self.wanted.items():
            groups[grp][1].append((of[key], value))
        of.update((key, of[other]) for key, other in self.alias.items())
        return Constants(tuple(Group(doc, tuple(cs)) for doc, cs in groups if cs), of)


def operand_tag(L, n):
    """An operand's name in constants: its C name (x_t, s_h, v3_r), and for a bundle
    member its bundle and member (L0_a_f)."""
    if n in L.cvar:
        return L.cvar[n]
    if n in L.bundle_of:
        return "%s_%s" % (L.bundle_of[n].name, member_tag(L, L.bundle_of[n], n))
    return L.value[n][0]


def member_tag(L, b, m):
    """A member of bundle b by its name in the equations (a_f of a_f[t]), else its index
    in the bundle."""
    stem = L.names.get(m, "").split("[")[0]
    return stem if _IDENT.match(stem) else str(b.members.index(m))


def name_layout(g, L):
    """The constants of layout L (of graph g), grouped as the kernel lists them."""
    N = _Names()
    N.group("params, dparams: each parameter C-contiguous at its offset")
    N.add("param_count", "RNNC_PARAM_COUNT", L.param_count)
    for name, _, off, _ in L.params:
        N.add(("param", name), "RNNC_P_" + name, off)
    N.group("a state row: the states concatenated")
    for name, _, off, _, _ in L.states:
        N.add(("state", name), "RNNC_S_" + name, off)
    N.group("pack, the start of work (gpack, in backward, holds the gradients alike)")
    N.add("pack_size", "RNNC_PACK_SIZE", L.pack_size)
    N.add("gpack_size", "RNNC_GPACK_SIZE", L.gpack_size)
    for b in L.bundles:
        for p in b.parts:
            N.add(("pack", b.name, p.pack), "RNNC_PACK_%s_%s" % (b.name, operand_tag(L, p.operand)),
                  p.pack)
        if b.bias_pack >= 0:
            N.add(("bias", b.name), "RNNC_BIAS_" + b.name, b.bias_pack)
        for p in b.parts:
            for k, kind in enumerate(("NT", "NN")[:len(p.panels)]):
                N.add(("panel", b.name, p.pack, k), "RNNC_PANEL_%s_%s_%s"
                      % (kind, b.name, operand_tag(L, p.operand)), p.panels[k])
    N.group("bundles: members' columns, operands' columns in the weights")
    for b in L.bundles:
        for m, off in zip(b.members, b.offsets, strict=True):
            N.add(("col", m), "RNNC_COL_%s_%s" % (b.name, member_tag(L, b, m)), off)
        for p in b.parts:
            _name_wcols(N, L, b, p)
    N.group("concatenations the step builds: each operand's columns")
    for n in g.ops():
        if g[n].op == "concat" and n not in L.elided:
            col = 0
            for a in g[n].args:
                N.add(("cat", n, col), "RNNC_CAT_%s_%s" % (L.value[n][0], operand_tag(L, a)), col)
                col += g[a].size
    N.group("slices the step takes: each one's first column in its operand")
    for n in g.ops():
        if g[n].op == "slice":
            N.add(("slice", n), "RNNC_SLICE_" + operand_tag(L, n), g[n].offset)
    N.group("adj: B rows of each adjoint of one step")
    off = 0
    for name, width, chunked in L.adj_arrays:
        if not chunked:
            N.add(("adj", name), "RNNC_ADJ_" + name, off)
            off += width
    N.add("adj_width", "RNNC_ADJ_WIDTH", off)
    return N.constants()


def _name_wcols(N, L, b, p):
    """Where part p's columns start in each member's weight: one name when every member
    agrees (the usual [h, x] layout), else one per member."""
    cols = [col for _, col, _ in p.src]
    stem = "RNNC_WCOL_%s_%s" % (b.name, operand_tag(L, p.operand))
    if len(set(cols)) == 1:
        N.add(("wcol", b.name, 0, p.pack), stem, cols[0])
        for k in range(1, len(cols)):
            N.same(("wcol", b.name, k, p.pack), ("wcol", b.name, 0, p.pack))
        return
    for k, (m, col) in enumerate(zip(b.members, cols, strict=True)):
        N.add(("wcol", b.name, k, p.pack), "%s_%s" % (stem, member_tag(L, b, m)), col)


def render(C):
    """The C block of constants C: an enum (int constants, seen by debuggers), or #defines
    when a value does not fit an int."""
    head = [HEADER]
    as_enum = all(v <= INT_MAX for v in C.values().values())
    lines = ["enum {"] if as_enum else []
    items = [(grp, n, v) for grp in C.groups for n, v in grp.constants]
    last = None
    for k, (grp, n, v) in enumerate(items):
        if grp is not last:
            lines.append(("    /* %s */" if as_enum else "/* %s */") % grp.doc)
            last = grp
        if as_enum:
            lines.append("    %s = %d%s" % (n, v, "," if k + 1 < len(items) else ""))
        else:
            lines.append("#define %s %d" % (n, v))
    if as_enum:
        lines.append("};")
    return "\n".join(head + lines)
