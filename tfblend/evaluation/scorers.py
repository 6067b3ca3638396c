"""Scorers: one normalised utterance -> log-posteriors ``[T, K]``, for every kind of model.

A window model (the CNN, the DNN) is scored on the context window of every frame, or densely
in one pass when it declares a receptive field; a sequence model (the BLSTM) on the whole
utterance, or on each frame's window only. An ensemble averages its members' posteriors.
"""

import numpy as np
import tensorflow as tf

from tfblend.errors import DataError
from tfblend.pipeline import edge_pad, map_windows, splice


def ensemble_log_probs(members: list) -> np.ndarray:
    """An ensemble's log-posteriors: the log of the mean of its members' posteriors.

    Args:
      members: every member's log-probabilities of one utterance, float32 ``[T, K]`` each.

    Returns:
      float ``[T, K]``, floored at log(1e-30) where every member gives (about) zero.
    """
    mean = np.mean([np.exp(log_probs) for log_probs in members], axis=0)
    return np.log(np.maximum(mean, 1e-30))


def _score_windows(log_probs, features, context: int) -> np.ndarray:
    """``log_probs`` (windows ``[N, 2W+1, D]`` -> ``[N, K]``) of every spliced window of
    ``features`` ``[T, D]``, :data:`tfblend.pipeline.WINDOW_CHUNK` at a time: float32 ``[T, K]``."""
    return map_windows(log_probs, splice(tf.convert_to_tensor(features), context)).numpy()


def window_scorer(model, context: int):
    """Scorer of a model of context windows: ``fn(features [T, D]) -> log-probs [T, K]``.

    A model that declares a ``receptive_field`` computes densely over time (``model(x [1,
    T+2W, D]) -> [1, T, K]``): it scores the utterance in one pass over the utterance
    edge-padded by W frames (``tfblend.pipeline.edge_pad``), which gives the numbers of its
    T windows without computing each frame's convolutions once per window. Other models (the
    DNN) are run on the spliced windows, ``WINDOW_CHUNK`` windows at a time.
    """
    width = 2 * context + 1
    receptive_field = getattr(model, "receptive_field", None)
    if receptive_field is not None:
        if receptive_field != width:
            raise DataError(
                f"model {model.name!r} has a receptive field of {receptive_field} frames, the "
                f"data's windows have {width} (context {context})"
            )

        def dense(features):
            logits = model(edge_pad(features, context)[None], training=False)
            if logits.shape.rank == 2:  # a one-frame utterance is one window
                logits = logits[:, None]
            return tf.nn.log_softmax(logits[0], axis=-1).numpy()

        return dense

    @tf.function(input_signature=[tf.TensorSpec([None, width, None], tf.float32)])
    def log_probs(windows):
        return tf.nn.log_softmax(model(windows, training=False), axis=-1)

    return lambda features: _score_windows(log_probs, features, context)


def sequence_scorer(model, context: int | None = None):
    """Scorer of an utterance model: ``fn(features [T, D]) -> log-probs [T, K]``.

    ``context`` None: the model reads the whole utterance. ``context`` W: every frame is scored
    from its own window of W frames either side (edge frames repeated, as a window model of
    context W sees them): the model runs on the T windows as T utterances of 2W+1 frames,
    ``WINDOW_CHUNK`` at a time, and each keeps its centre frame. That is what a BLSTM knows
    within a CNN's receptive field (the Distiller's online teacher sees the same).
    """

    @tf.function(input_signature=[tf.TensorSpec([None, None, None], tf.float32)])
    def log_probs(features):
        mask = tf.ones(tf.shape(features)[:2], tf.bool)
        logits = model({"features": features, "mask": mask}, training=False)
        return tf.nn.log_softmax(logits, axis=-1)

    if context is None:
        return lambda features: log_probs(features[None])[0].numpy()
    if context < 0:
        raise DataError(f"a sequence model's window context must be >= 0, not {context}")

    return lambda features: _score_windows(lambda w: log_probs(w)[:, context], features, context)
