"""Issue 12: nothing goes on silently wrong. One test per class of bad input or misuse, each
asserting the error (or exit code and one-line message) names the thing, and that nothing
half-written is left behind."""

import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tfblend import records
from tfblend.errors import DataError
from tfblend.pipeline import frame_dataset


def _copy(tiny_corpus, tmp_path, split="train"):
    destination = tmp_path / split
    shutil.copytree(tiny_corpus / split, destination)
    return destination


def _rewrite(source_dir, output_dir, change):
    """The utterances of ``source_dir`` with ``change(features)`` applied, written as a new set
    with the same ids, frame counts and shard layout."""
    manifest = records.read_manifest(source_dir)
    stream = records.iterate_utterances(source_dir)
    by_shard = [[next(stream) for _ in range(s["num_utterances"])] for s in manifest["shards"]]
    round_robin = [
        shard[j] for j in range(len(by_shard[0])) for shard in by_shard if j < len(shard)
    ]
    utterances = (
        records.Utterance(u.utt_id, u.speaker, change(u.features), u.labels, u.phones)
        for u in round_robin
    )
    return records.write_utterance_shards(
        output_dir,
        utterances,
        num_shards=len(manifest["shards"]),
        num_classes=manifest["num_classes"],
        num_phones=manifest["num_phones"],
    )


def _write_targets(data_dir, out_dir, *, probs_value=1.0, id_offset=0, k=1):
    """A target set for ``data_dir``: the label as the one stored id (plus ``id_offset``)."""
    manifest = records.read_manifest(data_dir)
    os.makedirs(out_dir, exist_ok=True)
    utterances = records.iterate_utterances(data_dir)
    shards = []
    for i, shard in enumerate(manifest["shards"]):
        name = records.target_shard_name(i, len(manifest["shards"]))
        path = os.path.join(out_dir, name)
        with tf.io.TFRecordWriter(path) as writer:
            for _ in range(shard["num_utterances"]):
                utt = next(utterances)
                ids = np.repeat(utt.labels[:, None], k, axis=1) + id_offset
                probs = np.full(ids.shape, probs_value)
                writer.write(records.serialize_targets(utt.utt_id, ids, probs, id_dtype="int32"))
        shards.append({"file": name, "num_utterances": shard["num_utterances"]})
        shards[-1]["sha256"] = records.file_sha256(path)
    target_manifest = {
        "format": records.TARGET_FORMAT,
        "format_version": records.FORMAT_VERSION,
        "num_utterances": manifest["num_utterances"],
        "num_classes": manifest["num_classes"],
        "k": k,
        "id_dtype": "int32",
        "value_encoding": "float16",
        "log_step": None,
        "has_mass": False,
        "features_digest": records.feature_values_digest(manifest),
        "features_ids_digest": manifest["content_digest"],
        "shards": shards,
    }
    records.write_manifest(out_dir, target_manifest)
    return target_manifest


def _flip_byte(path):
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0x01]))


# -- item 2: content digests and shard checksums ------------------------------------------------


def test_targets_from_other_feature_values_are_refused(tiny_corpus, tmp_path):
    train = tiny_corpus / "train"
    _write_targets(train, tmp_path / "targets")
    frame_dataset(train, targets_dir=tmp_path / "targets", batch_size=64)  # the right pair opens
    _rewrite(train, tmp_path / "deltas", lambda features: features + 0.5)
    assert (
        records.read_manifest(tmp_path / "deltas")["content_digest"]
        == records.read_manifest(train)["content_digest"]
    )
    with pytest.raises(DataError, match="other feature values with the same utterance ids"):
        frame_dataset(tmp_path / "deltas", targets_dir=tmp_path / "targets", batch_size=64)


def test_a_flipped_byte_is_caught_when_the_set_is_opened(tiny_corpus, tmp_path):
    train = _copy(tiny_corpus, tmp_path)
    manifest = records.read_manifest(train)
    frame_dataset(train, batch_size=64)
    assert os.path.exists(train / records.VERIFIED_NAME)
    path = records.shard_paths(train, manifest)[1]
    _flip_byte(path)
    with pytest.raises(DataError, match=re.escape(path) + ": sha256 mismatch"):
        frame_dataset(train, batch_size=64)


def test_verified_shards_are_not_hashed_again(tiny_corpus, tmp_path, monkeypatch):
    train = _copy(tiny_corpus, tmp_path)
    manifest = records.read_manifest(train)
    if os.path.exists(train / records.VERIFIED_NAME):
        os.remove(train / records.VERIFIED_NAME)  # copied along, with the shards' mtimes
    hashed = []
    real = records.manifests.file_sha256
    monkeypatch.setattr(records.manifests, "file_sha256", lambda p: hashed.append(p) or real(p))
    records.verify_shards(train, manifest)
    assert len(hashed) == len(manifest["shards"])
    records.verify_shards(train, manifest)
    assert len(hashed) == len(manifest["shards"])  # size and mtime unchanged: cached
    path = records.shard_paths(train, manifest)[0]
    os.utime(path, ns=(0, 0))
    records.verify_shards(train, manifest)
    assert hashed[-1] == path and len(hashed) == len(manifest["shards"]) + 1


def test_wrong_k_in_a_target_manifest_is_caught_when_opened(tiny_corpus, tmp_path):
    train = tiny_corpus / "train"
    manifest = _write_targets(train, tmp_path / "targets", k=2)
    records.write_manifest(tmp_path / "targets", {**manifest, "k": 3})
    with pytest.raises(DataError, match=r"targets-00000-of-\d+\.tfrecord: utterance .* k=3"):
        frame_dataset(train, targets_dir=tmp_path / "targets", batch_size=64)
