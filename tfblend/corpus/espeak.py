"""Speech synthesis with espeak-ng, through the library bundled by ``espeakng-loader`` (ctypes).

A voice is an English accent and a voice variant, written as espeak writes them:
``en-gb-x-rp+m3`` (accent ``en-gb-x-rp``, variant ``m3``). espeak accepts unknown variants
without complaint, so every name is checked against the voice files of its data folder first.

espeak-ng keeps synthesis state in static variables that no API call resets (pitch flutter,
filter memories), so the same text in the same voice sounds slightly different depending on what
was spoken before, and some variants (``breath`` in f2, f3, f5, m7, ...) add noise from espeak's
random generator and the C library's ``rand()``. To make every synthesis a pure function of its
arguments, the library is loaded afresh for each utterance (and unloaded after), which costs a
few milliseconds, and both generators are seeded from the ``seed`` argument just before.
"""

import _ctypes
import ctypes
import dataclasses
import functools
import os
import re
import threading

import espeakng_loader
import numpy as np

from tfblend.errors import DataError

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3

# The accents folder holds the English variants under lang/gmw; en-Shaw is the Shavian script.
_ENGLISH = re.compile(r"^en(-[a-z0-9]+)*$")
_NOT_SPOKEN_ACCENTS = frozenset({"en-shaw"})


class _Event(ctypes.Structure):
    _fields_ = (
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    )


_Callback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)
_LOCK = threading.Lock()
_LIBC = ctypes.CDLL(None)


@dataclasses.dataclass(frozen=True)
class Synthesis:
    """One synthesised utterance.

    Attributes:
      waveform: int16 ``[N]`` at ``sample_rate``.
      sample_rate: espeak-ng's output rate (22050 Hz).
      word_starts: float ``[num_words]``, the time (seconds) at which espeak starts each
        whitespace-separated word of the text, from its word events; NaN for a word it
        reported no event for.
    """

    waveform: np.ndarray
    sample_rate: int
    word_starts: np.ndarray


def data_path() -> str:
    """The espeak-ng data folder bundled with espeakng-loader."""
    return espeakng_loader.get_data_path()


@functools.cache
def english_accents() -> tuple[str, ...]:
    """The English accents (lower-case voice ids such as ``en-us``, ``en-gb-x-rp``) available."""
    accents = set()
    for _, _, files in os.walk(os.path.join(data_path(), "lang")):
        accents.update(name.lower() for name in files if _ENGLISH.match(name.lower()))
    return tuple(sorted(accents - _NOT_SPOKEN_ACCENTS))


@functools.cache
def variants() -> tuple[str, ...]:
    """The voice variants (``m1``, ``f3``, ``klatt2``, ...) available in the data folder."""
    return tuple(sorted(os.listdir(os.path.join(data_path(), "voices", "!v"))))


def check_voice(voice: str) -> None:
    """Raises DataError unless ``voice`` is ``ACCENT`` or ``ACCENT+VARIANT`` with both known."""
    accent, _, variant = voice.partition("+")
    if accent not in english_accents():
        raise DataError(
            f"voice {voice!r}: unknown English accent {accent!r}; "
            f"known: {', '.join(english_accents())}"
        )
    if variant and variant not in variants():
        raise DataError(
            f"voice {voice!r}: unknown variant {variant!r} (not in {data_path()}/voices/!v)"
        )


def synthesize(text: str, voice: str, *, rate: int, pitch: int, seed: int = 0) -> Synthesis:
    """Speaks ``text`` in ``voice`` at ``rate`` (words per minute) and ``pitch`` (0-100).

    The result depends on the arguments only (see the module docstring); ``seed`` (0 .. 2**31-1)
    seeds the noise of breathy variants. Raises DataError for an unknown voice or a synthesis that
    fails or produces no audio.
    """
    check_voice(voice)
    with _LOCK:
        lib = ctypes.CDLL(espeakng_loader.get_library_path(), mode=ctypes.RTLD_LOCAL)
        try:
            return _synthesize(lib, text, voice, rate, pitch, seed)
        finally:
            lib.espeak_Terminate()
            handle = lib._handle
            del lib
            _ctypes.dlclose(handle)


def _synthesize(lib, text, voice, rate, pitch, seed):
    sample_rate = lib.espeak_Initialize(
        _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path().encode(), _INITIALIZE_DONT_EXIT
    )
    if sample_rate <= 0:
        raise DataError(f"espeak-ng failed to initialise from {data_path()}")
    chunks, word_samples = [], []

    def on_audio(wav, num_samples, events):
        if num_samples > 0:
            chunks.append(np.ctypeslib.as_array(wav, shape=(num_samples,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            if events[i].type == _EVENT_WORD:
                word_samples.append((events[i].text_position, events[i].sample))
            i += 1
        return 0

    callback = _Callback(on_audio)  # referenced until synthesis is over
    lib.espeak_SetSynthCallback(callback)
    if lib.espeak_SetVoiceByName(voice.encode()) != 0:
        raise DataError(f"voice {voice!r}: espeak-ng cannot load it")
    lib.espeak_SetParameter(_PARAM_RATE, int(rate), 0)
    lib.espeak_SetParameter(_PARAM_PITCH, int(pitch), 0)
    lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
    _LIBC.srand(ctypes.c_uint(seed))
    encoded = text.encode()
    status = lib.espeak_Synth(encoded, len(encoded) + 1, 0, 0, 0, _CHARS_UTF8, None, None)
    lib.espeak_Synchronize()
    if status != 0 or not chunks:
        raise DataError(f"espeak-ng could not speak {text!r} in voice {voice!r} (status {status})")
    return Synthesis(
        waveform=np.concatenate(chunks),
        sample_rate=sample_rate,
        word_starts=_word_starts(text, word_samples, sample_rate),
    )


def _word_starts(text, events, sample_rate):
    """Start time of each word of ``text`` from (1-based character position, sample) events."""
    spans = [m.span() for m in re.finditer(r"\S+", text)]
    starts = np.full(len(spans), np.nan)
    for position, sample in events:
        for k, (begin, end) in enumerate(spans):
            if begin <= position - 1 < end and np.isnan(starts[k]):
                starts[k] = sample / sample_rate
    return starts
