"""Stored teacher targets: dump, sharded dump, resume, smaller-k derivation, the checked join."""

import filecmp
import os

import numpy as np
import pytest
import tensorflow as tf
from conftest import read_target_records

from tfblend.errors import DataError
from tfblend.pipeline import eval_utterances, frame_dataset
from tfblend.records import feature_values_digest, read_manifest
from tfblend.targets import derive_targets, dump_targets
from tfblend.targets.sparsify import sampled_targets, top_p_targets
from tfblend.train.modeldir import load_model_dir


def _shard_files(directory):
    return sorted(f for f in os.listdir(directory) if f.endswith(".tfrecord"))


@pytest.fixture(scope="module")
def train_dir(tiny_corpus):
    return str(tiny_corpus / "train")


@pytest.fixture(scope="module")
def top5(tmp_path_factory, train_dir, tiny_teacher):
    out = str(tmp_path_factory.mktemp("top5"))
    dump_targets(train_dir, tiny_teacher, out, k=5)
    return out


def test_topk_dump_matches_the_teacher(train_dir, tiny_teacher, top5):
    manifest, records = read_target_records(top5)
    utterances = read_manifest(train_dir)
    assert manifest["k"] == 5 and manifest["method"] == "topk"
    assert manifest["features_digest"] == feature_values_digest(utterances)
    assert manifest["num_frames"] == utterances["num_frames"]
    assert manifest["id_dtype"] == "int16"
    teacher, info = load_model_dir(tiny_teacher)
    first = next(iter(eval_utterances(train_dir, cmvn=info["cmvn"], cmvn_stats=train_dir)))
    features = first["features"][None]
    mask = tf.ones(tf.shape(features)[:2], tf.bool)
    probs = tf.nn.softmax(teacher({"features": features, "mask": mask})[0]).numpy()
    stored = records[first["utt_id"].numpy().decode()]
    expected_ids = np.argsort(-probs, axis=1)[:, :5]
    # Ties aside, the stored ids are the teacher's five best, in order.
    agree = (stored["ids"] == expected_ids).mean()
    assert agree > 0.99
    rows = np.arange(len(probs))[:, None]
    np.testing.assert_allclose(stored["probs"], probs[rows, stored["ids"]], rtol=2e-3, atol=1e-4)
    assert (np.diff(stored["probs"], axis=1) <= 1e-3).all(), "not sorted by probability"


def test_sharded_dump_equals_one_process(tmp_path, train_dir, tiny_teacher, top5):
    out = str(tmp_path / "sharded")
    assert dump_targets(train_dir, tiny_teacher, out, k=5, shard_index=1, num_shards=2) is None
    assert not os.path.exists(os.path.join(out, "manifest.json"))
    manifest = dump_targets(train_dir, tiny_teacher, out, k=5, shard_index=0, num_shards=2)
    assert manifest is not None
    for name in _shard_files(top5):
        assert filecmp.cmp(os.path.join(top5, name), os.path.join(out, name), shallow=False)


def test_killed_dump_resumes_skipping_complete_shards(tmp_path, train_dir, tiny_teacher, top5):
    out = str(tmp_path / "killed")
    dump_targets(train_dir, tiny_teacher, out, k=5, shard_index=0, num_shards=2)
    first = os.path.join(out, _shard_files(top5)[0])
    first_mtime = os.stat(first).st_mtime_ns
    # What a SIGKILL in the middle of shard 1 leaves: a partial temporary, no entry, no manifest.
    partial = os.path.join(out, "." + _shard_files(top5)[1] + ".tmp-99999")
    shard = os.path.join(top5, _shard_files(top5)[1])
    with open(shard, "rb") as source, open(partial, "wb") as stream:
        stream.write(source.read()[:100])
    lines = []
    manifest = dump_targets(train_dir, tiny_teacher, out, k=5, progress=lines.append)
    assert manifest is not None
    assert "complete, skipped" in lines[0]
    assert os.stat(first).st_mtime_ns == first_mtime
    assert not os.path.exists(partial)
    for name in _shard_files(top5):
        assert filecmp.cmp(os.path.join(top5, name), os.path.join(out, name), shallow=False)


def test_a_second_dump_with_other_settings_is_refused(train_dir, tiny_teacher, top5):
    with pytest.raises(DataError, match="another dump"):
        dump_targets(train_dir, tiny_teacher, top5, k=3)


def test_smaller_k_derived_without_the_teacher(tmp_path, train_dir, tiny_teacher, top5):
    derived = str(tmp_path / "k2")
    manifest = derive_targets(top5, derived, 2)
    assert manifest["k"] == 2 and manifest["derived_from"]["k"] == 5
    direct = str(tmp_path / "direct")
    dump_targets(train_dir, tiny_teacher, direct, k=2)
    for name in _shard_files(direct):
        assert filecmp.cmp(os.path.join(direct, name), os.path.join(derived, name), shallow=False)
    with pytest.raises(DataError, match="must be in"):
        derive_targets(top5, str(tmp_path / "k9"), 9)


def test_storage_is_one_percent_of_dense_at_k_one_percent(tmp_path, train_dir, tiny_teacher):
    out = str(tmp_path / "k51")
    manifest = dump_targets(train_dir, tiny_teacher, out, top_fraction=0.01)
    assert manifest["k"] == 51
    assert manifest["storage_fraction"] <= 0.01, manifest["bytes_per_frame"]
    quantised = str(tmp_path / "k51q")
    small = dump_targets(train_dir, tiny_teacher, quantised, k=51, value_encoding="log_uint8")
    assert small["bytes_per_frame"] < manifest["bytes_per_frame"]
    _, exact = read_target_records(out)
    _, approx = read_target_records(quantised)
    for utt_id, record in exact.items():
        kept = record["probs"] > 1e-6
        ratio = approx[utt_id]["probs"][kept] / record["probs"][kept]
        # 8-bit log-probabilities with step 1/16 nat: within half a step, plus float16 rounding.
        assert np.all(np.abs(np.log(ratio)) <= 0.0625 / 2 + 2e-3)


def test_ghost_tail_stores_the_kept_mass(tmp_path, train_dir, tiny_teacher):
    out = str(tmp_path / "ghost")
    manifest = dump_targets(train_dir, tiny_teacher, out, k=5, tail="ghost")
    assert manifest["has_mass"]
    _, records = read_target_records(out)
    for record in records.values():
        np.testing.assert_allclose(record["mass"], record["probs"].sum(axis=1), atol=5e-3)


def test_sampled_and_top_p_dumps(tmp_path, train_dir, tiny_teacher):
    sampled = dump_targets(train_dir, tiny_teacher, str(tmp_path / "s"), method="sampled", k=8)
    _, records = read_target_records(str(tmp_path / "s"))
    assert sampled["method"] == "sampled"
    for record in records.values():
        np.testing.assert_allclose(record["probs"].sum(axis=1), 1.0, atol=1e-2)
    again = dump_targets(train_dir, tiny_teacher, str(tmp_path / "s2"), method="sampled", k=8)
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in sampled["shards"]]
    top_p = dump_targets(train_dir, tiny_teacher, str(tmp_path / "p"), method="topp", k=8, p=0.5)
    assert top_p["method"] == "topp" and top_p["k"] == 8


def test_top_p_and_sampled_sparsifiers():
    logits = tf.random.stateless_normal([64, 300], seed=[1, 2]) * 3.0
    log_probs = tf.nn.log_softmax(logits)
    ids, probs, mass = top_p_targets(log_probs, 0.9, 40)
    kept = (probs.numpy() > 0).sum(axis=1)
    # Smallest set: the mass without its last entry is below p; with it, at least p (or capped).
    cut = np.take_along_axis(probs.numpy(), (kept - 1)[:, None], axis=1)[:, 0]
    assert np.all((mass.numpy() >= 0.9 - 1e-5) | (kept == 40))
    assert np.all(mass.numpy() - cut < 0.9)
    ids, weights, mass = sampled_targets(log_probs, 32, tf.constant([3, 4]))
    np.testing.assert_allclose(weights.numpy().sum(axis=1), 1.0, rtol=1e-6)
    for row_ids, row_weights in zip(ids.numpy(), weights.numpy(), strict=True):
        drawn = row_ids[row_weights > 0]
        assert len(set(drawn)) == len(drawn)
    # Averaged over many draws the weights estimate the teacher's probabilities (unbiased).
    seeds = [tf.constant([7, s]) for s in range(200)]
    estimate = np.zeros([64, 300])
    for seed in seeds:
        ids, weights, _ = sampled_targets(log_probs, 32, seed)
        np.add.at(estimate, (np.arange(64)[:, None], ids.numpy()), weights.numpy())
    estimate /= len(seeds)
    np.testing.assert_allclose(estimate, np.exp(log_probs.numpy()), atol=0.02)


def test_targets_of_another_split_are_refused_at_the_join(tmp_path, tiny_corpus, top5):
    with pytest.raises(DataError) as error:
        frame_dataset(str(tiny_corpus / "dev"), targets_dir=top5)
    assert str(tiny_corpus / "dev") in str(error.value) and top5 in str(error.value)
