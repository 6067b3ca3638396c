"""Teacher outputs -> stored sparse soft targets: dump once, store compactly, reuse.

The teacher runs once over a split; for every frame a few ``(id, prob)`` pairs are kept and
written to target shards in exactly the layout and order of the utterance shards
(:mod:`tfblend.records` has the format). The student's pipeline joins them back, checked
(:mod:`tfblend.pipeline`).

How a frame's distribution becomes its few pairs (top-k, top-p, sampled) and why one T = 1 dump
serves every temperature: :mod:`tfblend.targets.sparsify`.

Storage: ids as int16 when K <= 32767 (else int32); probabilities as float16, or ``log_uint8``
(8-bit quantised negative log-probabilities, step ``log_step``). The teacher mass kept in the
stored entries (``mass``, float32 per frame) is stored only for ``tail="ghost"``, the one tail
handling that needs it. Each utterance's ids and probs are one byte string each, so the per-frame
protobuf overhead is zero: k = 1% of 5,126 classes at float16 costs 204 bytes per frame against
20,504 for dense float32.

Work is split by shard (``shard_index`` / ``num_shards`` over processes or machines). A shard is
complete when its file was renamed into place and its entry (``targets-*.json``) was written;
a rerun skips complete shards. ``manifest.json`` is written once every shard is complete.
"""

import json
import os
import shutil

import numpy as np
import tensorflow as tf

from tfblend.distill.losses import TAILS
from tfblend.errors import DataError
from tfblend.pipeline import eval_utterances
from tfblend.records import (
    MANIFEST_NAME,
    TARGET_FORMAT,
    check_target_layout,
    feature_values_digest,
    file_sha256,
    read_manifest,
    require_frames,
    serialize_targets,
    target_parser,
    target_set_manifest,
    target_shard_name,
    verify_shards,
    write_json,
    write_manifest,
)
from tfblend.targets.sparsify import METHODS, Sparsifier, id_dtype, resolve_k
from tfblend.targets.teachers import TeacherMixture


def _entry_path(output_dir: str, index: int, num_shards: int) -> str:
    return os.path.join(
        output_dir, target_shard_name(index, num_shards)[: -len(".tfrecord")] + ".json"
    )


def dump_targets(
    data_dir: str,
    teacher_dir: str | list,
    output_dir: str,
    *,
    teacher_weights=None,
    method: str = "topk",
    k: int = 0,
    top_fraction: float = 0.0,
    p: float = 0.95,
    tail: str = "renormalize",
    value_encoding: str = "float16",
    log_step: float = 0.0625,
    seed: int = 0,
    shard_index: int = 0,
    num_shards: int = 1,
    batch_size: int = 16,
    progress=None,
) -> dict | None:
    """Runs the teacher over ``data_dir`` and writes its sparse targets to ``output_dir``.

    Args:
      data_dir: the utterance set (one split) to label.
      teacher_dir: a teacher's model directory (:mod:`tfblend.train.modeldir`), or a list of model
        directories whose posteriors are mixed (:class:`tfblend.targets.teachers.TeacherMixture`).
      output_dir: the target set to write (created; complete shards in it are kept).
      teacher_weights: the mixture's weights (a list or ``"0.5,0.5"``; None: equal).
      method: "topk", "topp" or "sampled" (module docstring).
      k, top_fraction: entries per frame (``topk``), the cap (``topp``) or the draws
        (``sampled``): exactly one of the two.
      p: the mass of ``topp``.
      tail: the tail handling the targets are meant for; "ghost" stores the kept mass.
      value_encoding: "float16" or "log_uint8".
      log_step: the ``log_uint8`` quantisation step.
      seed: seeds the ``sampled`` draws (per shard and batch, so reruns are identical).
      shard_index, num_shards: this process dumps the utterance shards ``i`` with
        ``i % num_shards == shard_index``.
      batch_size: utterances per teacher call.
      progress: optional ``fn(message)`` for one line per shard.

    Returns:
      The target manifest once every shard is complete (by this or other processes), else None.
    """
    if method not in METHODS:
        raise DataError(f"--method must be one of {METHODS}, not {method!r}")
    if tail not in TAILS:
        raise DataError(f"--tail must be one of {TAILS}, not {tail!r}")
    if not 0 <= shard_index < num_shards:
        raise DataError(f"--shard_index {shard_index} is outside [0, {num_shards})")
    manifest = read_manifest(data_dir)
    require_frames(data_dir, manifest, "dump targets of")
    teacher = _teacher(teacher_dir, teacher_weights, manifest, data_dir)
    width = resolve_k(manifest["num_classes"], k, top_fraction)
    options = {"p": p, "tail": tail, "value_encoding": value_encoding, "log_step": log_step}
    settings = _settings(method, width, seed, teacher, manifest, **options)
    os.makedirs(output_dir, exist_ok=True)
    _check_settings(output_dir, settings)
    teach = _teaching_function(teacher, Sparsifier(method, width, p, seed), manifest)
    total = len(manifest["shards"])
    for index in range(shard_index, total, num_shards):
        entry_path = _entry_path(output_dir, index, total)
        if os.path.exists(entry_path):
            if progress:
                progress(f"shard {index + 1}/{total}: complete, skipped")
            continue
        entry = _dump_shard(
            teach, teacher, data_dir, output_dir, index, total, settings, batch_size
        )
        write_json(entry_path, entry)
        if progress:
            progress(
                f"shard {index + 1}/{total}: {entry['num_utterances']} utterances, "
                f"{entry['num_frames']} frames, {entry['bytes'] / entry['num_frames']:.1f} "
                "bytes/frame"
            )
    return finalize(output_dir, manifest)


def _teacher(teacher_dir, teacher_weights, manifest: dict, data_dir: str) -> TeacherMixture:
    """The teacher (or mixture) of the dump, checked against the data's classes and features."""
    teacher_dirs = [teacher_dir] if isinstance(teacher_dir, str | os.PathLike) else teacher_dir
    teacher = TeacherMixture(teacher_dirs, teacher_weights)
    named = " + ".join(map(str, teacher_dirs))
    num_classes = manifest["num_classes"]
    if teacher.num_classes != num_classes:
        raise DataError(
            f"the teacher in {named} has {teacher.num_classes} classes, the "
            f"data in {data_dir} {num_classes}"
        )
    if teacher.feature_dim != manifest["feature_dim"]:
        raise DataError(
            f"the teacher in {named} takes {teacher.feature_dim}-dim features, "
            f"{data_dir} has {manifest['feature_dim']}"
        )
    return teacher


def _settings(method, k, seed, teacher, manifest, *, p, tail, value_encoding, log_step) -> dict:
    """What a dump is (``settings.json``, and the target manifest's fields): its shards are
    only ever mixed with shards of the same settings."""
    return {
        "method": method,
        "k": k,
        "p": p if method == "topp" else None,
        "tail": tail,
        "id_dtype": id_dtype(manifest["num_classes"]),
        "value_encoding": value_encoding,
        "log_step": log_step if value_encoding == "log_uint8" else None,
        "has_mass": tail == "ghost",
        "seed": seed if method == "sampled" else None,
        "teacher": teacher.describe(),
        "features_digest": feature_values_digest(manifest),
        "features_ids_digest": manifest["content_digest"],
    }


def _check_settings(output_dir: str, settings: dict) -> None:
    """Refuses to mix shards of different dumps in one directory."""
    path = os.path.join(output_dir, "settings.json")
    if os.path.exists(path):
        with open(path) as stream:
            existing = json.load(stream)
        if existing != settings:
            changed = sorted(key for key in settings if settings[key] != existing.get(key))
            raise DataError(
                f"{output_dir} holds targets of another dump (differs in {changed}); "
                "use a new --output_dir"
            )
    else:
        write_json(path, settings)


def _remove_stale_temporaries(output_dir: str, name: str) -> None:
    """Deletes what a killed run left of shard ``name`` (this worker owns that shard)."""
    for entry in os.listdir(output_dir):
        if entry.startswith(f".{name}.tmp-"):
            os.remove(os.path.join(output_dir, entry))


def _teaching_function(teacher, sparsify, manifest: dict):
    """The teacher's forward pass and sparsification as one tf.function, traced once for every
    shard and batch shape (features float32 [B, T, D], lengths int32 [B], batch index int32 [])
    -> (ids [B, T, k], probs [B, T, k], mass [B, T]); no retracing."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, manifest["feature_dim"]], tf.float32),
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([], tf.int32),
        ]
    )
    def teach(features, lengths, batch_index):
        return sparsify(teacher(features, lengths), batch_index)

    return teach


def _dump_shard(teach, teacher, data_dir, output_dir, index, total, settings, batch_size) -> dict:
    utterances = eval_utterances(
        data_dir, cmvn=teacher.cmvn, cmvn_stats=teacher.cmvn_stats, shards=[index]
    )
    keep = ("utt_id", "num_frames", "features")
    # Not converted: AutoGraph cannot convert this lambda and warned once per shard.
    batches = utterances.map(
        tf.autograph.experimental.do_not_convert(lambda u: {key: u[key] for key in keep})
    ).padded_batch(batch_size)
    name = target_shard_name(index, total)
    final = os.path.join(output_dir, name)
    _remove_stale_temporaries(output_dir, name)
    temporary = os.path.join(output_dir, f".{name}.tmp-{os.getpid()}")
    frames = count = 0
    try:
        with tf.io.TFRecordWriter(temporary) as writer:
            for batch_index, batch in enumerate(batches):
                lengths = batch["num_frames"]
                ids, probs, mass = teach(
                    batch["features"],
                    tf.cast(lengths, tf.int32),
                    tf.constant(index * 1_000_003 + batch_index, tf.int32),
                )
                ids, probs, mass = ids.numpy(), probs.numpy(), mass.numpy()
                for row, (utt_id, length) in enumerate(
                    zip(batch["utt_id"].numpy(), lengths.numpy(), strict=True)
                ):
                    writer.write(
                        serialize_targets(
                            utt_id.decode(),
                            ids[row, :length],
                            np.clip(probs[row, :length], 0, 1),
                            mass[row, :length] if settings["has_mass"] else None,
                            id_dtype=settings["id_dtype"],
                            value_encoding=settings["value_encoding"],
                            log_step=settings["log_step"] or 0.0625,
                        )
                    )
                    frames += int(length)
                    count += 1
        os.replace(temporary, final)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return {
        "file": name,
        "num_utterances": count,
        "num_frames": frames,
        "bytes": os.path.getsize(final),
        "sha256": file_sha256(final),
    }


def finalize(output_dir: str, utterance_manifest: dict) -> dict | None:
    """Writes ``manifest.json`` when every shard's entry exists; returns it (None if not yet)."""
    total = len(utterance_manifest["shards"])
    entries = []
    for index in range(total):
        path = _entry_path(output_dir, index, total)
        if not os.path.exists(path):
            return None
        with open(path) as stream:
            entries.append(json.load(stream))
    with open(os.path.join(output_dir, "settings.json")) as stream:
        settings = json.load(stream)
    manifest = target_set_manifest(utterance_manifest, settings, entries)
    write_manifest(output_dir, manifest)
    return manifest


def _checked(record, num_classes: int, shard_path: str):
    """``(ids, probs)`` numpy of a parsed target record; DataError naming the utterance and
    shard when an id is outside ``[0, num_classes)`` or a probability is not finite in [0, 1]."""
    ids, probs = record["ids"].numpy(), record["probs"].numpy()
    utt_id = record["utt_id"].numpy().decode()
    if ids.size and (ids.min() < 0 or ids.max() >= num_classes):
        raise DataError(
            f"{shard_path}: utterance {utt_id!r}: target ids outside [0, {num_classes}) "
            f"(min {ids.min()}, max {ids.max()})"
        )
    if not np.isfinite(probs).all() or (probs.size and (probs.min() < 0 or probs.max() > 1)):
        raise DataError(f"{shard_path}: utterance {utt_id!r}: probs not finite in [0, 1]")
    return ids, probs


def derive_targets(from_dir: str, output_dir: str, k: int = 0, top_fraction: float = 0.0) -> dict:
    """A top-k' target set from a top-k one (k' < k) without running the teacher again.

    The first k' stored entries of a top-k dump are exactly the top-k' (they are sorted); the kept
    mass becomes their sum. Sampled and top-p dumps cannot be cut this way. What is read is
    checked: shard checksums, the manifest's k against the stored bytes, every id and
    probability (DataError naming the utterance and shard; nothing is left in ``output_dir``).
    Everything else (tail, stored mass, value encoding, teacher) is the source's.

    Args:
      from_dir: the top-k target set to cut.
      output_dir: the target set to write (must not hold one).
      k, top_fraction: k' as a count or as a fraction of the classes: exactly one of the two.
    """
    source = read_manifest(from_dir, expected_format=TARGET_FORMAT)
    if source["method"] != "topk":
        raise DataError(
            f"{from_dir} holds {source['method']} targets; only topk can be cut to a smaller k"
        )
    if top_fraction or not k:
        k = resolve_k(source["num_classes"], k, top_fraction)
    if not 1 <= k <= source["k"]:
        raise DataError(f"--k {k} must be in [1, {source['k']}] (the k of {from_dir})")
    if os.path.exists(os.path.join(output_dir, MANIFEST_NAME)):
        raise DataError(f"{output_dir} already holds a target set")
    verify_shards(from_dir, source)
    check_target_layout(os.path.join(from_dir, source["shards"][0]["file"]), source)
    created = not os.path.isdir(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    try:
        parse = target_parser(source)
        settings = {
            key: source.get(key)
            for key in (
                "method",
                "p",
                "tail",
                "id_dtype",
                "value_encoding",
                "log_step",
                "has_mass",
                "teacher",
                "features_digest",
                "features_ids_digest",
            )
        }
        settings.update(k=k, derived_from={"dir": os.path.abspath(from_dir), "k": source["k"]})
        write_json(os.path.join(output_dir, "settings.json"), settings)
        total = len(source["shards"])
        for index, shard in enumerate(source["shards"]):
            name = shard["file"]
            final = os.path.join(output_dir, name)
            temporary = os.path.join(output_dir, f".{name}.tmp-{os.getpid()}")
            try:
                with tf.io.TFRecordWriter(temporary) as writer:
                    shard_path = os.path.join(from_dir, name)
                    for record in tf.data.TFRecordDataset(shard_path).map(parse):
                        ids, probs = _checked(record, source["num_classes"], shard_path)
                        ids, probs = ids[:, :k], probs[:, :k]
                        writer.write(
                            serialize_targets(
                                record["utt_id"].numpy().decode(),
                                ids,
                                probs,
                                probs.sum(axis=1) if source["has_mass"] else None,
                                id_dtype=source["id_dtype"],
                                value_encoding=source["value_encoding"],
                                log_step=source["log_step"] or 0.0625,
                            )
                        )
                os.replace(temporary, final)
            except BaseException:
                if os.path.exists(temporary):
                    os.remove(temporary)
                raise
            entry = {**shard, "bytes": os.path.getsize(final), "sha256": file_sha256(final)}
            write_json(_entry_path(output_dir, index, total), entry)
        pseudo = {"num_classes": source["num_classes"], "shards": source["shards"]}
        manifest = finalize(output_dir, pseudo)
        assert manifest is not None
        return manifest
    except BaseException:
        if created:  # nothing half-written is left behind
            shutil.rmtree(output_dir, ignore_errors=True)
        raise
