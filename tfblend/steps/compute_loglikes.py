"""Write an export's senone log-likelihoods for a split as a Kaldi ark/scp (Kaldi interop).

The matrices are what the SavedModel serves as log_likelihoods (log-posteriors minus the log
senone priors of the training alignments): float32 [T, K] per utterance, keyed by utterance id.
A Kaldi user decodes them with their own graph, e.g.

  latgen-faster-mapped --acoustic-scale=0.1 --beam=13 --lattice-beam=6 \
      --word-symbol-table=graph/words.txt final.mdl graph/HCLG.fst \
      scp:loglikes.scp ark:lat.ark

(latgen-faster-mapped maps transition-ids to pdf-ids through final.mdl, so column k must be
pdf-id k of that model: our columns are pocketsphinx's senones, so the ark fits a Kaldi model
whose pdfs are those senones.)

Reads:  <export_dir> (tfblend export), <corpus_dir>/<split>.
Writes: <output>.ark and <output>.scp.

Example:
  python -m tfblend.steps.compute_loglikes --export_dir=savedmodels/tfblend_blended_cnn/1 \
      --corpus_dir=work/demo/corpus --split=test --output=work/demo/loglikes_test
"""

import os

from absl import flags

from tfblend import cli

cli.define_flags("corpus_dir", "split", split="test", required=("corpus_dir",))
flags.DEFINE_string("export_dir", None, "An export: <export_base>/<name>/<version>.")
flags.DEFINE_string("output", None, "Path prefix: writes <output>.ark and <output>.scp.")
flags.mark_flags_as_required(["export_dir", "output"])
FLAGS = flags.FLAGS


def main(_):
    import kaldiio

    from tfblend.decoding.decoder import ExportScorer
    from tfblend.records import iterate_utterances

    split_dir = cli.split_dir(FLAGS.corpus_dir, FLAGS.split)
    scorer = ExportScorer(FLAGS.export_dir)
    ark, scp = f"{FLAGS.output}.ark", f"{FLAGS.output}.scp"
    parent = os.path.dirname(os.path.abspath(FLAGS.output))
    os.makedirs(parent, exist_ok=True)
    tmp_ark, tmp_scp = f"{ark}.tmp-{os.getpid()}", f"{scp}.tmp-{os.getpid()}"
    count = frames = 0
    try:
        with kaldiio.WriteHelper(f"ark,scp:{tmp_ark},{tmp_scp}") as writer:
            for utterance in iterate_utterances(split_dir):
                matrix = scorer(utterance.features, utterance.utt_id)
                writer(utterance.utt_id, matrix)
                count, frames = count + 1, frames + matrix.shape[0]
        with open(tmp_scp) as f:  # the scp names the temporary ark: point it at the final one
            lines = f.read().replace(tmp_ark, ark)
        with open(tmp_scp, "w") as f:
            f.write(lines)
        os.replace(tmp_ark, ark)
        os.replace(tmp_scp, scp)
    finally:
        for path in (tmp_ark, tmp_scp):
            if os.path.exists(path):
                os.remove(path)
    cli.say(f"wrote {count} utterances, {frames} frames x {scorer.num_classes} to {ark}, {scp}")


if __name__ == "__main__":
    cli.run(main)
