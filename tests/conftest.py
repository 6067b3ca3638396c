"""Shared fixtures: the tiny synthetic corpus and the models trained on it, built once per test
session (once for all the workers of ``pytest -n``, which ``make test`` runs with)."""

import fcntl
import os
import pathlib

import pytest

import tfblend  # noqa: F401  (quiets TensorFlow before anything imports it)


def built_once(tmp_path_factory, name: str, build) -> pathlib.Path:
    """``build(directory)`` run once per session, its directory shared by every worker.

    Without pytest-xdist workers, a fresh temporary directory. Under ``pytest -n N`` the first
    worker to ask builds it in the session's common temporary root while holding a lock; the
    others wait for it and reuse it (a ``.built`` mark says it is complete)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        directory = tmp_path_factory.mktemp(name)
        build(directory)
        return directory
    directory = tmp_path_factory.getbasetemp().parent / name
    with open(f"{directory}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (directory / ".built").exists():
            directory.mkdir(exist_ok=True)
            build(directory)
            (directory / ".built").touch()
    return directory


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory) -> pathlib.Path:
    """A directory with ``train/``, ``dev/`` and ``test/`` utterance sets: the tiny synthetic
    corpus (seed 0; about 33 utterances, 6 + 2 + 2 voices, 40 log-mel features, senone labels
    and phone labels), built once per session in a few seconds. Read-only: copy it to modify."""
    from tfblend.corpus import build

    return built_once(
        tmp_path_factory, "tiny_corpus", lambda root: build.build_corpus(root, size="tiny", seed=0)
    )


ROOT = pathlib.Path(__file__).resolve().parent.parent


def run_script(name: str, *args: str, check: bool = True, timeout: float = 600):
    """Runs ``scripts/<name>`` in a fresh Python process; returns the CompletedProcess.

    A fresh process is how users run the scripts, and it keeps each run's TensorFlow state
    (op determinism, logical devices, global seeds) out of the test process.
    """
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{name} {' '.join(args)} failed:\n{result.stderr[-3000:]}")
    return result


@pytest.fixture(scope="session")
def tiny_teacher(tiny_corpus, tmp_path_factory) -> str:
    """A small BLSTM teacher trained for one epoch on the tiny corpus (a model directory)."""
    root = built_once(
        tmp_path_factory, "tiny_teacher", lambda root: run_script(
            "train_teacher.py", f"--corpus_dir={tiny_corpus}", f"--model_dir={root}/teacher",
            "--epochs=1", "--params_override=model.lstm.units=16,data.batch_size=8",
        ),
    )  # fmt: skip
    return str(root / "teacher")


#: The session's tiny student's settings (tests that train it again use them too).
TINY_STUDENT_OVERRIDE = "model.vgg.preset=tiny,model.vgg.normalization=frame"


@pytest.fixture(scope="session")
def tiny_student(tiny_corpus, tmp_path_factory) -> str:
    """The tiny VGG student trained one epoch on hard labels (a model directory).

    Per-frame normalisation: one epoch of the tiny corpus is about 20 steps, after which the
    default batch norm's moving statistics (momentum 0.99) still hold mostly their initial
    values, so its inference outputs would be nearly uniform and the tests that need a
    student distinct from the teacher (mixtures, exports) would have nothing to compare."""
    root = built_once(
        tmp_path_factory, "tiny_student", lambda root: run_script(
            "train_student.py", f"--corpus_dir={tiny_corpus}", f"--model_dir={root}/cnn",
            "--model=vgg", "--epochs=1", f"--params_override={TINY_STUDENT_OVERRIDE}",
        ),
    )  # fmt: skip
    return str(root / "cnn")


def read_target_records(directory) -> tuple[dict, dict]:
    """A target set's manifest and its records, utt_id -> {field: numpy array}."""
    import os

    import tensorflow as tf

    from tfblend.records import read_manifest, target_parser

    manifest = read_manifest(directory, expected_format="tfblend.targets")
    parse = target_parser(manifest)
    out = {}
    for shard in manifest["shards"]:
        for record in tf.data.TFRecordDataset(os.path.join(directory, shard["file"])).map(parse):
            out[record["utt_id"].numpy().decode()] = {k: v.numpy() for k, v in record.items()}
    return manifest, out
