"""The study command: a killed study resumes, skipping what is complete, and writes RESULTS.md."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
from conftest import ROOT

from tfblend.errors import DataError
from tfblend.evaluation.report import read_history
from tfblend.study.plan import StagePlan, StudentSpec

# The smallest study that still has every kind of stage: trainings, a target dump, a blend,
# the scoring and the report (no sweep, sampled or ensemble blend, no decoding).
FLAGS = [
    "--size=tiny",
    "--seeds=1",
    "--teacher_seeds=1",
    "--students=tiny:0",
    "--smoothing_grid=0.1",
    "--blend_grid=0.5:1",
    "--sweep_fractions=",
    "--nosampled",
    "--noensemble_blend",
    "--nower",
    "--longer_epochs=0",
]


def _study(work, *extra):
    return [
        sys.executable,
        str(ROOT / "scripts" / "study.py"),
        f"--work_dir={work}",
        f"--results={work}/RESULTS.md",
        f"--figures_dir={work}/figures",
        *FLAGS,
        *extra,
    ]


def test_killed_study_resumes(tiny_corpus, tiny_teacher, tiny_student, tmp_path):
    work = tmp_path / "study"
    # Finished runs a study would have made (same corpus; the CNN with the study's settings):
    # their stages must be skipped, not redone.
    shutil.copytree(tiny_corpus, work / "corpus")
    shutil.copytree(tiny_teacher, work / "teacher-seed0")
    shutil.copytree(tiny_student, work / "cnn-tiny-seed0")
    blend = work / "blend_tiny_k51_a0.5_T1-seed0"

    process = subprocess.Popen(
        _study(work), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    first = []
    for line in process.stdout:
        first.append(line)
        if f"stage {blend.name}: " in line:
            break  # the blend has started: kill the whole study in the middle of it
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert any(f"stage {blend.name}: " in line for line in first), "".join(first[-20:])
    assert not (work / "RESULTS.md").exists()
    assert not (blend / "model.json").exists()
    dnn_info = work / "dnn-seed0" / "model.json"
    finished = dnn_info.stat().st_mtime_ns
    times = json.loads((work / "report" / "stages.json").read_text())
    assert {"dnn-seed0", "smooth-tiny-eps0.1-seed0", "targets_top51-teacher-seed0"} <= set(times)
    assert blend.name not in times

    # Run again from the directory that holds the work dir, as a user would.
    result = subprocess.run(_study(work), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for name in ("corpus", "teacher-seed0", "cnn-tiny-seed0", "dnn-seed0",
                 "smooth-tiny-eps0.1-seed0", "targets_top51-teacher-seed0"):  # fmt: skip
        assert f"stage {name}: complete, skipped" in result.stdout, name
    assert f"stage {blend.name}: done" in result.stdout
    assert dnn_info.stat().st_mtime_ns == finished  # not retrained
    assert (blend / "model.json").exists()

    study = json.loads((work / "report" / "study.json").read_text())
    # The command as a user types it: not the launcher's path, no path of this machine.
    assert study["command"] == " ".join([
        "python -m tfblend.study --work_dir=study --results=study/RESULTS.md",
        "--figures_dir=study/figures", *FLAGS,
    ])  # fmt: skip
    assert study["command"] in (work / "RESULTS.md").read_text()
    roles = {model["role"]: model for model in study["models"]}
    assert set(roles) == {
        "teacher",
        "cnn",
        "dnn",
        "smoothing",
        "blend",
        "ensemble",
        "teacher_window",
    }
    context = roles["teacher_window"]["context"]
    assert context == json.loads((work / "cnn-tiny-seed0" / "model.json").read_text())["context"]
    assert roles["teacher_window"]["scores"] == [f"scores/teacher-seed0-w{context}.json"]
    for model in study["models"]:
        for scores in model["scores"]:
            counts = json.loads((work / scores).read_text())
            assert len(counts["utt_ids"]) == len(counts["frames"]) > 0
    assert study["corpus"]["test"]["utterances"] == len(counts["utt_ids"])
    stages = set(json.loads((work / "report" / "stages.json").read_text()))
    assert stages >= {blend.name, "score", f"score ±{context} frames"}
    report = (work / "RESULTS.md").read_text()
    assert "blended CNN (k=51)" in report
    assert "## Context: the teacher on the CNN's window\n\nThe BLSTM reads" in report
    # The learning curves are seed 0's history.csv of every trained model (not the ensemble).
    curves = {curve["role"]: curve for curve in study["learning_curves"]}
    assert set(curves) == {"teacher", "cnn", "dnn", "smoothing", "blend"}
    for role, model in roles.items():
        if role not in ("ensemble", "teacher_window"):
            history = read_history(str(work / model["dirs"][0][0]))
            assert curves[role]["dev_accuracy"] == history["val_accuracy"], role
            assert curves[role]["train_accuracy"] == history["accuracy"], role
    assert curves["blend"]["seconds"] == study["stages"][blend.name] > 0
    assert "## Learning curves on dev (seed 0)" in report


class _Recorder:
    """A stage runner that records the stages a plan asks for instead of running them."""

    def __init__(self):
        self.stages, self.times = [], {}

    def stage(self, label, complete, script, **flag_values):
        self.stages.append((label, script, flag_values))


def test_longer_runs_are_runs_of_their_own(tmp_path):
    runner = _Recorder()
    plan = StagePlan(str(tmp_path), "medium", runner, student_epochs=1)
    student = StudentSpec.parse("small")
    assert (
        plan.cnn(student, 0) == plan.cnn(student, 0, epochs=1) == str(tmp_path / "cnn-small-seed0")
    )
    assert plan.cnn(student, 0, epochs=2) == str(tmp_path / "cnn-small-e2-seed0")
    blend = plan.blend(student, "T", "k51", (0.2, 1.0), 1, epochs=3)
    assert blend == str(tmp_path / "blend_small_k51_a0.2_T1-e3-seed1")
    assert [(label, flags["epochs"]) for label, _, flags in runner.stages] == [
        ("cnn-small-seed0", 1),
        ("cnn-small-seed0", 1),
        ("cnn-small-e2-seed0", 2),
        ("blend_small_k51_a0.2_T1-e3-seed1", 3),
    ]
    with pytest.raises(DataError, match=r"cnn-small-seed0/history\.csv: no accuracy"):
        plan.learning_curve("CNN", "cnn", str(tmp_path / "cnn-small-seed0"))


def test_stage_and_stop_stage_run_a_part_of_the_stages(tmp_path, capsys):
    from tfblend.study.stages import StageRunner, StagesDone

    runner = StageRunner(str(tmp_path))
    runner.select(["corpus", "teacher", "blend", "evaluate"], "teacher", "blend")
    assert [runner.runs(p) for p in ("corpus", "teacher", "blend", "evaluate")] == [
        False,
        True,
        True,
        False,
    ]
    with runner.part("corpus"):
        runner.stage("corpus", False, "no_such_step")  # not selected: not run
    with runner.part("teacher"):
        runner.stage("teacher-seed0", True, "no_such_step")  # selected and complete: skipped
    out = capsys.readouterr().out
    assert "stage corpus: not run (part corpus is not selected)" in out
    assert "stage teacher-seed0: complete, skipped" in out
    assert runner.times == {}
    with pytest.raises(StagesDone), runner.part("evaluate"):  # after --stop_stage: the end
        runner.stage("evaluate", False, "no_such_step")
    with pytest.raises(DataError, match="comes after"):
        runner.select(["corpus", "teacher"], "teacher", "corpus")
    with pytest.raises(DataError, match="no stage 'wer'"):
        runner.select(["corpus", "teacher"], "corpus", "wer")


def test_a_stage_run_again_is_charged_for_every_run(tmp_path, monkeypatch):
    """A stage's wall time in stages.json is the sum over the runs that worked on it until it
    succeeded (a stage killed with a session and continued in the next is charged for both),
    written while it runs and when it fails; a stage run again after it succeeded is charged for
    that run only."""
    from tfblend.study import stages

    monkeypatch.setattr(stages, "HEARTBEAT_SECONDS", 0.01)
    # An earlier run of teacher-seed0 was killed; export's succeeded (and is run again).
    (tmp_path / "stages.json").write_text('{"teacher-seed0": 100.0, "export": 100.0}')
    (tmp_path / "stages_unfinished.json").write_text('["teacher-seed0"]')
    runner = stages.StageRunner(str(tmp_path))
    with pytest.raises(DataError, match="stage export failed"):
        runner.stage("export", False, "no_such_step")
    assert 0 < runner.times["export"] < 100
    with pytest.raises(DataError, match="stage teacher-seed0 failed"):
        runner.stage("teacher-seed0", False, "no_such_step")
    charged = json.loads((tmp_path / "stages.json").read_text())["teacher-seed0"]
    assert charged > 100.0 and runner.times["teacher-seed0"] == charged
    with pytest.raises(DataError):
        runner.stage("teacher-seed0", False, "no_such_step")
    assert runner.times["teacher-seed0"] > charged
    unfinished = json.loads((tmp_path / "stages_unfinished.json").read_text())
    assert sorted(unfinished) == ["export", "teacher-seed0"]


def _tree(root) -> dict:
    """Every path under ``root`` with its size and modification time."""
    out = {}
    for directory, _, files in os.walk(root):
        for name in [".", *files]:
            path = os.path.join(directory, name)
            stat = os.stat(path)
            size = stat.st_size if name != "." else 0
            out[os.path.relpath(path, root)] = (size, stat.st_mtime_ns)
    return out


def test_a_second_study_or_recipe_on_a_locked_work_dir_stops_at_once(tmp_path, monkeypatch):
    """The work dir is locked for the whole run: a second study (or recipe) on it exits 1 with
    one line naming the holder, before it changes anything; and under a running study or
    recipe no step advises --overwrite for a model dir the study owns."""
    from tfblend.train.rundir import OWNER_ENV, holding, training_run

    work = tmp_path / "study"
    (work / "report").mkdir(parents=True)
    (work / "report" / "stages.json").write_text('{"corpus": 1.0}')
    with holding(str(work), "work dir"):
        before = _tree(work)
        study = subprocess.run(_study(work), capture_output=True, text=True, timeout=300)
        recipe = subprocess.run(
            [sys.executable, "-m", "tfblend.recipe", f"--work_dir={work}", "--size=tiny"],
            capture_output=True, text=True, timeout=300, cwd=tmp_path,
        )  # fmt: skip
        assert _tree(work) == before  # nothing changed, not even the lock file
    for result, program in ((study, "study.py"), (recipe, "recipe.py")):
        assert result.returncode == 1, result.stderr[-2000:]
        lines = result.stderr.strip().splitlines()
        assert lines[-1] == f"{program}: error: work dir {work} is in use by pid {os.getpid()}"
        assert "Traceback" not in result.stderr and "stage" not in result.stdout
    assert not (tmp_path / "savedmodels").exists()
    # A step run by a study (its runner sets TFBLEND_OWNER) never advises --overwrite.
    model_dir = work / "cnn-tiny-seed0"
    model_dir.mkdir()
    (model_dir / "model.json").write_text("{}")
    monkeypatch.setenv(OWNER_ENV, f"the study of {work}")
    with pytest.raises(DataError) as refused, training_run(str(model_dir), {}):
        pass
    assert "--overwrite" not in str(refused.value)
    assert str(refused.value).endswith(
        f"it is a run of the study of {work}: delete {model_dir} to train it again with these "
        "settings"
    )


def test_the_recorded_command_is_the_one_a_user_types(tmp_path):
    from tfblend.study.results import user_command

    here = tmp_path / "here"
    argv = [
        "/opt/checkout/tfblend/study/__main__.py",  # what -m puts in argv[0]
        f"--work_dir={here}/runs/study-small",
        "--size=small",
        f"--results={here}/RESULTS.md",
        f"--figures_dir={here}",
        "--sweep_fractions=",
        "--params_override=train.epochs=2",
        f"{here}/extra",
        f"--corpus_dir={tmp_path}/hereafter/corpus",  # outside the current directory: as given
        "--note=two words",
    ]
    assert user_command(argv, cwd=str(here)) == (
        "python -m tfblend.study --work_dir=runs/study-small --size=small --results=RESULTS.md "
        "--figures_dir=. --sweep_fractions= --params_override=train.epochs=2 extra "
        f"--corpus_dir={tmp_path}/hereafter/corpus '--note=two words'"
    )
    assert user_command(["x", "--work_dir=work/study"], cwd=str(here)) == (
        "python -m tfblend.study --work_dir=work/study"
    )
