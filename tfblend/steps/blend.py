"""Blend the teacher into the CNN: train the student on hard labels and teacher targets at once.

loss = alpha * CE(hard labels) + (1 - alpha) * T^2 * CE(teacher targets at temperature T).
The teacher targets are the stored sparse ones of dump_targets.py (the default), or, with
--teacher_dir instead of --targets_dir, the teacher is run inside every step (online, slower;
an LSTM teacher then sees only the student's context window).

Reads:  <corpus_dir>/train, <corpus_dir>/dev, the targets of train (--targets_dir), an experiment
        config (default: tfblend/configs/blend.yaml).
Writes: <model_dir>/ with the student alone (model.keras), model.json, history.csv, logs/.

Example:
  python -m tfblend.steps.blend --corpus_dir=work/demo/corpus --targets_dir=work/demo/targets_k51 \
      --model_dir=work/demo/blend --alpha=0.5 --temperature=1
"""

from absl import flags

from tfblend import cli
from tfblend.distill import TAILS
from tfblend.train.experiments import train_window_model
from tfblend.train.strategies import make_strategy

cli.define_flags(
    *cli.TRAINING_FLAGS, "targets_dir", "teacher_dir", required=("corpus_dir", "model_dir")
)
flags.DEFINE_float("alpha", None, "Weight of the hard-label loss (distill.alpha).")
flags.DEFINE_float("temperature", None, "Softening temperature T (distill.temperature).")
flags.DEFINE_enum("tail", None, list(TAILS), "Mass outside the stored ids (distill.tail).")
flags.DEFINE_enum("model", None, ["vgg", "dnn"], "The student (model.type); default: the config's.")
FLAGS = flags.FLAGS


def main(_):
    overrides = {}
    for flag, key in (
        ("alpha", "distill__alpha"),
        ("temperature", "distill__temperature"),
        ("tail", "distill__tail"),
        ("model", "model__type"),
    ):
        if FLAGS[flag].value is not None:
            overrides[key] = FLAGS[flag].value
    experiment = cli.experiment_from_flags("blend", **overrides)
    strategy = make_strategy(FLAGS.strategy, FLAGS.num_replicas)
    info = train_window_model(
        FLAGS.corpus_dir,
        FLAGS.model_dir,
        experiment,
        strategy,
        role="blend",
        targets_dir=FLAGS.targets_dir,
        teacher_dir=FLAGS.teacher_dir,
        overwrite=FLAGS.overwrite,
    )
    cli.say(f"blended student saved to {FLAGS.model_dir} ({info['wall_seconds']:.0f} s)")


if __name__ == "__main__":
    cli.run(main)
