"""Your own data: a Kaldi data directory with frame alignments, imported as utterance shards.

A Kaldi data directory holds
  ``wav.scp``   ``<recording-id> <path of a WAV file>`` (16-bit PCM, any rate: resampled);
  ``utt2spk``   ``<utterance-id> <speaker-id>``;
  ``segments``  optional, ``<utterance-id> <recording-id> <start-seconds> <end-seconds>``
                (end -1: to the end of the recording); without it every recording is an
                utterance;
  ``text``      transcripts; not needed here (the labels come from the alignments).
Alignments give one pdf id (senone) per frame, as ``ali-to-pdf`` writes them: a text file with
one line ``<utterance-id> <pdf> <pdf> ...`` per utterance, or a Kaldi archive read with kaldiio
(a ``.ark`` or ``.scp`` file, or a Kaldi rspecifier such as ``ark:gunzip -c ali.gz|``).
Per-frame phone ids (``ali-to-phones --per-frame``) may be given the same way.

**Frame-count rule.** Features are computed with ``tfblend.features.log_mel``, padded or cut to
exactly the alignment's length, so the labels and the features line up frame for frame. The
alignment must be within ``frame_tolerance`` frames (default 2) of the snip-edges frame count
``1 + (N - window) // hop`` of the audio: that covers Kaldi's own front end (snip-edges true or
false) and pocketsphinx's. An utterance beyond it is rejected and counted (reason
``frame_mismatch``), as are utterances without an alignment (``no_alignment``), those in
``utt2spk`` or the alignments without audio in ``wav.scp``/``segments`` (``no_audio``) and those
shorter than one analysis window (``too_short``). Recordings below the feature rate are
upsampled with a warning naming them (their upper mel bins are empty).

Bad input (a missing or unreadable file, a malformed line, a pdf id out of range, an utterance
without a speaker) raises DataError naming the file and line or the utterance; nothing is
written then (``records.write_utterance_shards`` writes atomically).
"""

import contextlib
import os
import warnings
import wave
from collections import Counter

import kaldiio
import numpy as np

from tfblend import features as features_lib
from tfblend import records
from tfblend.errors import DataError

DEFAULT_FRAME_TOLERANCE = 2
#: Why an utterance is not imported (every one is counted in the manifest and the summary).
SKIP_REASONS = ("no_audio", "no_alignment", "frame_mismatch", "too_short")


def read_table(path: str, *, min_fields: int = 2, max_fields: int | None = None) -> dict:
    """Reads a Kaldi table file: ``{first field: list of the other fields}``, in file order.

    The last field takes the rest of the line when ``max_fields`` is given. Raises DataError
    naming the file and line for a missing file, a short line or a duplicate key.
    """
    table = {}
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                split = None if max_fields is None else max_fields - 1
                fields = line.split(maxsplit=split) if split else line.split()
                if len(fields) < min_fields:
                    raise DataError(f"{path}:{number}: expected at least {min_fields} fields")
                if fields[0] in table:
                    raise DataError(f"{path}:{number}: duplicate key {fields[0]!r}")
                table[fields[0]] = [field.strip() for field in fields[1:]]
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from e
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text ({e})") from e
    return table


def read_alignments(source: str) -> dict:
    """Reads per-frame integer alignments: ``{utterance id: int64 [T]}``.

    ``source`` is a text file (``<utt-id> <id> <id> ...`` per line), a Kaldi archive or script
    file (``.ark``, ``.scp``) or a Kaldi rspecifier (``ark:...``, ``scp:...``). Raises DataError
    naming the file (and line) when it cannot be read or holds something other than integers.
    """
    source = os.fspath(source)
    if source.startswith(("ark:", "ark,", "scp:", "scp,")) or source.endswith((".ark", ".scp")):
        return _read_kaldi_archive(source)
    alignments = {}
    for key, fields in read_table(source, min_fields=1).items():
        try:
            alignments[key] = np.array([int(v) for v in fields], np.int64)
        except ValueError as e:
            raise DataError(f"{source}: utterance {key!r}: alignment is not integers ({e})") from e
    return alignments


def _read_kaldi_archive(source):
    if source.endswith(".ark") and ":" not in source:
        rspecifier = f"ark:{source}"
    elif source.endswith(".scp") and ":" not in source:
        rspecifier = f"scp:{source}"
    else:
        rspecifier = source
    alignments = {}
    try:
        with kaldiio.ReadHelper(rspecifier) as reader:
            for key, value in reader:
                array = np.asarray(value)
                if array.ndim != 1 or not np.issubdtype(array.dtype, np.integer):
                    raise DataError(
                        f"{source}: utterance {key!r}: expected an integer vector, "
                        f"got {array.dtype} {array.shape}"
                    )
                alignments[key] = array.astype(np.int64)
    except DataError:
        raise
    except Exception as e:  # kaldiio raises many kinds (OSError, ValueError, its own) on bad input
        raise DataError(f"{source}: cannot read as a Kaldi archive ({e})") from e
    return alignments


def import_kaldi_dir(
    data_dir,
    alignments,
    output_dir,
    *,
    num_classes: int,
    num_shards: int = 1,
    feature_config: features_lib.FeatureConfig | None = None,
    phone_alignments=None,
    num_phones: int | None = None,
    frame_tolerance: int = DEFAULT_FRAME_TOLERANCE,
) -> dict:
    """Imports a Kaldi data directory with pdf alignments as one utterance set.

    Args:
      data_dir: the Kaldi data directory (module docstring).
      alignments: pdf alignments: a text file, ``.ark``/``.scp`` file or rspecifier.
      output_dir: where the utterance shards and manifest go (one set, e.g. ``DIR/train``).
      num_classes: the number of pdfs (``tree-info`` / ``am-info``); every id must be below it.
      num_shards: shards to write.
      feature_config: the front end (default ``FeatureConfig()``: 40 log-mel, 25/10 ms, 16 kHz).
      phone_alignments: optional per-frame phone ids, same forms as ``alignments``.
      num_phones: the number of phones (required with ``phone_alignments``).
      frame_tolerance: the largest accepted difference between the alignment length and the
        audio's snip-edges frame count.

    Returns:
      The manifest. Its ``metadata`` has ``features`` (the config) and ``kaldi``: the sources,
      utterances found, imported and skipped (by reason, and which), the frame tolerance and the
      seconds of audio imported. Utterances are written in sorted id order.

    Raises:
      DataError: see the module docstring.
    """
    data_dir = os.fspath(data_dir)
    config = feature_config or features_lib.FeatureConfig()
    if phone_alignments is not None and num_phones is None:
        raise DataError("import_kaldi_dir: phone_alignments need num_phones")
    wav_scp = read_table(os.path.join(data_dir, "wav.scp"), max_fields=2)
    utt2spk = read_table(os.path.join(data_dir, "utt2spk"), min_fields=2, max_fields=2)
    segments = _segments(data_dir, wav_scp)
    pdfs = read_alignments(alignments)
    phones = None if phone_alignments is None else read_alignments(phone_alignments)
    for utt_id in segments:
        if utt_id not in utt2spk:
            raise DataError(f"{data_dir}/utt2spk: no speaker for utterance {utt_id!r}")
    no_audio = sorted((set(utt2spk) | set(pdfs)) - set(segments))
    metadata = {
        "features": config.to_dict(),
        "kaldi": {
            "data_dir": os.path.abspath(data_dir),
            "alignments": os.fspath(alignments),
            "phone_alignments": None if phones is None else os.fspath(phone_alignments),
            "frame_tolerance": frame_tolerance,
            "num_found": len(segments) + len(no_audio),
            "alignments_without_audio": len(set(pdfs) - set(segments)),
            "upsampled": _low_rates(wav_scp, segments, config),
        },
    }
    utterances = _utterances(
        segments, wav_scp, utt2spk, pdfs, phones, config, frame_tolerance, metadata["kaldi"]
    )
    return records.write_utterance_shards(
        output_dir,
        utterances,
        num_shards=num_shards,
        num_classes=num_classes,
        num_phones=num_phones,
        metadata=metadata,
    )


def _low_rates(wav_scp, segments, config) -> dict[str, int]:
    """``{wav path: rate}`` of the recordings used below the feature rate, after a warning.

    Upsampled audio has no energy above half its rate, so the upper mel bins are empty.
    """
    used = sorted({recording for recording, _, _ in segments.values()})
    rates = {}
    for recording in used:
        path = wav_scp[recording][0]
        # A file wave cannot read is named by the decoder later.
        with contextlib.suppress(OSError, EOFError, wave.Error), wave.open(path) as handle:
            rates[path] = handle.getframerate()
    low = {path: rate for path, rate in rates.items() if rate < config.sample_rate}
    if low:
        names = ", ".join(f"{path} ({rate} Hz)" for path, rate in list(low.items())[:5])
        warnings.warn(
            f"{len(low)} recordings are below the feature rate {config.sample_rate} Hz and are "
            f"upsampled; their mel bins above {min(low.values()) / 2:.0f} Hz are empty: {names}"
            f"{' ...' if len(low) > 5 else ''}",
            UserWarning,
            stacklevel=3,
        )
    return low


def _segments(data_dir, wav_scp):
    """``{utt_id: (recording_id, start_s, end_s or None)}`` in sorted utterance order."""
    for recording, (path,) in wav_scp.items():
        if path.endswith("|") or path == "-":
            raise DataError(
                f"{data_dir}/wav.scp: recording {recording!r}: commands and pipes are not "
                f"supported, give the path of a WAV file"
            )
    path = os.path.join(data_dir, "segments")
    if not os.path.exists(path):
        return {key: (key, 0.0, None) for key in sorted(wav_scp)}
    segments = {}
    for utt_id, fields in sorted(read_table(path, min_fields=4).items()):
        recording = fields[0]
        if recording not in wav_scp:
            raise DataError(f"{path}: utterance {utt_id!r}: recording {recording!r} not in wav.scp")
        try:
            start, end = float(fields[1]), float(fields[2])
        except ValueError as e:
            raise DataError(f"{path}: utterance {utt_id!r}: bad times {fields[1:3]}") from e
        if start < 0 or (end >= 0 and end <= start):
            raise DataError(f"{path}: utterance {utt_id!r}: bad segment [{start}, {end}]")
        segments[utt_id] = (recording, start, None if end < 0 else end)
    return segments


def _utterances(segments, wav_scp, utt2spk, pdfs, phones, config, tolerance, info):
    """Yields the importable utterances; fills ``info`` with the counts once the stream ends."""
    skipped, reasons = {}, Counter()
    seconds = 0.0
    cached = (None, None)  # the last recording read: segments of one recording come together
    for utt_id, (recording, start, end) in segments.items():
        labels = pdfs.get(utt_id)
        utt_phones = None if phones is None else phones.get(utt_id)
        if labels is None or (phones is not None and utt_phones is None):
            skipped[utt_id] = "no_alignment"
            reasons["no_alignment"] += 1
            continue
        if cached[0] != recording:
            cached = (
                recording,
                features_lib.decode_wav_file(wav_scp[recording][0], config).numpy(),
            )
        audio = cached[1]
        begin = int(round(start * config.sample_rate))
        stop = audio.shape[0] if end is None else int(round(end * config.sample_rate))
        if stop > audio.shape[0] + config.hop_samples:
            raise DataError(
                f"utterance {utt_id!r}: segment ends at {end} s, after the end of recording "
                f"{recording!r} ({audio.shape[0] / config.sample_rate:.3f} s)"
            )
        waveform = audio[begin:stop]
        expected = features_lib.num_frames_for(waveform.shape[0], config)
        if expected == 0 or labels.shape[0] == 0:
            skipped[utt_id] = "too_short"
            reasons["too_short"] += 1
            continue
        if abs(labels.shape[0] - expected) > tolerance or (
            utt_phones is not None and utt_phones.shape != labels.shape
        ):
            skipped[utt_id] = "frame_mismatch"
            reasons["frame_mismatch"] += 1
            continue
        seconds += waveform.shape[0] / config.sample_rate
        feats = features_lib.log_mel(waveform, config, num_frames=labels.shape[0]).numpy()
        yield records.Utterance(
            utt_id=utt_id,
            speaker=utt2spk[utt_id][0],
            features=feats,
            labels=labels,
            phones=utt_phones,
        )
    no_audio = sorted((set(utt2spk) | set(pdfs)) - set(segments))
    skipped.update({utt_id: "no_audio" for utt_id in no_audio})
    reasons["no_audio"] = len(no_audio)
    info.update(
        {
            "num_imported": len(segments) - len(skipped) + len(no_audio),
            "num_skipped": len(skipped),
            "skipped_by_reason": {reason: reasons[reason] for reason in SKIP_REASONS},
            "skipped": dict(sorted(skipped.items())),
            "audio_seconds": round(seconds, 3),
        }
    )
