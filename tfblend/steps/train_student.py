"""Train a window model (the VGG-style CNN or the DNN) on hard frame labels only.

This is the paper's baseline. With --label_smoothing it is also the smoothing control that tells
dark knowledge from plain regularisation.

The model is --model or the config's model.type (--config_file, --params_override); a --model
that contradicts the config's model.type is refused. Neither given: the VGG.

Reads:  <corpus_dir>/train and <corpus_dir>/dev and an experiment config (default:
        tfblend/configs/student.yaml for the VGG, dnn.yaml for the DNN).
Writes: <model_dir>/ with model.keras, model.json, experiment.yaml, history.csv, logs/.

Example:
  python -m tfblend.steps.train_student --corpus_dir=work/demo/corpus --model_dir=work/demo/cnn \
      --model=vgg --epochs=4
"""

from absl import flags

from tfblend import cli
from tfblend.train.experiments import train_window_model
from tfblend.train.strategies import make_strategy

cli.define_flags(*cli.TRAINING_FLAGS, required=("corpus_dir", "model_dir"))
flags.DEFINE_enum(
    "model",
    None,
    ["vgg", "dnn"],
    "The window model, the CNN or the DNN (model.type); default: the config's, else vgg.",
)
flags.DEFINE_float("label_smoothing", None, "Epsilon of label smoothing (train.label_smoothing).")
FLAGS = flags.FLAGS


def main(_):
    model = cli.model_from_flags() or "vgg"
    overrides = {"model__type": model}
    if FLAGS.label_smoothing is not None:
        overrides["train__label_smoothing"] = FLAGS.label_smoothing
    experiment = cli.experiment_from_flags("dnn" if model == "dnn" else "student", **overrides)
    strategy = make_strategy(FLAGS.strategy, FLAGS.num_replicas)
    info = train_window_model(
        FLAGS.corpus_dir, FLAGS.model_dir, experiment, strategy, overwrite=FLAGS.overwrite
    )
    cli.say(
        f"{model} saved to {FLAGS.model_dir} ({info['num_params']:,} parameters, "
        f"{info['wall_seconds']:.0f} s)"
    )


if __name__ == "__main__":
    cli.run(main)
