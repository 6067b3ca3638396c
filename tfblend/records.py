"""The on-disk dataset formats: utterance shards, target shard records, manifests.

A dataset is a directory of TFRecord shards and one ``manifest.json`` (shared/DESIGN.md).

Utterance sets (``format: "tfblend.utterances"``): shards ``utts-{i:05d}-of-{n:05d}.tfrecord``, one
``tf.train.SequenceExample`` per utterance with context ``utt_id`` (bytes), ``speaker`` (bytes),
``num_frames`` (int64) and feature lists ``features`` (D floats per frame), optional ``labels`` and
``phones`` (one int64 per frame). Utterance ``j`` of the input stream goes to shard
``j % num_shards``; the canonical order of a set is shard 0 in file order, then shard 1, ...

Target sets (``format: "tfblend.targets"``, written by ``tfblend.targets``): shards
``targets-{i:05d}-of-{n:05d}.tfrecord`` in exactly the layout and order of the utterance set they
were made from, one ``tf.train.Example`` per utterance: ``utt_id`` (bytes), ``num_frames`` (int64),
``ids`` (bytes: little-endian int16 or int32 ``[T*k]``), ``probs`` (bytes: little-endian float16
``[T*k]``, or uint8 ``q`` with ``prob = exp(-q * log_step)`` and ``q == 255`` meaning 0), optional
``mass`` (bytes: little-endian float32 ``[T]``). Their manifest carries ``num_classes``, ``k``,
``id_dtype``, ``value_encoding``, ``log_step``, ``has_mass`` and ``features_digest`` (the
``content_digest`` of the utterance set).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import tensorflow as tf

from tfblend.errors import DataError
from tfblend.features import CmvnStats

UTTERANCE_FORMAT = "tfblend.utterances"
TARGET_FORMAT = "tfblend.targets"
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"

_UTTERANCE_KEYS = (
    "num_utterances",
    "num_frames",
    "feature_dim",
    "num_classes",
    "num_phones",
    "has_labels",
    "has_phones",
    "shards",
    "content_digest",
    "cmvn",
    "speakers",
    "metadata",
)
_TARGET_KEYS = (
    "num_utterances",
    "num_classes",
    "k",
    "id_dtype",
    "value_encoding",
    "log_step",
    "has_mass",
    "features_digest",
    "shards",
)
_REQUIRED_KEYS = {UTTERANCE_FORMAT: _UTTERANCE_KEYS, TARGET_FORMAT: _TARGET_KEYS}
_ID_DTYPES = {"int16": (np.dtype("<i2"), tf.int16), "int32": (np.dtype("<i4"), tf.int32)}
_VALUE_ENCODINGS = ("float16", "log_uint8")
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


def utterance_shard_name(index: int, num_shards: int) -> str:
    """``utts-{index:05d}-of-{num_shards:05d}.tfrecord``."""
    return f"utts-{index:05d}-of-{num_shards:05d}.tfrecord"


def target_shard_name(index: int, num_shards: int) -> str:
    """``targets-{index:05d}-of-{num_shards:05d}.tfrecord``."""
    return f"targets-{index:05d}-of-{num_shards:05d}.tfrecord"


def content_digest(pairs: Iterable[tuple[str, int]]) -> str:
    """sha256 hex digest of the lines ``f"{utt_id}\\t{num_frames}\\n"`` in the given order."""
    digest = hashlib.sha256()
    for utt_id, num_frames in pairs:
        digest.update(f"{utt_id}\t{int(num_frames)}\n".encode())
    return digest.hexdigest()


def file_sha256(path: str) -> str:
    """Hex sha256 of a file's bytes (shard checksums, model digests)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path, value, *, sort_keys: bool = False) -> None:
    """Write ``value`` as JSON to ``path`` atomically (temporary file, fsync, rename): readers
    see the old file or the complete new one, never a half-written one."""
    path = os.fspath(path)
    directory, name = os.path.split(path)
    tmp_path = os.path.join(directory, f".{name}.tmp-{os.getpid()}")
    try:
        with open(tmp_path, "w") as handle:
            json.dump(value, handle, indent=1, sort_keys=sort_keys)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_path, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)


def write_manifest(directory, manifest: dict) -> None:
    """Write ``manifest.json`` in ``directory`` atomically (keys sorted)."""
    write_json(os.path.join(directory, MANIFEST_NAME), manifest, sort_keys=True)


def read_manifest(directory, expected_format: str = UTTERANCE_FORMAT) -> dict:
    """Load and check ``directory/manifest.json``.

    Raises:
      DataError naming the path when the manifest is missing, unreadable, of another format or
      version, or lacks a required key.
    """
    path = os.path.join(directory, MANIFEST_NAME)
    try:
        with open(path) as handle:
            manifest = json.load(handle)
    except FileNotFoundError as err:
        raise DataError(f"{path}: no manifest (not a tfblend dataset directory?)") from err
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: unreadable manifest ({err})") from err
    if not isinstance(manifest, dict) or manifest.get("format") != expected_format:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DataError(f"{path}: format {found!r}, expected {expected_format!r}")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{path}: format_version {manifest.get('format_version')!r}, "
            f"this code reads {FORMAT_VERSION}"
        )
    missing = [key for key in _REQUIRED_KEYS.get(expected_format, ()) if key not in manifest]
    if missing:
        raise DataError(f"{path}: manifest lacks {missing}")
    return manifest


def shard_paths(directory, manifest: dict) -> list[str]:
    """Paths of the manifest's shards in canonical order (DataError on a non-basename entry)."""
    paths = []
    for shard in manifest["shards"]:
        name = shard["file"]
        if os.path.basename(name) != name or name in ("", ".", ".."):
            raise DataError(f"{directory}: manifest shard entry {name!r} is not a file name")
        paths.append(os.path.join(directory, name))
    return paths


def check_shard_files(directory, manifest: dict) -> list[str]:
    """Cheap pre-read check: every shard exists and has the recorded size. Returns the paths.

    Catches missing and truncated shards before a pipeline starts; ``verify_shards`` also checks
    the content.
    """
    paths = shard_paths(directory, manifest)
    for path, shard in zip(paths, manifest["shards"], strict=True):
        try:
            size = os.path.getsize(path)
        except OSError as err:
            raise DataError(f"{path}: shard missing or unreadable ({err.strerror})") from err
        if "bytes" in shard and size != shard["bytes"]:
            raise DataError(
                f"{path}: shard has {size} bytes, manifest says {shard['bytes']} (truncated?)"
            )
    return paths


def verify_shards(directory, manifest: dict) -> None:
    """Check each shard's existence, size and sha256 against the manifest.

    Raises:
      DataError naming the first bad shard.
    """
    for path, shard in zip(check_shard_files(directory, manifest), manifest["shards"], strict=True):
        if file_sha256(path) != shard["sha256"]:
            raise DataError(f"{path}: sha256 mismatch with the manifest (corrupt shard)")


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
            for name, pairs, tmp in zip(names, shard_pairs, tmp_paths, strict=True)
        ]
        manifest = {
            "format": UTTERANCE_FORMAT,
            "format_version": FORMAT_VERSION,
            "num_utterances": len(check.seen),
            "num_frames": global_stats.count,
            "feature_dim": check.feature_dim,
            "num_classes": num_classes,
            "num_phones": num_phones,
            "has_labels": check.has_labels,
            "has_phones": check.has_phones,
            "shards": shards,
            "content_digest": content_digest(p for pairs in shard_pairs for p in pairs),
            "cmvn": {
                "global": global_stats.to_dict(),
                "speakers": {s: stats.to_dict() for s, stats in sorted(speaker_stats.items())},
            },
            "speakers": sorted(speaker_stats),
            "metadata": dict(metadata or {}),
        }
        json.dumps(manifest)  # fail on non-serialisable metadata before touching old files
        with contextlib.suppress(FileNotFoundError):
            os.remove(os.path.join(output_dir, MANIFEST_NAME))
        for tmp, final in zip(tmp_paths, final_paths, strict=True):
            os.replace(tmp, final)
            renamed.append(final)
        for stale in os.listdir(output_dir):
            if _SHARD_PATTERN.fullmatch(stale) and stale not in names:
                os.remove(os.path.join(output_dir, stale))
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


def serialize_targets(
    utt_id: str,
    ids,
    probs,
    mass=None,
    *,
    id_dtype: str = "int16",
    value_encoding: str = "float16",
    log_step: float = 0.0625,
) -> bytes:
    """Serialize one utterance's sparse targets as a target-shard ``tf.train.Example``.

    Args:
      utt_id: the utterance id (must match the utterance set's).
      ids: int ``[T, k]`` class ids (fit ``id_dtype``).
      probs: float ``[T, k]`` probabilities in [0, 1].
      mass: optional float ``[T]``, teacher mass kept in the k entries.
      id_dtype: "int16" or "int32" (stored little-endian).
      value_encoding: "float16", or "log_uint8": ``q = min(255, round(-ln(p) / log_step))``,
        ``q == 255`` (also every p below ``exp(-254.5 * log_step)``) decodes to 0.
      log_step: quantisation step of "log_uint8" (ignored for "float16").

    Returns:
      the serialized Example (bytes).
    """
    if id_dtype not in _ID_DTYPES:
        raise DataError(f"utterance {utt_id!r}: id_dtype {id_dtype!r} not in {list(_ID_DTYPES)}")
    if value_encoding not in _VALUE_ENCODINGS:
        raise DataError(
            f"utterance {utt_id!r}: value_encoding {value_encoding!r} not in "
            f"{list(_VALUE_ENCODINGS)}"
        )
    ids = np.asarray(ids)
    probs = np.asarray(probs, np.float64)
    if ids.ndim != 2 or ids.shape != probs.shape or not np.issubdtype(ids.dtype, np.integer):
        raise DataError(
            f"utterance {utt_id!r}: ids (integers) and probs must both be [T, k], "
            f"got {ids.dtype} {ids.shape} and {probs.shape}"
        )
    np_dtype = _ID_DTYPES[id_dtype][0]
    info = np.iinfo(np_dtype)
    if ids.size and (ids.min() < 0 or ids.max() > info.max):
        raise DataError(f"utterance {utt_id!r}: ids outside [0, {info.max}] of {id_dtype}")
    if not np.isfinite(probs).all() or (probs.size and (probs.min() < 0 or probs.max() > 1)):
        raise DataError(f"utterance {utt_id!r}: probs must be finite and in [0, 1]")
    if value_encoding == "float16":
        value_bytes = probs.astype("<f2").tobytes()
    else:
        with np.errstate(divide="ignore"):
            steps = -np.log(probs) / log_step
        value_bytes = np.minimum(np.rint(steps), 255).astype(np.uint8).tobytes()
    feature = {
        "utt_id": tf.train.Feature(bytes_list=tf.train.BytesList(value=[utt_id.encode()])),
        "num_frames": tf.train.Feature(int64_list=tf.train.Int64List(value=[ids.shape[0]])),
        "ids": tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[ids.astype(np_dtype).tobytes()])
        ),
        "probs": tf.train.Feature(bytes_list=tf.train.BytesList(value=[value_bytes])),
    }
    if mass is not None:
        mass = np.asarray(mass, np.float32)
        if mass.shape != (ids.shape[0],) or not np.isfinite(mass).all():
            raise DataError(f"utterance {utt_id!r}: mass must be finite float [{ids.shape[0]}]")
        feature["mass"] = tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[mass.astype("<f4").tobytes()])
        )
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def target_parser(target_manifest: dict) -> Callable[[tf.Tensor], dict[str, tf.Tensor]]:
    """Parse function for one serialized target Example (graph-compatible).

    Args:
      target_manifest: a "tfblend.targets" manifest (gives k, id_dtype, value_encoding, log_step,
        has_mass).

    Returns:
      fn(serialized string []) -> dict: ``utt_id`` string [], ``num_frames`` int64 [],
      ``ids`` int32 [T, k], ``probs`` float32 [T, k], and ``mass`` float32 [T] when the manifest
      has mass. A record whose byte lengths disagree with ``num_frames * k`` fails a tf assertion
      naming the utterance.
    """
    k = int(target_manifest["k"])
    id_dtype = target_manifest["id_dtype"]
    encoding = target_manifest["value_encoding"]
    if id_dtype not in _ID_DTYPES or encoding not in _VALUE_ENCODINGS:
        raise DataError(
            f"target manifest: unsupported id_dtype {id_dtype!r} or value_encoding " f"{encoding!r}"
        )
    tf_id_dtype = _ID_DTYPES[id_dtype][1]
    log_step = float(target_manifest.get("log_step") or 0.0)
    has_mass = bool(target_manifest["has_mass"])
    spec = {
        "utt_id": tf.io.FixedLenFeature([], tf.string),
        "num_frames": tf.io.FixedLenFeature([], tf.int64),
        "ids": tf.io.FixedLenFeature([], tf.string),
        "probs": tf.io.FixedLenFeature([], tf.string),
    }
    if has_mass:
        spec["mass"] = tf.io.FixedLenFeature([], tf.string)

    def parse(serialized):
        record = tf.io.parse_single_example(serialized, spec)
        frames = record["num_frames"]
        ids = tf.io.decode_raw(record["ids"], tf_id_dtype, little_endian=True)
        if encoding == "float16":
            probs = tf.cast(
                tf.io.decode_raw(record["probs"], tf.float16, little_endian=True), tf.float32
            )
        else:
            steps = tf.cast(tf.io.decode_raw(record["probs"], tf.uint8), tf.float32)
            probs = tf.where(steps >= 255.0, 0.0, tf.exp(-steps * log_step))
        sizes = [tf.size(ids, out_type=tf.int64), tf.size(probs, out_type=tf.int64)]
        expected = [frames * k, frames * k]
        out = {"utt_id": record["utt_id"], "num_frames": frames}
        if has_mass:
            mass = tf.io.decode_raw(record["mass"], tf.float32, little_endian=True)
            sizes.append(tf.size(mass, out_type=tf.int64))
            expected.append(frames)
        check = tf.debugging.Assert(
            tf.reduce_all(tf.equal(tf.stack(sizes), tf.stack(expected))),
            [
                "target record of utterance",
                record["utt_id"],
                "has sizes",
                tf.stack(sizes),
                "expected",
                tf.stack(expected),
                "for num_frames",
                frames,
                "and k =",
                k,
            ],
        )
        with tf.control_dependencies([check]):
            out["ids"] = tf.reshape(tf.cast(ids, tf.int32), [-1, k])
            out["probs"] = tf.reshape(probs, [-1, k])
            if has_mass:
                out["mass"] = tf.identity(mass)
        return out

    return parse
