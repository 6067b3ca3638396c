"""Build the embedded synthetic corpus: espeak-ng speech, pocketsphinx senone alignments.

Reads:  only what the installed packages ship: espeak-ng's voices (espeakng-loader) and
        pocketsphinx's en-us acoustic model and pronunciation dictionary.
Writes: <output_dir>/train, <output_dir>/dev, <output_dir>/test: utterance shards, a
        manifest.json and a Kaldi-style transcript (text) each (40 log-mel features, one senone
        id and one phone id per 10 ms frame;
        dev and test voices never occur in train), and <output_dir>/build.json (timings).
        The same --seed and --size give the same bytes, whatever --num_workers.

Sizes: tiny (36 utterances, seconds), small (about 1 hour of audio, 20 voices, a few minutes on
2 cores), large (over 10 hours, 42 voices; give it several processes).

Example:
  nice -n 10 python -m tfblend.steps.make_corpus --output_dir=work/corpus_small --size=small \
      --seed=0
"""

from absl import flags

from tfblend import cli
from tfblend.corpus import build, design

cli.define_flags("output_dir", "seed", required=("output_dir",), seed=0)
flags.DEFINE_enum("size", "small", list(design.SIZES), "How much to build.")
flags.DEFINE_integer(
    "num_workers",
    None,
    "Processes (default: one per CPU, at most one per 100 utterances).",
    lower_bound=1,
)
flags.DEFINE_bool(
    "overwrite", False, "Replace existing split directories once the new corpus is complete."
)
flags.DEFINE_enum(
    "prompts", "lm", ["lm", "uniform"], "Sentences from the task LM, or uniform dictionary words."
)
flags.DEFINE_integer(
    "vocabulary", 1000, "Words of the task LM (the most probable unigrams).", lower_bound=1
)
FLAGS = flags.FLAGS


def main(_):
    if FLAGS.prompts != "lm":
        cli.refuse_flags(
            {"vocabulary": "uniform prompts draw from the whole pronunciation dictionary"},
            f"with --prompts={FLAGS.prompts}",
        )
    manifests = build.build_corpus(
        FLAGS.output_dir,
        size=FLAGS.size,
        seed=FLAGS.seed,
        num_workers=FLAGS.num_workers,
        overwrite=FLAGS.overwrite,
        prompt_kind=FLAGS.prompts,
        vocabulary_size=FLAGS.vocabulary,
    )
    for split, manifest in manifests.items():
        corpus = manifest["metadata"]["corpus"]
        cli.say(
            f"{split}: {manifest['num_utterances']} utterances, {manifest['num_frames']} frames, "
            f"{corpus['audio_seconds'] / 3600:.2f} h, {len(manifest['speakers'])} voices, "
            f"{corpus['num_skipped']} skipped {corpus['skipped_by_reason']}, "
            f"{corpus['senones_seen']} senones seen"
        )
    cli.say(f"wrote {FLAGS.output_dir}")


if __name__ == "__main__":
    cli.run(main)
