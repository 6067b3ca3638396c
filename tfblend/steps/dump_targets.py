"""Run a trained teacher once over a split and store its sparse soft targets.

For every frame only a few (id, probability) pairs are kept: the top k (--method=topk, with --k
or --top_fraction), the smallest set holding mass --p (--method=topp, at most k), or k draws with
importance weights (--method=sampled, unbiased). Probabilities are stored at T = 1 (the student
applies any T later) as float16 or 8-bit log-probabilities. The target shards mirror the
utterance shards, in the same order, and record the features' digest so the join is checked.

Several --teacher_dir values make one target set from a weighted mixture of the models'
posteriors (p = sum_i w_i p_i, mixed before the top k; --teacher_weights, equal by default), e.g.
the BLSTM teacher and the CNN baseline, or several teacher seeds; the manifest records every
teacher, its digest and its weight.

Split the work over processes or machines with --shard_index/--num_shards; a killed dump rerun
skips the shards already complete. With --from_targets, a smaller k is cut from an existing
top-k dump without running the teacher.

Reads:  <corpus_dir>/<split> (utterance set), <teacher_dir> (train_teacher.py; in a mixture also
        train_student.py or blend.py model directories), or --from_targets.
Writes: <output_dir>/ targets-*.tfrecord, one targets-*.json per complete shard, manifest.json
        (once every shard is complete).

Examples:
  python -m tfblend.steps.dump_targets --corpus_dir=work/demo/corpus \
      --teacher_dir=work/demo/teacher --output_dir=work/demo/targets_k51 --top_fraction=0.01
  python -m tfblend.steps.dump_targets --corpus_dir=work/demo/corpus \
      --teacher_dir=work/demo/teacher --teacher_dir=work/demo/cnn --teacher_weights=0.5,0.5 \
      --output_dir=work/demo/targets_mix --top_fraction=0.01
  python -m tfblend.steps.dump_targets --from_targets=work/demo/targets_k512 --k=51 \
      --output_dir=work/demo/targets_k51
"""

import time

from absl import flags

from tfblend import cli
from tfblend.distill import TAILS
from tfblend.errors import DataError
from tfblend.targets import derive_targets, dump_targets
from tfblend.targets.sparsify import METHODS

cli.define_flags(
    "corpus_dir",
    "split",
    "output_dir",
    "seed",
    split="train",
    required=("output_dir",),
)
flags.DEFINE_multi_string(
    "teacher_dir",
    None,
    "Model directory of a trained teacher (train_teacher.py); repeat it to mix several models' "
    "posteriors.",
)
flags.DEFINE_list(
    "teacher_weights",
    None,
    "Mixture weights, one per --teacher_dir, summing to 1 (default: equal).",
)
flags.DEFINE_enum("method", "topk", list(METHODS), "How frames are sparsified.")
flags.DEFINE_integer("k", 0, "Entries per frame (topk), the cap (topp) or the draws (sampled).")
flags.DEFINE_float("top_fraction", 0.0, "k as a fraction of the classes (0.01 = 1%).")
flags.DEFINE_float("p", 0.95, "Probability mass kept by --method=topp.")
flags.DEFINE_enum(
    "tail",
    "renormalize",
    list(TAILS),
    "The tail handling the targets are for; ghost also stores the kept mass.",
)
flags.DEFINE_enum("value_encoding", "float16", ["float16", "log_uint8"], "Probability storage.")
flags.DEFINE_float("log_step", 0.0625, "Quantisation step of log_uint8 (nats).")
flags.DEFINE_integer("shard_index", 0, "This process's index among --num_shards workers.")
flags.DEFINE_integer("num_shards", 1, "Processes (or machines) sharing the dump.")
flags.DEFINE_integer("teacher_batch", 16, "Utterances per teacher call.")
flags.DEFINE_string("from_targets", None, "Cut --k from this top-k dump instead.")
FLAGS = flags.FLAGS


def main(_):
    started = time.time()
    if FLAGS.from_targets:
        manifest = derive_targets(FLAGS.from_targets, FLAGS.output_dir, FLAGS.k)
    else:
        for name in ("corpus_dir", "teacher_dir"):
            if not FLAGS[name].value:
                raise DataError(f"--{name} is required without --from_targets")
        manifest = dump_targets(
            cli.split_dir(FLAGS.corpus_dir, FLAGS.split),
            FLAGS.teacher_dir,
            FLAGS.output_dir,
            teacher_weights=FLAGS.teacher_weights,
            method=FLAGS.method,
            k=FLAGS.k,
            top_fraction=FLAGS.top_fraction,
            p=FLAGS.p,
            tail=FLAGS.tail,
            value_encoding=FLAGS.value_encoding,
            log_step=FLAGS.log_step,
            seed=FLAGS.seed or 0,
            shard_index=FLAGS.shard_index,
            num_shards=FLAGS.num_shards,
            batch_size=FLAGS.teacher_batch,
            progress=cli.say,
        )
    seconds = time.time() - started
    if manifest is None:
        cli.say(
            f"this worker's shards are done in {seconds:.0f} s; the manifest is written when "
            "every worker has finished"
        )
        return
    cli.say(
        f"{manifest['num_frames']:,} frames, k = {manifest['k']} "
        f"({manifest['top_fraction']:.2%} of {manifest['num_classes']} classes), "
        f"{manifest['bytes_per_frame']:.1f} bytes/frame = "
        f"{manifest['storage_fraction']:.2%} of dense float32, {seconds:.0f} s "
        f"({manifest['num_frames'] / seconds:,.0f} frames/s)"
    )


if __name__ == "__main__":
    cli.run(main)
