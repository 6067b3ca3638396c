"""The pronunciation lexicon: words -> word-position-dependent phones, as Kaldi's L.fst.

Phones carry their word position (``AH_B``, ``AH_I``, ``AH_E``, ``AH_S``), because the acoustic
model's triphones do (the mdef's b/i/e/s entries). Homophones and pronunciations that are a
prefix of another get disambiguation symbols ``#1, #2, ...`` (``#0`` is the LM's back-off
symbol), and silence is optional between words (probability ``silence_prob``), as in Kaldi's
``make_lexicon_fst.py``.
"""

import dataclasses
import math
from collections import Counter

from tfblend.decoding.hmm import BEGIN, END, INTERNAL, POSITION_TAGS, SINGLE, Topology
from tfblend.errors import DataError

EPS = "<eps>"
SILENCE = "SIL"


def read_dictionary(path: str, words) -> dict:
    """The pronunciations of ``words`` in a CMU-style dictionary (``word PH1 PH2 ...`` lines;
    alternates as ``word(2)``): ``{word: [tuple of base phone names, ...]}`` in the order of
    ``words``.

    Raises DataError naming the file and the first missing words if any word has none.
    """
    wanted = set(words)
    prons = {}
    try:
        with open(path) as f:
            for line in f:
                fields = line.split()
                if not fields:
                    continue
                word = fields[0].split("(", 1)[0]
                if word in wanted:
                    prons.setdefault(word, []).append(tuple(fields[1:]))
    except OSError as e:
        raise DataError(f"{path}: cannot read the dictionary: {e.strerror}") from e
    missing = [w for w in words if w not in prons]
    if missing:
        raise DataError(f"{path}: no pronunciation for {len(missing)} words, e.g. {missing[:5]}")
    return {w: prons[w] for w in words}


@dataclasses.dataclass(frozen=True)
class Lexicon:
    """Symbol tables and the arcs of L.

    Attributes:
      phones: phone symbols by id (0 ``<eps>``, then ``SIL``, the position-dependent phones, and
        the disambiguation symbols ``#0``, ``#1``, ...).
      words: word symbols by id (0 ``<eps>``, the vocabulary, ``#0``, ``<s>``, ``</s>``).
      disambig: the phone ids of the disambiguation symbols (``#0`` first).
      text: L in OpenFst's text format (``src dst ilabel olabel weight`` lines, then finals).
    """

    phones: tuple
    words: tuple
    disambig: tuple
    text: str

    def phone_id(self, name: str) -> int:
        return self.phones.index(name)


def positional(pron) -> list:
    """Base phone names -> position-dependent names (``AH`` -> ``AH_B`` ...)."""
    if len(pron) == 1:
        return [f"{pron[0]}_{POSITION_TAGS[SINGLE]}"]
    tags = [BEGIN] + [INTERNAL] * (len(pron) - 2) + [END]
    return [f"{p}_{POSITION_TAGS[t]}" for p, t in zip(pron, tags, strict=True)]


def build_lexicon(prons: dict, topology: Topology, silence_prob: float = 0.5) -> Lexicon:
    """L for the words of ``prons`` (:func:`read_dictionary`; every phone must be a speech phone
    of ``topology``'s model, else DataError naming the word)."""
    names = topology.model.phone_names
    speech = [names[i] for i in topology.speech_phones]
    phones = [EPS, SILENCE] + [f"{p}_{t}" for p in speech for t in POSITION_TAGS]
    phone_ids = {p: i for i, p in enumerate(phones)}
    entries = []
    for word, alternatives in prons.items():
        for pron in alternatives:
            unknown = [p for p in pron if p not in speech]
            if unknown:
                raise DataError(f"word {word!r}: phones {unknown} are not in the acoustic model")
            entries.append((word, tuple(positional(pron))))
    counts = Counter(p for _, p in entries)
    prefixes = {p[:k] for _, p in entries for k in range(1, len(p))}
    used, next_index, max_index = [], Counter(), 0
    for word, pron in entries:
        if counts[pron] > 1 or pron in prefixes:
            next_index[pron] += 1
            max_index = max(max_index, next_index[pron])
            used.append((word, (*pron, f"#{next_index[pron]}")))
        else:
            used.append((word, pron))
    disambig_names = [f"#{k}" for k in range(max_index + 1)]
    for name in disambig_names:
        phone_ids[name] = len(phones)
        phones.append(name)
    words = [EPS, *prons, "#0", "<s>", "</s>"]
    word_ids = {w: i for i, w in enumerate(words)}

    sil_cost, no_sil_cost = -math.log(silence_prob), -math.log(1.0 - silence_prob)
    start, loop, sil_state = 0, 1, 2
    lines = [
        f"{start} {loop} 0 0 {no_sil_cost:.6f}",
        f"{start} {sil_state} 0 0 {sil_cost:.6f}",
        f"{sil_state} {loop} {phone_ids[SILENCE]} 0 0",
    ]
    next_state = 3
    for word, pron in used:
        source, olabel = loop, word_ids[word]
        for symbol in pron[:-1]:
            lines.append(f"{source} {next_state} {phone_ids[symbol]} {olabel} 0")
            source, olabel, next_state = next_state, 0, next_state + 1
        last = phone_ids[pron[-1]]
        lines.append(f"{source} {loop} {last} {olabel} {no_sil_cost:.6f}")
        lines.append(f"{source} {sil_state} {last} {olabel} {sil_cost:.6f}")
    lines.append(f"{loop} 0")
    return Lexicon(
        phones=tuple(phones),
        words=tuple(words),
        disambig=tuple(phone_ids[n] for n in disambig_names),
        text="\n".join(lines) + "\n",
    )
