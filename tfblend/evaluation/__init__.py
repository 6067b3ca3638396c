"""Evaluation of trained models on a labelled split, and its report.

- :mod:`tfblend.evaluation.scorers`: one utterance -> log-posteriors ``[T, K]`` (window and
  sequence models, ensembles);
- :mod:`tfblend.evaluation.metrics`: frame metrics over a split, several seeds per model
  (``evaluate``, ``evaluate_models``);
- :mod:`tfblend.evaluation.utterances`: per-utterance counts, what a study's bootstrap resamples;
- :mod:`tfblend.evaluation.report`: ``results.md``, ``results.json``, training curves, the WER
  section.
"""

from tfblend.evaluation.metrics import evaluate, evaluate_models
from tfblend.evaluation.scorers import ensemble_log_probs, sequence_scorer, window_scorer

__all__ = [
    "ensemble_log_probs",
    "evaluate",
    "evaluate_models",
    "sequence_scorer",
    "window_scorer",
]
