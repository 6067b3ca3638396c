"""Every script documents itself, and bad input ends with one clear line, never a traceback."""

import pathlib

import pytest
from conftest import ROOT, run_script

SCRIPTS = sorted(p.name for p in (ROOT / "scripts").glob("*.py"))


@pytest.fixture(scope="module")
def help_outputs() -> dict:
    """Every script's ``--help`` (stdout, stderr), the processes run side by side: each spends
    most of its seconds importing TensorFlow, so one at a time cost ~6 s x every script."""
    import subprocess
    import sys

    processes = {
        script: subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / script), "--help"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for script in SCRIPTS
    }
    return {script: process.communicate(timeout=600) for script, process in processes.items()}


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_says_what_it_reads_writes_and_how(script, help_outputs):
    text, stderr = help_outputs[script]  # absl exits 1 after --help
    for part in ("Reads:", "Writes:", "Example"):
        assert part in text, f"{script} --help lacks {part!r}"
    assert "--" in text.split("flags:")[-1], f"{script} --help lists no flags"
    # TensorFlow's start-up noise (cuDNN/cuBLAS factories, oneDNN notices) stays hidden.
    noise = ("cuDNN", "cuBLAS", "cuFFT", "oneDNN", "TF-TRT", "cpu_feature_guard", "FutureWarning")
    assert not any(word in stderr for word in noise), stderr[-2000:]
    # A required flag with a default passes absl's check unset (absl warns): the script would
    # then run on nothing and exit 0 (score_utterances.py --run did).
    assert "mark_flag_as_required will pass" not in stderr, stderr[-2000:]


def _one_line_error(result, *fragments):
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    assert len(lines) == 1, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_corpus_dir(tmp_path):
    missing = tmp_path / "nowhere"
    result = run_script(
        "train_student.py", f"--corpus_dir={missing}", f"--model_dir={tmp_path / 'm'}", check=False
    )
    _one_line_error(result, "error:", str(missing / "train"))


def test_unknown_config_key(tiny_corpus, tmp_path):
    result = run_script(
        "blend.py",
        f"--corpus_dir={tiny_corpus}",
        f"--model_dir={tmp_path / 'm'}",
        f"--targets_dir={tmp_path}",
        "--params_override=distill.alpah=0.3",
        check=False,
    )
    _one_line_error(result, "error:", "alpah")


def test_model_dir_of_the_wrong_type(tiny_corpus, tiny_student, tmp_path):
    result = run_script(
        "dump_targets.py",
        f"--corpus_dir={tiny_corpus}",
        f"--teacher_dir={tiny_student}",
        f"--output_dir={tmp_path / 't'}",
        "--k=5",
        check=False,
    )
    _one_line_error(result, "error:", tiny_student, "not a teacher")


def test_export_fed_the_wrong_shape(tiny_student, tmp_path, tiny_corpus):
    run_script(
        "export.py", f"--model_dir={tiny_student}", f"--export_base={tmp_path}", "--name=cnn"
    )
    wrong = tmp_path / "wrong"
    (wrong / "test").mkdir(parents=True)
    # An utterance set whose feature dim differs from the export's (40): copy and edit manifest.
    import json
    import shutil

    for entry in (tiny_corpus / "test").iterdir():
        shutil.copy(entry, wrong / "test" / entry.name)
    manifest = json.loads((wrong / "test" / "manifest.json").read_text())
    manifest["feature_dim"] = 13
    (wrong / "test" / "manifest.json").write_text(json.dumps(manifest))
    result = run_script(
        "check_export.py",
        f"--export_dir={tmp_path / 'cnn' / '1'}",
        f"--corpus_dir={wrong}",
        check=False,
    )
    _one_line_error(result, "error:", "13", "40")


def test_every_script_is_an_absl_program():
    for script in SCRIPTS:
        text = pathlib.Path(ROOT / "scripts" / script).read_text()
        assert "cli.run(main)" in text, script
