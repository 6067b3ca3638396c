"""Rewrite a study's RESULTS.md (and its plots) from a finished, or partial, study.

The study command writes RESULTS.md itself at its end; this script writes it again from the
same files, e.g. after a change to the report's code. Every number comes from the files the
study wrote; every verdict from a 95% paired bootstrap interval over the test utterances.

Reads:  <study_dir>/report/study.json and the per-utterance scores and wer.json files it names.
Writes: --output (RESULTS.md) and --figures_dir/*.png (per-voice and k-sweep plots).

Example:
  python -m tfblend.steps.write_results --study_dir=work/study --output=RESULTS.md \
      --figures_dir=results
"""

import os

from absl import flags

from tfblend import cli
from tfblend.errors import DataError
from tfblend.study.results import write_results

flags.DEFINE_string("study_dir", None, "The study's --work_dir (holding report/study.json).")
flags.DEFINE_string("output", "RESULTS.md", "The Markdown file to write.")
flags.DEFINE_string("figures_dir", "results", "Where the PNGs go (linked relative to --output).")
flags.DEFINE_integer("num_resamples", 10_000, "Bootstrap resamples (shared by every comparison).")
flags.DEFINE_integer("bootstrap_seed", 0, "Seed of the bootstrap resamples.")
flags.mark_flag_as_required("study_dir")
FLAGS = flags.FLAGS


def main(_):
    if FLAGS.num_resamples < 100:
        raise DataError(f"--num_resamples={FLAGS.num_resamples}: use at least 100")
    study_json = os.path.join(FLAGS.study_dir, "report", "study.json")
    markdown = write_results(
        study_json,
        FLAGS.output,
        FLAGS.figures_dir,
        num_resamples=FLAGS.num_resamples,
        seed=FLAGS.bootstrap_seed,
        study_dir=FLAGS.study_dir,
    )
    findings = [line for line in markdown.splitlines() if line.startswith("- Finding")]
    cli.say(f"wrote {FLAGS.output} and the plots in {FLAGS.figures_dir}")
    for line in findings:
        print(line)


if __name__ == "__main__":
    cli.run(main)
