"""One training run from a config: the teacher, a hard-label student, or a blended student.

This is where the pieces meet: an :class:`~tfblend.config.ExperimentConfig`, the corpus root's
``train``/``dev`` sets, the input pipelines, a model from the registry, the
:class:`~tfblend.distill.Distiller`, a tf.distribute strategy and the resumable ``fit``. The
result is a model directory (:mod:`tfblend.train.modeldir`). A run goes the way a tf-models
task does: build the inputs (:mod:`tfblend.train.inputs`), build the model and its losses under
the strategy's scope, fit, then finish the model directory.

Every run is seeded (weights, shuffling, dropout) and uses deterministic ops and a
deterministic input order, so a killed run resumes to the same weights (:mod:`tfblend.train.fit`).
"""

import csv
import functools
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from tfblend import models
from tfblend.config import DistillConfig, ExperimentConfig, model_kwargs, save_experiment
from tfblend.distill import losses
from tfblend.distill.distiller import Distiller
from tfblend.errors import DataError
from tfblend.models import get_model
from tfblend.records import TARGET_FORMAT, read_manifest
from tfblend.train.fit import clear_resume_state, fit_resumable, standard_callbacks
from tfblend.train.inputs import Inputs, teacher_inputs, training_sets, window_inputs
from tfblend.train.modeldir import load_model_dir, save_model_dir
from tfblend.train.plateau import plateau_control
from tfblend.train.rundir import guarded_run
from tfblend.train.strategies import make_optimizer, writable_dir


def _seed_everything(seed: int) -> None:
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _info(role, experiment, manifest, train_dir, kind, started, **extra) -> dict:
    return {
        "role": role,
        "model": experiment.model.type,
        "kind": kind,
        "num_classes": manifest["num_classes"],
        "feature_dim": manifest["feature_dim"],
        "context": experiment.data.context if kind == "window" else None,
        "cmvn": experiment.data.cmvn,
        "train_dir": os.path.abspath(train_dir),
        "train_digest": manifest["content_digest"],
        "seed": experiment.train.seed,
        "epochs": experiment.train.epochs,
        "precision": experiment.train.precision,
        "wall_seconds": time.time() - started,
        **extra,
    }


def _fit_and_save(trained, saved, inputs: Inputs, experiment, model_dir, strategy, verbose, info):
    """Fits ``trained`` (resumable: ``saved``'s variables and its optimizer's are the state)
    and saves ``saved`` with ``info()`` (called once fitted: it times the run) as model.json."""

    def variables_fn():
        return [*saved.variables, *trained.optimizer.variables]

    course = _fit(trained, saved, inputs, experiment, model_dir, strategy, variables_fn, verbose)
    return _finish(saved, model_dir, strategy, experiment, info(training=course))


def progress_verbosity(verbose):
    """Keras's ``verbose`` for ``fit``: "auto" becomes a progress bar on a terminal and one line
    per epoch (2) otherwise, so that the log of a study or a batch job holds the epochs' results
    rather than thousands of bar redraws; any other value is kept."""
    if verbose == "auto" and not sys.stdout.isatty():
        return 2
    return verbose


def _fit(model, saved, inputs: Inputs, experiment, model_dir, strategy, variables_fn, verbose):
    """Runs the resumable fit; returns what ``model.json`` records of the schedule's course
    (the plateau schedule also puts ``saved``'s best epoch's weights back)."""
    out_dir = writable_dir(model_dir, strategy)
    plateau = plateau_control(model, lambda: saved.weights, experiment)
    fit_resumable(
        model,
        inputs.make_dataset,
        epochs=experiment.train.epochs,
        steps_per_epoch=inputs.steps,
        resume_dir=os.path.join(out_dir, "resume"),
        restore_dir=os.path.join(model_dir, "resume"),
        variables_fn=variables_fn,
        every_steps=experiment.train.checkpoint_every_steps,
        callbacks=standard_callbacks(out_dir),
        validation_data=inputs.dev,
        verbose=progress_verbosity(verbose),
        plateau=plateau,
    )
    if plateau is not None:
        return plateau.finish()
    return {
        "schedule": experiment.optimizer.schedule,
        "epochs_run": experiment.train.epochs,
        **_best_epoch(os.path.join(out_dir, "history.csv"), experiment.train.monitor),
    }


def _best_epoch(history_csv: str, monitor: str) -> dict:
    """The 1-based epoch of ``history.csv`` with the best ``monitor`` and its value (a fixed
    schedule keeps its last epoch's weights; this says whether an earlier one was better)."""
    with open(history_csv, newline="") as stream:
        values = [float(row[monitor]) for row in csv.DictReader(stream) if row.get(monitor)]
    if not values:
        return {}
    pick = np.argmin if "loss" in monitor else np.argmax
    best = int(pick(values))
    return {"best_epoch": best + 1, f"best_{monitor}": values[best]}


@guarded_run
def train_teacher(
    corpus_dir: str, model_dir: str, experiment: ExperimentConfig, strategy, verbose="auto"
) -> dict:
    """Trains the utterance-level teacher (an LSTM) on hard frame labels.

    Args:
      corpus_dir: corpus root with ``train/`` and ``dev/``.
      model_dir: the model directory to write (resumes an unfinished run found there).
      experiment: the config (``model.type`` must be a sequence model).
      strategy: a tf.distribute strategy (:func:`tfblend.train.strategies.make_strategy`).
      verbose: Keras's progress-bar setting ("auto": a bar on a terminal, one line per epoch
        otherwise; :func:`progress_verbosity`).

    Returns:
      The model directory's info (:mod:`tfblend.train.modeldir`).
    """
    if experiment.model.type != "lstm":
        raise DataError(f"the teacher must be a sequence model (lstm), not {experiment.model.type}")
    if experiment.train.label_smoothing:
        raise DataError(
            f"train.label_smoothing={experiment.train.label_smoothing} applies to the window "
            "models (train_student, blend); the teacher trains on plain hard-label cross-entropy"
        )
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        raise DataError(
            "the teacher trains with --strategy=default or mirrored: Keras 3.15 cannot fit a "
            "plain model under MultiWorkerMirroredStrategy (its symbolic build reduces the "
            "nested first batch); the Distiller-trained students and blends work multi-worker"
        )
    started = time.time()
    train_dir, dev_dir, manifest = training_sets(corpus_dir)
    _seed_everything(experiment.train.seed)
    inputs = teacher_inputs(train_dir, dev_dir, manifest, experiment, strategy)
    with strategy.scope():
        teacher = get_model(
            "lstm",
            num_classes=manifest["num_classes"],
            dtype=experiment.train.precision,
            **model_kwargs(experiment.model),
        )
        teacher.compile(
            optimizer=make_optimizer(experiment.optimizer, inputs.steps * experiment.train.epochs),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            weighted_metrics=["accuracy"],
        )
        probe = np.zeros([1, 8, manifest["feature_dim"]], np.float32)
        teacher({"features": probe, "mask": np.ones([1, 8], bool)})
        teacher.optimizer.build(teacher.trainable_variables)

    info = functools.partial(_info, "teacher", experiment, manifest, train_dir, "sequence", started)
    return _fit_and_save(teacher, teacher, inputs, experiment, model_dir, strategy, verbose, info)


class LabelSmoothingDistiller(Distiller):
    """Hard labels with label smoothing, through the Distiller's ``hard_loss`` hook.

    ``hard = (1 - epsilon) * CE(label) + epsilon * mean_c(-log p_c)``: the cross-entropy against
    a target that puts ``epsilon`` uniformly on all classes. On hard labels alone (``alpha`` 1,
    the default) it is the control of the blend: a student that gains as much from this as from
    the teacher's targets learned smoothing, not dark knowledge. In a blend (``alpha`` < 1, a
    ``teacher`` or stored targets, the Distiller's other arguments) it smooths the hard-label
    term only; the soft term is the teacher's.
    """

    def __init__(self, student, epsilon: float, teacher=None, *, alpha: float = 1.0, **kwargs):
        super().__init__(student, teacher, alpha=alpha, **kwargs)
        self.epsilon = float(epsilon)

    def hard_loss(self, labels, logits):
        log_probs = tf.nn.log_softmax(logits, axis=-1)
        uniform = -tf.reduce_mean(log_probs, axis=-1)
        return (1.0 - self.epsilon) * super().hard_loss(labels, logits) + self.epsilon * uniform


def _soft_loss(targets_manifest: dict, experiment: ExperimentConfig):
    """The soft-loss object that fits a stored target set and the distill config."""
    distill = experiment.distill
    if targets_manifest["method"] == "sampled":
        _refuse_tail(experiment, "sampled targets weight their draws (no tail to treat)")
        return losses.SampledSoftCrossEntropy()
    if distill.tail == "ghost" and not targets_manifest["has_mass"]:
        raise DataError(
            "distill.tail=ghost needs the kept teacher mass, which these targets do "
            "not store; dump them with --tail=ghost"
        )
    return losses.SparseSoftCrossEntropy(tail=distill.tail)


def _refuse_tail(experiment: ExperimentConfig, why: str) -> None:
    """DataError when ``distill.tail`` is set to other than its default where no tail exists."""
    default = DistillConfig().tail
    if experiment.distill.tail != default:
        raise DataError(f"distill.tail={experiment.distill.tail} does not apply: {why}")


def _refuse_distill(experiment: ExperimentConfig) -> None:
    """DataError when a hard-label run (train_student) is given blend settings it would
    ignore: ``distill.*`` other than the defaults."""
    set_keys = {
        key: value
        for key, value in experiment.distill.as_dict().items()
        if value != DistillConfig().as_dict()[key]
    }
    if set_keys:
        listed = ", ".join(f"distill.{key}={value}" for key, value in set_keys.items())
        raise DataError(
            f"{listed}: blend settings do not apply to a student on hard labels (it has no "
            "teacher term); blend.py uses them"
        )


def _targets_info(targets_manifest: dict, targets_dir: str) -> dict:
    """What a blend's model.json records of the stored targets it learned from."""
    keys = ("method", "k", "top_fraction", "value_encoding", "teacher")
    return {**{key: targets_manifest.get(key) for key in keys}, "dir": os.path.abspath(targets_dir)}


def _check_receptive_field(student, experiment: ExperimentConfig) -> None:
    """DataError (one line from the scripts) unless the VGG student's receptive field is the
    data's window 2W+1; other window models have none to check."""
    if experiment.model.type != "vgg":
        return
    try:
        models.check_receptive_field(student, experiment.data.context)
    except ValueError as error:
        raise DataError(f"model.vgg.preset={experiment.model.vgg.preset}: {error}") from None


@guarded_run
def train_window_model(
    corpus_dir: str,
    model_dir: str,
    experiment: ExperimentConfig,
    strategy,
    *,
    role: str = "student",
    targets_dir: str | None = None,
    teacher_dir: str | None = None,
    verbose="auto",
) -> dict:
    """Trains a model of context windows: hard labels only, or blended with a teacher.

    The VGG student computes densely over time: its receptive field must be the data's window
    (``tfblend.models.check_receptive_field``, checked before training), and with
    ``data.chunk_frames`` L > 0 it trains and is validated on chunks of L output frames
    (``tfblend.pipeline.chunk_dataset``: the same frames, labels and targets as windows, each
    frame's convolutions computed once instead of once per window that contains it). The DNN
    trains on windows. Either way the result is a window model (``[B, 2W+1, D] -> [B, K]``),
    and the checkpoint/resume machinery is the same.

    Args:
      corpus_dir: corpus root with ``train/`` and ``dev/``.
      model_dir: the model directory to write (resumes an unfinished run found there).
      experiment: the config (``model.type`` "vgg" or "dnn"; ``data.chunk_frames`` for dense
        training; ``distill`` for blending, ``train.label_smoothing`` for the smoothing
        control).
      strategy: a tf.distribute strategy.
      role: "student" (hard labels) or "blend".
      targets_dir: stored teacher targets of ``train`` (blend, the default way).
      teacher_dir: a teacher called in every step instead (online blend, for comparison).
      verbose: Keras's progress-bar setting ("auto": a bar on a terminal, one line per epoch
        otherwise; :func:`progress_verbosity`).

    Returns:
      The model directory's info.
    """
    if experiment.model.type not in ("vgg", "dnn"):
        raise DataError(f"a window model must be vgg or dnn, not {experiment.model.type}")
    if role == "blend" and bool(targets_dir) == bool(teacher_dir):
        raise DataError("blending needs exactly one of --targets_dir and --teacher_dir")
    if role == "blend" and teacher_dir:
        _refuse_tail(experiment, "an online teacher gives every class's probability")
    if role != "blend":
        _refuse_distill(experiment)
    started = time.time()
    train_dir, dev_dir, manifest = training_sets(corpus_dir)
    _seed_everything(experiment.train.seed)
    stored = role == "blend" and targets_dir is not None
    extra, targets_manifest, soft_loss = {}, None, None
    if stored:
        targets_manifest = read_manifest(targets_dir, expected_format=TARGET_FORMAT)
        soft_loss = _soft_loss(targets_manifest, experiment)
        extra["targets"] = _targets_info(targets_manifest, targets_dir)
    inputs = window_inputs(
        train_dir, dev_dir, manifest, experiment, strategy, targets_dir if stored else None
    )
    if inputs.chunk_frames:
        extra["chunk_frames"] = inputs.chunk_frames
    with strategy.scope():
        student = get_model(
            experiment.model.type,
            num_classes=manifest["num_classes"],
            dtype=experiment.train.precision,
            **model_kwargs(experiment.model),
        )
        _check_receptive_field(student, experiment)  # before the first call: a clear error
        teacher = None
        if role == "blend" and teacher_dir:
            teacher, _ = load_model_dir(teacher_dir, role="teacher")
            extra["online_teacher"] = os.path.abspath(teacher_dir)
        distiller = _distiller(student, teacher, role, experiment, soft_loss, targets_manifest)
        _build(distiller, student, experiment, manifest["feature_dim"], inputs.steps)

    info = functools.partial(
        _info, role, experiment, manifest, train_dir, "window", started, **extra
    )
    return _fit_and_save(distiller, student, inputs, experiment, model_dir, strategy, verbose, info)


def _build(distiller, student, experiment: ExperimentConfig, feature_dim: int, steps: int):
    """Compiles ``distiller`` with the run's optimizer and builds the student's and the
    optimizer's variables (a resumed run restores into them)."""
    distiller.compile(
        optimizer=make_optimizer(experiment.optimizer, steps * experiment.train.epochs)
    )
    width = 2 * experiment.data.context + 1
    student(np.zeros([1, width, feature_dim], np.float32))
    distiller.optimizer.build(student.trainable_variables)


def _distiller(student, teacher, role: str, experiment: ExperimentConfig, soft_loss, targets):
    """What a window model is trained to minimise (a tf-models task's ``build_losses``): the
    blend of hard labels and the teacher's targets (stored: ``soft_loss`` on the target set of
    manifest ``targets``; online: dense targets of ``teacher``; with ``train.label_smoothing``
    the hard-label term smoothed), hard labels with label smoothing (the control), or hard
    labels alone."""
    smoothing = experiment.train.label_smoothing
    if role == "blend":
        distill = experiment.distill
        kind, extra = (
            (LabelSmoothingDistiller, {"epsilon": smoothing}) if smoothing else (Distiller, {})
        )
        return kind(
            student,
            teacher=teacher,
            **extra,
            alpha=distill.alpha,
            temperature=distill.temperature,
            soft_loss=soft_loss if soft_loss is not None else losses.DenseSoftCrossEntropy(),
            target_k=targets["k"] if targets is not None else None,
        )
    if smoothing:
        return LabelSmoothingDistiller(student, smoothing)
    return Distiller(student, alpha=1.0)


def _finish(model, model_dir, strategy, experiment, info) -> dict:
    """Saves the model directory (the chief's; other workers write a throw-away copy)."""
    out_dir = writable_dir(model_dir, strategy)
    save_experiment(experiment, os.path.join(out_dir, "experiment.yaml"))
    info = save_model_dir(model, out_dir, info)
    clear_resume_state(os.path.join(out_dir, "resume"))
    return info
