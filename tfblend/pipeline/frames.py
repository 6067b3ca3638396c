"""Frame-level and utterance-level views: spliced windows, padded utterances, eval utterances."""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from tfblend.errors import DataError
from tfblend.pipeline.options import DatasetOptions
from tfblend.pipeline.shuffling import epochs
from tfblend.pipeline.source import (
    _AUTOTUNE,
    _finish,
    _normaliser,
    _num_batches,
    _open,
    _prepare,
    _row_epochs,
    _utterance_lengths,
    splice,
)

DEFAULT_OPTIONS = DatasetOptions()


def frame_dataset(
    data_dir,
    options: DatasetOptions = DEFAULT_OPTIONS,
    *,
    batch_size: int = 256,
    targets_dir=None,
) -> tf.data.Dataset:
    """Batches of spliced context windows with frame labels (and joined soft targets).

    Args:
      data_dir: utterance set directory.
      options: a :class:`DatasetOptions`: context W, shuffling (frames in blocks of
        ``shuffle_buffer``), seeds and epochs, CMVN, ``drop_remainder``, ``label_key``.
      batch_size: frames per batch (``configs/dnn.yaml``: 256).
      targets_dir: optional target set to join (package docstring).

    Returns:
      dataset of ``(windows float32 [B, 2W+1, D], labels int32 [B])``, or with ``targets_dir``
      ``(windows, labels, soft)`` where soft is ``{"ids": int32 [B, k], "probs": float32 [B, k]}``
      plus ``"mass": float32 [B]`` when the targets have mass. Cardinality (when not repeating)
      is ``num_frames // batch_size`` (rounded up without drop_remainder).
    """
    source, key, normalise = _prepare(data_dir, targets_dir, options)
    joined = targets_dir is not None
    context = options.context

    def to_frames(utterance):
        windows = splice(normalise(utterance["features"], utterance["speaker"]), context)
        if joined:
            return windows, utterance[key], utterance["soft"]
        return windows, utterance[key]

    dataset = _row_epochs(
        source, to_frames, options, block=options.shuffle_buffer, batch_size=batch_size
    )
    total = source.manifest["num_frames"]
    batches = _num_batches(total, batch_size, options.drop_remainder)
    return _finish(dataset, batches, options.repeat)


def utterance_dataset(
    data_dir,
    options: DatasetOptions = DEFAULT_OPTIONS,
    *,
    batch_size: int = 8,
    targets_dir=None,
) -> tf.data.Dataset:
    """Padded batches of whole utterances (optionally bucketed by length).

    Args:
      data_dir: utterance set directory.
      options: a :class:`DatasetOptions`: shuffling (shard order, and utterances in blocks of
        256), seeds and epochs, CMVN, ``label_key``, ``bucket_boundaries``; ``context``,
        ``chunk_frames``, ``shuffle_buffer`` and ``drop_remainder`` do not apply.
      batch_size: utterances per batch, every bucket (``configs/teacher.yaml``: 8).
      targets_dir: optional target set to join.

    Returns:
      dataset of ``(inputs, labels, weights)``: inputs
      ``{"features": float32 [B, T, D], "mask": bool [B, T]}``, labels ``int32 [B, T]``,
      weights ``float32 [B, T]``, T the longest utterance of the batch; padding has mask False,
      label 0 and weight 0. With ``targets_dir`` a fourth element ``soft``:
      ``{"ids": int32 [B, T, k], "probs": float32 [B, T, k]}`` (+ ``"mass": float32 [B, T]``),
      padded with 0.
      The last batch of a bucket may be smaller. Cardinality is known when not repeating.
    """
    source, key, normalise = _prepare(data_dir, targets_dir, options)
    joined = targets_dir is not None
    shuffle, deterministic = options.shuffle, options.deterministic
    boundaries = options.bucket_boundaries

    def to_example(utterance):
        features = normalise(utterance["features"], utterance["speaker"])
        num_frames = tf.shape(features)[0]
        inputs = {"features": features, "mask": tf.ones([num_frames], tf.bool)}
        weights = tf.ones([num_frames], tf.float32)
        if joined:
            return inputs, utterance[key], weights, utterance["soft"]
        return inputs, utterance[key], weights

    def build_epoch(index):
        epoch_seed = options.seed + index
        examples = source.read(epoch_seed, shuffle, deterministic).map(
            to_example, num_parallel_calls=_AUTOTUNE, deterministic=deterministic or not shuffle
        )
        if boundaries is None:
            return examples.padded_batch(batch_size)
        return examples.bucket_by_sequence_length(
            lambda inputs, *rest: tf.shape(inputs["features"])[0],
            bucket_boundaries=list(boundaries),
            bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
        )

    num_utterances = source.manifest["num_utterances"]
    if boundaries is None:
        batches = math.ceil(num_utterances / batch_size)
    else:
        buckets = np.searchsorted(boundaries, _utterance_lengths(source), side="right")
        batches = int(sum(math.ceil(n / batch_size) for n in np.bincount(buckets) if n))
    return _finish(epochs(build_epoch, options.epoch, options.repeat), batches, options.repeat)


def eval_utterances(
    data_dir, *, targets_dir=None, cmvn: str = "global", cmvn_stats=None, shards=None
) -> tf.data.Dataset:
    """Single utterances in canonical order, unshuffled and unbatched, ids kept.

    Args:
      data_dir, targets_dir: as ``frame_dataset``.
      cmvn, cmvn_stats: as :class:`DatasetOptions`.
      shards: None (every shard), or the indices of the shards to read, in that order (e.g.
        ``[i]`` for a worker that dumps the targets of shard i).

    Returns:
      dataset of dicts: ``utt_id`` string [], ``speaker`` string [], ``num_frames`` int64 [],
      ``features`` float32 [T, D] (normalised), ``labels`` int32 [T] / ``phones`` int32 [T] when
      the set has them, and ``soft`` (``ids`` int32 [T, k], ``probs`` float32 [T, k], ``mass``
      float32 [T]) with ``targets_dir``. Cardinality: the utterances of the shards read.
    """
    source = _open(data_dir, targets_dir)
    normalise = _normaliser(source, cmvn, cmvn_stats)

    def normalised(utterance):
        utterance["features"] = normalise(utterance["features"], utterance["speaker"])
        return utterance

    indices = range(source.num_shards) if shards is None else [int(i) for i in shards]
    bad = [i for i in indices if not 0 <= i < source.num_shards]
    if bad:
        raise DataError(f"{source.data_dir}: shard indices {bad} outside [0, {source.num_shards})")
    dataset = source.read(0, shuffle=False, deterministic=True, shards=indices).map(
        normalised, num_parallel_calls=_AUTOTUNE, deterministic=True
    )
    count = sum(source.manifest["shards"][i]["num_utterances"] for i in indices)
    return _finish(dataset, count, repeat=False)
