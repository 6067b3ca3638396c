"""tf.data input pipelines over utterance sets: CMVN, the checked join with targets, windows.

Three views of a set written by ``tfblend.records.write_utterance_shards``:

- ``frame_dataset``: shuffled batches of spliced context windows (the CNN/DNN student's input);
- ``utterance_dataset``: padded (optionally length-bucketed) batches of whole utterances (the LSTM
  teacher's input);
- ``eval_utterances``: single utterances in canonical order, ids kept (evaluation, target dumps).

**CMVN** (``cmvn`` argument): "global" (mean/variance normalisation with one set of statistics),
"speaker" (statistics of the utterance's speaker), "utterance" (the utterance's own statistics,
computed in the map) or "none". The statistics come from ``cmvn_stats``: None (the manifest of
``data_dir``), a dataset directory (its manifest, e.g. the training set's when reading dev/test),
a ``CmvnStats`` (global only) or a manifest's ``cmvn`` dict ``{"global": ..., "speakers": ...}``.

**Epochs and seeds.** One call builds one epoch (``repeat=False``; every iteration of the returned
dataset yields the same order), or all epochs from ``epoch`` on (``repeat=True``; infinite, epochs
never share a batch, so pass ``steps_per_epoch = num_frames // batch_size`` to Keras). Epoch ``e``
shuffles shards and frames with seed ``seed + e`` and is recomputable: with ``deterministic=True``
the same (seed, epoch) gives the same order on every run; to resume training at epoch ``e`` pass
``epoch=e``. ``shuffle=False`` reads the set in canonical order (shards in order, frames in order).

**Opening a set** verifies its shards' sha256 (``records.verify_shards``, cached by size and
mtime) and, while reading, fails a tf assertion naming the utterance and its shard file on
NaN/Inf features or on target ids/probabilities out of range.

**The join with targets** (``targets_dir``): before building, the target manifest must record
the utterance set's ``records.feature_values_digest`` as its ``features_digest`` and agree on the
number of utterances, shards (and per-shard counts where recorded) and classes (DataError naming
both directories); while reading, shard i of the utterances is zipped with shard i of the
targets and each pair must agree on ``utt_id`` and ``num_frames`` (a tf assertion naming the
utterance and both directories fails the iteration otherwise).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from collections.abc import Callable, Mapping

import numpy as np
import tensorflow as tf

from tfblend.errors import DataError
from tfblend.features import CmvnStats
from tfblend.records import (
    TARGET_FORMAT,
    check_shard_files,
    check_target_layout,
    feature_values_digest,
    read_manifest,
    target_parser,
    utterance_parser,
    verify_shards,
)

CMVN_MODES = ("global", "speaker", "utterance", "none")
_AUTOTUNE = tf.data.AUTOTUNE
_MAX_PARALLEL_SHARDS = 8
_UTTERANCE_SHUFFLE_BUFFER = 256  # utterances permuted together per epoch
_STD_FLOOR = 1e-3


@dataclasses.dataclass
class _Source:
    """An opened utterance set, optionally joined with a target set."""

    data_dir: str
    manifest: dict
    paths: list[str]
    parse: Callable
    targets_dir: str | None = None
    target_manifest: dict | None = None
    target_paths: list[str] | None = None
    parse_targets: Callable | None = None

    @property
    def num_shards(self) -> int:
        return len(self.paths)

    def records(self, shard_index) -> tf.data.Dataset:
        """``(path, record)`` of a shard; joined: ``(path, record, target record, target path)``."""
        utterance_path = tf.gather(self.paths, shard_index)
        utterances = tf.data.TFRecordDataset(utterance_path)
        if self.targets_dir is None:
            return utterances.map(lambda record: (utterance_path, record))
        target_path = tf.gather(self.target_paths, shard_index)
        # An empty record ends each side, so that a shard with fewer records than its partner
        # fails the check below instead of being silently cut short by zip.
        end = tf.data.Dataset.from_tensors(tf.constant(b""))
        pairs = tf.data.Dataset.zip(
            (utterances.concatenate(end), tf.data.TFRecordDataset(target_path).concatenate(end))
        )

        def same_length(utterance, target):
            ended = tf.equal(utterance, b"")
            check = tf.debugging.Assert(
                tf.equal(ended, tf.equal(target, b"")),
                [
                    tf.strings.join(
                        [
                            "target join mismatch: ",
                            utterance_path,
                            " and ",
                            target_path,
                            " hold different numbers of records",
                        ]
                    )
                ],
            )
            with tf.control_dependencies([check]):
                return tf.logical_not(ended)

        return pairs.filter(same_length).map(lambda u, t: (utterance_path, u, t, target_path))

    def parse_record(
        self, shard, utterance_record, target_record=None, target_shard=None
    ) -> dict[str, tf.Tensor]:
        """Parsed utterance dict (records.utterance_parser), plus ``soft`` when joined.

        Fails a tf assertion naming the utterance and its shard file on NaN/Inf features, and on
        target ids outside ``[0, num_classes)`` or target probabilities/mass not finite in [0, 1].
        """
        utterance = self.parse(utterance_record)
        # The message parts are passed as they are (no string op runs for a record that passes).
        finite = tf.debugging.Assert(
            tf.reduce_all(tf.math.is_finite(utterance["features"])),
            ["non-finite (NaN/Inf) features in utterance", utterance["utt_id"], "of", shard],
        )
        with tf.control_dependencies([finite]):
            utterance["features"] = tf.identity(utterance["features"])
        if target_record is None:
            return utterance
        target = self.parse_targets(target_record)
        agree = tf.logical_and(
            tf.equal(utterance["utt_id"], target["utt_id"]),
            tf.equal(utterance["num_frames"], target["num_frames"]),
        )
        message = tf.strings.join(
            [
                "target join mismatch: utterance ",
                utterance["utt_id"],
                " (",
                tf.strings.as_string(utterance["num_frames"]),
                " frames) in ",
                self.data_dir,
                " is paired with target record ",
                target["utt_id"],
                " (",
                tf.strings.as_string(target["num_frames"]),
                " frames) in ",
                self.targets_dir,
            ]
        )
        ids, probs = target["ids"], target["probs"]
        classes = self.manifest["num_classes"]
        valid = tf.reduce_all(tf.math.is_finite(probs)) & tf.reduce_all((probs >= 0) & (probs <= 1))
        if "mass" in target:
            valid &= tf.reduce_all(tf.math.is_finite(target["mass"]))
        targets_where = ["in utterance", target["utt_id"], "of", target_shard]
        checks = [
            tf.debugging.Assert(agree, [message]),
            tf.debugging.Assert(
                tf.reduce_all((ids >= 0) & (ids < classes)),
                [f"target ids outside range(0, {classes})", *targets_where],
            ),
            tf.debugging.Assert(
                valid, ["target probs/mass not finite within 0..1", *targets_where]
            ),
        ]
        with tf.control_dependencies(checks):
            utterance["soft"] = {
                name: tf.identity(value)
                for name, value in target.items()
                if name in ("ids", "probs", "mass")
            }
        return utterance

    def read(self, seed, shuffle: bool, deterministic: bool, shards=None) -> tf.data.Dataset:
        """Parsed utterances of one epoch, shards interleaved (in order when not shuffling).

        ``shards``: indices of the shards to read (default all), in reading order.
        """
        indices = tf.constant(list(range(self.num_shards) if shards is None else shards), tf.int64)
        if shuffle:
            order = stateless_permutation(tf.size(indices), _seed_pair(seed, -1))
            shards = tf.data.Dataset.from_tensor_slices(tf.gather(indices, order))
            records = shards.interleave(
                self.records,
                cycle_length=min(self.num_shards, _MAX_PARALLEL_SHARDS),
                block_length=1,
                num_parallel_calls=_AUTOTUNE,
                deterministic=deterministic,
            )
            # Utterances are mixed across the interleaved shards before parsing (records are
            # scalars, so a block of them batches whatever the utterance lengths).
            records = shuffle_blocks(records, _UTTERANCE_SHUFFLE_BUFFER, seed)
        else:
            shards = tf.data.Dataset.from_tensor_slices(indices)
            records, deterministic = shards.flat_map(self.records), True
        return records.map(
            self.parse_record, num_parallel_calls=_AUTOTUNE, deterministic=deterministic
        )


def _open(data_dir, targets_dir) -> _Source:
    """Opens a set (and its targets): manifests read, shard checksums verified, join checked."""
    data_dir = os.fspath(data_dir)
    manifest = read_manifest(data_dir)
    verify_shards(data_dir, manifest)
    paths = check_shard_files(data_dir, manifest)
    parse = utterance_parser(
        manifest["feature_dim"], manifest["has_labels"], manifest["has_phones"]
    )
    source = _Source(data_dir, manifest, paths, parse)
    if targets_dir is None:
        return source
    targets_dir = os.fspath(targets_dir)
    target_manifest = read_manifest(targets_dir, expected_format=TARGET_FORMAT)
    both = f"utterances {data_dir} and targets {targets_dir}"
    made_from, values = target_manifest["features_digest"], feature_values_digest(manifest)
    if made_from != values:
        ids_digest = target_manifest.get("features_ids_digest")
        if made_from == manifest["content_digest"]:
            why = "dumped by an older tfblend (features_digest ignores the values): dump again"
        elif ids_digest == manifest["content_digest"]:
            why = (
                "made from other feature values with the same utterance ids and frame counts "
                "(another front end, deltas or CMVN?)"
            )
        else:
            why = "made from another feature set (other utterance ids, order or frame counts)"
        raise DataError(f"{both}: the targets were {why}")
    for key in ("num_utterances", "num_classes"):
        if target_manifest[key] != manifest[key]:
            raise DataError(f"{both}: {key} {manifest[key]} != {target_manifest[key]}")
    if len(target_manifest["shards"]) != len(manifest["shards"]):
        raise DataError(
            f"{both}: {len(manifest['shards'])} utterance shards but "
            f"{len(target_manifest['shards'])} target shards"
        )
    for i, (ushard, tshard) in enumerate(
        zip(manifest["shards"], target_manifest["shards"], strict=True)
    ):
        for key in ("num_utterances", "num_frames"):
            if key in tshard and tshard[key] != ushard[key]:
                raise DataError(f"{both}: shard {i} has {key} {ushard[key]} vs {tshard[key]}")
    source.targets_dir = targets_dir
    source.target_manifest = target_manifest
    verify_shards(targets_dir, target_manifest)
    source.target_paths = check_shard_files(targets_dir, target_manifest)
    check_target_layout(source.target_paths[0], target_manifest)
    source.parse_targets = target_parser(target_manifest)
    return source


def _stats_source(manifest: dict, cmvn_stats) -> dict | CmvnStats:
    if cmvn_stats is None:
        return manifest["cmvn"]
    if isinstance(cmvn_stats, CmvnStats | Mapping):
        return cmvn_stats
    return read_manifest(os.fspath(cmvn_stats))["cmvn"]


def _normaliser(source: _Source, cmvn: str, cmvn_stats) -> Callable:
    """fn(features float32 [T, D], speaker string []) -> float32 [T, D]."""
    if cmvn not in CMVN_MODES:
        raise DataError(f"{source.data_dir}: cmvn {cmvn!r} not in {CMVN_MODES}")
    if cmvn == "none":
        return lambda features, speaker: features
    if cmvn == "utterance":

        def per_utterance(features, speaker):
            mean, variance = tf.nn.moments(features, axes=[0], keepdims=True)
            return (features - mean) / tf.maximum(tf.sqrt(variance), _STD_FLOOR)

        return per_utterance
    stats = _stats_source(source.manifest, cmvn_stats)
    dim = source.manifest["feature_dim"]
    if cmvn == "global":
        if not isinstance(stats, CmvnStats):
            stats = CmvnStats.from_dict(stats["global"])
        if stats.dim != dim:
            raise DataError(f"{source.data_dir}: CMVN stats have dim {stats.dim}, features {dim}")
        mean = tf.constant(stats.mean(), tf.float32)
        scale = tf.constant(1.0 / stats.std(_STD_FLOOR), tf.float32)
        return lambda features, speaker: (features - mean) * scale
    if isinstance(stats, CmvnStats):
        raise DataError(
            f"{source.data_dir}: cmvn='speaker' needs per-speaker statistics, " "got one CmvnStats"
        )
    table = stats["speakers"]
    missing = sorted(set(source.manifest["speakers"]) - set(table))
    if missing:
        raise DataError(
            f"{source.data_dir}: no CMVN statistics for speakers {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}"
        )
    names = sorted(table)
    per_speaker = [CmvnStats.from_dict(table[name]) for name in names]
    means = tf.constant(np.stack([s.mean() for s in per_speaker]), tf.float32)
    scales = tf.constant(np.stack([1.0 / s.std(_STD_FLOOR) for s in per_speaker]), tf.float32)
    lookup = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(names, tf.range(len(names), dtype=tf.int64)), -1
    )

    def per_speaker_fn(features, speaker):
        row = lookup.lookup(speaker)
        check = tf.debugging.Assert(row >= 0, ["no CMVN statistics for speaker", speaker])
        with tf.control_dependencies([check]):
            return (features - tf.gather(means, row)) * tf.gather(scales, row)

    return per_speaker_fn


def _label_key(source: _Source, label_key: str) -> str:
    flags = {"labels": "has_labels", "phones": "has_phones"}
    if label_key not in flags:
        raise DataError(f"{source.data_dir}: label_key {label_key!r} not in {list(flags)}")
    if not source.manifest[flags[label_key]]:
        raise DataError(f"{source.data_dir}: the set has no {label_key}")
    return label_key


def splice(features: tf.Tensor, context: int) -> tf.Tensor:
    """Context windows of every frame, edge frames repeated.

    Args:
      features: float32 ``[T, D]``.
      context: frames on each side.

    Returns:
      float32 ``[T, 2*context + 1, D]``; ``out[t, j] = features[clip(t + j - context, 0, T-1)]``
      so ``out[t, context] == features[t]``.
    """
    num_frames = tf.shape(features)[0]
    offsets = tf.range(-context, context + 1)
    index = tf.clip_by_value(tf.range(num_frames)[:, None] + offsets[None, :], 0, num_frames - 1)
    return tf.gather(features, index)


def _seed_pair(seed, stream) -> tf.Tensor:
    """int64 [2] seed of a stateless random op from an epoch seed (int or tensor) and a stream."""
    return tf.stack([tf.cast(seed, tf.int64), tf.cast(stream, tf.int64)])


def stateless_permutation(size, seed) -> tf.Tensor:
    """A random permutation of ``range(size)``, a pure function of ``seed`` (int64 [2])."""
    return tf.argsort(tf.random.stateless_uniform([size], seed=seed))


def shuffle_blocks(dataset: tf.data.Dataset, block: int, seed) -> tf.data.Dataset:
    """Shuffles ``dataset`` by permuting each run of ``block`` consecutive elements.

    The permutations are stateless (a function of ``seed`` and the block's index), so the order
    is recomputable from the seed alone, also when ``seed`` is a tensor (an epoch number inside
    ``flat_map``): ``Dataset.shuffle`` cannot take a tensor seed once ``tf.random.set_seed(0)``
    was called (TensorFlow compares the seed pair to (0, 0) in Python). Memory is one block.
    """

    def permute(index, elements):
        size = tf.shape(tf.nest.flatten(elements)[0])[0]
        order = stateless_permutation(size, _seed_pair(seed, index))
        return tf.nest.map_structure(lambda value: tf.gather(value, order), elements)

    return dataset.batch(block).enumerate().map(permute).unbatch()


def _epochs(build_epoch: Callable, epoch: int, repeat: bool) -> tf.data.Dataset:
    """Epoch ``epoch`` alone, or epochs ``epoch, epoch+1, ...`` forever, each from a seed tensor."""
    if repeat:
        epochs = tf.data.Dataset.counter(start=epoch).flat_map(build_epoch)
        return epochs.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))
    return tf.data.Dataset.range(epoch, epoch + 1).flat_map(build_epoch)


def frame_dataset(
    data_dir,
    *,
    context: int = 10,
    batch_size: int = 256,
    targets_dir=None,
    shuffle: bool = True,
    seed: int = 0,
    cmvn: str = "global",
    cmvn_stats=None,
    shuffle_buffer: int = 65536,
    deterministic: bool = False,
    drop_remainder: bool = True,
    label_key: str = "labels",
    repeat: bool = False,
    epoch: int = 0,
) -> tf.data.Dataset:
    """Batches of spliced context windows with frame labels (and joined soft targets).

    Args:
      data_dir: utterance set directory.
      context: W, frames on each side of the centre frame.
      batch_size: frames per batch.
      targets_dir: optional target set to join (module docstring).
      shuffle: shuffle shard order, utterances and frames (frames in blocks of
        ``shuffle_buffer``, memory about ``shuffle_buffer * (2W+1) * D * 4`` bytes); False gives
        canonical order.
      seed, epoch, repeat, deterministic: module docstring "Epochs and seeds".
      cmvn, cmvn_stats: module docstring "CMVN".
      drop_remainder: drop the last partial batch of each epoch.
      label_key: "labels" (senones) or "phones".

    Returns:
      dataset of ``(windows float32 [B, 2W+1, D], labels int32 [B])``, or with ``targets_dir``
      ``(windows, labels, soft)`` where soft is ``{"ids": int32 [B, k], "probs": float32 [B, k]}``
      plus ``"mass": float32 [B]`` when the targets have mass. Cardinality (when not repeating)
      is ``num_frames // batch_size`` (rounded up without drop_remainder).
    """
    source = _open(data_dir, targets_dir)
    key = _label_key(source, label_key)
    normalise = _normaliser(source, cmvn, cmvn_stats)
    joined = targets_dir is not None

    def to_frames(utterance):
        windows = splice(normalise(utterance["features"], utterance["speaker"]), context)
        if joined:
            return windows, utterance[key], utterance["soft"]
        return windows, utterance[key]

    def build_epoch(index):
        epoch_seed = seed + index
        frames = (
            source.read(epoch_seed, shuffle, deterministic)
            .map(
                to_frames, num_parallel_calls=_AUTOTUNE, deterministic=deterministic or not shuffle
            )
            .unbatch()
        )
        if shuffle:
            frames = shuffle_blocks(frames, shuffle_buffer, epoch_seed)
        return frames.batch(batch_size, drop_remainder=drop_remainder)

    dataset = _epochs(build_epoch, epoch, repeat)
    if not repeat:
        total = source.manifest["num_frames"]
        batches = total // batch_size if drop_remainder else math.ceil(total / batch_size)
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    return dataset.prefetch(_AUTOTUNE)


def _utterance_lengths(source: _Source) -> np.ndarray:
    """int64 [num_utterances] frame counts in canonical order (reads the context only)."""
    spec = {"num_frames": tf.io.FixedLenFeature([], tf.int64)}
    lengths = tf.data.TFRecordDataset(source.paths).map(
        lambda record: tf.io.parse_single_sequence_example(record, context_features=spec)[0][
            "num_frames"
        ],
        num_parallel_calls=_AUTOTUNE,
    )
    return np.concatenate(list(lengths.batch(4096).as_numpy_iterator()))


def utterance_dataset(
    data_dir,
    *,
    batch_size: int = 8,
    targets_dir=None,
    shuffle: bool = True,
    seed: int = 0,
    cmvn: str = "global",
    cmvn_stats=None,
    bucket_boundaries=None,
    deterministic: bool = False,
    label_key: str = "labels",
    repeat: bool = False,
    epoch: int = 0,
) -> tf.data.Dataset:
    """Padded batches of whole utterances (optionally bucketed by length).

    Args:
      data_dir: utterance set directory.
      batch_size: utterances per batch (every bucket).
      targets_dir: optional target set to join.
      shuffle: shuffle shard order and utterances (in blocks of 256 utterances); False gives
        canonical order.
      bucket_boundaries: None (one bucket), or increasing frame counts: an utterance of T frames
        goes to bucket i with ``boundaries[i-1] <= T < boundaries[i]``.
      seed, epoch, repeat, deterministic, cmvn, cmvn_stats, label_key: as ``frame_dataset``.

    Returns:
      dataset of ``({"features": float32 [B, T, D], "mask": bool [B, T]}, labels int32 [B, T],
      weights float32 [B, T])``, T the longest utterance of the batch; padding has mask False,
      label 0 and weight 0. With ``targets_dir`` a fourth element ``soft``: ``{"ids": int32
      [B, T, k], "probs": float32 [B, T, k]}`` (+ ``"mass": float32 [B, T]``), padded with 0.
      The last batch of a bucket may be smaller. Cardinality is known when not repeating.
    """
    source = _open(data_dir, targets_dir)
    key = _label_key(source, label_key)
    normalise = _normaliser(source, cmvn, cmvn_stats)
    joined = targets_dir is not None

    def to_example(utterance):
        features = normalise(utterance["features"], utterance["speaker"])
        num_frames = tf.shape(features)[0]
        inputs = {"features": features, "mask": tf.ones([num_frames], tf.bool)}
        weights = tf.ones([num_frames], tf.float32)
        if joined:
            return inputs, utterance[key], weights, utterance["soft"]
        return inputs, utterance[key], weights

    def build_epoch(index):
        epoch_seed = seed + index
        examples = source.read(epoch_seed, shuffle, deterministic).map(
            to_example, num_parallel_calls=_AUTOTUNE, deterministic=deterministic or not shuffle
        )
        if bucket_boundaries is None:
            return examples.padded_batch(batch_size)
        return examples.bucket_by_sequence_length(
            lambda inputs, *rest: tf.shape(inputs["features"])[0],
            bucket_boundaries=list(bucket_boundaries),
            bucket_batch_sizes=[batch_size] * (len(bucket_boundaries) + 1),
        )

    num_utterances = source.manifest["num_utterances"]
    if bucket_boundaries is None:
        batches = math.ceil(num_utterances / batch_size)
    else:
        boundaries = list(bucket_boundaries)
        if any(b <= a for a, b in itertools.pairwise(boundaries)) or (
            boundaries and boundaries[0] <= 0
        ):
            raise DataError(
                f"{source.data_dir}: bucket_boundaries must be positive and "
                f"increasing, got {boundaries}"
            )
        buckets = np.searchsorted(boundaries, _utterance_lengths(source), side="right")
        batches = int(sum(math.ceil(n / batch_size) for n in np.bincount(buckets) if n))
    dataset = _epochs(build_epoch, epoch, repeat)
    if not repeat:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    return dataset.prefetch(_AUTOTUNE)


def eval_utterances(
    data_dir, *, targets_dir=None, cmvn: str = "global", cmvn_stats=None, shards=None
) -> tf.data.Dataset:
    """Single utterances in canonical order, unshuffled and unbatched, ids kept.

    Args:
      data_dir, targets_dir, cmvn, cmvn_stats: as ``frame_dataset``.
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
    dataset = dataset.apply(tf.data.experimental.assert_cardinality(count))
    return dataset.prefetch(_AUTOTUNE)
