"""tfblend.pipeline: windows, chunks, CMVN, order and determinism, cardinality, the checked target
join."""

import itertools
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tfblend.errors import DataError
from tfblend.features import CmvnStats
from tfblend.pipeline import (
    PAD_LABEL,
    DatasetOptions,
    chunk_dataset,
    eval_utterances,
    frame_dataset,
    num_chunks,
    utterance_dataset,
)
from tfblend.records import iterate_utterances, read_manifest, write_manifest, write_target_set

K = 3  # soft targets in these tests: ids = [label, utterance index, frame index]


def write_targets(data_dir, out_dir, *, edit=None, manifest_edits=None, shard_counts=True):
    """Target set for ``data_dir``, written by ``records.write_target_set``; ids carry each
    frame's identity.

    ``edit(shard_index, utterances)`` may reorder or alter the (utt_id, ids, probs, mass) lists
    written to a shard; ``manifest_edits`` overrides manifest keys; ``shard_counts=False`` leaves
    the per-shard counts (utterances, frames) out of the manifest, so that only the reader's
    pairwise checks can notice a shard that does not match.
    """
    manifest = read_manifest(data_dir)
    utterances = list(iterate_utterances(data_dir))
    shards, start, index = [], 0, 0
    for i, shard in enumerate(manifest["shards"]):
        rows = []
        for utt in utterances[start : start + shard["num_utterances"]]:
            frames = utt.features.shape[0]
            ids = np.stack([utt.labels, np.full(frames, index), np.arange(frames)], axis=1)
            probs = np.tile([0.5, 0.25, 0.125], (frames, 1))
            rows.append((utt.utt_id, ids, probs, probs.sum(axis=1)))
            index += 1
        start += shard["num_utterances"]
        shards.append(edit(i, rows) if edit is not None else rows)
    target_manifest = write_target_set(
        out_dir, manifest, shards, k=K, id_dtype="int32", value_encoding="float16", has_mass=True
    )
    if not shard_counts:
        for entry in target_manifest["shards"]:
            del entry["num_utterances"], entry["num_frames"]
    if manifest_edits or not shard_counts:
        write_manifest(out_dir, {**target_manifest, **(manifest_edits or {})})
    return out_dir


@pytest.fixture(scope="module")
def train(tiny_corpus):
    directory = tiny_corpus / "train"
    manifest = read_manifest(directory)
    utterances = list(iterate_utterances(directory))
    stats = CmvnStats.from_dict(manifest["cmvn"]["global"])
    normalised = [(u.features - stats.mean()) / stats.std() for u in utterances]
    return directory, manifest, utterances, normalised


@pytest.fixture(scope="module")
def train_targets(tmp_path_factory, train):
    return write_targets(train[0], tmp_path_factory.mktemp("targets") / "train")


def reference_windows(features, context):
    num_frames = features.shape[0]
    index = np.clip(
        np.arange(num_frames)[:, None] + np.arange(-context, context + 1), 0, num_frames - 1
    )
    return features[index]


def test_canonical_frames_and_window_contents(train):
    directory, manifest, utterances, normalised = train
    dataset = frame_dataset(
        directory, DatasetOptions(context=4, shuffle=False, drop_remainder=False), batch_size=64
    )
    total = manifest["num_frames"]
    assert dataset.cardinality() == -(-total // 64)
    windows, labels = (
        np.concatenate(parts) for parts in zip(*dataset.as_numpy_iterator(), strict=True)
    )
    assert windows.shape == (total, 9, manifest["feature_dim"]) and windows.dtype == np.float32
    assert labels.dtype == np.int32
    np.testing.assert_array_equal(labels, np.concatenate([u.labels for u in utterances]))
    expected = np.concatenate([reference_windows(x, 4) for x in normalised])
    np.testing.assert_allclose(windows, expected, atol=1e-4)
    # The centre row is the frame itself; edge rows repeat the first/last frame.
    first = normalised[0]
    np.testing.assert_allclose(windows[0, 4], first[0], atol=1e-4)
    np.testing.assert_allclose(windows[0, :4], np.repeat(first[:1], 4, axis=0), atol=1e-4)
    last = first.shape[0] - 1
    np.testing.assert_allclose(windows[last, 5:], np.repeat(first[-1:], 4, axis=0), atol=1e-4)


def collect_identities(dataset):
    """[(utterance index, frame index)] of every frame of a joined frame dataset, in order."""
    rows = []
    for windows, labels, soft in dataset.as_numpy_iterator():
        assert set(soft) == {"ids", "probs", "mass"}
        np.testing.assert_array_equal(soft["ids"][:, 0], labels)
        rows.append((soft["ids"][:, 1:], windows))
    return rows


def test_shuffled_frames_cover_the_epoch_once(train, train_targets):
    directory, manifest, utterances, normalised = train
    dataset = frame_dataset(
        directory,
        DatasetOptions(context=3, drop_remainder=False, shuffle_buffer=1000, seed=5),
        batch_size=100,
        targets_dir=train_targets,
    )
    assert dataset.element_spec[2]["probs"].shape.as_list() == [None, K]
    rows = collect_identities(dataset)
    identities = np.concatenate([ids for ids, _ in rows])
    assert len(identities) == manifest["num_frames"]
    assert len({tuple(pair) for pair in identities}) == manifest["num_frames"]
    # Frames really are shuffled: in canonical order nearly every frame follows its predecessor
    # in the same utterance; shuffled, few do.
    same = identities[1:, 0] == identities[:-1, 0]
    follows = same & (identities[1:, 1] == identities[:-1, 1] + 1)
    assert follows.mean() < 0.05
    assert len(set(identities[:200, 0])) >= 2
    # ...and each window is the one of its (utterance, frame).
    for ids, windows in rows[:5]:
        for (u, t), window in zip(ids, windows, strict=True):
            np.testing.assert_allclose(window, reference_windows(normalised[u], 3)[t], atol=1e-4)


def identity_batches(dataset, count=None):
    batches = dataset.take(count) if count else dataset
    return [soft["ids"][:, 1:] for _, _, soft in batches.as_numpy_iterator()]


def test_determinism_and_epochs(train, train_targets):
    directory, manifest = train[0], train[1]

    def build(**kwargs):
        options = DatasetOptions(shuffle_buffer=2000, deterministic=True, **kwargs)
        return frame_dataset(directory, options, batch_size=128, targets_dir=train_targets)

    steps = manifest["num_frames"] // 128
    epoch0 = identity_batches(build(seed=1))
    assert len(epoch0) == steps == build(seed=1).cardinality()
    np.testing.assert_array_equal(epoch0, identity_batches(build(seed=1)))
    assert not np.array_equal(epoch0, identity_batches(build(seed=2)))
    epoch1 = identity_batches(build(seed=1, epoch=1))
    assert not np.array_equal(epoch0, epoch1)
    np.testing.assert_array_equal(epoch1, identity_batches(build(seed=0, epoch=2)))
    # repeat=True: epoch e (from `epoch` on) is exactly the one-epoch dataset of seed + e.
    repeated = build(seed=1, repeat=True)
    assert repeated.cardinality() == tf.data.INFINITE_CARDINALITY
    np.testing.assert_array_equal(identity_batches(repeated, 2 * steps), epoch0 + epoch1)


def test_epoch_seeds_work_under_a_global_seed_of_zero(train):
    """keras.utils.set_random_seed(0) must not break per-epoch shuffling (TF's Dataset.shuffle
    cannot take a tensor seed under a global seed of 0)."""
    tf.random.set_seed(0)
    try:
        dataset = frame_dataset(
            train[0], DatasetOptions(shuffle_buffer=2000, repeat=True), batch_size=128
        )
        utterances = utterance_dataset(train[0], DatasetOptions(repeat=True), batch_size=4)
        assert len(list(dataset.take(3))) == 3 and len(list(utterances.take(3))) == 3
    finally:
        tf.random.set_seed(None)


@pytest.mark.parametrize("mode", ["global", "speaker", "utterance", "none"])
def test_cmvn_modes(train, mode):
    directory, manifest, utterances, _ = train
    speakers = manifest["cmvn"]["speakers"]
    for record, utt in zip(
        eval_utterances(directory, cmvn=mode).as_numpy_iterator(), utterances, strict=True
    ):
        assert record["utt_id"].decode() == utt.utt_id
        x = utt.features.astype(np.float64)
        if mode == "global":
            stats = CmvnStats.from_dict(manifest["cmvn"]["global"])
        elif mode == "speaker":
            stats = CmvnStats.from_dict(speakers[utt.speaker])
        else:
            stats = CmvnStats(x.shape[1]).update(x)
        expected = x if mode == "none" else (x - stats.mean()) / stats.std()
        np.testing.assert_allclose(record["features"], expected, atol=2e-4)
        np.testing.assert_array_equal(record["labels"], utt.labels)
        np.testing.assert_array_equal(record["phones"], utt.phones)


def test_cmvn_statistics_from_another_set(tiny_corpus):
    dev = eval_utterances(tiny_corpus / "dev", cmvn="global", cmvn_stats=tiny_corpus / "train")
    stats = CmvnStats.from_dict(read_manifest(tiny_corpus / "train")["cmvn"]["global"])
    utt = next(iterate_utterances(tiny_corpus / "dev"))
    np.testing.assert_allclose(
        next(iter(dev))["features"], (utt.features - stats.mean()) / stats.std(), atol=2e-4
    )
    same = eval_utterances(tiny_corpus / "dev", cmvn_stats=stats)
    np.testing.assert_allclose(next(iter(same))["features"], next(iter(dev))["features"])
    with pytest.raises(DataError, match="no CMVN statistics for speakers"):
        eval_utterances(tiny_corpus / "dev", cmvn="speaker", cmvn_stats=tiny_corpus / "train")
    with pytest.raises(DataError, match="cmvn 'bogus'"):
        eval_utterances(tiny_corpus / "dev", cmvn="bogus")


def test_utterance_batches(train, train_targets):
    directory, manifest, utterances, normalised = train
    lengths = {u.utt_id: u.features.shape[0] for u in utterances}
    boundaries = sorted({int(np.percentile(list(lengths.values()), q)) for q in (30, 70)})
    dataset = utterance_dataset(
        directory,
        DatasetOptions(bucket_boundaries=boundaries, deterministic=True, seed=3),
        batch_size=4,
        targets_dir=train_targets,
    )
    batches = list(dataset.as_numpy_iterator())
    per_bucket = np.bincount(np.searchsorted(boundaries, list(lengths.values()), side="right"))
    assert len(batches) == dataset.cardinality() == sum(-(-n // 4) for n in per_bucket)
    seen = []
    for inputs, labels, weights, soft in batches:
        mask = inputs["mask"]
        assert inputs["features"].shape[:2] == mask.shape == labels.shape == weights.shape
        assert soft["ids"].shape == (*mask.shape, K) and soft["mass"].shape == mask.shape
        np.testing.assert_array_equal(weights, mask.astype(np.float32))
        assert not labels[~mask].any() and not inputs["features"][~mask].any()
        bucket_of = np.searchsorted(boundaries, mask.sum(axis=1), side="right")
        assert len(set(bucket_of)) == 1
        for row in range(mask.shape[0]):
            u = soft["ids"][row, 0, 1]
            seen.append(u)
            frames = int(mask[row].sum())
            assert frames == utterances[u].features.shape[0]
            np.testing.assert_array_equal(labels[row, :frames], utterances[u].labels)
            np.testing.assert_allclose(inputs["features"][row, :frames], normalised[u], atol=1e-4)
    assert sorted(seen) == list(range(manifest["num_utterances"]))
    again = utterance_dataset(
        directory,
        DatasetOptions(bucket_boundaries=boundaries, deterministic=True, seed=3),
        batch_size=4,
        targets_dir=train_targets,
    )
    np.testing.assert_array_equal(
        np.concatenate([s["ids"][:, 0, 1] for *_, s in again.as_numpy_iterator()]), seen
    )
    plain = utterance_dataset(
        directory, DatasetOptions(shuffle=False, label_key="phones"), batch_size=5
    )
    inputs, phones, _ = next(iter(plain))
    assert plain.cardinality() == -(-manifest["num_utterances"] // 5)
    np.testing.assert_array_equal(phones[0, : lengths[utterances[0].utt_id]], utterances[0].phones)


def test_eval_utterances_with_targets(train, train_targets):
    directory, manifest, utterances, _ = train
    dataset = eval_utterances(directory, targets_dir=train_targets)
    assert dataset.cardinality() == manifest["num_utterances"]
    for i, record in enumerate(dataset.as_numpy_iterator()):
        np.testing.assert_array_equal(record["soft"]["ids"][:, 1], i)
        np.testing.assert_array_equal(record["soft"]["ids"][:, 0], record["labels"])
        np.testing.assert_allclose(record["soft"]["probs"][0], [0.5, 0.25, 0.125])
        assert record["speaker"].decode() == utterances[i].speaker
    # One shard alone (a target-dumping worker's view), and its cardinality.
    last = len(manifest["shards"]) - 1
    subset = eval_utterances(directory, targets_dir=train_targets, shards=[last])
    first_of_last = manifest["num_utterances"] - manifest["shards"][last]["num_utterances"]
    assert subset.cardinality() == manifest["shards"][last]["num_utterances"]
    assert [r["utt_id"].decode() for r in subset.as_numpy_iterator()] == [
        u.utt_id for u in utterances[first_of_last:]
    ]
    with pytest.raises(DataError, match="shard indices"):
        eval_utterances(directory, shards=[last + 1])


@pytest.mark.parametrize(
    ("edits", "message"),
    [
        ({"features_digest": "0" * 64, "features_ids_digest": None}, "another feature set"),
        ({"features_digest": "0" * 64}, "other feature values with the same utterance ids"),
        ({"num_utterances": 1}, "num_utterances"),
        ({"num_classes": 7}, "num_classes .* != 7"),
        ({"shards": []}, "target shards"),
    ],
)
def test_join_manifest_checks(tmp_path, train, edits, message):
    directory = train[0]
    targets = write_targets(directory, tmp_path / "targets", manifest_edits=edits)
    for view in (frame_dataset, chunk_dataset):
        with pytest.raises(DataError, match=message) as caught:
            view(directory, targets_dir=targets)
        assert str(directory) in str(caught.value) and str(targets) in str(caught.value)


def swap_first_two(shard_index, rows):
    return [rows[1], rows[0], *rows[2:]] if shard_index == 0 else rows


def one_frame_more(shard_index, rows):
    if shard_index != 1:
        return rows
    utt_id, ids, probs, mass = rows[0]
    return [
        (utt_id, np.vstack([ids, ids[-1:]]), np.vstack([probs, probs[-1:]]), np.append(mass, 1.0)),
        *rows[1:],
    ]


@pytest.mark.parametrize("edit", [swap_first_two, one_frame_more])
def test_join_pair_checks_name_the_utterance(tmp_path, train, edit):
    directory, manifest, utterances, _ = train
    # Without per-shard counts, so that the pairwise check (not the manifest's) must notice.
    targets = write_targets(directory, tmp_path / "targets", edit=edit, shard_counts=False)
    first_of_shard = utterances[
        0 if edit is swap_first_two else manifest["shards"][0]["num_utterances"]
    ].utt_id
    for dataset in (
        frame_dataset(directory, targets_dir=targets, batch_size=32),
        chunk_dataset(
            directory, DatasetOptions(chunk_frames=8), targets_dir=targets, batch_size=32
        ),
        eval_utterances(directory, targets_dir=targets),
    ):
        with pytest.raises(tf.errors.InvalidArgumentError, match="target join mismatch") as info:
            for _ in dataset:
                pass
        text = info.value.message
        assert first_of_shard in text and str(directory) in text and str(targets) in text


def drop_last(shard_index, rows):
    return rows[:-1] if shard_index == 1 else rows


def test_target_shard_with_a_record_missing(tmp_path, train):
    """A target set whose manifest claims the utterance set's count while shard 1 holds one
    record fewer: its per-shard count names the shard, and without per-shard counts the reader
    still notices."""
    directory = train[0]
    claimed = {"num_utterances": train[1]["num_utterances"]}
    counted = write_targets(directory, tmp_path / "counted", edit=drop_last, manifest_edits=claimed)
    with pytest.raises(DataError, match="shard 1 has num_utterances"):
        eval_utterances(directory, targets_dir=counted)
    uncounted = write_targets(
        directory,
        tmp_path / "uncounted",
        edit=drop_last,
        shard_counts=False,
        manifest_edits=claimed,
    )
    for dataset in (
        frame_dataset(directory, DatasetOptions(shuffle=False), targets_dir=uncounted),
        chunk_dataset(directory, DatasetOptions(shuffle=False), targets_dir=uncounted),
    ):
        with pytest.raises(tf.errors.InvalidArgumentError, match="different numbers of records"):
            for _ in dataset:
                pass


def test_missing_and_truncated_shards(tmp_path, train):
    directory = tmp_path / "train"
    shutil.copytree(train[0], directory)
    path = directory / train[1]["shards"][-1]["file"]
    with open(path, "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(DataError, match=re.escape(path.name) + ".*truncated"):
        frame_dataset(directory)
    path.unlink()
    with pytest.raises(DataError, match=re.escape(path.name) + ".*missing"):
        utterance_dataset(directory)


def test_label_key_must_exist(train):
    with pytest.raises(DataError, match="label_key"):
        frame_dataset(train[0], DatasetOptions(label_key="senones"))


# ------------------------------------------------------------------------------------------
# Chunks.


def chunk_windows(chunks, context):
    """The 2W+1-frame windows inside chunks: [N, L+2W, D] -> [N, L, 2W+1, D]."""
    view = np.lib.stride_tricks.sliding_window_view(chunks, 2 * context + 1, axis=1)
    return np.moveaxis(view, -1, 2)


@pytest.mark.parametrize("mode", ["global", "speaker", "utterance", "none"])
def test_canonical_chunks_hold_every_window_once(train, mode):
    """In canonical order, the chunks' real frames are frame_dataset's frames, in order, and
    each output frame's 2W+1 rows of its chunk are frame_dataset's window of that frame."""
    directory, manifest, utterances, _ = train
    W, L = 3, 16
    chunks = chunk_dataset(
        directory,
        DatasetOptions(context=W, chunk_frames=L, shuffle=False, drop_remainder=False, cmvn=mode),
        batch_size=4 * L,
    )
    lengths = [u.features.shape[0] for u in utterances]
    assert num_chunks(lengths, L) == sum(-(-t // L) for t in lengths)
    assert chunks.cardinality() == -(-num_chunks(lengths, L) // 4)
    assert chunks.element_spec[0].shape.as_list() == [None, L + 2 * W, manifest["feature_dim"]]
    features, labels = (np.concatenate(p) for p in zip(*chunks.as_numpy_iterator(), strict=True))
    assert features.dtype == np.float32 and labels.dtype == np.int32
    assert labels.shape == (num_chunks(lengths, L), L)
    mask = labels >= 0
    assert mask.sum() == manifest["num_frames"]
    assert set(np.unique(labels[~mask])) <= {PAD_LABEL}
    # Only the last chunk of each utterance has padding, and its padding is a suffix.
    assert (~mask).sum() == sum(-(-t // L) * L - t for t in lengths)
    frames = frame_dataset(
        directory,
        DatasetOptions(context=W, shuffle=False, drop_remainder=False, cmvn=mode),
        batch_size=512,
    )
    windows, frame_labels = (
        np.concatenate(p) for p in zip(*frames.as_numpy_iterator(), strict=True)
    )
    np.testing.assert_array_equal(labels[mask], frame_labels)
    np.testing.assert_allclose(chunk_windows(features, W)[mask], windows, atol=1e-5)


def test_shuffled_chunks_join_targets_and_mask_the_tail(train, train_targets):
    directory, manifest, utterances, normalised = train
    W, L = 2, 8
    dataset = chunk_dataset(
        directory,
        DatasetOptions(
            context=W, chunk_frames=L, shuffle_buffer=40 * L, drop_remainder=False, seed=5
        ),
        batch_size=5 * L,
        targets_dir=train_targets,
    )
    spec = dataset.element_spec[2]
    assert spec["ids"].shape.as_list() == [None, L, K] and spec["mass"].shape.as_list() == [None, L]
    order, identities = [], []
    for features, labels, soft in dataset.as_numpy_iterator():
        mask = labels >= 0
        ids = soft["ids"]
        np.testing.assert_array_equal(ids[..., 0][mask], labels[mask])
        assert not ids[~mask].any() and not soft["probs"][~mask].any()
        assert not soft["mass"][~mask].any() and (soft["mass"][mask] > 0).all()
        identities.append(ids[..., 1:][mask])
        for chunk, chunk_ids, chunk_mask in zip(features, ids, mask, strict=True):
            u, first = chunk_ids[0, 1], chunk_ids[0, 2]
            real = int(chunk_mask.sum())
            assert first % L == 0 and chunk_mask[:real].all()  # padding only at the end
            np.testing.assert_array_equal(chunk_ids[:real, 2], first + np.arange(real))
            np.testing.assert_array_equal(chunk_ids[:real, 1], u)
            order.append((u, first))
            if len(order) <= 12:
                expected = reference_windows(normalised[u], W)[first : first + real]
                got = chunk_windows(chunk[None], W)[0, :real]
                np.testing.assert_allclose(got, expected, atol=1e-4)
    identities = np.concatenate(identities)
    assert len(identities) == manifest["num_frames"]
    assert len({tuple(pair) for pair in identities}) == manifest["num_frames"]
    # Chunks are shuffled: in canonical order each chunk follows its predecessor.
    follows = [a[0] == b[0] and b[1] == a[1] + L for a, b in itertools.pairwise(order)]
    assert np.mean(follows) < 0.2


def chunk_identity_batches(dataset, count=None):
    batches = dataset.take(count) if count else dataset
    return [
        np.where(labels[..., None] >= 0, soft["ids"][..., 1:], -1)
        for _, labels, soft in batches.as_numpy_iterator()
    ]


def test_chunk_determinism_epochs_and_resume(train, train_targets):
    directory = train[0]

    def build(**kwargs):
        options = DatasetOptions(
            context=2, chunk_frames=16, shuffle_buffer=1024, deterministic=True, **kwargs
        )
        return chunk_dataset(directory, options, batch_size=64, targets_dir=train_targets)

    epoch0 = chunk_identity_batches(build(seed=1))
    steps = len(epoch0)
    assert steps == build(seed=1).cardinality() > 3
    np.testing.assert_array_equal(epoch0, chunk_identity_batches(build(seed=1)))
    assert not np.array_equal(epoch0, chunk_identity_batches(build(seed=2)))
    epoch1 = chunk_identity_batches(build(seed=1, epoch=1))
    assert not np.array_equal(epoch0, epoch1)
    np.testing.assert_array_equal(epoch1, chunk_identity_batches(build(seed=0, epoch=2)))
    repeated = build(seed=1, repeat=True)
    assert repeated.cardinality() == tf.data.INFINITE_CARDINALITY
    np.testing.assert_array_equal(chunk_identity_batches(repeated, 2 * steps), epoch0 + epoch1)
    # Resume after a kill at step 3 (what fit_resumable does): the rest of the same epoch.
    np.testing.assert_array_equal(chunk_identity_batches(build(seed=1).skip(3)), epoch0[3:])


def test_chunk_arguments_are_checked(train):
    with pytest.raises(DataError, match="batch_size 100 .* multiple of chunk_frames 8"):
        chunk_dataset(train[0], batch_size=100)
    with pytest.raises(DataError, match="chunk_frames >= 1"):
        chunk_dataset(train[0], DatasetOptions(chunk_frames=0))
    with pytest.raises(DataError, match="label_key"):
        chunk_dataset(train[0], DatasetOptions(label_key="senones"))


def test_dataset_options_defaults_are_the_shipped_configs_and_are_checked():
    import dataclasses

    from tfblend.config import load_experiment, shipped_config

    options = DatasetOptions()
    student = load_experiment(shipped_config("student")).data
    dnn = load_experiment(shipped_config("dnn")).data
    assert options.context == student.context == dnn.context == 20
    assert options.chunk_frames == student.chunk_frames
    assert options.shuffle_buffer == student.shuffle_buffer and options.cmvn == student.cmvn
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.context = 3
    assert options.replace(bucket_boundaries=[100, 200]).bucket_boundaries == (100, 200)
    for bad, message in (
        ({"context": -1}, "context >= 0"),
        ({"chunk_frames": 0}, "chunk_frames >= 1"),
        ({"shuffle_buffer": 0}, "shuffle_buffer >= 1"),
        ({"epoch": -1}, "epoch >= 0"),
        ({"cmvn": "bogus"}, "cmvn 'bogus'"),
        ({"label_key": "senones"}, "label_key 'senones'"),
        ({"bucket_boundaries": [200, 100]}, "increasing"),
        ({"bucket_boundaries": [0, 100]}, "positive"),
    ):
        with pytest.raises(DataError, match=message):
            options.replace(**bad)
    with pytest.raises(TypeError, match="contex"):
        options.replace(contex=3)
    with pytest.raises(TypeError, match="DatasetOptions"):
        frame_dataset("unused", {"context": 3})
