"""The whole experiment of "Blending LSTMs into CNNs", stage by stage, on one corpus.

Stages (each one a step of tfblend.steps, run as its own process):
  corpus    make_corpus        the embedded speech corpus (train / dev / held-out test voices)
  teacher   train_teacher      the bidirectional LSTM teacher
  cnn       train_student      the VGG-style CNN on hard labels (the baseline)
  dnn       train_student      the DNN on hard labels (the classic hybrid baseline)
  smooth    train_student      the CNN with label smoothing, epsilon chosen on dev (the control
                               that tells dark knowledge from plain smoothing)
  targets   dump_targets       the teacher's top-k targets of train, k = --top_fraction
  blend     blend              the CNN trained on hard labels + stored teacher targets
  evaluate  evaluate           every model and the teacher+CNN ensemble on the held-out voices
  export    export             the blended CNN as a SavedModel for TF Serving
  score     check_export       the export reloaded in a fresh process, one test utterance scored
  wer       export, decode     every model exported, its served log-likelihoods decoded with
                               HCLG of the task LM (acoustic scale chosen on dev), WER on a fixed
                               subset of the test voices, pocketsphinx's own recognizer as the
                               anchor; a WER column and section in the report

A stage whose outputs are complete is skipped; a partial one is redone (training resumes from
its last checkpoint, a target dump from its last complete shard). With --seeds=N every training
stage runs N times (seeds 0..N-1) and the report gives means and spreads.

Reads:  nothing but the installed packages (the corpus is generated).
Writes: <work_dir>/ corpus/, teacher/, cnn/, dnn/, smooth*/, targets_k*/, blend/, graph/,
        exports/, wer/, report/
        (results.md, results.json, training_curves.png, stages.json), and
        <export_base>/<export_name>/<version>/.

Example:
  python -m tfblend.recipe --work_dir=work/demo --size=small
"""

import os

from absl import flags

from tfblend import cli
from tfblend.study.stages import StageRunner, choose_on_dev, model_done, set_done

flags.DEFINE_string("work_dir", None, "Where every stage writes.")
flags.DEFINE_enum("size", "small", ["tiny", "small", "medium", "large"], "Corpus size.")
flags.DEFINE_integer("seeds", 1, "Repeat every training stage with this many seeds.")
flags.DEFINE_float("top_fraction", 0.01, "Teacher targets kept per frame, as a fraction of K.")
flags.DEFINE_list(
    "smoothing_grid",
    ["0.1", "0.3"],
    "Label-smoothing epsilons tried for the control; the best on dev is kept.",
)
flags.DEFINE_string("export_base", "savedmodels", "TF Serving model base path for the export.")
flags.DEFINE_string("export_name", "tfblend_blended_cnn", "Model name of the export.")
flags.DEFINE_integer("corpus_seed", 0, "Seed of the generated corpus.")
flags.DEFINE_bool("wer", True, "Run the wer stage (decoding and word error rates).")
flags.mark_flag_as_required("work_dir")
FLAGS = flags.FLAGS

# The wer stage's fixed subsets (the first N utterances of every test / dev voice), sized so the
# stage fits about 5 minutes of the small demo on 2 cores.
WER_SUBSET = {
    "tiny": {"test": 3, "dev": 3},
    "small": {"test": 12, "dev": 10},
    "medium": {"test": 30, "dev": 10},
    "large": {"test": 20, "dev": 10},
}

# Training lengths per corpus size: every model gets a fair budget on the same data.
EPOCHS = {
    "tiny": {"teacher": 2, "window": 1},
    "small": {"teacher": 5, "window": 3},
    "medium": {"teacher": 2, "window": 1},
    "large": {"teacher": 12, "window": 6},
}


def main(_):
    work = FLAGS.work_dir
    report_dir = os.path.join(work, "report")
    recipe = StageRunner(report_dir)
    corpus = os.path.join(work, "corpus")
    epochs = EPOCHS[FLAGS.size]
    recipe.stage(
        "corpus",
        all(set_done(os.path.join(corpus, s)) for s in ("train", "dev", "test")),
        "make_corpus",
        output_dir=corpus,
        size=FLAGS.size,
        seed=FLAGS.corpus_seed,
    )
    seeds = range(FLAGS.seeds)

    def seeded(name: str, seed: int) -> str:
        return os.path.join(work, name if FLAGS.seeds == 1 else f"{name}-seed{seed}")

    for seed in seeds:
        teacher = seeded("teacher", seed)
        recipe.stage(
            f"teacher[{seed}]",
            model_done(teacher),
            "train_teacher",
            corpus_dir=corpus,
            model_dir=teacher,
            seed=seed,
            epochs=epochs["teacher"],
        )
        for name, model in (("cnn", "vgg"), ("dnn", "dnn")):
            directory = seeded(name, seed)
            recipe.stage(
                f"{name}[{seed}]",
                model_done(directory),
                "train_student",
                corpus_dir=corpus,
                model_dir=directory,
                model=model,
                seed=seed,
                epochs=epochs["window"],
            )

    # The smoothing control: epsilon chosen on dev with seed 0, then trained for every seed.
    candidates = {}
    for epsilon in FLAGS.smoothing_grid:
        directory = os.path.join(
            work, f"smooth-eps{epsilon}" + ("" if FLAGS.seeds == 1 else "-seed0")
        )
        recipe.stage(
            f"smooth eps={epsilon}[0]",
            model_done(directory),
            "train_student",
            corpus_dir=corpus,
            model_dir=directory,
            model="vgg",
            seed=0,
            label_smoothing=epsilon,
            epochs=epochs["window"],
        )
        candidates[epsilon] = directory
    best, _ = choose_on_dev("label smoothing epsilon", candidates)
    smooth_dirs = [candidates[best]]
    for seed in seeds[1:]:
        directory = os.path.join(work, f"smooth-eps{best}-seed{seed}")
        recipe.stage(
            f"smooth eps={best}[{seed}]",
            model_done(directory),
            "train_student",
            corpus_dir=corpus,
            model_dir=directory,
            model="vgg",
            seed=seed,
            label_smoothing=best,
            epochs=epochs["window"],
        )
        smooth_dirs.append(directory)

    blend_dirs = []
    for seed in seeds:
        teacher = seeded("teacher", seed)
        targets = seeded(f"targets_top{FLAGS.top_fraction:g}", seed)
        recipe.stage(
            f"targets[{seed}]",
            set_done(targets),
            "dump_targets",
            corpus_dir=corpus,
            split="train",
            teacher_dir=teacher,
            output_dir=targets,
            top_fraction=FLAGS.top_fraction,
        )
        directory = seeded("blend", seed)
        recipe.stage(
            f"blend[{seed}]",
            model_done(directory),
            "blend",
            corpus_dir=corpus,
            targets_dir=targets,
            model_dir=directory,
            seed=seed,
            epochs=epochs["window"],
        )
        blend_dirs.append(directory)

    def dirs(name):
        return ",".join(seeded(name, seed) for seed in seeds)

    models = [
        f"teacher (BLSTM)={dirs('teacher')}",
        f"CNN baseline={dirs('cnn')}",
        f"DNN baseline={dirs('dnn')}",
        f"CNN + label smoothing {best}={','.join(smooth_dirs)}",
        f"blended CNN={','.join(blend_dirs)}",
    ]
    recipe.stage(
        "evaluate",
        False,
        "evaluate",
        corpus_dir=corpus,
        split="test",
        output_dir=report_dir,
        model=models,
        ensemble=["ensemble teacher+CNN=teacher (BLSTM)+CNN baseline"],
        focus="blended CNN",
    )

    export_root = os.path.join(FLAGS.export_base, FLAGS.export_name)
    from tfblend.export import next_version

    version = next_version(export_root)
    recipe.stage(
        "export",
        False,
        "export",
        model_dir=blend_dirs[0],
        export_base=FLAGS.export_base,
        name=FLAGS.export_name,
        version=version,
    )
    recipe.stage(
        "score",
        False,
        "check_export",
        export_dir=os.path.join(export_root, str(version)),
        corpus_dir=corpus,
        split="test",
    )

    if FLAGS.wer:
        named = {
            "teacher (BLSTM)": seeded("teacher", 0),
            "CNN baseline": seeded("cnn", 0),
            "DNN baseline": seeded("dnn", 0),
            f"CNN + label smoothing {best}": smooth_dirs[0],
        }
        _wer_stage(recipe, work, corpus, report_dir, named, os.path.join(export_root, str(version)))

    total = sum(recipe.times.values())
    times = (
        "Stage wall times (s): "
        + ", ".join(f"{k} {v:.0f}" for k, v in recipe.times.items())
        + f"; total {total:.0f}"
    )
    results_md = os.path.join(report_dir, "results.md")
    with open(results_md, "a") as stream:
        stream.write(f"\n{times}\n")
    with open(results_md) as stream:
        print("\n" + stream.read())
    print(f"Report: {report_dir}/results.md, results.json, training_curves.png")
    print(f"SavedModel: {os.path.join(export_root, str(version))}")


def _wer_stage(recipe, work, corpus, report_dir, named, blend_export):
    """Exports every model of the table (seed 0; the blended CNN's export is the one above) and
    decodes what the exports serve, and the teacher+CNN ensemble (the mean of their served
    posteriors): one decode.py run, scale chosen on dev."""
    exports = {}
    for name, model_dir in named.items():
        export = os.path.join(work, "exports", os.path.basename(model_dir), "1")
        recipe.stage(
            f"wer export {name}",
            os.path.exists(os.path.join(export, "saved_model.pb")),
            "export",
            model_dir=model_dir,
            export_base=os.path.join(work, "exports"),
            name=os.path.basename(model_dir),
            version=1,
        )
        exports[name] = export
    exports["blended CNN"] = blend_export
    subset = WER_SUBSET[FLAGS.size]
    recipe.stage(
        "wer",
        False,
        "decode",
        corpus_dir=corpus,
        graph_dir=os.path.join(work, "graph"),
        model=[f"{name}={path}" for name, path in exports.items()],
        ensemble=["ensemble teacher+CNN=teacher (BLSTM)+CNN baseline"],
        output_dir=os.path.join(work, "wer"),
        per_voice=subset["test"],
        dev_per_voice=subset["dev"],
        anchor=True,
        focus="blended CNN",
        report_dir=report_dir,
    )


if __name__ == "__main__":
    cli.run(main)
