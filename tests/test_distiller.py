"""tfblend.distill.distiller: the blended loss and its metrics, hooks, online teachers, bad input,
saving, replica invariance (windows and chunks), chunk batches and their frame mask, and blending
on the tiny corpus with dumped targets."""

import json
import os
import subprocess
import sys
import textwrap

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from tfblend.distill.distiller import Distiller
from tfblend.distill.losses import (
    DenseSoftCrossEntropy,
    SampledSoftCrossEntropy,
    SparseSoftCrossEntropy,
)
from tfblend.errors import DataError
from tfblend.evaluation import sequence_scorer, window_scorer
from tfblend.models import DNNBaseline, LSTMTeacher, VGGStudent
from tfblend.pipeline import DatasetOptions, frame_dataset, splice, to_chunks
from tfblend.records import read_manifest
from tfblend.targets import dump_targets
from tfblend.train.modeldir import save_model_dir

W, D, C, K, B = 3, 16, 16, 4, 32
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_data(n=4 * B, seed=0):
    """Windows, labels and stored top-K targets of a teacher that knows the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, C, n).astype(np.int32)
    windows = rng.normal(size=(n, 2 * W + 1, D)).astype(np.float32)
    windows[:, W, :C] += 2.0 * np.eye(C, dtype=np.float32)[labels]  # learnable from the centre
    teacher_logits = rng.normal(size=(n, C)) + 4.0 * np.eye(C)[labels]
    p = np.exp(teacher_logits - teacher_logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    ids = np.argsort(-p, axis=-1)[:, :K].astype(np.int32)
    probs = np.take_along_axis(p, ids, -1).astype(np.float32)
    utt_ids = np.array([f"utt{i // 10:03d}".encode() for i in range(n)])
    return windows, labels, {"ids": ids, "probs": probs, "utt_id": utt_ids}


def dataset(data, batch=B):
    return tf.data.Dataset.from_tensor_slices(data).batch(batch)


def student(seed=0):
    keras.utils.set_random_seed(seed)
    model = DNNBaseline(C, hidden_units=(32,))
    model.build((None, 2 * W + 1, D))
    return model


def teacher(seed=1):
    keras.utils.set_random_seed(seed)
    model = LSTMTeacher(C, num_layers=1, units=8)
    model.build((None, None, D))
    return model


@keras.saving.register_keras_serializable(package="tfblend_tests")
class DenseStandIn(keras.Model):
    """A student that computes densely over time, following the VGG student's contract (a
    stand-in, so that these tests do not depend on the CNN): `context` valid-in-time Conv1D
    layers of width 3 and a per-frame classifier. `[B, T, D]` -> `[B, K]` for T = 2W+1 and
    `[B, T - 2W, K]` for T > 2W+1."""

    def __init__(self, num_classes, context, units=16, **kwargs):
        super().__init__(**kwargs)
        self.num_classes, self.context = num_classes, context
        self.receptive_field = 2 * context + 1
        self.convs = [
            keras.layers.Conv1D(units, 3, padding="valid", activation="relu")
            for _ in range(context)
        ]
        self.classifier = keras.layers.Dense(num_classes)

    def call(self, x, training=False):
        frames = x.shape[1]
        if frames is not None and frames < self.receptive_field:
            raise ValueError(f"{frames} frames < receptive field {self.receptive_field}")
        for conv in self.convs:
            x = conv(x)
        logits = self.classifier(x)
        return logits[:, 0] if frames == self.receptive_field else logits

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes, context=self.context, units=self.convs[0].filters
        )
        return config


def dense_student(seed=0, context=W):
    keras.utils.set_random_seed(seed)
    model = DenseStandIn(C, context)
    model(np.zeros((1, 2 * context + 1, D), np.float32))  # builds the layers
    return model


def make_chunks(lengths, chunk_frames, seed=0):
    """Utterances of `lengths` frames as chunk batches (tfblend.pipeline.to_chunks) and the same
    frames as windows (splice), with stored top-K targets: (chunks, windows)."""
    rng = np.random.default_rng(seed)
    chunk_parts, window_parts = [], []
    for t in lengths:
        features = rng.normal(size=(t, D)).astype(np.float32)
        labels = rng.integers(0, C, t).astype(np.int32)
        features[:, :C] += 2.0 * np.eye(C, dtype=np.float32)[labels]
        ids = np.stack([rng.permutation(C)[:K] for _ in range(t)]).astype(np.int32)
        ids[:, 0] = labels
        probs = np.sort(rng.dirichlet(np.ones(K), t), axis=1)[:, ::-1].astype(np.float32)
        soft = {"ids": ids, "probs": probs, "mass": np.full(t, 0.9, np.float32)}
        chunk_parts.append(to_chunks(features, labels, soft, context=W, chunk_frames=chunk_frames))
        window_parts.append((splice(features, W), labels, soft))

    def stack(parts):
        return tf.nest.map_structure(lambda *t: np.concatenate(t), *parts)

    return stack(chunk_parts), stack(window_parts)


def test_chunk_batch_is_the_window_batch_of_its_real_frames():
    """One SGD step and the metrics on a chunk batch equal those on one window batch of the same
    real frames; what the masked frames hold (here: invalid targets) changes nothing."""
    (chunks, labels, soft), windows = make_chunks([13, 11, 20, 5], chunk_frames=8)
    assert labels.shape == (2 + 2 + 3 + 1, 8) and (labels < 0).sum() == 64 - 49
    soft["probs"][labels < 0] = np.nan  # validation would stop on these if it saw them
    soft["ids"][labels < 0] = C + 7
    results = []
    for model, batch in ((dense_student(), (chunks, labels, soft)), (dense_student(), windows)):
        distiller = Distiller(model, alpha=0.3, temperature=2.0, target_k=K)
        distiller.compile(keras.optimizers.SGD(0.5))
        before = distiller.evaluate(dataset(batch, 64), verbose=0, return_dict=True)
        distiller.fit(dataset(batch, 64), epochs=1, verbose=0)
        results.append((before, [w.numpy() for w in model.weights]))
    (chunk_logs, chunk_weights), (window_logs, window_weights) = results
    for name, value in window_logs.items():
        assert chunk_logs[name] == pytest.approx(value, rel=1e-5, abs=1e-6), name
    initial = dense_student().weights
    assert len(chunk_weights) == len(window_weights) == len(initial)
    assert max(np.abs(a - b).max() for a, b in zip(chunk_weights, window_weights)) < 1e-6  # noqa: B905
    moved = max(np.abs(a - b.numpy()).max() for a, b in zip(chunk_weights, initial))  # noqa: B905
    assert moved > 1e-2


def test_chunks_with_an_online_sequence_teacher_use_its_central_frames():
    (chunks, labels, _), _ = make_chunks([13, 11], chunk_frames=8)
    frozen = teacher()
    distiller = Distiller(dense_student(), frozen, alpha=0.5)
    targets = distiller.soft_targets((tf.constant(chunks), tf.constant(labels)))
    np.testing.assert_allclose(targets["logits"], frozen(chunks)[:, W : W + 8], atol=1e-6)
    distiller.compile(keras.optimizers.Adam(1e-2))
    history = distiller.fit(dataset((chunks, labels), 2), epochs=3, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]


def test_dense_scoring_of_an_utterance_equals_its_windows():
    """evaluation.window_scorer scores a dense model in one pass over the edge-padded
    utterance: the same log-probabilities as on every spliced window (also for T = 1)."""
    model = dense_student()
    score = window_scorer(model, W)
    rng = np.random.default_rng(3)
    for frames in (1, 2, 37):
        features = rng.normal(size=(frames, D)).astype(np.float32)
        expected = tf.nn.log_softmax(model(splice(features, W))).numpy()
        np.testing.assert_allclose(score(features), expected, atol=1e-5)
    with pytest.raises(DataError, match="receptive field of 7 frames, the data's windows have 9"):
        window_scorer(model, W + 1)


def test_windowed_sequence_scoring_is_what_the_online_teacher_sees():
    """evaluation.sequence_scorer(model, W) scores a sequence model from each frame's window
    only: the Distiller's online teacher on the spliced windows, not the model on the whole
    utterance (a BLSTM reads past the window)."""
    frozen = teacher()
    distiller = Distiller(student(), frozen)
    rng = np.random.default_rng(4)
    for frames in (1, 37):
        features = rng.normal(size=(frames, D)).astype(np.float32)
        expected = tf.nn.log_softmax(distiller.teacher_logits(splice(features, W))).numpy()
        np.testing.assert_allclose(sequence_scorer(frozen, W)(features), expected, atol=1e-5)
    whole = sequence_scorer(frozen)(features)
    assert np.abs(whole - expected).max() > 1e-3
    with pytest.raises(DataError, match="window context must be >= 0"):
        sequence_scorer(frozen, -1)


def test_stored_targets_train_and_metrics_are_the_blend():
    windows, labels, soft = make_data()
    distiller = Distiller(student(), alpha=0.3, temperature=2.0)
    distiller.compile(keras.optimizers.Adam(1e-2))
    history = distiller.fit(dataset((windows, labels, soft)), epochs=4, verbose=0).history
    assert history["loss"][-1] < history["loss"][0] - 0.5
    assert history["teacher_agreement"][-1] > 0.5

    metrics = distiller.evaluate(dataset((windows, labels, soft)), verbose=0, return_dict=True)
    logits = distiller.student(windows).numpy().astype(np.float64)
    z = logits / 2.0
    log_s = z - z.max(-1, keepdims=True)
    log_s -= np.log(np.exp(log_s).sum(-1, keepdims=True))
    log_p1 = logits - logits.max(-1, keepdims=True)
    log_p1 -= np.log(np.exp(log_p1).sum(-1, keepdims=True))
    hard = -log_p1[np.arange(len(labels)), labels]
    q = soft["probs"].astype(np.float64) ** 0.5
    q /= q.sum(-1, keepdims=True)
    soft_ce = -(q * np.take_along_axis(log_s, soft["ids"], -1)).sum(-1)
    expected = {
        "hard_ce": hard.mean(),
        "soft_ce": soft_ce.mean(),
        "loss": (0.3 * hard + 0.7 * 4.0 * soft_ce).mean(),
        "accuracy": (logits.argmax(-1) == labels).mean(),
        "teacher_agreement": (logits.argmax(-1) == soft["ids"][:, 0]).mean(),
    }
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value, rel=1e-4), name


def test_subclass_changes_one_hook():
    """A subclass replaces the soft loss (here: squared error between the student's and the
    stored probabilities at the stored ids) without copying train_step."""

    class SquaredErrorDistiller(Distiller):
        def soft_loss(self, targets, logits):
            student = tf.gather(tf.nn.softmax(logits), targets["ids"], batch_dims=1)
            return tf.reduce_sum(tf.square(student - targets["probs"]), axis=-1)

    windows, labels, soft = make_data()
    distiller = SquaredErrorDistiller(student(), alpha=0.0)
    distiller.compile(keras.optimizers.Adam(1e-2))
    history = distiller.fit(dataset((windows, labels, soft)), epochs=5, verbose=0).history
    assert history["soft_ce"][-1] < 0.5 * history["soft_ce"][0]
    probs = tf.gather(tf.nn.softmax(distiller(windows)), soft["ids"], batch_dims=1)
    expected = np.mean(np.sum((probs - soft["probs"]) ** 2, -1))
    metrics = distiller.evaluate(dataset((windows, labels, soft)), verbose=0, return_dict=True)
    assert metrics["soft_ce"] == pytest.approx(expected, rel=1e-4)
    assert metrics["loss"] == pytest.approx(expected, rel=1e-4)  # alpha = 0: soft only


def test_online_sequence_teacher_runs_on_the_window_centre():
    windows, labels, _ = make_data()
    frozen = teacher()
    distiller = Distiller(student(), frozen, alpha=0.5, temperature=2.0)
    centre = distiller.teacher_logits(tf.constant(windows[:5]))
    np.testing.assert_allclose(centre, frozen(windows[:5])[:, W], atol=1e-6)
    assert isinstance(distiller.soft_loss_fn, DenseSoftCrossEntropy)
    teacher_before = [w.numpy() for w in frozen.weights]
    student_before = [w.numpy() for w in distiller.student.weights]
    distiller.compile(keras.optimizers.Adam(1e-2))
    history = distiller.fit(dataset((windows, labels)), epochs=3, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    assert not frozen.trainable
    for before, after in zip(teacher_before, frozen.weights, strict=True):
        np.testing.assert_array_equal(before, after)
    assert all(
        np.abs(b - a).max() > 0
        for b, a in zip(student_before, distiller.student.weights, strict=True)
    )


def test_teacher_with_other_classes_is_refused():
    with pytest.raises(DataError, match="teacher 'lstm_teacher.*' has 17 classes, student"):
        Distiller(student(), LSTMTeacher(C + 1, num_layers=1, units=4))
    # A teacher that does not announce num_classes is caught when the step is traced.
    inputs = keras.Input((2 * W + 1, D))
    other = keras.Model(inputs, keras.layers.Dense(C + 1)(keras.layers.Flatten()(inputs)))
    distiller = Distiller(student(), other)
    distiller.compile("sgd")
    windows, labels, _ = make_data()
    with pytest.raises(DataError, match="17 classes, the student has 16"):
        distiller.fit(dataset((windows, labels)), epochs=1, verbose=0)


def test_bad_targets_stop_at_the_first_bad_batch():
    windows, labels, soft = make_data()
    soft["ids"][2 * B + 5, 1] = C  # third batch, utterance utt006
    distiller = Distiller(student())
    distiller.compile(keras.optimizers.SGD(0.1))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"ids outside \[0, 16\)") as error:
        distiller.fit(dataset((windows, labels, soft)), epochs=1, verbose=0)
    assert "utt006" in str(error.value)
    # The student holds the update of the two good batches, not of the bad one.
    reference = Distiller(student())
    reference.compile(keras.optimizers.SGD(0.1))
    good = tf.nest.map_structure(lambda t: t[: 2 * B], (windows, labels, soft))
    reference.fit(dataset(good), epochs=1, verbose=0)
    for got, want in zip(distiller.student.weights, reference.student.weights, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)

    windows, labels, soft = make_data()
    soft["probs"][3, 0] = np.nan
    with pytest.raises(tf.errors.InvalidArgumentError, match="finite and >= 0"):
        distiller.fit(dataset((windows, labels, soft)), epochs=1, verbose=0)


def test_wrong_k_and_missing_targets_fail_before_training():
    windows, labels, soft = make_data()
    distiller = Distiller(student(), target_k=51)
    distiller.compile("sgd")
    with pytest.raises(DataError, match="k = 4 entries per frame, but the target manifest says"):
        distiller.fit(dataset((windows, labels, soft)), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="no soft targets"):
        distiller.fit(dataset((windows, labels)), epochs=1, verbose=0)
    assert int(distiller.optimizer.iterations) == 0
    with pytest.raises(ValueError, match="temperature 1"):
        Distiller(student(), soft_loss=SampledSoftCrossEntropy(), temperature=2.0)
    with pytest.raises(ValueError, match="takes no loss"):
        distiller.compile("sgd", loss="mse")


def test_evaluation_without_targets_scores_hard_labels():
    windows, labels, _ = make_data()
    distiller = Distiller(student())
    distiller.compile("sgd")
    metrics = distiller.evaluate(dataset((windows, labels)), verbose=0, return_dict=True)
    assert metrics["loss"] == pytest.approx(metrics["hard_ce"])
    assert metrics["soft_ce"] == 0.0


def h5_paths(path):
    names = []
    with h5py.File(path) as f:
        f.visit(names.append)
    return names


def test_checkpoints_hold_the_student_and_optimizer_only(tmp_path):
    windows, labels, _ = make_data()
    frozen = teacher()
    distiller = Distiller(student(), frozen)
    distiller.compile(keras.optimizers.Adam(1e-2))
    distiller.fit(dataset((windows, labels)), epochs=1, verbose=0)
    teacher_values = {float(np.sum(w.numpy())) for w in frozen.weights}
    assert len(distiller.weights) == len(distiller.student.weights)  # no teacher weights

    distiller.save_weights(tmp_path / "d.weights.h5")
    names = h5_paths(tmp_path / "d.weights.h5")
    assert not [n for n in names if "lstm" in n or "teacher" in n]
    assert any(n.startswith("optimizer/vars") for n in names)

    checkpoint = tf.train.Checkpoint(model=distiller).save(str(tmp_path / "ckpt"))
    saved = tf.train.list_variables(checkpoint)
    saved_sums = {
        float(np.sum(tf.train.load_variable(checkpoint, name))) for name, shape in saved if shape
    }
    assert not [n for n, _ in saved if "teacher" in n or "lstm" in n]
    assert not (teacher_values - {0.0}) & saved_sums

    distiller.save(tmp_path / "d.keras")
    loaded = keras.saving.load_model(tmp_path / "d.keras")
    assert loaded.teacher is None and int(loaded.optimizer.iterations) == 4
    np.testing.assert_allclose(loaded(windows[:8]), distiller(windows[:8]), atol=1e-6)
    resumed = Distiller(student(seed=5), frozen)
    resumed.compile(keras.optimizers.Adam(1e-2))
    resumed.build((None, 2 * W + 1, D))
    resumed.optimizer.build(resumed.trainable_variables)
    resumed.load_weights(tmp_path / "d.weights.h5")
    np.testing.assert_allclose(resumed(windows[:8]), distiller(windows[:8]), atol=1e-6)

    distiller.student.save(tmp_path / "student.keras")
    alone = keras.saving.load_model(tmp_path / "student.keras")
    assert isinstance(alone, DNNBaseline)
    np.testing.assert_allclose(alone(windows[:8]), distiller(windows[:8]), atol=1e-6)


REPLICA_SCRIPT = textwrap.dedent("""
    import json, sys
    import tfblend  # noqa: F401
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    import numpy as np
    from tfblend.distill.distiller import Distiller
    from tfblend.models import LSTMTeacher, VGGStudent
    sys.path.insert(0, sys.argv[1])
    from test_distiller import D as CHUNK_D, DenseStandIn, make_chunks

    W, D, C, K, B = 3, 12, 16, 4, 32
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(2 * B, 2 * W + 1, D)).astype(np.float32)
    labels = rng.integers(0, C, 2 * B).astype(np.int32)
    ids = np.stack([rng.permutation(C)[:K] for _ in range(2 * B)]).astype(np.int32)
    probs = rng.dirichlet(np.ones(K), 2 * B).astype(np.float32)

    # Chunk batches of 8 chunks (4 per replica): "chunks" has 24 real frames in each half of
    # every batch, "chunks_uneven" 32 and 18 (then only the weights must agree: Keras averages
    # the replicas' metric results, which is the global mean for equal counts only).
    equal, _ = make_chunks([13, 11] * 4, chunk_frames=8)
    uneven, _ = make_chunks([16, 16, 9, 9] * 2, chunk_frames=8)
    assert equal[1].shape[0] == uneven[1].shape[0] == 16

    def build(mode):
        if "chunks" in mode:
            student = DenseStandIn(C, W)
            student(np.zeros((1, 2 * W + 1, CHUNK_D), np.float32))
            student.build((None, 2 * W + 1, CHUNK_D))
            return student, teacher_for(mode, CHUNK_D)
        student = VGGStudent(C, conv_blocks=((4,), (8, 8)), pool_sizes=(2, 2),  # 7 frames
                             dense_units=(16,), normalization="batch", synchronized_bn=True)
        student.build((None, 2 * W + 1, D))
        return student, teacher_for(mode, D)

    def teacher_for(mode, dim):
        if not mode.startswith("online"):
            return None
        teacher = LSTMTeacher(C, num_layers=1, units=8)
        teacher.build((None, None, dim))
        return teacher

    def run(mode, devices, init):
        strategy = (tf.distribute.MirroredStrategy(devices) if devices
                    else tf.distribute.get_strategy())
        with strategy.scope():
            student, teacher = build(mode)
            student.set_weights(init[0])
            if teacher is not None:
                teacher.set_weights(init[1])
            distiller = Distiller(student, teacher, alpha=0.3, temperature=2.0)
            distiller.compile(keras.optimizers.SGD(0.5, momentum=0.5))
        if mode == "online":
            data, batch = (windows, labels), B
        elif mode == "stored":
            data, batch = (windows, labels, {"ids": ids, "probs": probs}), B
        else:
            data, batch = (uneven if mode == "chunks_uneven" else equal), 8
            data = data[:2] if mode == "online_chunks" else data
        logs = distiller.fit(tf.data.Dataset.from_tensor_slices(data).batch(batch), epochs=1,
                             verbose=0).history
        return [w.numpy() for w in student.weights], {k: v[-1] for k, v in logs.items()}

    out = {}
    for mode in sys.argv[2].split(","):
        student, teacher = build(mode)
        init = ([w.numpy() for w in student.weights],
                None if teacher is None else [w.numpy() for w in teacher.weights])
        one, logs1 = run(mode, None, init)
        two, logs2 = run(mode, ["/cpu:0", "/cpu:1"], init)
        out[mode] = {
            "weight_diff": max(float(np.abs(a - b).max()) for a, b in zip(one, two)),
            "moved": max(float(np.abs(a - b).max()) for a, b in zip(one, init[0])),
            "logs1": logs1, "logs2": logs2,
        }
    print("RESULT " + json.dumps(out))
""")


@pytest.mark.parametrize(
    "modes",
    [
        pytest.param("stored,online", id="windows"),
        # Behind `slow` to keep the default suite under 10 minutes: a chunk batch's step equals
        # the window batch of its real frames (test_chunk_batch_is_the_window_batch_of_its_real_
        # frames, default), and the windows case runs by default.
        pytest.param("chunks,chunks_uneven,online_chunks", id="chunks", marks=pytest.mark.slow),
    ],
)
def test_one_and_two_replicas_give_the_same_update(tmp_path, modes):
    """Two steps (SGD with momentum) on a 32-example global batch: the default strategy and
    MirroredStrategy over 2 logical CPUs (16 examples each) end with the same weights and
    report the same metrics, for stored and for online targets; and the same for two steps on
    chunk batches of 8 chunks (4 per replica, stored and online targets), also when the
    replicas hold different numbers of real frames (weights only). Window and chunk modes run
    in separate processes: a second MirroredStrategy in a process reuses the first one's
    collective instance keys, which fails when the models' variables differ in shape."""
    script = tmp_path / "replicas.py"
    script.write_text(REPLICA_SCRIPT)
    env = {**os.environ, "PYTHONPATH": REPO, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, str(script), os.path.dirname(os.path.abspath(__file__)), modes],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout + done.stderr
    results = json.loads(lines[0][len("RESULT ") :])
    assert sorted(results) == sorted(modes.split(","))
    for mode, result in results.items():
        assert result["moved"] > 1e-2, mode  # a wrong loss scale would show
        assert result["weight_diff"] < 1e-5, (mode, result)
        if mode == "chunks_uneven":
            continue
        for name, value in result["logs1"].items():
            assert result["logs2"][name] == pytest.approx(value, rel=1e-5, abs=1e-6), (mode, name)


def test_blending_on_the_tiny_corpus_with_dumped_targets(tiny_corpus, tmp_path):
    """The real flow: a teacher's top-k targets dumped to shards, joined by the pipeline, and
    a VGG student trained on them: the blended loss falls."""
    train = tiny_corpus / "train"
    manifest = read_manifest(train)
    classes = manifest["num_classes"]
    lstm = LSTMTeacher(classes, num_layers=1, units=16)
    lstm.build((None, None, manifest["feature_dim"]))
    save_model_dir(
        lstm,
        str(tmp_path / "teacher"),
        {
            "role": "teacher",
            "model": "lstm",
            "num_classes": classes,
            "feature_dim": manifest["feature_dim"],
            "cmvn": "global",
            "train_dir": str(train),
        },
    )
    targets = tmp_path / "targets"
    dump_targets(str(train), str(tmp_path / "teacher"), str(targets), k=5)
    data = frame_dataset(
        train,
        DatasetOptions(context=20, seed=0, shuffle_buffer=4096),
        batch_size=128,
        targets_dir=targets,
    )
    batches = list(data.take(6))
    vgg = VGGStudent(classes, preset="tiny")
    distiller = Distiller(
        vgg, alpha=0.5, temperature=2.0, target_k=5, soft_loss=SparseSoftCrossEntropy("renormalize")
    )
    distiller.compile(keras.optimizers.Adam(1e-2))
    replay = (
        tf.data.Dataset.from_tensor_slices(
            tuple(tf.nest.map_structure(lambda *t: tf.stack(t), *batches))
        )
        .unbatch()
        .batch(128)
    )
    before = distiller.evaluate(replay, verbose=0, return_dict=True)
    distiller.fit(replay, epochs=3, verbose=0)
    after = distiller.evaluate(replay, verbose=0, return_dict=True)
    assert after["loss"] < before["loss"] - 1.0, (before, after)
    assert after["soft_ce"] < before["soft_ce"]
