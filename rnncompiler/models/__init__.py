"""Sequence models on compiled cells: stacked and bidirectional `RNN`s, heads and losses,
optimizers, training (`fit`, truncated BPTT), checkpoints, generation and an
encoder–decoder. Everything is numpy: parameters are trees (nested dicts) of arrays,
forward returns a result that backward takes, losses return (value, gradient).

    >>> from rnncompiler import models as rm
    >>> model = rm.SequenceModel(lstm, 8, input_size=3, output_size=2,
    ...                          readout="last", dtype="float64")   # doctest: +SKIP
    >>> params = model.init(seed=0)                                 # doctest: +SKIP
    >>> loss, grads = model.loss_and_grads(params, x, labels, lengths)  # doctest: +SKIP
"""
from .checkpoint import SavedModel, load, save
from .data import CharVocab, load_text, streams
from .generate import pick, sample
from .heads import pool, unpool
from .layers import Embedding, Linear, reversal_index, reverse_steps, step_mask
from .losses import cross_entropy, log_softmax, mse, softmax
from .model import ModelGrads, ModelResult, SequenceModel
from .optim import SGD, Adam, AdamW, Optimizer, RMSProp, clip_grad_norm
from .rnn import RNN, RNNGrads, RNNResult
from .seq2seq import Seq2Seq
from .train import TBPTT, History, Progress, fit
from .tree import flatten, global_norm, tree_map, unflatten

__all__ = ["load", "save", "SavedModel", "CharVocab", "load_text", "streams", "pick", "sample",
           "pool", "unpool", "Embedding", "Linear", "reversal_index", "reverse_steps",
           "step_mask", "cross_entropy", "log_softmax", "mse", "softmax", "ModelGrads",
           "ModelResult", "SequenceModel", "SGD", "Adam", "AdamW", "Optimizer", "RMSProp",
           "clip_grad_norm", "RNN", "RNNGrads", "RNNResult", "Seq2Seq", "TBPTT", "History",
           "Progress", "fit", "flatten", "global_norm", "tree_map", "unflatten"]
