"""Issue 12: nothing goes on silently wrong. One test per class of bad input or misuse, each
asserting the error (or exit code and one-line message) names the thing, and that nothing
half-written is left behind."""

import json
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


# -- item 1: non-finite guard --------------------------------------------------------------------


def test_nan_in_a_foreign_shard_names_utterance_and_shard(tiny_corpus, tmp_path):
    """A shard not written by our writer (an external tool) with a NaN frame."""
    train = _copy(tiny_corpus, tmp_path)
    manifest = records.read_manifest(train)
    path = records.shard_paths(train, manifest)[0]
    utterances = list(records.iterate_utterances(train))[: manifest["shards"][0]["num_utterances"]]
    victim = utterances[2]
    victim.features = victim.features.copy()
    victim.features[3, 5] = np.nan
    with tf.io.TFRecordWriter(path) as writer:
        for utt in utterances:
            writer.write(records.utterances._sequence_example(utt, utt.features))
    manifest["shards"][0].update(sha256=records.file_sha256(path), bytes=os.path.getsize(path))
    records.write_manifest(train, manifest)
    dataset = frame_dataset(train, batch_size=64, shuffle=False)
    pattern = f"non-finite \\(NaN/Inf\\) features \\(utterance {re.escape(victim.utt_id)} in {re.escape(path)}"
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        for _ in dataset:
            pass


def test_target_ids_out_of_range_name_utterance_and_shard(tiny_corpus, tmp_path):
    train = tiny_corpus / "train"
    _write_targets(train, tmp_path / "targets", id_offset=10_000)
    dataset = frame_dataset(train, targets_dir=tmp_path / "targets", batch_size=64, shuffle=False)
    pattern = r"target ids outside \[0, \d+\) \(utterance \S+ in \S+targets-00000-of-\d+\.tfrecord"
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        next(iter(dataset))


def _tiny_dnn(feature_dim=4, classes=5):
    from tfblend.models import get_model

    model = get_model("dnn", num_classes=classes, hidden_units=(8,))
    model(np.zeros([1, 3, feature_dim], np.float32))
    return model


def test_distiller_step_stops_on_a_non_finite_loss():
    from tfblend.distiller import Distiller

    student = _tiny_dnn()
    distiller = Distiller(student, alpha=1.0)
    distiller.compile(optimizer="adam")
    windows = np.ones([8, 3, 4], np.float32)
    windows[5, 1, 2] = np.inf
    before = [v.numpy().copy() for v in student.trainable_variables]
    with pytest.raises(tf.errors.InvalidArgumentError, match="non-finite loss or gradient"):
        distiller.fit(windows, np.zeros([8], np.int32), batch_size=8, epochs=1, verbose=0)
    for old, variable in zip(before, student.trainable_variables, strict=True):
        np.testing.assert_array_equal(old, variable.numpy())  # the update never happened


def test_keras_fit_stops_on_a_non_finite_loss(tmp_path):
    import keras

    from tfblend.errors import NonFiniteError
    from tfblend.training import StopOnNonFinite

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5)])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    inputs = np.full([8, 4], np.nan, np.float32)
    with pytest.raises(NonFiniteError, match="non-finite loss nan at optimizer step 1"):
        model.fit(inputs, np.zeros([8]), batch_size=8, callbacks=[StopOnNonFinite()], verbose=0)


def test_no_model_is_saved_or_loaded_with_non_finite_weights(tmp_path):
    from tfblend.errors import NonFiniteError
    from tfblend.modeldir import INFO_FILE, MODEL_FILE, load_model_dir, save_model_dir

    model = _tiny_dnn()
    info = {"role": "student", "model": "dnn"}
    save_model_dir(model, str(tmp_path / "good"), info)
    kernel = model.trainable_variables[0]
    kernel.assign(np.full(kernel.shape, np.nan, np.float32))
    with pytest.raises(NonFiniteError, match=r"bad has non-finite \(NaN/Inf\) weights in 1 var"):
        save_model_dir(model, str(tmp_path / "bad"), info)
    assert not os.path.exists(tmp_path / "bad")
    # A model file changed behind our back (sha256 updated too) is refused when loaded.
    model.save(tmp_path / "good" / MODEL_FILE)
    path = tmp_path / "good" / INFO_FILE
    facts = json.loads(path.read_text())
    facts["sha256"] = records.file_sha256(tmp_path / "good" / MODEL_FILE)
    path.write_text(json.dumps(facts))
    with pytest.raises(NonFiniteError, match=re.escape(MODEL_FILE) + " has non-finite"):
        load_model_dir(str(tmp_path / "good"))
