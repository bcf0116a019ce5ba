"""Where every value lives, and how linear maps become GEMMs.

Linear maps are lowered in bundles: the linear nodes that read the same operands (after
splitting a concat into its parts) share one output buffer, one packed weight matrix per
operand and one GEMM per operand (the four LSTM gates are one [4H, H+I] product). A part
whose operand is x_t is hoisted: one GEMM over a chunk of T·B rows before the steps; in
the backward pass weight gradients and dx are GEMMs over a chunk of rows after its steps.

Values are stored value-major: an array of (slots, B, width); a taped array keeps all T
slots so that every operand of an after-chunk GEMM is one contiguous (rows, width) matrix.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import sympy

from ..activations import TABLE
from ..autodiff import ConcatGrad, EwGrad, LinearGrad, ew_reads
from ..equations import display_names
from ..graph import LEAVES
from .constants import name_layout
from .microkernel import panel_size

CHUNK = 64      # steps per hoisted GEMM: bounds memory without a tape, keeps GEMMs large
CHUNK_ROWS = 2048   # rows per hoisted GEMM at least, for a small batch (B=1: 2048 steps)


@dataclass(frozen=True)
class Part:
    """One operand of a bundle: its packed weight (rows x width) and where each member's
    columns come from."""
    operand: str
    width: int
    static: bool          # operand is x: hoisted out of the time loop
    src: tuple            # per member: (W param id, first column in W, row length of W)
    pack: int             # offset of the packed weight in the pack region
    panels: tuple = ()    # (forward, backward) offsets of microkernel panels, per-step parts;
                          # (forward,) for a hoisted part when the hoisted GEMMs use them


@dataclass(frozen=True)
class Bundle:
    name: str             # C identifier stem, "L0"
    members: tuple        # linear node ids, in topological order
    offsets: tuple        # per member: first column in the bundle's rows
    sizes: tuple          # per member: rows of its W
    width: int            # total rows
    parts: tuple          # (Part, ...)
    bias_pack: int        # offset of the packed bias (width), -1 without biases
    biases: tuple         # per member: its bias param ids (summed), possibly none

    @property
    def hoisted(self):
        return any(p.static for p in self.parts)


@dataclass(frozen=True)
class Array:
    """A value array: (slots, B, width), slots depending on taped/hoisted and the mode."""
    name: str
    width: int
    taped: bool
    hoisted: bool


@dataclass(frozen=True)
class Layout:
    I: int                 # units of the input row x_t (every input, context, mask)
    S: int
    O: int
    states: tuple          # ((name, size, offset in the state row, leaf id, node id), ...)
    params: tuple          # ((name, shape, offset, count), ...)
    param_count: int
    bundles: tuple
    bundle_of: dict        # linear node -> Bundle
    elided: frozenset      # concat nodes read only by linear maps: never materialised
    arrays: tuple          # value arrays (Array)
    array_of: dict         # name -> Array
    value: dict            # node -> (array name, column, stride)
    adjoint: dict          # node -> (adjoint array name, column, stride)
    adj_arrays: tuple      # ((name, width, chunked), ...)
    pack_size: int         # packed weights and biases, then the microkernel panels
    gpack_size: int        # the gradients of the packed weights and biases
    cvar: dict             # leaf/param id -> C identifier
    prev: tuple            # per state, the C identifier of its value at t-1 (s_h)
    next: tuple            # per state, that of its value at t (next_h)
    names: dict            # node -> its name in the equations (c[t], f[t]), for comments
    direct_states: dict    # new-state node computed by a fused loop -> its state's index:
                           # the loop writes the state history slot itself, no copy
    saved: dict            # fused node -> {operand index k: sympy F(E)}: the loop stores
                           # F(E) over operand k's values, the backward reads it there
    static: frozenset = frozenset()  # elementwise nodes that read no state: computed over a
                           # chunk's rows before its steps, their adjoints after them
    deferred: dict = None  # node in the loop -> operand indices whose adjoint contributions
                           # wait until after the chunk's steps (operands that read no state)
    assigned: frozenset = frozenset()  # nodes whose adjoint has one contribution, from an
                           # elementwise node: written (=), never zeroed nor added to
    variant: str = None    # the microkernel variant the products call (None: default shape)
    tn_microkernel: object = None  # (N, K) -> whether the weight gradient of an (N x K)
                           # weight uses the variant's mk_gemm_tn (None: OpenBLAS's always)
    portable: bool = False # the products are the portable microkernel's (exported C99),
                           # whose mk_gemm sums a row alike whatever the rows with it
    pipelined: bool = False  # no product reads a state, the kernel links pthreads: a
                           # chunk's work that reads no state may run alongside the steps
                           # of the chunk before it (forward) or after it (backward), so
                           # the chunks' buffers hold two chunks (2 CH slots)
    consts: object = None  # constants.Constants: the C's name of every offset above


def _count(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def linear_parts(g, n):
    """The parts of linear node n, concats flattened: (operand, width, W, first column
    in W, row length of W), term after term."""
    def flatten(v):
        d = g[v]
        if d.op == "concat":
            return [p for a in d.args for p in flatten(a)]
        return [(v, d.size)]
    out = []
    for v, W in g[n].terms:
        col, K = 0, g[W].shape[1]
        for operand, w in flatten(v):
            out.append((operand, w, W, col, K))
            col += w
    return out


def reads_input_only(g, v):
    """Whether operand v is the input row or a slice of it (an input, a context, a mask
    of a cell with several): a part over it is hoisted out of the time loop."""
    return v == "x" or (g[v].op == "slice" and g[v].args[0] == "x")


def plan_bundles(g, params):
    """Group linear nodes by their parts and pack their weights."""
    groups = {}
    for n in g.ops():
        if g[n].op != "linear":
            continue
        parts, seen = [], {}
        for v, w, _, _, _ in linear_parts(g, n):
            seen[v] = seen.get(v, 0) + 1
            parts.append((v, seen[v], w))
        groups.setdefault(tuple(parts), []).append(n)
    bundles, pack = [], 0
    for k, (sig, members) in enumerate(groups.items()):
        sizes = tuple(g[m].size for m in members)
        offsets = tuple(sum(sizes[:i]) for i in range(len(sizes)))
        width = sum(sizes)
        sources = [linear_parts(g, m) for m in members]
        out_parts = []
        for i, (v, _, w) in enumerate(sig):
            src = tuple(parts[i][2:] for parts in sources)
            static = reads_input_only(g, v)
            out_parts.append(Part(v, w, static, src, pack))
            pack += width * w
        biases = tuple(g[m].biases for m in members)
        bias_pack = -1
        if any(biases):
            bias_pack, pack = pack, pack + width
        bundles.append(Bundle("L%d" % k, tuple(members), offsets, sizes, width, tuple(out_parts),
                              bias_pack, biases))
    return bundles, pack


def _elided(g, bundle_of):
    """Concats whose every consumer is a linear map (which reads the parts directly), and
    slices of the input row read only that way (the hoisted GEMMs read the row)."""
    out, results = set(), g.results()

    def elidable(n):
        return n not in results and (g[n].op == "concat" or (
            g[n].op == "slice" and reads_input_only(g, n)))
    for n in g.ops():
        if elidable(n) and all(s in bundle_of for s in g.users(n)):
            out.add(n)
    # a concat or slice read only by elided concats is elided too
    changed = True
    while changed:
        changed = False
        for n in g.ops():
            if (elidable(n) and n not in out
                    and all(s in bundle_of or s in out for s in g.users(n))):
                out.add(n)
                changed = True
    return frozenset(out)


def tape_of(g, bwd, bundles):
    """Op nodes the backward pass reads: operands of elementwise partials (and their own
    outputs when a partial is written through them), and every operand of a bundle."""
    reads = set()
    for op in bwd.ops:
        if isinstance(op, EwGrad):
            reads |= ew_reads(op)
    for b in bundles:
        # slices of the input row: after a chunk the GEMMs read the row itself
        reads |= {p.operand for p in b.parts if not p.static}
    return {n for n in reads if g[n].op not in LEAVES}


# A panel starts on a cache line (of a workspace that does, as the runtime's and the
# exported kernels' documented ones do): a panel read across lines costs the per-step
# product of a step at batch 1 up to half again its time.
ALIGN_BYTES = 64
SCALAR_BYTES = {"float": 4, "double": 8}


def aligned(offset, ctype):
    """offset (in scalars of ctype) rounded up to a multiple of ALIGN_BYTES."""
    n = ALIGN_BYTES // SCALAR_BYTES[ctype]
    return -(-offset // n) * n


def plan_panels(bundles, pack, ctype, hoisted=False):
    """Place microkernel panels for every per-step part after the packed weights: one
    for the forward product (rows = bundle width) and one for the backward (rows = the
    part's width); a forward panel for a hoisted part too when `hoisted` says so (True,
    or a function of the product's (N, K): the tuning's choice)."""
    out = []
    for b in bundles:
        parts = []
        for p in b.parts:
            pack = aligned(pack, ctype)
            if p.static and (hoisted(b.width, p.width) if callable(hoisted) else hoisted):
                p = replace(p, panels=(pack,))
                pack += panel_size(b.width, p.width, ctype)
            elif not p.static:
                fwd, bwd = pack, aligned(pack + panel_size(b.width, p.width, ctype), ctype)
                pack = bwd + panel_size(p.width, b.width, ctype)
                p = replace(p, panels=(fwd, bwd))
            parts.append(p)
        out.append(replace(b, parts=tuple(parts)))
    return out, pack


def plan_layout(g, bwd, microkernel=None, hoisted_panels=False, variant=None):
    """Assign buffers for graph g and its backward step bwd; microkernel: the C real type
    when per-step products use the microkernel (its panels need room); hoisted_panels:
    the hoisted products use it too (exported kernels, which have no BLAS to call; or a
    function of (N, K) choosing per product); variant: the microkernel variant's name
    (None: the ISA's default shape)."""
    states, off = [], 0
    for (s, size), (s2, node) in zip(g.states, g.new_states, strict=True):
        states.append((s, size, off, "state." + s, node))
        off += size
    params, p_off, cvar = [], 0, {"x": "x_t"}
    X = g["x"].size                    # the input row: every input, context and mask
    for k, (name, shape) in enumerate(g.params):
        params.append((name, shape, p_off, _count(shape)))
        cvar["param." + name] = "P%d" % k
        p_off += _count(shape)
    prev = tuple("s_" + s for s, *_ in states)
    nxt = tuple("next_" + s for s, *_ in states)
    for k, st in enumerate(states):
        cvar[st[3]] = prev[k]
    bundles, pack = plan_bundles(g, params)
    gpack = pack
    if microkernel:
        bundles, pack = plan_panels(bundles, pack, microkernel, hoisted_panels)
    bundle_of = {m: b for b in bundles for m in b.members}
    elided = _elided(g, bundle_of)
    taped = tape_of(g, bwd, bundles)
    arrays, value, adjoint, adj_arrays = [], {}, {}, []
    value["x"] = ("x_t", 0, X)
    adjoint["x"] = ("d_x_t", 0, X)
    adj_arrays.append(("d_x_t", X, False))
    for n in elided:
        if g[n].op == "slice":          # named in constants only: x_<its name>
            cvar[n] = "x_" + (g[n].name or n.replace(".", "_"))
    for k, (s, size, _, leaf, _) in enumerate(states):
        value[leaf] = (prev[k], 0, size)
        adjoint[leaf] = ("d" + prev[k], 0, size)
        adj_arrays.append(("d" + prev[k], size, False))
    for b in bundles:
        arrays.append(Array(b.name, b.width, any(m in taped for m in b.members), b.hoisted))
        adj_arrays.append(("d_" + b.name, b.width, True))
        for m, o in zip(b.members, b.offsets, strict=True):
            value[m] = (b.name, o, b.width)
            adjoint[m] = ("d_" + b.name, o, b.width)
    direct = {}
    for k, st in enumerate(states):
        if g[st[4]].op == "ew" and st[4] not in direct:
            direct[st[4]] = k
    static = static_nodes(g, bundles)
    deferred = deferred_contributions(g, bwd, bundles, static)
    for k, n in enumerate(g.ops()):
        if n in bundle_of or n in elided:
            continue
        name, size = "v%d" % k + ("_" + g[n].name if g[n].name else ""), g[n].size
        if n in direct:
            value[n] = (nxt[direct[n]], 0, size)
        else:
            arrays.append(Array(name, size, n in taped, n in static))
            value[n] = (name, 0, size)
        adjoint[n] = ("d_" + name, 0, size)
        adj_arrays.append(("d_" + name, size, n in static or n in deferred))
    L = Layout(I=X, S=off, O=g[g.output].size,
               states=tuple(states), params=tuple(params), param_count=p_off,
               bundles=tuple(bundles), bundle_of=bundle_of, elided=elided,
               arrays=tuple(arrays), array_of={a.name: a for a in arrays}, value=value, adjoint=adjoint,
               adj_arrays=tuple(adj_arrays), pack_size=pack, gpack_size=gpack, cvar=cvar,
               prev=prev, next=nxt, names={n: t for n, (t, _) in display_names(g).items()},
               direct_states=direct, saved=saved_activations(g, bwd, bundle_of),
               static=static, deferred=deferred, assigned=assigned_adjoints(g, bwd),
               variant=variant)
    return replace(L, consts=name_layout(g, L))


def read_input_only_members(bundles):
    """The linear nodes whose every product is hoisted (they read the input row only)."""
    return {m for b in bundles if all(p.static for p in b.parts) for m in b.members}


def static_nodes(g, bundles):
    """The elementwise nodes that read no state, through operands that are parameters,
    bundles of hoisted products only, or such nodes: each is computed over all the rows
    of a chunk before its steps (not inside the sequential loop) and its adjoint passed
    on after them. New states stay in the loop (a row past its length keeps the old
    state), and so does math on x itself (its adjoint is the step's dx)."""
    fixed = read_input_only_members(bundles)
    new_states = {node for _, node in g.new_states}
    out = set()
    for n in g.ops():
        d = g[n]
        if d.op == "ew" and n not in new_states and all(
                g[a].op == "param" or a in fixed or a in out for a in d.args):
            out.add(n)
    return frozenset(out)


def assigned_adjoints(g, bwd):
    """The op nodes whose adjoint receives exactly one contribution at a step, from an
    elementwise node's backward, and no seed (dy, a carried state): that contribution
    writes the adjoint instead of adding to it, and nothing zeroes it first. An LSTM's
    gates each get theirs from one of c[t], h[t]; minGRU's from z[t] and h[t]."""
    count, from_ew = {}, set()
    for op in bwd.ops:
        if isinstance(op, EwGrad):
            targets = [op.args[k] for k, _ in op.contributions]
            from_ew.update(targets)
        elif isinstance(op, LinearGrad):                 # d(operand) += d W
            targets = [v for v, _ in op.terms]
        elif isinstance(op, ConcatGrad):
            targets = list(op.parts)
        else:                                            # ReduceGrad, SliceGrad
            targets = [op.v]
        for a in targets:
            count[a] = count.get(a, 0) + 1
    seeded = {g.output} | {node for _, node in g.new_states}
    return frozenset(n for n, c in count.items()
                     if c == 1 and n in from_ew and n not in seeded and g[n].op not in LEAVES
                     and not g[n].scalar)           # a per-row scalar's is summed over units


def deferred_contributions(g, bwd, bundles, static):
    """For each elementwise node left in the loop, the operands whose adjoint contributions
    need not be in it: operands that read no state (static nodes, bundles of hoisted
    products only, parameters). Only the contributions to what the steps before read (the
    states, through the carry) are sequential; the rest are added after the chunk's
    steps, over all its rows at once, from the node's adjoint kept for every step."""
    fixed = read_input_only_members(bundles)
    out = {}
    for op in bwd.ops:
        if not isinstance(op, EwGrad) or op.node in static:
            continue
        later = tuple(k for k, _ in op.contributions
                      if g[op.args[k]].op == "param" or op.args[k] in static or op.args[k] in fixed)
        if later:
            out[op.node] = later
    return out


# functions whose derivative sympy writes through the function itself: σ' = σ(1-σ),
# tanh' = 1 - tanh², exp' = exp (the rows of the activation table that say so)
OUTPUT_DIFFERENTIABLE = tuple(row.sympy_name for row in TABLE if row.output_differentiable)


def saved_activations(g, bwd, bundle_of):
    """For each fused node, the operands k whose values can be replaced by an activation
    F(E) computed from them: a linear map's output read by this node alone and only inside
    F(E), whose derivatives (of this node, for every operand) need F(E) but not a_k. The
    forward loop then stores F(E) in a_k's slot, and the backward loop reads it there
    instead of computing F again (the LSTM's and GRU's gates: no exponentials in backward)."""
    grads = {op.node: op for op in bwd.ops if isinstance(op, EwGrad)}
    results = g.results()
    saved = {}
    for n, op in grads.items():
        expr, chosen = g[n].expr, {}
        for k, a in enumerate(op.args):
            # a result is read from its array after the step: it keeps its own value
            if a in bundle_of and len(g.users(a)) == 1 and a not in results:
                S = _activation_holding(expr, op.contributions, k)
                # each F(E) saved once; one inside another is fine: xreplace takes the
                # outer one whole where it appears, the inner one elsewhere
                if S is not None and S not in chosen.values():
                    chosen[k] = S
        if chosen:
            saved[n] = chosen
    return saved


def _activation_holding(expr, contributions, k):
    """The smallest F(E), F output-differentiable, that holds every a_k of the node's
    expression and leaves none in its derivatives once replaced; or None."""
    a_k = sympy.Symbol("a%d" % k, real=True)
    if not any(a_k in c.free_symbols for _, c in contributions):
        return None                      # the backward does not read a_k: nothing to save
    candidates = [f for f in expr.atoms(sympy.Function)
                  if type(f).__name__ in OUTPUT_DIFFERENTIABLE and a_k in f.free_symbols]
    for S in sorted(candidates, key=sympy.count_ops):
        if not _reads_outside(expr, a_k, S) and not any(
                _reads_outside(c, a_k, S) for _, c in contributions):
            return S
    return None


def _reads_outside(expr, a, S):
    """Whether symbol a occurs in expr outside every occurrence of S: a walk of the tree,
    not an xreplace, which would rebuild (and re-evaluate) every function above S."""
    walk = sympy.preorder_traversal(expr)
    for e in walk:
        if e == S:
            walk.skip()
        elif e == a:
            return True
    return False
