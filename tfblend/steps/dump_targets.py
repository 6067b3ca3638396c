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
skips the shards already complete. With --from_targets, a smaller k (--k or --top_fraction) is
cut from an existing top-k dump without running the teacher: everything else is the source's,
and a flag that would choose it (--method, --tail, --value_encoding, --log_step other than the
source's; --corpus_dir, --split, --teacher_*, --p, --seed, sharding) is refused. Without it,
--p is refused unless --method=topp, --seed unless --method=sampled, --log_step unless
--value_encoding=log_uint8, and --tail=ghost with --method=sampled.

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


#: Flags that choose what --from_targets takes from its source; why each does not apply.
_NOT_DERIVED = {
    "corpus_dir": "the targets come from the source dump, not from a corpus",
    "split": "the cut keeps the source dump's utterances",
    "teacher_dir": "no teacher runs; the source dump's teacher is kept",
    "teacher_weights": "no teacher runs; the source dump's mixture is kept",
    "p": "a top-k cut keeps no probability mass p",
    "seed": "a top-k cut draws nothing at random",
    "shard_index": "the cut is one process over every shard",
    "num_shards": "the cut is one process over every shard",
    "teacher_batch": "no teacher runs",
}


def _check_derivation() -> None:
    """Refuses the flags that a cut of --from_targets would ignore: those of a teacher run, and
    --method, --tail, --value_encoding, --log_step other than the source's (a cut keeps them)."""
    from tfblend.records import TARGET_FORMAT, read_manifest

    context = "with --from_targets"
    cli.refuse_flags(_NOT_DERIVED, context)
    source = read_manifest(FLAGS.from_targets, expected_format=TARGET_FORMAT)
    kept = {
        name: f"the cut keeps the {name} of {FLAGS.from_targets} ({source.get(name) or 'none'})"
        for name in ("method", "tail", "value_encoding", "log_step")
        if FLAGS[name].value != source.get(name)
    }
    cli.refuse_flags(kept, context)


def _check_dump() -> None:
    """Refuses the flags that a teacher run with these settings would ignore."""
    for name in ("corpus_dir", "teacher_dir"):
        if not FLAGS[name].value:
            raise DataError(f"--{name} is required without --from_targets")
    unused = {}
    if FLAGS.method != "topp":
        unused["p"] = "only --method=topp keeps a probability mass"
    if FLAGS.method != "sampled":
        unused["seed"] = "only --method=sampled draws at random"
    if FLAGS.value_encoding != "log_uint8":
        unused["log_step"] = "only --value_encoding=log_uint8 quantises"
    if FLAGS.method == "sampled" and FLAGS.tail == "ghost":
        unused["tail"] = "sampled targets have no tail (the draws are weighted)"
    cli.refuse_flags(
        unused, f"with --method={FLAGS.method} --value_encoding={FLAGS.value_encoding}"
    )


def main(_):
    started = time.time()
    if FLAGS.from_targets:
        _check_derivation()
        manifest = derive_targets(
            FLAGS.from_targets, FLAGS.output_dir, FLAGS.k, top_fraction=FLAGS.top_fraction
        )
    else:
        _check_dump()
        manifest = dump_targets(
            cli.split_dir(FLAGS.corpus_dir, FLAGS.split, "dump targets of"),
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
