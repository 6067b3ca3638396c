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

This is the stage plan of tfblend.study.plan at one size (the demo: small, one seed): the same
training budgets, WER subsets and directory names as the study. The CNN, the smoothing control
and the blend train the shipped configs (student.yaml, blend.yaml).

A stage whose outputs are complete is skipped; a partial one is redone (training resumes from
its last checkpoint, a target dump from its last complete shard). The evaluate, export, score
and wer stages are complete when they last ran with the same flags and nothing they read has
changed since (a retrained model, another export: tfblend.study.stages.StageRunner.current), so
a second recipe on a finished work dir runs no stage and adds no export version. The work dir
is locked while the recipe runs: a second recipe or study on it stops at once ("work dir X is
in use by pid N").
--stage and --stop_stage run a part of the recipe (what the earlier stages make must exist),
Kaldi style: the evaluate, export, score and wer stages among them run again even when current
(an export adds a version); complete training stages are still skipped.
With --seeds=N every training stage runs N times (seeds 0..N-1) and the report gives means and
spreads.

Reads:  nothing but the installed packages (the corpus is generated).
Writes: <work_dir>/ corpus/, teacher-seed*/, cnn-*/, dnn-seed*/, smooth-*/, targets_*/,
        blend_*/, graph/, exports/, wer/, report/
        (results.md, results.json, training_curves.png, stages.json), and
        <export_base>/<export_name>/<version>/.

Example:
  python -m tfblend.recipe --work_dir=work/demo --size=small
  python -m tfblend.recipe --work_dir=work/demo --size=small --stage=blend --stop_stage=evaluate
"""

import os

from absl import flags

from tfblend import cli
from tfblend.evaluation.machine import cpu_facts, footer_line
from tfblend.study.plan import SIZES, StagePlan, StudentSpec
from tfblend.study.stages import StagesDone, choose_on_dev, export_current, export_metadata
from tfblend.train.modeldir import INFO_FILE
from tfblend.train.rundir import holding

#: The recipe's stages (parts), in the order they run.
STAGES = (
    "corpus", "teacher", "cnn", "dnn", "smooth", "targets", "blend", "evaluate", "export",
    "score", "wer",
)  # fmt: skip

flags.DEFINE_string("work_dir", None, "Where every stage writes.")
flags.DEFINE_enum("size", "small", list(SIZES), "Corpus size.")
flags.DEFINE_integer("seeds", 1, "Repeat every training stage with this many seeds.", lower_bound=1)
flags.DEFINE_float("top_fraction", 0.01, "Teacher targets kept per frame, as a fraction of K.")
flags.DEFINE_list(
    "smoothing_grid",
    ["0.1"],
    "Label-smoothing epsilons tried for the control (the study's 0.1); the best on dev is kept.",
)
flags.DEFINE_string("export_base", "savedmodels", "TF Serving model base path for the export.")
flags.DEFINE_string("export_name", "tfblend_blended_cnn", "Model name of the export.")
flags.DEFINE_integer("corpus_seed", 0, "Seed of the generated corpus.")
flags.DEFINE_bool("wer", True, "Run the wer stage (decoding and word error rates).")
flags.DEFINE_enum("stage", STAGES[0], list(STAGES), "The first stage to run.")
flags.DEFINE_enum("stop_stage", STAGES[-1], list(STAGES), "The last stage to run.")
flags.mark_flag_as_required("work_dir")
FLAGS = flags.FLAGS

ENSEMBLE = "ensemble teacher+CNN=teacher (BLSTM)+CNN baseline"
FOCUS = "blended CNN"


def _shipped_settings() -> tuple[StudentSpec, tuple[float, float]]:
    """The student (preset, chunking) of student.yaml and the (alpha, T) of blend.yaml."""
    from tfblend.config import load_experiment, shipped_config

    student = load_experiment(shipped_config("student"))
    blend = load_experiment(shipped_config("blend")).distill
    spec = StudentSpec(student.model.vgg.preset, student.data.chunk_frames)
    return spec, (blend.alpha, blend.temperature)


def _training(plan: StagePlan, seeds: list) -> dict:
    """The training stages, teacher to blend: every model's runs (one per seed), by report name."""
    runner = plan.runner
    student, setting = _shipped_settings()
    with runner.part("corpus"):
        plan.make_corpus(FLAGS.corpus_seed)
    with runner.part("teacher"):
        teachers = [plan.teacher(seed) for seed in seeds]
    with runner.part("cnn"):
        cnn = [plan.cnn(student, seed) for seed in seeds]
    with runner.part("dnn"):
        dnn = [plan.dnn(seed) for seed in seeds]
    with runner.part("smooth"):  # epsilon chosen on dev with seed 0, then every seed trained
        candidates = {eps: plan.smoothing(student, eps, 0) for eps in FLAGS.smoothing_grid}
        best, _ = choose_on_dev("label smoothing epsilon", candidates)
        smooth = [plan.smoothing(student, best, seed) for seed in seeds]
    k = plan.k_of(FLAGS.top_fraction)
    with runner.part("targets"):
        targets = [plan.dump_top_k(teacher, k) for teacher in teachers]
    with runner.part("blend"):
        blend = [
            plan.blend(student, target, f"k{k}", setting, seed)
            for target, seed in zip(targets, seeds, strict=True)
        ]
    return {
        "teacher (BLSTM)": teachers,
        "CNN baseline": cnn,
        "DNN baseline": dnn,
        f"CNN + label smoothing {best}": smooth,
        FOCUS: blend,
    }


def _serving(plan: StagePlan, blend_dir: str) -> str:
    """The export of the blended CNN (seed 0) and its check: the export's directory. The
    latest version is kept when it is an export of ``blend_dir`` newer than its model.json
    (or when the export stage is not run); otherwise the next version is exported."""
    from tfblend.export import next_version

    root = os.path.join(FLAGS.export_base, FLAGS.export_name)
    latest = next_version(root) - 1
    done = latest > 0 and export_current(os.path.join(root, str(latest)), blend_dir)
    done = done and not _asked_again()
    version = latest if done or not plan.runner.runs("export") else latest + 1
    export = os.path.join(root, str(version))
    with plan.runner.part("export"):
        plan.runner.stage(
            "export", done, "export", model_dir=blend_dir, export_base=FLAGS.export_base,
            name=FLAGS.export_name, version=version,
        )  # fmt: skip
    with plan.runner.part("score"):
        flag_values = {"export_dir": export, "corpus_dir": plan.corpus, "split": "test"}
        inputs = [export_metadata(export), _manifest(plan, "test")]
        done = not _asked_again() and plan.runner.current(
            "score", "check_export", inputs=inputs, **flag_values
        )
        plan.runner.stage("score", done, "check_export", **flag_values)
    return export


def _asked_again() -> bool:
    """True when --stage or --stop_stage selects the stages to run: the selected evaluate,
    export, score and wer stages then run even when they are current."""
    return cli.given("stage") or cli.given("stop_stage")


def _manifest(plan: StagePlan, split: str) -> str:
    return os.path.join(plan.corpus, split, "manifest.json")


def _word_error_rates(plan: StagePlan, models: dict, blend_export: str) -> None:
    """Exports every model of the table (seed 0; the blended CNN's export is the one above) and
    decodes what the exports serve, and the teacher+CNN ensemble (the mean of their served
    posteriors): one decode run, scale chosen on dev; the report gains a WER column."""
    exports = {name: plan.export(dirs[0]) for name, dirs in models.items() if name != FOCUS}
    exports[FOCUS] = blend_export
    output_dir = os.path.join(plan.work, plan.WER)
    flag_values = dict(
        corpus_dir=plan.corpus, graph_dir=plan.graph,
        model=[f"{name}={path}" for name, path in exports.items()], ensemble=[ENSEMBLE],
        output_dir=output_dir, per_voice=plan.wer_test, dev_per_voice=plan.wer_dev, anchor=True,
        focus=FOCUS, report_dir=plan.report,
    )  # fmt: skip
    inputs = [export_metadata(e) for e in exports.values()]
    inputs += [_manifest(plan, "test"), _manifest(plan, "dev")]
    fresh = not _asked_again() and not plan.runner.ran("evaluate")  # a new report has no WER
    done = fresh and plan.runner.current(
        "wer", "decode", inputs=inputs, outputs=[os.path.join(output_dir, "wer.json")],
        **flag_values,
    )  # fmt: skip
    plan.runner.stage("wer", done, "decode", **flag_values)


def main(_):
    with holding(FLAGS.work_dir, "work dir"):  # a second recipe on it stops at once
        _recipe()


def _recipe() -> None:
    load = os.getloadavg()[0]
    plan = StagePlan(FLAGS.work_dir, FLAGS.size, owner=f"the recipe of {FLAGS.work_dir}")
    plan.runner.select(STAGES, FLAGS.stage, FLAGS.stop_stage)
    export = None
    try:
        models = _training(plan, list(range(FLAGS.seeds)))
        with plan.runner.part("evaluate"):
            _evaluate(plan, models)
        export = _serving(plan, models[FOCUS][0])
        if FLAGS.wer:
            with plan.runner.part("wer"):
                _word_error_rates(plan, models, export)
    except StagesDone:
        pass  # --stop_stage came before the end
    _print_report(plan, export, load)


def _evaluate(plan: StagePlan, models: dict) -> None:
    """The evaluate stage: every model of the table and the ensemble on the test voices
    (complete while no model was retrained since and the flags are the same)."""
    flag_values = dict(
        corpus_dir=plan.corpus, split="test", output_dir=plan.report,
        model=[f"{n}={','.join(d)}" for n, d in models.items()], ensemble=[ENSEMBLE],
        focus=FOCUS,
    )  # fmt: skip
    inputs = [os.path.join(d, INFO_FILE) for dirs in models.values() for d in dirs]
    inputs += [_manifest(plan, "test"), _manifest(plan, "train")]
    outputs = [os.path.join(plan.report, name) for name in ("results.json", "results.md")]
    done = not _asked_again() and plan.runner.current(
        "evaluate", "evaluate", inputs=inputs, outputs=outputs, **flag_values
    )
    plan.runner.stage("evaluate", done, "evaluate", **flag_values)


def _print_report(plan: StagePlan, export: str, load: float) -> None:
    """results.md with the stage wall times and the machine (added when the evaluate stage
    wrote it anew in this run): its CPUs, the load average at the start and the end of this
    run, the stages this run skipped as complete (their numbers come from an earlier run), and
    the CPU's model, instruction-set flags, oneDNN settings and CPU kind
    (:func:`tfblend.evaluation.machine.footer_line`; ``check_readme`` reads the kind)."""
    results_md = os.path.join(plan.report, "results.md")
    if not os.path.exists(results_md):
        return
    if plan.runner.ran("evaluate"):
        times = plan.runner.times
        line = ", ".join(f"{k} {v:.0f}" for k, v in times.items())
        skipped = ", ".join(plan.runner.skipped) or "none"
        with open(results_md, "a") as stream:
            stream.write(
                f"\nStage wall times (s): {line}; total {sum(times.values()):.0f}\n\n"
                f"This run: {os.cpu_count()} CPUs, load average {load:.1f} at its start and "
                f"{os.getloadavg()[0]:.1f} at its end; stages complete from an earlier run "
                f"(skipped): {skipped}\n\n{footer_line(cpu_facts())}\n"
            )
    with open(results_md) as stream:
        print("\n" + stream.read())
    print(f"Report: {plan.report}/results.md, results.json, training_curves.png")
    if export:
        print(f"SavedModel: {export}")


if __name__ == "__main__":
    cli.run(main)
