"""The inputs of a training run (a tf-models task's ``build_inputs``): train and dev datasets.

A run's training data is ``make_dataset(epoch, repeat)``: the epochs from ``epoch`` on, a pure
function of ``(seed, epoch)``, so a resumed run restarts its epoch and skips the steps taken
(:func:`tfblend.train.fit.fit_resumable`); with the steps of one epoch and the dev set it makes
an :class:`Inputs`. Training sets are sharded across workers by :func:`shard_policy`'s rule.
Before a run starts, :mod:`tfblend.train.guards` checks that both splits hold frames, that an
epoch has a step (on one replica a split smaller than one batch trains on one smaller batch per
epoch) and that the training pipeline yields its first batch within a bounded wait.
"""

import dataclasses
import os
from collections.abc import Callable

import tensorflow as tf

from tfblend.config import ExperimentConfig
from tfblend.errors import DataError
from tfblend.pipeline import DatasetOptions, chunk_dataset, frame_dataset, utterance_dataset
from tfblend.records import read_manifest, require_frames
from tfblend.train import guards
from tfblend.train.strategies import shard_policy

# Utterance lengths (frames) at which the teacher's batches are bucketed, to limit padding.
TEACHER_BUCKETS = (200, 300, 400, 550)
# Dev batches of about this many frames (a whole number of chunks when dense).
DEV_BATCH_FRAMES = 1024


@dataclasses.dataclass
class Inputs:
    """A run's data: ``make_dataset(epoch, repeat)``, the ``steps`` of one epoch, the ``dev``
    set, and the ``chunk_frames`` a dense student trains on (0: windows or utterances)."""

    make_dataset: Callable[[int, bool], tf.data.Dataset]
    steps: int
    dev: tf.data.Dataset
    chunk_frames: int = 0


def training_sets(corpus_dir: str) -> tuple[str, str, dict]:
    """``(train_dir, dev_dir, train manifest)`` of a corpus root; DataError when the training
    set has no frame labels or either split has no frames."""
    train_dir = os.path.join(corpus_dir, "train")
    dev_dir = os.path.join(corpus_dir, "dev")
    manifest = read_manifest(train_dir)
    require_frames(train_dir, manifest, "train on")
    require_frames(dev_dir, read_manifest(dev_dir), "validate on")
    if not manifest["has_labels"]:
        raise DataError(f"{train_dir} has no frame labels to train on")
    return train_dir, dev_dir, manifest


def _first_batch(make_dataset, train_dir: str) -> None:
    """Waits (bounded) for the first batch of the epochs a run trains on (guards)."""
    guards.first_batch_within(
        make_dataset(0, True).take(1), f"the training pipeline of {train_dir}"
    )


def _epochs(
    view, train_dir: str, manifest: dict, experiment: ExperimentConfig, strategy, options,
    targets_dir=None,
):  # fmt: skip
    """``make_dataset(epoch, repeat)`` of a pipeline ``view`` over the training set, read as
    ``options`` (a ``DatasetOptions``) say with the run's seed, deterministically."""
    options = options.replace(seed=experiment.train.seed, deterministic=True)
    batch_size = experiment.data.batch_size

    def make_dataset(epoch, repeat):
        dataset = view(
            train_dir,
            options.replace(epoch=epoch, repeat=repeat),
            batch_size=batch_size,
            targets_dir=targets_dir,
        )
        return shard_policy(dataset, len(manifest["shards"]), strategy, experiment.data.auto_shard)

    return make_dataset


def teacher_inputs(train_dir, dev_dir, manifest, experiment: ExperimentConfig, strategy) -> Inputs:
    """Padded batches of whole utterances, bucketed by length (the teacher's)."""
    data = experiment.data
    options = DatasetOptions(
        cmvn=data.cmvn, cmvn_stats=train_dir, bucket_boundaries=TEACHER_BUCKETS
    )
    make_dataset = _epochs(utterance_dataset, train_dir, manifest, experiment, strategy, options)
    steps = int(make_dataset(0, False).cardinality())  # >= 1: the last batch is kept
    _first_batch(make_dataset, train_dir)
    dev = utterance_dataset(dev_dir, options.replace(shuffle=False), batch_size=data.batch_size)
    return Inputs(make_dataset, steps, dev)


def window_inputs(
    train_dir, dev_dir, manifest, experiment: ExperimentConfig, strategy, targets_dir=None
) -> Inputs:
    """Batches of context windows, or of chunks for a VGG student with ``data.chunk_frames``
    L > 0 (the same frames, labels and targets, computed densely), joined with the stored
    targets of ``targets_dir`` when given."""
    data = experiment.data
    if data.chunk_frames < 0:
        raise DataError(f"data.chunk_frames must be >= 0 (0: windows), got {data.chunk_frames}")
    dense = experiment.model.type == "vgg" and data.chunk_frames > 0
    if dense and data.batch_size % data.chunk_frames:
        raise DataError(
            f"data.batch_size {data.batch_size} (frames) must be a multiple of "
            f"data.chunk_frames {data.chunk_frames}"
        )
    options = DatasetOptions(
        context=data.context,
        cmvn=data.cmvn,
        cmvn_stats=train_dir,
        shuffle_buffer=data.shuffle_buffer,
        **({"chunk_frames": data.chunk_frames} if dense else {}),
    )
    view = chunk_dataset if dense else frame_dataset
    per_chunk = data.chunk_frames if dense else 1
    dev_batch = per_chunk * max(1, DEV_BATCH_FRAMES // per_chunk)
    make_dataset = _epochs(
        view, train_dir, manifest, experiment, strategy, options, targets_dir=targets_dir
    )
    steps = int(make_dataset(0, False).cardinality())
    make_dataset, steps = guards.epoch_steps(
        make_dataset,
        steps,
        lambda: _epochs(
            view, train_dir, manifest, experiment, strategy,
            options.replace(drop_remainder=False), targets_dir=targets_dir,
        ),
        train_dir=train_dir,
        manifest=manifest,
        batch_size=data.batch_size,
        replicas=strategy.num_replicas_in_sync,
        chunk_frames=data.chunk_frames if dense else 0,
    )  # fmt: skip
    _first_batch(make_dataset, train_dir)
    dev_options = options.replace(shuffle=False, drop_remainder=False)
    dev = view(dev_dir, dev_options, batch_size=dev_batch)
    dev = shard_policy(dev, 1, strategy, "data")  # every worker scores its part of each batch
    return Inputs(make_dataset, steps, dev, data.chunk_frames if dense else 0)
