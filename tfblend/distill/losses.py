"""Per-example losses for blending: hard cross-entropy and soft cross-entropies on teacher targets.

Every loss returns one value per example (frame), float32 `[B]`; the caller (the Distiller)
reduces them with the global number of frames. Losses always see frames: for chunk batches
(`[B, L, ...]`, `tfblend.pipeline.chunk_dataset`) the Distiller flattens logits and targets to
the real frames first (`real_frames`, `Distiller.frames`), so `B` here is the number of real
frames. Soft-loss objects are small and stateless, in the manner of
`keras.distillation.LogitsDistillation`, and the Distiller takes one of them:

- `SparseSoftCrossEntropy(tail=...)`: stored top-k targets (`ids`, `probs`, optional `mass`).
  The student's log-probabilities are gathered at the k stored ids; no `[B, classes]` target is
  ever built.
- `SampledSoftCrossEntropy()`: stored sampled targets (`ids` drawn from the teacher, `probs`
  their importance weights): an unbiased estimate of the dense soft cross-entropy.
- `DenseSoftCrossEntropy()`: dense teacher `probs` or `logits` `[B, classes]` (online teachers,
  benchmarks).

Temperature: stored probabilities are the teacher's at T = 1. The softened teacher distribution
is softmax(z / T), proportional to p^(1/T), so over a kept set of ids the softened, renormalised
target is p_i^(1/T) / sum_j p_j^(1/T) exactly; the student side is log softmax(logits / T).
The Distiller multiplies soft losses by T^2 (Hinton et al., 2015) so gradients keep their scale.

Soft targets in a batch (`tfblend.pipeline.frame_dataset(..., targets_dir=...)`) are a dict:
`ids` int32 `[B, k]`, `probs` float32 `[B, k]`, optional `mass` float32 `[B]` (the teacher's
probability mass in the k entries) and, where the pipeline knows it, `utt_id` string `[B]`
(used only in error messages).
"""

import keras
import tensorflow as tf

from tfblend.errors import DataError

#: How the teacher mass outside the stored ids is treated (:class:`SparseSoftCrossEntropy`).
TAILS = ("renormalize", "ghost", "ignore")
# log(1 - S) is clamped at S = 1 - _GHOST_FLOOR: the student's leftover mass is never exactly 0.
_GHOST_FLOOR = 1e-7


def hard_cross_entropy(labels, logits):
    """Sparse softmax cross-entropy of integer labels, per example.

    Args:
        labels: int `[B]` class ids in [0, classes).
        logits: float32 `[B, classes]` student logits.
    Returns:
        float32 `[B]`.
    """
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=logits
    )


def real_frames(labels, logits, targets):
    """The real frames of a batch: `(labels [N], logits [N, classes], targets [N, ...])`.

    A window batch (logits `[B, classes]`) is returned as it is (N = B). A chunk batch
    (labels `[B, L]`, logits `[B, L, classes]`, targets `[B, L, ...]`; per-chunk values
    `[B]` such as `utt_id` are repeated per frame) is flattened to its B*L frames and the
    frames with label < 0 (the mask) are dropped, so N counts the real frames.
    """
    if logits.shape.rank != 3:
        return labels, logits, targets
    labels = tf.reshape(labels, [-1])
    keep = tf.where(labels >= 0)[:, 0]
    per_chunk = tf.size(labels) // tf.shape(logits)[0]

    def real(value):
        if value.shape.rank == 1:
            value = tf.repeat(value, per_chunk)
        else:
            inner = [tf.shape(value)[i] if d is None else d for i, d in enumerate(value.shape)]
            value = tf.reshape(value, [-1, *inner[2:]])
        return tf.gather(value, keep)

    flat = None if targets is None else {name: real(v) for name, v in targets.items()}
    return tf.gather(labels, keep), real(logits), flat


def gathered_log_probs(logits, ids, temperature=1.0):
    """log softmax(logits / T) at `ids`, without materialising the full log-softmax.

    Args:
        logits: float32 `[B, classes]`.
        ids: int32 `[B, k]`.
    Returns:
        float32 `[B, k]`.
    """
    z = logits if temperature == 1.0 else logits / temperature
    return tf.gather(z, ids, batch_dims=1) - tf.reduce_logsumexp(z, axis=-1, keepdims=True)


def _soften(probs, temperature):
    """p^(1/T) over the kept entries, renormalised to sum to 1 per row: `[B, k]` -> `[B, k]`."""
    weights = probs if temperature == 1.0 else tf.pow(probs, 1.0 / temperature)
    return tf.math.divide_no_nan(weights, tf.reduce_sum(weights, axis=-1, keepdims=True))


def _assert_rows(ok, message, targets, shown):
    """An assertion that every row is `ok` (bool `[B]`); on failure it prints `message`, the
    first bad row's utterance (when `targets` has `utt_id`) and its `shown` values."""
    bad = tf.logical_not(ok)
    data = [f"DataError: soft targets: {message}."]
    if "utt_id" in targets:
        data += ["First bad utterance:", tf.boolean_mask(targets["utt_id"], bad)[:1]]
    data += ["First bad row:", tf.boolean_mask(shown, bad)[:1]]
    return tf.debugging.Assert(tf.reduce_all(ok), data, summarize=64)


class SoftLoss:
    """Base class of the soft losses: per-example soft cross-entropy of the student's logits
    against a batch of teacher targets.

    Subclasses implement `__call__`, `teacher_top1` and `validate`.
    """

    def __call__(self, targets, logits, temperature=1.0):
        """Per-example soft loss.

        Args:
            targets: dict of teacher target tensors (see the subclass).
            logits: float32 `[B, classes]` student logits.
            temperature: softmax temperature T > 0 (a Python float).
        Returns:
            float32 `[B]`.
        """
        raise NotImplementedError

    def check_temperature(self, temperature):
        """Raise ValueError if this loss cannot be used at `temperature`."""
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")

    def teacher_top1(self, targets):
        """The teacher's most probable class per example, int32 `[B]`."""
        raise NotImplementedError

    def validate(self, targets, num_classes, expected_k=None):
        """Check a target batch; returns the targets, made to depend on the checks.

        Static problems (wrong keys, ranks or sizes) raise `DataError` while tracing; value
        problems fail a `tf.debugging.Assert` at the first bad batch, naming the utterance when
        `targets` has `utt_id`.
        """
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _validate_sparse(targets, num_classes, expected_k, require_mass):
    for key in ("ids", "probs"):
        if key not in targets:
            raise DataError(
                f"soft targets: missing {key!r} (have {sorted(targets)}); stored sparse "
                "targets are {'ids': int32 [B, k], 'probs': float32 [B, k]}"
            )
    ids, probs = targets["ids"], targets["probs"]
    if ids.shape.rank != 2 or probs.shape.rank != 2 or ids.shape[-1] != probs.shape[-1]:
        raise DataError(
            f"soft targets: ids {ids.shape} and probs {probs.shape} must both be [B, k]"
        )
    k = ids.shape[-1]
    if expected_k is not None and k is not None and k != expected_k:
        raise DataError(
            f"soft targets: k = {k} entries per frame, but the target manifest says k = "
            f"{expected_k}"
        )
    ids = tf.cast(ids, tf.int32)
    checks = [
        _assert_rows(
            tf.reduce_all((ids >= 0) & (ids < num_classes), axis=-1),
            f"ids outside [0, {num_classes}) (the student's class count)",
            targets,
            ids,
        ),
        _assert_rows(
            tf.reduce_all(tf.math.is_finite(probs) & (probs >= 0.0), axis=-1),
            "probabilities must be finite and >= 0",
            targets,
            probs,
        ),
    ]
    if require_mass:
        checks.append(
            _assert_rows(
                tf.reduce_sum(probs, axis=-1) > 0.0,
                "a frame's probabilities sum to 0",
                targets,
                probs,
            )
        )
    if "mass" in targets:
        mass = targets["mass"]
        checks.append(
            _assert_rows(
                tf.math.is_finite(mass) & (mass >= 0.0) & (mass <= 1.0 + 1e-4),
                "mass must be finite and in [0, 1]",
                targets,
                mass[:, None],
            )
        )
    with tf.control_dependencies(checks):
        return {**targets, "ids": tf.identity(ids), "probs": tf.identity(probs)}


class _StoredSparseLoss(SoftLoss):
    """A soft loss on stored sparse targets: ``ids`` int32 ``[B, k]`` and their ``probs``."""

    def teacher_top1(self, targets):
        best = tf.argmax(targets["probs"], axis=-1, output_type=tf.int32)
        return tf.gather(tf.cast(targets["ids"], tf.int32), best[:, None], batch_dims=1)[:, 0]


@keras.saving.register_keras_serializable(package="tfblend")
class SparseSoftCrossEntropy(_StoredSparseLoss):
    """Soft cross-entropy on stored top-k targets, computed at the k stored ids only.

    Targets: `ids` int32 `[B, k]`, `probs` float32 `[B, k]` (teacher probabilities at T = 1,
    either raw or renormalised over the k entries), optional `mass` float32 `[B]` (the teacher
    mass m in the k entries; without it m = sum(probs), which is 1 for renormalised probs).

    With q_i = p_i^(1/T) / sum_j p_j^(1/T) the kept targets softened and renormalised, and
    g_i = log softmax(logits / T)_{id_i} the student's gathered log-probabilities:

    - `tail="renormalize"` (default): loss = -sum_i q_i g_i. The kept set is treated as the
      whole distribution: exact at any T for the renormalised top-k.
    - `tail="ghost"`: one extra bucket holds the leftover mass on both sides: loss =
      -m sum_i q_i g_i - (1 - m) log(1 - sum_i exp(g_i)). At T = 1 this is the exact cross-entropy
      of the two distributions coarsened to {k ids, everything else}. At T != 1 the bucket keeps
      its T = 1 mass 1 - m (the softened tail mass would need the teacher's tail, which is not
      stored), so it is an approximation that under-weights the tail for T > 1.
    - `tail="ignore"`: loss = -m sum_i q_i g_i: the leftover mass is dropped (the target sums to
      m < 1); at T != 1 the kept entries are softened among themselves and scaled by m.
    """

    def __init__(self, tail="renormalize"):
        if tail not in TAILS:
            raise ValueError(f"tail must be one of {TAILS}, got {tail!r}")
        self.tail = tail

    def __call__(self, targets, logits, temperature=1.0):
        g = gathered_log_probs(logits, targets["ids"], temperature)
        probs = targets["probs"]
        loss = -tf.reduce_sum(_soften(probs, temperature) * g, axis=-1)
        if self.tail == "renormalize":
            return loss
        mass = targets.get("mass")
        if mass is None:
            mass = tf.reduce_sum(probs, axis=-1)
        mass = tf.minimum(mass, 1.0)
        loss = mass * loss
        if self.tail == "ghost":
            kept = tf.minimum(tf.reduce_sum(tf.exp(g), axis=-1), 1.0 - _GHOST_FLOOR)
            loss -= (1.0 - mass) * tf.math.log1p(-kept)
        return loss

    def validate(self, targets, num_classes, expected_k=None):
        return _validate_sparse(
            targets, num_classes, expected_k, require_mass=self.tail != "ignore"
        )

    def get_config(self):
        return {"tail": self.tail}


@keras.saving.register_keras_serializable(package="tfblend")
class SampledSoftCrossEntropy(_StoredSparseLoss):
    """Importance-sampled soft cross-entropy (Anshumann et al., 2025; Kaldi's random prune).

    Targets: `ids` int32 `[B, k]` drawn from a proposal r over the classes (repeats allowed) and
    `probs` float32 `[B, k]` their importance weights w_j = p(id_j) / (k r(id_j)) (for r = p:
    w_j = 1/k, or count/k when repeats are merged; they then sum to 1). loss = -sum_j w_j g_j.

    Since E[sum_j w_j f(id_j)] = sum_c p_c f(c) for any f, the loss and its gradient are unbiased
    estimates of the dense soft cross-entropy and its gradient, at T = 1 only: the softened
    target p^(1/T) / Z needs the normaliser Z over all classes, which samples do not give
    (a self-normalised estimate would be biased), so other temperatures are refused.
    The weights are used as stored, never renormalised (that would bias the estimate).
    """

    def __call__(self, targets, logits, temperature=1.0):
        self.check_temperature(temperature)
        g = gathered_log_probs(logits, targets["ids"])
        return -tf.reduce_sum(targets["probs"] * g, axis=-1)

    def check_temperature(self, temperature):
        if temperature != 1.0:
            raise ValueError(
                f"sampled soft targets are unbiased only at temperature 1, got {temperature}"
            )

    def validate(self, targets, num_classes, expected_k=None):
        return _validate_sparse(targets, num_classes, expected_k, require_mass=False)


@keras.saving.register_keras_serializable(package="tfblend")
class DenseSoftCrossEntropy(SoftLoss):
    """Soft cross-entropy on dense teacher outputs (an online teacher, or dense stored targets).

    Targets: `{"logits": float32 [B, classes]}` (target softmax(logits / T)) or
    `{"probs": float32 [B, classes]}` (teacher probabilities at T = 1; target p^(1/T)
    renormalised). loss = -sum_c q_c log softmax(student_logits / T)_c. This is the KL
    divergence KL(q || student) plus the teacher's entropy, a constant for the student, so the
    gradients are those of `keras.distillation.LogitsDistillation`'s KL.
    """

    def __call__(self, targets, logits, temperature=1.0):
        if "logits" in targets:
            teacher = targets["logits"]
            q = tf.nn.softmax(teacher if temperature == 1.0 else teacher / temperature)
        else:
            q = _soften(targets["probs"], temperature)
        z = logits if temperature == 1.0 else logits / temperature
        return tf.nn.softmax_cross_entropy_with_logits(labels=tf.stop_gradient(q), logits=z)

    def teacher_top1(self, targets):
        values = targets["logits"] if "logits" in targets else targets["probs"]
        return tf.argmax(values, axis=-1, output_type=tf.int32)

    def validate(self, targets, num_classes, expected_k=None):
        del expected_k  # dense targets have one entry per class
        key = "logits" if "logits" in targets else "probs"
        if key not in targets:
            raise DataError(
                f"dense soft targets need 'logits' or 'probs' [B, classes], have {sorted(targets)}"
            )
        values = targets[key]
        if values.shape[-1] is not None and values.shape[-1] != num_classes:
            raise DataError(
                f"dense soft targets: {values.shape[-1]} classes, the student has {num_classes}"
            )
        ok = tf.math.is_finite(values)
        if key == "probs":
            ok &= values >= 0.0
        check = _assert_rows(
            tf.reduce_all(ok, axis=-1),
            f"dense {key} must be finite" + (" and >= 0" if key == "probs" else ""),
            targets,
            values,
        )
        with tf.control_dependencies([check]):
            return {**targets, key: tf.identity(values)}
