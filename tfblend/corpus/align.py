"""Forced alignment with pocketsphinx: a known word sequence -> one senone id per 10 ms frame.

pocketsphinx aligns an N-sample, 16 kHz utterance to ``2 + (N - 410) // 160`` frames (a
410-sample window, a 160-sample hop, one zero-padded frame appended); frame i starts at sample
160 i. Alignment runs in two passes (word level, then sub-word level) under wide beams; when the
pruned search loses the path ("Failed to set up sub-word alignment") it is retried with
near-unpruned beams. ``Decoder.hyp()`` is never called: after the second pass it crashes the
process (pocketsphinx 5.0.4 and 5.1.1).

The front end is reset before every pass: the en-us model's noise removal (``-remove_noise yes``)
otherwise carries its noise estimate from one utterance to the next, and an utterance's labels
would depend on which utterances the same decoder aligned before it.
"""

import dataclasses
import re
from collections.abc import Sequence

import numpy as np
import pocketsphinx

from tfblend.corpus import mdef
from tfblend.errors import DataError

WIDE_BEAMS = {"beam": 1e-80, "wbeam": 1e-60, "pbeam": 1e-80}
RETRY_BEAMS = {"beam": 1e-300, "wbeam": 1e-300, "pbeam": 1e-300}
SAMPLE_RATE = 16000
# Word-timing check against the synthesiser's word events (seconds).
MAX_MEAN_WORD_DEVIATION = 0.040
MAX_WORD_DEVIATION = 0.120

_NON_WORDS = frozenset({"<s>", "</s>", "<sil>"})
_ALTERNATE = re.compile(r"\(\d+\)$")


class AlignmentError(DataError):
    """An utterance the aligner rejects; ``reason`` is a short key used to count rejections."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Alignment:
    """A forced alignment.

    Attributes:
      senones: int64 ``[T]``, the senone id of every 10 ms frame.
      word_starts: float ``[num_words]``, the start time (seconds) of each word of the text.
      retried: whether the near-unpruned retry was needed.
    """

    senones: np.ndarray
    word_starts: np.ndarray
    retried: bool


def num_frames(num_samples: int) -> int:
    """The number of frames pocketsphinx aligns a ``num_samples``-sample utterance to."""
    return 2 + (num_samples - 410) // 160


class ForcedAligner:
    """Aligns 16 kHz int16 audio to its words with a pocketsphinx acoustic model.

    Args:
      model_dir: a pocketsphinx acoustic model folder (default: the bundled en-us model).
      dictionary: its pronunciation dictionary (default: the bundled cmudict-en-us.dict).
    """

    def __init__(self, model_dir: str | None = None, dictionary: str | None = None):
        self.model_dir = model_dir or mdef.default_model_dir()
        self.dictionary = dictionary or mdef.default_dictionary()
        self._decoders = {}

    def _decoder(self, beams):
        key = tuple(sorted(beams.items()))
        if key not in self._decoders:
            self._decoders[key] = pocketsphinx.Decoder(
                hmm=self.model_dir,
                dict=self.dictionary,
                lm=None,
                samprate=SAMPLE_RATE,
                bestpath=False,
                loglevel="FATAL",
                **beams,
            )
        return self._decoders[key]

    def align(self, pcm: np.ndarray, words: Sequence[str], utt_id: str = "utterance") -> Alignment:
        """Aligns ``pcm`` (int16 ``[N]``, 16 kHz) to ``words``.

        Raises AlignmentError (reason ``no_alignment``, ``word_sequence`` or ``frame_count``)
        naming ``utt_id`` when no alignment is found even with near-unpruned beams, or the result
        does not cover exactly the words and ``num_frames(N)`` frames.
        """
        pcm = np.ascontiguousarray(pcm, dtype=np.int16)
        if pcm.shape[0] < 410:
            raise AlignmentError("too_short", f"{utt_id}: {pcm.shape[0]} samples is too short")
        text = " ".join(words)
        retried = False
        result = self._try(self._decoder(WIDE_BEAMS), text, pcm)
        if result is None:
            retried = True
            result = self._try(self._decoder(RETRY_BEAMS), text, pcm)
        if result is None:
            raise AlignmentError("no_alignment", f"{utt_id}: no alignment found for {text!r}")
        states, aligned_words = result
        senones = np.repeat(
            np.array([int(s.name) for s in states], np.int64),
            [s.duration for s in states],
        )
        expected = num_frames(pcm.shape[0])
        if senones.shape[0] != expected or states[0].start != 0:
            raise AlignmentError(
                "frame_count",
                f"{utt_id}: alignment covers {senones.shape[0]} frames, expected {expected}",
            )
        spoken = [(_ALTERNATE.sub("", w.name), w.start) for w in aligned_words]
        spoken = [(w, start) for w, start in spoken if w not in _NON_WORDS]
        if [w for w, _ in spoken] != list(words):
            raise AlignmentError(
                "word_sequence",
                f"{utt_id}: aligned words {[w for w, _ in spoken]} differ from {list(words)}",
            )
        starts = np.array([start * 0.01 for _, start in spoken])
        return Alignment(senones=senones, word_starts=starts, retried=retried)

    @staticmethod
    def _try(decoder, text, pcm):
        raw = pcm.tobytes()
        try:
            decoder.set_align_text(text)
        except RuntimeError as e:
            raise AlignmentError("bad_text", f"cannot align {text!r}: {e}") from e
        decoder.reinit_feat()
        decoder.start_utt()
        decoder.process_raw(raw, full_utt=True)
        decoder.end_utt()
        try:
            decoder.set_alignment()
        except RuntimeError:  # "Failed to set up sub-word alignment": the search lost the path
            return None
        decoder.reinit_feat()
        decoder.start_utt()
        decoder.process_raw(raw, full_utt=True)
        decoder.end_utt()
        alignment = decoder.get_alignment()
        if alignment is None:
            return None
        states = list(alignment.states())
        return (states, list(alignment.words())) if states else None


def check_word_timing(
    aligned_starts: np.ndarray,
    expected_starts: np.ndarray,
    utt_id: str = "utterance",
    *,
    max_mean: float = MAX_MEAN_WORD_DEVIATION,
    max_any: float = MAX_WORD_DEVIATION,
) -> float:
    """Compares aligned word starts with the synthesiser's (float ``[num_words]``, seconds).

    Returns the mean absolute deviation (seconds). Raises AlignmentError (reason
    ``word_timing``) naming ``utt_id`` when the mean exceeds ``max_mean``, any word deviates by
    more than ``max_any``, or the synthesiser reported no start for some word.
    """
    aligned_starts = np.asarray(aligned_starts, np.float64)
    expected_starts = np.asarray(expected_starts, np.float64)
    if aligned_starts.shape != expected_starts.shape or np.isnan(expected_starts).any():
        raise AlignmentError(
            "word_timing", f"{utt_id}: the synthesiser reported no start for some word"
        )
    deviation = np.abs(aligned_starts - expected_starts)
    mean = float(deviation.mean())
    if mean > max_mean or deviation.max() > max_any:
        raise AlignmentError(
            "word_timing",
            f"{utt_id}: word starts deviate from the synthesiser's by {1000 * mean:.0f} ms on "
            f"average, {1000 * deviation.max():.0f} ms at most",
        )
    return mean
