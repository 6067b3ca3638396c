"""Nothing hangs: degenerate splits and stalls end in one line, or train and say so.

The splits are cut from the tiny corpus fixture: a train split of 300 frames (less than one
batch of 512), a dev split of one 7-frame utterance, and empty splits (a manifest of no
utterances over one empty shard, as a set made by other tools may be). Every step runs as a
user runs it, in a fresh process; each test asserts the exit status, the one line, and what is
left on disk."""

import hashlib
import itertools
import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from conftest import ROOT, TINY_STUDENT_OVERRIDE

from tfblend import cli, records
from tfblend.errors import DataError
from tfblend.export import senone_log_priors
from tfblend.pipeline import DatasetOptions, frame_dataset
from tfblend.train import guards
from tfblend.train.fit import fit_resumable

SMALL_TRAIN_FRAMES = 300  # two utterances cut to 150 frames: fewer than one batch of 512
DNN = "model.dnn.hidden_units=[32]"


def _cut(source_dir, output_dir, count, max_frames):
    """The first ``count`` utterances of ``source_dir``, each cut to ``max_frames`` frames."""
    manifest = records.read_manifest(source_dir)
    utterances = itertools.islice(records.iterate_utterances(source_dir), count)
    return records.write_utterance_shards(
        output_dir,
        (
            records.Utterance(
                u.utt_id,
                u.speaker,
                u.features[:max_frames],
                u.labels[:max_frames],
                u.phones[:max_frames],
            )
            for u in utterances
        ),
        num_shards=1,
        num_classes=manifest["num_classes"],
        num_phones=manifest["num_phones"],
    )


def _empty(source_dir, output_dir):
    """A set with no utterances: ``source_dir``'s manifest over one empty shard."""
    manifest = records.read_manifest(source_dir)
    os.makedirs(output_dir)
    name = records.utterance_shard_name(0, 1)
    open(os.path.join(output_dir, name), "wb").close()
    manifest.update(
        num_utterances=0,
        num_frames=0,
        speakers=[],
        content_digest=records.content_digest([]),
        shards=[
            {
                "file": name,
                "num_utterances": 0,
                "num_frames": 0,
                "sha256": hashlib.sha256(b"").hexdigest(),
                "bytes": 0,
            }
        ],
    )
    records.write_manifest(output_dir, manifest)


@pytest.fixture(scope="module")
def small_corpus(tiny_corpus, tmp_path_factory):
    """train: 300 frames in 2 utterances; dev: one utterance of 7 frames; test: tiny's."""
    root = tmp_path_factory.mktemp("small_corpus")
    assert _cut(tiny_corpus / "train", root / "train", 2, 150)["num_frames"] == 300
    assert _cut(tiny_corpus / "dev", root / "dev", 1, 7)["num_frames"] == 7
    shutil.copytree(tiny_corpus / "test", root / "test")
    return root


@pytest.fixture(scope="module")
def empty_corpus(tiny_corpus, tmp_path_factory):
    """train, dev and test splits with no utterances."""
    root = tmp_path_factory.mktemp("empty_corpus")
    for split in ("train", "dev", "test"):
        _empty(tiny_corpus / split, root / split)
    return root


def _run(script, *args, env=None, timeout=120):
    """``scripts/<script> args``: (exit status, stdout, the stderr lines that are not TF logs,
    seconds)."""
    started = time.time()
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
    errors = [line for line in result.stderr.splitlines() if ": error: " in line]
    return result.returncode, result.stdout, errors, time.time() - started


@pytest.mark.parametrize(
    "model, override, unit",
    [
        ("vgg", TINY_STUDENT_OVERRIDE, "38 chunks of 8 frames"),  # chunks of 8 (student.yaml)
        ("dnn", DNN, f"{SMALL_TRAIN_FRAMES} frames"),  # windows
    ],
)
def test_a_train_split_smaller_than_one_batch_trains_on_one_smaller_batch(
    small_corpus, tmp_path, model, override, unit
):
    """One replica: each epoch is the one smaller batch, said in one line; the 7-frame dev
    utterance validates every epoch."""
    model_dir = tmp_path / model
    status, stdout, errors, _ = _run(
        "train_student.py", f"--corpus_dir={small_corpus}", f"--model_dir={model_dir}",
        f"--model={model}", "--epochs=2", "--batch_size=512", f"--params_override={override}",
    )  # fmt: skip
    assert status == 0, errors
    said = [line for line in stdout.splitlines() if "fewer than one batch" in line]
    assert len(said) == 1, stdout[-2000:]
    assert said[0].endswith(
        f"{small_corpus / 'train'}: the train split has {SMALL_TRAIN_FRAMES} frames, fewer than "
        f"one batch of 512 frames: each epoch is one smaller batch of {unit} (a smaller "
        "--batch_size gives more steps per epoch)"
    )
    assert sorted(os.listdir(model_dir)) == [
        ".lock", "experiment.yaml", "history.csv", "logs", "model.json", "model.keras",
    ]  # fmt: skip
    rows = (model_dir / "history.csv").read_text().splitlines()
    header, epochs = rows[0].split(","), [row.split(",") for row in rows[1:]]
    assert len(epochs) == 2  # two epochs of one step each
    for row in epochs:
        assert float(row[header.index("val_loss")]) > 0  # the dev utterance was scored
    assert json.loads((model_dir / "model.json").read_text())["epochs"] == 2


def test_several_replicas_refuse_a_split_smaller_than_one_global_batch(small_corpus, tmp_path):
    model_dir = tmp_path / "cnn"
    status, _, errors, _ = _run(
        "train_student.py", f"--corpus_dir={small_corpus}", f"--model_dir={model_dir}",
        "--model=vgg", "--epochs=1", f"--params_override={TINY_STUDENT_OVERRIDE}",
        "--strategy=mirrored", "--num_replicas=2",
    )  # fmt: skip
    assert status == 1
    assert errors == [
        f"train_student.py: error: {small_corpus / 'train'}: the train split has 300 frames "
        "(38 chunks of 8), fewer than one global batch of 512 frames over 2 replicas, so an "
        "epoch has no step; lower --batch_size to at most 304 frames (a multiple of 16: every "
        "replica gets as many chunks)"
    ]
    assert not model_dir.exists()


@pytest.mark.parametrize("split, purpose", [("train", "train on"), ("dev", "validate on")])
def test_an_empty_split_stops_training_in_one_line(
    tiny_corpus, empty_corpus, tmp_path, split, purpose
):
    corpus = tmp_path / "corpus"
    for name in ("train", "dev"):
        source = empty_corpus if name == split else tiny_corpus
        shutil.copytree(source / name, corpus / name)
    model_dir = tmp_path / "dnn"
    status, _, errors, _ = _run(
        "train_student.py", f"--corpus_dir={corpus}", f"--model_dir={model_dir}",
        "--model=dnn", "--epochs=1", f"--params_override={DNN}",
    )  # fmt: skip
    assert status == 1
    assert errors == [
        f"train_student.py: error: {corpus / split}: the split has 0 utterances and 0 frames, "
        f"nothing to {purpose}; give a split with utterances in it (make_corpus.py or "
        "import_kaldi.py write one)"
    ]
    assert not model_dir.exists()


@pytest.mark.parametrize(
    "script, args, purpose",
    [
        ("dump_targets.py", ["--teacher_dir=T", "--output_dir={out}"], "dump targets of"),
        ("evaluate.py", ["--model=cnn=M", "--output_dir={out}"], "evaluate"),
        ("score_utterances.py", ["--run={out}/scores.json=M"], "score"),
    ],
)
def test_steps_over_an_empty_split_stop_in_one_line(empty_corpus, tmp_path, script, args, purpose):
    """The split is checked before any model is loaded: the model dirs need not exist."""
    out = tmp_path / "out"
    args = [arg.format(out=out) for arg in args]
    status, _, errors, _ = _run(script, f"--corpus_dir={empty_corpus}", "--split=test", *args)
    assert status == 1
    assert errors == [
        f"{script}: error: {empty_corpus / 'test'}: the split has 0 utterances and 0 frames, "
        f"nothing to {purpose}; give a split with utterances in it (make_corpus.py or "
        "import_kaldi.py write one)"
    ]
    assert not out.exists()


def test_export_and_its_check_refuse_an_empty_split(empty_corpus):
    """Export counts the senone priors on the training split; check_export scores a split."""
    with pytest.raises(DataError, match=r"0 utterances and 0 frames, nothing to count the "):
        senone_log_priors(str(empty_corpus / "train"), 10)
    with pytest.raises(DataError, match=r"/test: the split has 0 .* nothing to check the export"):
        cli.split_dir(str(empty_corpus), "test", "check the export on")


def test_a_pipeline_that_yields_nothing_ends_within_the_limit(small_corpus):
    """The epochs of a split smaller than one batch, dropping the partial batch: an endless
    stream of empty epochs, the very pipeline that made training wait forever."""
    options = DatasetOptions(context=2, repeat=True)
    endless = frame_dataset(small_corpus / "train", options, batch_size=512)
    started = time.time()
    with pytest.raises(DataError) as raised:
        guards.first_batch_within(endless, "the training pipeline of X", seconds=2)
    assert time.time() - started < 20
    assert str(raised.value) == (
        "the training pipeline of X yielded no batch within 2 s (TFBLEND_WAIT_SECONDS); check "
        "the split and --batch_size, or raise TFBLEND_WAIT_SECONDS if reading really is that slow"
    )
    one_epoch = frame_dataset(small_corpus / "train", options.replace(repeat=False), batch_size=512)
    with pytest.raises(DataError, match="^the training pipeline of X ended without yielding"):
        guards.first_batch_within(one_epoch, "the training pipeline of X", seconds=30)
    with pytest.raises(DataError, match="an epoch of 0 steps cannot be trained"):
        fit_resumable(None, None, epochs=1, steps_per_epoch=0, resume_dir="-", variables_fn=list,
                      every_steps=1)  # fmt: skip


@pytest.mark.parametrize("value", ["0", "-3", "soon"])
def test_the_wait_limit_is_checked(monkeypatch, value):
    monkeypatch.setenv(guards.WAIT_ENV, value)
    with pytest.raises(DataError, match=f"^TFBLEND_WAIT_SECONDS='{value}': expected a positive"):
        guards.wait_seconds()


@pytest.mark.parametrize("index, absent", [(0, 1), (1, 0)])
def test_a_worker_whose_peer_never_starts_stops_within_the_limit(
    small_corpus, tmp_path, index, absent
):
    """A two-worker TF_CONFIG with only one of them started: worker 0 (the leader, which
    TensorFlow would keep waiting forever) and worker 1 both stop after the 3 s limit (the rest
    of the run's time is starting Python and TensorFlow; ``_run`` fails the test if a process
    outlives its timeout)."""
    sockets = [socket.socket() for _ in range(2)]
    for each in sockets:
        each.bind(("127.0.0.1", 0))
    addresses = [f"127.0.0.1:{each.getsockname()[1]}" for each in sockets]
    for each in sockets:
        each.close()
    config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
    model_dir = tmp_path / "dnn"
    status, _, errors, _ = _run(
        "train_student.py", f"--corpus_dir={small_corpus}", f"--model_dir={model_dir}",
        "--model=dnn", "--epochs=1", "--batch_size=64", f"--params_override={DNN}",
        "--strategy=multi_worker",
        env={"TF_CONFIG": json.dumps(config), guards.WAIT_ENV: "3"},
    )  # fmt: skip
    assert status == 1
    assert errors == [
        f"train_student.py: error: worker {index} of TF_CONFIG waited 3 s (TFBLEND_WAIT_SECONDS) "
        f"for the other workers of its cluster to join: worker {absent} ({addresses[absent]}) "
        "never started; start every task of TF_CONFIG's cluster (each with its own task "
        "index), or raise TFBLEND_WAIT_SECONDS"
    ]
    assert not model_dir.exists()  # the strategy is built before the run writes anything
