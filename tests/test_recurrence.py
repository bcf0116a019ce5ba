"""kern.recurrence(): each state classified as diagonal-linear, linear or nonlinear in the
states at t-1, with a reason naming the cell's values; every ready-made cell, cells from
the state-space literature written here, and a numeric check of the claims on compiled
float64 kernels."""
import os
import subprocess
import sys

import numpy as np
import pytest
import sympy

import rnncompiler as rc
from rnncompiler.compiler.recurrence import KINDS, Recurrence, of_cell


# ---------------------------------------------------------------- cells written here

@rc.cell(states=("h",))
def indrnn_linear(x, h, p):
    """IndRNN with the identity activation."""
    return {"h": p.vector("u") * h + p.linear("W", x, bias="b")}


@rc.cell(states=("h",))
def linear_rnn(x, h, p):
    """h = W h + U x + b: a dense linear recurrence."""
    return {"h": p.linear("W", h) + p.linear("U", x, bias="b")}


@rc.cell(states=("h",))
def linear_rnn_concat(x, h, p):
    """The same through a concatenation: W [h; x] + b."""
    return {"h": p.linear("W", rc.concat(h, x), bias="b")}


@rc.cell(states=("h", "c"), output="h")
def qrnn(x, h, c, p):
    """QRNN / SRU-style: every gate from x only; h is an x-gated view of the new c."""
    z = rc.tanh(p.linear("W_z", x, bias="b_z"))
    f = rc.sigmoid(p.linear("W_f", x, bias="b_f"))
    o = rc.sigmoid(p.linear("W_o", x, bias="b_o"))
    c_new = f * c + (1 - f) * z
    return {"h": o * c_new, "c": c_new}


@rc.cell(states=("h",))
def copy_state(x, h, p):
    """h[t] = h[t-1]: a = 1."""
    return {"h": h + 0}


@rc.cell(states=("h",))
def no_state(x, h, p):
    """h[t] reads x only: a = 0."""
    return {"h": rc.tanh(p.linear("W", x, bias="b"))}


@rc.cell(states=("h",))
def scalar_decay(x, h, p):
    """h[t] = λ h[t-1] + relu(W x): a learnable scalar coefficient."""
    return {"h": p.scalar("lam") * h + rc.relu(p.linear("W", x))}


@rc.cell(states=("h",))
def centred(x, h, p):
    """h[t] = h[t-1] - mean(h[t-1]) + W x: affine, but the mean mixes all units."""
    return {"h": h - rc.mean(h) + p.linear("W", x)}


@rc.cell(states=("h",))
def normalised(x, h, p):
    """h[t] = (h - mean h) / sqrt(mean (h - mean h)^2 + eps): a layer norm of h."""
    d = h - rc.mean(h)
    return {"h": d / (rc.mean(d * d) + 1e-5) ** 0.5 + p.linear("W", x)}


@rc.cell(states=("h",))
def relu_state(x, h, p):
    """relu of the state itself: piecewise linear, so not affine."""
    return {"h": rc.relu(h) + p.linear("W", x)}


@rc.cell(states=("h",))
def gated_by_x(x, h, p):
    """relu(W x) ⊙ h + softsign(U x): a kinked coefficient that reads x only."""
    return {"h": rc.relu(p.linear("W", x)) * h + rc.softsign(p.linear("U", x))}


@rc.cell(states=("h",))
def squared(x, h, p):
    """h ⊙ h: a state multiplying itself."""
    return {"h": h * h * 0.5 + p.linear("W", x)}


@rc.cell(states=("h", "c"), output="h")
def swap(x, h, c, p):
    """h[t] = c[t-1], c[t] = a(x) ⊙ c[t-1]: h is coupled to another state."""
    a = rc.sigmoid(p.linear("W", x))
    return {"h": c * 1, "c": a * c}


@rc.cell(states=("h",))
def gate_act(x, h, p):
    """A user activation of x gating h: diagonal-linear whatever the function."""
    gate = rc.activation("gatefn", lambda u: u ** 2 / (1 + u ** 2))
    return {"h": gate(p.linear("W", x)) * h + p.linear("U", x)}


HAND_WRITTEN = {
    # cell: {state: (kind, words the reason must contain)}
    indrnn_linear: {"h": ("diagonal-linear", ["a[t] = u"])},
    linear_rnn: {"h": ("linear", ["the matrix W maps h[t-1]"])},
    linear_rnn_concat: {"h": ("linear", ["the matrix W maps z[t], which reads h[t-1]"])},
    qrnn: {"c": ("diagonal-linear", ["c[t-1]", "a[t] = f[t];"]),
           "h": ("linear", ["reads c[t-1], another state"])},
    copy_state: {"h": ("diagonal-linear", ["a[t] = 1"])},
    no_state: {"h": ("diagonal-linear", ["reads no state", "0 ⊙ h[t-1]"])},
    scalar_decay: {"h": ("diagonal-linear", ["a[t] = lam"])},
    centred: {"h": ("linear", ["mean over the units of h[t-1]"])},
    normalised: {"h": ("nonlinear", ["h[t-1]", "m"])},
    relu_state: {"h": ("nonlinear", ["max(h[t-1], 0)", "h[t-1]"])},
    gated_by_x: {"h": ("diagonal-linear", ["a[t] = max(a_W[t], 0)"])},
    squared: {"h": ("nonlinear", ["h[t-1]"])},
    swap: {"h": ("linear", ["reads c[t-1], another state"]),
           "c": ("diagonal-linear", ["a[t] = σ(a_W[t])"])},
    gate_act: {"h": ("diagonal-linear", ["a[t] = Act_gatefn(a_W[t]);"])},
}

# ready-made cells: (kind per state, words its reason must contain); a state not listed
# here must be nonlinear
READY_MADE = {
    "elman": {"h": ("nonlinear", ["tanh of a_W[t], which reads h[t-1]"])},
    "elman_relu": {"h": ("nonlinear", ["relu of a_W[t], which reads h[t-1]"])},
    "jordan": {"y": ("nonlinear", ["σ of a_y[t], which reads y[t-1]"])},
    "indrnn": {"h": ("nonlinear", ["max(a_W[t] + h[t-1]*u, 0)", "nonlinear function of h[t-1]"])},
    "gru": {"h": ("nonlinear", ["the coefficient of h[t-1] is z[t], which reads h[t-1]"])},
    "mgu": {"h": ("nonlinear", ["the coefficient of h[t-1]", "reads f[t], which reads h[t-1]"])},
    "gru_torch": {"h": ("nonlinear", ["the coefficient of h[t-1] is z[t], which reads h[t-1]"])},
    "rnn_tanh_torch": {"h": ("nonlinear", ["tanh of a_ih[t], which reads h[t-1]"])},
    "rnn_relu_torch": {"h": ("nonlinear", ["relu of a_ih[t], which reads h[t-1]"])},
    "lstm": {"c": ("nonlinear", ["the coefficient of c[t-1], σ(a_f[t] + 1.0), reads a_f[t], "
                                 "which reads h[t-1]"]),
             "h": ("nonlinear", ["σ of a_o[t], which reads h[t-1]"])},
    "lstm_torch": {"c": ("nonlinear", ["the coefficient of c[t-1], σ(a_if[t]), reads a_if[t]"]),
                   "h": ("nonlinear", ["σ of a_io[t], which reads h[t-1]"])},
    "lstm_np": {"c": ("nonlinear", ["the coefficient of c[t-1], σ(a_f[t])"])},
    "lstm1997": {"c": ("nonlinear", ["σ of a_i[t], which reads h[t-1]"])},
    "peephole_lstm": {"c": ("nonlinear", ["a nonlinear function of c[t-1]"])},
    "lstm_cifg": {"c": ("nonlinear", ["the coefficient of c[t-1], 1 - i[t], reads i[t]"])},
    "lstm_nog": {"h": ("nonlinear", ["tanh of c[t], which reads c[t-1] and h[t-1]"])},
    "lstm_proj": {"h": ("nonlinear", ["h[t] = W_p v1[t], where v1[t] ="])},
    "lstm_proj_torch": {"h": ("nonlinear", ["h[t] = W_hr v1[t], where v1[t] ="])},
    "lstm_fgr": {"c": ("nonlinear", ["the coefficient of c[t-1] is f[t]"])},
    # gates from x alone: a parallel scan could run them
    "min_gru": {"h": ("diagonal-linear", ["h[t-1]", "a[t] = 1 - z[t]", "read no state"])},
    "min_lstm": {"h": ("diagonal-linear", ["h[t-1]", "a[t] = f[t]/(f[t] + i[t])",
                                           "read no state"])},
    # sLSTM: its gates read h[t-1] through R_*, and the stabiliser is a max
    "slstm": {"h": ("nonlinear", ["σ of a_o[t], which reads h[t-1]"]),
              "c": ("nonlinear", ["the coefficient of c[t-1] is f_s[t], which reads h[t-1] "
                                  "and m[t-1]"]),
              "n": ("nonlinear", ["the coefficient of n[t-1] is f_s[t], which reads h[t-1] "
                                  "and m[t-1]"]),
              "m": ("nonlinear", ["max(log_i[t], log_f[t] + m[t-1])",
                                  "not affine in m[t-1]"])},
}


def _sizes(name):
    return {n: 2 for n in rc.cells.SIZES[name]}


@pytest.mark.parametrize("name", sorted(rc.cells.ALL))
def test_every_ready_made_cell_is_classified_with_a_reason(name):
    """Every state of every rc.cells cell has a kind and a reason quoting its new value;
    all are nonlinear (their gates or activations read a state) but those READY_MADE
    lists with another kind: minGRU's and minLSTM's h, diagonal-linear."""
    classes = of_cell(rc.cells.ALL[name], sizes=_sizes(name))
    assert list(classes) == list(rc.cells.ALL[name].states)
    expected = READY_MADE.get(name, {})
    for s, r in classes.items():
        assert r.kind == expected.get(s, ("nonlinear",))[0], (s, r)
        assert r.reason.startswith("%s[t] = " % s), r.reason
        assert "[t-1]" in r.reason
    for s, (kind, words) in expected.items():
        for w in words:
            assert w in classes[s].reason, (w, classes[s].reason)


@pytest.mark.parametrize("cell", list(HAND_WRITTEN), ids=lambda c: c.name)
def test_hand_written_cells(cell):
    classes = of_cell(cell)
    for s, (kind, words) in HAND_WRITTEN[cell].items():
        assert classes[s].kind == kind, (s, classes[s])
        for w in words:
            assert w in classes[s].reason, (w, classes[s].reason)


def test_the_reasons_of_the_standard_lstm_say_why_c_is_nonlinear():
    """c[t] = f ⊙ c[t-1] + i ⊙ g is affine in c[t-1] alone, but the states are taken
    together: its coefficient f reads h[t-1], so c is nonlinear in (h, c)."""
    c = of_cell(rc.cells.lstm)["c"]
    assert c == Recurrence("nonlinear", c.reason)
    assert "coefficient of c[t-1]" in c.reason and "reads h[t-1]" in c.reason


def test_twenty_cells_at_least_and_kinds_are_the_documented_ones():
    cells = list(rc.cells.ALL.values()) + list(HAND_WRITTEN)
    assert len(cells) >= 20
    assert {n for n, c in rc.cells.ALL.items()
            if any(r.kind != "nonlinear" for r in of_cell(c, sizes=_sizes(n)).values())} \
        == {"min_gru", "min_lstm"}
    seen = {r.kind for c in HAND_WRITTEN for r in of_cell(c).values()}
    assert seen == set(KINDS)


@pytest.mark.parametrize("cell", list(HAND_WRITTEN) + [rc.cells.lstm, rc.cells.gru,
                                                      rc.cells.min_gru, rc.cells.min_lstm,
                                                      rc.cells.slstm],
                         ids=lambda c: c.name)
def test_fusion_does_not_change_the_kinds(cell):
    """The unfused graph (one node per operation of the cell) gives the same kinds."""
    from rnncompiler.compiler.graph import build_graph
    from rnncompiler.compiler.pipeline import bind_sizes
    from rnncompiler.compiler.recurrence import classify
    unfused = classify(build_graph(cell.spec, bind_sizes(cell, 3, 4, None)))
    assert {s: r.kind for s, r in unfused.items()} == {s: r.kind for s, r in of_cell(cell).items()}


def test_a_recurrence_prints_its_kind_and_reason():
    r = of_cell(rc.cells.min_gru)["h"]
    assert str(r).startswith("diagonal-linear: h[t] = ")
    assert r.kind == r[0] and r.reason == r[1]


def test_the_classification_does_not_depend_on_the_sizes():
    """Structural: a linear map of h stays dense at H = 1, a diagonal cell stays diagonal."""
    assert of_cell(linear_rnn, 1, 1)["h"].kind == "linear"
    assert of_cell(rc.cells.min_gru, 5, 1)["h"].kind == "diagonal-linear"


# ---------------------------------------------------------------- compiled kernels

COMPILED = [rc.cells.min_gru, rc.cells.min_lstm, indrnn_linear, qrnn, linear_rnn, swap, centred,
            rc.cells.elman, rc.cells.lstm]


@pytest.fixture(scope="module")
def kernels():
    return {c.name: rc.compile(c, 3, 4, "float64") for c in COMPILED}


def _step(kern, params, x, states):
    return kern.step(params, x, states)[1]


def _flat(states):
    return np.concatenate([states[s] for s in sorted(states)], axis=1)


def _second_difference(kern, params, x, s0, d1, d2):
    """f(s0 + d1 + d2) - f(s0 + d1) - f(s0 + d2) + f(s0) over all new states."""
    def f(*ds):
        return _flat(_step(kern, params, x, {s: s0[s] + sum(d[s] for d in ds) for s in s0}))
    return f(d1, d2) - f(d1) - f(d2) + f()


def _random_states(kern, rng, B=3, scale=1.0):
    return {s: scale * rng.standard_normal((B, n)) for s, n in kern.state_sizes.items()}


@pytest.mark.parametrize("cell", COMPILED, ids=lambda c: c.name)
def test_the_kernel_reports_what_the_analysis_finds(kernels, cell):
    kern = kernels[cell.name]
    assert kern.recurrence() == of_cell(cell)
    assert all(isinstance(r, Recurrence) for r in kern.recurrence().values())


@pytest.mark.parametrize("cell", COMPILED, ids=lambda c: c.name)
def test_affine_claims_hold_numerically_and_nonlinear_ones_are_not_affine(kernels, cell):
    """One step of the float64 kernel: the second difference in the states vanishes for
    every new state called diagonal-linear or linear, and not for a nonlinear one."""
    kern = kernels[cell.name]
    rng = np.random.default_rng(0)
    params = kern.init_params(seed=1)
    x = rng.standard_normal((3, kern.input_size))
    s0, d1, d2 = (_random_states(kern, rng) for _ in range(3))
    diff = _second_difference(kern, params, x, s0, d1, d2)
    offsets = np.cumsum([0] + [kern.state_sizes[s] for s in sorted(kern.state_sizes)])
    for k, s in enumerate(sorted(kern.state_sizes)):
        part = np.abs(diff[:, offsets[k]:offsets[k + 1]]).max()
        if kern.recurrence()[s].kind == "nonlinear":
            assert part > 1e-4, s
        else:
            assert part < 1e-12, (s, part)


@pytest.mark.parametrize("cell", COMPILED, ids=lambda c: c.name)
def test_diagonal_claims_hold_numerically(kernels, cell):
    """Perturbing unit j of any state changes a diagonal-linear state's unit j only (and
    not at all when j is in another state); a linear state sees other units change."""
    kern = kernels[cell.name]
    rng = np.random.default_rng(2)
    params = kern.init_params(seed=3)
    x = rng.standard_normal((1, kern.input_size))
    s0 = _random_states(kern, rng, B=1)
    base = _step(kern, params, x, s0)
    for s, r in kern.recurrence().items():
        if r.kind == "nonlinear":
            continue
        moved = np.zeros((kern.state_sizes[s],) * 2, bool)   # moved[j, i]: unit j moves i
        for other in kern.state_sizes:
            for j in range(kern.state_sizes[other]):
                bumped = {k: v.copy() for k, v in s0.items()}
                bumped[other][0, j] += 0.5
                change = np.abs(_step(kern, params, x, bumped)[s] - base[s])[0] > 1e-12
                if other == s:
                    moved[j] = change
                elif r.kind == "diagonal-linear":
                    assert not change.any(), (s, other, j)
        if r.kind == "diagonal-linear":
            assert not (moved & ~np.eye(len(moved), dtype=bool)).any(), s
        elif "the matrix" in r.reason or "mean over" in r.reason:    # dense: units mix
            assert (moved & ~np.eye(len(moved), dtype=bool)).any(), s


CACHED_CHILD = """
import sys
import rnncompiler as rc

@rc.cell(states=("h",))
def indrnn_linear(x, h, p):
    return {"h": p.vector("u") * h + p.linear("W", x, bias="b")}

k = rc.compile(indrnn_linear, 3, 4, "float64")
print(k.loaded_from_cache, k.recurrence()["h"].kind, "sympy" in sys.modules)
"""


def test_the_classification_is_cached_with_the_kernel_and_needs_no_sympy(kernels, tmp_path):
    """A kernel loaded from the cache answers recurrence() without importing sympy."""
    assert kernels["indrnn_linear"].recurrence()["h"].kind == "diagonal-linear"   # cached
    script = tmp_path / "child.py"
    script.write_text(CACHED_CHILD)
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         env=dict(os.environ), timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "diagonal-linear", "False"]


def test_coefficients_are_spelled_in_the_cells_own_values():
    """The a[t] of a diagonal-linear state is the derivative written with display names."""
    r = of_cell(indrnn_linear)["h"]
    assert sympy.sympify(r.reason.split("a[t] = ")[1].split(";")[0]) == sympy.Symbol("u")
