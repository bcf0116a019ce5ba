"""The op registry (rnncompiler.compiler.ops): every op complete in every stage that
dispatches on it, each entry's numpy pullback the derivative of its numpy evaluation
(central differences, float64), and typecheck refusing a node its entry's check rejects."""
from dataclasses import replace

import numpy as np
import pytest

import rnncompiler as rc
from rnncompiler.compiler import recurrence
from rnncompiler.compiler.codegen import LOWERING
from rnncompiler.compiler.evaluator import Partials, _Run
from rnncompiler.compiler.forward_mode import TANGENTS
from rnncompiler.compiler.graph import build_graph
from rnncompiler.compiler.ops import OPS
from rnncompiler.errors import CellError as Error

COMPUTING = sorted(name for name, op in OPS.items() if not op.leaf)


@rc.cell(states=("h",))
def every_op(x, h, p):
    z = rc.concat(h, x)
    a = p.linear("W", z, bias="b")
    m = rc.mean(a)
    s = rc.sum(h)
    q = rc.concat(h[1:], x[0:1])
    return {"h": rc.tanh(a) * m + s + q}


def test_every_computing_op_is_complete_in_every_stage():
    for table, what in ((LOWERING, "codegen.LOWERING"), (recurrence.RULES, "recurrence.RULES"),
                        (TANGENTS, "forward_mode.TANGENTS")):
        assert sorted(table) == COMPUTING, what
    for name in COMPUTING:
        op = OPS[name]
        for field in ("check", "display", "evaluate", "pullback", "vjp", "adjoint_display",
                      "reads"):
            assert callable(getattr(op, field)), (name, field)
        assert op.doc


def _ir():
    return build_graph(every_op.spec, {"H": 3, "I": 2})


def _values(g, rng, B=2):
    """Random values of every node's operands, per the IR's sizes."""
    vals = {"x": rng.standard_normal((B, 2)), "state.h": rng.standard_normal((B, 3))}
    for name, shape in g.params:
        vals["param." + name] = rng.standard_normal(shape)
    run = _Run({}, B, np.float64, Partials(g))
    for n in g.ops():
        d = g[n]
        vals[n] = OPS[d.op].evaluate(d, [vals[a] for a in d.args], run)
    return vals, run


@pytest.mark.parametrize("kind", COMPUTING)
def test_pullback_is_the_derivative_of_evaluate(kind):
    g = _ir()
    rng = np.random.default_rng(1)
    vals, run = _values(g, rng)
    nodes = [n for n in g.ops() if g[n].op == kind]
    assert nodes, "every_op has no %s node" % kind
    for n in nodes:
        d = g[n]
        operands = [np.array(vals[a], dtype=np.float64) for a in d.args]
        adj = rng.standard_normal(np.shape(vals[n]))
        got = {}
        OPS[kind].pullback(d, adj, operands, run,
                           lambda a, c: got.__setitem__(a, got.get(a, 0) + np.asarray(c)))
        for k, a in enumerate(dict.fromkeys(d.args)):
            base = operands[d.args.index(a)]
            numeric = np.zeros_like(base)
            for i in np.ndindex(base.shape):
                def f(step):
                    ops = [o.copy() for o in operands]
                    for j, b in enumerate(d.args):
                        if b == a:
                            ops[j][i] += step
                    return float((OPS[kind].evaluate(d, ops, run) * adj).sum())
                numeric[i] = (f(1e-6) - f(-1e-6)) / 2e-6
            assert np.allclose(np.broadcast_to(got.get(a, 0), numeric.shape), numeric,
                               rtol=1e-6, atol=1e-8), (kind, a)


BROKEN = {
    "ew": lambda g, d: replace(d, args=d.args[:-1]) if len(d.args) > 1 else replace(d, args=()),
    "linear": lambda g, d: replace(d, size=d.size + 1),
    "concat": lambda g, d: replace(d, size=d.size + 1),
    "reduce": lambda g, d: replace(d, how="max"),
    "slice": lambda g, d: replace(d, offset=d.offset + 10),
}


@pytest.mark.parametrize("kind", COMPUTING)
def test_typecheck_runs_each_ops_check(kind):
    g = _ir()
    n = next(n for n in g.ops() if g[n].op == kind)
    broken = [BROKEN[kind](g, d) if d.id == n else d for d in g.nodes]
    with pytest.raises(Error):
        g.with_nodes(broken)


def test_an_unknown_op_is_refused_by_name():
    g = _ir()
    n = g.ops()[0]
    with pytest.raises(Error, match="unknown op 'gather'"):
        g.with_nodes([replace(d, op="gather") if d.id == n else d for d in g.nodes])


def test_the_ir_prints_each_op_through_its_entry():
    text = str(_ir())
    assert "z[t]" in text and "= [h[t-1]; x[t]]" in text
    assert "W z[t] + b" in text and "mean(a[t])" in text and "sum(h[t-1])" in text
    assert text.splitlines()[-1] == "  new states: h[t]; output: h[t]"
