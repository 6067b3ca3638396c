"""Prompts: the task LM is the source LM restricted; sentences are disjoint across splits."""

import numpy as np
import pytest

from tfblend.corpus import design, prompts
from tfblend.errors import DataError


def _read_arpa(path):
    unigrams, bigrams, section = {}, {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("\\"):
                section = line
                continue
            fields = line.split("\t")
            if section == "\\1-grams:" and len(fields) >= 2:
                unigrams[fields[1]] = (float(fields[0]), float(fields[2]) if len(fields) > 2 else 0)
            elif section == "\\2-grams:" and len(fields) == 2:
                bigrams[tuple(fields[1].split())] = float(fields[0])
    return unigrams, bigrams


def test_vocabulary_is_the_most_probable_dictionary_words():
    words = prompts.vocabulary(50)
    assert len(set(words)) == 50 and set(words) <= set(prompts.prompt_words())
    assert words[:3] == ("the", "to", "and")
    assert prompts.vocabulary(80)[:50] == words
    with pytest.raises(DataError, match="outside"):
        prompts.vocabulary(0)


def test_arpa_equals_the_restricted_bigram(tmp_path):
    lm = prompts.task_lm(prompts.vocabulary(60))
    np.testing.assert_allclose(np.exp(lm.log_probs).sum(axis=1), 1.0, rtol=1e-9)
    # Frequent histories store most bigrams; the rest back off.
    assert 0 < lm.explicit.sum() < lm.explicit.size
    path = str(tmp_path / "lm.arpa")
    prompts.write_arpa(lm, path)
    unigrams, bigrams = _read_arpa(path)
    assert len(bigrams) == lm.explicit.sum()
    nexts = [*lm.words, "</s>"]
    for h, history in enumerate(["<s>", *lm.words]):
        for j, word in enumerate(nexts):
            if (history, word) in bigrams:
                log10 = bigrams[history, word]
            else:
                log10 = unigrams[history][1] + unigrams[word][0]
            assert log10 == pytest.approx(lm.log_probs[h, j] / np.log(10), abs=2e-4)


def test_sentences_are_deterministic_in_range_and_of_their_split():
    lm = prompts.task_lm(prompts.vocabulary(200))
    draws = {}
    for split in design.SPLITS:
        first = prompts.sample_sentence(lm, np.random.default_rng([1, 2]), split)
        again = prompts.sample_sentence(lm, np.random.default_rng([1, 2]), split)
        assert first == again and prompts.split_of(first) == split
        assert 5 <= len(first) <= 10 and set(first) <= set(lm.words)
        draws[split] = first
    assert len(set(draws.values())) == 3


def test_corpus_plan_splits_share_no_sentence():
    plan = design.plan_corpus("tiny", 0)
    by_split = {s: {j.words for j in plan if j.split == s} for s in design.SPLITS}
    assert not by_split["train"] & (by_split["dev"] | by_split["test"])
    assert not by_split["dev"] & by_split["test"]
    words = set(prompts.vocabulary(prompts.DEFAULT_VOCABULARY))
    assert all(set(j.words) <= words for j in plan)
    # The uniform prompts of old are still an option.
    uniform = design.plan_corpus("tiny", 0, prompt_kind="uniform")
    assert any(not set(j.words) <= words for j in uniform)
    with pytest.raises(DataError, match="unknown prompt kind"):
        design.plan_corpus("tiny", 0, prompt_kind="poems")
