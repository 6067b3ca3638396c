"""Prompts of the embedded corpus, and the task language model made from the same source.

Two kinds of prompt:

- ``lm`` (the default): sentences sampled from a bigram over a closed vocabulary of V words. The
  bigram is pocketsphinx's own en-us language model (``en-us.lm.bin``, a trigram), cut to its
  bigram order and restricted to the V most probable unigrams that are legal prompt words; every
  row is renormalised over the V words and ``</s>``. The decoding graph's LM
  (:func:`write_arpa`) is that same restricted bigram, written as an ARPA file, so the sentences
  are exactly as likely under the task LM as the sampler made them.
- ``uniform``: 5-10 words drawn uniformly from the whole prompt vocabulary (the corpus of old).

Splits never share a sentence: a sampled sentence belongs to the split that the CRC-32 of its
text assigns (one in ten to test, one in ten to dev, the rest to train), and the sampler draws
again until the sentence is of its utterance's split and length. Each utterance's draws come
from its own generator, so a sentence depends on nothing but (seed, voice, utterance index).
Test sentences are therefore closed-vocabulary (every word is in the task LM) and unseen in
training.

pocketsphinx scores in log base 1.0001 (integers); ``NGramModel.prob([w, h])`` is log P(w | h).
Which bigrams the LM stores explicitly is read from the scores themselves: for a history h,
every backed-off word has ``log P(w | h) - log P(w)`` equal to log bo(h), the most common
difference in the row (within 1 unit: the source rounds); the words whose difference differs
are the explicit bigrams. Frequent histories store a bigram for most of the top words.
"""

import dataclasses
import functools
import os
import re
import zlib

import numpy as np

from tfblend.corpus import mdef
from tfblend.errors import DataError

KINDS = ("lm", "uniform")
WORDS_PER_UTTERANCE = (5, 10)
DEFAULT_VOCABULARY = 1000
_LOG_BASE = np.log(1.0001)
_MAX_DRAWS = 100_000
_SPLIT_OF_BUCKET = {0: "test", 1: "dev"}  # CRC-32 mod 10; every other bucket is train


@functools.cache
def prompt_words() -> tuple:
    """The prompt vocabulary: the words of pocketsphinx's dictionary matching ``[a-z][a-z']+`` that
    contain a vowel letter (alternate pronunciations ``word(2)`` dropped), sorted."""
    path = mdef.default_dictionary()
    word = re.compile(r"[a-z][a-z']+")
    vowel = re.compile(r"[aeiouy]")
    with open(path) as f:
        entries = {line.split(maxsplit=1)[0] for line in f if line.strip()}
    return tuple(sorted(w for w in entries if word.fullmatch(w) and vowel.search(w)))


def default_lm_path() -> str:
    """pocketsphinx's bundled en-us trigram (``en-us.lm.bin``)."""
    import pocketsphinx

    return os.path.join(pocketsphinx.get_model_path(), "en-us", "en-us.lm.bin")


@functools.cache
def _source_lm():
    import pocketsphinx

    return pocketsphinx.NGramModel.readfile(default_lm_path())


@functools.cache
def vocabulary(size: int = DEFAULT_VOCABULARY) -> tuple:
    """The ``size`` prompt words (:func:`prompt_words`) with the highest unigram probability in
    pocketsphinx's LM, most probable first (ties by spelling). Raises DataError if fewer exist."""
    lm = _source_lm()
    words = prompt_words()
    scores = np.array([lm.prob([w]) for w in words], np.int64)
    known = scores > -(2**28)  # out-of-LM words score about -2^29
    ranked = sorted((-int(s), w) for s, w, k in zip(scores, words, known, strict=True) if k)
    if size < 1 or size > len(ranked):
        raise DataError(f"prompt vocabulary size {size} is outside 1..{len(ranked)}")
    return tuple(w for _, w in ranked[:size])


@dataclasses.dataclass(frozen=True, eq=False)
class TaskLM:
    """A bigram over a closed vocabulary (pocketsphinx's LM restricted and renormalised).

    Attributes:
      words: the vocabulary, ``V`` words.
      log_probs: float64 ``[V + 1, V + 1]``, natural-log P(next | history); row 0 is the history
        ``<s>``, row i the word ``words[i - 1]``; column j < V the word ``words[j]``, column V
        ``</s>``. Every row sums to one in probability.
      explicit: bool ``[V + 1, V + 1]``, the bigrams the source LM stores (the rest back off).
      unigram: float64 ``[V + 1]``, natural-log unigram over ``words`` and ``</s>``.
      cumulative: float64 ``[V + 1, V + 1]``, the running sums of each row's probabilities.
    """

    words: tuple
    log_probs: np.ndarray
    explicit: np.ndarray
    unigram: np.ndarray
    cumulative: np.ndarray


@functools.cache
def task_lm(words: tuple) -> TaskLM:
    """The task LM over ``words`` (a tuple of distinct words in pocketsphinx's LM); cached."""
    if len(set(words)) != len(words):
        raise DataError("the task LM's vocabulary has duplicate words")
    lm = _source_lm()
    nexts = [*words, "</s>"]
    histories = ["<s>", *words]
    uni = np.array([lm.prob([w]) for w in nexts], np.int64)
    if (uni < -(2**28)).any():
        missing = [w for w, s in zip(nexts, uni, strict=True) if s < -(2**28)]
        raise DataError(f"{default_lm_path()}: no unigram for {missing[:5]}")
    scores = np.array([[lm.prob([w, h]) for w in nexts] for h in histories], np.int64)
    explicit = np.zeros(scores.shape, bool)
    for i, row in enumerate(scores - uni[None, :]):
        values, counts = np.unique(row, return_counts=True)
        explicit[i] = np.abs(row - values[np.argmax(counts)]) > 1  # the source rounds
    log_probs = scores * _LOG_BASE
    log_probs -= np.logaddexp.reduce(log_probs, axis=1, keepdims=True)
    unigram = uni * _LOG_BASE
    unigram -= np.logaddexp.reduce(unigram)
    return TaskLM(tuple(words), log_probs, explicit, unigram, np.cumsum(np.exp(log_probs), axis=1))


def write_arpa(lm: TaskLM, path: str) -> None:
    """Writes ``lm`` as an ARPA bigram: the explicit bigrams with their renormalised
    probabilities, and per history the back-off weight that makes the backed-off words carry the
    rest of the row, so the ARPA model equals ``lm.log_probs`` (up to the source's rounding,
    1e-4 relative)."""
    v = len(lm.words)
    log10 = 1.0 / np.log(10.0)
    uni_p = np.exp(lm.unigram)
    lines = []
    backoff = np.zeros(v + 1)
    bigram_lines = []
    for h in range(v + 1):
        row = lm.explicit[h]
        kept = np.exp(lm.log_probs[h][row]).sum()
        rest = 1.0 - uni_p[row].sum()
        backoff[h] = np.log(max(1.0 - kept, 1e-12) / max(rest, 1e-12))
        history = "<s>" if h == 0 else lm.words[h - 1]
        for j in np.flatnonzero(row):
            word = "</s>" if j == v else lm.words[j]
            bigram_lines.append(f"{lm.log_probs[h, j] * log10:.6f}\t{history} {word}")
    lines.append(f"{-99.0:.6f}\t<s>\t{backoff[0] * log10:.6f}")
    for i, word in enumerate(lm.words):
        lines.append(f"{lm.unigram[i] * log10:.6f}\t{word}\t{backoff[i + 1] * log10:.6f}")
    lines.append(f"{lm.unigram[v] * log10:.6f}\t</s>")
    with open(path + ".tmp", "w") as f:
        f.write(f"\\data\\\nngram 1={len(lines)}\nngram 2={len(bigram_lines)}\n\n\\1-grams:\n")
        f.write("\n".join(lines) + "\n\n\\2-grams:\n")
        f.write("\n".join(bigram_lines) + "\n\n\\end\\\n")
    os.replace(path + ".tmp", path)


def split_of(words) -> str:
    """The split a sentence belongs to (train, dev or test), from the CRC-32 of its text."""
    bucket = zlib.crc32(" ".join(words).encode()) % 10
    return _SPLIT_OF_BUCKET.get(bucket, "train")


def sample_sentence(
    lm: TaskLM, rng: np.random.Generator, split: str, lengths=WORDS_PER_UTTERANCE
) -> tuple:
    """Draws sentences from ``lm`` with ``rng`` until one has ``lengths[0]..lengths[1]`` words and
    belongs to ``split`` (:func:`split_of`); returns its words."""
    cumulative = lm.cumulative
    end = len(lm.words)
    for _ in range(_MAX_DRAWS):
        words, history = [], 0
        while len(words) <= lengths[1]:
            j = int(np.searchsorted(cumulative[history], rng.random() * cumulative[history, -1]))
            if j >= end:
                break
            words.append(lm.words[j])
            history = j + 1
        if lengths[0] <= len(words) <= lengths[1] and split_of(words) == split:
            return tuple(words)
    raise DataError(f"no {split} sentence of {lengths} words in {_MAX_DRAWS} draws from the LM")


def uniform_prompt(rng: np.random.Generator, lengths=WORDS_PER_UTTERANCE) -> tuple:
    """``lengths[0]..lengths[1]`` words drawn uniformly from :func:`prompt_words`."""
    words = prompt_words()
    count = int(rng.integers(lengths[0], lengths[1] + 1))
    return tuple(words[k] for k in rng.integers(len(words), size=count))
