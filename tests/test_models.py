"""tfblend.models: registry, shapes, serialisation, masks, FLOP counts, learning on real data."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfblend.models import (
    MODEL_NAMES,
    PRESETS,
    DNNBaseline,
    LSTMTeacher,
    VGGStudent,
    check_receptive_field,
    get_model,
    register_model,
)
from tfblend.models.flops import forward_flops, frame_flops, train_step_flops
from tfblend.models.layers import FusedBatchNormalization
from tfblend.pipeline import DatasetOptions, frame_dataset, utterance_dataset
from tfblend.records import read_manifest

W, D, C = 20, 40, 30
TINY = {
    "lstm": {"num_layers": 2, "units": 8, "projection": 6},
    "vgg": {"preset": "tiny"},
    "dnn": {"hidden_units": (32, 32)},
}


def windows(batch=4, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, 2 * W + 1, D)).astype(np.float32)


def test_registry():
    assert {"lstm", "vgg", "dnn"} <= set(MODEL_NAMES)
    assert isinstance(get_model("dnn", num_classes=C), DNNBaseline)
    with pytest.raises(ValueError, match="unknown model 'resnet'; known models: dnn, lstm, vgg"):
        get_model("resnet", num_classes=C)
    with pytest.raises(ValueError, match="already registered"):
        register_model("vgg")(DNNBaseline)

    @register_model("tiny_dnn_for_test")
    class TinyDNN(DNNBaseline):
        pass

    assert "tiny_dnn_for_test" in MODEL_NAMES  # a live view of the registry
    assert isinstance(get_model("tiny_dnn_for_test", num_classes=C), TinyDNN)


@pytest.mark.parametrize("name", ["lstm", "vgg", "dnn"])
def test_keras_round_trip(name, tmp_path):
    model = get_model(name, num_classes=C, **TINY[name])
    x = windows()
    expected = model(x, training=False)
    assert expected.shape == ((4, 2 * W + 1, C) if name == "lstm" else (4, C))
    clone = model.__class__.from_config(model.get_config())
    assert clone.get_config() == model.get_config()
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model)
    np.testing.assert_allclose(loaded(x, training=False), expected, atol=1e-5)


def test_lstm_mask_hides_padding():
    """With a mask, padded frames change nothing in the valid frames (both directions)."""
    model = LSTMTeacher(C, **TINY["lstm"])
    x = windows(batch=1)
    padded = np.concatenate([x, 100 * np.ones_like(x)], axis=1)
    mask = np.arange(padded.shape[1])[None] < x.shape[1]
    alone = model(x)
    masked = model({"features": padded, "mask": mask})
    np.testing.assert_allclose(masked[:, : x.shape[1]], alone, atol=1e-5)
    unmasked = model(padded)
    assert np.abs(unmasked[:, : x.shape[1]] - alone).max() > 1e-3


def test_vgg_channels_stack_feature_streams():
    """channels=3 reads [static | delta | delta2] as three image channels of width D/3."""
    model = VGGStudent(C, preset="tiny", channels=3)
    x = tf.constant(windows(batch=2, seed=1)[..., :39])
    assert model(x).shape == (2, C)
    assert model._image(x).shape == (2, 2 * W + 1, 13, 3)
    np.testing.assert_array_equal(model._image(x)[:, :, :, 1], x[:, :, 13:26])
    with pytest.raises(ValueError, match="not divisible by channels=3"):
        VGGStudent(C, preset="tiny", channels=3).build((None, 2 * W + 1, 40))


def test_presets():
    with pytest.raises(ValueError, match="unknown preset"):
        VGGStudent(C, preset="huge")
    assert set(PRESETS) == {"tiny", "small", "small21", "deep", "deep21", "paper"}
    tiny = VGGStudent(5126, preset="tiny")
    tiny.build((None, 41, 40))
    below_classifier = tiny.count_params() - tiny.classifier.count_params()
    assert 3_000 < below_classifier < 100_000
    for preset in PRESETS:  # the named presets match the default data.context = 20
        model = VGGStudent(5126, preset=preset)
        expected = (21, 10) if preset.endswith("21") else (41, 20)
        assert (model.receptive_field, model.context) == expected, preset
    for preset in ("small", "deep"):  # the 21-frame variants differ in their dilations only
        wide, narrow = PRESETS[preset], PRESETS[f"{preset}21"]
        assert {**wide, "dilations": None} == {**narrow, "dilations": None}
    deep = VGGStudent(5126, preset="deep")
    assert sum(len(block) for block in deep.conv_blocks) >= 10
    paper = VGGStudent(5126, preset="paper")
    weight_layers = sum(len(block) for block in paper.conv_blocks) + len(paper.dense_units) + 1
    assert weight_layers == 11
    assert "not known here" in VGGStudent.__doc__


def test_receptive_field_is_the_architecture_and_is_checked():
    model = VGGStudent(C, conv_blocks=((4, 4), (8,)), dilations=((1, 2), (3,)), pool_sizes=(2, 1))
    assert (model.receptive_field, model.context) == (13, 6)
    check_receptive_field(model, 6)
    message = (
        r"model receptive field 13 frames != data context window 2W\+1 = 21 \(W = 10\); "
        r"set data.context=6 or choose"
    )
    with pytest.raises(ValueError, match=message):
        check_receptive_field(model, 10)
    check_receptive_field(DNNBaseline(C), 10)  # takes the window it is built on
    check_receptive_field(LSTMTeacher(C), 10)  # whole utterances
    x = np.zeros((2, 12, D), np.float32)
    with pytest.raises(ValueError, match="12 frames, fewer than its receptive field of 13"):
        model(x)
    assert model(np.zeros((2, 13, D), np.float32)).shape == (2, C)
    assert model(np.zeros((2, 20, D), np.float32)).shape == (2, 8, C)
    with pytest.raises(ValueError, match="time is never pooled"):
        VGGStudent(C, conv_blocks=((4,),), pool_sizes=((1, 2),))
    with pytest.raises(ValueError, match="one frequency pool size per conv block"):
        VGGStudent(C, conv_blocks=((4,),), pool_sizes=(2, 2))
    with pytest.raises(ValueError, match="one entry per conv"):
        VGGStudent(C, conv_blocks=((4, 4),), dilations=((1,),), pool_sizes=(2,))
    with pytest.raises(ValueError, match="normalization must be one of"):
        VGGStudent(C, normalization="group")


@pytest.mark.parametrize("shape", [(64, 5, 6, 8), (32, 12)])
def test_fused_batch_norm_matches_keras(shape):
    x = tf.constant(np.random.default_rng(2).normal(1.0, 3.0, size=shape).astype(np.float32))
    reference, fused = keras.layers.BatchNormalization(), FusedBatchNormalization()
    reference.build(shape)
    fused.build(shape)
    start = [np.random.default_rng(3).uniform(0.5, 1.5, w.shape) for w in reference.weights]
    reference.set_weights(start)
    fused.set_weights(start)
    for training in (True, False):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            outputs = [layer(x, training=training) for layer in (reference, fused)]
            losses = [tf.reduce_sum(tf.sin(y)) for y in outputs]
        np.testing.assert_allclose(outputs[1], outputs[0], atol=1e-5)
        grads = [
            tape.gradient(loss, [x, *layer.trainable_variables])
            for loss, layer in zip(losses, (reference, fused), strict=True)
        ]
        for got, want in zip(grads[1], grads[0], strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
        for got, want in zip(fused.get_weights(), reference.get_weights(), strict=True):
            np.testing.assert_allclose(got, want, rtol=1e-5)  # moving statistics too


def test_flops_match_the_layer_arithmetic():
    lstm = LSTMTeacher(C, num_layers=2, units=8, projection=6)
    t = 7
    per_frame = forward_flops(lstm, (1, t, D), loop_trips=t) / t
    directions = 2
    layer0 = directions * 2 * 4 * 8 * (D + 8)
    layer1 = directions * 2 * 4 * 8 * (6 + 8)
    projections = 2 * (2 * 8) * 6 * 2
    assert per_frame == layer0 + layer1 + projections + 2 * 6 * C

    vgg = VGGStudent(C, conv_blocks=((4,), (8,)), pool_sizes=(2, 2), dense_units=(16,))
    # Time-valid: on a 5-frame window conv0 leaves 3 frames (of 40 bins), conv1 1 (of 20).
    conv0, conv1 = 2 * 9 * 3 * 40 * 1 * 4, 2 * 9 * 1 * 20 * 4 * 8
    dense = 2 * (10 * 8 * 16 + 16 * C)
    assert forward_flops(vgg, (1, 5, D)) == conv0 + conv1 + dense
    first_layer_input_grad = conv0
    assert train_step_flops(vgg, (2, 5, D)) == 2 * (
        3 * (conv0 + conv1 + dense) - first_layer_input_grad
    )
    # Dense: a chunk of L outputs computes L + 2 frames of conv0 and L of conv1, once each.
    L = 6
    conv0_chunk = 2 * 9 * (L + 2) * 40 * 4
    chunk = conv0_chunk + 2 * 9 * L * 20 * 4 * 8 + L * dense
    assert frame_flops(vgg, D, chunk=L) == {"window": conv0 + conv1 + dense, "dense": chunk / L}
    assert train_step_flops(vgg, (1, L + 4, D)) == 3 * chunk - conv0_chunk


def loss_falls(model, dataset, steps, passes=4):
    """Mean loss on `steps` fixed batches before and after `passes` passes of training on them.
    Batches are (x, y) or (x, y, sample_weight)."""
    batches = [(b[0], b[1], b[2] if len(b) == 3 else None) for b in dataset.take(steps)]
    model.compile(
        keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )

    def mean_loss():
        return np.mean([model.evaluate(x, y, sample_weight=w, verbose=0) for x, y, w in batches])

    before = mean_loss()
    for _ in range(passes):
        for x, y, w in batches:
            model.train_on_batch(x, y, sample_weight=w)
    return before, mean_loss()


@pytest.mark.parametrize("name", ["vgg", "dnn"])
def test_window_models_learn_on_the_tiny_corpus(name, tiny_corpus):
    train = tiny_corpus / "train"
    classes = read_manifest(train)["num_classes"]
    model = get_model(name, num_classes=classes, **TINY[name])
    dataset = frame_dataset(
        train, DatasetOptions(context=W, seed=0, shuffle_buffer=4096), batch_size=128
    )
    before, after = loss_falls(model, dataset, steps=6)
    assert after < before - 1.0, (before, after)


def test_lstm_teacher_learns_on_the_tiny_corpus(tiny_corpus):
    train = tiny_corpus / "train"
    classes = read_manifest(train)["num_classes"]
    model = LSTMTeacher(classes, num_layers=1, units=32)
    dataset = utterance_dataset(train, DatasetOptions(seed=0), batch_size=4)
    before, after = loss_falls(model, dataset, steps=3, passes=3)
    assert after < before - 1.0, (before, after)
