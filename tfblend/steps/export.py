"""Export a trained student (or teacher) as a SavedModel for TF Serving.

The export holds the model alone, in TF Serving's layout <export_base>/<name>/<version>/, with a
serving_default signature on named inputs (features: float32 [batch, 2W+1, feature_dim] context
windows for a window model; features [batch, time, feature_dim] and lengths [batch] for the LSTM),
named outputs posteriors, log_posteriors and log_likelihoods (log-posteriors minus log senone
priors counted on the training alignments), and, for window models, an "utterance" signature that
takes one utterance [time, feature_dim] and splices the windows in the graph. Global CMVN is built
in: clients send raw log-mel features.

Reads:  <model_dir> (a model directory), its training set (priors, CMVN statistics).
Writes: <export_base>/<name>/<version>/ (saved_model.pb, variables/, assets.extra/tfblend.json).

Example:
  python -m tfblend.steps.export --model_dir=work/demo/blend --export_base=savedmodels \
      --name=blended_cnn
"""

import os

from absl import flags

from tfblend import cli
from tfblend.errors import DataError
from tfblend.export import export_model, next_version, senone_log_priors, train_cmvn
from tfblend.train.modeldir import load_model_dir

cli.define_flags("model_dir", required=("model_dir",))
flags.DEFINE_string("export_base", "savedmodels", "TF Serving's model base path.")
flags.DEFINE_string("name", None, "Model name under --export_base (default: the model dir's name).")
flags.DEFINE_integer("version", 0, "Version number (default: the next free one).")
FLAGS = flags.FLAGS


def main(_):
    model, info = load_model_dir(FLAGS.model_dir)
    if info["cmvn"] not in ("global", "none"):
        raise DataError(
            f"{FLAGS.model_dir} was trained with cmvn={info['cmvn']}; exports build "
            "global CMVN into the graph, so export models trained with global or none"
        )
    name = FLAGS.name or os.path.basename(os.path.normpath(FLAGS.model_dir))
    base = os.path.join(FLAGS.export_base, name)
    version = FLAGS.version or next_version(base)
    priors = senone_log_priors(info["train_dir"], info["num_classes"])
    cmvn = train_cmvn(info["train_dir"]) if info["cmvn"] == "global" else None
    path = export_model(
        model,
        os.path.join(base, str(version)),
        kind=info["kind"],
        feature_dim=info["feature_dim"],
        log_priors=priors,
        context=info["context"],
        cmvn=cmvn,
        metadata={
            "model_dir": os.path.abspath(FLAGS.model_dir),
            "model": info["model"],
            "role": info["role"],
            "cmvn_mode": info["cmvn"],
        },
    )
    cli.say(f"exported {info['role']} {info['model']} to {path}")


if __name__ == "__main__":
    cli.run(main)
