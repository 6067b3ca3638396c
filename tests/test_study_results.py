"""RESULTS.md from a study.json: tables, comparisons, goals and findings on real per-utterance data.

The utterances, voices and frame counts are the tiny student's real scores on the tiny test split
(:func:`tfblend.evaluation.utterances.score_model_dirs`); the student itself is the DNN row. As it
classifies next to no frame right after one epoch, the other "models" take their hits from the
real alignments (the previous frame's senone), some with a share of each utterance's correct
frames taken away (known to be worse on every utterance), or the same run under another name
(known to be indistinguishable). Word errors are the real scorer's
(:func:`tfblend.decoding.wer.score`) on hypotheses made from the test transcripts with a known
number of errors per utterance.
"""

import json
import os
import pathlib
import re

import numpy as np
import pytest
from conftest import run_script

from tfblend.decoding import wer as wer_lib
from tfblend.decoding.wer_runs import load_references
from tfblend.errors import DataError
from tfblend.evaluation.utterances import UtteranceCounts, score_model_dirs
from tfblend.records import iterate_utterances
from tfblend.study import statistics
from tfblend.study.compute import stage_kind
from tfblend.study.results import write_results

RESAMPLES = 2000


@pytest.fixture(scope="module")
def runs(tiny_corpus, tiny_student):
    """Score dicts of the tiny test split. "S": the tiny student's real scores (one epoch: it
    classifies next to no frame right). "A": a model that predicts each frame's aligned senone
    from the frame before (right wherever the senone has not changed: real hits from the real
    alignments); "A2" it with one hit less; "B" / "C" it with 30% / 60% of each utterance's hits
    removed."""
    student = score_model_dirs(str(tiny_corpus), "test", {"cnn": [tiny_student]})["cnn"][0]
    labels = {u.utt_id: np.asarray(u.labels) for u in iterate_utterances(tiny_corpus / "test")}
    hits = np.array([int((labels[u][1:] == labels[u][:-1]).sum()) for u in student.utt_ids])
    assert (hits > 0).all() and (hits < student.frames).all()

    def run(correct):
        return UtteranceCounts(student.utt_ids, student.speakers, correct, student.frames).to_dict()

    one_less = hits.copy()
    one_less[np.argmax(one_less)] -= 1
    return {
        "S": student.to_dict(),
        "A": run(hits),
        "A2": run(one_less),
        "B": run(hits - np.ceil(hits * 0.3).astype(np.int64)),
        "C": run(hits - np.ceil(hits * 0.6).astype(np.int64)),
    }


@pytest.fixture(scope="module")
def transcripts(tiny_corpus):
    refs = load_references(str(tiny_corpus / "test"))
    assert len(refs) >= 4 and all(len(words) >= 2 for words in refs.values())
    return refs


def _wer_json(refs, speakers, errors: int) -> dict:
    """decode.py's per-model wer.json for hypotheses with ``errors`` (0-2) errors per utterance:
    the first word substituted, then the last deleted."""
    hyps = {}
    for utt, words in refs.items():
        words = list(words)
        if errors >= 1:
            words[0] = "zzz"
        if errors >= 2:
            words = words[:-1]
        hyps[utt] = tuple(words)
    return wer_lib.score(refs, hyps, speakers)


def _write(directory, relative, value):
    path = os.path.join(directory, relative)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as stream:
        json.dump(value, stream)
    return relative


def _study(root, runs, refs, *, full=True) -> str:
    """Writes a study (score files, wer files, study.json) under ``root``; returns study.json."""
    scores = {key: _write(root, f"scores/{key}.json", value) for key, value in runs.items()}
    voice = dict(zip(runs["A"]["utt_ids"], runs["A"]["speakers"], strict=True))
    wers = {n: _write(root, f"wer/{n}/wer.json", _wer_json(refs, voice, n)) for n in (0, 1, 2)}

    def model(name, role, keys, wer=(), **extra):
        return {
            "name": name,
            "role": role,
            "scores": [scores[k] for k in keys],
            "wer": [wers[n] for n in wer] if full else [],
            **extra,
        }

    models = [
        model("teacher (BLSTM)", "teacher", ["C", "C"], [2, 2]),
        model("CNN baseline", "cnn", ["B", "B", "B"], [1, 1, 1]),
        model("DNN", "dnn", ["S"]),  # 1 of 3 seeds
        model("label smoothing", "smoothing", ["A", "A2", "A"] if full else ["B", "B", "B"]),
        model("blended CNN", "blend", ["A", "A2", "A"], [0, 0, 0], k=51),
        model("blended CNN, k=1", "sweep", ["C", "C", "C"], k=1),
        model("blended CNN, k=512", "sweep", ["A", "A2", "A"], k=512),
    ]
    if full:
        models += [
            model("blended CNN, sampled", "sampled", ["B", "B", "B"], draws=51),
            model("ensemble teacher+CNN", "ensemble", ["B", "B"], [1, 1]),
            model("blended from the ensemble", "ensemble_blend", ["A", "A", "A"], [1, 1, 1]),
            model("teacher on 21 frames", "teacher_window", ["B", "B"], context=10),
        ]
    study = {
        "command": "python scripts/study.py --size=tiny",
        "size": "tiny",
        "seeds": 3,
        "teacher_seeds": 2,
        "corpus": {
            split: {"utterances": 6, "frames": 1234, "hours": 0.01, "voices": 2}
            for split in ("train", "dev", "test")
        }
        | {"build_seconds": None},
        "num_classes": 5126,
        "models": models,
        "epochs": {"teacher": 1, "student": 1},
        "choices": {
            "student": {"grid": {"small": 0.31, "deep (dense)": 0.28}, "chosen": "small"},
            "smoothing": {"grid": {"0.1": 0.30, "0.3": 0.29}, "chosen": "0.1"},
        },
        "bytes_per_frame": {"1": 7, "51": 307, "512": 3073, "sampled": 307},
        "stages": {"teacher-seed0": 3600.0, "cnn-small-seed0": 1800.0,
                   "smooth-small-eps0.1-seed0": 900.0, "targets_top51-teacher-seed0": 450.0,
                   "score": 90.0, "export cnn-small-seed0": 60.0},
    }  # fmt: skip
    _write(root, "report/study.json", study)
    return os.path.join(root, "report", "study.json")


def _accuracy(run_dicts) -> dict:
    runs = [UtteranceCounts.from_dict(r) for r in run_dicts]
    return statistics.mean_std([r.correct.sum() / r.frames.sum() for r in runs])


def _pct(summary) -> str:
    text = f"{summary['mean'] * 100:.2f}"
    return text + (f" ± {summary['std'] * 100:.2f}" if summary["n"] > 1 else "")


def _row(markdown, name) -> list:
    line = next(x for x in markdown.splitlines() if x.startswith(f"| {name} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def _goal(markdown, goal, metric) -> str:
    section = markdown.split(f"**{goal}**:", 1)[1].split("**G", 1)[0]
    return next(x for x in section.splitlines() if x.startswith(f"- {metric}:"))


def test_results_of_a_full_study(tmp_path, runs, transcripts):
    study_json = _study(tmp_path / "study", runs, transcripts)
    output = tmp_path / "out" / "RESULTS.md"
    figures = tmp_path / "out" / "results"
    markdown = write_results(study_json, str(output), str(figures), num_resamples=RESAMPLES)
    assert output.read_text() == markdown
    if os.environ.get("TFBLEND_KEEP_RESULTS"):  # to read the report written here
        import shutil

        shutil.copytree(output.parent, os.environ["TFBLEND_KEEP_RESULTS"], dirs_exist_ok=True)
    # The model table: mean ± std over seeds recomputed from the files; fewer seeds flagged.
    blend = _row(markdown, "blended CNN")
    assert blend[3] == _pct(_accuracy([runs["A"], runs["A2"], runs["A"]]))
    assert " ± " in blend[3]
    assert _row(markdown, "teacher (BLSTM)")[2] == "2"
    assert _row(markdown, "teacher (BLSTM)")[3] == _pct(_accuracy([runs["C"]] * 2))
    assert _row(markdown, "DNN")[2] == "1 of 3 asked (fewer seeds)"
    assert _row(markdown, "DNN")[3] == _pct(_accuracy([runs["S"]]))
    assert _row(markdown, "DNN")[4] == "not decoded"
    words = sum(len(w) for w in transcripts.values())
    cnn_wer = statistics.mean_std([len(transcripts) / words] * 3)  # one error per utterance
    assert _row(markdown, "CNN baseline")[4] == f"{_pct(cnn_wer)} (3 seeds)"
    assert _row(markdown, "blended CNN")[4] == "0.00 ± 0.00 (3 seeds)"
    # Comparisons of the blend: a model against itself is indistinguishable with difference 0;
    # against a copy with correct frames removed it is better.
    comparisons = markdown.split("## The blended CNN against", 1)[1].split("## Goals", 1)[0]
    frame_part, wer_part = comparisons.split("\nWER", 1)
    smoothing = _row(frame_part, "label smoothing")
    assert smoothing[3:] == ["+0.00", "[+0.00, +0.00]", "not distinguishable"]
    cnn = _row(frame_part, "CNN baseline")
    truth = _accuracy([runs["A"], runs["A2"], runs["A"]])["mean"] - _accuracy([runs["B"]])["mean"]
    assert cnn[3] == f"{truth * 100:+.2f}" and cnn[5] == "better"
    assert _row(wer_part, "CNN baseline")[5] == "better"  # 0 errors against 1 per utterance
    assert _row(wer_part, "ensemble teacher+CNN")[5] == "better"
    # The goals, each with its interval.
    assert "**holds**" in _goal(markdown, "G1", "frame accuracy")
    assert "better" in _goal(markdown, "G1", "frame accuracy")
    assert "**holds**" in _goal(markdown, "G1", "WER")
    assert "**not distinguishable here**" in _goal(markdown, "G2", "frame accuracy")
    assert "**not run**" in _goal(markdown, "G2", "WER")  # dnn and smoothing not decoded
    g3 = _goal(markdown, "G3", "frame accuracy")
    assert "**holds**" in g3 and "fraction 1.000" in g3 and "[1.000, 1.000]" in g3
    g4 = _goal(markdown, "G4", "frame accuracy")
    assert "**does not hold**" in g4 and "[+0.00, +0.00]" in g4
    assert "**does not hold**" in _goal(markdown, "G5", "frame accuracy")
    assert "**not run**" in _goal(markdown, "G5", "WER")
    assert "sampled 307.0, top-51 307.0 (equal)" in markdown
    assert "**holds**" in _goal(markdown, "G6", "frame accuracy")
    assert "**not distinguishable here**" in _goal(markdown, "G6", "WER")  # same word errors
    # The findings follow from the goals.
    findings = [x for x in markdown.splitlines() if x.startswith("- Finding")]
    assert [re.search(r"\*\*(.+?)\*\*", x).group(1) for x in findings] == [
        "holds",
        "not distinguishable here",
        "holds",
    ]
    # Plots exist and are linked relative to RESULTS.md; the sweep table has bytes and k %.
    for name in ("per_voice_accuracy.png", "per_voice_wer.png", "k_sweep.png"):
        assert (figures / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"](results/{name})" in markdown
    assert _row(markdown, "51")[:4] == ["51", "0.99", "307.0", blend[3] + " (3 seeds)"]
    # The context section: each model against the teacher scored on windows ("B"), one line per
    # role, the teacher on whole utterances ("C") worse, the CNN ("B" too) indistinguishable.
    context = markdown.split("## Context", 1)[1].split("\n## ", 1)[0]
    assert "reads 21 frames" in context
    readings = [x for x in context.splitlines() if x.startswith("- ")]
    assert [x.rsplit(": ", 1)[1] for x in readings] == ["worse", "not distinguishable", "better"]
    assert readings[1].startswith("- CNN baseline − teacher on 21 frames (finding 1 at equal")
    assert "+0.00 points, 95% CI [+0.00, +0.00]" in readings[1]
    assert _row(markdown, "teacher on 21 frames")[4] == "not decoded"
    assert "Build time: not recorded." in markdown
    assert "Total: 6,900 s = 1.92 h" in markdown
    assert _row(markdown, "CNN baselines (and preset candidates)")[1] == "1,800"
    assert _row(markdown, "label-smoothing controls")[1] == "900"
    assert not [f for f in os.listdir(tmp_path / "out") if ".tmp-" in f]


def test_partial_study_says_not_run(tmp_path, runs, transcripts):
    study_json = _study(tmp_path / "study", runs, transcripts, full=False)
    markdown = write_results(
        study_json, str(tmp_path / "RESULTS.md"), str(tmp_path / "fig"), num_resamples=RESAMPLES
    )
    assert "**holds**" in _goal(markdown, "G2", "frame accuracy")  # better than all four
    for goal in ("G5", "G6"):
        for metric in ("frame accuracy", "WER"):
            assert "**not run**" in _goal(markdown, goal, metric)
    assert "**not run**" in _goal(markdown, "G1", "WER")
    assert "Test WER per voice: not run" in markdown
    assert "Not run: blended CNN was not decoded." in markdown
    assert not (tmp_path / "fig" / "per_voice_wer.png").exists()
    assert _row(markdown, "blended CNN")[4] == "not decoded"
    assert "Not run by this study (`--windowed_teacher`)." in markdown


def test_g3_undefined_when_the_largest_k_gains_nothing(tmp_path, runs, transcripts):
    study_json = _study(tmp_path / "study", runs, transcripts)
    with open(study_json) as stream:
        study = json.load(stream)
    large = next(m for m in study["models"] if m.get("k") == 512)
    cnn = next(m for m in study["models"] if m["role"] == "cnn")
    large["scores"] = cnn["scores"]  # k = 512 scores exactly as the CNN: no gain to keep
    with open(study_json, "w") as stream:
        json.dump(study, stream)
    markdown = write_results(
        study_json, str(tmp_path / "RESULTS.md"), str(tmp_path / "fig"), num_resamples=RESAMPLES
    )
    g3 = _goal(markdown, "G3", "frame accuracy")
    assert "**not distinguishable here**" in g3
    assert "blended CNN, k=512 (k = 512) − CNN baseline: +0.00 points, 95% CI [+0.00, +0.00]" in g3
    assert "undefined here" in g3 and "fraction" not in g3


def test_bad_inputs_name_the_file(tmp_path, runs, transcripts):
    study_json = _study(tmp_path / "study", runs, transcripts)
    os.remove(tmp_path / "study" / "scores" / "C.json")  # the teacher's
    output = tmp_path / "RESULTS.md"
    with pytest.raises(DataError, match=r"scores/C\.json"):
        write_results(study_json, str(output), str(tmp_path / "fig"))
    assert not output.exists()
    result = run_script(
        "write_results.py",
        f"--study_dir={tmp_path / 'study'}",
        f"--output={output}",
        f"--figures_dir={tmp_path / 'fig'}",
        check=False,
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 1 and len(lines) == 1 and "scores/C.json" in lines[0], lines
    assert not output.exists()
    # A WER file over other utterances than the others.
    study_json = _study(tmp_path / "study2", runs, transcripts)
    path = tmp_path / "study2" / "wer" / "1" / "wer.json"  # read after the teacher's
    value = json.loads(path.read_text())
    value["per_utterance"].pop(sorted(value["per_utterance"])[0])
    path.write_text(json.dumps(value))
    with pytest.raises(DataError, match=r"wer/1/wer\.json: decoded other utterances"):
        write_results(study_json, str(output), str(tmp_path / "fig"))
    # A choice made on dev that is not in its grid.
    study = json.loads(pathlib.Path(study_json).read_text())
    study["choices"]["smoothing"]["chosen"] = "0.2"
    pathlib.Path(study_json).write_text(json.dumps(study))
    with pytest.raises(DataError, match=r"study\.json: choices\.smoothing: chosen '0\.2'"):
        write_results(study_json, str(output), str(tmp_path / "fig"))


def test_minimal_study_never_crashes(tmp_path, runs):
    """Two models and nothing else (no corpus facts, no WER, no sweep, no stage times)."""
    _write(tmp_path, "scores/A.json", runs["A"])
    models = [
        {"name": "cnn", "role": "cnn", "seeds": 1, "scores": ["scores/A.json"]},
        {"name": "blend", "role": "blend", "seeds": 1, "scores": ["scores/A.json"]},
    ]
    _write(tmp_path, "report/study.json", {"models": models})
    markdown = write_results(
        str(tmp_path / "report" / "study.json"),
        str(tmp_path / "RESULTS.md"),
        str(tmp_path / "fig"),
        num_resamples=RESAMPLES,
    )
    assert "**not run** — blend has no k in study.json" in _goal(markdown, "G3", "frame accuracy")
    assert "**not run** — no teacher model" in _goal(markdown, "G1", "frame accuracy")
    assert "**not run**" in _goal(markdown, "G2", "frame accuracy")
    comparisons = markdown.split("## The blended CNN against", 1)[1]
    assert _row(comparisons, "cnn")[3:] == ["+0.00", "[+0.00, +0.00]", "not distinguishable"]
    assert "Not recorded: study.json has no stage times." in markdown
    assert "## Learning curves on dev (seed 0)\n\nNot recorded by this study." in markdown
    assert [x.endswith("**not run** (G1: frame accuracy not run, WER not run).") for x in
            markdown.splitlines() if x.startswith("- Finding 1")] == [True]  # fmt: skip


def _curve(name, role, train, dev, seconds=None) -> dict:
    return {"name": name, "role": role, "run": name, "train_accuracy": train,
            "dev_accuracy": dev, "seconds": seconds}  # fmt: skip


def test_learning_curves_section(tmp_path, runs, transcripts):
    """The section renders study.json's curves (as scripts/study.py stores them) and compares
    them: the teacher after the students' epochs, the longer runs, the blend's lead at each."""
    study_json = _study(tmp_path / "study", runs, transcripts)
    study = json.loads(pathlib.Path(study_json).read_text())
    study["longer_epochs"] = 2
    study["learning_curves"] = [
        _curve("teacher", "teacher", [0.30, 0.55], [0.40, 0.60], 200.0),
        _curve("cnn", "cnn", [0.28], [0.30], 90.0),
        _curve("blend", "blend", [0.36], [0.34]),
        _curve("cnn long", "cnn_longer", [0.30, 0.47], [0.35, 0.45]),
        _curve("blend long", "blend_longer", [0.33, 0.50], [0.38, 0.51]),
    ]
    pathlib.Path(study_json).write_text(json.dumps(study))
    markdown = write_results(
        study_json, str(tmp_path / "R.md"), str(tmp_path / "fig"), num_resamples=RESAMPLES
    )
    section = markdown.split("## Learning curves on dev (seed 0)", 1)[1].split("\n## ", 1)[0]
    assert _row(section, "teacher") == ["teacher", "2", "40.00 → 60.00", "55.00", "-5.00", "100"]
    assert _row(section, "blend")[3:] == ["36.00", "+2.00", "not recorded"]
    for line in (
        "- The teacher after 1 epoch against the CNN trained for 1 epoch (the same passes over "
        "the data): +10.00 points on dev.",
        "- The teacher (2 epochs) against the CNN (1 epoch): +30.00 points on dev.",
        "- The teacher (2 epochs) against the CNN (2 epochs): +15.00 points on dev.",
        "- Training the CNN for 2 epochs instead of 1 epoch gains +15.00 points on dev.",
        "- The blended CNN's lead over the CNN at 1 epoch: +4.00 points on dev.",
        "- The blended CNN's lead over the CNN at 2 epochs: +6.00 points on dev.",
        "- Training accuracy not above dev (no sign of overfitting at this budget): teacher, "
        "cnn, blend long.",
    ):
        assert line in section.splitlines(), (line, section)
    study["learning_curves"][1]["dev_accuracy"] = [0.3, 0.4]  # two epochs, one train accuracy
    pathlib.Path(study_json).write_text(json.dumps(study))
    with pytest.raises(DataError, match=r"study\.json: a learning curve needs a name, a role"):
        write_results(study_json, str(tmp_path / "R.md"), str(tmp_path / "fig"))


def test_stage_kinds():
    assert stage_kind("teacher-seed1") == "teachers"
    assert stage_kind("smooth-small-eps0.3-seed0") == "label-smoothing controls"
    assert stage_kind("blend_deep-c16_k51_a0.5_T1-seed2").startswith("blended CNNs")
    assert stage_kind("wer teacher-seed0+cnn-small-seed0") == "decoding (WER)"
    assert stage_kind("export dnn-seed0") == "exports"
    assert stage_kind("targets_top513-teacher-seed0") == "target dumps"
    assert stage_kind("mystery") == "mystery"
    assert stage_kind("cnn-small-e2-seed0") == stage_kind("blend_small_k51_a0.2_T1-e2-seed0")
    assert stage_kind("cnn-small-e2-seed0").startswith("longer runs")
    assert stage_kind("export cnn-small-e2-seed0") == "exports"


def test_models_are_put_beside_the_gpu_replication(tmp_path, runs, transcripts):
    """A medium study's teacher, CNN and blend each get the replication's figures and their
    distance to them (0 inside the range over seeds); another size compares nothing. (The
    verdicts: test_study_reference.py.)"""
    from tfblend.study.reference import REPLICATION, distance

    assert distance(68.0, (69.29, 68.35)) == pytest.approx(-0.35)
    assert distance(68.8, (69.29, 68.35)) == 0.0
    assert distance(70.5, (69.47,)) == pytest.approx(1.03)
    study_json = _study(tmp_path / "study", runs, transcripts)
    markdown = write_results(
        study_json, str(tmp_path / "R.md"), str(tmp_path / "fig"), num_resamples=RESAMPLES
    )
    assert "Not compared: the replication trained on the medium corpus, this study on 'tiny'" in (
        markdown
    )
    study = json.loads(pathlib.Path(study_json).read_text())
    study["size"] = "medium"
    pathlib.Path(study_json).write_text(json.dumps(study))
    markdown = write_results(
        study_json, str(tmp_path / "R.md"), str(tmp_path / "fig"), num_resamples=RESAMPLES
    )
    section = markdown.split("## Against the GPU replication", 1)[1]
    row = _row(section, "blended CNN")
    # The blend's accuracy as the model table shows it, beside the replication's figure.
    assert row[2] == f"{_row(markdown, 'blended CNN')[3]} (3)"
    assert row[3] == "69.47" and row[5] in ("within", "below", "above")
    assert [_row(section, name)[3] for name in ("teacher (BLSTM)", "CNN baseline")] == [
        "67.14 / 67.21",
        "69.29 / 68.35",
    ]
    assert len(REPLICATION) == 3
    assert "Total: 6,900 s = 1.92 h of wall time. The budget is 12 h: within it." in markdown
