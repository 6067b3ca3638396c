"""Waveform -> log-mel filterbank features (+ deltas), and CMVN statistics.

Everything that touches audio is built from TensorFlow / tensorflow-io ops, so the same code runs
eagerly, inside ``tf.data.Dataset.map`` and inside an exported serving graph.

The filterbank (``log_mel``), for a float32 waveform in [-1, 1] at ``config.sample_rate``:

1. ``tfio.audio.spectrogram``: ``|STFT|`` with a periodic Hann window of ``window_samples``
   (``tf.signal.hann_window``), zero-padded to ``fft_length`` at the end of each frame;
2. ``tfio.audio.melscale``: the magnitude spectrum times ``tf.signal.linear_to_mel_weight_matrix``
   (HTK mel scale ``1127 ln(1 + f/700)``, unnormalised triangles between ``lower_hz`` and
   ``upper_hz``);
3. ``tfio.audio.dbscale``: ``10 log10(max(mel**2, 1e-10))`` floored at the utterance's maximum minus
   ``top_db`` (the floor depends on the whole utterance; ``top_db=None`` disables it).

**Frame-count rule.** ``tfio.audio.spectrogram`` calls ``tf.signal.stft(..., pad_end=True)``, which
returns ``ceil(N / hop)`` frames, the last ones running into zero padding. ``log_mel`` keeps only
whole frames: frame ``i`` covers samples ``[hop*i, hop*i + window)`` and, for an ``N``-sample
waveform, ``T = max(0, 1 + (N - window) // hop)`` (Kaldi's snip-edges rule; 400/160 at 16 kHz).
With ``num_frames`` given, the waveform is zero-padded at the end to ``hop*(num_frames-1) + window``
samples (or the extra frames dropped) so that ``T == num_frames`` exactly; this is how features are
matched to pocketsphinx alignments, which have ``2 + (N - 410) // 160`` frames
(``pocketsphinx_num_frames``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import tensorflow as tf
import tensorflow_io as tfio

from tfblend.errors import DataError

# pocketsphinx's front end: 410-sample analysis window, 160-sample hop, one zero-padded frame at
# the end (docs/reference-facts.md section 3).
_POCKETSPHINX_WINDOW = 410
_POCKETSPHINX_HOP = 160


@dataclasses.dataclass(frozen=True)
class FeatureConfig:
    """Log-mel front-end parameters (defaults: 40 log-mel, 25 ms window, 10 ms hop at 16 kHz).

    Attributes:
      sample_rate: Hz of the waveform ``log_mel`` expects.
      num_mel_bins: mel filters.
      window_samples: analysis window length in samples (400 = 25 ms).
      hop_samples: frame shift in samples (160 = 10 ms).
      fft_length: FFT size (>= window_samples).
      lower_hz, upper_hz: edges of the mel filterbank.
      delta_order: 0 (static only), 1 (+ deltas) or 2 (+ deltas + delta-deltas).
      top_db: dynamic-range floor below the utterance maximum in dB; None disables it.
    """

    sample_rate: int = 16000
    num_mel_bins: int = 40
    window_samples: int = 400
    hop_samples: int = 160
    fft_length: int = 512
    lower_hz: float = 20.0
    upper_hz: float = 7600.0
    delta_order: int = 0
    top_db: float | None = 80.0

    def __post_init__(self):
        if self.delta_order not in (0, 1, 2):
            raise DataError(f"FeatureConfig: delta_order must be 0, 1 or 2, got {self.delta_order}")
        if self.fft_length < self.window_samples:
            raise DataError(
                f"FeatureConfig: fft_length {self.fft_length} < window_samples "
                f"{self.window_samples}"
            )
        if not 0 <= self.lower_hz < self.upper_hz <= self.sample_rate / 2:
            raise DataError(
                f"FeatureConfig: need 0 <= lower_hz < upper_hz <= sample_rate/2, got "
                f"{self.lower_hz}, {self.upper_hz}, {self.sample_rate}"
            )

    @property
    def feature_dim(self) -> int:
        """Features per frame: ``num_mel_bins * (1 + delta_order)``."""
        return self.num_mel_bins * (1 + self.delta_order)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of all fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FeatureConfig:
        """Inverse of ``to_dict``; unknown keys raise DataError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise DataError(f"FeatureConfig: unknown keys {unknown}")
        return cls(**values)


def num_frames_for(num_samples: int, config: FeatureConfig) -> int:
    """Frames ``log_mel`` returns for N samples: ``max(0, 1 + (N - window) // hop)``."""
    if num_samples < config.window_samples:
        return 0
    return 1 + (num_samples - config.window_samples) // config.hop_samples


def pocketsphinx_num_frames(num_samples: int) -> int:
    """Frames pocketsphinx aligns an N-sample 16 kHz utterance to: ``2 + (N - 410) // 160``."""
    if num_samples < _POCKETSPHINX_WINDOW:
        raise DataError(f"{num_samples} samples is shorter than one pocketsphinx frame (410)")
    return 2 + (num_samples - _POCKETSPHINX_WINDOW) // _POCKETSPHINX_HOP


def log_mel(waveform, config: FeatureConfig, num_frames=None) -> tf.Tensor:
    """Log-mel filterbank (+ deltas) of one waveform.

    Args:
      waveform: float32 ``[N]`` at ``config.sample_rate``, values in [-1, 1] (tensor or array).
      config: the front end.
      num_frames: None for the snip-edges frame count (module docstring), or an int / int scalar
        tensor: the waveform is zero-padded at the end or frames dropped so that T == num_frames.

    Returns:
      float32 ``[T, config.feature_dim]``: ``num_mel_bins`` log-mel values in dB, followed by
      their deltas (and delta-deltas) when ``config.delta_order > 0``.
    """
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    waveform = tf.ensure_shape(waveform, [None])
    window, hop = config.window_samples, config.hop_samples
    num_samples = tf.shape(waveform)[0]
    if num_frames is None:
        frames = tf.maximum(0, 1 + (num_samples - window) // hop)
    else:
        frames = tf.cast(num_frames, tf.int32)
        needed = hop * (frames - 1) + window
        waveform = tf.pad(waveform, [[0, tf.maximum(0, needed - num_samples)]])
    spectrum = tfio.audio.spectrogram(waveform, nfft=config.fft_length, window=window, stride=hop)[
        :frames
    ]
    mel = tfio.audio.melscale(
        spectrum,
        rate=config.sample_rate,
        mels=config.num_mel_bins,
        fmin=config.lower_hz,
        fmax=config.upper_hz,
    )
    top_db = math.inf if config.top_db is None else config.top_db
    features = tfio.audio.dbscale(mel, top_db=top_db)
    features = tf.ensure_shape(features, [None, config.num_mel_bins])
    if config.delta_order:
        features = add_deltas(features, config.delta_order)
    return features


def _delta_scales(order: int, window: int) -> list[np.ndarray]:
    """Kaldi's DeltaFeatures scales: scales[i] has length 2*i*window + 1."""
    base = np.arange(-window, window + 1, dtype=np.float64)
    base /= np.sum(base**2)
    scales = [np.ones(1)]
    for _ in range(order):
        scales.append(np.convolve(scales[-1], base))
    return scales


def add_deltas(features, order: int, window: int = 2) -> tf.Tensor:
    """Append Kaldi-style regression deltas (``add-deltas``: edge frames replicated).

    ``delta_1[t] = sum_{n=1..W} n (x[t+n] - x[t-n]) / (2 sum_{n=1..W} n^2)`` with indices clamped
    to ``[0, T-1]``; order 2 applies the convolution of that filter with itself to ``x`` (as Kaldi
    does, which differs from applying order 1 twice only at the edges).

    Args:
      features: float32 ``[T, D]`` (tensor or array).
      order: 0, 1 or 2.
      window: W, the regression half-width.

    Returns:
      float32 ``[T, D * (1 + order)]``: ``[x, delta_1, ..., delta_order]`` along the last axis.
    """
    features = tf.convert_to_tensor(features, tf.float32)
    if order == 0:
        return features
    scales = _delta_scales(order, window)
    max_offset = order * window
    num_frames = tf.shape(features)[0]
    offsets = np.arange(-max_offset, max_offset + 1)
    index = tf.clip_by_value(tf.range(num_frames)[:, None] + offsets[None, :], 0, num_frames - 1)
    context = tf.gather(features, index)  # [T, 2*max_offset + 1, D]
    outputs = [features]
    for i in range(1, order + 1):
        pad = max_offset - i * window
        kernel = np.pad(scales[i], (pad, pad)).astype(np.float32)
        outputs.append(tf.einsum("tjd,j->td", context, kernel))
    return tf.concat(outputs, axis=-1)


@tf.function(
    input_signature=[
        tf.TensorSpec([None], tf.float32),
        tf.TensorSpec([], tf.int64),
        tf.TensorSpec([], tf.int64),
    ]
)
def _tfio_resample(waveform, rate_in, rate_out):
    # One trace for every call: tfio.audio.resample builds a new vectorized_map function per
    # eager call (retracing warnings, ~10x slower).
    return tfio.audio.resample(waveform, rate_in=rate_in, rate_out=rate_out)


@functools.cache
def _resample_delay(rate_in: int, rate_out: int) -> int:
    """The output-sample latency of tfio.audio.resample for this rate pair, measured once."""
    step = rate_in // math.gcd(rate_in, rate_out)
    position = step * max(1, 4096 // step)  # an input sample that lands on an output sample
    impulse = np.zeros(2 * position, np.float32)
    impulse[position] = 1.0
    response = _tfio_resample(impulse, rate_in, rate_out).numpy()
    return int(np.argmax(np.abs(response))) - position * rate_out // rate_in


def resample(waveform, rate_in: int, rate_out: int) -> tf.Tensor:
    """Resample with ``tfio.audio.resample``, its filter latency removed.

    tfio's resampler delays its output (32 samples for 22050 -> 16000 Hz, 64 for 8000 -> 16000);
    this function pads the input's end, drops the first ``delay`` output samples and trims, so
    output sample ``i`` is at time ``i / rate_out`` like input sample ``i * rate_in / rate_out``.

    Args:
      waveform: float32 ``[N]``.
      rate_in, rate_out: Hz (Python ints).

    Returns:
      float32 ``[N * rate_out // rate_in]``.
    """
    waveform = tf.convert_to_tensor(waveform, tf.float32)
    if rate_in == rate_out:
        return waveform
    delay = _resample_delay(rate_in, rate_out)
    length = tf.shape(waveform, out_type=tf.int64)[0] * rate_out // rate_in
    padded = tf.pad(waveform, [[0, (delay + 2) * rate_in // rate_out + 2]])
    output = _tfio_resample(padded, rate_in, rate_out)[delay:]
    return tf.ensure_shape(output[:length], [None])


def decode_wav_file(path, config: FeatureConfig) -> tf.Tensor:
    """Read a 16-bit PCM WAV file as a mono float32 waveform at ``config.sample_rate``.

    Channels are averaged; other rates are converted with ``resample`` (tfio, latency removed).

    Args:
      path: file path (str or os.PathLike).
      config: gives the target sample rate.

    Returns:
      float32 ``[N]`` in [-1, 1].

    Raises:
      DataError naming the file when it cannot be read or decoded.
    """
    path = str(path)
    try:
        audio, rate = tf.audio.decode_wav(tf.io.read_file(path))
    except (tf.errors.OpError, ValueError) as err:
        message = getattr(err, "message", str(err)).splitlines()[0]
        raise DataError(f"{path}: cannot decode as 16-bit PCM WAV ({message})") from err
    if audio.shape[0] == 0:
        raise DataError(f"{path}: WAV file has no samples")
    return resample(tf.reduce_mean(audio, axis=1), int(rate), config.sample_rate)


class CmvnStats:
    """Accumulates per-dimension mean and variance statistics of features (float64 sums).

    Attributes:
      count: frames seen (int).
      sum: float64 ``[D]``, sum of the features.
      sum_sq: float64 ``[D]``, sum of their squares.
    """

    def __init__(self, dim: int):
        self.count = 0
        self.sum = np.zeros(dim, np.float64)
        self.sum_sq = np.zeros(dim, np.float64)

    @property
    def dim(self) -> int:
        return self.sum.shape[0]

    def update(self, features) -> CmvnStats:
        """Add the frames of ``features`` float ``[T, D]``; returns self."""
        values = np.asarray(features, np.float64)
        if values.ndim != 2 or values.shape[1] != self.dim:
            raise DataError(f"CmvnStats: expected [T, {self.dim}] features, got {values.shape}")
        self.count += values.shape[0]
        self.sum += values.sum(axis=0)
        self.sum_sq += np.square(values).sum(axis=0)
        return self

    def merge(self, other: CmvnStats) -> CmvnStats:
        """Add another accumulator's statistics; returns self."""
        if other.dim != self.dim:
            raise DataError(f"CmvnStats: cannot merge dim {other.dim} into dim {self.dim}")
        self.count += other.count
        self.sum += other.sum
        self.sum_sq += other.sum_sq
        return self

    def mean(self) -> np.ndarray:
        """float64 ``[D]``; DataError when no frame was seen."""
        if self.count == 0:
            raise DataError("CmvnStats: no frames accumulated")
        return self.sum / self.count

    def std(self, floor: float = 1e-3) -> np.ndarray:
        """float64 ``[D]`` population standard deviation, at least ``floor``."""
        mean = self.mean()
        variance = np.maximum(self.sum_sq / self.count - mean**2, 0.0)
        return np.maximum(np.sqrt(variance), floor)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable ``{"count": int, "sum": [D floats], "sum_sq": [D floats]}``."""
        return {"count": self.count, "sum": self.sum.tolist(), "sum_sq": self.sum_sq.tolist()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> CmvnStats:
        """Inverse of ``to_dict``; DataError on missing keys or inconsistent lengths."""
        try:
            total = np.asarray(values["sum"], np.float64)
            total_sq = np.asarray(values["sum_sq"], np.float64)
            count = int(values["count"])
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"CmvnStats: malformed statistics ({err!r})") from err
        if total.ndim != 1 or total.shape != total_sq.shape or count < 0:
            raise DataError("CmvnStats: sum and sum_sq must be equal-length lists, count >= 0")
        stats = cls(total.shape[0])
        stats.count, stats.sum, stats.sum_sq = count, total, total_sq
        return stats
