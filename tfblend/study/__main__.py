"""The paper's findings with error bars: every model of the study, several seeds, one command.

Trains on one corpus (default: the medium one, about 3 hours of training speech): the BLSTM
teacher (--teacher_seeds seeds), the CNN baseline and the blended CNN at k = --top_fraction of
the classes (--seeds seeds each), the DNN baseline and the label-smoothing control
(--control_seeds), and the k sweep, the blend from sampled targets at the same bytes per frame
and the blend from the teacher + CNN ensemble (--extra_seeds). Choices are made on dev with seed
0, never on test, among the candidates given: the CNN preset (--students), the smoothing epsilon
(--smoothing_grid) and the blend's alpha and T (--blend_grid); the defaults give one candidate
each (the demo's student, the paper's alpha 0.5 and T 1), to fit the converged study's budget
(at most 12 hours on 2 cores at the medium size's epochs, about 10 expected). Then every model
is scored per test utterance (frames) and decoded (WER); the teachers are scored once more from
each frame's CNN window only (--windowed_teacher: how much of their lead is context). Last, the
learning-curve diagnosis: every model's frame accuracy after each epoch on dev (never test) in
study.json, and, with --longer_epochs, seed 0 of the CNN baseline and of the blended CNN trained
again for that many epochs, to tell how much of a gap is the training budget. RESULTS.md is
written from what ran.

Resumable: every stage skips what is complete and a killed stage continues (training from its
last checkpoint, a target dump from its last complete shard); run the same command again (a
stage's wall time sums every run that worked on it). The
work dir is locked while the study runs: a second study or recipe on it stops at once ("work
dir X is in use by pid N"), changing nothing.
Stage wall times are kept in <work_dir>/report/stages.json and reported.

Reads:  nothing but the installed packages (the corpus is generated).
Writes: <work_dir>/ corpus/, teacher-seed*/, cnn-*/, dnn-seed*/, smooth-*/, targets_*/,
        blend_*/, scores/, exports/, wer/, report/ (stages.json, study.json), and --results
        (RESULTS.md) with its figures in --figures_dir.

Example:
  python -m tfblend.study --work_dir=work/study --size=medium
"""

import json
import os
import sys

from absl import flags

from tfblend import cli
from tfblend.records import read_manifest, write_json
from tfblend.study.plan import SIZES, StagePlan, StudentSpec
from tfblend.study.stages import choose_on_dev
from tfblend.train.rundir import holding

flags.DEFINE_string("work_dir", None, "Where every stage writes.")
flags.DEFINE_enum("size", "medium", list(SIZES), "Corpus size.")
flags.DEFINE_integer("seeds", 3, "Seeds of the CNN baseline and the blended CNN.", lower_bound=1)
flags.DEFINE_integer("teacher_seeds", 2, "Seeds of the BLSTM teacher.", lower_bound=1)
flags.DEFINE_integer(
    "control_seeds", 1, "Seeds of the DNN baseline and the label-smoothing control.", lower_bound=1
)
flags.DEFINE_integer(
    "extra_seeds", 1, "Seeds of the k sweep, the sampled targets' and the ensemble's blends.",
    lower_bound=1,
)  # fmt: skip
flags.DEFINE_integer("teacher_epochs", None, "Teacher epochs (default: by --size).")
flags.DEFINE_integer("student_epochs", None, "Epochs of every student (default: by --size).")
flags.DEFINE_list(
    "students",
    ["deep:8"],
    "CNN candidates PRESET:CHUNK_FRAMES (0: windows); the best on dev (seed 0) is the student.",
)
flags.DEFINE_list("smoothing_grid", ["0.1"], "Label-smoothing epsilons tried on dev.")
flags.DEFINE_list("blend_grid", ["0.5:1"], "Blend ALPHA:T pairs tried on dev.")
flags.DEFINE_float("top_fraction", 0.01, "k of the blended CNN, as a fraction of the classes.")
flags.DEFINE_list(
    "sweep_fractions", ["0.1"], "Other k of the sweep: an integer k, or a fraction of K."
)
flags.DEFINE_bool("sampled", True, "Blend from sampled targets at the same bytes per frame.")
flags.DEFINE_bool("ensemble_blend", True, "Blend from the teacher + CNN ensemble's targets.")
flags.DEFINE_bool(
    "windowed_teacher",
    True,
    "Also score the teachers from each frame's CNN window only (test frames; not decoded).",
)
flags.DEFINE_bool("wer", True, "Decode every model (but the sweep's) and score WER.")
flags.DEFINE_integer("wer_per_voice", None, "Test utterances decoded per voice (default by size).")
flags.DEFINE_integer(
    "wer_dev_per_voice", None, "Dev utterances per voice for the acoustic scale (default by size)."
)
flags.DEFINE_integer(
    "longer_epochs",
    0,
    "Seed 0 of the CNN baseline and of the blended CNN trained again for this many epochs "
    "(dev learning curves only; 0: not trained).",
    lower_bound=0,
)
flags.DEFINE_integer("corpus_seed", 0, "Seed of the generated corpus.")
flags.DEFINE_string("results", "RESULTS.md", "The report written at the end.")
flags.DEFINE_string(
    "figures_dir", "results", "Where the report's figures are written (linked from --results)."
)
flags.mark_flag_as_required("work_dir")
FLAGS = flags.FLAGS


def corpus_facts(corpus: str) -> dict:
    """Utterances, frames, hours (10 ms frames) and voices of each split, and the build's wall
    time (``build_seconds`` of make_corpus.py's build.json; None when it has none)."""
    facts = {}
    for split in ("train", "dev", "test"):
        manifest = read_manifest(os.path.join(corpus, split))
        facts[split] = {
            "utterances": manifest["num_utterances"],
            "frames": manifest["num_frames"],
            "hours": manifest["num_frames"] / 100 / 3600,
            "voices": len(manifest["speakers"]),
        }
    build = os.path.join(corpus, "build.json")
    facts["build_seconds"] = None
    if os.path.exists(build):
        with open(build) as stream:
            facts["build_seconds"] = json.load(stream).get("build_seconds")
    return facts


def main(_):
    with holding(FLAGS.work_dir, "work dir"):  # a second study on it stops at once
        _study()


def _study() -> None:
    plan = StagePlan(
        FLAGS.work_dir, FLAGS.size, teacher_epochs=FLAGS.teacher_epochs,
        student_epochs=FLAGS.student_epochs, owner=f"the study of {FLAGS.work_dir}",
    )  # fmt: skip
    plan.make_corpus(FLAGS.corpus_seed)
    seeds = list(range(FLAGS.seeds))
    teachers = [plan.teacher(seed) for seed in range(FLAGS.teacher_seeds)]
    choices = {}  # the choices made on dev with seed 0: name -> {"grid", "chosen"}
    student, baselines = _baselines(plan, seeds, list(range(FLAGS.control_seeds)), choices)
    top_k = plan.k_of(FLAGS.top_fraction)
    sweep_ks = sorted({plan.k_of(float(v)) for v in FLAGS.sweep_fractions} - {top_k})
    largest = max([top_k, *sweep_ks])
    dumped = plan.dump_top_k(teachers[0], largest)
    targets = {k: plan.derive(dumped, largest, k) for k in [top_k, *sweep_ks]}
    setting = _blend_setting(plan, student, targets[top_k], top_k, choices)
    models, bytes_per_frame = _models(
        plan, student, setting, teachers, baselines, targets, top_k, sweep_ks, seeds
    )
    plan.score(models)
    if FLAGS.wer:
        per_voice = FLAGS.wer_per_voice or plan.wer_test
        dev_per_voice = FLAGS.wer_dev_per_voice or plan.wer_dev
        for model in models:
            if model["role"] not in ("sweep", "teacher_window"):
                plan.decode(model, per_voice, dev_per_voice)
    curves, longer = _learning_curves(plan, models, student, targets[top_k], top_k, setting)
    from tfblend.study.results import user_command, write_results

    study = {
        # As a user types it (under -m, argv[0] is the path of this __main__.py), with no path
        # of this machine where the current directory holds it.
        "command": user_command(sys.argv),
        "size": FLAGS.size,
        "seeds": FLAGS.seeds,
        "teacher_seeds": FLAGS.teacher_seeds,
        "control_seeds": FLAGS.control_seeds,
        "extra_seeds": FLAGS.extra_seeds,
        "corpus": corpus_facts(plan.corpus),
        "num_classes": plan.num_classes,
        "epochs": plan.epochs,
        "choices": choices,
        "models": [plan.relative(m) for m in models],
        "bytes_per_frame": bytes_per_frame,
        "learning_curves": curves,
        "longer_epochs": longer,
        "stages": plan.runner.times,
    }
    study_json = os.path.join(plan.report, "study.json")
    write_json(study_json, study)
    write_results(study_json, FLAGS.results, FLAGS.figures_dir)
    cli.say(f"RESULTS: {FLAGS.results} (figures in {FLAGS.figures_dir}); study: {study_json}")


def _choose(label: str, candidates: dict, choices: dict, name: str) -> str:
    """The candidate best on dev, recorded in ``choices[name]``."""
    chosen, grid = choose_on_dev(label, candidates)
    choices[name] = {"grid": grid, "chosen": chosen}
    return chosen


def _baselines(plan: StagePlan, seeds: list, control_seeds: list, choices: dict) -> tuple:
    """The student (every --students candidate trained with seed 0, the best on dev kept), the
    CNN baseline's ``seeds`` and the DNN baseline's and smoothing control's ``control_seeds``
    (epsilon chosen on dev):
    ``(student, {"cnn": dirs, "dnn": dirs, "smooth": dirs, "epsilon": chosen})``."""
    specs = {spec.label: spec for spec in map(StudentSpec.parse, FLAGS.students)}
    candidates = {label: plan.cnn(spec, 0) for label, spec in specs.items()}
    student = specs[_choose("student", candidates, choices, "student")]
    cnn = [plan.cnn(student, seed) for seed in seeds]
    dnn = [plan.dnn(seed) for seed in control_seeds]
    smooth_dirs = {eps: plan.smoothing(student, eps, 0) for eps in FLAGS.smoothing_grid}
    epsilon = _choose("label smoothing", smooth_dirs, choices, "smoothing")
    smooth = [plan.smoothing(student, epsilon, seed) for seed in control_seeds]
    return student, {"cnn": cnn, "dnn": dnn, "smooth": smooth, "epsilon": epsilon}


def _blend_setting(plan: StagePlan, student, targets: str, top_k: int, choices: dict) -> tuple:
    """The blend's (alpha, T): every --blend_grid pair trained with seed 0, the best on dev."""
    grid = {}
    for pair in FLAGS.blend_grid:
        alpha, _, temperature = pair.partition(":")
        setting = (float(alpha), float(temperature or 1))
        grid[f"alpha={setting[0]:g} T={setting[1]:g}"] = setting
    blend_grid_dirs = {
        name: plan.blend(student, targets, f"k{top_k}", setting, 0)
        for name, setting in grid.items()
    }
    return grid[_choose("blend", blend_grid_dirs, choices, "blend")]


def _models(plan, student, setting, teachers, baselines, targets, top_k, sweep_ks, seeds):
    """Every seed of the blends (``seeds`` of the blended CNN, --extra_seeds of the k sweep, of
    sampled targets and of the ensemble's targets) and the report's models
    (:meth:`StagePlan.entry`): ``(models, bytes per frame of each target set)``."""
    blend = [plan.blend(student, targets[top_k], f"k{top_k}", setting, s) for s in seeds]
    extra = range(FLAGS.extra_seeds)
    sweep = {
        k: [plan.blend(student, targets[k], f"k{k}", setting, s) for s in extra] for k in sweep_ks
    }
    cnn = baselines["cnn"]
    models = [
        plan.entry("teacher (BLSTM)", "teacher", teachers),
        plan.entry(f"CNN baseline ({student.label})", "cnn", cnn),
        plan.entry("DNN baseline", "dnn", baselines["dnn"]),
        plan.entry(
            f"CNN + label smoothing {baselines['epsilon']}", "smoothing", baselines["smooth"]
        ),
        plan.entry(f"blended CNN (k={top_k})", "blend", blend, k=top_k),
    ]
    models += [plan.entry(f"blended CNN, k={k}", "sweep", sweep[k], k=k) for k in sweep_ks]
    bytes_per_frame = {str(k): plan.bytes_per_frame(t) for k, t in targets.items()}
    if FLAGS.sampled:
        sampled_targets = plan.dump_sampled(teachers[0], top_k)
        bytes_per_frame["sampled"] = plan.bytes_per_frame(sampled_targets)
        sampled = [
            plan.blend(student, sampled_targets, f"sampled{top_k}", setting, s) for s in extra
        ]
        models.append(plan.entry(f"blended CNN, {top_k} sampled", "sampled", sampled, draws=top_k))
    pairs = list(zip(teachers, cnn, strict=False))
    models.append(plan.ensemble_entry("ensemble teacher+CNN", pairs))
    if FLAGS.ensemble_blend:
        mixed = plan.dump_mixture(teachers[0], cnn[0], top_k)
        from_ensemble = [plan.blend(student, mixed, f"ens{top_k}", setting, s) for s in extra]
        models.append(
            plan.entry("blended CNN from the ensemble", "ensemble_blend", from_ensemble, k=top_k)
        )
    if FLAGS.windowed_teacher:
        context = plan.window_context(cnn[0])
        name = f"teacher (BLSTM) on the CNN's {2 * context + 1} frames"
        models.append(plan.windowed_entry(name, teachers, context))
    return models, bytes_per_frame


def _learning_curves(plan, models, student, targets: str, top_k: int, setting) -> tuple:
    """The diagnosis, on dev: every model's seed 0 after each epoch, and the CNN and the blend
    trained longer (what more budget would give, and what it does to the blend's lead):
    ``(curves, longer epochs)``."""
    curves = [
        (m["name"], m["role"], m["members"][0][0])
        for m in models
        if m["role"] not in ("ensemble", "teacher_window")
    ]
    longer = FLAGS.longer_epochs
    if longer and longer != plan.epochs["student"]:
        curves += [
            (f"CNN baseline, {longer} epochs", "cnn_longer", plan.cnn(student, 0, epochs=longer)),
            (
                f"blended CNN (k={top_k}), {longer} epochs",
                "blend_longer",
                plan.blend(student, targets, f"k{top_k}", setting, 0, epochs=longer),
            ),
        ]
    return [plan.learning_curve(*curve) for curve in curves], longer


if __name__ == "__main__":
    cli.run(main)
