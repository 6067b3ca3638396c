"""Targets from several teachers: the weighted mixture of their posteriors, before the top k."""

import filecmp
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from conftest import read_target_records, run_script

from tfblend.errors import DataError
from tfblend.evaluation import sequence_scorer, window_scorer
from tfblend.pipeline import eval_utterances
from tfblend.records import read_manifest
from tfblend.targets import dump_targets
from tfblend.targets.teachers import TeacherMixture, parse_weights
from tfblend.train.modeldir import load_model_dir


def test_mixture_is_the_weighted_mean_of_posteriors_before_top_k(
    tmp_path, tiny_corpus, tiny_teacher, tiny_student
):
    """A BLSTM (on utterances) and a CNN (on windows) mixed 0.3 / 0.7: the stored top 5 of every
    frame are the top 5 of 0.3 p_blstm + 0.7 p_cnn, each model scored on its own as the
    evaluation scores it. (One-epoch tiny models are nearly uniform, so every comparison is
    relative.)"""
    data_dir = str(tiny_corpus / "dev")
    out = str(tmp_path / "mix")
    manifest = dump_targets(
        data_dir, [tiny_teacher, tiny_student], out, teacher_weights="0.3,0.7", k=5
    )
    blstm, blstm_info = load_model_dir(tiny_teacher)
    cnn, cnn_info = load_model_dir(tiny_student)
    assert manifest["teacher"] == {
        "model": "mixture",
        "weights": [0.3, 0.7],
        "teachers": [
            {
                "dir": os.path.abspath(tiny_teacher),
                "model": blstm_info["model"],
                "sha256": blstm_info["sha256"],
                "kind": "sequence",
            },
            {
                "dir": os.path.abspath(tiny_student),
                "model": cnn_info["model"],
                "sha256": cnn_info["sha256"],
                "kind": "window",
            },
        ],
    }
    _, stored = read_target_records(out)
    score_blstm = sequence_scorer(blstm)
    score_cnn = window_scorer(cnn, cnn_info["context"])
    utterances = list(
        eval_utterances(data_dir, cmvn="global", cmvn_stats=str(tiny_corpus / "train"))
    )
    agree = frames = 0
    for utterance in utterances:
        features = utterance["features"]
        p_blstm = np.exp(score_blstm(features).astype(np.float64))
        p_cnn = np.exp(score_cnn(features).astype(np.float64))
        mixture = 0.3 * p_blstm + 0.7 * p_cnn
        record = stored[utterance["utt_id"].numpy().decode()]
        rows = np.arange(len(mixture))[:, None]
        # The stored probabilities are the mixture's at the stored ids (float16 storage), and
        # neither model's alone (they differ from it by a few per cent) ...
        kept = mixture[rows, record["ids"]]
        np.testing.assert_allclose(record["probs"], kept, rtol=2e-3)
        for alone in (p_blstm, p_cnn):
            assert np.median(np.abs(alone[rows, record["ids"]] / kept - 1)) > 0.01
        # ... and the ids are the mixture's five best, in order.
        agree += (record["ids"] == np.argsort(-mixture, axis=1)[:, :5]).all(axis=1).sum()
        frames += len(mixture)
    assert agree / frames > 0.99
    # Probabilities are mixed, not logits: the mixture's log-probabilities on a padded batch of
    # two utterances of different lengths (the CNN runs on each one's own windows).
    mixture = TeacherMixture([tiny_teacher, tiny_student], [0.3, 0.7])
    pair = sorted(utterances[:2], key=lambda u: -int(u["num_frames"]))
    lengths = [int(u["num_frames"]) for u in pair]
    assert lengths[0] > lengths[1]
    batch = np.zeros([2, lengths[0], pair[0]["features"].shape[1]], np.float32)
    for row, utterance in enumerate(pair):
        batch[row, : lengths[row]] = utterance["features"].numpy()
    log_mix = mixture(tf.constant(batch), tf.constant(lengths, tf.int32)).numpy()
    for row, utterance in enumerate(pair):
        p = 0.3 * np.exp(score_blstm(utterance["features"]).astype(np.float64))
        p += 0.7 * np.exp(score_cnn(utterance["features"]).astype(np.float64))
        np.testing.assert_allclose(log_mix[row, : lengths[row]], np.log(p), atol=2e-5)


def test_one_teacher_is_the_old_dump(tmp_path, tiny_corpus, tiny_teacher):
    data_dir = str(tiny_corpus / "dev")
    plain = dump_targets(data_dir, tiny_teacher, str(tmp_path / "plain"), k=5)
    listed = dump_targets(
        data_dir, [tiny_teacher], str(tmp_path / "listed"), teacher_weights=[1.0], k=5
    )
    assert plain["teacher"] == {
        "dir": os.path.abspath(tiny_teacher),
        "model": listed["teacher"]["model"],
        "sha256": load_model_dir(tiny_teacher)[1]["sha256"],
    }
    assert plain == listed
    for shard in plain["shards"]:
        assert filecmp.cmp(
            tmp_path / "plain" / shard["file"], tmp_path / "listed" / shard["file"], shallow=False
        )


def test_bad_weights():
    assert parse_weights(None, 4) == [0.25] * 4
    assert parse_weights("0.25,0.75", 2) == [0.25, 0.75]
    with pytest.raises(DataError, match="sum to 0.9"):
        parse_weights("0.5,0.4", 2)
    with pytest.raises(DataError, match="3 weights for 2"):
        parse_weights(["0.2", "0.3", "0.5"], 2)
    with pytest.raises(DataError, match="positive"):
        parse_weights("1.5,-0.5", 2)
    with pytest.raises(DataError, match="not a list of numbers"):
        parse_weights("half,half", 2)


def test_teachers_that_disagree_are_refused(tmp_path, tiny_teacher, tiny_student):
    other = tmp_path / "other_classes"
    shutil.copytree(tiny_student, other)
    info = json.loads((other / "model.json").read_text())
    info["num_classes"] = 99
    (other / "model.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match=r"disagree: .*other_classes has 99 classes"):
        TeacherMixture([tiny_teacher, str(other)])
    with pytest.raises(DataError, match="twice"):
        TeacherMixture([tiny_teacher, tiny_teacher])


def test_script_mixes_teachers_and_rejects_bad_weights(
    tmp_path, tiny_corpus, tiny_teacher, tiny_student
):
    common = [
        f"--corpus_dir={tiny_corpus}",
        "--split=dev",
        f"--teacher_dir={tiny_teacher}",
        f"--teacher_dir={tiny_student}",
        "--k=5",
    ]
    bad = run_script(
        "dump_targets.py",
        *common,
        f"--output_dir={tmp_path / 'bad'}",
        "--teacher_weights=0.5,0.6",
        check=False,
    )
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "sum to 1.1" in lines[0]
    assert not (tmp_path / "bad").exists()
    run_script("dump_targets.py", *common, f"--output_dir={tmp_path / 'mix'}")
    manifest = read_manifest(tmp_path / "mix", expected_format="tfblend.targets")
    assert manifest["teacher"]["weights"] == [0.5, 0.5]
    assert [t["dir"] for t in manifest["teacher"]["teachers"]] == [
        os.path.abspath(tiny_teacher),
        os.path.abspath(tiny_student),
    ]
