"""WER of a set of models on a split: references, a fixed subset, the acoustic scale from dev.

The acoustic scale of every model is chosen on the dev split (the scale with the lowest dev WER
from a grid) and only then applied to the test split: test never chooses anything.
"""

import os
import time

import numpy as np

from tfblend.decoding import wer as wer_lib
from tfblend.errors import DataError

FRAME_SECONDS = 0.01


def load_references(split_dir: str) -> dict:
    """``{utt_id: words}`` from ``split_dir/text``; DataError naming the file if it is missing."""
    path = os.path.join(split_dir, "text")
    if not os.path.exists(path):
        raise DataError(f"{path} is missing: the split has no transcripts to score WER against")
    return wer_lib.read_text(path)


def select_utterances(split_dir: str, refs: dict, per_voice: int | None):
    """The split's utterances in canonical order, the first ``per_voice`` of each voice (all if
    None): a list of ``records.Utterance``. DataError naming ``split_dir/text`` for an utterance
    without a transcript."""
    from tfblend.records import iterate_utterances

    taken, count = [], {}
    for utterance in iterate_utterances(split_dir):
        if per_voice is not None and count.get(utterance.speaker, 0) >= per_voice:
            continue
        if utterance.utt_id not in refs:
            raise DataError(
                f"{os.path.join(split_dir, 'text')}: no transcript for utterance {utterance.utt_id}"
            )
        count[utterance.speaker] = count.get(utterance.speaker, 0) + 1
        taken.append(utterance)
    if not taken:
        raise DataError(f"{split_dir}: no utterances to decode")
    return taken


def out_of_vocabulary(refs: dict, utterances, vocabulary) -> dict:
    """The reference words of ``utterances`` that are not in ``vocabulary`` (a graph's
    words.txt): ``words`` and ``distinct`` (distinct OOV and all words), ``tokens`` and
    ``ref_tokens`` (OOV and all running words), ``rate`` (tokens / ref_tokens) and
    ``examples`` (the first five OOV words, sorted)."""
    vocabulary = set(vocabulary)
    running = [word for u in utterances for word in refs[u.utt_id]]
    missing = sorted({word for word in running if word not in vocabulary})
    tokens = sum(word not in vocabulary for word in running)
    return {
        "words": len(missing),
        "distinct": len(set(running)),
        "tokens": tokens,
        "ref_tokens": len(running),
        "rate": tokens / len(running) if running else 0.0,
        "examples": missing[:5],
    }


def decode_all(decoder, loglikes: dict, acoustic_scale: float) -> tuple:
    """Decodes ``{utt_id: [T, K]}`` at one scale: ``({utt_id: words}, seconds, not_final)``."""
    decoder.acoustic_scale = acoustic_scale
    hyps, not_final = {}, 0
    start = time.process_time()
    for utt_id, matrix in loglikes.items():
        hypothesis = decoder.decode(matrix, utt_id)
        hyps[utt_id] = hypothesis.words
        not_final += not hypothesis.reached_final
    return hyps, time.process_time() - start, not_final


def choose_scale(decoder, dev_loglikes: dict, dev_refs: dict, scales) -> tuple:
    """The scale of ``scales`` with the lowest dev WER (ties: the first): ``(scale, {scale:
    dev WER})``."""
    results = {}
    for scale in scales:
        hyps, _, _ = decode_all(decoder, dev_loglikes, scale)
        results[float(scale)] = wer_lib.score(dev_refs, hyps, source="dev")["overall"]["wer"]
    best = min(results, key=lambda s: (results[s], list(results).index(s)))
    return best, results


def test_report(decoder, loglikes: dict, refs: dict, speakers: dict, scale: float) -> tuple:
    """Decodes the test matrices at ``scale``; ``(hyps, report)`` where report is
    :func:`tfblend.decoding.wer.score`'s plus ``acoustic_scale``, ``cpu_seconds``,
    ``audio_seconds``, ``real_time_factor`` (CPU seconds per audio second) and
    ``not_reached_final``."""
    hyps, seconds, not_final = decode_all(decoder, loglikes, scale)
    report = wer_lib.score(refs, hyps, speakers, source="test")
    audio = sum(m.shape[0] for m in loglikes.values()) * FRAME_SECONDS
    report.update({
        "acoustic_scale": scale,
        "cpu_seconds": round(seconds, 3),
        "audio_seconds": round(audio, 3),
        "real_time_factor": round(seconds / audio, 4),
        "not_reached_final": not_final,
    })  # fmt: skip
    return hyps, report


def score_matrices(scorer, utterances) -> dict:
    """``{utt_id: float32 [T, K]}``: ``scorer(features, utt_id)`` of every utterance."""
    return {u.utt_id: np.asarray(scorer(u.features, u.utt_id)) for u in utterances}


def decode_model(decoder, test_ll: dict, dev_ll: dict, source: str, *, output_dir: str, refs: dict,
                 dev_refs: dict, speakers: dict, scales) -> tuple:  # fmt: skip
    """One model's WER run: its matrices' senones checked against the graph, the acoustic scale
    chosen on dev (:func:`choose_scale`), the test matrices decoded at it (:func:`test_report`,
    plus ``source`` and ``dev_wer_by_scale``); writes ``output_dir/hyp.txt`` and
    ``output_dir/wer.json``. Returns ``(hyps, report)``."""
    from tfblend.records import write_json

    for utt_id, matrix in [*test_ll.items(), *dev_ll.items()]:
        decoder.check_senones(matrix.shape[1], f"{source} ({utt_id})")
    scale, dev_wers = choose_scale(decoder, dev_ll, dev_refs, scales)
    hyps, report = test_report(decoder, test_ll, refs, speakers, scale)
    report.update({"source": source, "dev_wer_by_scale": dev_wers})
    os.makedirs(output_dir, exist_ok=True)
    wer_lib.write_text(os.path.join(output_dir, "hyp.txt"), hyps)
    write_json(os.path.join(output_dir, "wer.json"), report)
    return hyps, report
