"""The kernels name their layout: every offset of the index arithmetic is a constant of one
enum near the top of the C, whose values are the layout's, whose names stay unique when
parameter and state names are chosen to collide, and which becomes #defines when a value
does not fit an int."""
import os
import re
import subprocess

import pytest

import rnncompiler as rc
from rnncompiler.compiler.autodiff import differentiate
from rnncompiler.compiler.codegen import render_c
from rnncompiler.compiler.codegen.constants import INT_MAX, Constants, Group, render
from rnncompiler.compiler.graph import build_graph, fuse_elementwise
from rnncompiler.compiler.pipeline import bind_sizes

from cells import elman, lstm, gru, peephole_lstm
from corner_cells import CORNER_CELLS

GOLDEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
GOLDEN_FILES = sorted(f for f in os.listdir(GOLDEN) if f.endswith(".c"))
CC = os.environ.get("CC", "cc")
STRICT = ["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror"]


@rc.cell(states={"h": "H", "h_2": "H", "RNNC_S_h": 8}, output="h")
def weird_names(x, h, h_2, RNNC_S_h, p):
    """Names made to collide: parameters W and W_, a parameter and a state named like
    constants, h read twice by one map (its second part would be s_h_2) beside a state
    h_2 (whose part is s_h_2 by name), and a concatenation holding h twice."""
    a = p.linear("W", rc.concat(h, h, h_2, x), bias="_b")
    b = p.linear("W_", rc.concat(h, h, h_2, x))
    c = p.linear("RNNC_P_W", RNNC_S_h)
    return {"h": rc.tanh(a) * rc.sigmoid(b) + rc.tanh(c), "h_2": rc.tanh(b),
            "RNNC_S_h": rc.concat(h, h)}


CELLS = [elman, lstm, gru, peephole_lstm, weird_names] + list(CORNER_CELLS.values())

# What a bare offset looked like in each place that now prints a name: a pattern that
# finds it, and a line of the C before the names, which it must find.
BARE = [
    (r"\bd?params\[(?!RNNC_P_)", "pack[0] = params[0 + r * 7 + 4 + j];"),
    (r"\bg?pack\[(?!RNNC_(PACK|BIAS)_)", "pack[112 + 4 + r] = params[60 + r];"),
    (r"\bg?pack \+ (?!RNNC_)", "rnnc_s_mk_gemm(B, 16, 4, s_h, 4, pack + 128, pack + 112, 1, L0, 16);"),
    (r"\((d_)?L\d+ \+ \d+\)", "float *restrict r0 = (L0 + 12) + b * 16;"),
    (r"\+ \d+ \+ (j|r)\]", "h1[b * 4 + j] = rows ? rows[b * 8 + 4 + j] : 0;"),
    (r"(?<!pad = )dcarry(\[| \+ )\(ptrdiff_t\)B \* (?!RNNC_S_)", "dcarry[(ptrdiff_t)B * 4 + b * 4 + j]"),
    (r"adj \+ \(ptrdiff_t\)B \* (?!RNNC_ADJ_)", "float *ds_h = adj + (ptrdiff_t)B * 3; (void)ds_h;"),
    (r"memset\((adj|dparams|gpack), [^;]* \d+\);", "memset(adj, 0, sizeof(float) * (size_t)B * 19);"),
    (r"param_count\(void\) \{ return \d", "size_t rnnc_param_count(void) { return 128; }"),
    (r"size_t n = \d", "size_t n = 896;"),
    (r"\[b \* \d+ \+ \d", "v3[b * 7 + 4 + j] = x_t[b * 3 + j];"),
]


def lowered(cell, dtype="float32", **options):
    g = fuse_elementwise(build_graph(cell.spec, bind_sizes(cell, 3, 4, None)))
    bwd = differentiate(g)
    return g, render_c(g, bwd, dtype, **options)


JIT = dict(blas="openblas", fast_math=True, microkernel=True, runtime=True)
EXPORTED = dict(blas=False, fast_math=False)


def own_code(text):
    """The C written for the cell: what follows the fixed C pasted from csrc."""
    return text[text.index("#define CHUNK"):]


def enum_of(text):
    """(name, value) of every line of the kernel's layout enum, in order."""
    block = text[text.index("\nenum {\n"):]
    block = block[:block.index("\n};")]
    return re.findall(r"^    (RNNC_\w+) = (\d+),?$", block, re.M)


@pytest.mark.parametrize("pattern, bare", BARE)
def test_each_pattern_finds_the_bare_offset_it_stands_for(pattern, bare):
    assert re.search(pattern, bare)


@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_golden_kernels_print_no_bare_offset(name):
    with open(os.path.join(GOLDEN, name)) as f:
        text = f.read()
    assert "params[RNNC_P_" in text and "\nenum {\n" in text
    for pattern, _ in BARE:
        found = [ln for ln in own_code(text).splitlines() if re.search(pattern, ln)]
        assert not found, "%s: %s\n%s" % (name, pattern, "\n".join(found[:5]))


@pytest.mark.parametrize("options", [JIT, EXPORTED], ids=["jit", "exported"])
@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_the_constants_are_the_layouts_offsets(cell, options):
    """Each constant, read back from the C, is the offset the layout gives the thing it
    names; names are unique and each is declared once and used; no bare offset is left."""
    g, src = lowered(cell, **options)
    L, C, text = src.layout, src.layout.consts, src.text
    pairs = enum_of(text)
    names = [n for n, _ in pairs]
    assert len(names) == len(set(names)), names
    v = {n: int(value) for n, value in pairs}
    assert v == C.values()
    rest = text.replace(text[text.index("\nenum {\n"):text.index("\n};")], "")
    for n in names:
        assert re.search(r"\b%s\b" % n, rest), "%s is never used" % n
        assert not re.search(r"#define %s\b|\b%s\s*=" % (n, n), rest), n
    assert v[C["param_count"]] == L.param_count
    assert (v[C["pack_size"]], v[C["gpack_size"]]) == (L.pack_size, L.gpack_size)
    assert [v[C.param(name)] for name, _, _, _ in L.params] == [off for _, _, off, _ in L.params]
    assert [v[C.state(s)] for s, *_ in L.states] == [off for _, _, off, _, _ in L.states]
    for b in L.bundles:
        for k, m in enumerate(b.members):
            assert v[C.col(m)] == b.offsets[k] == L.value[m][1] == L.adjoint[m][1]
            for p in b.parts:
                assert v[C.wcol(b, k, p)] == p.src[k][1]
        for p in b.parts:
            assert v[C.pack(b, p)] == p.pack
            assert tuple(v[C.panel(b, p, k)] for k in range(len(p.panels))) == p.panels
        if b.bias_pack >= 0:
            assert v[C.bias(b)] == b.bias_pack
    steps = [(name, w) for name, w, chunked in L.adj_arrays if not chunked]
    assert [v[C.adj(name)] for name, _ in steps] == [sum(w for _, w in steps[:k])
                                                      for k in range(len(steps))]
    assert v[C["adj_width"]] == sum(w for _, w in steps)
    for n in g.ops():
        if g[n].op == "concat" and n not in L.elided:
            sizes = [g[a].size for a in g[n].args]
            assert [v[C.cat(n, sum(sizes[:k]))] for k in range(len(sizes))] == \
                [sum(sizes[:k]) for k in range(len(sizes))]
    for pattern, _ in BARE:
        assert not re.search(pattern, own_code(text)), pattern


def test_colliding_names_get_suffixes_and_the_kernel_is_right(tmp_path):
    """The cell named to collide: the state h_2 keeps the name s_h_2 of its part, the
    second read of h, which wanted that name as a suffix, gets the next free one, the
    concatenation's two h parts get two names; the kernel passes gradcheck and its export
    compiles under the strict flags."""
    _, src = lowered(weird_names, **JIT)
    v = {n: int(value) for n, value in enum_of(src.text)}
    assert {"RNNC_P_W", "RNNC_P_W_", "RNNC_P_RNNC_P_W", "RNNC_P__b", "RNNC_S_h",
            "RNNC_S_RNNC_S_h"} <= set(v)
    for kind in ("PACK", "WCOL"):
        parts = ["RNNC_%s_L0_%s" % (kind, op) for op in ("s_h", "s_h_3", "s_h_2", "x_t")]
        assert [v[n] for n in parts] == sorted(v[n] for n in parts), kind   # h, h, h_2, x
    assert v["RNNC_WCOL_L0_s_h_3"] == 4 and v["RNNC_WCOL_L0_s_h_2"] == 8
    cats = sorted(n for n in v if n.startswith("RNNC_CAT_"))
    assert len(cats) == 2 and cats[1] == cats[0] + "_2" and v[cats[1]] == 4
    report = rc.gradcheck(weird_names, 3, 4, localize=False)
    assert report.ok, report
    exp = rc.export_c(weird_names, str(tmp_path), 3, 4, "float64", name="weird")
    proc = subprocess.run([CC] + STRICT + ["-fsyntax-only", exp.source],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _compile_and_print(tmp_path, block):
    """Compile block (strict C99) with a main printing RNNC_P_BIG + 1 as a size_t; its
    output."""
    c = tmp_path / "k.c"
    c.write_text("#include <stddef.h>\n#include <stdio.h>\n%s\nint main(void) { size_t n = "
                 "(size_t)RNNC_P_BIG + 1; printf(\"%%lu\\n\", (unsigned long)n); return 0; }\n"
                 % block)
    exe = str(tmp_path / "k")
    subprocess.run([CC] + STRICT + [str(c), "-o", exe], check=True, capture_output=True)
    return subprocess.run([exe], check=True, capture_output=True, text=True).stdout.strip()


@pytest.mark.parametrize("big, kind", [(INT_MAX, "enum {"), (INT_MAX + 1, "#define RNNC_P_BIG ")])
def test_a_value_past_int_makes_defines(big, kind, tmp_path):
    """Enum constants are ints: up to INT_MAX the block is an enum, past it #defines, whose
    literals are wide enough; both compile strictly and keep the value."""
    consts = Constants((Group("params", (("RNNC_P_W", 0), ("RNNC_P_BIG", big))),), {})
    block = render(consts)
    assert kind in block and ("enum {" in block) == (big <= INT_MAX)
    if big > 2**32 - 2 and os.name == "nt":
        pytest.skip("unsigned long is 32 bits")
    assert _compile_and_print(tmp_path, block) == str(big + 1)
