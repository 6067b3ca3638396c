"""tfblend.distiller: the blended loss and its metrics, hooks, online teachers, bad input,
saving, replica invariance, and blending on the tiny corpus with dumped targets."""

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

from tfblend.distiller import Distiller
from tfblend.errors import DataError
from tfblend.losses import DenseSoftCrossEntropy, SampledSoftCrossEntropy, SparseSoftCrossEntropy
from tfblend.modeldir import save_model_dir
from tfblend.models import DNNBaseline, LSTMTeacher, VGGStudent
from tfblend.pipeline import frame_dataset
from tfblend.records import read_manifest
from tfblend.targets import dump_targets

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
    from tfblend.distiller import Distiller
    from tfblend.models import LSTMTeacher, VGGStudent

    W, D, C, K, B = 3, 12, 16, 4, 32
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(2 * B, 2 * W + 1, D)).astype(np.float32)
    labels = rng.integers(0, C, 2 * B).astype(np.int32)
    ids = np.stack([rng.permutation(C)[:K] for _ in range(2 * B)]).astype(np.int32)
    probs = rng.dirichlet(np.ones(K), 2 * B).astype(np.float32)

    def build(mode):
        student = VGGStudent(C, conv_blocks=((4,), (8, 8)), pool_sizes=(2, 2),  # 7 frames
                             dense_units=(16,), normalization="batch", synchronized_bn=True)
        student.build((None, 2 * W + 1, D))
        teacher = None
        if mode == "online":
            teacher = LSTMTeacher(C, num_layers=1, units=8)
            teacher.build((None, None, D))
        return student, teacher

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
        data = (windows, labels) if mode == "online" else (
            windows, labels, {"ids": ids, "probs": probs})
        logs = distiller.fit(tf.data.Dataset.from_tensor_slices(data).batch(B), epochs=1,
                             verbose=0).history
        return [w.numpy() for w in student.weights], {k: v[-1] for k, v in logs.items()}

    out = {}
    for mode in ("stored", "online"):
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


def test_one_and_two_replicas_give_the_same_update(tmp_path):
    """Two steps (SGD with momentum) on a 32-example global batch: the default strategy and
    MirroredStrategy over 2 logical CPUs (16 examples each) end with the same weights and
    report the same metrics, for stored and for online targets."""
    script = tmp_path / "replicas.py"
    script.write_text(REPLICA_SCRIPT)
    env = {**os.environ, "PYTHONPATH": REPO, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stdout + done.stderr
    for mode, result in json.loads(lines[0][len("RESULT ") :]).items():
        assert result["moved"] > 1e-2, mode  # a wrong loss scale would show
        assert result["weight_diff"] < 1e-5, (mode, result)
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
        train, context=10, batch_size=128, targets_dir=targets, seed=0, shuffle_buffer=4096
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
