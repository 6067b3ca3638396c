"""The teacher of a target dump: one trained model, or a weighted mixture of several.

A mixture's distribution is the weighted mean of its members' posteriors,
``p(c | frame) = sum_i w_i p_i(c | frame)`` with ``w_i > 0`` and ``sum_i w_i = 1``: probabilities
are mixed (as an ensemble averages posteriors), not logits, and the mixing comes before any
top-k, so the stored targets are the top-k of the mixture. Members may differ in kind: an
utterance model (``kind = "sequence"``, the BLSTM) runs on the padded batch with its mask; a
model on context windows (``kind = "window"``, the CNN or DNN baselines) runs on the windows of
every real frame, edge frames repeated within each utterance exactly as
:func:`tfblend.pipeline.splice` does, so it sees what it saw in training and evaluation.

A lone teacher is run as before mixtures existed (its raw logits, the same graph), so a dump with
one teacher writes the same bytes. It must be a teacher (``role = "teacher"``); members of a
mixture may be any trained acoustic model (teacher, student or blend), e.g. the BLSTM and the
CNN baseline whose ensemble a student is to learn from.

Every member must share the classes, the feature dimension and the feature normalisation (CMVN
mode and, for global CMVN, the training set its statistics come from).
"""

import math
import os

import tensorflow as tf

from tfblend.errors import DataError
from tfblend.pipeline import map_windows
from tfblend.train.modeldir import load_model_dir

_WEIGHT_TOLERANCE = 1e-6


def parse_weights(text: str | list | None, count: int) -> list[float]:
    """Mixture weights from a flag (``"0.5,0.5"``, a list, or None for equal weights).

    Raises:
      DataError naming the problem: a count other than ``count``, a weight that is not a
      positive number, or a sum other than 1.
    """
    if text is None or text == "" or text == []:
        return [1.0 / count] * count
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        weights = [float(part) for part in parts]
    except ValueError as error:
        raise DataError(f"--teacher_weights {text!r} is not a list of numbers") from error
    if len(weights) != count:
        raise DataError(
            f"--teacher_weights gives {len(weights)} weights for {count} --teacher_dir values"
        )
    if not all(math.isfinite(w) and w > 0 for w in weights):
        raise DataError(f"--teacher_weights {weights} must all be positive")
    if abs(sum(weights) - 1.0) > _WEIGHT_TOLERANCE:
        raise DataError(f"--teacher_weights {weights} sum to {sum(weights):.6g}, not 1")
    return weights


def _window_logits(model, context: int, features: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
    """A window model on every real frame of a padded batch.

    Args:
      features: float32 ``[B, T, D]`` (padded); lengths: int32 ``[B]``.

    Returns:
      float32 ``[B, T, K]`` logits (zero on padding).
    """
    shape = tf.shape(features)
    offsets = tf.range(-context, context + 1)
    frames = tf.range(shape[1])[None, :, None] + offsets[None, None, :]  # [1, T, W]
    index = tf.minimum(tf.maximum(frames, 0), lengths[:, None, None] - 1)  # [B, T, W]
    real = tf.where(tf.sequence_mask(lengths, shape[1]))  # [N, 2] (utterance, frame)
    rows = tf.broadcast_to(real[:, :1], [tf.shape(real)[0], 2 * context + 1])
    windows = tf.gather_nd(
        features, tf.stack([rows, tf.cast(tf.gather_nd(index, real), tf.int64)], -1)
    )  # [N, W, D]
    logits = map_windows(lambda chunk: model(chunk, training=False), windows)
    return tf.scatter_nd(
        tf.cast(real, tf.int32), logits, tf.concat([shape[:2], tf.shape(logits)[1:]], 0)
    )


class TeacherMixture:
    """One teacher or a weighted mixture of several, run on padded batches of utterances.

    Attributes:
      dirs: the teacher directories, in the order given.
      members: ``[(model, info)]`` per teacher directory (``info`` is its ``model.json``).
      weights: float ``[n]``, positive, summing to 1.
      num_classes, feature_dim: shared by every member.
      cmvn, cmvn_stats: the normalisation the members expect (``cmvn_stats`` is the training set
        directory of global CMVN statistics, or None).
    """

    def __init__(self, teacher_dirs: list, weights=None):
        """Loads the teachers.

        Args:
          teacher_dirs: model directories (:mod:`tfblend.train.modeldir`), at least one.
          weights: float per directory (or ``"0.5,0.5"``), None for equal weights.

        Raises:
          DataError: a missing or unfinished directory, a lone model that is not a teacher,
            bad weights, or members that disagree on classes, features or normalisation.
        """
        teacher_dirs = list(teacher_dirs)
        if not teacher_dirs:
            raise DataError("--teacher_dir is required (one or more)")
        if len(set(map(os.path.abspath, teacher_dirs))) != len(teacher_dirs):
            raise DataError(f"--teacher_dir names a directory twice: {teacher_dirs}")
        self.weights = parse_weights(weights, len(teacher_dirs))
        roles = "teacher" if len(teacher_dirs) == 1 else ("teacher", "student", "blend")
        self.dirs = teacher_dirs
        self.members = [load_model_dir(path, role=roles) for path in teacher_dirs]
        first_dir, (_, first) = teacher_dirs[0], self.members[0]
        for path, (_, info) in zip(teacher_dirs[1:], self.members[1:], strict=True):
            for key, what in (
                ("num_classes", "classes"),
                ("feature_dim", "-dim features"),
                ("cmvn", "CMVN mode"),
            ):
                if info[key] != first[key]:
                    raise DataError(
                        f"the teachers disagree: {path} has {info[key]} {what}, "
                        f"{first_dir} {first[key]}"
                    )
            if first["cmvn"] == "global" and info["train_digest"] != first["train_digest"]:
                raise DataError(
                    f"the teachers disagree: {path} and {first_dir} normalise with the CMVN "
                    "statistics of different training sets"
                )
        self.num_classes = first["num_classes"]
        self.feature_dim = first["feature_dim"]
        self.cmvn = first["cmvn"]
        self.cmvn_stats = first["train_dir"] if first["cmvn"] == "global" else None

    def describe(self) -> dict:
        """What a target manifest records under ``teacher``: for one teacher its ``dir``,
        ``model`` and ``sha256``; for a mixture ``model = "mixture"``, the ``weights`` and the
        ``teachers`` (``dir``, ``model``, ``kind``, ``sha256`` of each)."""
        entries = [
            {"dir": os.path.abspath(path), "model": info["model"], "sha256": info["sha256"]}
            for path, (_, info) in zip(self.dirs, self.members, strict=True)
        ]
        if len(entries) == 1:
            return entries[0]
        for entry, (_, info) in zip(entries, self.members, strict=True):
            entry["kind"] = info.get("kind", "sequence")
        return {"model": "mixture", "weights": list(self.weights), "teachers": entries}

    def _logits(self, model, info, features, lengths):
        # A teacher directory written without "kind" (by hand) is run as the sequence model
        # dumps always assumed before mixtures.
        if info.get("kind", "sequence") == "window":
            return _window_logits(model, info["context"], features, lengths)
        mask = tf.sequence_mask(lengths, tf.shape(features)[1])
        return tf.cast(model({"features": features, "mask": mask}, training=False), tf.float32)

    def __call__(self, features: tf.Tensor, lengths: tf.Tensor) -> tf.Tensor:
        """The teacher's scores of a padded batch (traceable inside a ``tf.function``).

        Args:
          features: float32 ``[B, T, D]``, normalised as :attr:`cmvn` says, zero-padded.
          lengths: int32 ``[B]`` real frames per utterance.

        Returns:
          float32 ``[B, T, K]``: a lone teacher's logits as it computes them, or the mixture's
          log-probabilities ``log sum_i w_i softmax(logits_i)``; either way ``log_softmax`` of it
          is the distribution to store. Padded frames carry no meaning.
        """
        if len(self.members) == 1:
            return self._logits(*self.members[0], features, lengths)
        parts = [
            tf.nn.log_softmax(self._logits(model, info, features, lengths), axis=-1)
            + math.log(weight)
            for (model, info), weight in zip(self.members, self.weights, strict=True)
        ]
        return tf.reduce_logsumexp(tf.stack(parts), axis=0)
