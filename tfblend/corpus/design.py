"""The embedded corpus's design and one utterance's audio: splits, voices, sizes, the per-utterance
draws (``plan_corpus``) and their rendering (``render``: espeak-ng speech resampled to 16 kHz,
pauses and white noise). :mod:`tfblend.corpus.build` builds the corpus from these (its
docstring says what the corpus is); :mod:`tfblend.decoding.anchor` re-renders test audio from
them.
"""

import dataclasses
import functools
import logging

import numpy as np
import tensorflow as tf
import tensorflow_io as tfio

from tfblend.corpus import espeak, prompts
from tfblend.errors import DataError

SPLITS = ("train", "dev", "test")
SAMPLE_RATE = 16000
RATE_WPM = (130, 200)
PITCH = (25, 75)
PAUSE_SECONDS = (0.1, 0.35)
SNR_DB = (25.0, 45.0)

# Voices as ACCENT+VARIANT, in the order sizes take them (tiny takes the first few of each list).
# Every dev/test voice's accent and variant also occur among the first 14 training voices.
# Avoided: whisper, and variants that align badly (Andy, aunty, Alicia: docs/reference-facts.md
# section 3).
TRAIN_VOICES = (
    "en-us+m1", "en-gb-x-rp+f2", "en-gb-scotland+m3", "en-029+f1", "en+klatt2",
    "en-us-nyc+m5", "en-gb-x-gbclan+m7", "en-gb-x-gbcwmd+f3", "en-us+klatt", "en+f4",
    "en-gb-x-rp+m2", "en-029+klatt4", "en-gb-scotland+f5", "en-us+m4",
    "en-us-nyc+f2", "en-gb-x-gbcwmd+m1", "en+m6", "en-gb-scotland+klatt6", "en-029+m3",
    "en-gb-x-gbclan+klatt3", "en-us+f5", "en-gb-x-rp+klatt5", "en-us-nyc+klatt2", "en+f1",
    "en-gb-x-gbcwmd+m7", "en-029+f4", "en-gb-scotland+m2", "en-us+m6", "en-gb-x-gbclan+f2",
    "en-gb-x-rp+m3", "en-us-nyc+klatt6", "en+m4",
)  # fmt: skip
DEV_VOICES = ("en+m7", "en-gb-x-gbclan+f4", "en-us+klatt5", "en-gb-x-rp+f5")
TEST_VOICES = (
    "en-us+f3", "en-gb-x-rp+m4", "en-gb-scotland+klatt", "en-029+m2",
    "en-us-nyc+f1", "en-gb-x-gbcwmd+klatt3",
)  # fmt: skip
_ROSTER = TRAIN_VOICES + DEV_VOICES + TEST_VOICES
_SPLIT_VOICES = dict(zip(SPLITS, (TRAIN_VOICES, DEV_VOICES, TEST_VOICES), strict=True))


@dataclasses.dataclass(frozen=True)
class CorpusSize:
    """How much to build: per split, the number of voices, utterances per voice and shards."""

    voices: dict
    utterances_per_voice: dict
    num_shards: dict


SIZES = {
    # tests: about 2 minutes of audio, seconds to build
    "tiny": CorpusSize(
        voices={"train": 6, "dev": 2, "test": 2},
        utterances_per_voice={"train": 4, "dev": 3, "test": 3},
        num_shards={"train": 2, "dev": 1, "test": 1},
    ),
    # the demo: about an hour of audio, 14 + 2 + 4 voices
    "small": CorpusSize(
        voices={"train": 14, "dev": 2, "test": 4},
        utterances_per_voice={"train": 50, "dev": 40, "test": 50},
        num_shards={"train": 8, "dev": 2, "test": 4},
    ),
    # the study: about 3 hours of training speech (28 voices), 4 dev voices, 6 held-out test
    # voices with over 300 utterances. Planned from the small corpus with LM prompts: sentences
    # of about 2.4 s, about 27% of planned utterances rejected by the alignment checks.
    "medium": CorpusSize(
        voices={"train": 28, "dev": 4, "test": 6},
        utterances_per_voice={"train": 220, "dev": 40, "test": 80},
        num_shards={"train": 32, "dev": 4, "test": 8},
    ),
    # over 10 hours of audio, 32 + 4 + 6 voices
    "large": CorpusSize(
        voices={"train": 32, "dev": 4, "test": 6},
        utterances_per_voice={"train": 300, "dev": 60, "test": 120},
        num_shards={"train": 64, "dev": 4, "test": 8},
    ),
}


@dataclasses.dataclass(frozen=True)
class UtteranceJob:
    """Everything that determines one utterance (drawn from the corpus seed by ``plan_corpus``).

    Attributes:
      utt_id: ``VOICE-NNNN``.
      split: train, dev or test.
      voice: espeak voice, ``ACCENT+VARIANT`` (also the speaker id).
      words: the prompt.
      rate: speaking rate, words per minute.
      pitch: espeak pitch, 0-100.
      lead_samples, trail_samples: pause before and after the speech, 16 kHz samples.
      snr_db: speech-to-noise ratio of the added white noise.
      noise_seed: seed of the noise.
    """

    utt_id: str
    split: str
    voice: str
    words: tuple
    rate: int
    pitch: int
    lead_samples: int
    trail_samples: int
    snr_db: float
    noise_seed: int


def voices(size: str = "small") -> dict:
    """The voices of each split for ``size``: ``{"train": [...], "dev": [...], "test": [...]}``."""
    spec = corpus_size(size)
    return {split: list(_SPLIT_VOICES[split][: spec.voices[split]]) for split in SPLITS}


def plan_corpus(
    size: str = "tiny",
    seed: int = 0,
    prompt_kind: str = "lm",
    vocabulary_size: int = prompts.DEFAULT_VOCABULARY,
) -> list:
    """The utterances to build, as ``UtteranceJob``s, in order (train, dev, test; within a split,
    utterance-major so that every shard mixes voices). A pure function of its arguments:
    each utterance's draws come from ``numpy.random.default_rng([seed, voice index, utterance
    index])``, so a voice's n-th utterance is the same in every size that has it.

    ``prompt_kind`` is ``lm`` (sentences from the task LM over the ``vocabulary_size`` most
    probable words, disjoint across splits) or ``uniform`` (words uniformly from the dictionary;
    ``vocabulary_size`` unused); see ``tfblend.corpus.prompts``."""
    spec = corpus_size(size)
    if prompt_kind not in prompts.KINDS:
        raise DataError(f"unknown prompt kind {prompt_kind!r}; choose one of {prompts.KINDS}")
    lm = prompts.task_lm(prompts.vocabulary(vocabulary_size)) if prompt_kind == "lm" else None
    for voice in _ROSTER:
        espeak.check_voice(voice)
    jobs = []
    for split in SPLITS:
        split_voices = _SPLIT_VOICES[split][: spec.voices[split]]
        for i in range(spec.utterances_per_voice[split]):
            for voice in split_voices:
                rng = np.random.default_rng([seed, _ROSTER.index(voice), i])
                if lm is None:
                    words = prompts.uniform_prompt(rng)
                else:
                    words = prompts.sample_sentence(lm, rng, split)
                lead, trail = rng.uniform(*PAUSE_SECONDS, size=2)
                jobs.append(UtteranceJob(
                    utt_id=f"{voice}-{i:04d}",
                    split=split,
                    voice=voice,
                    words=words,
                    rate=int(rng.integers(RATE_WPM[0], RATE_WPM[1] + 1)),
                    pitch=int(rng.integers(PITCH[0], PITCH[1] + 1)),
                    lead_samples=int(round(lead * SAMPLE_RATE)),
                    trail_samples=int(round(trail * SAMPLE_RATE)),
                    snr_db=round(float(rng.uniform(*SNR_DB)), 3),
                    noise_seed=int(rng.integers(2**63)),
                ))  # fmt: skip
    return jobs


@functools.cache
def _resampler(rate_in: int):
    """A graph of ``tfio.audio.resample`` to 16 kHz for float32 ``[N]`` (traced once: called
    eagerly, its inner ``vectorized_map`` would retrace for every new length)."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def resample(waveform):
        out = tfio.audio.resample(waveform, rate_in=rate_in, rate_out=SAMPLE_RATE)
        return tf.ensure_shape(out, [None])

    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)  # tracing warns that the resample op is looped, not vectorised
    try:
        return resample.get_concrete_function()
    finally:
        logger.setLevel(level)


def render(job: UtteranceJob) -> tuple:
    """Speaks a job: returns (pcm int16 ``[N]`` at 16 kHz, espeak's word starts float ``[W]``
    in seconds from the start of ``pcm``)."""
    synthesis = espeak.synthesize(
        " ".join(job.words), job.voice, rate=job.rate, pitch=job.pitch, seed=job.noise_seed % 2**31
    )
    speech = synthesis.waveform.astype(np.float32) / 32768.0
    speech = _resampler(synthesis.sample_rate)(speech).numpy().astype(np.float64)
    signal = np.concatenate([np.zeros(job.lead_samples), speech, np.zeros(job.trail_samples)])
    noise_rms = np.sqrt(np.mean(speech**2)) * 10.0 ** (-job.snr_db / 20.0)
    signal += np.random.default_rng(job.noise_seed).normal(0.0, noise_rms, signal.shape)
    pcm = np.clip(np.round(signal * 32768.0), -32768, 32767).astype(np.int16)
    return pcm, synthesis.word_starts + job.lead_samples / SAMPLE_RATE


def corpus_size(size: str) -> "CorpusSize":
    """The :class:`CorpusSize` named ``size`` (a key of :data:`SIZES`); DataError otherwise."""
    if size not in SIZES:
        raise DataError(f"unknown corpus size {size!r}; choose one of {', '.join(SIZES)}")
    return SIZES[size]
