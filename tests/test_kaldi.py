"""Importing a Kaldi data directory: written here from the tiny corpus, imported, compared."""

import os
import subprocess
import sys
import wave

import kaldiio
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_io as tfio

from tfblend import records
from tfblend.corpus import design, kaldi, mdef
from tfblend.errors import DataError

RATE = 16000


def _write_wav(path, pcm, rate=RATE):
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(np.asarray(pcm, np.int16).tobytes())


def _write_table(path, rows):
    with open(path, "w") as f:
        f.writelines(" ".join(str(v) for v in row) + "\n" for row in rows)


@pytest.fixture(scope="module")
def kaldi_data(tiny_corpus, tmp_path_factory):
    """A Kaldi data dir made of the tiny corpus's test split, audio re-rendered from its plan.

    Utterances (sorted): 0 and 1 are segments of one recording, 2 is a 22050 Hz file, 3 has an
    alignment 5 frames short, 4 has no alignment, 5 is plain; "zz-no-audio" has a speaker and an
    alignment but no audio, "zz-short" is a 10 ms segment of recording 5.
    """
    root = tmp_path_factory.mktemp("kaldi")
    data = root / "data"
    data.mkdir()
    jobs = {job.utt_id: job for job in design.plan_corpus("tiny", 0)}
    originals = sorted(records.iterate_utterances(tiny_corpus / "test"), key=lambda u: u.utt_id)
    assert len(originals) >= 6
    utts = originals[:6]
    pcms = [design.render(jobs[u.utt_id])[0] for u in utts]
    wav_scp, segments = [], []
    # 0 and 1: one recording, each segment starting on a 10 ms boundary, silence between.
    offset = (pcms[0].shape[0] + 1600) // 160 * 160
    recording = np.zeros(offset + pcms[1].shape[0], np.int16)
    recording[: pcms[0].shape[0]] = pcms[0]
    recording[offset:] = pcms[1]
    _write_wav(data / "rec01.wav", recording)
    wav_scp.append(("rec01", data / "rec01.wav"))
    segments.append((utts[0].utt_id, "rec01", 0.0, repr(pcms[0].shape[0] / RATE)))
    segments.append((utts[1].utt_id, "rec01", repr(offset / RATE), -1))
    # 2: at 22050 Hz.
    upsampled = tfio.audio.resample(tf.constant(pcms[2] / 32768.0, tf.float32), RATE, 22050)
    _write_wav(data / "u2.wav", np.clip(np.round(upsampled.numpy() * 32768), -32768, 32767), 22050)
    for k in range(2, 6):
        if k != 2:
            _write_wav(data / f"u{k}.wav", pcms[k])
        wav_scp.append((f"rec{k}", data / f"u{k}.wav"))
        segments.append((utts[k].utt_id, f"rec{k}", 0.0, -1))
    segments.append(("zz-short", "rec5", 0.0, 0.01))
    _write_table(data / "wav.scp", wav_scp)
    _write_table(data / "segments", segments)
    speakers = [(u.utt_id, u.speaker) for u in utts]
    _write_table(data / "utt2spk", [*speakers, ("zz-no-audio", "x"), ("zz-short", "x")])
    _write_table(data / "text", [(u.utt_id, *jobs[u.utt_id].words) for u in utts])
    pdfs = {u.utt_id: u.labels for u in utts[:4] + utts[5:]}
    pdfs[utts[3].utt_id] = utts[3].labels[:-5]
    pdfs["zz-no-audio"] = pdfs["zz-short"] = utts[5].labels[:1]
    _write_table(root / "ali.txt", [(k, *v) for k, v in pdfs.items()])
    phones = [(u.utt_id, *u.phones) for u in utts]
    _write_table(root / "phones.txt", [*phones, ("zz-no-audio", 0), ("zz-short", 0)])
    kaldiio.save_ark(str(root / "ali.ark"), {k: v.astype(np.int32) for k, v in pdfs.items()})
    return root, utts


def _import(root, output, alignments="ali.txt"):
    model = mdef.default_senone_model()
    return kaldi.import_kaldi_dir(
        root / "data",
        root / alignments,
        output,
        num_classes=model.num_senones,
        num_shards=2,
        phone_alignments=root / "phones.txt",
        num_phones=model.num_phones,
    )


@pytest.fixture(scope="module")
def imported(kaldi_data, tmp_path_factory):
    root, _ = kaldi_data
    output = tmp_path_factory.mktemp("imported") / "set"
    manifest = _import(root, output)
    return output, manifest


def test_import_matches_the_corpus(kaldi_data, imported):
    _, utts = kaldi_data
    output, manifest = imported
    got = {u.utt_id: u for u in records.iterate_utterances(output)}
    assert sorted(got) == sorted(u.utt_id for u in (utts[0], utts[1], utts[2], utts[5]))
    for k in (0, 1, 5):  # 16 kHz audio, whole files and segments: the same features
        original, new = utts[k], got[utts[k].utt_id]
        assert new.speaker == original.speaker
        np.testing.assert_array_equal(new.labels, original.labels)
        np.testing.assert_array_equal(new.phones, original.phones)
        np.testing.assert_allclose(new.features, original.features, atol=1e-3)
    assert manifest["metadata"]["kaldi"]["num_imported"] == 4
    assert manifest["num_classes"] == mdef.default_senone_model().num_senones


def test_other_sample_rate_is_resampled(kaldi_data, imported):
    _, utts = kaldi_data
    output, _ = imported
    original = utts[2]
    new = next(u for u in records.iterate_utterances(output) if u.utt_id == original.utt_id)
    np.testing.assert_array_equal(new.labels, original.labels)
    assert new.features.shape == original.features.shape
    # Resampled twice (16 -> 22.05 -> 16 kHz), the spectrum stays far closer to the original
    # than the original is to itself one frame (10 ms) later.
    a, b = original.features, new.features
    loud = a > a.max() - 40
    step = np.median(np.abs(a[1:] - a[:-1])[loud[1:]])
    assert np.median(np.abs(b - a)[loud]) < 0.5 * step
    assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.98


def test_rejections_are_counted(kaldi_data, imported):
    _, utts = kaldi_data
    _, manifest = imported
    info = manifest["metadata"]["kaldi"]
    assert info["skipped_by_reason"] == {
        "no_audio": 1,
        "no_alignment": 1,
        "frame_mismatch": 1,
        "too_short": 1,
    }
    assert info["skipped"] == {
        utts[3].utt_id: "frame_mismatch",
        utts[4].utt_id: "no_alignment",
        "zz-no-audio": "no_audio",
        "zz-short": "too_short",
    }
    assert info["num_found"] == 8 and info["num_skipped"] == 4 and info["num_imported"] == 4
    assert info["upsampled"] == {}  # 22050 Hz is above the feature rate: no warning


def test_a_source_below_the_feature_rate_warns_naming_the_file(kaldi_data, tmp_path):
    root, utts = kaldi_data
    data = tmp_path / "data"
    data.mkdir()
    pcm = design.render({j.utt_id: j for j in design.plan_corpus("tiny", 0)}[utts[5].utt_id])[0]
    low = tfio.audio.resample(tf.constant(pcm / 32768.0, tf.float32), RATE, 8000).numpy()
    _write_wav(data / "low.wav", np.clip(np.round(low * 32768), -32768, 32767), 8000)
    _write_table(data / "wav.scp", [(utts[5].utt_id, data / "low.wav")])
    _write_table(data / "utt2spk", [(utts[5].utt_id, utts[5].speaker)])
    with pytest.warns(
        UserWarning,
        match=r"upsampled; their mel bins above 4000 Hz are empty: .*low\.wav \(8000 Hz\)",
    ):
        manifest = kaldi.import_kaldi_dir(
            data,
            root / "ali.txt",
            tmp_path / "out",
            num_classes=mdef.default_senone_model().num_senones,
        )
    assert manifest["metadata"]["kaldi"]["upsampled"] == {str(data / "low.wav"): 8000}


def test_kaldi_archive_alignments_give_the_same_set(kaldi_data, imported, tmp_path):
    root, _ = kaldi_data
    _, from_text = imported
    from_ark = _import(root, tmp_path / "ark", alignments="ali.ark")
    assert from_ark["content_digest"] == from_text["content_digest"]
    assert [s["sha256"] for s in from_ark["shards"]] == [s["sha256"] for s in from_text["shards"]]


def test_missing_wav_is_named_and_nothing_is_written(kaldi_data, tmp_path):
    root, utts = kaldi_data
    data = tmp_path / "data"
    data.mkdir()
    missing = tmp_path / "nowhere" / "gone.wav"
    _write_table(data / "wav.scp", [(utts[5].utt_id, missing)])
    _write_table(data / "utt2spk", [(utts[5].utt_id, utts[5].speaker)])
    output = tmp_path / "out"
    with pytest.raises(DataError, match="gone.wav"):
        kaldi.import_kaldi_dir(
            data, root / "ali.txt", output, num_classes=mdef.default_senone_model().num_senones
        )
    assert not output.exists()


def test_bad_tables_are_named(tmp_path):
    (tmp_path / "wav.scp").write_text("rec1 sox a.wav -t wav - |\n")
    (tmp_path / "utt2spk").write_text("rec1 spk\n")
    (tmp_path / "ali.txt").write_text("rec1 1 2 x\n")
    with pytest.raises(DataError, match="wav.scp.*pipes"):
        kaldi.import_kaldi_dir(tmp_path, tmp_path / "ali.txt", tmp_path / "o", num_classes=10)
    with pytest.raises(DataError, match=r"ali\.txt.*rec1.*not integers"):
        kaldi.read_alignments(tmp_path / "ali.txt")
    (tmp_path / "utt2spk").write_text("rec1 spk\nrec1 spk2\n")
    with pytest.raises(DataError, match=r"utt2spk:2: duplicate"):
        kaldi.read_table(os.path.join(tmp_path, "utt2spk"))


def test_script_imports_and_reports_errors(kaldi_data, imported, tmp_path):
    root, _ = kaldi_data
    _, manifest = imported
    script = os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts", "import_kaldi.py")
    model = mdef.default_senone_model()
    args = [
        sys.executable,
        script,
        f"--kaldi_data_dir={root / 'data'}",
        f"--num_classes={model.num_senones}",
        f"--phone_alignments={root / 'phones.txt'}",
        f"--num_phones={model.num_phones}",
        "--num_shards=2",
        f"--output_dir={tmp_path / 'out'}",
    ]
    done = subprocess.run(
        [*args, f"--alignments={root / 'ali.ark'}"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert records.read_manifest(tmp_path / "out")["content_digest"] == manifest["content_digest"]
    failed = subprocess.run(
        [*args, f"--alignments={root / 'missing.txt'}"], capture_output=True, text=True, timeout=300
    )
    assert failed.returncode == 1
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("import_kaldi.py: error:") and "missing.txt" in last
