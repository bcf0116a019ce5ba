"""Each stage of the compiler called on its own, on small hand-made inputs, against exact
expected results: the C printer (mathfn.CPrinter), expr.to_sympy, linear-sum merging
(graph.merge_linear_sums), local partials (autodiff.local_partials), saved activations
and layout planning (codegen.layout) and render_c. The end-to-end tests say that a kernel
is wrong; these say which stage made it so."""
import re

import pytest
import sympy

import rnncompiler as rc
from rnncompiler.compiler import expr as ex
from rnncompiler.compiler import mathfn
from rnncompiler.compiler.autodiff import Y, differentiate, local_partials
from rnncompiler.compiler.codegen import render_c
from rnncompiler.compiler.codegen.layout import Array, Bundle, Part, plan_layout, saved_activations
from rnncompiler.errors import CellError
from rnncompiler.compiler.graph import build_graph, fuse_elementwise, merge_linear_sums
from cells import gru, lstm, peephole_lstm

u, v = sympy.symbols("u v", real=True)
a0, a1, a2 = sympy.symbols("a0 a1 a2", real=True)


def by_op(g, op):
    """The nodes of graph g with operation op, in graph order."""
    return [n for n in g if g[n].op == op]


# ---------------------------------------------------------------- the C printer

PRINTED = [
    # (expression, dtype, fast math, C text)
    (mathfn.Sigmoid(u), "float64", False, "rnnc_sigmoid(u)"),
    (mathfn.Sigmoid(u), "float32", False, "rnnc_sigmoidf(u)"),
    (mathfn.Softplus(u), "float32", False, "rnnc_softplusf(u)"),
    (mathfn.Clip(u, -1, 1), "float64", False, "rnnc_clip(u, -1.0, 1.0)"),
    (sympy.exp(u), "float64", False, "exp(u)"),
    (sympy.exp(u), "float64", True, "rnnc_exp(u)"),
    (sympy.tanh(u), "float32", True, "rnnc_tanhf(u)"),
    (sympy.log(u), "float32", False, "logf(u)"),
    (u ** 2, "float64", False, "(u*u)"),
    (u ** 3, "float64", False, "(u*u*u)"),
    ((u + 1) ** 2, "float64", False, "((u + 1.0)*(u + 1.0))"),
    (u ** 5, "float64", False, "pow(u, 5.0)"),
    (u ** -1, "float64", False, "(1.0/u)"),
    (u ** -1, "float32", False, "(1.0F/u)"),
    (1 / (1 + sympy.exp(-u)), "float64", False, "(1.0/(1.0 + exp(-u)))"),
    (sympy.tanh(1 / (1 + sympy.exp(u))), "float64", False, "tanh((1.0/(exp(u) + 1.0)))"),
    (2 + 1 / (1 + sympy.exp(u)), "float64", False, "2.0 + (1.0/(exp(u) + 1.0))"),
    (1 / (u + 1), "float64", False, "(1.0/(u + 1.0))"),
    (u / (1 + v), "float64", False, "u/(v + 1.0)"),
    (sympy.sqrt(u), "float32", False, "sqrtf(u)"),
    (u ** sympy.Rational(3, 2), "float64", False, "pow(u, 3.0/2.0)"),
    (u ** sympy.Rational(3, 2), "float32", False, "powf(u, 3.0F/2.0F)"),
    (u / 3, "float64", False, "(1.0/3.0)*u"),
    (sympy.Float(0.5) * u, "float32", False, "0.5F*u"),
    (sympy.Abs(u), "float32", False, "fabsf(u)"),
    (sympy.Min(u, v), "float64", False, "rnnc_min(u, v)"),
    (sympy.Max(u, 0), "float64", False, "rnnc_max(0.0, u)"),
    (sympy.Piecewise((u, u > 0), (0, True)), "float64", False, "(u > 0.0 ? u : 0.0)"),
    (sympy.Piecewise((u, u > 1), (v, u < -1), (0, True)), "float64", False,
     "(u > 1.0 ? u : (u < -1.0 ? v : 0.0))"),
]


@pytest.mark.parametrize("expr, dtype, fast, text", PRINTED,
                         ids=["%s-%s%s" % (e, d, "-fast" if f else "") for e, d, f, _ in PRINTED])
def test_printer_writes_the_expected_c(expr, dtype, fast, text):
    """CPrinter: the activation helpers, float literals per dtype, small powers as
    products, reciprocals with their whole denominator, nested Piecewise as ternaries."""
    assert mathfn.CPrinter(dtype, fast=fast).doprint(expr) == text


# ---------------------------------------------------------------- to_sympy

CONVERTED = [
    (ex.arg(0) * 2 + ex.call("Sigmoid", ex.arg(1)), 2 * a0 + mathfn.Sigmoid(a1)),
    (1 / (1 + ex.call("exp", -ex.arg(0))), 1 / (1 + sympy.exp(-a0))),
    (ex.call("Clip", ex.arg(0), -1, 1), mathfn.Clip(a0, -1, 1)),
    (ex.arg(0) ** -2 - ex.arg(1), a0 ** -2 - a1),
    (ex.as_term(sympy.Rational(1, 3)) * ex.arg(0), a0 / 3),
    (0.5 * ex.call("tanh", ex.arg(0)) + 0.5, sympy.Float(0.5) * sympy.tanh(a0) + sympy.Float(0.5)),
    (ex.call("Softsign", ex.arg(2)) / ex.call("HardSigmoid", ex.arg(0)),
     mathfn.Softsign(a2) / mathfn.HardSigmoid(a0)),
]


@pytest.mark.parametrize("term, expected", CONVERTED, ids=[t.key() for t, _ in CONVERTED])
def test_to_sympy_builds_the_expression_sympy_would(term, expected):
    """A traced tree becomes the sympy expression written directly with real symbols
    a0, a1, ... (Rational stays exact, floats stay floats)."""
    got = ex.to_sympy(term)
    assert got == expected
    assert sympy.srepr(got) == sympy.srepr(expected)


def test_to_sympy_operands_are_real_symbols():
    """Real symbols: sympy may then simplify |a0|, sqrt(a0**2) and conjugates as real math."""
    assert ex.to_sympy(ex.arg(3)) == sympy.Symbol("a3", real=True)
    assert ex.to_sympy(ex.arg(3)) != sympy.Symbol("a3")


# ---------------------------------------------------------------- linear-sum merging

@rc.cell(states=("h",))
def separate_weights(x, h, p):
    return {"h": rc.tanh(p.linear("Wi", x, bias="bi") + p.linear("Wh", h, bias="bh"))}


@rc.cell(states=("h",))
def difference_of_maps(x, h, p):
    return {"h": rc.tanh(p.linear("Wi", x) - p.linear("Wh", h))}


@rc.cell(states=("h",))
def map_read_twice(x, h, p):
    a = p.linear("Wi", x)
    return {"h": rc.tanh(a + p.linear("Wh", h)) * a}


@rc.cell(states=("h",))
def map_as_output(x, h, p):
    a = p.linear("Wi", x)
    return {"h": rc.tanh(a + p.linear("Wh", h))}, a


def test_a_sum_of_two_maps_becomes_one_map_of_two_terms():
    g = build_graph(separate_weights.spec, {"H": 2, "I": 3})
    total = by_op(g, "ew")[0]
    g = merge_linear_sums(g)
    assert by_op(g, "linear") == [total]
    d = g[total]
    assert d.terms == (("x", "param.Wi"), ("state.h", "param.Wh"))
    assert d.biases == ("param.bi", "param.bh")
    assert d.args == ("x", "param.Wi", "state.h", "param.Wh", "param.bi", "param.bh")
    assert d.expr is None
    assert g.users("param.Wi") == (total,)


@pytest.mark.parametrize("cell", [difference_of_maps, map_read_twice, map_as_output],
                         ids=lambda c: c.name)
def test_maps_stay_apart_unless_only_summed(cell):
    """Not a plain sum, a map read elsewhere too, or a map that is a result: no merge."""
    g = build_graph(cell.spec, {"H": 2, "I": 3})
    before = by_op(g, "linear")
    g = merge_linear_sums(g)
    assert by_op(g, "linear") == before
    assert not any(len(g[n].terms) > 1 for n in g)


def test_keep_holds_a_map_apart():
    g = build_graph(separate_weights.spec, {"H": 2, "I": 3})
    first = by_op(g, "linear")[0]
    g = merge_linear_sums(g, keep=(first,))
    assert len(by_op(g, "linear")) == 2


# ---------------------------------------------------------------- local partials

PARTIALS = [
    (sympy.tanh(a0), 1, [1 - Y ** 2]),
    (mathfn.Sigmoid(a0), 1, [Y * (1 - Y)]),
    (sympy.exp(a0), 1, [Y]),
    (a0 * a1, 2, [a1, a0]),
    (a0 * a1 + (1 - a0) * sympy.tanh(a2), 3, [a1 - sympy.tanh(a2), a0,
                                             (1 - a0) * (1 - sympy.tanh(a2) ** 2)]),
    (sympy.sign(a0) * a1, 2, [0, sympy.sign(a0)]),
    (sympy.Piecewise((a0, a0 > 0), (a0 / 10, True)), 1,
     [sympy.Piecewise((1, a0 > 0), (sympy.Rational(1, 10), True))]),
    (1 / (1 + sympy.exp(-a0)), 1, [sympy.exp(-a0) / (1 + sympy.exp(-a0)) ** 2]),
    (mathfn.Softsign(a0), 1, [1 / (1 + sympy.Abs(a0)) ** 2]),
    (mathfn.Relu(a0), 1, [sympy.Piecewise((1, a0 > 0), (0, True))]),
    (a0 ** sympy.Rational(-1, 2), 1, [-a0 ** sympy.Rational(-3, 2) / 2]),
]


@pytest.mark.parametrize("expr, n_args, expected", PARTIALS, ids=[str(e) for e, _, _ in PARTIALS])
def test_local_partials(expr, n_args, expected):
    """df/da_k per operand, written through y = f where f is an activation of its own."""
    got = local_partials(expr, n_args)
    assert len(got) == n_args
    for k, (d, want) in enumerate(zip(got, expected)):
        assert sympy.simplify(d - want) == 0, "df/da%d = %s, expected %s" % (k, d, want)


def test_a_hand_written_derivative_is_used_through_y():
    logistic = rc.activation("stage_logistic", lambda t: 1 / (1 + sympy.exp(-t)),
                             derivative=lambda t, y: y * (1 - y))
    f = logistic.sympy_function(a0)
    assert local_partials(f, 1) == [Y * (1 - Y)]


def test_a_function_without_a_derivative_is_refused():
    with pytest.raises(CellError, match="cannot differentiate"):
        local_partials(sympy.Function("mystery")(a0), 1, where="cell.py:3")


# ---------------------------------------------------------------- saved activations

@rc.cell(states=("h",))
def two_gates(x, h, p):
    xh = rc.concat(x, h)
    return {"h": rc.sigmoid(p.linear("Wg", xh)) * rc.tanh(p.linear("Wz", xh)) + h}


@rc.cell(states=("h",))
def gate_of_a_result(x, h, p):
    a = p.linear("Wg", rc.concat(x, h))
    return {"h": rc.sigmoid(a) * h}, a


@rc.cell(states=("h",))
def gate_read_raw_too(x, h, p):
    a = p.linear("Wg", rc.concat(x, h))
    return {"h": rc.sigmoid(a) * h + a}


def fused(cell, H=2, I=3):
    """The fused step graph of cell and its backward step."""
    g = fuse_elementwise(build_graph(cell.spec, {"H": H, "I": I}))
    return g, differentiate(g)


def test_saved_activations_replace_gate_preactivations():
    """σ(a0) tanh(a1) + a2 over two linear maps: both activations are kept in place of the
    maps' outputs, so backward computes neither again."""
    g, bwd = fused(two_gates)
    (node,) = by_op(g, "ew")
    assert g[node].expr == mathfn.Sigmoid(a0) * sympy.tanh(a1) + a2
    lins = {n: None for n in by_op(g, "linear")}
    assert saved_activations(g, bwd, lins) == {node: {0: mathfn.Sigmoid(a0), 1: sympy.tanh(a1)}}


@pytest.mark.parametrize("cell", [gate_of_a_result, gate_read_raw_too], ids=lambda c: c.name)
def test_no_activation_saved_over_a_value_still_needed(cell):
    """A map that is also the output, or read outside its activation, keeps its value."""
    g, bwd = fused(cell)
    assert saved_activations(g, bwd, {n: None for n in by_op(g, "linear")}) == {}


def test_only_linear_maps_are_overwritten():
    """Without the maps among the bundled nodes nothing is saved (only bundle rows are
    the stage's own scratch)."""
    g, bwd = fused(two_gates)
    assert saved_activations(g, bwd, {}) == {}


# ---------------------------------------------------------------- layout planning

@rc.cell(states=("h", "c"), output="h")
def gated(x, h, c, p):
    xh = rc.concat(x, h)
    f = rc.sigmoid(p.linear("Wf", xh, bias="bf"))
    z = rc.tanh(p.linear("Wz", xh))
    c2 = f * c + (1 - f) * z
    return {"h": rc.tanh(c2), "c": c2}


def test_layout_of_a_gated_cell():
    """Two maps of [x, h] share one bundle (x part hoisted, h part per step, the Wf and
    Wz columns of each part stacked, one bias row); the concat is never built; the new
    states are written straight into their history; σ(f) has an array of its own."""
    g, bwd = fused(gated)
    L = plan_layout(g, bwd)
    f_map, z_map = by_op(g, "linear")
    (concat,) = by_op(g, "concat")
    sigma, c_new, h_new = by_op(g, "ew")
    assert (L.I, L.S, L.O) == (3, 4, 2)
    assert L.states == (("h", 2, 0, "state.h", h_new), ("c", 2, 2, "state.c", c_new))
    assert L.params == (("Wf", (2, 5), 0, 10), ("bf", (2,), 10, 2), ("Wz", (2, 5), 12, 10))
    assert L.param_count == 22
    assert L.bundles == (Bundle(
        "L0", (f_map, z_map), (0, 2), (2, 2), 4,
        (Part("x", 3, True, (("param.Wf", 0, 5), ("param.Wz", 0, 5)), 0),
         Part("state.h", 2, False, (("param.Wf", 3, 5), ("param.Wz", 3, 5)), 12)),
        20, (("param.bf",), ())),)
    assert L.pack_size == L.gpack_size == 24
    assert L.elided == frozenset({concat})
    assert L.arrays == (Array("L0", 4, True, True), Array("v2_f", 2, True, False))
    assert L.value[f_map] == ("L0", 0, 4) and L.value[z_map] == ("L0", 2, 4)
    assert L.value[sigma] == ("v2_f", 0, 2)
    assert L.value[h_new] == ("next_h", 0, 2) and L.value[c_new] == ("next_c", 0, 2)
    assert L.direct_states == {h_new: 0, c_new: 1}
    assert L.saved == {c_new: {2: sympy.tanh(a2)}}
    assert L.cvar == {"x": "x_t", "param.Wf": "P0", "param.bf": "P1", "param.Wz": "P2",
                      "state.h": "s_h", "state.c": "s_c"}


def test_layout_with_microkernel_panels_after_the_packed_weights():
    """The per-step part gets a forward and a backward panel past the packed weights; the
    weight gradients still need only the packed size."""
    g, bwd = fused(gated)
    L = plan_layout(g, bwd, microkernel="double")
    x_part, h_part = L.bundles[0].parts
    assert x_part.panels == ()
    assert h_part.panels[0] == 24 and h_part.panels[1] > h_part.panels[0]
    assert L.pack_size > h_part.panels[1] and L.gpack_size == 24


# ---------------------------------------------------------------- render_c

def test_render_c_key_lines():
    """The size functions, the packed bias of a merged map (both biases summed), the
    fused forward and backward lines and the recurrent product of the smallest cell
    written with separate input and hidden weights."""
    g, bwd = fused(separate_weights)
    src = render_c(g, bwd, "float64", prefix="tiny")
    lines = [ln.strip() for ln in src.text.splitlines()]
    for want in ["size_t tiny_param_count(void) { return RNNC_PARAM_COUNT; }",
                 "RNNC_PARAM_COUNT = 14,",
                 "size_t tiny_input_size(void) { return 3; }",
                 "size_t tiny_state_size(void) { return 2; }",
                 "size_t tiny_output_size(void) { return 2; }",
                 "for (ptrdiff_t r = 0; r < 2; ++r) "
                 "pack[RNNC_BIAS_L0 + RNNC_COL_L0_a_Wi + r] = params[RNNC_P_bi + r] + params[RNNC_P_bh + r];",
                 "RNNC_BIAS_L0 = 10,", "RNNC_COL_L0_a_Wi = 0,", "RNNC_P_bi = 6,", "RNNC_P_bh = 12,",
                 "o[j] = tanh(a0);",
                 "dr0[j] = g*(1.0 - (y*y));",
                 "rnnc_d_gemm_nt(B, 2, 2, s_h, 2, pack + RNNC_PACK_L0_s_h, 2, 1, L0, 2);",
                 "RNNC_PACK_L0_s_h = 6,"]:
        assert want in lines, want
    assert "int tiny_forward(int T, int B, const double *params" in src.cdef
    assert len(src.units) == 2 and "tiny_run_backward" in src.units[1]
    assert "tiny_run_backward" not in src.units[0]


@pytest.mark.parametrize("cell", [lstm, gru, peephole_lstm, separate_weights], ids=lambda c: c.name)
def test_a_loop_knows_the_step_pointers_its_lines_use(cell):
    """Each fused loop records the pointers it reads or writes as it is made (its function
    takes those): exactly the step pointers its lines name, no more, no fewer."""
    from rnncompiler.compiler.autodiff import EwGrad
    from rnncompiler.compiler.codegen import step_pointers
    from rnncompiler.compiler.codegen.elementwise import backward_loop, forward_loop
    g, bwd = fused(cell)
    L = plan_layout(g, bwd)
    printer = mathfn.CPrinter("float64")
    loops = [forward_loop(g, L, n, printer, "double") for n in by_op(g, "ew") if n not in L.elided]
    loops += [backward_loop(g, L, op, printer, "double") for op in bwd.ops if isinstance(op, EwGrad)]
    loops = [loop for loop in loops if loop is not None]
    assert loops
    for loop in loops:
        words = set(re.findall(r"\w+", "\n".join(loop.lines[1:])))
        assert loop.pointers == {v for v in step_pointers(L) if v in words}, loop.lines[0]


def test_render_c_float32_fast_math():
    g, bwd = fused(separate_weights)
    src = render_c(g, bwd, "float32", prefix="tiny", fast_math=True)
    lines = [ln.strip() for ln in src.text.splitlines()]
    assert "o[j] = rnnc_tanhf(a0);" in lines
    assert "double" not in src.cdef and "const float *params" in src.cdef


@rc.cell(states=("h",))
def sigmoid_alone(x, h, p):
    return {"h": rc.elementwise(lambda t: 1 / (1 + sympy.exp(-t)), p.linear("W", rc.concat(x, h)))}


def test_render_c_prints_a_hand_written_sigmoid_whole():
    """1/(1 + e) with e = exp(-a0) shared: the forward divides by the whole sum and keeps
    e in the map's slot, where the backward reads it as a0 (e/(e + 1)^2)."""
    g, bwd = fused(sigmoid_alone)
    lines = [ln.strip() for ln in render_c(g, bwd, "float64").text.splitlines()]
    for want in ["const double t0 = exp(-a0);", "o[j] = (1.0/(t0 + 1.0));", "r0[j] = t0;",
                 "dr0[j] = a0*g/((a0 + 1.0)*(a0 + 1.0));"]:
        assert want in lines, want


def test_render_c_refuses_an_unknown_blas():
    g, bwd = fused(separate_weights)
    with pytest.raises(ValueError, match="blas"):
        render_c(g, bwd, blas="mkl-of-my-own")
