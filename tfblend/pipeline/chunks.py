"""The chunk view: utterances cut into chunks of L output frames plus 2W frames of context, for
students that compute densely over time (``model(x [B, L+2W, D]) -> logits [B, L, K]``).

A chunk holds the same numbers as L consecutive spliced windows: chunk ``c`` of an utterance of T
frames is frames ``cL - W ... cL + L + W - 1`` of the utterance edge-padded exactly as
:func:`tfblend.pipeline.splice` pads (first and last frame repeated), so
``chunk[j : j + 2W + 1] == splice(features, W)[cL + j]`` for every real output frame ``j``.
An utterance gives ``ceil(T / L)`` chunks; the last one's output frames past T are padding.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfblend.errors import DataError
from tfblend.pipeline.options import DatasetOptions
from tfblend.pipeline.source import (
    _finish,
    _num_batches,
    _prepare,
    _row_epochs,
    _utterance_lengths,
)

DEFAULT_OPTIONS = DatasetOptions()

#: The label of a padded output frame. ``labels >= 0`` is the frame mask of a chunk batch.
PAD_LABEL = -1


def num_chunks(lengths, chunk_frames: int) -> int:
    """Chunks of ``chunk_frames`` output frames in utterances of ``lengths`` frames:
    ``sum(ceil(T / L))``."""
    lengths = np.asarray(lengths, np.int64)
    return int(np.sum(-(-lengths // chunk_frames)))


def edge_pad(features, context: int) -> tf.Tensor:
    """An utterance padded by ``context`` frames on each side, edge frames repeated (as
    :func:`tfblend.pipeline.splice` pads): float32 ``[T, D]`` -> ``[T + 2W, D]``; a dense
    student maps it to the T frames' logits in one pass."""
    features = tf.convert_to_tensor(features)
    num_frames = tf.shape(features)[0]
    index = tf.clip_by_value(tf.range(-context, num_frames + context), 0, num_frames - 1)
    return tf.gather(features, index)


def _pad_rows(values, rows, value):
    """``values`` ``[T, ...]`` padded with ``value`` to ``rows`` rows along axis 0."""
    extra = rows - tf.shape(values)[0]
    paddings = [[0, extra]] + [[0, 0]] * (values.shape.rank - 1)
    return tf.pad(values, paddings, constant_values=tf.cast(value, values.dtype))


def to_chunks(features, labels, soft, *, context: int, chunk_frames: int):
    """One utterance as chunks.

    Args:
      features: float32 ``[T, D]`` (normalised).
      labels: int32 ``[T]``.
      soft: None, or the joined targets ``{"ids": [T, k], "probs": [T, k], "mass": [T]}``.
      context: W.
      chunk_frames: L.

    Returns:
      ``(chunks float32 [n, L+2W, D], labels int32 [n, L])`` plus the targets reshaped to
      ``[n, L, k]`` / ``[n, L]`` when ``soft`` is given, ``n = ceil(T / L)``. Output frames past
      T have label ``PAD_LABEL`` and targets 0 (ids, probs and mass).
    """
    size = chunk_frames
    features, labels = tf.convert_to_tensor(features), tf.convert_to_tensor(labels)
    num_frames = tf.shape(features)[0]
    count = (num_frames + size - 1) // size
    starts = tf.range(count) * size - context
    index = tf.clip_by_value(
        starts[:, None] + tf.range(size + 2 * context)[None, :], 0, num_frames - 1
    )
    rows = count * size
    out = (
        tf.gather(features, index),
        tf.reshape(_pad_rows(labels, rows, PAD_LABEL), [-1, size]),
    )
    if soft is None:
        return out
    shaped = {
        name: tf.reshape(_pad_rows(value, rows, 0), [-1, size, *value.shape[1:]])
        for name, value in ((n, tf.convert_to_tensor(v)) for n, v in soft.items())
    }
    return (*out, shaped)


def _check_chunking(data_dir, chunk_frames: int, batch_size: int) -> None:
    """DataError unless the batch is a whole number of chunks."""
    if batch_size < chunk_frames or batch_size % chunk_frames:
        raise DataError(
            f"{data_dir}: batch_size {batch_size} (frames) must be a positive multiple of "
            f"chunk_frames {chunk_frames}"
        )


def chunk_dataset(
    data_dir,
    options: DatasetOptions = DEFAULT_OPTIONS,
    *,
    batch_size: int = 512,
    targets_dir=None,
) -> tf.data.Dataset:
    """Batches of utterance chunks with per-frame labels (and joined soft targets).

    The same set, the same target join and checks, the same CMVN and the same (seed, epoch)
    shuffling as :func:`tfblend.pipeline.frame_dataset` (package docstring), with chunks in
    place of frames: shard order and utterances are shuffled as there, and chunks are permuted
    in blocks of ``shuffle_buffer // chunk_frames`` chunks (about ``shuffle_buffer`` output
    frames, memory about ``shuffle_buffer * (L+2W) / L * D * 4`` bytes). A chunk keeps its L
    frames together; across chunks the order is shuffled.

    Args:
      data_dir: utterance set directory.
      options: a :class:`DatasetOptions`: context W, ``chunk_frames`` L, shuffling, seeds and
        epochs, CMVN, ``drop_remainder``, ``label_key``.
      batch_size: output frames per batch, a multiple of L (``configs/student.yaml``: 512): a
        batch holds ``batch_size // L`` chunks (so the same ``batch_size`` gives batches of as
        many frames as ``frame_dataset``'s).
      targets_dir: optional target set to join.

    Returns:
      dataset of ``(chunks float32 [B, L+2W, D], labels int32 [B, L])``, or with
      ``targets_dir`` ``(chunks, labels, soft)``, soft
      ``{"ids": int32 [B, L, k], "probs": float32 [B, L, k]}`` plus ``"mass": float32 [B, L]``
      when the targets have mass;
      ``B = batch_size // L``. **The frame mask is ``labels >= 0``**: output frames past the end
      of an utterance (in its last chunk) have label -1 and targets 0, and every real frame is
      an output frame of exactly one chunk per epoch (with ``drop_remainder=False``).
      Cardinality (when not repeating): ``sum_u ceil(T_u / L) // B`` chunk batches (rounded up
      without drop_remainder), from the shards' frame counts.
    """
    context, chunk_frames = options.context, options.chunk_frames
    _check_chunking(data_dir, chunk_frames, batch_size)
    source, key, normalise = _prepare(data_dir, targets_dir, options)

    def to_rows(utterance):
        return to_chunks(
            normalise(utterance["features"], utterance["speaker"]),
            utterance[key],
            utterance.get("soft"),
            context=context,
            chunk_frames=chunk_frames,
        )

    chunks_per_batch = batch_size // chunk_frames
    block = max(1, options.shuffle_buffer // chunk_frames)
    dataset = _row_epochs(source, to_rows, options, block=block, batch_size=chunks_per_batch)
    total = num_chunks(_utterance_lengths(source), chunk_frames)
    batches = _num_batches(total, chunks_per_batch, options.drop_remainder)
    return _finish(dataset, batches, options.repeat)
