"""Training at scale: exact resume after SIGKILL, two workers equal one process, and the dense
(chunk) training path of students with a receptive field."""

import json
import os
import pathlib
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, TINY_STUDENT_OVERRIDE, run_script
from test_distiller import DenseStandIn

from tfblend import models
from tfblend.config import load_experiment
from tfblend.errors import DataError
from tfblend.evaluation import window_scorer
from tfblend.pipeline import DatasetOptions, chunk_dataset, eval_utterances
from tfblend.records import read_manifest
from tfblend.train import experiments
from tfblend.train.fit import KILL_AT_ENV, kill_point
from tfblend.train.modeldir import load_model_dir
from tfblend.train.strategies import make_strategy

# Small and BN-free where replicas must agree bit for bit: batch norm's batch statistics are
# per replica unless synchronised, so a BN model is not the same function on 1 and 2 replicas.
DNN = "model.dnn.hidden_units=[64],data.shuffle_buffer=4096,train.checkpoint_every_steps=5"


def _weights(model_dir):
    model, _ = load_model_dir(model_dir)
    return [np.asarray(w) for w in model.get_weights()]


def _max_difference(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b, strict=True))


def _student_args(corpus, model_dir, *extra):
    return [
        sys.executable,
        str(ROOT / "scripts" / "train_student.py"),
        f"--corpus_dir={corpus}",
        f"--model_dir={model_dir}",
        "--model=dnn",
        "--epochs=2",
        "--batch_size=64",
        f"--params_override={DNN}",
        *extra,
    ]


def test_two_identical_tiny_trainings_give_identical_weights(tiny_corpus, tiny_student, tmp_path):
    """Training is deterministic (seeded weights, shuffling and dropout; deterministic ops; a
    pure input order): the session's tiny CNN trained again with the same command gives the
    same weights bit for bit and the same history.csv, so a report's numbers are one run's."""
    again = tmp_path / "cnn"
    result = run_script(
        "train_student.py", f"--corpus_dir={tiny_corpus}", f"--model_dir={again}",
        "--model=vgg", "--epochs=1", f"--params_override={TINY_STUDENT_OVERRIDE}",
    )  # fmt: skip
    # Its stdout is not a terminal (as in a study's log): one line per epoch, no progress bar.
    epochs = [line for line in result.stdout.splitlines() if " - val_accuracy: " in line]
    assert len(epochs) == 1, result.stdout[-2000:]
    assert not any(c in result.stdout for c in ("━", "\r", "\x08")), result.stdout[-2000:]
    first, second = _weights(tiny_student), _weights(again)
    assert len(first) == len(second) > 0
    assert all(np.array_equal(a, b) for a, b in zip(first, second, strict=True))
    history = (again / "history.csv").read_bytes()
    assert history == pathlib.Path(tiny_student, "history.csv").read_bytes()
    assert sorted(os.listdir(again)) == [
        ".lock", "experiment.yaml", "history.csv", "logs", "model.json", "model.keras",
    ]  # fmt: skip


def test_killed_run_resumes_to_the_same_weights(tiny_corpus, tmp_path):
    straight = tmp_path / "straight"
    subprocess.run(
        _student_args(tiny_corpus, straight), check=True, capture_output=True, timeout=600
    )
    killed = tmp_path / "killed"
    # Killed mid-epoch in the second epoch, right after its first checkpoint (step 5).
    position = run_killed_at(_student_args(tiny_corpus, killed), killed, "1:5")
    assert (position["epoch"], position["step"]) == (1, 5)
    resumed = subprocess.run(
        _student_args(tiny_corpus, killed), capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # Same batches in the same order, same optimizer state and seeds: the same weights.
    assert _max_difference(_weights(straight), _weights(killed)) < 1e-6
    assert not (killed / "resume").exists()


def run_killed_at(args, model_dir, position: str, timeout: float = 600) -> dict:
    """Runs the training command ``args`` with tfblend.train.fit's crash drill, which SIGKILLs
    the process right after it has written the resume checkpoint at ``position`` ("EPOCH:STEP"):
    the same point of training on any machine, however fast. Returns the resume state left."""
    result = subprocess.run(
        args, env={**os.environ, KILL_AT_ENV: position}, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
    assert result.returncode == -signal.SIGKILL, (result.returncode, result.stderr[-3000:])
    assert not (model_dir / "model.json").exists(), "the run finished although killed"
    return json.loads((model_dir / "resume" / "state.json").read_text())


def test_crash_drill_refuses_positions_that_name_no_checkpoint(monkeypatch):
    """Checkpoints every 5 of 20 steps per epoch, 2 epochs: (1, 5) and (2, 0), the last epoch's
    end, are checkpoints; the others are refused before training rather than never reached."""
    monkeypatch.delenv(KILL_AT_ENV, raising=False)
    assert kill_point(5, 20, 2) is None
    for value, position in (("1:5", (1, 5)), ("2:0", (2, 0)), ("0:15", (0, 15))):
        monkeypatch.setenv(KILL_AT_ENV, value)
        assert kill_point(5, 20, 2) == position
    for value, message in (
        ("1:3", "no checkpoint is written at step 3"),
        ("1:20", "no checkpoint is written at step 20"),
        ("0:0", "before the first step"),
        ("2:5", "trains 2 epochs"),
        ("3:0", "trains 2 epochs"),
        ("1", "expected EPOCH:STEP"),
        ("-1:5", "expected EPOCH:STEP"),
    ):
        monkeypatch.setenv(KILL_AT_ENV, value)
        with pytest.raises(DataError, match=message):
            kill_point(5, 20, 2)


class HeldPorts:
    """Loopback ports held from before the workers start until they have finished.

    Each port stays bound by a socket of this process with SO_REUSEADDR that never listens:
    while it is bound the kernel hands the port to no other socket (neither ``bind`` to port 0
    nor an outgoing connection picks a bound port, and a plain ``bind`` to it fails), but a
    worker's gRPC server, which binds with SO_REUSEADDR, can still bind and listen on it (Linux
    lets SO_REUSEADDR sockets share a port as long as only one of them listens). Choosing ports
    and closing them before the launch (the usual "free port") leaves a window in which another
    process can take one; SO_REUSEPORT does not help, as TensorFlow's server turns it off.
    """

    def __init__(self, count: int):
        self.sockets = []
        for _ in range(count):
            holder = socket.socket()
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            holder.bind(("127.0.0.1", 0))
            self.sockets.append(holder)
        self.ports = [s.getsockname()[1] for s in self.sockets]
        for port in self.ports:  # the hold is real: nobody else can bind the port now
            with socket.socket() as intruder, pytest.raises(OSError):
                intruder.bind(("127.0.0.1", port))

    def __enter__(self):
        return self.ports

    def __exit__(self, *exc):
        for holder in self.sockets:
            holder.close()


@pytest.fixture(scope="module")
def one_process(tiny_corpus, tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("one") / "dnn"
    run_script(
        "train_student.py",
        f"--corpus_dir={tiny_corpus}",
        f"--model_dir={model_dir}",
        "--model=dnn",
        "--epochs=1",
        "--batch_size=64",
        f"--params_override={DNN},data.auto_shard=data",
    )
    return model_dir


def test_two_workers_equal_one_process(tiny_corpus, tmp_path, one_process):
    """Two MultiWorkerMirroredStrategy processes on 127.0.0.1 with the same global batch."""
    # The ports stay held by this process until both workers have finished (HeldPorts).
    with HeldPorts(2) as ports:
        cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
        model_dir = tmp_path / "dnn"
        processes = []
        for index in range(2):
            env = {
                **os.environ,
                "TF_CONFIG": json.dumps(
                    {"cluster": cluster, "task": {"type": "worker", "index": index}}
                ),
            }
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        str(ROOT / "scripts" / "train_student.py"),
                        f"--corpus_dir={tiny_corpus}",
                        f"--model_dir={model_dir}",
                        "--model=dnn",
                        "--epochs=1",
                        "--batch_size=64",
                        "--strategy=multi_worker",
                        f"--params_override={DNN},data.auto_shard=data",
                    ],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        try:
            errors = [p.communicate(timeout=400)[1] for p in processes]
        finally:
            for p in processes:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    assert [p.returncode for p in processes] == [0, 0], errors[0][-2000:] + errors[1][-2000:]
    # Only the chief (worker 0) wrote the model directory.
    assert (model_dir / "model.json").exists()
    assert _max_difference(_weights(one_process), _weights(model_dir)) < 1e-5


def test_vgg_trains_on_chunks(tiny_corpus, tmp_path, monkeypatch):
    """train_window_model with data.chunk_frames > 0: the receptive field is checked before
    training, every step is a chunk batch (as many steps as chunk_dataset has batches), and the
    result is a window model. A stand-in for the dense VGG (test_distiller.DenseStandIn) keeps
    this test independent of the CNN's architecture."""
    context, frames, batch = 2, 16, 64
    built, checked, seen = [], [], []

    def stand_in(name, num_classes, **kwargs):
        built.append(DenseStandIn(num_classes, context))
        original = built[-1].call

        def call(x, training=False):
            seen.append(x.shape[1])
            return original(x, training=training)

        built[-1].call = call
        return built[-1]

    fitted = []

    def fit(model, make_dataset, **kwargs):
        history = real_fit(model, make_dataset, **kwargs)
        fitted.append((kwargs["steps_per_epoch"], int(model.optimizer.iterations)))
        return history

    real_fit = experiments.fit_resumable
    monkeypatch.setattr(experiments, "fit_resumable", fit)
    monkeypatch.setattr(experiments, "get_model", stand_in)
    monkeypatch.setattr(
        models, "check_receptive_field", lambda m, c: checked.append((m, c)), raising=False
    )
    override = (
        f"data.context={context},data.chunk_frames={frames},data.batch_size={batch},"
        "train.epochs=1,train.checkpoint_every_steps=1000,optimizer.learning_rate=0.01"
    )
    experiment = load_experiment(params_override=override)
    info = experiments.train_window_model(
        str(tiny_corpus), str(tmp_path / "cnn"), experiment, make_strategy("default"), verbose=0
    )
    assert checked == [(built[0], context)]
    assert info["chunk_frames"] == frames and info["context"] == context
    assert set(seen) >= {frames + 2 * context}  # trained (and validated) on chunks
    steps = chunk_dataset(
        tiny_corpus / "train",
        DatasetOptions(context=context, chunk_frames=frames),
        batch_size=batch,
    ).cardinality()
    assert fitted == [(int(steps), int(steps))] and steps > 10
    history = (tmp_path / "cnn" / "history.csv").read_text().splitlines()
    assert len(history) == 2 and "val_accuracy" in history[0]
    # The saved model is a window model, scored densely on a real dev utterance.
    model, _ = load_model_dir(tmp_path / "cnn")
    assert model.receptive_field == 2 * context + 1
    utterance = next(iter(eval_utterances(tiny_corpus / "dev", cmvn_stats=tiny_corpus / "train")))
    log_probs = window_scorer(model, context)(utterance["features"])
    num_classes = read_manifest(tiny_corpus / "train")["num_classes"]
    assert log_probs.shape == (int(utterance["num_frames"]), num_classes)

    def mismatch(model, context):
        raise ValueError("model receptive field 5 frames != data context window")

    monkeypatch.setattr(models, "check_receptive_field", mismatch, raising=False)
    with pytest.raises(DataError, match="model.vgg.preset=small: model receptive field 5"):
        experiments.train_window_model(
            str(tiny_corpus), str(tmp_path / "bad"), experiment, make_strategy("default")
        )
    assert not (tmp_path / "bad").exists()
    bad = load_experiment(params_override=override.replace(f"batch_size={batch}", "batch_size=40"))
    with pytest.raises(DataError, match="batch_size 40 .* multiple of data.chunk_frames 16"):
        experiments.train_window_model(
            str(tiny_corpus), str(tmp_path / "bad"), bad, make_strategy("default"), verbose=0
        )
