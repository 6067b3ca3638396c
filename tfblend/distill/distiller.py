"""The Distiller: train a student on a blend of hard labels and a teacher's soft targets."""

import keras
import tensorflow as tf

from tfblend.distill.losses import (
    DenseSoftCrossEntropy,
    SoftLoss,
    SparseSoftCrossEntropy,
    hard_cross_entropy,
    real_frames,
)
from tfblend.errors import DataError


def _multi_worker(strategy) -> bool:
    """True under a MultiWorkerMirroredStrategy that spans several workers."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and (
        strategy.extended._in_multi_worker_mode()
    )


class _Frozen:
    """Holds the teacher out of sight of Keras' and TensorFlow's object tracking, so that the
    Distiller's weights, checkpoints and `.keras` files hold the student (and optimizer) only."""

    def __init__(self, model):
        self.model = model


@keras.saving.register_keras_serializable(package="tfblend")
class Distiller(keras.Model):
    """A `keras.Model` that trains `student` on alpha * hard CE + (1 - alpha) * T^2 * soft CE.

    Two sources of soft targets:

    - stored (default, `teacher=None`): batches are `(inputs, hard_labels, soft_targets)` with
      soft targets read from disk, e.g. `tfblend.pipeline.frame_dataset(..., targets_dir=...)`:
      `{"ids": int32 [B, k], "probs": float32 [B, k]}` (+ optional `"mass"` `[B]`, `"utt_id"`
      `[B]`); the default soft loss is `SparseSoftCrossEntropy("renormalize")`.
    - online (`teacher` given): batches are `(inputs, hard_labels)` and the frozen teacher is
      called in every step (`teacher_logits`); the default soft loss is
      `DenseSoftCrossEntropy()`. The teacher may take other inputs than the student: by
      default a teacher whose output has a time axis (`[B, T, classes]`, e.g. `LSTMTeacher`)
      is run on the student's window `[B, 2W+1, D]` as a short sequence and its centre frame's
      logits are used; override `teacher_logits` for any other mapping.

      Stored targets are the better choice for an utterance-level teacher: a BLSTM dumping
      targets sees each whole utterance (both directions, seconds of context), while run
      online on a window it sees only +-W frames, and it then costs a teacher forward pass in
      every step of every epoch. Online mode is for comparison and for teachers that fit.

    Hooks meant to be overridden (each documented with shapes): `soft_targets(data)`,
    `teacher_logits(inputs)`, `hard_loss(labels, logits)`, `soft_loss(targets, logits)`,
    `blend(hard, soft)`. `train_step` and `test_step` call them, so a subclass changes one
    without copying the steps.

    Window and chunk batches: a window batch has inputs `[B, 2W+1, D]`, labels int `[B]` and
    targets `[B, ...]`, and the student returns logits `[B, classes]`. A chunk batch
    (`tfblend.pipeline.chunk_dataset`) has inputs `[B, L+2W, D]`, labels int `[B, L]` and
    targets `[B, L, ...]`, and a student that computes densely over time returns logits
    `[B, L, classes]`; the frame mask is `labels >= 0` (label -1 marks the padded tail of an
    utterance's last chunk). Before any hook sees a chunk batch, logits, labels and targets are
    flattened to frames and the masked frames are dropped (`frames`): the hooks, the target
    validation and every metric see the real frames only, `[N, ...]`, exactly as they see the N
    frames of a window batch (a window batch is the L = 1 case without a mask). Masked frames
    contribute nothing to the loss, the gradients or the metrics.

    Distribution: per-frame losses are summed and divided by the global number of real frames
    (the sum over replicas of each replica's real frames; for window batches the global batch
    size), so under `tf.distribute.MirroredStrategy` the summed replica gradients equal the
    single-replica gradient of the same global batch, and every real frame has the same weight
    whatever the padding of the batch it came in (dividing by B*L instead would weight the
    frames of a padded batch less and would not be the mean over frames). Metrics are averaged
    over each replica's real frames, then over replicas (exact when the replicas hold equally
    many real frames). The Distiller, the
    student, the teacher and the optimizer must be created under the strategy's scope.

    Saving: the teacher is frozen (`trainable = False`) and not tracked: `save_weights`,
    `tf.train.Checkpoint(model=distiller)` and `.keras` files of the Distiller hold the student
    and the optimizer only (pass the teacher again after loading to continue online).
    `distiller.student.save(...)` saves the student alone; `call` is the student's forward pass,
    so exporting the Distiller exports the student only.

    Args:
        student: `keras.Model` mapping `inputs` to logits float32 `[B, classes]`.
        teacher: optional frozen `keras.Model` for online targets (see above).
        alpha: weight of the hard-label loss, in [0, 1].
        temperature: softmax temperature T > 0 of the soft loss (stored probs are at T = 1).
        soft_loss: a `tfblend.distill.losses.SoftLoss` (default: see above).
        target_k: entries per frame the stored targets must have (the target manifest's k);
            None to accept any.
        validate_targets: check every soft-target batch (ids in range, probabilities finite and
            >= 0) and stop at the first bad one naming its utterance (when the batch has
            `utt_id`). The checks are reductions over `[B, k]`, negligible next to a step.

    Metrics (`fit`/`evaluate` logs): `loss` (the blended loss), `hard_ce`, `soft_ce`, `accuracy`
    (frame accuracy against the hard labels), `teacher_agreement` (the student's top-1 equals
    the teacher's), and any metrics given to `compile` (computed on (labels, logits)).
    """

    def __init__(
        self,
        student,
        teacher=None,
        *,
        alpha=0.5,
        temperature=1.0,
        soft_loss=None,
        target_k=None,
        validate_targets=True,
        name="distiller",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        if soft_loss is None:
            soft_loss = DenseSoftCrossEntropy() if teacher is not None else SparseSoftCrossEntropy()
        if not isinstance(soft_loss, SoftLoss):
            raise TypeError(f"soft_loss must be a tfblend.distill.SoftLoss, got {soft_loss!r}")
        soft_loss.check_temperature(temperature)
        self.student = student
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.soft_loss_fn = soft_loss
        self.target_k = None if target_k is None else int(target_k)
        self.validate_targets = bool(validate_targets)
        self._frozen = None
        if teacher is not None:
            teacher_classes = getattr(teacher, "num_classes", None)
            student_classes = getattr(student, "num_classes", None)
            if None not in (teacher_classes, student_classes) and (
                teacher_classes != student_classes
            ):
                raise DataError(
                    f"teacher {teacher.name!r} has {teacher_classes} classes, student "
                    f"{student.name!r} has {student_classes}"
                )
            teacher.trainable = False
            self._frozen = _Frozen(teacher)
        self.hard_ce_tracker = keras.metrics.Mean(name="hard_ce")
        self.soft_ce_tracker = keras.metrics.Mean(name="soft_ce")
        self.accuracy_tracker = keras.metrics.Mean(name="accuracy")
        self.agreement_tracker = keras.metrics.Mean(name="teacher_agreement")

    @property
    def teacher(self):
        """The frozen teacher (None in stored-target mode). Not part of the saved state."""
        return None if self._frozen is None else self._frozen.model

    def __dir__(self):
        # Keras' savers walk dir(model) and would save the teacher through this property.
        return [name for name in super().__dir__() if name != "teacher"]

    def compile(self, optimizer="adam", metrics=None, **kwargs):
        """Keras `compile` without `loss`: the losses are the Distiller's (hooks and soft_loss).

        `metrics` are computed on (hard labels, student logits), e.g.
        `keras.metrics.SparseTopKCategoricalAccuracy(5, from_logits=True)`.
        """
        if kwargs.get("loss") is not None:
            raise ValueError(
                "Distiller.compile takes no loss: override the hard_loss/soft_loss hooks or "
                "pass soft_loss= to the constructor"
            )
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        """Re-compile from a `.keras` file's compile config (restores the optimizer's state)."""
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def call(self, inputs, training=False):
        """The student's forward pass: `inputs` -> logits float32 `[B, classes]` (windows) or
        `[B, L, classes]` (chunks)."""
        return self.student(inputs, training=training)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        """Keras 3.15 (TF backend) reduces the first distributed batch with
        `strategy.reduce("MEAN", batch)` before it checks whether anything needs building; under
        `MultiWorkerMirroredStrategy` that fails on a nested batch ("Attempt to convert a value
        (PerReplica...) to a Tensor"). One replica's share of the batch has the same shapes, so
        it is handed over instead."""
        strategy = self._distribute_strategy
        if iterator is not None and strategy is not None:
            for _, _, batches in iterator:
                data_batch = tf.nest.map_structure(
                    lambda value: strategy.experimental_local_results(value)[0]
                    if isinstance(value, tf.distribute.DistributedValues)
                    else value,
                    next(batches),
                )
                break
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def build(self, input_shape):
        if not self.student.built:
            self.student.build(input_shape)
        self.built = True

    # ----------------------------------------------------------------------------------------
    # Hooks.

    def soft_targets(self, data):
        """Soft targets for a batch.

        Args:
            data: the batch, `(inputs, hard_labels)` or `(inputs, hard_labels, soft_targets)`.
        Returns:
            stored mode: the batch's target dict (`ids`/`probs` `[B, k]`, or `[B, L, k]` for
            chunks, ...); online mode: `{"logits": float32 [B, classes]}` (chunks:
            `[B, L, classes]`) from `teacher_logits`; None when the batch has no targets and
            there is no teacher (training then needs alpha == 1; evaluation scores hard labels
            only, see `test_step`).
        """
        if self.teacher is not None:
            labels = data[1]
            if labels.shape.rank == 2:  # a chunk batch: the teacher's L output frames
                return {"logits": self.teacher_logits(data[0], tf.shape(labels)[1])}
            return {"logits": self.teacher_logits(data[0])}
        return data[2] if len(data) > 2 else None

    def teacher_logits(self, inputs, num_frames=None):
        """Online mode: the teacher's logits for the student's inputs.

        Args:
            inputs: the student's batch inputs, windows float32 `[B, 2W+1, D]` or chunks
                `[B, L+2W, D]`.
            num_frames: None for windows; L for chunks.
        Returns:
            windows: float32 `[B, classes]`, no gradient. A teacher output `[B, T, classes]`
            (a sequence model run on the window as a T = 2W+1 frame utterance) is reduced to
            its centre frame `[:, T // 2]`, the frame the window's label belongs to.
            chunks: float32 `[B, L, classes]`, the central L frames `[:, W : W + L]` of the
            teacher's output on the chunk as a T = L+2W frame utterance.
        """
        logits = self.teacher(inputs, training=False)
        if logits.shape.rank == 3:
            if num_frames is None:
                logits = logits[:, logits.shape[1] // 2]
            else:
                start = (tf.shape(logits)[1] - num_frames) // 2
                logits = logits[:, start : start + num_frames]
        return tf.stop_gradient(logits)

    def hard_loss(self, labels, logits):
        """Per-example hard-label loss: int `[B]`, float32 `[B, classes]` -> float32 `[B]`."""
        return hard_cross_entropy(labels, logits)

    def soft_loss(self, targets, logits):
        """Per-example soft loss at `self.temperature` (without the T^2 factor).

        Args:
            targets: the dict from `soft_targets` (validated).
            logits: float32 `[B, classes]` student logits.
        Returns:
            float32 `[B]`.
        """
        return self.soft_loss_fn(targets, logits, self.temperature)

    def blend(self, hard, soft):
        """Per-example training loss from the hard and soft losses (float32 `[B]` each; `soft`
        is None without soft targets): alpha * hard + (1 - alpha) * T^2 * soft."""
        if soft is None:
            return hard
        return self.alpha * hard + (1.0 - self.alpha) * self.temperature**2 * soft

    # ----------------------------------------------------------------------------------------
    # Steps.

    def frames(self, labels, logits, targets):
        """The real frames of a batch: `(labels [N], logits [N, classes], targets [N, ...])`
        (:func:`tfblend.distill.losses.real_frames`: a window batch as it is, a chunk batch
        flattened to its frames with the masked ones dropped)."""
        return real_frames(labels, logits, targets)

    def _per_example_losses(self, labels, logits, targets, training):
        """(hard [N], soft [N] or None, total [N]) for a batch's real frames and their logits."""
        num_classes = logits.shape[-1]
        if targets is None:
            if training and self.alpha < 1.0:
                raise ValueError(
                    "the Distiller has no teacher and the batch has no soft targets: batches "
                    "must be (inputs, hard_labels, soft_targets), or use alpha=1"
                )
            soft = None
        else:
            if self.validate_targets:
                targets = self.soft_loss_fn.validate(targets, num_classes, self.target_k)
            soft = self.soft_loss(targets, logits)
        hard = self.hard_loss(labels, logits)
        return hard, soft, self.blend(hard, soft)

    def _global_batch_size(self, per_example):
        """Sum of the replicas' real frames (window batches: batch sizes; exact also for uneven
        last batches)."""
        local = tf.cast(tf.shape(per_example)[0], tf.float32)
        replica = tf.distribute.get_replica_context()
        if replica is None or replica.num_replicas_in_sync == 1:
            return local
        return replica.all_reduce(tf.distribute.ReduceOp.SUM, local)

    def _update_metrics(self, inputs, labels, logits, targets, hard, soft, total):
        labels = tf.cast(labels, tf.int32)
        predicted = tf.argmax(logits, axis=-1, output_type=tf.int32)
        self._loss_tracker.update_state(total)
        self.hard_ce_tracker.update_state(hard)
        self.accuracy_tracker.update_state(tf.cast(tf.equal(predicted, labels), tf.float32))
        if soft is not None:
            self.soft_ce_tracker.update_state(soft)
            top1 = self.soft_loss_fn.teacher_top1(targets)
            self.agreement_tracker.update_state(tf.cast(tf.equal(predicted, top1), tf.float32))
        # Updates compiled metrics and returns every metric's result; Keras then averages the
        # replicas' results, which equals the global mean for equal replica batches.
        logs = self.compute_metrics(inputs, labels, logits)
        if _multi_worker(self.distribute_strategy):
            # Keras 3.15 reduces logs across workers with strategy.reduce(MEAN, axis=0), which
            # needs an axis: give each scalar one (the mean of [1]-vectors is the scalar mean).
            logs = {name: tf.reshape(value, [1]) for name, value in logs.items()}
        return logs

    def train_step(self, data):
        """One step on `(inputs, hard_labels[, soft_targets])`: gradients for the student only.

        inputs: the student's input (windows float32 `[B, 2W+1, D]`, or chunks `[B, L+2W, D]`);
        hard_labels: int32 `[B]` (chunks: `[B, L]`, -1 on masked frames).
        """
        targets = self.soft_targets(data)
        with tf.GradientTape() as tape:
            labels, logits, targets = self.frames(data[1], self(data[0], training=True), targets)
            hard, soft, total = self._per_example_losses(labels, logits, targets, True)
            loss = tf.reduce_sum(total) / self._global_batch_size(total)
            loss = self.optimizer.scale_loss(loss)
        variables = self.student.trainable_variables
        gradients = self.check_finite(loss, tape.gradient(loss, variables))
        self.optimizer.apply_gradients(zip(gradients, variables, strict=True))
        return self._update_metrics(data[0], labels, logits, targets, hard, soft, total)

    def check_finite(self, loss, gradients):
        """The gradients, gated on a tf assertion (naming the step) that loss and gradients are
        finite: a NaN/Inf stops training before it reaches the weights.

        loss: float32 scalar; gradients: the student's gradients (None entries pass through).
        The inputs were checked for finiteness when read (:mod:`tfblend.pipeline`), so a
        non-finite value here means the training diverged.
        """
        finite = [tf.reduce_all(tf.math.is_finite(g)) for g in gradients if g is not None]
        ok = tf.reduce_all(tf.stack([tf.math.is_finite(loss), *finite]))
        message = "non-finite loss or gradient (training diverged) at optimizer step"
        check = tf.debugging.Assert(ok, [message, self.optimizer.iterations + 1, "loss", loss])
        with tf.control_dependencies([check]):
            return [None if g is None else tf.identity(g) for g in gradients]

    def test_step(self, data):
        """Metrics on `(inputs, hard_labels[, soft_targets])` without updating the student.

        A batch without soft targets in stored mode (a dev set with no dumped targets) is
        scored on hard labels alone: `loss` is then the hard cross-entropy, and `soft_ce` and
        `teacher_agreement` are not updated.
        """
        targets = self.soft_targets(data)
        labels, logits, targets = self.frames(data[1], self(data[0], training=False), targets)
        hard, soft, total = self._per_example_losses(labels, logits, targets, False)
        return self._update_metrics(data[0], labels, logits, targets, hard, soft, total)

    # ----------------------------------------------------------------------------------------
    # Serialisation (the teacher is not part of it).

    def get_config(self):
        config = super().get_config()
        config.update(
            student=keras.saving.serialize_keras_object(self.student),
            alpha=self.alpha,
            temperature=self.temperature,
            soft_loss=keras.saving.serialize_keras_object(self.soft_loss_fn),
            target_k=self.target_k,
            validate_targets=self.validate_targets,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["student"] = keras.saving.deserialize_keras_object(config["student"])
        config["soft_loss"] = keras.saving.deserialize_keras_object(config["soft_loss"])
        return cls(**config)
