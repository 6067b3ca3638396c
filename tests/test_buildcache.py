"""A killed corpus build resumes from its finished pieces; the medium size's voices and counts."""

import filecmp
import json
import os

import pytest

from tfblend.corpus import align, build, buildcache, design, espeak


def _count_alignments(monkeypatch, interrupt_at=None):
    """Counts the aligner's calls; raises KeyboardInterrupt (a kill) at call ``interrupt_at``."""
    calls = []
    align_utterance = align.ForcedAligner.align

    def counted(self, pcm, words, utt_id="utterance"):
        calls.append(utt_id)
        if interrupt_at is not None and len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return align_utterance(self, pcm, words, utt_id)

    monkeypatch.setattr(align.ForcedAligner, "align", counted)
    return calls


def _same_corpus(expected, actual):
    for split in design.SPLITS:
        names = sorted(os.listdir(expected / split))
        assert names == sorted(os.listdir(actual / split))
        _, mismatch, errors = filecmp.cmpfiles(
            expected / split, actual / split, names, shallow=False
        )
        assert not mismatch and not errors, split


def test_killed_build_reuses_finished_pieces(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(buildcache, "PIECE", 8)
    planned = len(design.plan_corpus("tiny", 0))
    with monkeypatch.context() as patch:
        _count_alignments(patch, interrupt_at=17)
        with pytest.raises(KeyboardInterrupt):
            build.build_corpus(tmp_path, size="tiny", seed=0, num_workers=1)
    cache = tmp_path / buildcache.CACHE_DIR
    assert sorted(f for f in os.listdir(cache) if f.endswith(".json")) == [
        "piece-00000.json",
        "piece-00001.json",
    ]
    assert not any((tmp_path / split).exists() for split in design.SPLITS)
    # A piece left half-written (utterances but no entry) and one of another plan are redone.
    entry = json.loads((cache / "piece-00001.json").read_text())
    entry["digest"] = "0" * 64
    (cache / "piece-00001.json").write_text(json.dumps(entry))
    calls = _count_alignments(monkeypatch)
    manifests = build.build_corpus(tmp_path, size="tiny", seed=0, num_workers=1)
    assert len(calls) == planned - 8  # only piece 0 was reused
    assert not cache.exists()
    _same_corpus(tiny_corpus, tmp_path)
    assert manifests["train"] == json.loads((tiny_corpus / "train" / "manifest.json").read_text())


def test_medium_size():
    voices = design.voices("medium")
    assert len(voices["train"]) >= 24 and 2 <= len(voices["dev"]) <= 4
    assert len(voices["test"]) >= 6
    assert not set(voices["train"]) & (set(voices["dev"]) | set(voices["test"]))
    for voice in voices["dev"] + voices["test"]:  # held out, but of accents and variants seen
        accent, _, variant = voice.partition("+")
        assert any(v.startswith(accent + "+") for v in voices["train"]), voice
        assert any(v.endswith("+" + variant) for v in voices["train"]), voice
    for voice in voices["train"] + voices["dev"] + voices["test"]:
        espeak.check_voice(voice)
    plan = design.plan_corpus("medium", 0)
    by_split = {s: [j for j in plan if j.split == s] for s in design.SPLITS}
    # About 10% of utterances fail to align: 360 planned keep over 300 for the test.
    assert len(by_split["test"]) >= 300 / 0.85
    assert len(by_split["train"]) >= 2500
    spec = design.SIZES["medium"]
    assert all(spec.num_shards[s] <= len(by_split[s]) for s in design.SPLITS)
