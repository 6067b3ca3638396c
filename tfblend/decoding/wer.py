"""Word error rate with kaldialign (Kaldi's edit distance): per utterance, per voice, overall.

WER = (substitutions + deletions + insertions) / reference words. Comparisons of two systems on
the same utterances use kaldialign's paired bootstrap over utterances (Bisani and Ney 2004,
Kaldi's ``compute-wer-bootci``).
"""

import os

import kaldialign

from tfblend.errors import DataError


def read_text(path: str) -> dict:
    """A Kaldi ``text`` / ``hyp.txt`` file (``utt-id word word ...`` lines) as
    ``{utt_id: tuple of words}``; DataError naming the file on a repeated utterance id."""
    result = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            if fields[0] in result:
                raise DataError(f"{path}:{number}: utterance {fields[0]} appears twice")
            result[fields[0]] = tuple(fields[1:])
    return result


def write_text(path: str, texts: dict) -> None:
    """Writes ``{utt_id: words}`` as Kaldi-style ``utt-id words...`` lines, sorted by id."""
    with open(path + ".tmp", "w") as f:
        f.writelines(" ".join([u, *words]) + "\n" for u, words in sorted(texts.items()))
    os.replace(path + ".tmp", path)


def _counts(ref, hyp) -> dict:
    edits = kaldialign.edit_distance(list(ref), list(hyp))
    return {"sub": edits["sub"], "del": edits["del"], "ins": edits["ins"], "ref": len(ref)}


def _summary(rows) -> dict:
    total = {"sub": 0, "del": 0, "ins": 0, "ref": 0}
    for row in rows:
        for key in total:
            total[key] += row[key]
    errors = total["sub"] + total["del"] + total["ins"]
    return {
        **total,
        "errors": errors,
        "utterances": len(rows),
        "wer": errors / total["ref"] if total["ref"] else float("nan"),
    }


def score(refs: dict, hyps: dict, speakers: dict | None = None, source: str = "hypotheses") -> dict:
    """Scores ``hyps`` against ``refs`` (both ``{utt_id: words}``).

    Every utterance of ``hyps`` needs a reference (DataError naming ``source`` and the utterance
    otherwise); references without hypotheses are ignored (a decoded subset).

    Returns:
      ``{"overall": {...}, "per_voice": {voice: {...}}, "per_utterance": {utt_id: {...}}}``, each
      with ``sub``, ``del``, ``ins``, ``ref`` (reference words), ``errors``, ``wer``;
      ``per_voice`` only when ``speakers`` (``{utt_id: voice}``) is given.
    """
    missing = [u for u in hyps if u not in refs]
    if missing:
        raise DataError(f"{source}: utterance {missing[0]} has no reference transcript")
    per_utt = {}
    for utt_id in sorted(hyps):
        row = _counts(refs[utt_id], hyps[utt_id])
        row["wer"] = (row["sub"] + row["del"] + row["ins"]) / max(row["ref"], 1)
        per_utt[utt_id] = row
    result = {"overall": _summary(list(per_utt.values())), "per_utterance": per_utt}
    if speakers is not None:
        voices = {}
        for utt_id, row in per_utt.items():
            voices.setdefault(speakers[utt_id], []).append(row)
        result["per_voice"] = {v: _summary(rows) for v, rows in sorted(voices.items())}
    return result


def paired_bootstrap(refs: dict, hyps_a: dict, hyps_b: dict, replications: int = 10000) -> dict:
    """Paired bootstrap over the utterances both systems decoded: ``{"wer_a", "wer_b",
    "ci95_a", "ci95_b", "p_b_better"}`` (the probability that b's WER is below a's)."""
    utts = sorted(set(hyps_a) & set(hyps_b))
    if not utts:
        raise DataError("the two systems share no decoded utterance")
    result = kaldialign.bootstrap_wer_ci(
        [list(refs[u]) for u in utts],
        [list(hyps_a[u]) for u in utts],
        [list(hyps_b[u]) for u in utts],
        replications=replications,
    )
    return {
        "utterances": len(utts),
        "wer_a": result["system1"]["wer"],
        "wer_b": result["system2"]["wer"],
        "ci95_a": result["system1"]["ci95"],
        "ci95_b": result["system2"]["ci95"],
        "p_b_better": result["p_s2_improv_over_s1"],
    }


def format_table(rows: dict) -> str:
    """A markdown table of ``{name: overall summary}``: WER, S, D, I, words, utterances."""
    lines = ["| model | WER | sub | del | ins | words | utterances |", "|---" * 7 + "|"]
    for name, s in rows.items():
        lines.append(
            f"| {name} | {s['wer']:.2%} | {s['sub']} | {s['del']} | {s['ins']} | {s['ref']} "
            f"| {s['utterances']} |"
        )
    return "\n".join(lines)
