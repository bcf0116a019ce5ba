"""`Seq2Seq`: an encoder–decoder (Sutskever et al. 2014; Cho et al. 2014). The encoder's
final states initialise the decoder; training uses teacher forcing (the decoder reads the
true previous token), inference greedy decoding (it reads its own previous argmax)."""
from __future__ import annotations

import numpy as np

from .model import SequenceModel


class Seq2Seq:
    """Two token `SequenceModel`s with the same recurrent shape: an encoder without a head
    and a decoder with a softmax head over `tgt_vocab`.

        >>> s2s = Seq2Seq(lstm, src_vocab=12, tgt_vocab=13, hidden_size=64)  # doctest: +SKIP
        >>> loss, grads = s2s.loss_and_grads(params, src, tgt_in, tgt_out,
        ...                                  src_len, tgt_len)                  # doctest: +SKIP
    """

    def __init__(self, cell, src_vocab, tgt_vocab, hidden_size, *, embed_size=None,
                 num_layers=1, dtype="float32", sizes=None):
        common = dict(embed_size=embed_size, num_layers=num_layers, dtype=dtype, sizes=sizes)
        self.config = dict(cell=cell, src_vocab=src_vocab, tgt_vocab=tgt_vocab,
                           hidden_size=hidden_size, embed_size=embed_size,
                           num_layers=num_layers, dtype=np.dtype(dtype).name, sizes=sizes)
        self.encoder = SequenceModel(cell, hidden_size, vocab_size=src_vocab, loss=None, **common)
        self.decoder = SequenceModel(cell, hidden_size, vocab_size=tgt_vocab,
                                     output_size=tgt_vocab, loss="cross_entropy", **common)

    def init(self, seed=0):
        return {"encoder": self.encoder.init(seed), "decoder": self.decoder.init(seed + 1)}

    def forward(self, params, src, tgt_in, src_lengths=None, tgt_lengths=None):
        """(encoder result, decoder result) with the decoder started from the encoder's
        final states; its predictions are logits (T_out, B, tgt_vocab)."""
        enc = self.encoder.forward(params["encoder"], src, src_lengths)
        dec = self.decoder.forward(params["decoder"], tgt_in, tgt_lengths, state0=enc.states)
        return enc, dec

    def loss_and_grads(self, params, src, tgt_in, tgt_out, src_lengths=None, tgt_lengths=None):
        """Teacher forcing: the mean cross-entropy of tgt_out given tgt_in (both (T_out, B)
        ids) over the valid target steps, and its gradients for both halves."""
        enc, dec = self.forward(params, src, tgt_in, src_lengths, tgt_lengths)
        loss, d_logits = self.decoder.loss(dec, tgt_out)
        g_dec = self.decoder.backward(dec, d_logits)
        g_enc = self.encoder.backward(enc, None, d_states=g_dec.state0)
        return loss, {"encoder": g_enc.params, "decoder": g_dec.params}

    def greedy(self, params, src, src_lengths=None, *, bos, max_len, eos=None):
        """Greedy decoding: (ids (B, max_len), lengths (B,)); a row's length stops before
        its first `eos` (tokens after it are left as decoded)."""
        _, states = self.encoder.infer(params["encoder"], src, src_lengths)
        B = np.asarray(src).shape[1]
        token, out = np.full(B, bos, np.int64), []
        for _ in range(max_len):
            logits, states = self.decoder.step(params["decoder"], token, states)
            token = np.argmax(logits, axis=1)
            out.append(token)
        ids = np.stack(out, axis=1)
        lengths = np.full(B, max_len)
        if eos is not None:
            hit = ids == eos
            lengths = np.where(hit.any(axis=1), hit.argmax(axis=1), max_len)
        return ids, lengths
