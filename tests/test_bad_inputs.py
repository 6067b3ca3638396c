"""Nothing goes on silently wrong. One test per class of bad input or misuse, each
asserting the error (or exit code and one-line message) names the thing, and that nothing
half-written is left behind."""

import errno
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfblend import records
from tfblend.errors import DataError
from tfblend.models.cnn import PRESETS
from tfblend.pipeline import DatasetOptions, frame_dataset


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
    """A target set for ``data_dir`` (``records.write_target_set``): the label as the one
    stored id (plus ``id_offset``)."""
    manifest = records.read_manifest(data_dir)
    utterances = records.iterate_utterances(data_dir)
    shards = []
    for shard in manifest["shards"]:
        rows = []
        for _ in range(shard["num_utterances"]):
            utt = next(utterances)
            ids = np.repeat(utt.labels[:, None], k, axis=1) + id_offset
            rows.append((utt.utt_id, ids, np.full(ids.shape, probs_value), None))
        shards.append(rows)
    return records.write_target_set(
        out_dir,
        manifest,
        shards,
        k=k,
        id_dtype="int32",
        method="topk",
        p=None,
        tail="renormalize",
        teacher={"dir": "none", "model": "lstm", "sha256": "0" * 64},
    )


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


def test_a_flipped_byte_is_caught_when_the_set_is_opened(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv(records.CACHE_ENV, str(tmp_path / "cache"))
    train = _copy(tiny_corpus, tmp_path)
    manifest = records.read_manifest(train)
    frame_dataset(train, batch_size=64)
    assert os.path.exists(records.verification_record_path(train))  # verified once, recorded
    path = records.shard_paths(train, manifest)[1]
    _flip_byte(path)
    with pytest.raises(DataError, match=re.escape(path) + ": sha256 mismatch"):
        frame_dataset(train, batch_size=64)


def test_verified_shards_are_not_hashed_again(tiny_corpus, tmp_path, monkeypatch):
    train = _copy(tiny_corpus, tmp_path)
    manifest = records.read_manifest(train)
    monkeypatch.setenv(records.CACHE_ENV, str(tmp_path / "cache"))
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


def _nan_shard_set(tiny_corpus, tmp_path):
    """A copy of the train set whose shard 0 was rewritten by a foreign tool with a NaN frame
    (manifest checksums updated): (set directory, the utterance's id, the shard's path)."""
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
    return train, victim.utt_id, path


def test_nan_in_a_foreign_shard_names_utterance_and_shard(tiny_corpus, tmp_path):
    train, utt_id, path = _nan_shard_set(tiny_corpus, tmp_path)
    dataset = frame_dataset(train, DatasetOptions(shuffle=False), batch_size=64)
    where = f"\\[{re.escape(utt_id)}\\] \\[of\\] \\[{re.escape(path)}\\]"
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=f"NaN/Inf\\) features in utterance\\] {where}"
    ):
        for _ in dataset:
            pass


def test_target_ids_out_of_range_name_utterance_and_shard(tiny_corpus, tmp_path):
    train = tiny_corpus / "train"
    _write_targets(train, tmp_path / "targets", id_offset=10_000)
    dataset = frame_dataset(
        train, DatasetOptions(shuffle=False), targets_dir=tmp_path / "targets", batch_size=64
    )
    shard = r"\[of\] \[\S+targets-00000-of-"
    pattern = r"target ids outside range\(0, \d+\)\] \[in utterance\] \[\S+\] " + shard
    with pytest.raises(tf.errors.InvalidArgumentError, match=pattern):
        next(iter(dataset))


def _tiny_dnn(feature_dim=4, classes=5):
    from tfblend.models import get_model

    model = get_model("dnn", num_classes=classes, hidden_units=(8,))
    model(np.zeros([1, 3, feature_dim], np.float32))
    return model


def test_distiller_step_stops_on_a_non_finite_loss():
    from tfblend.distill.distiller import Distiller

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
    from tfblend.train.fit import StopOnNonFinite

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(5)])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    inputs = np.full([8, 4], np.nan, np.float32)
    with pytest.raises(NonFiniteError, match="non-finite loss nan at optimizer step 1"):
        model.fit(inputs, np.zeros([8]), batch_size=8, callbacks=[StopOnNonFinite()], verbose=0)


def test_no_model_is_saved_or_loaded_with_non_finite_weights(tmp_path):
    from tfblend.errors import NonFiniteError
    from tfblend.train.modeldir import INFO_FILE, MODEL_FILE, load_model_dir, save_model_dir

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


# -- item 3: safe model directories ---------------------------------------------------------------

SETTINGS = {"experiment": {"train": {"seed": 0, "epochs": 2}}, "train_digest": "abc"}


def _checkpointed(model_dir):
    """What a run killed after its first checkpoint leaves (resume state and a history)."""
    with open(os.path.join(model_dir, "resume", "state.json"), "w") as stream:
        json.dump({"epoch": 1, "step": 0, "variables": "variables-0001-0000000.npz"}, stream)
    with open(os.path.join(model_dir, "history.csv"), "w") as stream:
        stream.write("epoch,loss\n0,1.0\n")


def test_a_second_run_on_a_model_dir_stops_at_once(tmp_path):
    from tfblend.train.rundir import training_run

    model_dir = str(tmp_path / "run")
    with training_run(model_dir, SETTINGS):
        with (
            pytest.raises(DataError, match=f"model dir {model_dir} is in use by pid {os.getpid()}"),
            training_run(model_dir, SETTINGS),
        ):
            pass
        assert os.path.isdir(os.path.join(model_dir, "resume"))  # the holder's files untouched
        _checkpointed(model_dir)
    with training_run(model_dir, SETTINGS):  # released
        pass


def test_resume_with_other_settings_is_refused_listing_the_differences(tmp_path):
    from tfblend.train.rundir import training_run

    model_dir = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt), training_run(model_dir, SETTINGS):
        _checkpointed(model_dir)
        raise KeyboardInterrupt  # killed after its first checkpoint: the state stays
    other = {**SETTINGS, "experiment": {"train": {"seed": 1, "epochs": 2}}}
    with (
        pytest.raises(DataError, match=r"other settings \(experiment.train.seed: 0 -> 1\)"),
        training_run(model_dir, other),
    ):
        pass
    assert os.path.exists(os.path.join(model_dir, "resume", "state.json"))
    with training_run(model_dir, SETTINGS):  # the same settings resume
        assert os.path.exists(os.path.join(model_dir, "history.csv"))
    with training_run(model_dir, other, overwrite=True):  # cleared first
        assert not os.path.exists(os.path.join(model_dir, "history.csv"))
        assert not os.path.exists(os.path.join(model_dir, "resume", "state.json"))


def test_a_finished_model_dir_is_refused_unless_overwrite(tmp_path):
    from tfblend.train.rundir import training_run

    model_dir = tmp_path / "run"
    model_dir.mkdir()
    (model_dir / "model.json").write_text("{}")
    (model_dir / "history.csv").write_text("epoch,loss\n0,1.0\n")
    with (
        pytest.raises(DataError, match="holds a finished model .*--overwrite"),
        training_run(str(model_dir), SETTINGS),
    ):
        pass
    assert (model_dir / "history.csv").read_text() == "epoch,loss\n0,1.0\n"
    with training_run(str(model_dir), SETTINGS, overwrite=True):
        assert sorted(os.listdir(model_dir)) == [".lock", "resume"]


def test_a_run_failing_before_its_first_checkpoint_leaves_nothing(tmp_path):
    from tfblend.train.rundir import training_run

    fresh = tmp_path / "fresh"
    with pytest.raises(DataError, match="boom"), training_run(str(fresh), SETTINGS):
        os.makedirs(fresh / "logs")
        (fresh / "history.csv").write_text("epoch\n")
        raise DataError("boom")
    assert not fresh.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="boom"), training_run(str(existing), SETTINGS):
        (existing / "history.csv").write_text("epoch\n")
        raise DataError("boom")
    assert os.listdir(existing) == ["notes.txt"]


class _FullDisk:
    """``open`` for :func:`tfblend.records.write_file` on a disk that fills up: a file opened
    for writing is created and half written, then the write fails with ENOSPC."""

    def __init__(self, real_open):
        self.real_open = real_open

    def __call__(self, path, mode="r", *args, **kwargs):
        stream = self.real_open(path, mode, *args, **kwargs)
        return _HalfWriter(stream) if "w" in mode else stream


class _HalfWriter:
    def __init__(self, stream):
        self.stream = stream

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stream.close()

    def write(self, data):
        self.stream.write(bytes(data)[: len(data) // 2])
        self.stream.flush()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def flush(self):
        self.stream.flush()

    def fileno(self):
        return self.stream.fileno()


def _unraisable(monkeypatch) -> list:
    """Collects what Python would print as "Exception ignored in ..." (checked after gc)."""
    seen = []
    monkeypatch.setattr(sys, "unraisablehook", seen.append)
    return seen


def test_a_save_into_a_full_or_unwritable_location_ends_in_one_line_with_no_partial_file(
    tmp_path, monkeypatch, tiny_corpus
):
    """The resume state, the model, the history and an export: a full disk or a place that
    cannot be written ends in one DataError naming the file and the cause, leaves no partial or
    temporary file (the previous state intact) and no "Exception ignored" noise."""
    import builtins
    import gc

    import keras

    from tfblend.export import export_model
    from tfblend.records import manifests
    from tfblend.train import fit, modeldir

    seen = _unraisable(monkeypatch)
    model = _tiny_dnn()
    resume = tmp_path / "resume"
    resume.mkdir()
    fit.save_state(str(resume), model.variables, 0, 5)  # an earlier checkpoint
    before = {p: (resume / p).read_bytes() for p in os.listdir(resume)}
    history = fit.HistoryLogger(str(tmp_path / "history.csv"))
    history.on_train_begin()
    history.on_epoch_end(0, {"loss": 1.5, "val_loss": 2.0})
    assert (tmp_path / "history.csv").read_bytes() == b"epoch,loss,val_loss\r\n0,1.5,2.0\r\n"
    nospc = "No space left on device"
    monkeypatch.setattr(manifests, "open", _FullDisk(builtins.open), raising=False)
    with pytest.raises(DataError) as error:
        fit.save_state(str(resume), model.variables, 0, 10)
    assert str(error.value) == f"cannot write {resume}/variables-0000-0000010.npz: {nospc}"
    assert {p: (resume / p).read_bytes() for p in os.listdir(resume)} == before
    model_dir = tmp_path / "model"
    with pytest.raises(
        DataError, match=re.escape(f"cannot write {model_dir}/model.keras: {nospc}")
    ):
        modeldir.save_model_dir(model, str(model_dir), {"role": "student"})
    assert os.listdir(model_dir) == []
    with pytest.raises(DataError, match=re.escape(f"cannot write {tmp_path}/history.csv: {nospc}")):
        history.on_epoch_end(1, {"loss": 1.2, "val_loss": 1.9})
    assert (tmp_path / "history.csv").read_bytes() == b"epoch,loss,val_loss\r\n0,1.5,2.0\r\n"
    gc.collect()
    assert seen == []
    monkeypatch.undo()
    seen = _unraisable(monkeypatch)

    def full_archive(self, path, **kwargs):  # TensorFlow's writer fills the disk half-way
        os.makedirs(os.path.join(path, "variables"))
        open(os.path.join(path, "saved_model.pb"), "wb").close()
        raise OSError(errno.ENOSPC, nospc)

    archive_class = type(keras.export.ExportArchive())  # the backend's subclass
    monkeypatch.setattr(archive_class, "write_out", full_archive)
    exports = tmp_path / "exports"
    with pytest.raises(DataError, match=re.escape(f"cannot write {exports}/m/1: {nospc}")):
        export_model(model, str(exports / "m" / "1"), kind="window", feature_dim=4,
                     log_priors=np.zeros(5, np.float32), context=1)  # fmt: skip
    assert os.listdir(exports / "m") == []
    monkeypatch.undo()
    # Unwritable: under a regular file (the tests run as root, where chmod stops nothing).
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    under = blocker / "model"
    with pytest.raises(DataError, match=re.escape(f"cannot write {under}: Not a directory")):
        modeldir.save_model_dir(model, str(under), {"role": "student"})
    with pytest.raises(DataError, match=re.escape(f"cannot write {under}/1: Not a directory")):
        export_model(model, str(under / "1"), kind="window", feature_dim=4,
                     log_priors=np.zeros(5, np.float32), context=1)  # fmt: skip
    with pytest.raises(DataError, match=re.escape(f"cannot write {under}/variables-0000")):
        fit.save_state(str(under), model.variables, 0, 1)
    gc.collect()
    assert seen == []


def test_a_training_whose_disk_fills_up_exits_1_naming_the_file(tiny_corpus, tmp_path):
    """The issue's case, end to end: the second resume save of a training hits a full disk.
    One line names the file and the cause (no "Exception ignored", no traceback), and the model
    dir keeps the first checkpoint, with no temporary file."""
    model_dir = tmp_path / "cnn"
    code = (
        "import builtins, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from test_bad_inputs import _FullDisk\n"
        "from tfblend.records import manifests\n"
        "from tfblend import cli\n"
        "from tfblend.steps.train_student import main\n"
        "calls = []\n"
        "def opener(path, mode='r', *args, **kwargs):\n"
        "    calls.append(path) if '.variables-' in str(path) else None\n"
        "    full = len(calls) >= 2 and '.variables-' in str(path)\n"
        "    opener = _FullDisk(builtins.open) if full else builtins.open\n"
        "    return opener(path, mode, *args, **kwargs)\n"
        "manifests.open = opener\n"
        "sys.argv = ['train_student.py', *sys.argv[2:]]\n"
        "cli.run(main)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, os.path.dirname(__file__), f"--corpus_dir={tiny_corpus}",
         f"--model_dir={model_dir}", "--epochs=1",
         "--params_override=model.vgg.preset=tiny,train.checkpoint_every_steps=2"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f"train_student.py: error: cannot write {model_dir}/resume/variables-0000-0000004.npz: "
        "No space left on device"
    )
    assert "Exception ignored" not in result.stderr and "Traceback" not in result.stderr
    resume = sorted(os.listdir(model_dir / "resume"))
    assert resume == ["run.json", "state.json", "variables-0000-0000002.npz"]
    assert not [p for p in os.listdir(model_dir) if ".tmp-" in p]


# -- item 4: one-line errors, config values checked when parsed --------------------------------


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epochs=three", "train.epochs must be int, got 'three' (str)"),
        ("model.vgg.preset=huge", f"model.vgg.preset must be one of {sorted(PRESETS)}"),
        ("distill.tail=ghosts", "distill.tail must be one of"),
        ("data.cmvn=speakers", "data.cmvn must be one of"),
        ("distill.alpha=1.5", "distill.alpha = 1.5 is outside [0, 1]"),
        ("model.dnn.hidden_units=[8,x]", "model.dnn.hidden_units must be a list of int"),
    ],
)
def test_config_values_are_checked_when_parsed(override, message):
    from tfblend.config import load_experiment, shipped_config

    with pytest.raises(DataError, match=re.escape(message)):
        load_experiment(shipped_config("student"), override)


@pytest.mark.parametrize(
    "value, message",
    [
        (None, "needs the TF_CONFIG environment variable"),
        ("{cluster:", "TF_CONFIG is not JSON"),
        ('{"cluster": {"worker": ["a:1"]}}', 'needs "cluster"'),
        ('{"cluster": {"worker": ["a"]}, "task": {}}', '"worker" must be a list of "host:port"'),
        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}', "index"),
    ],
)
def test_malformed_tf_config_is_named(value, message):
    from tfblend.train.strategies import check_tf_config

    with pytest.raises(DataError, match=re.escape(message)):
        check_tf_config(value)


def test_error_lines_name_the_file():
    import errno

    from tfblend.cli import error_line

    full = OSError(errno.ENOSPC, "No space left on device", "/data/run/model.keras")
    assert error_line(full) == "No space left on device: /data/run/model.keras"
    assertion = tf.errors.InvalidArgumentError(
        None, None, "... transformation: assertion failed: [non-finite loss] [12] [loss] [nan]\n x"
    )
    assert error_line(assertion) == "non-finite loss 12 loss nan"
    lost = tf.errors.DataLossError(None, None, "corrupted record at 1234\nmore")
    assert error_line(lost).startswith("TensorFlow DataLossError: corrupted record at 1234")
    assert error_line(KeyError("a bug")) is None  # a bug keeps its traceback


# -- scripts: the top-level handler, end to end (each spawn costs a TensorFlow start) ------------


def _script(name, *args, env=None):
    import subprocess
    import sys

    from conftest import ROOT

    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **(env or {})},
    )


def test_training_on_a_nan_shard_exits_1_naming_it_and_leaves_no_model_dir(tiny_corpus, tmp_path):
    _, utt_id, path = _nan_shard_set(tiny_corpus, tmp_path)
    shutil.copytree(tiny_corpus / "dev", tmp_path / "dev")
    model_dir = tmp_path / "cnn"
    result = _script(
        "train_student.py",
        f"--corpus_dir={tmp_path}",
        f"--model_dir={model_dir}",
        "--epochs=1",
        "--params_override=model.vgg.preset=tiny",
    )
    assert result.returncode == 1, result.stderr[-2000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        f"train_student.py: error: non-finite (NaN/Inf) features in utterance {utt_id} of {path}"
    )
    assert "Traceback" not in result.stderr
    assert not model_dir.exists()


def test_a_busy_model_dir_stops_a_script_at_once_and_verbose_shows_the_traceback(
    tiny_corpus, tmp_path
):
    from tfblend.train.rundir import training_run

    model_dir = str(tmp_path / "cnn")
    with training_run(model_dir, SETTINGS):
        result = _script(
            "train_student.py",
            f"--corpus_dir={tiny_corpus}",
            f"--model_dir={model_dir}",
            env={"TFBLEND_TRACEBACK": "1"},
        )
        assert os.path.isdir(os.path.join(model_dir, "resume"))  # the holder's run untouched
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"train_student.py: error: model dir {model_dir} is in use by pid {os.getpid()}"
    assert "Traceback" in result.stderr


def test_rerunning_a_finished_model_dir_is_refused(tiny_corpus, tmp_path):
    model_dir = tmp_path / "cnn"
    model_dir.mkdir()
    (model_dir / "model.json").write_text("{}")
    (model_dir / "history.csv").write_text("epoch,loss\n0,1.0\n")
    result = _script("train_student.py", f"--corpus_dir={tiny_corpus}", f"--model_dir={model_dir}")
    assert result.returncode == 1
    assert "holds a finished model (model.json); pass --overwrite" in result.stderr
    assert (model_dir / "history.csv").read_text() == "epoch,loss\n0,1.0\n"


# -- item 5: targets checked early; item 8: no retracing in dumps --------------------------------


def test_derived_targets_refuse_ids_out_of_range_and_leave_nothing(tiny_corpus, tmp_path):
    from tfblend.targets import derive_targets

    _write_targets(tiny_corpus / "train", tmp_path / "targets", id_offset=10_000, k=2)
    shard = re.escape(str(tmp_path / "targets" / "targets-00000-of-"))
    with pytest.raises(DataError, match=f"{shard}\\d+\\.tfrecord: utterance .* ids outside"):
        derive_targets(str(tmp_path / "targets"), str(tmp_path / "k1"), 1)
    assert not (tmp_path / "k1").exists()


def test_the_dump_forward_pass_is_traced_once():
    from tfblend.models import get_model
    from tfblend.targets.dump import _teaching_function
    from tfblend.targets.sparsify import Sparsifier

    teacher = get_model("lstm", num_classes=7, num_layers=1, units=4)
    teacher({"features": np.zeros([1, 3, 5], np.float32), "mask": np.ones([1, 3], bool)})  # built,
    # as a loaded teacher is (creating variables inside a tf.function traces it twice)

    def scores(features, lengths):  # the call contract of tfblend.targets.teachers.TeacherMixture
        mask = tf.sequence_mask(lengths, tf.shape(features)[1])
        return teacher({"features": features, "mask": mask}, training=False)

    teach = _teaching_function(scores, Sparsifier("topk", 3, 0.0, 0), {"feature_dim": 5})
    for batch, frames in ((2, 11), (3, 40), (1, 7), (2, 11)):
        features = tf.random.normal([batch, frames, 5])
        ids, probs, mass = teach(features, tf.fill([batch], frames), tf.constant(0))
        assert ids.shape == (batch, frames, 3) and mass.shape == (batch, frames)
    assert teach.experimental_get_tracing_count() == 1
