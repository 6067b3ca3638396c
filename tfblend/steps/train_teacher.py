"""Train the LSTM teacher on a corpus's train split, validating on dev.

Reads:  <corpus_dir>/train and <corpus_dir>/dev (utterance sets from make_corpus.py or
        import_kaldi.py) and an experiment config (default: tfblend/configs/teacher.yaml).
Writes: <model_dir>/ with model.keras, model.json, experiment.yaml, history.csv and
        TensorBoard logs/. A rerun after a kill resumes where the run stopped.

Example:
  python -m tfblend.steps.train_teacher --corpus_dir=work/demo/corpus \
      --model_dir=work/demo/teacher --params_override='model.lstm.units=256' --epochs=10
"""

from absl import flags

from tfblend import cli
from tfblend.train.experiments import train_teacher
from tfblend.train.strategies import make_strategy

cli.define_flags(*cli.TRAINING_FLAGS, required=("corpus_dir", "model_dir"))
FLAGS = flags.FLAGS


def main(_):
    experiment = cli.experiment_from_flags("teacher")
    strategy = make_strategy(FLAGS.strategy, FLAGS.num_replicas)
    info = train_teacher(
        FLAGS.corpus_dir, FLAGS.model_dir, experiment, strategy, overwrite=FLAGS.overwrite
    )
    cli.say(
        f"teacher saved to {FLAGS.model_dir} ({info['num_params']:,} parameters, "
        f"{info['wall_seconds']:.0f} s)"
    )


if __name__ == "__main__":
    cli.run(main)
