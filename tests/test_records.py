"""tfblend.records: the sharded utterance writer, manifests, readers, corruption, target records."""

import dataclasses
import hashlib
import json
import os
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tfblend.errors import DataError
from tfblend.records import (
    MANIFEST_NAME,
    TARGET_FORMAT,
    content_digest,
    iterate_utterances,
    read_manifest,
    serialize_targets,
    shard_paths,
    target_parser,
    utterance_parser,
    verify_shards,
    write_manifest,
    write_utterance_shards,
)


@pytest.fixture(scope="module")
def train_utterances(tiny_corpus):
    utterances = list(iterate_utterances(tiny_corpus / "train"))
    assert len(utterances) >= 6
    return utterances


@pytest.fixture(scope="module")
def train_manifest(tiny_corpus):
    return read_manifest(tiny_corpus / "train")


def rewrite(directory, utterances, manifest, num_shards=3, **kwargs):
    return write_utterance_shards(
        directory,
        iter(utterances),
        num_shards=num_shards,
        num_classes=manifest["num_classes"],
        num_phones=manifest["num_phones"],
        **kwargs,
    )


def test_corpus_manifest_is_consistent(tiny_corpus, train_manifest, train_utterances):
    for split in ("train", "dev", "test"):
        manifest = read_manifest(tiny_corpus / split)
        verify_shards(tiny_corpus / split, manifest)
        utterances = list(iterate_utterances(tiny_corpus / split))
        assert len(utterances) == manifest["num_utterances"]
        assert sum(u.features.shape[0] for u in utterances) == manifest["num_frames"]
        assert manifest["content_digest"] == content_digest(
            (u.utt_id, u.features.shape[0]) for u in utterances
        )
    first = train_utterances[0]
    assert first.features.dtype == np.float32
    assert first.features.shape[1] == train_manifest["feature_dim"]
    assert first.labels.dtype == np.int64 and first.labels.shape == first.features.shape[:1]


def test_write_round_trip(tmp_path, train_manifest, train_utterances):
    manifest = rewrite(
        tmp_path / "set",
        train_utterances,
        train_manifest,
        num_shards=3,
        metadata={"note": "rewritten"},
    )
    assert read_manifest(tmp_path / "set") == manifest
    assert sorted(os.listdir(tmp_path / "set")) == [
        MANIFEST_NAME,
        *[f"utts-{i:05d}-of-00003.tfrecord" for i in range(3)],
    ]
    assert manifest["metadata"] == {"note": "rewritten"}
    assert manifest["num_utterances"] == len(train_utterances)
    assert manifest["num_frames"] == sum(u.features.shape[0] for u in train_utterances)
    # Round robin: utterance j in shard j % 3; canonical order = shard 0, then 1, then 2.
    canonical = [u for i in range(3) for u in train_utterances[i::3]]
    for shard, i in zip(manifest["shards"], range(3), strict=True):
        assert shard["num_utterances"] == len(train_utterances[i::3])
        assert shard["num_frames"] == sum(u.features.shape[0] for u in train_utterances[i::3])
        data = (tmp_path / "set" / shard["file"]).read_bytes()
        assert shard["sha256"] == hashlib.sha256(data).hexdigest()
    assert manifest["content_digest"] == content_digest(
        (u.utt_id, u.features.shape[0]) for u in canonical
    )
    back = list(iterate_utterances(tmp_path / "set"))
    assert [u.utt_id for u in back] == [u.utt_id for u in canonical]
    for got, want in zip(back, canonical, strict=True):
        assert got.speaker == want.speaker
        np.testing.assert_array_equal(got.features, want.features)
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_array_equal(got.phones, want.phones)
    # CMVN statistics: global and per speaker, in float64.
    everything = np.concatenate([u.features for u in train_utterances]).astype(np.float64)
    stats = manifest["cmvn"]["global"]
    assert stats["count"] == everything.shape[0]
    np.testing.assert_allclose(stats["sum"], everything.sum(axis=0), rtol=1e-9)
    np.testing.assert_allclose(stats["sum_sq"], (everything**2).sum(axis=0), rtol=1e-9)
    speakers = sorted({u.speaker for u in train_utterances})
    assert manifest["speakers"] == speakers == sorted(manifest["cmvn"]["speakers"])
    own = np.concatenate([u.features for u in train_utterances if u.speaker == speakers[0]])
    np.testing.assert_allclose(
        manifest["cmvn"]["speakers"][speakers[0]]["sum"],
        own.astype(np.float64).sum(axis=0),
        rtol=1e-9,
    )


def test_rewrite_replaces_an_earlier_set(tmp_path, train_manifest, train_utterances):
    rewrite(tmp_path / "set", train_utterances, train_manifest, num_shards=4)
    manifest = rewrite(tmp_path / "set", train_utterances[:5], train_manifest, num_shards=2)
    assert sorted(os.listdir(tmp_path / "set")) == [
        MANIFEST_NAME,
        "utts-00000-of-00002.tfrecord",
        "utts-00001-of-00002.tfrecord",
    ]
    assert manifest["num_utterances"] == 5
    assert len(list(iterate_utterances(tmp_path / "set"))) == 5


def poisoned(utterances, index, value):
    bad = dataclasses.replace(utterances[index], features=utterances[index].features.copy())
    bad.features[3, 1] = value
    return [*utterances[:index], bad, *utterances[index + 1 :]]


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_features_leave_nothing(tmp_path, train_manifest, train_utterances, value):
    stream = poisoned(train_utterances, 4, value)
    named = re.escape(f"utterance '{train_utterances[4].utt_id}'")
    with pytest.raises(DataError, match=named + ".*NaN/Inf"):
        rewrite(tmp_path / "new", stream, train_manifest)
    assert not (tmp_path / "new").exists()
    # Into a directory holding an earlier set: the earlier set survives untouched.
    before = rewrite(tmp_path / "old", train_utterances[:4], train_manifest, num_shards=2)
    files = sorted(os.listdir(tmp_path / "old"))
    with pytest.raises(DataError, match=re.escape(train_utterances[4].utt_id)):
        rewrite(tmp_path / "old", stream, train_manifest, num_shards=3)
    assert sorted(os.listdir(tmp_path / "old")) == files
    assert read_manifest(tmp_path / "old") == before
    verify_shards(tmp_path / "old", before)


def test_bad_utterances_are_refused(tmp_path, train_manifest, train_utterances):
    first = train_utterances[0]
    cases = {
        "duplicate": [first, first],
        "outside": [dataclasses.replace(first, labels=first.labels + 10**6)],
        "feature dim": [
            first,
            dataclasses.replace(train_utterances[1], features=train_utterances[1].features[:, :3]),
        ],
        "present in some": [first, dataclasses.replace(train_utterances[1], labels=None)],
        "must be integers": [dataclasses.replace(first, labels=first.labels[:-1])],
    }
    for message, stream in cases.items():
        with pytest.raises(DataError, match=message):
            rewrite(tmp_path / "bad", stream, train_manifest)
        assert not (tmp_path / "bad").exists()
    with pytest.raises(DataError, match="no utterances"):
        rewrite(tmp_path / "bad", [], train_manifest)


@pytest.fixture
def copied_set(tmp_path, tiny_corpus):
    shutil.copytree(tiny_corpus / "train", tmp_path / "train")
    return tmp_path / "train"


def test_flipped_bytes_name_the_shard(copied_set):
    manifest = read_manifest(copied_set)
    path = shard_paths(copied_set, manifest)[1]
    with open(path, "r+b") as handle:
        handle.seek(os.path.getsize(path) // 2)
        chunk = handle.read(8)
        handle.seek(-8, os.SEEK_CUR)
        handle.write(bytes(b ^ 0xFF for b in chunk))
    with pytest.raises(DataError, match=re.escape(os.path.basename(path)) + ".*corrupt"):
        list(iterate_utterances(copied_set))
    with pytest.raises(DataError, match=re.escape(os.path.basename(path)) + ".*sha256"):
        verify_shards(copied_set, manifest)


def test_truncated_shard_names_the_shard(copied_set):
    manifest = read_manifest(copied_set)
    path = shard_paths(copied_set, manifest)[0]
    size = os.path.getsize(path)
    with open(path, "r+b") as handle:
        handle.truncate(size - size // 3)
    with pytest.raises(DataError, match=re.escape(os.path.basename(path)) + ".*truncated"):
        list(iterate_utterances(copied_set))
    # Without the recorded size the TFRecord reader's own error is wrapped.
    for shard in manifest["shards"]:
        del shard["bytes"]
    write_manifest(copied_set, manifest)
    with pytest.raises(
        DataError, match=re.escape(os.path.basename(path)) + ".*corrupt or truncated"
    ):
        list(iterate_utterances(copied_set))


def test_shard_cut_at_a_record_boundary_is_caught(copied_set):
    manifest = read_manifest(copied_set)
    path = shard_paths(copied_set, manifest)[0]
    records = list(tf.data.TFRecordDataset(path).as_numpy_iterator())
    with tf.io.TFRecordWriter(path) as writer:
        for record in records[:-1]:
            writer.write(record)
    for shard in manifest["shards"]:
        del shard["bytes"]
    write_manifest(copied_set, manifest)
    with pytest.raises(DataError, match=re.escape(os.path.basename(path)) + ".*manifest says"):
        list(iterate_utterances(copied_set))


def test_read_manifest_errors(tmp_path, copied_set):
    with pytest.raises(DataError, match="no manifest"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(DataError, match="unreadable"):
        read_manifest(tmp_path)
    with pytest.raises(DataError, match="expected 'tfblend.targets'"):
        read_manifest(copied_set, expected_format=TARGET_FORMAT)
    manifest = json.loads((copied_set / MANIFEST_NAME).read_text())
    manifest["format_version"] = 99
    write_manifest(copied_set, manifest)
    with pytest.raises(DataError, match="format_version 99"):
        read_manifest(copied_set)
    (copied_set / MANIFEST_NAME).unlink()
    with pytest.raises(DataError, match=re.escape(str(copied_set))):
        list(iterate_utterances(copied_set))


def test_parser_checks_num_frames(train_manifest):
    example = tf.train.SequenceExample()
    example.context.feature["utt_id"].bytes_list.value.append(b"liar")
    example.context.feature["speaker"].bytes_list.value.append(b"s")
    example.context.feature["num_frames"].int64_list.value.append(3)
    for _ in range(2):
        example.feature_lists.feature_list["features"].feature.add().float_list.value.extend(
            [0.0] * 4
        )
    parse = utterance_parser(4, has_labels=False, has_phones=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="liar"):
        parse(example.SerializeToString())


@pytest.mark.parametrize("id_dtype", ["int16", "int32"])
@pytest.mark.parametrize("encoding", ["float16", "log_uint8"])
def test_target_records_round_trip(id_dtype, encoding):
    rng = np.random.default_rng(0)
    frames, k, step = 37, 5, 0.0625
    ids = rng.integers(0, 5126, (frames, k))
    logits = rng.normal(0, 3, (frames, 5126))
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    top = np.sort(probs, axis=1)[:, ::-1][:, :k]
    top[0, -1] = 0.0
    mass = top.sum(axis=1)
    record = serialize_targets(
        "utt-1", ids, top, mass, id_dtype=id_dtype, value_encoding=encoding, log_step=step
    )
    manifest = {
        "k": k,
        "id_dtype": id_dtype,
        "value_encoding": encoding,
        "log_step": step,
        "has_mass": True,
    }
    parsed = target_parser(manifest)(tf.constant(record))
    assert parsed["utt_id"] == b"utt-1" and int(parsed["num_frames"]) == frames
    assert parsed["ids"].dtype == tf.int32 and parsed["probs"].dtype == tf.float32
    np.testing.assert_array_equal(parsed["ids"], ids)
    np.testing.assert_allclose(parsed["mass"], mass, rtol=1e-6)
    got = parsed["probs"].numpy()
    assert got[0, -1] == 0.0
    if encoding == "float16":
        np.testing.assert_allclose(got, top, rtol=1e-3, atol=1e-7)
    else:
        representable = top > np.exp(-254.5 * step)
        ratio = got[representable] / top[representable]
        assert np.all(np.abs(np.log(ratio)) <= step / 2 + 1e-6)
        assert np.all(got[~representable] == 0.0)


def test_target_records_refuse_bad_input():
    with pytest.raises(DataError, match="u1.*int16"):
        serialize_targets("u1", [[40000]], [[1.0]], id_dtype="int16")
    with pytest.raises(DataError, match="u2.*\\[0, 1\\]"):
        serialize_targets("u2", [[1]], [[1.5]])
    with pytest.raises(DataError, match="u3.*mass"):
        serialize_targets("u3", [[1], [2]], [[1.0], [1.0]], mass=[1.0])
    record = serialize_targets("u4", [[1, 2]], [[0.5, 0.5]])
    wrong_k = {
        "k": 3,
        "id_dtype": "int16",
        "value_encoding": "float16",
        "log_step": None,
        "has_mass": False,
    }
    with pytest.raises(tf.errors.InvalidArgumentError, match="u4"):
        target_parser(wrong_k)(tf.constant(record))
