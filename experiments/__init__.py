"""The seed studies, reproduced and surpassed: one module per study, each with ``run(config) -> dict``.

Run them with ``python -m experiments list`` and ``python -m experiments run NAME [--quick] [--seed S] [--out DIR]``.
The logic lives in :mod:`jaxrnn`; a study only wires data, model, training and figures together.
"""

from __future__ import annotations

import importlib

# name -> one-line description (the module experiments.<name> has run(config) -> dict)
STUDIES = {
    "iris_mlp": "seed 000: the sigmoid MLP on Iris, analytic rule vs jax.grad, then softmax + Adam on a held-out split",
    "sequence_forecast": "seed 001: the -3..8 frames example with Elman/LSTM/GRU, then sunspot forecasting vs persistence",
    "lstm_walkthrough": "seed 001: one LSTM step gate by gate vs jaxrnn.lstm.step, and a gate heatmap over a sequence",
    "vanishing_gradients": "seeds 002/004: |dL/dh_t| by autodiff and analytic BPTT; the adding problem at several lengths",
    "sequential_digits": "seed 002: 8x8 digits read row by row, many-to-one, Elman vs LSTM vs GRU",
    "word_order": "seed 004: 'give me new' vs 'give new me': bag-of-words vs RNN; the Keras SimpleRNN(1) example",
    "char_lm": "seed 004: character-level LSTM language model, bits per character vs unigram, samples",
    "sentiment": "seed 004: embedding + (bi)LSTM sentiment classifier on Pang & Lee sentence polarity",
}


def load(name: str):
    """The study module ``experiments.<name>``."""
    if name not in STUDIES:
        raise KeyError(f"unknown study {name!r}; choose one of {', '.join(STUDIES)}")
    return importlib.import_module(f"experiments.{name}")


def check(name: str, config: dict | None = None) -> dict:
    """``config`` for study ``name``, every setting checked and converted (:func:`experiments._common.check_config`)
    and then the study's own check of how they combine (its ``check_config``, where it has one): an unknown key or
    a bad value is a ``ValueError`` before any work."""
    from experiments._common import check_config

    study = load(name)
    config = check_config(name, config)
    study_check = getattr(study, "check_config", None)
    if study_check is not None:
        study_check(config)
    return config


def run(name: str, config: dict | None = None) -> dict:
    """Run study ``name`` with ``config`` (see :mod:`experiments._common`) and return its metrics, after
    :func:`check`, as on the command line."""
    return load(name).run(check(name, config))


__all__ = ["STUDIES", "check", "load", "run"]
