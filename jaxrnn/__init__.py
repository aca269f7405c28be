"""jaxrnn: recurrent neural networks as pure functions in JAX.

Parameters are pytrees made by ``init(key, ...)``; cells are ``lax.scan`` bodies ``step(params, carry, x)``; one
driver, :func:`rnn`, runs any cell over a sequence. See README.md for a tour.
"""

from jaxrnn import analytic, cells, checkpoint, data, diagnostics, interop, losses, mlp, parallel, train
from jaxrnn.cells import Cell
from jaxrnn.cells.elman import ElmanParams
from jaxrnn.cells.gru import GRUGates, GRUParams
from jaxrnn.cells.lstm import LSTMGates, LSTMParams, LSTMPParams, LSTMState
from jaxrnn.data import MinMaxScaler, Vocabulary
from jaxrnn.driver import rnn, truncated_rnn
from jaxrnn.layers import DenseParams, EmbeddingParams, Module, dense, dropout, embedding
from jaxrnn.losses import last_valid, masked_mean, sequence_cross_entropy, sequence_mask, sequence_mse
from jaxrnn.parallel import data_mesh
from jaxrnn.stack import Bidirectional, Layer, stack
from jaxrnn.train import TrainState, evaluate, fit, fit_arrays, init_state, make_eval_step, make_train_step

elman = cells.elman.cell
lstm = cells.lstm.cell
gru = cells.gru.cell

__version__ = "0.1.0"

__all__ = [
    "Bidirectional",
    "Cell",
    "DenseParams",
    "ElmanParams",
    "EmbeddingParams",
    "GRUGates",
    "GRUParams",
    "LSTMGates",
    "LSTMPParams",
    "LSTMParams",
    "LSTMState",
    "Layer",
    "MinMaxScaler",
    "TrainState",
    "Vocabulary",
    "checkpoint",
    "data",
    "data_mesh",
    "evaluate",
    "fit",
    "fit_arrays",
    "init_state",
    "interop",
    "make_eval_step",
    "make_train_step",
    "parallel",
    "train",
    "Module",
    "analytic",
    "cells",
    "diagnostics",
    "dense",
    "dropout",
    "elman",
    "embedding",
    "gru",
    "last_valid",
    "losses",
    "lstm",
    "masked_mean",
    "mlp",
    "rnn",
    "sequence_cross_entropy",
    "sequence_mask",
    "sequence_mse",
    "stack",
    "truncated_rnn",
]
