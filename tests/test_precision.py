"""bf16 mixed precision: bf16 compute with float32 variables and logits; saved models load,
score and export in float32."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import run_script

from tfblend.models import DNNBaseline, LSTMTeacher, VGGStudent
from tfblend.models.precision import as_float32
from tfblend.pipeline import edge_pad, eval_utterances
from tfblend.train.modeldir import load_model_dir

BF16 = "mixed_bfloat16"


@pytest.mark.parametrize("normalization", ["batch", "frame"])
def test_student_computes_in_bf16_with_float32_variables(normalization):
    x = np.random.default_rng(0).normal(size=(6, 41, 40)).astype(np.float32)
    keras.utils.set_random_seed(0)
    exact = VGGStudent(30, preset="tiny", normalization=normalization)
    mixed = VGGStudent(30, preset="tiny", normalization=normalization, dtype=BF16)
    for model in (exact, mixed):
        model.build((None, 41, 40))
    mixed.set_weights(exact.get_weights())
    assert {v.dtype for v in mixed.weights} == {"float32"}
    assert {layer.compute_dtype for layer in mixed.body} == {"bfloat16"}
    for training in (False, True):
        got, want = mixed(x, training=training), exact(x, training=training)
        assert got.dtype == tf.float32
        # bf16 keeps 8 bits of mantissa: close to the float32 model, not equal to it.
        assert 0 < float(tf.reduce_max(tf.abs(got - want))) < 0.1 * float(tf.reduce_max(want))
    exact.set_weights(mixed.get_weights())  # the moving statistics moved differently
    copy = as_float32(mixed)
    assert copy.dtype_policy.name == "float32" and copy.body[0].compute_dtype == "float32"
    np.testing.assert_allclose(copy(x), exact(x), atol=1e-6)
    assert DNNBaseline(30, dtype=BF16)(x).dtype == tf.float32
    assert LSTMTeacher(30, units=8, dtype=BF16)(x).dtype == tf.float32


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
