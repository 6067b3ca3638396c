"""The dark-knowledge sweep: how many of the teacher's probabilities does blending need?

The teacher runs once, at the largest k; every smaller k is cut from that dump without the
teacher (the stored entries are sorted). A blended CNN is trained for each k with the same
seed, budget and frame order, and all are evaluated on the held-out voices next to the CNN
baseline and the teacher.

Reads:  <corpus_dir> (train, dev, test), <teacher_dir>, optionally --baseline_dir (a hard-label
        CNN of the same budget) and an experiment config for the blends (default blend.yaml).
Writes: <work_dir>/targets_k*/, blend_k*/, and <work_dir>/report/: sweep.md (accuracy and
        storage per k), sweep.json, accuracy_vs_k.png, stages.json.

Example:
  python -m tfblend.steps.sweep_k --corpus_dir=work/demo/corpus --teacher_dir=work/demo/teacher \
      --baseline_dir=work/demo/cnn --work_dir=work/sweep --ks=1,5,25,51,128,512 --epochs=3
"""

import json
import os

from absl import flags

from tfblend import cli
from tfblend.errors import DataError
from tfblend.evaluation import evaluate_models
from tfblend.evaluation.report import markdown_table, report_rows
from tfblend.records import read_manifest, write_json
from tfblend.study.plots import plot_k_sweep
from tfblend.study.stages import StageRunner, model_done, set_done

cli.define_flags(
    "corpus_dir",
    "teacher_dir",
    "epochs",
    "seed",
    "config_file",
    "params_override",
    required=("corpus_dir", "teacher_dir"),
    seed=0,
)
flags.DEFINE_string("work_dir", None, "Where the targets, blends and report go.")
flags.DEFINE_list("ks", ["1", "5", "10", "25", "51", "128", "512"], "The k values to blend with.")
flags.DEFINE_string("baseline_dir", None, "A hard-label CNN to compare with (optional).")
flags.mark_flag_as_required("work_dir")
FLAGS = flags.FLAGS

COLUMNS = [
    ("name", "model", "str"),
    ("k", "k", "num"),
    ("percent", "% of classes", "num"),
    ("bytes", "bytes/frame", "num"),
    ("storage", "% of dense fp32", "num"),
    ("accuracy", "frame acc %", "pct"),
    ("top5", "top-5 %", "pct"),
    ("cross_entropy", "CE (nats)", "num"),
    ("phone_accuracy", "phone acc %", "pct"),
]


def main(_):
    ks = sorted({int(k) for k in FLAGS.ks})
    work = FLAGS.work_dir
    runner = StageRunner(os.path.join(work, "report"))
    top = os.path.join(work, f"targets_k{ks[-1]}")
    runner.stage(
        f"targets k={ks[-1]}",
        set_done(top),
        "dump_targets",
        corpus_dir=FLAGS.corpus_dir,
        split="train",
        teacher_dir=FLAGS.teacher_dir,
        output_dir=top,
        k=ks[-1],
    )
    training = {"corpus_dir": FLAGS.corpus_dir, "seed": FLAGS.seed}
    for name in ("epochs", "config_file", "params_override"):
        if FLAGS[name].value:
            training[name] = FLAGS[name].value
    models = {}
    for k in ks:
        targets = top if k == ks[-1] else os.path.join(work, f"targets_k{k}")
        if k != ks[-1]:
            runner.stage(
                f"targets k={k}",
                set_done(targets),
                "dump_targets",
                from_targets=top,
                k=k,
                output_dir=targets,
            )
        model_dir = os.path.join(work, f"blend_k{k}")
        runner.stage(
            f"blend k={k}",
            model_done(model_dir),
            "blend",
            targets_dir=targets,
            model_dir=model_dir,
            **training,
        )
        models[f"blend k={k}"] = [model_dir]
    models["teacher"] = [FLAGS.teacher_dir]
    if FLAGS.baseline_dir:
        models["CNN baseline"] = [FLAGS.baseline_dir]
    results = evaluate_models(FLAGS.corpus_dir, "test", models, {}, progress=cli.say)
    rows = report_rows(results)
    num_classes = read_manifest(os.path.join(FLAGS.corpus_dir, "train"))["num_classes"]
    points = []
    for row in rows:
        if not row["name"].startswith("blend k="):
            continue
        k = int(row["name"].split("=")[1])
        targets = top if k == ks[-1] else os.path.join(work, f"targets_k{k}")
        manifest = read_manifest(targets, expected_format="tfblend.targets")
        row.update(
            k=k,
            percent=100.0 * k / num_classes,
            bytes=manifest["bytes_per_frame"],
            storage=100.0 * manifest["storage_fraction"],
        )
        points.append({"k": k, "accuracy": row["accuracy"]})
    report = os.path.join(work, "report")
    table = markdown_table(rows, COLUMNS)
    with open(os.path.join(report, "sweep.md"), "w") as stream:
        stream.write(
            f"Held-out voices, {results['frames']:,} frames; {num_classes} classes.\n\n"
            f"{table}\n"
        )
    write_json(os.path.join(report, "sweep.json"), {"rows": rows, "results": results})
    baselines = {
        name: results["models"][name]["summary"]["accuracy"]
        for name in ("teacher", "CNN baseline")
        if name in results["models"]
    }
    if not points:
        raise DataError("no blend was evaluated")
    plot_k_sweep(points, num_classes, os.path.join(report, "accuracy_vs_k.png"), baselines)
    print(table)
    print(f"Report: {report}/sweep.md, accuracy_vs_k.png")
    cli.say(json.dumps({"stage_seconds": runner.times}))


if __name__ == "__main__":
    cli.run(main)
