"""Check an export: score one utterance with the SavedModel, loaded the way a server loads it.

Loads <export_dir> with tf.saved_model.load (no tfblend model code involved), sends one
utterance's raw log-mel features through the "utterance" signature, and prints the frame accuracy
against the alignment and the first frames' best senones. Use it to check an export before
pointing TF Serving at it.

Reads:  <export_dir> (export.py), <corpus_dir>/<split> (an utterance set with raw features).
Writes: nothing.

Example:
  python -m tfblend.steps.check_export --export_dir=savedmodels/tfblend_blended_cnn/1 \
      --corpus_dir=work/demo/corpus --split=test
"""

import itertools

import numpy as np
import tensorflow as tf
from absl import flags

from tfblend import cli
from tfblend.errors import DataError, assertion_text
from tfblend.export import read_export_metadata
from tfblend.records import iterate_utterances, read_manifest

cli.define_flags("corpus_dir", "split", split="test", required=("corpus_dir",))
flags.DEFINE_string("export_dir", None, "An export: <export_base>/<name>/<version>.")
flags.DEFINE_string("utt_id", None, "The utterance to score (default: the split's first).")
flags.mark_flag_as_required("export_dir")
FLAGS = flags.FLAGS


def main(_):
    metadata = read_export_metadata(FLAGS.export_dir)
    if metadata["kind"] != "window":
        raise DataError(
            f"{FLAGS.export_dir} is a {metadata['kind']} model; this check scores "
            "window models through their utterance signature"
        )
    split_dir = cli.split_dir(FLAGS.corpus_dir, FLAGS.split, "check the export on")
    feature_dim = read_manifest(split_dir)["feature_dim"]
    if feature_dim != metadata["feature_dim"]:
        raise DataError(
            f"{split_dir} has {feature_dim}-dim features, the export "
            f"{FLAGS.export_dir} takes {metadata['feature_dim']}"
        )
    utterances = iterate_utterances(split_dir)
    if FLAGS.utt_id:
        utterances = (u for u in utterances if u.utt_id == FLAGS.utt_id)
    utterance = next(utterances, None)
    if utterance is None:
        raise DataError(f"no utterance {FLAGS.utt_id} in {FLAGS.corpus_dir}/{FLAGS.split}")
    loaded = tf.saved_model.load(FLAGS.export_dir)
    try:
        outputs = loaded.signatures["utterance"](features=tf.constant(utterance.features))
    except tf.errors.InvalidArgumentError as error:  # the graph's input checks (a NaN frame)
        why = assertion_text(error.message) or error.message.strip().splitlines()[0]
        raise DataError(
            f"utterance {utterance.utt_id}: the export {FLAGS.export_dir} refused its "
            f"features: {why}"
        ) from None
    log_posteriors = outputs["log_posteriors"].numpy()
    predicted = log_posteriors.argmax(axis=1)
    line = f"{utterance.utt_id} ({utterance.speaker}): {len(predicted)} frames"
    if utterance.labels is not None:
        line += f", frame accuracy {np.mean(predicted == utterance.labels):.2%}"
    cli.say(line)
    for frame in itertools.islice(range(len(predicted)), 0, len(predicted), 50):
        label = "" if utterance.labels is None else f" (aligned {utterance.labels[frame]})"
        cli.say(
            f"  frame {frame}: senone {predicted[frame]}, "
            f"posterior {np.exp(log_posteriors[frame, predicted[frame]]):.3f}{label}"
        )


if __name__ == "__main__":
    cli.run(main)
