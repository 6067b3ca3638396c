"""The target format: one Example of sparse teacher targets per utterance.

Target sets (``format: "tfblend.targets"``, written by ``tfblend.targets``): shards
``targets-{i:05d}-of-{n:05d}.tfrecord`` in exactly the layout and order of the utterance set they
were made from, one ``tf.train.Example`` per utterance: ``utt_id`` (bytes), ``num_frames`` (int64),
``ids`` (bytes: little-endian int16 or int32 ``[T*k]``), ``probs`` (bytes: little-endian float16
``[T*k]``, or uint8 ``q`` with ``prob = exp(-q * log_step)`` and ``q == 255`` meaning 0), optional
``mass`` (bytes: little-endian float32 ``[T]``). Their manifest carries ``num_classes``, ``k``,
``id_dtype``, ``value_encoding``, ``log_step``, ``has_mass`` and ``features_digest`` (the
``content_digest`` of the utterance set).

:func:`write_target_set` writes a whole set (shards and manifest) from per-utterance arrays, and
:func:`target_set_manifest` is the manifest every writer of target sets records.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

import numpy as np
import tensorflow as tf

from tfblend.errors import DataError
from tfblend.records.manifests import (
    FORMAT_VERSION,
    TARGET_FORMAT,
    feature_values_digest,
    file_sha256,
    target_shard_name,
    write_manifest,
)

_ID_DTYPES = {"int16": (np.dtype("<i2"), tf.int16), "int32": (np.dtype("<i4"), tf.int32)}
_VALUE_ENCODINGS = ("float16", "log_uint8")


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


def check_target_layout(path: str, target_manifest: dict) -> None:
    """Checks the manifest's k, id dtype and encoding against the first record of a target shard.

    A cheap check when a set is opened (one record is read): a manifest whose ``k`` (or
    ``id_dtype``, ``value_encoding``) disagrees with the stored bytes per frame stops here,
    before any training step.

    Raises:
      DataError naming the shard, the utterance and both byte counts.
    """
    k = int(target_manifest["k"])
    id_dtype, encoding = target_manifest["id_dtype"], target_manifest["value_encoding"]
    if id_dtype not in _ID_DTYPES or encoding not in _VALUE_ENCODINGS:
        raise DataError(f"{path}: unsupported id_dtype {id_dtype!r} or encoding {encoding!r}")
    for serialized in tf.data.TFRecordDataset(path).take(1).as_numpy_iterator():
        example = tf.train.Example.FromString(serialized)
        feature = example.features.feature
        try:
            utt_id = feature["utt_id"].bytes_list.value[0].decode()
            frames = feature["num_frames"].int64_list.value[0]
            stored = len(feature["ids"].bytes_list.value[0]) + len(
                feature["probs"].bytes_list.value[0]
            )
        except (IndexError, KeyError) as err:
            raise DataError(f"{path}: first record is not a tfblend target record") from err
        per_entry = _ID_DTYPES[id_dtype][0].itemsize + (2 if encoding == "float16" else 1)
        if stored != frames * k * per_entry:
            raise DataError(
                f"{path}: utterance {utt_id!r} stores {stored / max(frames, 1):g} bytes/frame of "
                f"ids+probs, but the manifest's k={k} ({id_dtype}, {encoding}) means "
                f"{k * per_entry}"
            )


def target_set_manifest(utterance_manifest: dict, settings: dict, entries: list[dict]) -> dict:
    """The ``manifest.json`` of a target set made from the set of ``utterance_manifest``.

    Args:
      utterance_manifest: the utterance set's manifest (its classes).
      settings: what the targets are: at least ``k``, ``id_dtype``, ``value_encoding``,
        ``log_step`` (None unless "log_uint8"), ``has_mass`` and ``features_digest``
        (:func:`tfblend.records.feature_values_digest` of the utterance set); a ``seed`` of None
        is left out, every other key is recorded as given.
      entries: one dict per shard, in order: ``file``, ``num_utterances``, ``num_frames``,
        ``bytes``, ``sha256``.

    Returns:
      the manifest (``format`` "tfblend.targets"), with the storage figures
      ``bytes_per_frame`` and ``storage_fraction`` (of dense float32 posteriors).
    """
    frames = sum(entry["num_frames"] for entry in entries)
    stored = sum(entry["bytes"] for entry in entries)
    num_classes = utterance_manifest["num_classes"]
    return {
        "format": TARGET_FORMAT,
        "format_version": FORMAT_VERSION,
        "num_utterances": sum(entry["num_utterances"] for entry in entries),
        "num_frames": frames,
        "num_classes": num_classes,
        **{key: value for key, value in settings.items() if key != "seed" or value is not None},
        "top_fraction": settings["k"] / num_classes,
        "bytes_per_frame": stored / max(frames, 1),
        "dense_float32_bytes_per_frame": 4 * num_classes,
        "storage_fraction": stored / max(frames, 1) / (4 * num_classes),
        "shards": entries,
    }


def write_target_set(
    output_dir,
    utterance_manifest: dict,
    shards: Iterable[Iterable[tuple]],
    *,
    k: int,
    id_dtype: str = "int16",
    value_encoding: str = "float16",
    log_step: float | None = None,
    has_mass: bool = False,
    **settings,
) -> dict:
    """Writes a target set from per-utterance arrays: its shards and its manifest.

    The shards are written as given, in order (``shards[i]`` becomes target shard i of
    ``len(shards)``), so the set joins with the utterance set only when they hold its
    utterances in its order; the pipeline checks that when it reads them.

    Args:
      output_dir: the directory to write (created).
      utterance_manifest: the manifest of the utterance set the targets are for.
      shards: per shard, the utterances'
        ``(utt_id str, ids int [T, k], probs float [T, k], mass float [T] or None)``, as
        :func:`serialize_targets` takes them.
      k, id_dtype, value_encoding, log_step, has_mass: the targets' layout
        (:func:`serialize_targets`; ``log_step`` only with "log_uint8").
      **settings: further manifest fields (e.g. ``method``, ``tail``, ``teacher``).

    Returns:
      the manifest written (:func:`target_set_manifest`).
    """
    output_dir = os.fspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    shards = [list(rows) for rows in shards]
    entries = []
    for index, rows in enumerate(shards):
        name = target_shard_name(index, len(shards))
        path = os.path.join(output_dir, name)
        frames = 0
        with tf.io.TFRecordWriter(path) as writer:
            for utt_id, ids, probs, mass in rows:
                if (mass is not None) != has_mass:
                    raise DataError(
                        f"{output_dir}: utterance {utt_id!r}: mass given with has_mass="
                        f"{has_mass}; give a mass exactly when has_mass is True"
                    )
                writer.write(
                    serialize_targets(
                        utt_id,
                        ids,
                        probs,
                        mass,
                        id_dtype=id_dtype,
                        value_encoding=value_encoding,
                        log_step=log_step or 0.0625,
                    )
                )
                frames += len(ids)
        entries.append(
            {
                "file": name,
                "num_utterances": len(rows),
                "num_frames": frames,
                "bytes": os.path.getsize(path),
                "sha256": file_sha256(path),
            }
        )
    layout = {
        "k": k,
        "id_dtype": id_dtype,
        "value_encoding": value_encoding,
        "log_step": log_step if value_encoding == "log_uint8" else None,
        "has_mass": has_mass,
        "features_digest": feature_values_digest(utterance_manifest),
        "features_ids_digest": utterance_manifest["content_digest"],
    }
    manifest = target_set_manifest(utterance_manifest, {**layout, **settings}, entries)
    write_manifest(output_dir, manifest)
    return manifest
