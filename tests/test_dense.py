"""The time-valid VGG student: dense chunks and context windows compute the same function."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfblend.models import VGGStudent
from tfblend.models.layers import FrameNormalization
from tfblend.pipeline import eval_utterances, splice
from tfblend.records import read_manifest

W = 20  # the presets' (and data.context's default) half-window


def utterances(corpus, count):
    """The first `count` test utterances' normalised features, float32 [T, D] each."""
    data = eval_utterances(corpus / "test").take(count)
    return [u["features"].numpy() for u in data]


def dense_and_windows(model, features, training):
    """(logits of one dense pass over the edge-padded utterance [T, K], of its windows [T, K])."""
    padded = np.pad(features, ((W, W), (0, 0)), mode="edge")  # as splice repeats edge frames
    dense = model(padded[None], training=training)[0].numpy()
    windows = model(splice(tf.constant(features), W), training=training).numpy()
    return dense, windows


@pytest.mark.parametrize("normalization", ["batch", "frame"])
@pytest.mark.parametrize("preset", ["tiny", "deep"])
def test_dense_pass_equals_windows_on_real_utterances(preset, normalization, tiny_corpus):
    """Every frame of real utterances, 41-frame windows: one dense pass == its context windows,
    within 1e-4 and with the same argmax, in inference mode with either normalisation (what the
    export's two signatures rely on), and in training mode too with per-frame normalisation (no
    dropout)."""
    classes = read_manifest(tiny_corpus / "train")["num_classes"]
    keras.utils.set_random_seed(0)
    model = VGGStudent(classes, preset=preset, normalization=normalization)
    if normalization == "batch":  # inference uses moving statistics: make them non-trivial
        model.build((None, 2 * W + 1, read_manifest(tiny_corpus / "train")["feature_dim"]))
        rng = np.random.default_rng(1)
        for variable in model.non_trainable_weights:
            shape = variable.shape
            if variable.name == "moving_mean":
                variable.assign(rng.normal(0.0, 0.5, shape))
            elif variable.name == "moving_variance":
                variable.assign(rng.uniform(0.5, 2.0, shape))
    modes = (False, True) if normalization == "frame" else (False,)
    for features in utterances(tiny_corpus, 2):
        for training in modes:
            dense, windows = dense_and_windows(model, features, training)
            assert dense.shape == windows.shape == (len(features), classes)
            assert np.abs(dense - windows).max() <= 1e-4, (preset, training)
            np.testing.assert_array_equal(dense.argmax(-1), windows.argmax(-1))
            assert dense.std() > 1e-3  # a real function of the input, not a constant


def test_gradients_agree_between_the_paths(tiny_corpus):
    """Training on a chunk and on its windows is the same update (same loss, same gradients)."""
    classes = read_manifest(tiny_corpus / "train")["num_classes"]
    keras.utils.set_random_seed(1)
    model = VGGStudent(classes, preset="tiny", normalization="frame")
    features = utterances(tiny_corpus, 1)[0][:60]
    labels = np.random.default_rng(0).integers(0, classes, len(features))
    padded = np.pad(features, ((W, W), (0, 0)), mode="edge")[None]
    windows = splice(tf.constant(features), W)
    grads = []
    for x, y in ((padded, labels[None]), (windows, labels)):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            )
        grads.append(tape.gradient(loss, model.trainable_variables))
    for a, b in zip(*grads, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5 * max(1.0, float(np.abs(b).max())))


def test_batch_norm_agrees_in_inference_mode_only(tiny_corpus):
    """Why training on chunks and on windows differs with the default batch norm: batch
    statistics over a window batch repeat each frame's activations up to 2W+1 times, so in
    training mode the two paths differ."""
    classes = read_manifest(tiny_corpus / "train")["num_classes"]
    keras.utils.set_random_seed(2)
    model = VGGStudent(classes, preset="tiny", normalization="batch")
    features = utterances(tiny_corpus, 1)[0]
    dense, windows = dense_and_windows(model, features, training=False)
    assert np.abs(dense - windows).max() <= 1e-4
    dense, windows = dense_and_windows(model, features, training=True)
    assert np.abs(dense - windows).max() > 1e-2


def test_frame_normalization_is_per_frame():
    """Changing one frame changes no other frame's output; each frame is normalised."""
    layer = FrameNormalization(axis=2)
    x = np.random.default_rng(3).normal(2.0, 3.0, size=(2, 5, 6, 4)).astype(np.float32)
    y = layer(x).numpy()
    np.testing.assert_allclose(y.mean(axis=(2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(y.std(axis=(2, 3)), 1.0, atol=1e-3)
    changed = x.copy()
    changed[1, 3] = 100.0
    z = layer(changed).numpy()
    np.testing.assert_array_equal(np.delete(z, 3, axis=1)[1], np.delete(y, 3, axis=1)[1])
    np.testing.assert_array_equal(z[0], y[0])
    clone = FrameNormalization.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()


def test_dense_model_saves_and_loads(tmp_path):
    model = VGGStudent(30, preset="tiny", dilations=((1, 2), (7,)), dropout=0.1)
    x = np.random.default_rng(4).normal(size=(2, 40, 40)).astype(np.float32)
    expected = model(x).numpy()
    assert expected.shape == (2, 40 - 21 + 1, 30)
    assert VGGStudent.from_config(model.get_config()).get_config() == model.get_config()
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert loaded.receptive_field == 21 and loaded.dilations == ((1, 2), (7,))
    np.testing.assert_allclose(loaded(x), expected, atol=1e-5)
