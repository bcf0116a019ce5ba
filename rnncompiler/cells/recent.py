"""Recent cells: minGRU and minLSTM of Feng et al., whose gates read x only (so the state
recurrence is diagonal-linear), and the scalar LSTM with exponential gating of xLSTM."""
import sympy

import rnncompiler as rc


@rc.cell(states=("h",))
def min_gru(x, h, p):
    """minGRU: the GRU with gate and candidate computed from x[t] alone (sequential mode).

    Neither reads h[t-1], so h[t] is an elementwise affine function of h[t-1]
    (kern.recurrence() says "diagonal-linear") and could be run as a parallel scan; this
    cell is the paper's sequential mode.

        z[t] = σ(W_z x[t] + b_z)
        h~[t] = W_h x[t] + b_h
        h[t] = (1 - z[t]) ⊙ h[t-1] + z[t] ⊙ h~[t]

    Feng, L., Tung, F., Ahmed, M. O., Bengio, Y., Hajimirsadeghi, H. (2024). Were RNNs
    all we needed? arXiv:2410.01201.
    """
    z = rc.sigmoid(p.linear("W_z", x, bias="b_z"))
    h_tilde = p.linear("W_h", x, bias="b_h")
    return {"h": (1 - z) * h + z * h_tilde}


@rc.cell(states=("h",))
def min_lstm(x, h, p):
    """minLSTM: forget and input gates from x[t] alone, normalised to sum to one.

    No cell state and no output gate; like min_gru, h[t] is diagonal-linear in h[t-1].
    The paper's sequential mode:

        f[t] = σ(W_f x[t] + b_f)
        i[t] = σ(W_i x[t] + b_i)
        h~[t] = W_h x[t] + b_h
        f'[t] = f[t] / (f[t] + i[t]),   i'[t] = i[t] / (f[t] + i[t])
        h[t] = f'[t] ⊙ h[t-1] + i'[t] ⊙ h~[t]

    Feng, L., Tung, F., Ahmed, M. O., Bengio, Y., Hajimirsadeghi, H. (2024). Were RNNs
    all we needed? arXiv:2410.01201.
    """
    f = rc.sigmoid(p.linear("W_f", x, bias="b_f"))
    i = rc.sigmoid(p.linear("W_i", x, bias="b_i"))
    h_tilde = p.linear("W_h", x, bias="b_h")
    return {"h": f / (f + i) * h + i / (f + i) * h_tilde}


FORGET_GATES = ("exp", "sigmoid")


def make_slstm(forget_gate="exp"):
    """The sLSTM of xLSTM with one head; `forget_gate` "exp" (f = exp(f~), the paper's
    exponential gate) or "sigmoid" (f = σ(f~), the official implementation's choice)."""
    if forget_gate not in FORGET_GATES:
        raise ValueError("forget_gate: expected 'exp' or 'sigmoid', got %r" % (forget_gate,))

    @rc.cell(states=("h", "c", "n", "m"), output="h")
    def slstm(x, h, c, n, m, p):
        """sLSTM: the scalar LSTM of xLSTM, exponential gates, normaliser n, stabiliser m.

        One head: the recurrent matrices R_* are full H×H matrices.

            z~[t] = W_z x[t] + R_z h[t-1] + b_z, and likewise i~[t], f~[t], o~[t]
            z[t] = tanh(z~[t]),   o[t] = σ(o~[t])
            log i[t] = i~[t]
            log f[t] = f~[t]  (forget_gate="exp"),  log σ(f~[t]) = -softplus(-f~[t])
                       (forget_gate="sigmoid")
            m[t] = max(log f[t] + m[t-1], log i[t])
            i'[t] = exp(log i[t] - m[t]),   f'[t] = exp(log f[t] + m[t-1] - m[t])
            c[t] = f'[t] ⊙ c[t-1] + i'[t] ⊙ z[t]
            n[t] = f'[t] ⊙ n[t-1] + i'[t]
            h[t] = o[t] ⊙ c[t] / n[t]

        i' and f' are at most 1 (one of them is 1), so nothing overflows. m only rescales:
        c[t] exp(m[t]) and n[t] exp(m[t]) follow the unstabilised recursion whatever m[t]
        is for t ≥ 1, so h (and its gradients) do not feel the max; only c, n, m do. At a
        tie log f[t] + m[t-1] = log i[t] the max's derivative is ½ to each side (sympy's
        Heaviside(0) = ½), as torch.maximum's.

        Initial state: zeros are safe. With n[0] = 0, n[1] = i'[1] > 0 (a positive
        exponential, 1 when the input gate wins the max), so h[1] = o[1] ⊙ z[1]; more
        generally any n[0] ≥ 0 keeps n[t] > 0. The official implementation starts from
        zeros too but sets m[1] = i~[1] when all of n is 0; here m[1] follows the max
        above, which gives the same h and rescales c, n and m only.

        Beck, M., Pöppel, K., Spanring, M., Auer, A., Prudnikova, O., Kopp, M.,
        Klambauer, G., Brandstetter, J., Hochreiter, S. (2024). xLSTM: extended long
        short-term memory. NeurIPS; arXiv:2405.04517.
        """
        def pre(k):
            return p.linear("W_" + k, x, bias="b_" + k) + p.linear("R_" + k, h)

        z = rc.tanh(pre("z"))
        log_i = pre("i")
        log_f = pre("f") if forget_gate == "exp" else -rc.softplus(-pre("f"))
        o = rc.sigmoid(pre("o"))
        m_new = rc.elementwise(lambda a, b: sympy.Max(a, b), log_f + m, log_i)
        i_s = rc.exp(log_i - m_new)
        f_s = rc.exp(log_f + m - m_new)
        c_new = f_s * c + i_s * z
        n_new = f_s * n + i_s
        return {"h": o * c_new / n_new, "c": c_new, "n": n_new, "m": m_new}
    return slstm


slstm = make_slstm(forget_gate="exp")
