"""No flag is silently ignored: a flag (or config setting) that does not apply is refused with one
line naming it, or applied with an observable effect; a second recipe on a finished work dir runs
no stage and adds no export version."""

import json
import os
import pathlib
import re
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, run_script

from tfblend import records
from tfblend.config import load_experiment, shipped_config


def _refused(result, *fragments) -> str:
    """The one error line of a refused script, checked to name every fragment."""
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# -- train_student and blend: --model and the config agree -----------------------------------


@pytest.mark.parametrize(
    "config",
    [f"--config_file={shipped_config('dnn')}", "--params_override=model.type=dnn"],
    ids=["config_file", "params_override"],
)
def test_a_model_flag_that_contradicts_the_config_is_refused(tiny_corpus, tmp_path, config):
    result = run_script(
        "train_student.py", f"--corpus_dir={tiny_corpus}", f"--model_dir={tmp_path / 'm'}",
        config, "--model=vgg", check=False,
    )  # fmt: skip
    _refused(result, "--model=vgg", "model.type=dnn")
    assert not (tmp_path / "m").exists()


def test_the_configs_model_type_is_trained_without_a_model_flag(tiny_corpus, tmp_path):
    """Formerly --model's default (vgg) replaced the config's model.type: a DNN config trained a
    VGG. Now the config's model is trained (and with it dnn.yaml, the DNN's own defaults)."""
    model_dir = tmp_path / "dnn"
    run_script(
        "train_student.py", f"--corpus_dir={tiny_corpus}", f"--model_dir={model_dir}",
        "--params_override=model.type=dnn,model.dnn.hidden_units=[16],data.shuffle_buffer=1024",
        "--epochs=1", "--batch_size=64",
    )  # fmt: skip
    info = json.loads((model_dir / "model.json").read_text())
    assert info["model"] == "dnn"
    experiment = (model_dir / "experiment.yaml").read_text()
    assert "chunk_frames: 0" in experiment  # dnn.yaml's, not student.yaml's 8


# -- strategies: --num_replicas ---------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["default", "multi_worker"])
def test_num_replicas_without_the_mirrored_strategy_is_refused(tiny_corpus, tmp_path, strategy):
    result = run_script(
        "train_teacher.py", f"--corpus_dir={tiny_corpus}", f"--model_dir={tmp_path / 'm'}",
        f"--strategy={strategy}", "--num_replicas=2", check=False,
    )  # fmt: skip
    _refused(result, "--num_replicas=2", "mirrored", f"--strategy={strategy}")
    assert not (tmp_path / "m").exists()


# -- config settings a run would ignore ---------------------------------------------------------


def test_label_smoothing_applies_to_the_hard_term_of_a_blend():
    """train.label_smoothing was dropped when blending; now the hard-label term is smoothed
    and the blend's alpha, temperature and soft loss are kept."""
    import keras
    import tensorflow as tf

    from tfblend.distill import losses
    from tfblend.train.experiments import LabelSmoothingDistiller, _distiller

    experiment = load_experiment(shipped_config("blend"), "train.label_smoothing=0.2")
    student = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5)])
    soft = losses.SparseSoftCrossEntropy()
    distiller = _distiller(student, None, "blend", experiment, soft, {"k": 2})
    assert isinstance(distiller, LabelSmoothingDistiller)
    assert distiller.alpha == experiment.distill.alpha == 0.5
    assert distiller.soft_loss_fn is soft and distiller.epsilon == pytest.approx(0.2)
    logits = tf.constant(np.random.default_rng(0).normal(size=(4, 5)), tf.float32)
    labels = tf.constant([0, 1, 2, 4])
    log_probs = tf.nn.log_softmax(logits).numpy()
    expected = -0.8 * log_probs[np.arange(4), labels.numpy()] - 0.2 * log_probs.mean(axis=1)
    np.testing.assert_allclose(distiller.hard_loss(labels, logits), expected, rtol=1e-5)
    plain = _distiller(student, None, "blend", load_experiment(shipped_config("blend")), soft, None)
    assert not isinstance(plain, LabelSmoothingDistiller)


@pytest.mark.parametrize(
    ("script", "setting", "why"),
    [
        ("train_teacher.py", "train.label_smoothing=0.1", "teacher"),  # its loss has no smoothing
        ("train_student.py", "distill.alpha=0.3", "hard labels"),  # no teacher term to weigh
    ],
)
def test_a_setting_the_model_has_no_use_for_is_refused(script, setting, why, tiny_corpus, tmp_path):
    result = run_script(
        script, f"--corpus_dir={tiny_corpus}", f"--model_dir={tmp_path / 'm'}",
        f"--params_override={setting}", check=False,
    )  # fmt: skip
    _refused(result, setting, why)


def test_a_tail_with_an_online_teacher_is_refused(tiny_corpus, tiny_teacher, tmp_path):
    result = run_script(
        "blend.py", f"--corpus_dir={tiny_corpus}", f"--model_dir={tmp_path / 'm'}",
        f"--teacher_dir={tiny_teacher}", "--tail=ghost", check=False,
    )  # fmt: skip
    _refused(result, "--tail does not apply with --teacher_dir", "online teacher")
    result = run_script(
        "blend.py", f"--corpus_dir={tiny_corpus}", f"--model_dir={tmp_path / 'm'}",
        f"--teacher_dir={tiny_teacher}", "--params_override=distill.tail=ghost", check=False,
    )  # fmt: skip
    _refused(result, "distill.tail=ghost does not apply", "online teacher")
    assert not (tmp_path / "m").exists()


# -- dump_targets -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def top3(tiny_corpus, tmp_path_factory) -> str:
    """A top-3 target set of the tiny dev split, written with the library's writer."""
    dev = tiny_corpus / "dev"
    manifest = records.read_manifest(dev)
    num_classes = manifest["num_classes"]
    utterances = records.iterate_utterances(dev)
    shards = []
    for shard in manifest["shards"]:
        rows = []
        for _ in range(shard["num_utterances"]):
            utt = next(utterances)
            ids = (utt.labels[:, None] + np.arange(3)) % num_classes
            probs = np.tile([0.6, 0.3, 0.1], (len(ids), 1))
            rows.append((utt.utt_id, ids, probs, None))
        shards.append(rows)
    out = tmp_path_factory.mktemp("targets") / "top3"
    records.write_target_set(
        out, manifest, shards, k=3, method="topk", p=None, tail="renormalize",
        teacher={"dir": "none", "model": "lstm", "sha256": "0" * 64},
    )  # fmt: skip
    return str(out)


@pytest.mark.parametrize(
    "flag, why",
    [
        ("--method=topp", "keeps"),
        ("--value_encoding=log_uint8", "keeps"),
        ("--teacher_dir=somewhere", "no teacher runs"),
        ("--seed=3", "draws nothing"),
        ("--num_shards=2", "one process"),
        ("--p=0.9", "mass"),
    ],
)
def test_from_targets_refuses_what_a_cut_would_ignore(top3, tmp_path, flag, why):
    result = run_script(
        "dump_targets.py", f"--from_targets={top3}", "--k=2", f"--output_dir={tmp_path / 'k2'}",
        flag, check=False,
    )  # fmt: skip
    name = flag.split("=")[0]
    _refused(result, f"{name} does not apply with --from_targets", why)
    assert not (tmp_path / "k2").exists()


def test_from_targets_applies_top_fraction_and_agreeing_flags(top3, tiny_corpus, tmp_path):
    """--top_fraction chooses the cut's k (it was ignored); flags that agree with the source
    (--method=topk, its tail and encoding) are accepted."""
    num_classes = records.read_manifest(tiny_corpus / "dev")["num_classes"]
    run_script(
        "dump_targets.py", f"--from_targets={top3}", f"--top_fraction={2 / num_classes}",
        f"--output_dir={tmp_path / 'k2'}", "--method=topk", "--tail=renormalize",
        "--value_encoding=float16",
    )  # fmt: skip
    manifest = records.read_manifest(tmp_path / "k2", expected_format="tfblend.targets")
    assert manifest["k"] == 2 and manifest["derived_from"]["k"] == 3


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--p=0.9"], "--p does not apply with --method=topk"),
        (["--seed=1"], "--seed does not apply with --method=topk"),
        (["--method=sampled", "--tail=ghost"], "--tail does not apply with --method=sampled"),
    ],
)
def test_a_dump_refuses_settings_its_method_ignores(tmp_path, flags, fragment):
    result = run_script(
        "dump_targets.py", f"--corpus_dir={tmp_path}", f"--teacher_dir={tmp_path}", "--k=2",
        f"--output_dir={tmp_path / 'out'}", *flags, check=False,
    )  # fmt: skip
    _refused(result, fragment)
    assert not (tmp_path / "out").exists()


# -- the other steps --------------------------------------------------------------------------


def test_corpus_and_import_flags_that_do_not_apply_are_refused(tmp_path):
    result = run_script(
        "make_corpus.py", f"--output_dir={tmp_path / 'c'}", "--size=tiny", "--prompts=uniform",
        "--vocabulary=500", check=False,
    )  # fmt: skip
    _refused(result, "--vocabulary does not apply with --prompts=uniform")
    result = run_script(
        "import_kaldi.py", f"--kaldi_data_dir={tmp_path}", f"--alignments={tmp_path}/a.txt",
        "--num_classes=10", "--num_phones=40", f"--output_dir={tmp_path / 'k'}", check=False,
    )  # fmt: skip
    _refused(result, "--num_phones does not apply without --phone_alignments")
    assert not (tmp_path / "c").exists() and not (tmp_path / "k").exists()


# -- the recipe: a second run on a finished work dir --------------------------------------------


def _recipe(work, exports, *extra):
    result = subprocess.run(
        [sys.executable, "-m", "tfblend.recipe", f"--work_dir={work}", "--size=tiny",
         f"--export_base={exports}", "--export_name=blend", "--nower", *extra],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    return result.stdout


def _ran(stdout: str) -> list[str]:
    return re.findall(r"stage (.+): done in", stdout)


def _snapshot(directory) -> dict:
    return {
        os.path.relpath(os.path.join(root, name), directory): os.stat(
            os.path.join(root, name)
        ).st_mtime_ns
        for root, _, files in os.walk(directory)
        for name in files
        if name != ".lock"  # the work dir's lock holds the pid of the run holding it
    }


def test_a_second_recipe_runs_no_stage_and_adds_no_export(
    tiny_corpus, tiny_teacher, tiny_student, tmp_path
):
    """The session's tiny models stand in for the recipe's trained ones (and an empty target
    set for its dump: complete, never read); the recipe evaluates, exports and scores them. A
    second run (and one that finds no stage record, as a work dir of an earlier version has
    none) runs no stage, writes nothing and keeps one version; --stage runs a stage again."""
    from tfblend.study.plan import StudentSpec
    from tfblend.targets.sparsify import resolve_k

    work, exports = tmp_path / "work", tmp_path / "savedmodels"
    work.mkdir()
    student = load_experiment(shipped_config("student"))
    key = StudentSpec(student.model.vgg.preset, student.data.chunk_frames).key
    distill = load_experiment(shipped_config("blend")).distill
    k = resolve_k(records.read_manifest(tiny_corpus / "train")["num_classes"], top_fraction=0.01)
    (work / "corpus").symlink_to(tiny_corpus)
    (work / "teacher-seed0").symlink_to(tiny_teacher)
    for name in (f"cnn-{key}-seed0", "dnn-seed0", f"smooth-{key}-eps0.1-seed0"):
        (work / name).symlink_to(tiny_student)
    blend = f"blend_{key}_k{k}_a{distill.alpha:g}_T{distill.temperature:g}-seed0"
    (work / blend).symlink_to(tiny_student)
    targets = work / f"targets_top{k}-teacher-seed0"  # complete; never read (the blend is)
    targets.mkdir()
    (targets / "manifest.json").write_text("{}")

    first = _recipe(work, exports)
    assert _ran(first) == ["evaluate", "export", "score"], first[-3000:]
    assert os.listdir(exports / "blend") == ["1"]
    before = _snapshot(tmp_path)
    started = time.time()
    second = _recipe(work, exports)
    assert _ran(second) == [], second[-3000:]
    for label in ("evaluate", "export", "score"):
        assert f"stage {label}: complete, skipped" in second
    assert _snapshot(tmp_path) == before
    assert os.listdir(exports / "blend") == ["1"]
    os.remove(work / "report" / "stage_commands.json")  # as an earlier version left it
    before = _snapshot(tmp_path)
    third = _recipe(work, exports)
    assert _ran(third) == [] and _snapshot(tmp_path) == before, third[-3000:]
    print(f"second and third runs: {(time.time() - started) / 2:.1f} s each")

    # Kaldi style, a stage named again runs again (the export adds a version).
    again = _recipe(work, exports, "--stage=export", "--stop_stage=score")
    assert _ran(again) == ["export", "score"], again[-3000:]
    assert sorted(os.listdir(exports / "blend")) == ["1", "2"]


def _touch(path, when: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text("{}")
    os.utime(path, (when, when))


def test_a_stage_is_current_until_its_inputs_or_command_change(tmp_path):
    """StageRunner.current, make-style: the same command, outputs newer than the inputs."""
    from tfblend.study.stages import StageRunner

    report, model, out = tmp_path / "report", tmp_path / "m" / "model.json", tmp_path / "out.json"
    _touch(model, 1000.0)
    _touch(out, 2000.0)
    report.mkdir()
    command = ["-m", "tfblend.steps.evaluate", "--model=a=m"]
    (report / "stage_commands.json").write_text(
        json.dumps({"evaluate": {"command": command, "finished": 2000.0}})
    )
    runner = StageRunner(str(report))

    def current(**flag_values):
        flag_values = flag_values or {"model": ["a=m"]}
        return runner.current("evaluate", "evaluate", inputs=[model], outputs=[out], **flag_values)

    assert current()
    assert not current(model=["a=m", "b=n"])  # other flags
    _touch(model, 3000.0)  # the model trained again
    assert not current()
    _touch(model, 1000.0)
    out.unlink()
    assert not current()  # an output is missing
    assert not runner.current("evaluate", "evaluate", inputs=[tmp_path / "gone"], outputs=[])

    # A work dir of an earlier version: no record; stages.json says the stage finished.
    _touch(out, 2000.0)
    (report / "stage_commands.json").unlink()
    (report / "stages.json").write_text('{"evaluate": 5.0}')
    os.utime(report / "stages.json", (2500.0, 2500.0))
    assert StageRunner(str(report)).current("evaluate", "evaluate", inputs=[model], outputs=[out])
    (report / "stages_unfinished.json").write_text('["evaluate"]')  # it failed last time
    assert not StageRunner(str(report)).current("evaluate", "evaluate", inputs=[model])


def test_an_export_is_current_until_its_model_is_trained_again(tmp_path):
    from tfblend.study.stages import export_current, export_metadata, remove_stale_export

    model_dir, other = tmp_path / "blend", tmp_path / "other"
    export = tmp_path / "exports" / "blend" / "1"
    metadata = pathlib.Path(export_metadata(str(export)))
    _touch(model_dir / "model.json", 1000.0)
    _touch(other / "model.json", 1000.0)
    metadata.parent.mkdir(parents=True)
    metadata.write_text(json.dumps({"model_dir": str(model_dir)}))
    os.utime(metadata, (2000.0, 2000.0))
    assert export_current(str(export), str(model_dir))
    assert not export_current(str(export), str(other))  # another model's export
    remove_stale_export(str(export), str(model_dir))
    assert export.exists()
    _touch(model_dir / "model.json", 3000.0)  # trained again
    assert not export_current(str(export), str(model_dir))
    remove_stale_export(str(export), str(model_dir))
    assert not export.exists()
