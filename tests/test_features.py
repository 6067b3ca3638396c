"""tfblend.features: the filterbank against an independent numpy implementation, frame counts,
deltas, resampling and WAV decoding, CMVN statistics."""

import numpy as np
import pytest
import tensorflow as tf

from tfblend.corpus import espeak
from tfblend.errors import DataError
from tfblend.features import (
    CmvnStats,
    FeatureConfig,
    add_deltas,
    decode_wav_file,
    log_mel,
    num_frames_for,
    pocketsphinx_num_frames,
    resample,
)

# Largest |difference| in dB between log_mel (float32 TF) and the float64 numpy reference
# (measured: 8e-4 dB on espeak speech, 5e-5 dB on the chirp).
DB_TOLERANCE = 0.01


def chirp_signal(num_samples=24000, sample_rate=16000, seed=0):
    """Deterministic speech-like test signal: a gliding harmonic series plus noise, in [-1, 1]."""
    t = np.arange(num_samples) / sample_rate
    f0 = 110.0 + 60.0 * np.sin(2 * np.pi * 1.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(h * phase) / h for h in range(1, 30))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t) ** 2
    noise = np.random.default_rng(seed).normal(0.0, 0.02, num_samples)
    signal = 0.15 * envelope * voiced + noise
    return (signal / np.abs(signal).max() * 0.8).astype(np.float32)


def espeak_speech():
    """int16 waveform at its sample rate, from the corpus module's espeak-ng synthesis."""
    synthesis = espeak.synthesize(
        "the quick brown fox jumps over the lazy dog", "en-us", rate=160, pitch=50
    )
    return synthesis.waveform, synthesis.sample_rate


@pytest.fixture(scope="module", params=["speech", "chirp"])
def waveform_16k(request):
    if request.param == "chirp":
        return chirp_signal()
    waveform, rate = espeak_speech()
    return resample(waveform.astype(np.float32) / 32768.0, rate, 16000).numpy()


def htk_mel(hz):
    return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)


def reference_log_mel(waveform, config):
    """Independent float64 numpy filterbank: framing, periodic Hann, rfft, HTK triangles, dB."""
    win, hop = config.window_samples, config.hop_samples
    num_frames = 1 + (len(waveform) - win) // hop
    n = np.arange(win)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * n / win)  # periodic, as tf.signal.hann_window
    frames = np.stack([waveform[i * hop : i * hop + win] for i in range(num_frames)]) * hann
    magnitude = np.abs(np.fft.rfft(frames.astype(np.float64), n=config.fft_length))
    bin_mel = htk_mel(
        np.arange(config.fft_length // 2 + 1) * config.sample_rate / config.fft_length
    )[:, None]
    edges = np.linspace(htk_mel(config.lower_hz), htk_mel(config.upper_hz), config.num_mel_bins + 2)
    left, centre, right = edges[:-2], edges[1:-1], edges[2:]
    weights = np.maximum(
        0.0, np.minimum((bin_mel - left) / (centre - left), (right - bin_mel) / (right - centre))
    )
    mel = magnitude @ weights
    db = 10.0 * np.log10(np.maximum(mel**2, 1e-10))
    return np.maximum(db, db.max() - config.top_db)


def test_log_mel_matches_numpy_reference(waveform_16k):
    config = FeatureConfig()
    ours = log_mel(waveform_16k, config).numpy()
    reference = reference_log_mel(waveform_16k.astype(np.float64), config)
    assert ours.shape == reference.shape == (num_frames_for(len(waveform_16k), config), 40)
    assert ours.dtype == np.float32
    # The reference is not degenerate: real dynamics across time and frequency.
    assert reference.std(axis=0).min() > 1.0 and np.ptp(reference) > 30.0
    assert np.abs(ours - reference).max() < DB_TOLERANCE


@pytest.mark.parametrize("num_samples", [400, 401, 559, 560, 561, 4000, 16000, 16159, 16160])
def test_frame_count_rule(num_samples):
    config = FeatureConfig()
    waveform = chirp_signal(num_samples)
    expected = 1 + (num_samples - 400) // 160
    assert num_frames_for(num_samples, config) == expected
    features = log_mel(waveform, config)
    assert features.shape == (expected, 40)
    # Each frame covers [160 i, 160 i + 400): the last frame equals a frame computed from its own
    # samples alone (with the same dB floor).
    last = log_mel(
        waveform[160 * (expected - 1) : 160 * (expected - 1) + 400], FeatureConfig(top_db=None)
    )
    unclipped = log_mel(waveform, FeatureConfig(top_db=None))
    np.testing.assert_allclose(unclipped[-1], last[0], atol=1e-3)


def test_short_waveform_has_no_frames():
    assert num_frames_for(399, FeatureConfig()) == 0
    assert log_mel(chirp_signal(399), FeatureConfig()).shape == (0, 40)


@pytest.mark.parametrize("num_samples", [16000, 16050, 16159, 16170])
def test_num_frames_pads_to_pocketsphinx_count(num_samples):
    config = FeatureConfig(top_db=None)
    waveform = chirp_signal(num_samples)
    target = pocketsphinx_num_frames(num_samples)
    assert target == 2 + (num_samples - 410) // 160
    padded = log_mel(waveform, config, num_frames=target).numpy()
    assert padded.shape == (target, 40)
    zero_padded = np.pad(waveform, (0, 160 * (target - 1) + 400 - num_samples))
    np.testing.assert_allclose(padded, log_mel(zero_padded, config), atol=1e-4)
    # Fewer frames than the waveform holds: the leading ones, unchanged.
    np.testing.assert_allclose(
        log_mel(waveform, config, num_frames=5), log_mel(waveform, config)[:5], atol=1e-4
    )


def test_log_mel_in_graph_and_tf_data():
    config = FeatureConfig(delta_order=1)
    serving = tf.function(
        lambda w: log_mel(w, config), input_signature=[tf.TensorSpec([None], tf.float32)]
    )
    waveform = chirp_signal(8000)
    eager = log_mel(waveform, config).numpy()
    assert eager.shape == (num_frames_for(8000, config), 80)
    np.testing.assert_allclose(serving(waveform), eager, atol=1e-4)
    mapped = tf.data.Dataset.from_generator(
        lambda: iter([waveform]), output_signature=tf.TensorSpec([None], tf.float32)
    ).map(lambda w: log_mel(w, config))
    assert mapped.element_spec.shape.as_list() == [None, 80]
    np.testing.assert_allclose(next(iter(mapped)), eager, atol=1e-4)


def reference_delta(x, window=2):
    """d[t] = sum_n n (x[t+n] - x[t-n]) / (2 sum n^2), indices clamped (Kaldi add-deltas)."""
    num_frames = len(x)
    out = np.zeros_like(x, dtype=np.float64)
    for t in range(num_frames):
        for n in range(1, window + 1):
            out[t] += n * (x[min(t + n, num_frames - 1)] - x[max(t - n, 0)])
    return out / (2 * sum(n * n for n in range(1, window + 1)))


def kaldi_delta_delta(x, window=2):
    """Kaldi DeltaFeatures, order 2: the order-1 filter convolved with itself, on clamped x."""
    base = np.arange(-window, window + 1) / (2 * sum(n * n for n in range(1, window + 1)))
    scales = np.zeros(4 * window + 1)
    for j, wj in zip(range(-window, window + 1), base, strict=True):
        for k, wk in zip(range(-window, window + 1), base, strict=True):
            scales[j + k + 2 * window] += wj * wk
    num_frames = len(x)
    return np.stack(
        [
            sum(
                scales[j + 2 * window] * x[min(max(t + j, 0), num_frames - 1)]
                for j in range(-2 * window, 2 * window + 1)
            )
            for t in range(num_frames)
        ]
    )


def test_deltas_match_numpy_reference():
    x = log_mel(chirp_signal(6000), FeatureConfig()).numpy().astype(np.float64)
    out = add_deltas(x, order=2).numpy()
    assert out.shape == (x.shape[0], 120)
    np.testing.assert_allclose(out[:, :40], x, atol=1e-4)
    np.testing.assert_allclose(out[:, 40:80], reference_delta(x), atol=1e-3)
    np.testing.assert_allclose(out[:, 80:], kaldi_delta_delta(x), atol=1e-3)
    # Away from the edges, delta-delta is the delta of the delta.
    np.testing.assert_allclose(out[4:-4, 80:], reference_delta(reference_delta(x))[4:-4], atol=1e-3)
    # A linear ramp has delta = slope away from the edges.
    ramp = np.outer(np.arange(20.0), [1.0, -2.0])
    np.testing.assert_allclose(add_deltas(ramp, 1).numpy()[2:-2, 2:], [[1.0, -2.0]] * 16, atol=1e-5)
    assert add_deltas(x, 0).shape == x.shape


def write_wav(path, samples, rate):
    tf.io.write_file(str(path), tf.audio.encode_wav(np.asarray(samples, np.float32), rate))


def test_decode_wav_resamples_22050_to_16000(tmp_path):
    rate = 22050
    t = np.arange(rate + 777) / rate
    tone = 0.5 * np.sin(2 * np.pi * 1000.0 * t)
    write_wav(tmp_path / "tone.wav", np.stack([tone, tone * 0.5], axis=1), rate)
    out = decode_wav_file(tmp_path / "tone.wav", FeatureConfig()).numpy()
    assert out.dtype == np.float32 and out.shape == ((rate + 777) * 16000 // rate,)
    # Mono mix (mean of channels), 1 kHz stays at 1 kHz, and tfio's filter latency is removed:
    # the output is in phase with the ideal 16 kHz tone.
    ideal = 0.75 * 0.5 * np.sin(2 * np.pi * 1000.0 * np.arange(out.shape[0]) / 16000)
    assert np.abs(out - ideal)[200:-200].max() < 0.02


def test_decode_wav_speech_at_22050(tmp_path):
    waveform, rate = espeak_speech()
    assert rate == 22050
    write_wav(tmp_path / "speech.wav", waveform[:, None] / 32768.0, rate)
    config = FeatureConfig()
    decoded = decode_wav_file(tmp_path / "speech.wav", config).numpy()
    assert decoded.shape == (len(waveform) * 16000 // rate,)
    # Independent band-limited resampling by FFT gives nearly the same filterbank where there
    # is energy (speech frames).
    spectrum = np.fft.rfft(waveform / 32768.0)
    kept = len(decoded) // 2 + 1
    fft_resampled = np.fft.irfft(spectrum[:kept], n=len(decoded)) * len(decoded) / len(waveform)
    ours = log_mel(decoded, config).numpy()
    reference = reference_log_mel(fft_resampled, config)
    loud = reference.mean(axis=1) > reference.mean()
    assert loud.sum() > 50
    # (0.007 dB measured; without the latency removal it is 0.8 dB)
    assert np.median(np.abs(ours - reference)[loud]) < 0.1


def test_decode_wav_bad_file_names_it(tmp_path):
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00not a wav at all")
    with pytest.raises(DataError, match="broken.wav"):
        decode_wav_file(bad, FeatureConfig())
    with pytest.raises(DataError, match="missing.wav"):
        decode_wav_file(tmp_path / "missing.wav", FeatureConfig())


def test_cmvn_stats_accumulate_and_round_trip():
    rng = np.random.default_rng(1)
    parts = [rng.normal(3.0, 2.0, (n, 4)).astype(np.float32) for n in (50, 7, 120)]
    stats = CmvnStats(4)
    for part in parts[:2]:
        stats.update(part)
    stats.merge(CmvnStats(4).update(parts[2]))
    everything = np.concatenate(parts).astype(np.float64)
    assert stats.count == 177 and stats.sum.dtype == np.float64
    np.testing.assert_allclose(stats.mean(), everything.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(stats.std(), everything.std(axis=0), rtol=1e-8)
    again = CmvnStats.from_dict(stats.to_dict())
    np.testing.assert_array_equal(again.sum_sq, stats.sum_sq)
    assert CmvnStats(2).update(np.ones((3, 2))).std(floor=0.5).tolist() == [0.5, 0.5]
    with pytest.raises(DataError):
        CmvnStats(4).mean()
    with pytest.raises(DataError):
        stats.update(np.zeros((3, 5)))


def test_feature_config_round_trip():
    config = FeatureConfig(delta_order=2, top_db=None)
    assert config.feature_dim == 120
    assert FeatureConfig.from_dict(config.to_dict()) == config
    with pytest.raises(DataError):
        FeatureConfig.from_dict({"num_mel_bins": 40, "bogus": 1})
    with pytest.raises(DataError):
        FeatureConfig(delta_order=3)
