"""Blend the teacher into the CNN: train the student on hard labels and teacher targets at once.

loss = alpha * CE(hard labels) + (1 - alpha) * T^2 * CE(teacher targets at temperature T).
With train.label_smoothing = epsilon (in the config or --params_override) the hard-label term is
the label-smoothed cross-entropy. --tail (distill.tail) applies to stored top-k and top-p
targets only: it is refused with sampled targets or an online teacher, which have no tail.
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
flags.DEFINE_enum(
    "model",
    None,
    ["vgg", "dnn"],
    "The student (model.type); default: the config's. Refused when it contradicts the "
    "model.type of --config_file or --params_override.",
)
FLAGS = flags.FLAGS


def _check_tail() -> None:
    """Refuses --tail where no tail exists: an online teacher or sampled stored targets."""
    if FLAGS.teacher_dir:
        reasons = {"tail": "an online teacher gives every class's probability"}
        cli.refuse_flags(reasons, "with --teacher_dir")
    elif FLAGS.targets_dir and cli.given("tail"):
        from tfblend.records import TARGET_FORMAT, read_manifest

        if read_manifest(FLAGS.targets_dir, expected_format=TARGET_FORMAT)["method"] == "sampled":
            reasons = {"tail": "sampled targets weight their draws (there is no tail)"}
            cli.refuse_flags(reasons, "with sampled targets")


def main(_):
    _check_tail()
    model = cli.model_from_flags()
    overrides = {"model__type": model} if model is not None else {}
    for flag, key in (
        ("alpha", "distill__alpha"),
        ("temperature", "distill__temperature"),
        ("tail", "distill__tail"),
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
