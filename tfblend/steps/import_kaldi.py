r"""Import your own data: a Kaldi data directory with pdf alignments, as one utterance set.

Reads:  <kaldi_data_dir>/wav.scp (recording id, path of a 16-bit PCM WAV file, any sample rate:
        resampled), <kaldi_data_dir>/utt2spk, optional <kaldi_data_dir>/segments, and
        --alignments: one pdf id per frame per utterance, as ali-to-pdf writes them: a text file
        ("utt-id pdf pdf ..." per line), a .ark/.scp file or a Kaldi rspecifier (kaldiio reads
        them); optionally --phone_alignments in the same forms (ali-to-phones --per-frame).
Writes: <output_dir>/ utterance shards and manifest.json (log-mel features cut or padded to the
        alignment's length). Utterances without an alignment, or whose alignment is more than
        --frame_tolerance frames off the audio's frame count, are skipped and counted in the
        manifest. Run it once per split: <corpus>/train, <corpus>/dev, <corpus>/test.

Example:
  python -m tfblend.steps.import_kaldi --kaldi_data_dir=data/train \
      --alignments=exp/tri3_ali/pdf.txt --num_classes=3456 --output_dir=work/mycorpus/train \
      --num_shards=8
"""

from absl import flags

from tfblend import cli
from tfblend.corpus import kaldi
from tfblend.features import FeatureConfig

cli.define_flags("output_dir", required=("output_dir",))
flags.DEFINE_string("kaldi_data_dir", None, "Kaldi data directory (wav.scp, utt2spk, segments).")
flags.DEFINE_string("alignments", None, "Per-frame pdf ids: text file, .ark/.scp or rspecifier.")
flags.DEFINE_integer("num_classes", None, "Number of pdfs (tree-info / am-info).", lower_bound=1)
flags.DEFINE_string("phone_alignments", None, "Optional per-frame phone ids, same forms.")
flags.DEFINE_integer("num_phones", None, "Number of phones (with --phone_alignments).")
flags.DEFINE_integer("num_shards", 1, "Shards to write.", lower_bound=1)
flags.DEFINE_integer(
    "frame_tolerance",
    kaldi.DEFAULT_FRAME_TOLERANCE,
    "Largest accepted difference between alignment and audio frame counts.",
    lower_bound=0,
)
flags.DEFINE_integer("num_mel_bins", 40, "Log-mel filters.", lower_bound=1)
flags.DEFINE_enum("delta_order", "0", ["0", "1", "2"], "Append deltas (1) and delta-deltas (2).")
flags.mark_flags_as_required(["kaldi_data_dir", "alignments", "num_classes"])
FLAGS = flags.FLAGS


def main(_):
    if not FLAGS.phone_alignments:
        cli.refuse_flags(
            {"num_phones": "no phone labels are imported (give --phone_alignments with it)"},
            "without --phone_alignments",
        )
    manifest = kaldi.import_kaldi_dir(
        FLAGS.kaldi_data_dir,
        FLAGS.alignments,
        FLAGS.output_dir,
        num_classes=FLAGS.num_classes,
        num_shards=FLAGS.num_shards,
        feature_config=FeatureConfig(
            num_mel_bins=FLAGS.num_mel_bins, delta_order=int(FLAGS.delta_order)
        ),
        phone_alignments=FLAGS.phone_alignments,
        num_phones=FLAGS.num_phones,
        frame_tolerance=FLAGS.frame_tolerance,
    )
    info = manifest["metadata"]["kaldi"]
    cli.say(
        f"{FLAGS.output_dir}: {manifest['num_utterances']} utterances, "
        f"{manifest['num_frames']} frames, {info['audio_seconds'] / 3600:.2f} h; "
        f"{info['num_skipped']} skipped {info['skipped_by_reason']}"
    )


if __name__ == "__main__":
    cli.run(main)
