"""rc.gradcheck: verify a kernel's gradients and point at what is wrong.

Every gradient block (each parameter, x, each state0) is compared with central finite
differences in float64 — or, for a float32 kernel, with its float64 twin — as a full
Jacobian for small cases or as random projections uᵀJv for large ones. Then the check
localises: per time step (step t's own backward, through the public kernel API), per
derived equation (each partial of each fused elementwise node, when the cell is known) and
per hand-written activation derivative. Nothing imports this package but the top level.
"""
from __future__ import annotations

import numpy as np

from . import blocks, derivations, forward, steps
from .forward import ForwardCheck
from .report import ActivationCheck, GradcheckReport, PartialCheck, StepCheck

__all__ = ["gradcheck", "GradcheckReport", "ForwardCheck", "StepCheck", "PartialCheck",
           "ActivationCheck", "TOLERANCES"]

# (rtol, atol) by what is compared: float64 against finite differences; float32 against
# its float64 twin (float32 carries ~7 digits, and gradients lose some over T steps)
TOLERANCES = {"float64": (1e-5, 1e-8), "float32": (1e-3, 1e-5)}
JACOBIAN_LIMIT = 4000     # inputs (and outputs) up to which "auto" takes the full Jacobian
MODES = ("auto", "jacobian", "projection")


def draw(kern, T, B, seed, lengths):
    """Parameters, x, a non-zero state0 and the loss weights u_y, u_s, all float64."""
    rng = np.random.default_rng(seed)
    params = {k: np.asarray(v, np.float64) for k, v in kern.init_params(seed=seed).items()}
    x = rng.standard_normal((T, B, kern.input_size))
    state0 = {s: 0.5 * rng.standard_normal((B, n)) for s, n in kern.state_sizes.items()}
    u_y = rng.standard_normal((T, B, kern.output_size))
    u_s = {s: rng.standard_normal((B, n)) for s, n in kern.state_sizes.items()}
    lengths = None if lengths is None else np.asarray(lengths)
    return params, x, state0, u_y, u_s, lengths


def _check_args(T, B, mode, projections):
    for what, v in (("T", T), ("B", B), ("projections", projections)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError("%s: expected an int >= 1, got %r" % (what, v))
    if mode not in MODES:
        raise ValueError("mode: expected one of %s, got %r" % (", ".join(MODES), mode))


def _pick_mode(mode, kern, T, B):
    if mode != "auto":
        return mode
    S = sum(kern.state_sizes.values())
    n_in = sum(int(np.prod(s, dtype=np.int64)) for s in kern.param_shapes.values()) \
        + T * B * kern.input_size + B * S
    n_out = T * B * kern.output_size + B * S
    return "jacobian" if max(n_in, n_out) <= JACOBIAN_LIMIT else "projection"


def _graph(cell, kern):
    """The unfused step graph of `cell` at the kernel's sizes."""
    from ..compiler.graph import build_graph
    sizes = dict(getattr(kern, "sizes", None) or {})
    sizes.setdefault("H", kern.hidden_size)
    sizes.setdefault("I", kern.input_size)
    return build_graph(cell.spec, sizes)


def gradcheck_kernel(kern, T=5, B=2, seed=0, lengths=None, rtol=None, atol=None,
                     reference=None, eps=1e-6, *, mode="auto", projections=3, cell=None,
                     localize=True):
    """Check a compiled (or duck-typed) kernel; float32 kernels need reference=<float64
    kernel>. See `gradcheck`."""
    _check_args(T, B, mode, projections)
    if not getattr(getattr(kern, "columns", None), "plain", True):
        # contexts and masks are columns of the C's input rows: checked as such, masks
        # included (the random values they take in training are points like any other)
        kern = kern.rows()
        reference = reference.rows() if hasattr(reference, "rows") else reference
    dtype = np.dtype(kern.dtype).name
    if dtype != "float64" and reference is None:
        raise ValueError("reference: a %s kernel is checked against a float64 kernel of the "
                         "same cell (reference=kern64), not finite differences" % dtype)
    d_rtol, d_atol = TOLERANCES.get(dtype, TOLERANCES["float32"])
    rtol = d_rtol if rtol is None else rtol
    atol = d_atol if atol is None else atol
    mode = _pick_mode(mode, kern, T, B)
    params, x, state0, u_y, u_s, lengths = draw(reference or kern, T, B, seed, lengths)
    g = None if cell is None else _graph(cell, kern)
    seeds = {"data": seed, "projections": seed + 1}
    inputs = blocks.input_blocks(params, x, state0)
    errors, passed, worst = blocks.check_blocks(
        kern, inputs, lengths, T, B, mode, rtol, atol, eps, twin=reference,
        rng=np.random.default_rng(seed + 1), count=projections)
    report = GradcheckReport(
        False, max(errors.values(), default=0.0), errors, passed, rtol, atol,
        "central finite differences" if reference is None else "the float64 reference kernel",
        getattr(kern, "name", ""), dtype, mode, seeds, {"T": T, "B": B}, worst)
    if g is not None or reference is not None:
        report.forward = forward.check_forward(kern, params, x, state0, lengths, rtol, atol,
                                               graph=g, twin=reference)
    else:
        report.notes.append("no forward check: pass cell= to compare the kernel's forward "
                            "pass with the numpy reference evaluator")
    if localize:
        _localize(report, kern, g, reference, (params, x, state0, u_y, u_s, lengths),
                  eps, projections, seed)
    report.ok = ((report.forward is None or report.forward.ok) and all(passed.values())
                 and (report.steps is None or report.steps.ok)
                 and not report.wrong_partials() and not report.wrong_activations())
    return report


def _localize(report, kern, g, reference, data, eps, projections, seed):
    params, x, state0, u_y, u_s, lengths = data
    rtol, atol = report.rtol, report.atol
    # steps are probed along random directions whatever the mode: T times the blocks'
    # elementwise differences would cost more than they localise
    probe = steps.Probe("projection", eps, np.random.default_rng(seed + 1), projections)
    try:
        report.steps = steps.check_steps(kern, params, x, state0, lengths, u_y, u_s, probe,
                                         rtol, atol, twin=reference)
    except TypeError as exc:
        if "state_grads" not in str(exc):
            raise
        report.notes.append("no per-step check: this kernel's backward does not take "
                            "state_grads=True")
    if g is None:
        report.notes.append("no per-equation check: pass cell= to check the derivation "
                            "of a compiled kernel equation by equation")
        return
    rtol64, atol64 = (rtol, atol) if reference is None else TOLERANCES["float64"]
    rng = np.random.default_rng(seed + 2)
    report.seeds["points"] = seed + 2
    report.partials = derivations.check_partials(g, params, x, state0, lengths, rtol64,
                                                 atol64, rng)
    report.activations = derivations.check_activations(g, params, x, state0, lengths,
                                                       rtol64, atol64, rng)


def gradcheck(cell_or_kernel, input_size=3, hidden_size=4, T=5, B=2, seed=0, sizes=None,
              lengths=None, rtol=None, atol=None, reference=None, *, mode="auto",
              projections=3, cell=None, localize=True, eps=1e-6):
    """Verify gradients, and localise what is wrong.

    rc.gradcheck(cell, input_size=3, hidden_size=4, ...) compiles the cell in float64;
    rc.gradcheck(kern, T=5, B=2) checks a compiled kernel (any object with the kernel's
    public attributes; pass cell= to also check its derivation equation by equation).
    A float32 kernel needs reference=<a float64 kernel of the same cell>.

    Parameters: T, B, lengths shape the random sequence drawn from `seed`; rtol, atol
    default to TOLERANCES (float64 against finite differences, float32 against the twin);
    mode "jacobian" compares every entry of the Jacobian of (outputs, final states),
    "projection" `projections` random uᵀJv per block, "auto" picks by size; localize=False
    skips the per-step and per-equation checks.

    Returns a GradcheckReport: `.ok`, `.max_rel_error`, `.errors` per block, `.steps`,
    `.partials`, `.activations`, `.diagnosis()`; print(report) shows a table.
    """
    from ..compiler.dsl import Cell
    if isinstance(cell_or_kernel, Cell):
        from ..compiler.pipeline import compile as compile_cell
        cell = cell_or_kernel
        # unverified: this check is the full form of the build's self-check, and names
        # what that one would only refuse
        kern = compile_cell(cell, input_size, hidden_size, "float64", sizes=sizes, verify=False)
    else:
        kern = cell_or_kernel
        if cell is not None and not isinstance(cell, Cell):
            raise TypeError("cell: expected a cell made with @rc.cell, got %r" % (cell,))
        if cell is None:                 # a kernel from rc.compile knows its cell
            cell = getattr(kern, "cell", None)
    return gradcheck_kernel(kern, T=T, B=B, seed=seed, lengths=lengths, rtol=rtol, atol=atol,
                            reference=reference, eps=eps, mode=mode, projections=projections,
                            cell=cell, localize=localize)
