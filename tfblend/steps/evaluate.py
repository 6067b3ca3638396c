"""Evaluate trained models (and their ensembles) frame by frame on a labelled split.

Metrics per model: frame accuracy (all frames and speech frames only), top-5 accuracy,
cross-entropy, senone-to-phone accuracy (the predicted senone's base phone, through the acoustic
model's senone -> phone map), and accuracy per voice. Several model directories under one name
are seeds of one setting: the table shows their mean and spread, and an ensemble pairs its members
seed by seed.

Reads:  <corpus_dir>/<split> (default test: the held-out voices), <corpus_dir>/train (CMVN
        statistics, the senone -> phone map), model directories.
Writes: <output_dir>/results.json, results.md, training_curves.png (with --wer_json, a test WER
        column and a "Word error rate" section from the decode step's wer.json).

Example:
  python -m tfblend.steps.evaluate --corpus_dir=work/demo/corpus --output_dir=work/demo/report \
      --model=teacher=work/demo/teacher --model=cnn=work/demo/cnn \
      --model=blend=work/demo/blend --ensemble=ensemble=teacher+cnn
"""

import os

from absl import flags

from tfblend import cli
from tfblend.errors import DataError
from tfblend.evaluation import evaluate_models
from tfblend.evaluation.report import write_report

cli.define_flags(
    "corpus_dir", "split", "output_dir", split="test", required=("corpus_dir", "output_dir")
)
flags.DEFINE_multi_string("model", [], "NAME=DIR[,DIR...]: a model (several dirs: seeds).")
flags.DEFINE_multi_string("ensemble", [], "NAME=A+B: average the posteriors of models A and B.")
flags.DEFINE_string("focus", None, "A model to compare with every other (ties within seed spread).")
flags.DEFINE_string(
    "wer_json", None, "decode.py's <output_dir>/wer.json: add its WER column and section."
)
FLAGS = flags.FLAGS


def _pairs(values, separator):
    out = {}
    for value in values:
        name, _, rest = value.partition("=")
        if not name or not rest:
            raise DataError(f"expected NAME=VALUE, got {value!r}")
        out[name] = rest.split(separator)
    return out


def main(_):
    models = _pairs(FLAGS.model, ",")
    if not models:
        raise DataError("give at least one --model=NAME=DIR")
    ensembles = _pairs(FLAGS.ensemble, "+")
    results = evaluate_models(FLAGS.corpus_dir, FLAGS.split, models, ensembles, progress=cli.say)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    markdown = write_report(results, FLAGS.output_dir, focus=FLAGS.focus, facts=_facts())
    if FLAGS.wer_json:
        import json

        from tfblend.evaluation.report import add_word_error_rates

        with open(FLAGS.wer_json) as stream:
            markdown = add_word_error_rates(FLAGS.output_dir, json.load(stream))
    print(markdown)


def _facts():
    """Data sizes of the corpus, for the report."""
    from tfblend.records import read_manifest

    lines = []
    for split in ("train", "dev", "test"):
        path = os.path.join(FLAGS.corpus_dir, split)
        if os.path.exists(os.path.join(path, "manifest.json")):
            manifest = read_manifest(path)
            lines.append(
                f"- {split}: {manifest['num_utterances']:,} utterances, "
                f"{manifest['num_frames']:,} frames, {len(manifest['speakers'])} voices"
            )
    return lines


if __name__ == "__main__":
    cli.run(main)
