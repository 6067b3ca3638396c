"""The synthetic corpus: voices held out, labels consistent, frames aligned, bytes reproducible."""

import dataclasses
import filecmp
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from tfblend import features, records
from tfblend.corpus import align, build, design, espeak, mdef
from tfblend.errors import DataError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _manifests(root):
    return {split: records.read_manifest(root / split) for split in design.SPLITS}


def test_mdef_is_read_not_assumed(tmp_path):
    model = mdef.default_senone_model()
    # The en-us model's documented inventory, read from its binary mdef.
    assert (model.num_senones, model.num_phones, model.num_ci_senones) == (5126, 42, 126)
    assert model.phone_names[model.silence_phone] == "SIL"
    # Context-independent senones come first, three states per phone, in phone order.
    np.testing.assert_array_equal(model.senone_to_phone[:126], np.repeat(np.arange(42), 3))
    np.testing.assert_array_equal(model.senone_to_state[:126], np.tile(np.arange(3), 42))
    assert set(model.senone_to_phone.tolist()) == set(range(42))
    # A damaged copy is refused, naming the file.
    with open(model.path, "rb") as f:
        data = f.read()
    (tmp_path / "short").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="short"):
        mdef.read_mdef(str(tmp_path / "short"))
    (tmp_path / "text").write_bytes(b"0.3\n42 n_base\n")
    with pytest.raises(DataError, match="BMDF"):
        mdef.read_mdef(str(tmp_path / "text"))


def test_held_out_voices(tiny_corpus):
    manifests = _manifests(tiny_corpus)
    speakers = {split: set(m["speakers"]) for split, m in manifests.items()}
    assert not speakers["train"] & speakers["test"]
    assert not speakers["train"] & speakers["dev"]
    assert not speakers["dev"] & speakers["test"]
    planned = design.voices("tiny")
    for split in design.SPLITS:
        assert speakers[split] <= set(planned[split])
        assert manifests[split]["metadata"]["corpus"]["voices"] == planned
    # Every size: splits disjoint, each held-out voice's accent and variant seen in training.
    for size in design.SIZES:
        plan = design.voices(size)
        assert not set(plan["train"]) & (set(plan["dev"]) | set(plan["test"]))
        train_parts = {p for v in plan["train"] for p in v.split("+")}
        if size != "tiny":
            assert all(set(v.split("+")) <= train_parts for v in plan["dev"] + plan["test"])
    assert sum(len(v) for v in design.voices("small").values()) >= 20


def test_labels_phones_and_frames(tiny_corpus):
    model = mdef.default_senone_model()
    for split, manifest in _manifests(tiny_corpus).items():
        assert manifest["num_classes"] == model.num_senones
        assert manifest["num_phones"] == model.num_phones
        assert manifest["metadata"]["corpus"]["phone_names"] == list(model.phone_names)
        assert manifest["feature_dim"] == 40
        records.verify_shards(tiny_corpus / split, manifest)
        for utt in records.iterate_utterances(tiny_corpus / split):
            frames = utt.features.shape[0]
            assert utt.labels.shape == utt.phones.shape == (frames,)
            assert utt.labels.min() >= 0 and utt.labels.max() < model.num_senones
            np.testing.assert_array_equal(utt.phones, model.senone_to_phone[utt.labels])
            # Pauses lead and trail every utterance: silence at both ends, speech in between.
            assert utt.phones[0] == utt.phones[-1] == model.silence_phone
            assert 0.02 < np.mean(utt.phones == model.silence_phone) < 0.5
            # HMM states run 0, 1, 2 within each phone, none skipped: every change of senone
            # is the next state of the same phone or state 0 of the next phone.
            states = model.senone_to_state[utt.labels]
            change = np.flatnonzero(np.diff(utt.labels)) + 1
            assert states[0] == 0 and states[-1] == 2
            assert set(np.unique(states[change] - states[change - 1]).tolist()) <= {1, -2}


def test_frames_match_the_audio(tiny_corpus):
    jobs = {job.utt_id: job for job in design.plan_corpus("tiny", 0)}
    config = features.FeatureConfig()
    for utt in list(records.iterate_utterances(tiny_corpus / "dev"))[:2]:
        pcm, _ = design.render(jobs[utt.utt_id])
        assert utt.features.shape[0] == align.num_frames(pcm.shape[0])
        expected = features.log_mel(pcm / 32768.0, config, num_frames=utt.features.shape[0])
        np.testing.assert_allclose(utt.features, expected.numpy(), atol=1e-4)


def test_skipped_utterances_are_counted(tiny_corpus):
    plan = design.plan_corpus("tiny", 0)
    for split, manifest in _manifests(tiny_corpus).items():
        info = manifest["metadata"]["corpus"]
        planned = [job.utt_id for job in plan if job.split == split]
        written = {utt.utt_id for utt in records.iterate_utterances(tiny_corpus / split)}
        assert info["num_planned"] == len(planned)
        assert manifest["num_utterances"] + info["num_skipped"] == len(planned)
        assert set(info["skipped"]) == set(planned) - written
        assert sum(info["skipped_by_reason"].values()) == info["num_skipped"]
        assert info["senones_seen"] == len(
            {s for u in records.iterate_utterances(tiny_corpus / split) for s in u.labels}
        )


def test_misaligned_text_is_rejected():
    job = design.plan_corpus("tiny", 0)[0]
    pcm, word_starts = design.render(job)
    aligner = align.ForcedAligner()
    alignment = aligner.align(pcm, job.words)
    assert align.check_word_timing(alignment.word_starts, word_starts) < 0.04
    with pytest.raises(align.AlignmentError) as error:  # the right words in the wrong order
        wrong = aligner.align(pcm, job.words[::-1])
        align.check_word_timing(wrong.word_starts, word_starts)
    assert error.value.reason in ("no_alignment", "word_timing")


@pytest.fixture
def micro_size(monkeypatch):
    monkeypatch.setitem(
        design.SIZES,
        "micro",
        design.CorpusSize(
            voices={"train": 2, "dev": 1, "test": 1},
            utterances_per_voice={"train": 2, "dev": 1, "test": 1},
            num_shards={"train": 1, "dev": 1, "test": 1},
        ),
    )
    return "micro"


def _reject(monkeypatch, rejected):
    align_utterance = align.ForcedAligner.align

    def patched(self, pcm, words, utt_id="utterance"):
        if utt_id in rejected:
            raise align.AlignmentError("no_alignment", f"{utt_id}: rejected by the test")
        return align_utterance(self, pcm, words, utt_id)

    monkeypatch.setattr(align.ForcedAligner, "align", patched)


def test_injected_rejection_is_skipped_and_counted(micro_size, monkeypatch, tmp_path):
    plan = design.plan_corpus(micro_size, 0)
    victim = next(job.utt_id for job in plan if job.split == "train")
    _reject(monkeypatch, {victim})
    manifests = build.build_corpus(tmp_path, size=micro_size, seed=0, num_workers=1)
    info = manifests["train"]["metadata"]["corpus"]
    assert info["skipped"].get(victim) == "no_alignment"
    written = [u.utt_id for u in records.iterate_utterances(tmp_path / "train")]
    assert victim not in written
    assert len(written) == 4 - info["num_skipped"]


def test_failure_leaves_nothing(micro_size, monkeypatch, tmp_path):
    plan = design.plan_corpus(micro_size, 0)
    _reject(monkeypatch, {job.utt_id for job in plan if job.split == "dev"})
    with pytest.raises(DataError, match="dev: the aligner rejected all 1"):
        build.build_corpus(tmp_path, size=micro_size, seed=0, num_workers=1)
    assert os.listdir(tmp_path) == []


def test_same_seed_same_bytes(tiny_corpus, tmp_path):
    build.build_corpus(tmp_path, size="tiny", seed=0)
    for split in design.SPLITS:
        names = sorted(os.listdir(tiny_corpus / split))
        assert names == sorted(os.listdir(tmp_path / split))
        match, mismatch, errors = filecmp.cmpfiles(
            tiny_corpus / split, tmp_path / split, names, shallow=False
        )
        assert not mismatch and not errors
    # Another seed gives other prompts, rates and noise for the same voices.
    other = design.plan_corpus("tiny", 1)
    assert [j.voice for j in other] == [j.voice for j in design.plan_corpus("tiny", 0)]
    assert [j.words for j in other] != [j.words for j in design.plan_corpus("tiny", 0)]


@pytest.mark.slow
def test_worker_processes_do_not_change_the_bytes(tiny_corpus, tmp_path):
    build.build_corpus(tmp_path, size="tiny", seed=0, num_workers=2)
    for split in design.SPLITS:
        names = sorted(os.listdir(tiny_corpus / split))
        _, mismatch, errors = filecmp.cmpfiles(
            tiny_corpus / split, tmp_path / split, names, shallow=False
        )
        assert not mismatch and not errors


def test_existing_corpus_is_kept_unless_overwritten(tiny_corpus, tmp_path):
    shutil.copytree(tiny_corpus / "dev", tmp_path / "dev")
    with pytest.raises(DataError, match="dev already exist"):
        build.build_corpus(tmp_path, size="tiny", seed=0)
    assert os.listdir(tmp_path) == ["dev"]


def test_voice_names_are_checked():
    espeak.check_voice("en-gb-x-rp+m3")
    with pytest.raises(DataError, match="unknown variant 'xxx'"):
        espeak.check_voice("en-us+xxx")  # espeak itself would accept it silently
    with pytest.raises(DataError, match="unknown English accent"):
        espeak.check_voice("xx-yy+m3")
    assert len(espeak.english_accents()) >= 8
    assert {"m1", "f5", "klatt"} <= set(espeak.variants())


def test_plan_is_deterministic_and_in_range():
    plan = design.plan_corpus("small", 3)
    assert plan == design.plan_corpus("small", 3)
    vocabulary = set(build.prompt_words())
    for job in plan:
        assert 5 <= len(job.words) <= 10 and set(job.words) <= vocabulary
        assert design.RATE_WPM[0] <= job.rate <= design.RATE_WPM[1]
        assert design.PITCH[0] <= job.pitch <= design.PITCH[1]
    # A voice's n-th utterance is the same in every size that has it.
    tiny = {j.utt_id: j for j in design.plan_corpus("tiny", 3)}
    assert all(tiny[j.utt_id] == j for j in plan if j.utt_id in tiny)
    assert dataclasses.asdict(plan[0])["voice"] == design.TRAIN_VOICES[0]


def test_script_help_and_errors(tmp_path):
    script = os.path.join(REPO, "scripts", "make_corpus.py")
    shown = subprocess.run(
        [sys.executable, script, "--help"], capture_output=True, text=True, timeout=120
    )
    # (absl ends --help with exit status 1)
    assert "Reads:" in shown.stdout and "Example:" in shown.stdout
    (tmp_path / "train").mkdir()
    failed = subprocess.run(
        [sys.executable, script, f"--output_dir={tmp_path}", "--size=tiny"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1].startswith("make_corpus.py: error:")
