"""GEMM code for bundles of linear maps: packing, the hoisted chunk GEMMs over T·B rows,
the per-step recurrent GEMMs, and the backward GEMMs (in the loop only dh += δa W_h)."""
from __future__ import annotations

from .. import csrc
from .elementwise import comment, ref
from .helpers import typed
from .microkernel import NR_MAX, symbol


def pack_weights(g, L, b, ctype):
    """Copy each member's weight columns and bias into the bundle's packed matrices."""
    C = L.consts
    code = [comment("pack %s: one (%d x w) matrix per operand, members stacked" % (b.name, b.width))]
    for k, (m, R) in enumerate(zip(b.members, b.sizes, strict=True)):
        for p in b.parts:
            W, _, K = p.src[k]
            code.append("for (ptrdiff_t r = 0; r < %d; ++r) for (ptrdiff_t j = 0; j < %d; ++j)"
                        % (R, p.width))
            code.append("    pack[%s + (%s + r) * %d + j] = params[%s + r * %d + %s + j];"
                        % (C.pack(b, p), C.col(m), p.width, C.param(W), K, C.wcol(b, k, p)))
        if b.bias_pack >= 0:
            src = " + ".join("params[%s + r]" % C.param(bias) for bias in b.biases[k])
            code.append("for (ptrdiff_t r = 0; r < %d; ++r) pack[%s + %s + r] = %s;"
                        % (R, C.bias(b), C.col(m), src or "0"))
    for p in b.parts:
        if p.panels:
            code.append("%s(%d, %d, pack + %s, %d, pack + %s);"
                        % (symbol("mk_pack_nt", ctype, L.variant), b.width, p.width, C.pack(b, p), p.width,
                           C.panel(b, p, 0)))
    return code


def pack_backward_panels(L, b, ctype):
    """In backward: panels of each per-step part's packed weight for d(operand) += d(rows) W."""
    return ["%s(%d, %d, pack + %s, %d, pack + %s);"
            % (symbol("mk_pack_nn", ctype, L.variant), p.width, b.width, L.consts.pack(b, p), p.width,
               L.consts.panel(b, p, 1)) for p in b.parts if len(p.panels) > 1]


def _init_rows(L, b, dest, rows):
    """dest (rows x width) = the packed bias, or 0."""
    src = "pack[%s + r]" % L.consts.bias(b) if b.bias_pack >= 0 else "0"
    return ["for (ptrdiff_t i = 0; i < %s; ++i) for (ptrdiff_t r = 0; r < %d; ++r)" % (rows, b.width),
            "    %s[i * %d + r] = %s;" % (dest, b.width, src)]


def _bias_in_step(b):
    """The per-step microkernel adds the bias (and so needs no rows set to it before)."""
    return any(p.panels and not p.static for p in b.parts)


def hoisted_forward(L, b, ctype):
    """Before a chunk's steps: the bundle's rows = x W_x^T (+ bias, unless the per-step
    product adds it) over tc*B rows at once."""
    dest = b.name + "_chunk"
    in_step = _bias_in_step(b)
    code = [comment("%s for steps t0..t0+tc-1 at once: %sx W_x^T (hoisted)"
                    % (b.name, "" if in_step else "bias + ")),
            "%s *%s = A_%s + (ptrdiff_t)%s * B * %d;" % (ctype, dest, b.name, _chunk_slot(L, b), b.width)]
    if not in_step:
        code += _init_rows(L, b, dest, "(ptrdiff_t)tc * B")
    beta = 1 if not in_step else 0
    for p in b.parts:
        if p.static and p.panels:
            # a JIT kernel's rows summed alike whatever the rows with them (rowwise: a
            # chunk's halves or blocks on two threads give one thread's bits); the
            # portable microkernel of an exported one always does
            code.append("%s((ptrdiff_t)tc * B, %d, %d, %s, %d, pack + %s, NULL, %d, %s, %d);"
                        % (symbol("mk_gemm" if L.portable else "mk_gemm_rows", ctype,
                                  L.variant), b.width, p.width, _input_rows(L, p), L.I,
                           L.consts.panel(b, p, 0), beta, dest, b.width))
            beta = 1
        elif p.static:
            code.append("%s(RNNC_NT, threads, %d, (ptrdiff_t)tc * B, %d, %d, %s, %d, "
                        "pack + %s, %d, %s, %d);"
                        % (typed("gemm_big", ctype), beta, b.width, p.width, _input_rows(L, p),
                           L.I, L.consts.pack(b, p), p.width, dest, b.width))
            beta = 1
    return ["{"] + ["    " + ln for ln in code] + ["}"]


def _input_rows(L, p, base="x"):
    """The first of a static part's columns in the input rows of step t0 (row stride L.I):
    the row itself, or a slice of it (one input of several, a context, a mask)."""
    rows = "%s + (ptrdiff_t)t0 * B * %d" % (base, L.I)
    return rows if p.operand == "x" else "%s + %s" % (rows, L.consts.slice(p.operand))


def _chunk_slot(L, b):
    """The slot of step t0 in the bundle's array: t0 on a tape, else its place in the
    buffer of the chunk that starts at c0."""
    return "(keep ? t0 : t0 - c0)" if L.array_of[b.name].taped else "(t0 - c0)"


def step_forward(L, b, ctype):
    """In the loop: the bundle's rows += (recurrent operand) W^T, one GEMM per operand."""
    code = [comment("%s = %s" % (b.name, " + ".join(
        ["bias"] + ["%s W_%s^T" % (_operand_label(L, p.operand), "x" if p.static else k)
                    for k, p in enumerate(b.parts)])))]
    in_step = _bias_in_step(b)
    if not b.hoisted and not in_step:
        code += _init_rows(L, b, b.name, "B")
    first = True
    for p in b.parts:
        if p.static:
            continue
        if p.panels:
            src, stride = ref(L, p.operand)
            # the first product adds the bias, and overwrites the rows unless hoisted
            bias = "pack + %s" % L.consts.bias(b) if first and b.bias_pack >= 0 else "NULL"
            beta = 1 if b.hoisted or not first else 0
            code.append("%s(B, %d, %d, %s, %d, pack + %s, %s, %d, %s, %d);"
                        % (symbol("mk_gemm", ctype, L.variant), b.width, p.width, src, stride,
                           L.consts.panel(b, p, 0), bias, beta, b.name, b.width))
            first = False
        elif not p.static:
            src, stride = ref(L, p.operand)
            code.append("%s(B, %d, %d, %s, %d, pack + %s, %d, 1, %s, %d);"
                        % (typed("gemm_nt", ctype), b.width, p.width, src, stride, L.consts.pack(b, p),
                           p.width, b.name, b.width))
    return code


def _operand_label(L, n):
    return L.cvar.get(n) or L.value[n][0]


def step_backward(L, b, ctype):
    """In the loop: d(recurrent operand) += d(bundle rows) W, one GEMM per operand."""
    code = []
    for p in b.parts:
        if not p.static:
            dst, stride = ref(L, p.operand, adjoint=True)
            code.append(comment("d%s += d%s W" % (_operand_label(L, p.operand), b.name)))
            if p.panels:
                code.append("%s(B, %d, %d, d_%s, %d, pack + %s, NULL, 1, %s, %d);"
                            % (symbol("mk_gemm", ctype, L.variant), p.width, b.width, b.name, b.width,
                               L.consts.panel(b, p, 1), dst, stride))
            else:
                code.append("%s(B, %d, %d, d_%s, %d, pack + %s, %d, 1, %s, %d);"
                            % (typed("gemm_nn", ctype), p.width, b.width, b.name, b.width,
                               L.consts.pack(b, p), p.width, dst, stride))
    return code


def operand_rows(L, n, g):
    """Pointer to operand n's row for (step t0, batch row 0), and its stride, in backward."""
    if n == "x":
        return "x + (ptrdiff_t)t0 * B * %d" % L.I, L.I
    if g[n].op == "slice" and g[n].args[0] == "x":     # a slice of the input row, in place
        return "x + (ptrdiff_t)t0 * B * %d + %s" % (L.I, L.consts.slice(n)), L.I
    for k, st in enumerate(L.states):
        if st[3] == n:
            return "hist%d + (ptrdiff_t)t0 * B * %d" % (k, st[1]), st[1]
    if n in L.direct_states:            # a new state: its history slot after step t0
        k = L.direct_states[n]
        return "hist%d + ((ptrdiff_t)t0 + 1) * B * %d" % (k, L.states[k][1]), L.states[k][1]
    name, col, stride = L.value[n]
    base = "A_%s + (ptrdiff_t)t0 * B * %d" % (name, stride)
    return (base if col == 0 else "%s + %s" % (base, L.consts.col(n))), stride


def pad_width(L):
    """Scalars per row of backward's scratch for an operand with its padded rows zeroed:
    the widest operand of any bundle."""
    return max((p.width for b in L.bundles for p in b.parts), default=0)


def padding_c():
    """The C that keeps padded rows out of the after-chunk GEMMs (csrc/padding.c)."""
    return csrc.source("padding.c")


def _chunk_adjoint(L, b, ctype):
    """The declaration of dch_NAME, the bundle's adjoint rows from step t0 on, in the
    chunk's buffer whose slot 0 holds step cb."""
    return "const %s *dch_%s = d_%s_all + (ptrdiff_t)(t0 - cb) * B * %d;" % (ctype, b.name, b.name,
                                                                         b.width)


def chunk_backward(g, L, b, ctype, dx_beta=1):
    """After a chunk's steps: weight and bias gradients over its tc*B rows, and dx (added
    to what the steps wrote there, or overwriting it with dx_beta=0). In a chunk with
    padded rows (`padded`) each operand is read through its copy with those rows zeroed."""
    d = "dch_" + b.name
    code = [comment("%s over steps t0..t0+tc-1 at once: dW += d%s^T v, db += sums, dx += d%s W_x"
                    % (b.name, b.name, b.name)),
            "{",
            "    " + _chunk_adjoint(L, b, ctype)]
    for k, p in enumerate(b.parts):
        if not _part_frozen(g, p):      # constants: no dW, so no operand rows to read
            src, stride = operand_rows(L, p.operand, g)
            code.append("    const %s *v%d = padded ? valid_rows(t0, tc, B, lengths, %s, %d, %d, pad) : %s;"
                        % (ctype, k, src, stride, p.width, src))
            ld = str(stride) if stride == p.width else "padded ? %d : %d" % (p.width, stride)
            if L.tn_microkernel is not None and L.tn_microkernel(b.width, p.width):
                code.append("    %s(threads, %d, %d, (ptrdiff_t)tc * B, %s, %d, v%d, %s, gpack + %s, %d);"
                            % (symbol("mk_gemm_tn_big", ctype, L.variant), b.width, p.width, d,
                               b.width, k, ld, L.consts.pack(b, p), p.width))
            else:
                code.append("    %s(RNNC_TN, threads, 1, %d, %d, (ptrdiff_t)tc * B, %s, %d, v%d, %s, "
                            "gpack + %s, %d);" % (typed("gemm_big", ctype), b.width, p.width, d,
                                                  b.width, k, ld, L.consts.pack(b, p), p.width))
        if p.static:
            code.append("    if (dx) %s(RNNC_NN, threads, %d, (ptrdiff_t)tc * B, %d, %d, %s, %d, pack + %s, %d, "
                        "%s, %d);"
                        % (typed("gemm_big", ctype), dx_beta, p.width, b.width, d, b.width,
                           L.consts.pack(b, p), p.width, _input_rows(L, p, "dx"), L.I))
            dx_beta = 1
    if b.bias_pack >= 0 and not _biases_frozen(g, b):
        code.append("    for (ptrdiff_t i = 0; i < (ptrdiff_t)tc * B; ++i) "
                    "for (ptrdiff_t r = 0; r < %d; ++r)" % b.width)
        code.append("        gpack[%s + r] += %s[i * %d + r];" % (L.consts.bias(b), d, b.width))
    return code + ["}"]


def chunk_backward_blocks(g, L, ctype, dx_beta=1):
    """chunk_backward's work for every bundle (none with a per-step product, no padded
    rows) as groups of blocks two threads share, the longest first: [(blocks, C of
    block i)]. Weight gradients by panels of their rows (each element summed over the
    chunk's rows as one call sums it), each bias on its own, dx by blocks of rows (every
    part's product in order, on one thread): no two blocks write the same memory."""
    nr = 2 * NR_MAX[ctype]       # rows of a weight gradient's block: two widest panels
    groups, dx_parts = [], []
    for b in L.bundles:
        d = "dch_" + b.name
        for k, p in enumerate(b.parts):
            if not _part_frozen(g, p):
                src, stride = operand_rows(L, p.operand, g)
                dw = "gpack + %s + (ptrdiff_t)r0 * %d" % (L.consts.pack(b, p), p.width)
                if L.tn_microkernel is not None and L.tn_microkernel(b.width, p.width):
                    call = ("%s(m, %d, (ptrdiff_t)tc * B, %s + r0, %d, %s, %d, %s, %d);"
                            % (symbol("mk_gemm_tn", ctype, L.variant), p.width, d, b.width, src,
                               stride, dw, p.width))
                else:
                    call = ("%s(m, %d, (ptrdiff_t)tc * B, %s + r0, %d, %s, %d, 1, %s, %d);"
                            % (typed("gemm_tn", ctype), p.width, d, b.width, src, stride, dw,
                               p.width))
                groups.append((-(-b.width // nr), [
                    comment("d%s: rows %d*i.. of dW += d%s^T v" % (b.name, nr, b.name)),
                    _chunk_adjoint(L, b, ctype),
                    "const int r0 = i * %d, m = %d - r0 < %d ? %d - r0 : %d;"
                    % (nr, b.width, nr, b.width, nr),
                    call]))
            if p.static:
                dx_parts.append((b, p))
    for b in L.bundles:
        if b.bias_pack >= 0 and not _biases_frozen(g, b):
            groups.append((1, [comment("db%s += the sums of d%s's rows" % (b.name, b.name)),
                               _chunk_adjoint(L, b, ctype),
                               "for (ptrdiff_t q = 0; q < (ptrdiff_t)tc * B; ++q) "
                               "for (ptrdiff_t r = 0; r < %d; ++r)" % b.width,
                               "    gpack[%s + r] += dch_%s[q * %d + r];"
                               % (L.consts.bias(b), b.name, b.width)]))
    if dx_parts:
        code = [comment("rows of dx += d(rows) W_x, every part in turn"),
                "const ptrdiff_t rows = (ptrdiff_t)tc * B, r0 = block_edge(rows, i, BLOCK_ROWS);",
                "const ptrdiff_t m = block_edge(rows, i + 1, BLOCK_ROWS) - r0;",
                "if (!dx || m <= 0) return;"]
        for b, p in dx_parts:
            code += ["{",
                     "    " + _chunk_adjoint(L, b, ctype),
                     "    %s(m, %d, %d, dch_%s + r0 * %d, %d, pack + %s, %d, %d, %s + r0 * %d, %d);"
                     % (typed("gemm_nn", ctype), p.width, b.width, b.name, b.width, b.width,
                        L.consts.pack(b, p), p.width, dx_beta, _input_rows(L, p, "dx"), L.I, L.I),
                     "}"]
            dx_beta = 1
        groups.append(("BLOCKS", code))
    return groups


def _frozen(g, param):
    return g[param].frozen


def _part_frozen(g, p):
    """Every member's weight of part p is a constant (trainable=False): no dW GEMM."""
    return all(_frozen(g, W) for W, _, _ in p.src)


def reads_padded_rows(g, L):
    """Whether some weight gradient is computed after a chunk: only then does backward
    read operands with their padded rows zeroed (padding.c, `padded`)."""
    return any(not _part_frozen(g, p) for b in L.bundles for p in b.parts)


def _biases_frozen(g, b):
    return all(_frozen(g, bias) for biases in b.biases for bias in biases)


def scatter_gradients(g, L, b):
    """Add the packed gradients back into dparams, member by member (weights may be
    shared); constants (trainable=False) get none."""
    C = L.consts
    code = [comment("unpack the gradients of %s" % b.name)]
    for k, (m, R) in enumerate(zip(b.members, b.sizes, strict=True)):
        for p in b.parts:
            W, _, K = p.src[k]
            if _frozen(g, W):
                continue
            code.append("for (ptrdiff_t r = 0; r < %d; ++r) for (ptrdiff_t j = 0; j < %d; ++j)"
                        % (R, p.width))
            code.append("    dparams[%s + r * %d + %s + j] += gpack[%s + (%s + r) * %d + j];"
                        % (C.param(W), K, C.wcol(b, k, p), C.pack(b, p), C.col(m), p.width))
        for bias in (bias for bias in b.biases[k] if not _frozen(g, bias)):
            code.append("for (ptrdiff_t r = 0; r < %d; ++r) dparams[%s + r] += gpack[%s + %s + r];"
                        % (R, C.param(bias), C.bias(b), C.col(m)))
    return code
