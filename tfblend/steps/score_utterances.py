"""Per-utterance frame counts of models (or ensembles) on a labelled split.

What a study's paired bootstrap resamples (tfblend.study.statistics): for every utterance of the
split, in the set's canonical order, the frames and the frames whose most probable senone is the
aligned one. Each --run names its output file and a model directory, or several joined by "+"
for their ensemble (the mean of the members' posteriors, as evaluate.py's --ensemble does). A run
whose output exists is skipped, so a killed scoring continues where it stopped. --sequence_context=W
scores the sequence models (the BLSTM) from each frame's window of W frames either side only, as
a CNN of context W sees it: how much of their accuracy is the context a window model lacks.

Reads:  <corpus_dir>/<split> (and <corpus_dir>/train for the CMVN statistics), the model
        directories.
Writes: every --run's OUTPUT (JSON: utt_ids, speakers, correct, frames), whole or not at all.

Example:
  python -m tfblend.steps.score_utterances --corpus_dir=work/study/corpus --split=test \
      --run=work/study/scores/cnn-seed0.json=work/study/cnn-small-seed0 \
      --run=work/study/scores/ens-seed0.json=work/study/teacher-seed0+work/study/cnn-small-seed0
"""

import os

from absl import flags

from tfblend import cli
from tfblend.errors import DataError
from tfblend.evaluation.utterances import score_model_dirs
from tfblend.records import write_json

cli.define_flags("corpus_dir", required=("corpus_dir",))
flags.DEFINE_string("split", "test", "The split scored.")
flags.DEFINE_multi_string(
    "run", None, "OUTPUT=MODEL_DIR[+MODEL_DIR...]: score a model (several: their ensemble)."
)
flags.DEFINE_integer(
    "sequence_context",
    None,
    "Score sequence models from each frame's window of this many frames either side only "
    "(default: whole utterances). Window models keep their own context.",
    lower_bound=0,
)
flags.mark_flag_as_required("run")
FLAGS = flags.FLAGS


def _runs(values) -> list[tuple[str, list[str]]]:
    runs = []
    for value in values:
        output, _, dirs = value.partition("=")
        if not output or not dirs:
            raise DataError(f"--run={value}: expected OUTPUT=MODEL_DIR[+MODEL_DIR...]")
        runs.append((output, dirs.split("+")))
    return runs


def main(_):
    for output, dirs in _runs(FLAGS.run):
        if os.path.exists(output):
            cli.say(f"{output}: exists, skipped")
            continue
        members = {f"member{i}": [d] for i, d in enumerate(dirs)}
        ensembles = {"ensemble": list(members)} if len(members) > 1 else {}
        counts = score_model_dirs(
            FLAGS.corpus_dir, FLAGS.split, members, ensembles, FLAGS.sequence_context
        )
        result = counts["ensemble" if ensembles else "member0"][0]
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        write_json(output, result.to_dict())
        cli.say(
            f"{' + '.join(dirs)}: {result.accuracy:.2%} of {int(result.frames.sum()):,} frames "
            f"in {len(result.utt_ids)} utterances -> {output}"
        )


if __name__ == "__main__":
    cli.run(main)
