"""The utterance format: SequenceExample shards of features, labels and phones.

Utterance sets (``format: "tfblend.utterances"``): shards ``utts-{i:05d}-of-{n:05d}.tfrecord``, one
``tf.train.SequenceExample`` per utterance with context ``utt_id`` (bytes), ``speaker`` (bytes),
``num_frames`` (int64) and feature lists ``features`` (D floats per frame), optional ``labels`` and
``phones`` (one int64 per frame). Utterance ``j`` of the input stream goes to shard
``j % num_shards``; the canonical order of a set is shard 0 in file order, then shard 1, ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import tensorflow as tf

from tfblend.errors import DataError
from tfblend.features import CmvnStats
from tfblend.records.manifests import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    UTTERANCE_FORMAT,
    check_shard_files,
    content_digest,
    file_sha256,
    read_manifest,
    utterance_shard_name,
    write_manifest,
)

_SHARD_PATTERN = re.compile(r"utts-\d{5}-of-\d{5}\.tfrecord")


@dataclasses.dataclass
class Utterance:
    """One utterance of a feature set.

    Attributes:
      utt_id: unique id (no tab or newline).
      speaker: speaker id (keys per-speaker CMVN).
      features: float32 ``[T, D]``.
      labels: int64 ``[T]`` senone ids in ``[0, num_classes)``, or None.
      phones: int64 ``[T]`` base-phone ids in ``[0, num_phones)``, or None.
    """

    utt_id: str
    speaker: str
    features: np.ndarray
    labels: np.ndarray | None = None
    phones: np.ndarray | None = None


def _sequence_example(utt: Utterance, features: np.ndarray) -> bytes:
    example = tf.train.SequenceExample()
    context = example.context.feature
    context["utt_id"].bytes_list.value.append(utt.utt_id.encode())
    context["speaker"].bytes_list.value.append(utt.speaker.encode())
    context["num_frames"].int64_list.value.append(features.shape[0])
    lists = example.feature_lists.feature_list
    rows = lists["features"].feature
    for row in features.tolist():
        rows.add().float_list.value.extend(row)
    for name, values in (("labels", utt.labels), ("phones", utt.phones)):
        if values is not None:
            column = lists[name].feature
            for value in values.tolist():
                column.add().int64_list.value.append(value)
    return example.SerializeToString()


class _UtteranceChecker:
    """Validates a stream of utterances against the first one and the class counts."""

    def __init__(self, num_classes: int, num_phones: int | None):
        self.num_classes = num_classes
        self.num_phones = num_phones
        self.feature_dim = None
        self.has_labels = None
        self.has_phones = None
        self.seen: set[str] = set()

    def _ids(self, utt: Utterance, name: str, values, num_frames: int, bound: int | None):
        array = np.asarray(values)
        if array.shape != (num_frames,) or not np.issubdtype(array.dtype, np.integer):
            raise DataError(
                f"utterance {utt.utt_id!r}: {name} must be integers of shape [{num_frames}], "
                f"got {array.dtype} {array.shape}"
            )
        if bound is None:
            raise DataError(f"utterance {utt.utt_id!r}: has {name} but no class count was given")
        if num_frames and (array.min() < 0 or array.max() >= bound):
            raise DataError(
                f"utterance {utt.utt_id!r}: {name} outside [0, {bound}) "
                f"(min {array.min()}, max {array.max()})"
            )
        return array.astype(np.int64)

    def __call__(self, utt: Utterance) -> tuple[Utterance, np.ndarray]:
        """Returns the utterance with int64 ids, and its float32 features."""
        if not isinstance(utt.utt_id, str) or not utt.utt_id or re.search(r"[\t\n\r]", utt.utt_id):
            raise DataError(
                f"utterance id {utt.utt_id!r}: must be a non-empty str without tabs " "or newlines"
            )
        if not isinstance(utt.speaker, str) or not utt.speaker:
            raise DataError(f"utterance {utt.utt_id!r}: speaker must be a non-empty str")
        if utt.utt_id in self.seen:
            raise DataError(f"utterance {utt.utt_id!r}: duplicate utterance id")
        self.seen.add(utt.utt_id)
        features = np.asarray(utt.features, dtype=np.float32)
        if features.ndim != 2 or features.shape[0] == 0:
            raise DataError(
                f"utterance {utt.utt_id!r}: features must be [T >= 1, D], " f"got {features.shape}"
            )
        if not np.isfinite(features).all():
            bad = int(np.count_nonzero(~np.isfinite(features)))
            raise DataError(f"utterance {utt.utt_id!r}: features contain {bad} NaN/Inf values")
        if self.feature_dim is None:
            self.feature_dim = features.shape[1]
            self.has_labels = utt.labels is not None
            self.has_phones = utt.phones is not None
        if features.shape[1] != self.feature_dim:
            raise DataError(
                f"utterance {utt.utt_id!r}: feature dim {features.shape[1]}, "
                f"earlier utterances have {self.feature_dim}"
            )
        for name, values, expected in (
            ("labels", utt.labels, self.has_labels),
            ("phones", utt.phones, self.has_phones),
        ):
            if (values is not None) != expected:
                raise DataError(
                    f"utterance {utt.utt_id!r}: {name} present in some utterances "
                    "and absent in others"
                )
        num_frames = features.shape[0]
        labels = phones = None
        if utt.labels is not None:
            labels = self._ids(utt, "labels", utt.labels, num_frames, self.num_classes)
        if utt.phones is not None:
            phones = self._ids(utt, "phones", utt.phones, num_frames, self.num_phones)
        return dataclasses.replace(utt, labels=labels, phones=phones), features


@dataclasses.dataclass
class _Written:
    """What a stream of utterances wrote: per shard its ``(utt_id, num_frames)`` pairs, and the
    CMVN statistics of all frames and of every speaker's."""

    shard_pairs: list
    global_stats: CmvnStats
    speaker_stats: dict


def _write_stream(utterances, check, writers) -> _Written | None:
    """Checks every utterance and writes utterance ``j`` to ``writers[j % len(writers)]``; None
    for an empty stream."""
    num_shards = len(writers)
    shard_pairs: list[list[tuple[str, int]]] = [[] for _ in range(num_shards)]
    global_stats = None
    speaker_stats: dict[str, CmvnStats] = {}
    for j, raw in enumerate(utterances):
        utt, features = check(raw)
        writers[j % num_shards].write(_sequence_example(utt, features))
        shard_pairs[j % num_shards].append((utt.utt_id, features.shape[0]))
        if global_stats is None:
            global_stats = CmvnStats(features.shape[1])
        global_stats.update(features)
        speaker_stats.setdefault(utt.speaker, CmvnStats(features.shape[1])).update(features)
    if global_stats is None:
        return None
    return _Written(shard_pairs, global_stats, speaker_stats)


def _manifest(check, written: _Written, shards, num_classes, num_phones, metadata) -> dict:
    """The manifest of a written utterance set (module docstring)."""
    return {
        "format": UTTERANCE_FORMAT,
        "format_version": FORMAT_VERSION,
        "num_utterances": len(check.seen),
        "num_frames": written.global_stats.count,
        "feature_dim": check.feature_dim,
        "num_classes": num_classes,
        "num_phones": num_phones,
        "has_labels": check.has_labels,
        "has_phones": check.has_phones,
        "shards": shards,
        "content_digest": content_digest(p for pairs in written.shard_pairs for p in pairs),
        "cmvn": {
            "global": written.global_stats.to_dict(),
            "speakers": {s: stats.to_dict() for s, stats in sorted(written.speaker_stats.items())},
        },
        "speakers": sorted(written.speaker_stats),
        "metadata": dict(metadata or {}),
    }


def _replace_set(output_dir: str, tmp_paths: list, final_paths: list, renamed: list) -> None:
    """Moves the new shards into place over an earlier set (its manifest first, then the shard
    files it had beyond the new ones); ``renamed`` collects the final paths as they appear."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(output_dir, MANIFEST_NAME))
    for tmp, final in zip(tmp_paths, final_paths, strict=True):
        os.replace(tmp, final)
        renamed.append(final)
    names = {os.path.basename(path) for path in final_paths}
    for stale in os.listdir(output_dir):
        if _SHARD_PATTERN.fullmatch(stale) and stale not in names:
            os.remove(os.path.join(output_dir, stale))


def write_utterance_shards(
    output_dir,
    utterances: Iterable[Utterance],
    *,
    num_shards: int,
    num_classes: int,
    num_phones: int | None = None,
    metadata: dict | None = None,
) -> dict:
    """Stream utterances into ``num_shards`` SequenceExample shards and write the manifest.

    Utterance ``j`` goes to shard ``j % num_shards``. Each shard is written under a temporary name
    in ``output_dir`` and renamed when all are complete; ``manifest.json`` is written last
    (atomically). Shards of an earlier set in ``output_dir`` (``utts-*-of-*.tfrecord``) and its
    manifest are replaced. On any error nothing this call wrote is left behind (an earlier set is
    left intact when the error comes before the renames).

    Args:
      output_dir: directory (created if missing).
      utterances: iterable of ``Utterance``; consumed once, never held in memory.
      num_shards: >= 1.
      num_classes: label classes; labels must lie in ``[0, num_classes)``.
      num_phones: phone classes (required when utterances carry phones).
      metadata: free-form JSON-serialisable dict stored under ``metadata``.

    Returns:
      The manifest dict (module docstring; ``shards`` entries also record ``bytes``).

    Raises:
      DataError naming the utterance for NaN/Inf features, inconsistent dims, ids out of range,
      duplicate ids, or an empty stream.
    """
    if num_shards < 1:
        raise DataError(f"{output_dir}: num_shards must be >= 1, got {num_shards}")
    output_dir = os.fspath(output_dir)
    created_dir = not os.path.isdir(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    names = [utterance_shard_name(i, num_shards) for i in range(num_shards)]
    tmp_paths = [os.path.join(output_dir, f".{name}.tmp-{os.getpid()}") for name in names]
    final_paths = [os.path.join(output_dir, name) for name in names]
    renamed: list[str] = []
    manifest_written = False
    writers = []
    try:
        writers.extend(tf.io.TFRecordWriter(path) for path in tmp_paths)
        check = _UtteranceChecker(num_classes, num_phones)
        written = _write_stream(utterances, check, writers)
        if written is None:
            raise DataError(f"{output_dir}: no utterances to write")
        for writer in writers:
            writer.close()
        shards = [
            {
                "file": name,
                "num_utterances": len(pairs),
                "num_frames": sum(n for _, n in pairs),
                "sha256": file_sha256(tmp),
                "bytes": os.path.getsize(tmp),
            }
            for name, pairs, tmp in zip(names, written.shard_pairs, tmp_paths, strict=True)
        ]
        manifest = _manifest(check, written, shards, num_classes, num_phones, metadata)
        json.dumps(manifest)  # fail on non-serialisable metadata before touching old files
        _replace_set(output_dir, tmp_paths, final_paths, renamed)
        write_manifest(output_dir, manifest)
        manifest_written = True
        return manifest
    finally:
        if not manifest_written:
            for writer in writers:
                writer.close()
            for path in tmp_paths + renamed:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            if created_dir:
                with contextlib.suppress(OSError):
                    os.rmdir(output_dir)


def utterance_parser(
    feature_dim: int, has_labels: bool, has_phones: bool
) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """Parse function for one serialized utterance SequenceExample (graph-compatible).

    Returns:
      fn(serialized string []) -> dict: ``utt_id`` string [], ``speaker`` string [],
      ``num_frames`` int64 [], ``features`` float32 [T, feature_dim], and ``labels`` int32 [T] /
      ``phones`` int32 [T] when present. An utterance whose lists disagree with ``num_frames``
      fails a tf assertion naming it.
    """
    context_spec = {
        "utt_id": tf.io.FixedLenFeature([], tf.string),
        "speaker": tf.io.FixedLenFeature([], tf.string),
        "num_frames": tf.io.FixedLenFeature([], tf.int64),
    }
    sequence_spec = {"features": tf.io.FixedLenSequenceFeature([feature_dim], tf.float32)}
    id_names = [
        name for name, present in (("labels", has_labels), ("phones", has_phones)) if present
    ]
    for name in id_names:
        sequence_spec[name] = tf.io.FixedLenSequenceFeature([], tf.int64)

    def parse(serialized):
        context, sequences = tf.io.parse_single_sequence_example(
            serialized, context_features=context_spec, sequence_features=sequence_spec
        )
        out = dict(context)
        lengths = [tf.shape(sequences["features"], out_type=tf.int64)[0]]
        lengths += [tf.size(sequences[name], out_type=tf.int64) for name in id_names]
        consistent = tf.reduce_all(tf.equal(tf.stack(lengths), context["num_frames"]))
        check = tf.debugging.Assert(
            consistent,
            [
                "utterance",
                context["utt_id"],
                "num_frames",
                context["num_frames"],
                "disagrees with its feature/label list lengths",
                tf.stack(lengths),
            ],
        )
        with tf.control_dependencies([check]):
            out["features"] = tf.identity(sequences["features"])
        for name in id_names:
            out[name] = tf.cast(sequences[name], tf.int32)
        return out

    return parse


def iterate_utterances(directory) -> Iterator[Utterance]:
    """Yield a set's utterances in canonical order as numpy ``Utterance`` objects.

    ``features`` float32 [T, D]; ``labels``/``phones`` int64 [T] or None.

    Raises (while iterating):
      DataError naming the shard when it is missing, truncated or corrupt (TFRecord CRC errors),
      or holds other counts than the manifest records.
    """
    directory = os.fspath(directory)
    manifest = read_manifest(directory)
    parse = utterance_parser(
        manifest["feature_dim"], manifest["has_labels"], manifest["has_phones"]
    )
    paths = check_shard_files(directory, manifest)
    for path, shard in zip(paths, manifest["shards"], strict=True):
        count = frames = 0
        dataset = tf.data.TFRecordDataset(path).map(parse)
        try:
            for record in dataset.as_numpy_iterator():
                count += 1
                frames += int(record["num_frames"])
                yield Utterance(
                    utt_id=record["utt_id"].decode(),
                    speaker=record["speaker"].decode(),
                    features=record["features"],
                    labels=record["labels"].astype(np.int64) if "labels" in record else None,
                    phones=record["phones"].astype(np.int64) if "phones" in record else None,
                )
        except tf.errors.OpError as err:
            message = err.message.splitlines()[0] if err.message else type(err).__name__
            raise DataError(f"{path}: corrupt or truncated shard ({message})") from err
        if (count, frames) != (shard["num_utterances"], shard["num_frames"]):
            raise DataError(
                f"{path}: holds {count} utterances / {frames} frames, manifest says "
                f"{shard['num_utterances']} / {shard['num_frames']}"
            )
