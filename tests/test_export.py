"""SavedModel exports: signatures, names, priors, and the README's request in a fresh process."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from conftest import ROOT, run_script

from tfblend.export import read_export_metadata, senone_log_priors, train_cmvn
from tfblend.pipeline import splice
from tfblend.records import iterate_utterances
from tfblend.train.modeldir import load_model_dir

README = ROOT / "savedmodels" / "README.md"
REQUEST = ROOT / "savedmodels" / "example_request.json"


@pytest.fixture(scope="module")
def export_dir(tiny_student, tmp_path_factory):
    base = tmp_path_factory.mktemp("savedmodels")
    run_script("export.py", f"--model_dir={tiny_student}", f"--export_base={base}", "--name=cnn")
    return str(base / "cnn" / "1")


def _keras_log_posteriors(model_dir, raw_windows):
    """What the Keras model itself says for raw (un-normalised) windows [B, 2W+1, D]."""
    model, info = load_model_dir(model_dir)
    cmvn = train_cmvn(info["train_dir"])
    normalised = (raw_windows - cmvn.mean()) / cmvn.std()
    return tf.nn.log_softmax(model(normalised.astype(np.float32), training=False)).numpy()


def test_layout_signatures_and_names(export_dir):
    assert sorted(os.listdir(os.path.dirname(export_dir))) == ["1"]
    loaded = tf.saved_model.load(export_dir)
    assert set(loaded.signatures) == {"serving_default", "utterance"}
    default = loaded.signatures["serving_default"]
    inputs = default.structured_input_signature[1]
    assert list(inputs) == ["features"]
    assert inputs["features"].shape.as_list() == [None, 41, 40]
    assert set(default.structured_outputs) == {"posteriors", "log_posteriors", "log_likelihoods"}
    utterance = loaded.signatures["utterance"].structured_input_signature[1]
    assert utterance["features"].shape.as_list() == [None, 40]


def test_readme_request_in_a_fresh_process_matches_keras(export_dir, tiny_student):
    """The README's request body through serving_default, loaded as a server would."""
    body = json.loads(REQUEST.read_text())
    code = (
        "import json, sys, numpy as np, tensorflow as tf\n"
        "body = json.load(open(sys.argv[2]))\n"
        "x = np.array([i['features'] for i in body['instances']], np.float32)\n"
        "out = tf.saved_model.load(sys.argv[1]).signatures['serving_default'](features=x)\n"
        "print(json.dumps({k: v.numpy().tolist() for k, v in out.items()}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, export_dir, str(REQUEST)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    served = json.loads(result.stdout.strip().splitlines()[-1])
    windows = np.array([i["features"] for i in body["instances"]], np.float32)
    expected = _keras_log_posteriors(tiny_student, windows)
    np.testing.assert_allclose(served["log_posteriors"], expected, atol=1e-4)
    np.testing.assert_allclose(np.sum(served["posteriors"], axis=1), 1.0, atol=1e-4)
    priors = np.array(read_export_metadata(export_dir)["log_priors"])
    np.testing.assert_allclose(np.array(served["log_likelihoods"]), expected - priors, atol=1e-3)


def test_readme_saved_model_cli_command(export_dir, tiny_student, tmp_path):
    """The README's saved_model_cli command, run as written against this export."""
    command = re.search(r"```sh\n(saved_model_cli run.*?)\n```", README.read_text(), re.S)[1]
    command = command.replace("savedmodels/tfblend_blended_cnn/1", export_dir)
    command = command.replace("/tmp/tfblend_outputs", str(tmp_path))
    command = command.replace("python -c", f"{sys.executable} -c")
    command = command.replace("savedmodels/example_request.json", str(REQUEST))
    bin_dir = os.path.dirname(sys.executable)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    subprocess.run(["bash", "-c", command], check=True, capture_output=True, timeout=300, env=env)
    body = json.loads(REQUEST.read_text())
    windows = np.array([i["features"] for i in body["instances"]], np.float32)
    np.testing.assert_allclose(
        np.load(tmp_path / "log_posteriors.npy"),
        _keras_log_posteriors(tiny_student, windows),
        atol=1e-4,
    )


def test_utterance_signature_is_one_dense_pass_equal_to_windows(export_dir, tiny_corpus):
    """The dense `utterance` signature (edge-padded, one pass) gives every frame of a real
    utterance the same three outputs as serving_default on its spliced windows."""
    loaded = tf.saved_model.load(export_dir)
    utterance = next(iter(iterate_utterances(tiny_corpus / "test")))
    whole = loaded.signatures["utterance"](features=tf.constant(utterance.features))
    windows = splice(tf.constant(utterance.features), 20)
    framed = loaded.signatures["serving_default"](features=windows)
    for name in ("posteriors", "log_posteriors", "log_likelihoods"):
        assert whole[name].shape == (len(utterance.features), 5126)
        np.testing.assert_allclose(whole[name], framed[name], atol=1e-4, err_msg=name)
    assert read_export_metadata(export_dir)["context"] == 20


def test_signatures_check_their_inputs(export_dir):
    """A loaded signature ignores its declared shape at run time; the graph's asserts do not."""
    signatures = tf.saved_model.load(export_dir).signatures
    default, utterance = signatures["serving_default"], signatures["utterance"]
    bad = {
        "serving_default: input features must be float32 \\[batch, 41, 40\\]": [
            (default, np.zeros((2, 40, 40), np.float32)),  # window too narrow
            (default, np.zeros((2, 41, 39), np.float32)),  # wrong feature dim
        ],
        "utterance: input features must be float32 \\[time, 40\\]": [
            (utterance, np.zeros((30, 39), np.float32)),
        ],
        "expected to be a float tensor but is a double tensor": [
            (default, np.zeros((2, 41, 40), np.float64)),
            (utterance, np.zeros((30, 40), np.float64)),
        ],
    }
    for message, calls in bad.items():
        for signature, features in calls:
            with pytest.raises(tf.errors.InvalidArgumentError, match=message):
                signature(features=tf.constant(features))
    # Zero windows and an empty utterance are well defined: empty outputs.
    for signature, shape in ((default, (0, 41, 40)), (utterance, (0, 40))):
        out = signature(features=tf.zeros(shape))
        assert {k: tuple(v.shape) for k, v in out.items()} == dict.fromkeys(out, (0, 5126))


def test_signatures_refuse_nan_and_inf_naming_the_frame(export_dir):
    """A NaN or Inf frame would silently change the 2W outputs around it: every signature
    refuses it, naming the signature and the first bad frame (the README quotes the message)."""
    signatures = tf.saved_model.load(export_dir).signatures
    utterance = np.zeros((50, 40), np.float32)
    for value, text in ((np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")):
        bad = utterance.copy()
        bad[17, 3] = value
        bad[20, 0] = np.nan  # only the first bad frame is named
        expected = f"utterance: input features must be finite: frame 17 (feature 3) is {text}"
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(expected)):
            signatures["utterance"](features=tf.constant(bad))
        windows = np.stack([bad[i : i + 41] for i in range(5)])  # first bad: window 0, frame 17
        expected = (f"serving_default: input features must be finite: window 0, frame 17 "
                    f"(feature 3) is {text}")  # fmt: skip
        with pytest.raises(tf.errors.InvalidArgumentError, match=re.escape(expected)):
            signatures["serving_default"](features=tf.constant(windows))
    assert read_export_metadata(export_dir)["finite_input_check"] is True
    documented = "utterance: input features must be finite: frame 17 (feature 3) is nan"
    assert documented in README.read_text()


def test_priors_are_counted_on_training_alignments(export_dir, tiny_corpus):
    priors = np.array(read_export_metadata(export_dir)["log_priors"])
    np.testing.assert_allclose(priors, senone_log_priors(tiny_corpus / "train", 5126), atol=1e-6)
    counts = np.zeros(5126)
    for utterance in iterate_utterances(tiny_corpus / "train"):
        counts += np.bincount(utterance.labels, minlength=5126)
    most = counts.argmax()
    assert priors[most] == priors.max()
    assert np.isclose(np.exp(priors).sum(), 1.0)


def test_input_names_do_not_depend_on_build_history(tiny_student, tmp_path):
    for _ in range(2):  # building models (and layers) in the same process shifts Keras names
        load_model_dir(tiny_student)
    run_script(
        "export.py", f"--model_dir={tiny_student}", f"--export_base={tmp_path}", "--name=again"
    )
    loaded = tf.saved_model.load(str(tmp_path / "again" / "1"))
    assert list(loaded.signatures["serving_default"].structured_input_signature[1]) == ["features"]


def test_sequence_export_takes_features_and_lengths(tiny_teacher, tmp_path, tiny_corpus):
    run_script(
        "export.py", f"--model_dir={tiny_teacher}", f"--export_base={tmp_path}", "--name=teacher"
    )
    loaded = tf.saved_model.load(str(tmp_path / "teacher" / "1"))
    signature = loaded.signatures["serving_default"]
    assert sorted(signature.structured_input_signature[1]) == ["features", "lengths"]
    first, second = list(iterate_utterances(tiny_corpus / "test"))[:2]
    length = max(len(first.features), len(second.features))
    batch = np.zeros([2, length, 40], np.float32)
    batch[0, : len(first.features)] = first.features
    batch[1, : len(second.features)] = second.features
    lengths = np.array([len(first.features), len(second.features)], np.int32)
    together = signature(features=batch, lengths=lengths)["log_posteriors"].numpy()
    alone = signature(features=first.features[None], lengths=lengths[:1])["log_posteriors"]
    # Padding must not leak into the real frames (the mask reaches the LSTM).
    np.testing.assert_allclose(together[0, : len(first.features)], alone[0].numpy(), atol=1e-4)
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"serving_default: input features must be float32 \[batch, time, 40\]",
    ):
        signature(features=tf.constant(batch[..., :39]), lengths=tf.constant(lengths))
    batch[1, 3, 2] = np.inf
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"serving_default: input features must be finite: utterance 1, frame 3 \(feature 2",
    ):
        signature(features=tf.constant(batch), lengths=tf.constant(lengths))
