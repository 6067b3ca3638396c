"""bf16 mixed precision: bf16 compute with float32 variables and logits; saved models load,
score and export in float32."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import run_script

from tfblend.models import DNNBaseline, LSTMTeacher, VGGStudent
from tfblend.models.layers import TimeConv2D
from tfblend.models.precision import as_float32
from tfblend.pipeline import edge_pad, eval_utterances
from tfblend.train.modeldir import load_model_dir

BF16 = "mixed_bfloat16"


#: bf16 keeps 8 significand bits: rounding a value to bf16 changes it by at most U_BF16 of it,
#: and two neighbouring bf16 values are 2 U_BF16 apart (one ulp) relative to their size.
U_BF16 = 2.0**-8


def _bf16(x):
    return tf.cast(tf.cast(x, tf.bfloat16), tf.float32)


def _layers(model):
    return [*model.body, *model.head, model.classifier]


def _roundings(model) -> int:
    """Roundings to bf16 on the path from the input to the logits of a mixed VGGStudent: the
    input; each convolution's and dense layer's kernel as read, its output and, with a bias, the
    bias and the sum; each normalisation's output; dropout's scaling in training. ReLU and
    max-pooling select or zero bf16 values: exact."""
    count = 1
    for layer in _layers(model):
        if isinstance(layer, TimeConv2D | keras.layers.Dense):
            count += 4 if getattr(layer, "use_bias", False) else 2
        elif isinstance(layer, keras.layers.Dropout):
            count += 1
        elif not isinstance(layer, keras.layers.ReLU | keras.layers.MaxPooling2D):
            count += 1  # a normalisation
    return count


@pytest.mark.parametrize("normalization", ["batch", "frame"])
def test_student_computes_in_bf16_with_float32_variables(normalization):
    """The mixed student against the float32 one with the same weights.

    Each of its R bf16 roundings (:func:`_roundings`) perturbs the value it rounds by a relative
    error of at most U_BF16. The normalisations bring every layer's activations back to unit
    scale, so a relative perturbation reaches the logits with a gain of about 1, and to first
    order the R of them add at most linearly: the RMS difference of the logits is at most
    R U_BF16 times their RMS (R = 18 for the tiny preset: 7.0%; measured 1.4-2.5 U_BF16). Each
    layer on its own is checked more tightly: its output is bf16, and a convolution's or bias-free
    dense layer's output is the float32 computation on the same bf16 input and bf16-rounded
    kernel rounded once to bf16, to within one bf16 ulp (the two sum the same products in float32
    in different orders, at most 144 of them: 144 x 2^-24 relative apart, so they round to the
    same bf16 value or to neighbours)."""
    x = np.random.default_rng(0).normal(size=(6, 41, 40)).astype(np.float32)
    keras.utils.set_random_seed(0)
    exact = VGGStudent(30, preset="tiny", normalization=normalization)
    mixed = VGGStudent(30, preset="tiny", normalization=normalization, dtype=BF16)
    for model in (exact, mixed):
        model.build((None, 41, 40))
    mixed.set_weights(exact.get_weights())
    assert {v.dtype for v in mixed.weights} == {"float32"}
    assert {layer.compute_dtype for layer in _layers(mixed)} == {"bfloat16"}
    bound = _roundings(mixed) * U_BF16
    assert _roundings(mixed) == 18  # input, 3 x (conv + norm), fc + norm + dropout, logits
    for training in (False, True):
        got, want = mixed(x, training=training), exact(x, training=training)
        assert got.dtype == tf.float32
        difference = np.sqrt(np.mean((got - want) ** 2) / np.mean(np.square(want)))
        assert 0 < difference <= bound, (difference / U_BF16, training)
    # Layer by layer, on the mixed model's own bf16 activations.
    y = tf.cast(mixed._image(tf.constant(x)), tf.bfloat16)
    for layer, twin in zip(mixed.body, exact.body, strict=True):
        out = layer(y, training=False)
        assert out.dtype == tf.bfloat16, layer.name
        if isinstance(layer, TimeConv2D):
            _check_one_rounding(out, twin, y)
        y = out
    y = tf.reshape(y, [-1, mixed._frame_units])
    for layer, twin in zip(mixed.head, exact.head, strict=True):
        out = layer(y, training=False)
        assert out.dtype == tf.bfloat16, layer.name
        if isinstance(layer, keras.layers.Dense) and not layer.use_bias:
            _check_one_rounding(out, twin, y)
        y = out
    assert mixed.classifier(y).dtype == tf.bfloat16
    exact.set_weights(mixed.get_weights())  # the moving statistics moved differently
    copy = as_float32(mixed)
    assert copy.dtype_policy.name == "float32" and copy.body[0].compute_dtype == "float32"
    np.testing.assert_allclose(copy(x), exact(x), atol=1e-6)
    assert DNNBaseline(30, dtype=BF16)(x).dtype == tf.float32
    assert LSTMTeacher(30, units=8, dtype=BF16)(x).dtype == tf.float32


def _check_one_rounding(out, twin, inputs):
    """``out`` (bf16) is within one bf16 ulp of ``twin`` (float32) run on ``inputs`` with its
    kernel rounded to bf16, its output rounded to bf16."""
    (kernel,) = twin.weights
    saved = kernel.numpy()
    kernel.assign(_bf16(saved))
    try:
        reference = _bf16(twin(tf.cast(inputs, tf.float32))).numpy()
    finally:
        kernel.assign(saved)
    error = np.abs(tf.cast(out, tf.float32).numpy() - reference)
    assert np.all(error <= 2 * U_BF16 * np.abs(reference)), (twin.name, error.max())


def test_bf16_training_runs_and_exports_float32(tiny_corpus, tmp_path):
    """A tiny student trained with train.precision=mixed_bfloat16: the loss falls, model.json
    records the precision, the model loads in float32 and its export's signatures take and
    return float32 and agree with it."""
    model_dir = tmp_path / "cnn"
    run_script(
        "train_student.py",
        f"--corpus_dir={tiny_corpus}",
        f"--model_dir={model_dir}",
        "--model=vgg",
        "--epochs=2",
        f"--params_override=model.vgg.preset=tiny,train.precision={BF16}",
    )
    info = json.loads((model_dir / "model.json").read_text())
    assert info["precision"] == BF16
    history = (model_dir / "history.csv").read_text().splitlines()
    header = history[0].split(",")
    losses = [float(row.split(",")[header.index("loss")]) for row in history[1:]]
    assert len(losses) == 2 and losses[1] < losses[0]
    model, _ = load_model_dir(model_dir)
    assert model.dtype_policy.name == "float32"

    run_script("export.py", f"--model_dir={model_dir}", f"--export_base={tmp_path}", "--name=x")
    loaded = tf.saved_model.load(str(tmp_path / "x" / "1"))
    for name, signature in loaded.signatures.items():
        (spec,) = signature.structured_input_signature[1].values()
        assert spec.dtype == tf.float32, name
        assert {out.dtype for out in signature.structured_outputs.values()} == {tf.float32}
    raw = next(iter(eval_utterances(tiny_corpus / "test", cmvn="none")))["features"]
    normalised = next(iter(eval_utterances(tiny_corpus / "test", cmvn_stats=tiny_corpus / "train")))
    served = loaded.signatures["utterance"](features=raw)["log_posteriors"]
    keras_says = tf.nn.log_softmax(model(edge_pad(normalised["features"], model.context)[None])[0])
    np.testing.assert_allclose(served, keras_says, atol=1e-3)
