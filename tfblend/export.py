"""Student-only SavedModels for TF Serving, with senone priors for hybrid decoding.

An export lands in TF Serving's layout, ``<base>/<name>/<version>/``, and holds:

- ``serving_default`` (method ``tensorflow/serving/predict``): input ``features`` float32
  ``[batch, 2W+1, feature_dim]`` (context windows of raw log-mel features, as
  :func:`tfblend.features.log_mel` makes them) for a window model, or ``features`` float32
  ``[batch, time, feature_dim]`` plus ``lengths`` int32 ``[batch]`` for a sequence model;
- ``utterance`` (window models only): input ``features`` float32 ``[time, feature_dim]``, one
  whole utterance. For a model with a ``receptive_field`` (the time-valid ``VGGStudent``) the
  graph edge-pads the utterance by W frames (first and last frame repeated, as
  :func:`tfblend.pipeline.splice` pads) and computes all ``time`` outputs in ONE dense pass,
  with no splicing: each frame's convolutions are computed once instead of once per window
  that contains it. Other window models (the DNN) get the windows spliced in the graph. An
  empty utterance (``time`` = 0), like an empty batch of windows, gives empty outputs
  ``[0, num_classes]``;
- outputs, by name: ``posteriors`` (softmax), ``log_posteriors`` and ``log_likelihoods``
  (log-posteriors minus the log senone priors counted on the training alignments, the scaled
  likelihoods a hybrid HMM decoder wants), each float32 ``[..., num_classes]``;
- ``assets.extra/tfblend.json``: classes, context, feature dim, the normalisation, the priors.

The feature normalisation the model was trained with (global CMVN) is built into the graph, so a
client sends raw log-mel features. Input names are fixed by explicit ``tf.TensorSpec`` names, so
they do not depend on how often a model was built (tensorflow#48157).

Inputs are checked in the graph. A loaded signature does not enforce its declared shape at run
time (a ``[2, 20, 40]`` batch would be computed silently), so every signature asserts its
input's shape with a message naming the signature, the input and the expected shape
(``InvalidArgumentError``: "serving_default: input features must be float32 [batch, 41, 40]
..., got shape [2 20 40]"). A wrong dtype is refused before the graph runs, by the signature
itself ("input #0 ... was expected to be a float tensor but is a double tensor").
"""

import json
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from tfblend.errors import DataError
from tfblend.features import CmvnStats
from tfblend.pipeline import edge_pad, splice
from tfblend.records import iterate_utterances, read_manifest, require_frames

METADATA_FILE = "tfblend.json"


def senone_log_priors(train_dir, num_classes: int, floor_count: float = 1.0) -> np.ndarray:
    """Log prior of every senone, counted on the training alignments.

    Args:
      train_dir: an utterance set with labels (normally the corpus's ``train`` split).
      num_classes: K.
      floor_count: added to every count, so senones never seen in training get a finite prior.

    Returns:
      float32 ``[K]``: ``log((count + floor) / sum(count + floor))``.
    """
    require_frames(train_dir, read_manifest(train_dir), "count the senone priors of an export on")
    counts = np.full(num_classes, floor_count, np.float64)
    for utterance in iterate_utterances(train_dir):
        if utterance.labels is None:
            raise DataError(f"{train_dir}: utterance {utterance.utt_id} has no labels to count")
        counts += np.bincount(utterance.labels, minlength=num_classes)[:num_classes]
    return np.log(counts / counts.sum()).astype(np.float32)


def next_version(model_base: str) -> int:
    """The next free integer version under ``savedmodels/<name>/`` (1 for a new model)."""
    if not os.path.isdir(model_base):
        return 1
    versions = [int(entry) for entry in os.listdir(model_base) if entry.isdigit()]
    return max(versions, default=0) + 1


class _Outputs:
    """Turns logits into the three named outputs; the log priors are baked into the graph."""

    def __init__(self, log_priors: np.ndarray):
        self.log_priors = tf.constant(log_priors, tf.float32)

    def __call__(self, logits: tf.Tensor) -> dict[str, tf.Tensor]:
        log_posteriors = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
        return {
            "posteriors": tf.exp(log_posteriors),
            "log_posteriors": log_posteriors,
            "log_likelihoods": log_posteriors - self.log_priors,
        }


def _normaliser(cmvn: CmvnStats | None):
    if cmvn is None:
        return lambda features: features
    mean = tf.constant(cmvn.mean(), tf.float32)
    scale = tf.constant(1.0 / cmvn.std(), tf.float32)
    return lambda features: (features - mean) * scale


def _guarded(features, trailing, expected, compute, empty_shape, finite=None):
    """``compute()`` if ``features``' trailing dims equal ``trailing`` and (unless ``finite`` is
    None) every value is finite; else an InvalidArgumentError: ``expected`` and the shape for a
    wrong shape, ``finite``'s message for a NaN or Inf (:func:`_refuse_non_finite`). The model
    runs only on valid input (a control dependency alone would let the model's own shape error
    win the race, and a NaN frame would silently change the 2W outputs around it)."""
    shape = tf.shape(features)
    valid = tf.reduce_all(tf.equal(shape[-len(trailing) :], trailing))

    def refuse():
        check = tf.debugging.Assert(False, [f"{expected}, got shape", shape])
        with tf.control_dependencies([check]):
            return tf.zeros(empty_shape, tf.float32)

    checked = compute
    if finite is not None:
        name, axes = finite

        def checked():
            return tf.cond(
                tf.reduce_all(tf.math.is_finite(features)),
                compute,
                lambda: _refuse_non_finite(features, name, axes, empty_shape),
            )

    return tf.cond(valid, checked, refuse)


def _refuse_non_finite(features, name, axes, empty_shape):
    """An InvalidArgumentError "<name>: input features must be finite: <axes[0]> i, <axes[1]>
    j, ... (feature d) is nan" naming the first non-finite value in row-major order (the first
    bad frame)."""
    where = tf.where(tf.logical_not(tf.math.is_finite(features)))[0]
    value = tf.gather_nd(features, where)
    places = ", ".join(f"{axis} {{}}" for axis in axes)
    message = tf.strings.format(
        f"{name}: input features must be finite: {places} (feature {{}}) is {{}}",
        [*tf.unstack(where, num=len(axes) + 1), value],
    )
    check = tf.debugging.Assert(False, [message])
    with tf.control_dependencies([check]):
        return tf.zeros(empty_shape, tf.float32)


def export_model(
    model: keras.Model,
    export_dir: str,
    *,
    kind: str,
    feature_dim: int,
    log_priors: np.ndarray,
    context: int | None = None,
    cmvn: CmvnStats | None = None,
    metadata: dict | None = None,
    check_finite: bool = True,
) -> str:
    """Writes ``model`` as a SavedModel with the signatures of this module's docstring.

    Args:
      model: the student (a window model: ``[B, 2W+1, D] -> [B, K]``) or a sequence model
        (``{"features": [B, T, D], "mask": [B, T]} -> [B, T, K]``).
      export_dir: ``<base>/<name>/<version>``; must not exist yet. Written to a temporary
        sibling and renamed when complete.
      kind: "window" or "sequence".
      feature_dim: D, the raw feature dimension.
      log_priors: float32 ``[K]`` log senone priors (:func:`senone_log_priors`).
      context: W, for window models.
      cmvn: global CMVN statistics applied inside the graph, or None if the model takes
        features as they are.
      metadata: extra JSON-serialisable facts stored in ``assets.extra/tfblend.json``.
      check_finite: every signature refuses an input holding a NaN or Inf, naming the first
        bad frame (False only to measure what the check costs: ``benchmarks/bench_serving.py``).

    Returns:
      ``export_dir``.
    """
    if kind not in ("window", "sequence"):
        raise ValueError(f"kind must be 'window' or 'sequence', not {kind!r}")
    if kind == "window" and context is None:
        raise ValueError("a window model's export needs its context W")
    if os.path.exists(export_dir):
        raise DataError(f"export directory {export_dir} already exists; pick a new version")
    num_classes = int(np.shape(log_priors)[0])
    archive = keras.export.ExportArchive()
    archive.track(model)
    add_endpoints = _window_endpoints if kind == "window" else _sequence_endpoints
    add_endpoints(
        archive, model, _Outputs(log_priors), _normaliser(cmvn), feature_dim, num_classes, context,
        check_finite,
    )  # fmt: skip
    facts = {
        "kind": kind,
        "num_classes": num_classes,
        "feature_dim": feature_dim,
        "context": context,
        "normalisation": "global_cmvn_in_graph" if cmvn is not None else "none",
        "log_priors": [float(v) for v in log_priors],
        "finite_input_check": bool(check_finite),
        **(metadata or {}),
    }
    _write(archive, export_dir, facts)
    return export_dir


def _window_endpoints(
    archive, model, outputs, normalise, feature_dim, num_classes, context, check_finite
):
    """``serving_default`` on windows and ``utterance`` on one whole utterance (dense in one
    pass for a model with a receptive field, else on its spliced windows)."""
    width = 2 * context + 1
    dense = getattr(model, "receptive_field", None) is not None
    if dense and model.receptive_field != width:
        raise ValueError(
            f"model receptive field {model.receptive_field} != the export's window "
            f"2W+1 = {width} (context W = {context})"
        )

    def serve_windows(features):
        logits = _guarded(
            features,
            [width, feature_dim],
            f"serving_default: input features must be float32 [batch, {width}, {feature_dim}]",
            lambda: tf.cond(  # (TF's CPU Conv2D mis-shapes an empty batch)
                tf.shape(features)[0] > 0,
                lambda: model(normalise(features), training=False),
                lambda: tf.zeros([0, num_classes], tf.float32),
            ),
            [0, num_classes],
            ("serving_default", ("window", "frame")) if check_finite else None,
        )
        return outputs(logits)

    def utterance_logits(features):
        if not dense:
            return model(splice(features, context), training=False)
        return model(edge_pad(features, context)[None], training=False)[0]

    def serve_utterance(features):
        logits = _guarded(
            features,
            [feature_dim],
            f"utterance: input features must be float32 [time, {feature_dim}]",
            lambda: tf.cond(
                tf.shape(features)[0] > 0,
                lambda: utterance_logits(normalise(features)),
                lambda: tf.zeros([0, num_classes], tf.float32),
            ),
            [0, num_classes],
            ("utterance", ("frame",)) if check_finite else None,
        )
        return outputs(logits)

    archive.add_endpoint(
        "serving_default",
        serve_windows,
        input_signature=[tf.TensorSpec([None, width, feature_dim], tf.float32, "features")],
    )
    archive.add_endpoint(
        "utterance",
        serve_utterance,
        input_signature=[tf.TensorSpec([None, feature_dim], tf.float32, "features")],
    )


def _sequence_endpoints(
    archive, model, outputs, normalise, feature_dim, num_classes, context, check_finite
):
    """``serving_default`` on padded batches of utterances with their lengths (padding
    included in the finite check: pad with zeros)."""
    del context  # a sequence model reads whole utterances

    def serve_sequences(features, lengths):
        def logits():
            mask = tf.sequence_mask(lengths, tf.shape(features)[1])
            return model({"features": normalise(features), "mask": mask}, training=False)

        expected = f"serving_default: input features must be float32 [batch, time, {feature_dim}]"
        finite = ("serving_default", ("utterance", "frame")) if check_finite else None
        return outputs(
            _guarded(features, [feature_dim], expected, logits, [0, 0, num_classes], finite)
        )

    archive.add_endpoint(
        "serving_default",
        serve_sequences,
        input_signature=[
            tf.TensorSpec([None, None, feature_dim], tf.float32, "features"),
            tf.TensorSpec([None], tf.int32, "lengths"),
        ],
    )


def _write(archive, export_dir: str, facts: dict) -> None:
    """Writes the archive and ``assets.extra/tfblend.json`` to a temporary sibling of
    ``export_dir``, renamed into place when complete (removed on failure: DataError "cannot
    write <export_dir>: <cause>" for a full disk or a place it cannot write)."""
    parent = os.path.dirname(os.path.abspath(export_dir))
    temporary = os.path.join(parent, f".{os.path.basename(export_dir)}.tmp-{os.getpid()}")
    try:
        os.makedirs(parent, exist_ok=True)
        shutil.rmtree(temporary, ignore_errors=True)
        archive.write_out(temporary, verbose=False)
        extra = os.path.join(temporary, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        with open(os.path.join(extra, METADATA_FILE), "w") as stream:
            json.dump(facts, stream, indent=1)
        os.replace(temporary, export_dir)
    except (OSError, tf.errors.OpError) as error:  # a full disk, a read-only place
        shutil.rmtree(temporary, ignore_errors=True)
        why = getattr(error, "strerror", None) or getattr(error, "message", None) or error
        raise DataError(f"cannot write {export_dir}: {str(why).splitlines()[0]}") from error
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def read_export_metadata(export_dir: str) -> dict:
    """The facts an export stored about itself (``assets.extra/tfblend.json``)."""
    path = os.path.join(export_dir, "assets.extra", METADATA_FILE)
    if not os.path.exists(path):
        raise DataError(f"{export_dir} is not a tfblend export: {path} is missing")
    with open(path) as stream:
        return json.load(stream)


def train_cmvn(train_dir) -> CmvnStats:
    """The global CMVN statistics stored in a training set's manifest."""
    return CmvnStats.from_dict(read_manifest(train_dir)["cmvn"]["global"])
