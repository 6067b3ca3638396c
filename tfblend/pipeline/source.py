"""The shared machinery of the pipelines: an opened (and joined) utterance set, CMVN, label
keys, splicing, and the row-epoch/cardinality plumbing (shuffling itself is in
:mod:`tfblend.pipeline.shuffling`).

Every view in :mod:`tfblend.pipeline` (frames, chunks, utterances) reads its set through
``_Source`` (shards, the checked target join) and builds its epochs with ``_row_epochs`` and
``_finish``; the package docstring describes the behaviour they share.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping

import numpy as np
import tensorflow as tf

from tfblend.errors import DataError
from tfblend.features import CmvnStats
from tfblend.pipeline.options import CMVN_MODES, DatasetOptions
from tfblend.pipeline.shuffling import epochs, seed_pair, shuffle_blocks, stateless_permutation
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
            order = stateless_permutation(tf.size(indices), seed_pair(seed, -1))
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


def _prepare(data_dir, targets_dir, options: DatasetOptions):
    """(source, label key, normaliser) of a view: the set opened and joined, all checks done."""
    if not isinstance(options, DatasetOptions):
        raise TypeError(f"options must be a DatasetOptions, got {type(options).__name__}")
    source = _open(data_dir, targets_dir)
    normalise = _normaliser(source, options.cmvn, options.cmvn_stats)
    return source, _label_key(source, options.label_key), normalise


def _row_epochs(
    source: _Source, to_rows: Callable, options: DatasetOptions, *, block: int, batch_size: int
) -> tf.data.Dataset:
    """Batches of rows: each utterance mapped by ``to_rows`` to a structure whose tensors share
    a leading row axis (frames, chunks), unbatched, shuffled in blocks of ``block`` rows with
    the epoch's seed when ``options.shuffle``, and batched ``batch_size`` rows at a time."""
    shuffle, deterministic = options.shuffle, options.deterministic
    drop_remainder = options.drop_remainder

    def build_epoch(index):
        epoch_seed = options.seed + index
        rows = (
            source.read(epoch_seed, shuffle, deterministic)
            .map(to_rows, num_parallel_calls=_AUTOTUNE, deterministic=deterministic or not shuffle)
            .unbatch()
        )
        if shuffle:
            rows = shuffle_blocks(rows, block, epoch_seed)
        return rows.batch(batch_size, drop_remainder=drop_remainder)

    return epochs(build_epoch, options.epoch, options.repeat)


def _finish(dataset: tf.data.Dataset, batches: int, repeat: bool) -> tf.data.Dataset:
    """The dataset with its known cardinality (``batches`` per epoch, when not repeating)."""
    if not repeat:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(batches))
    return dataset.prefetch(_AUTOTUNE)


def _num_batches(rows: int, batch_size: int, drop_remainder: bool) -> int:
    return rows // batch_size if drop_remainder else math.ceil(rows / batch_size)
