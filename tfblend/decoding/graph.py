"""The decoding graph HCLG, built from the acoustic model's own files and cached by digest.

Built as Kaldi builds it, with kaldifst (OpenFst plus Kaldi's FST tools) and kaldilm:

- G from the ARPA LM (``kaldilm.arpa2fst``, back-off arcs on ``#0``);
- L from the dictionary (``tfblend.decoding.lexicon``), with ``#0`` self-loops so G's back-off
  symbol passes; LG = det*(L o G), minimised;
- CLG by ``compose_context`` (triphones: width 3, central position 1);
- H without self-loops: each context window becomes its 3 HMM states' input labels; then
  HCLG = det*(H o CLG), the disambiguation symbols removed (composing on the left a one-state
  map that reads epsilon for them) and minimised, and last the HMM self-loops, composed on the
  left as a small transducer: entering label l's state, staying (cost -0.1 log a) and leaving
  (cost -0.1 log(1 - a)), a the stay probability from the model's transition matrices and 0.1
  Kaldi's self-loop scale. Everything runs in OpenFst; Python only writes the small FSTs.

An input label stands for one (senone, word-position tag) pair, not a senone alone: word
positions share senones, and with senone labels H o CLG is not functional and determinisation
fails. ``label_senones`` maps every label to its senone column (labels start at 1; 0 is epsilon).

A graph directory holds ``HCLG.fst``, ``words.txt``, ``label_senones.npy``, ``G.arpa`` (a copy
of the LM) and ``graph.json`` (the digest of every input, the size and sha256 of every file
above, sizes, build time). :func:`build_graph` reuses a directory whose recorded digest equals
that of its inputs and whose files are the ones recorded (:func:`verify_graph`: a truncated,
zeroed or replaced ``HCLG.fst`` is caught by its size or sha256 before OpenFst reads it), and
rebuilds it otherwise, saying why (``rebuilt_because``).
"""

import hashlib
import json
import os
import shutil
import time

import numpy as np

from tfblend.decoding import hmm, lexicon
from tfblend.errors import DataError
from tfblend.records import file_sha256, write_json

GRAPH_VERSION = 1
SELF_LOOP_SCALE = 0.1
GRAPH_FILE = "graph.json"
LM_FILE = "G.arpa"
#: The files a graph directory holds besides graph.json (what the decoder and the anchor load),
#: each recorded in graph.json with its size and sha256.
GRAPH_FILES = ("HCLG.fst", "words.txt", "label_senones.npy", LM_FILE)
#: The inputs that tie a graph to the acoustic model (its senones, its pronunciations).
ACOUSTIC_INPUTS = ("dictionary", "mdef", "transition_matrices")


def input_digests(words, arpa: str, dictionary: str, model_dir: str, silence_prob: float) -> dict:
    """The digests that identify a graph: of every input file, the vocabulary and the options."""
    return {
        "version": GRAPH_VERSION,
        **lm_digests(words, arpa),
        **acoustic_digests(dictionary, model_dir),
        "silence_prob": silence_prob,
        "self_loop_scale": SELF_LOOP_SCALE,
    }


def lm_digests(words, arpa: str) -> dict:
    """The digests of a graph's vocabulary and LM (``vocabulary``, ``arpa``)."""
    return {
        "vocabulary": hashlib.sha256("\n".join(words).encode()).hexdigest(),
        "arpa": file_sha256(arpa),
    }


def acoustic_digests(dictionary: str, model_dir: str) -> dict:
    """The digests of :data:`ACOUSTIC_INPUTS`: the dictionary and the acoustic model's
    ``mdef`` and ``transition_matrices``."""
    return {
        "dictionary": file_sha256(dictionary),
        "mdef": file_sha256(os.path.join(model_dir, "mdef")),
        "transition_matrices": file_sha256(os.path.join(model_dir, "transition_matrices")),
    }


def build_graph(
    output_dir: str,
    words,
    arpa: str,
    *,
    dictionary: str | None = None,
    model_dir: str | None = None,
    silence_prob: float = 0.5,
) -> dict:
    """Builds (or reuses) HCLG for ``words`` and the ARPA LM ``arpa`` in ``output_dir``.

    Args:
      output_dir: the graph directory (created; replaced when its inputs changed).
      words: the vocabulary (every word needs a pronunciation in ``dictionary``).
      arpa: an ARPA LM over ``words``.
      dictionary: CMU-style dictionary (default: pocketsphinx's ``cmudict-en-us.dict``).
      model_dir: the acoustic model folder with ``mdef`` and ``transition_matrices`` (default:
        pocketsphinx's en-us).
      silence_prob: the probability of optional silence after a word.

    Returns:
      The ``graph.json`` record: digests, ``num_senones``, ``num_labels``, sizes, seconds, and
      ``reused`` (whether the cache hit).
    """
    from tfblend.corpus import mdef as mdef_lib

    dictionary = dictionary or mdef_lib.default_dictionary()
    model_dir = model_dir or mdef_lib.default_model_dir()
    words = list(words)
    digests = input_digests(words, arpa, dictionary, model_dir, silence_prob)
    digest = hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()
    cached, reason = _cached(output_dir, digests, digest)
    if cached is not None:
        return {**cached, "reused": True, "rebuilt_because": None}
    start = time.time()
    topology = hmm.load_topology(model_dir)
    prons = lexicon.read_dictionary(dictionary, words)
    lex = lexicon.build_lexicon(prons, topology, silence_prob)
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    staging = os.path.join(parent, f".{os.path.basename(output_dir)}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        hclg, label_senones, sizes = _compile(lex, arpa, topology, staging)
        hclg.write(os.path.join(staging, "HCLG.fst"))
        shutil.copyfile(arpa, os.path.join(staging, LM_FILE))
        np.save(os.path.join(staging, "label_senones.npy"), label_senones)
        with open(os.path.join(staging, "words.txt"), "w") as f:
            f.writelines(f"{w} {i}\n" for i, w in enumerate(lex.words))
        record = {
            "digest": digest,
            "inputs": digests,
            "paths": {"dictionary": dictionary, "model_dir": model_dir},
            "num_words": len(words),
            "num_senones": topology.model.num_senones,
            "num_labels": int(label_senones.shape[0] - 1),
            "sizes": sizes,
            "hclg_bytes": os.path.getsize(os.path.join(staging, "HCLG.fst")),
            "files": {name: _file_facts(os.path.join(staging, name)) for name in GRAPH_FILES},
            "build_seconds": round(time.time() - start, 2),
        }
        write_json(os.path.join(staging, GRAPH_FILE), record)
        shutil.rmtree(output_dir, ignore_errors=True)
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {**record, "reused": False, "rebuilt_because": reason}


def _cached(output_dir: str, digests: dict, digest: str) -> tuple:
    """``(record, None)`` when ``output_dir`` holds the graph of ``digest`` with its files
    intact; else ``(None, why it is rebuilt)`` (None for a directory without a graph)."""
    if not os.path.exists(os.path.join(output_dir, GRAPH_FILE)):
        return None, None
    try:
        record = read_graph_record(output_dir)
    except DataError as error:
        return None, str(error)
    if record.get("digest") != digest:
        changed = input_differences(record["inputs"], digests)
        return None, f"its {' and '.join(changed) or 'inputs'} changed since {GRAPH_FILE}"
    problem = check_graph_files(output_dir, record)
    return (record, None) if problem is None else (None, problem)


def _file_facts(path: str) -> dict:
    return {"bytes": os.path.getsize(path), "sha256": file_sha256(path)}


def input_differences(recorded: dict, expected: dict, keys=None) -> list[str]:
    """The names of the inputs (of ``keys``, default all) whose recorded digests differ."""
    keys = sorted(set(recorded) | set(expected)) if keys is None else keys
    return [key for key in keys if recorded.get(key) != expected.get(key)]


def read_graph_record(graph_dir: str) -> dict:
    """``graph.json`` of a graph directory; DataError naming the file when it is missing,
    unreadable or not a graph record."""
    path = os.path.join(graph_dir, GRAPH_FILE)
    try:
        with open(path) as stream:
            record = json.load(stream)
    except FileNotFoundError:
        raise DataError(f"{graph_dir} holds no decoding graph ({path} is missing)") from None
    except (OSError, ValueError) as error:
        why = getattr(error, "strerror", None) or error
        raise DataError(f"cannot read {path}: {why}") from None
    if not isinstance(record, dict) or not isinstance(record.get("inputs"), dict):
        raise DataError(f"{path} is not a decoding graph record (no inputs)")
    return record


def check_graph_files(graph_dir: str, record: dict) -> str | None:
    """None when every file of :data:`GRAPH_FILES` has the size and sha256 ``record``
    (graph.json) gives it, else what differs, naming the file. The size is compared first: a
    truncated file is named without hashing it. DataError for a file that cannot be read."""
    files = record.get("files")
    if not isinstance(files, dict):
        return f"{GRAPH_FILE} records no sizes and checksums of its files (an older graph)"
    for name in GRAPH_FILES:
        path = os.path.join(graph_dir, name)
        expected = files.get(name)
        if not isinstance(expected, dict) or not isinstance(expected.get("bytes"), int):
            return f"{GRAPH_FILE} records no size and checksum of {name}"
        try:
            size = os.path.getsize(path)
            if size != expected["bytes"]:
                return (
                    f"{path} is {size:,} bytes, {GRAPH_FILE} records {expected['bytes']:,} "
                    "(truncated or replaced)"
                )
            if file_sha256(path) != expected.get("sha256"):
                return f"{path} does not match the sha256 in {GRAPH_FILE} (corrupt or replaced)"
        except FileNotFoundError:
            return f"{path} is missing"
        except OSError as error:
            raise DataError(f"cannot read {path}: {error.strerror or error}") from None
    return None


def verify_graph(graph_dir: str) -> dict:
    """The record of a graph directory whose files are intact (:func:`check_graph_files`);
    DataError naming the graph and what differs otherwise."""
    record = read_graph_record(graph_dir)
    problem = check_graph_files(graph_dir, record)
    if problem is not None:
        raise DataError(f"decoding graph {graph_dir}: {problem}; rebuild it")
    return record


def _compile(lex, arpa, topology, workdir):
    import kaldifst
    import kaldilm

    words_txt = os.path.join(workdir, "words.txt")
    with open(words_txt, "w") as f:
        f.writelines(f"{w} {i}\n" for i, w in enumerate(lex.words))
    g_path = os.path.join(workdir, "G.fst")
    kaldilm.arpa2fst(
        arpa, g_path, disambig_symbol="#0", read_symbol_table=words_txt, max_arpa_warnings=0
    )
    g = kaldifst.StdVectorFst.read(g_path)
    os.remove(g_path)
    kaldifst.arcsort(g, sort_type="ilabel")
    lfst = kaldifst.compile(lex.text)
    kaldifst.add_self_loops(lfst, [lex.disambig[0]], [lex.words.index("#0")])
    kaldifst.arcsort(lfst, sort_type="olabel")
    lg = kaldifst.compose(lfst, g)
    kaldifst.determinize_star(lg)
    kaldifst.minimize_encoded(lg)
    sizes = {"G_states": g.num_states, "LG_states": lg.num_states}
    clg, windows = kaldifst.compose_context(list(lex.disambig), 3, 1, lg)
    kaldifst.arcsort(clg, sort_type="ilabel")
    sizes["CLG_states"] = clg.num_states
    h_text, label_senones, num_emitting, num_disambig = _h_transducer(windows, lex, topology)
    hfst = kaldifst.compile(h_text)
    kaldifst.arcsort(hfst, sort_type="olabel")
    hclg = kaldifst.compose(hfst, clg)
    del clg, hfst
    kaldifst.determinize_star(hclg)
    kaldifst.arcsort(hclg, sort_type="ilabel")
    # The disambiguation symbols go: compose with a one-state map (label:label, eps:#k).
    relabel = kaldifst.compile(_relabel_text(num_emitting, num_disambig))
    kaldifst.arcsort(relabel, sort_type="olabel")
    hclg = kaldifst.compose(relabel, hclg)
    kaldifst.minimize_encoded(hclg)
    kaldifst.arcsort(hclg, sort_type="ilabel")
    loops = topology.self_loop_log_probs()[label_senones[1:]]
    looper = kaldifst.compile(_self_loop_text(loops))
    kaldifst.arcsort(looper, sort_type="olabel")
    hclg = kaldifst.compose(looper, hclg)
    kaldifst.arcsort(hclg, sort_type="ilabel")
    arcs = sum(hclg.num_arcs(state) for state in range(hclg.num_states))
    sizes.update({"HCLG_states": hclg.num_states, "HCLG_arcs": int(arcs)})
    return hclg, label_senones, sizes


def _h_transducer(windows, lex, topology):
    """H without self-loops: one 3-arc path per context window, back to the start state; a loop
    per disambiguation window. Returns (text, label_senones int64 [1 + N], N emitting labels,
    the number of disambiguation labels, numbered N + 1 ...)."""
    names = topology.model.phone_names
    base_of = {}
    for i, phone in enumerate(lex.phones):
        if phone == lexicon.SILENCE:
            base_of[i] = (topology.silence, "SIL")
        elif "_" in phone:
            name, tag = phone.rsplit("_", 1)
            base_of[i] = (names.index(name), tag)
    labels = {}

    def label(senone, tag):
        return labels.setdefault((int(senone), tag), len(labels) + 1)

    paths, disambig = [], []
    for j, window in enumerate(windows):
        if not window:
            continue
        if len(window) == 1:
            disambig.append(j)  # [-#k], or [0]: Kaldi's #-1 (an epsilon of LG), removed later
            continue
        left, centre, right = window
        if centre not in base_of:
            raise DataError(f"context window {window} has no phone in the middle")
        base, tag = base_of[centre]
        sil = topology.silence
        position = hmm.POSITION_TAGS.index(tag) if tag != "SIL" else -1
        senones = topology.senones(
            base, base_of[left][0] if left else sil, base_of[right][0] if right else sil, position
        )
        paths.append((j, [label(s, tag) for s in senones]))
    num_emitting = len(labels)
    lines, state = [], 1
    for j, path in paths:
        lines.append(f"0 {state} {path[0]} {j}")
        for k, lab in enumerate(path[1:]):
            target = 0 if k == len(path) - 2 else state + 1
            lines.append(f"{state} {target} {lab} 0")
            state += 1
    for k, j in enumerate(disambig):
        lines.append(f"0 0 {num_emitting + k + 1} {j}")
    lines.append("0")
    label_senones = np.zeros(num_emitting + 1, np.int64)
    for (senone, _), lab in labels.items():
        label_senones[lab] = senone
    return "\n".join(lines) + "\n", label_senones, num_emitting, len(disambig)


def _relabel_text(num_emitting, num_disambig):
    """A one-state transducer: every emitting label to itself, epsilon to each disambiguation
    label (so in ``relabel o HCLG`` those arcs take no input)."""
    lines = [f"0 0 {label} {label}" for label in range(1, num_emitting + 1)]
    lines += [f"0 0 0 {num_emitting + k}" for k in range(1, num_disambig + 1)]
    return "\n".join([*lines, "0"]) + "\n"


def _self_loop_text(loops):
    """The HMM self-loops as a transducer to compose on the left of HCLG: label l enters state
    s_l (l:l), stays (l:eps, cost -0.1 log a) and leaves (eps:eps, cost -0.1 log(1 - a)), a the
    stay probability of l's HMM state; the start state is final."""
    stay = np.exp(loops)
    loop_cost = -SELF_LOOP_SCALE * np.log(stay)
    exit_cost = -SELF_LOOP_SCALE * np.log1p(-stay)
    lines = []
    for label in range(1, loops.shape[0] + 1):
        lines.append(f"0 {label} {label} {label} 0")
        lines.append(f"{label} {label} {label} 0 {loop_cost[label - 1]:.7g}")
        lines.append(f"{label} 0 0 0 {exit_cost[label - 1]:.7g}")
    return "\n".join([*lines, "0"]) + "\n"


def task_lm_digests(vocabulary_size: int) -> dict:
    """:func:`lm_digests` of the task LM an LM-prompted corpus was sampled from."""
    import tempfile

    from tfblend.corpus import prompts

    words = prompts.vocabulary(vocabulary_size)
    with tempfile.TemporaryDirectory(prefix="tfblend-lm-") as tmp:
        arpa = os.path.join(tmp, LM_FILE)
        prompts.write_arpa(prompts.task_lm(words), arpa)
        return lm_digests(words, arpa)


def build_task_graph(output_dir: str, vocabulary_size: int, **options) -> dict:
    """:func:`build_graph` for the task LM of an LM-prompted corpus
    (``tfblend.corpus.prompts``: the source LM's bigram over the ``vocabulary_size`` most
    probable words, the LM the prompts were sampled from)."""
    from tfblend.corpus import prompts

    words = prompts.vocabulary(vocabulary_size)
    parent = os.path.dirname(os.path.abspath(output_dir))
    os.makedirs(parent, exist_ok=True)
    arpa = os.path.join(parent, f".{os.path.basename(output_dir)}.{os.getpid()}.arpa")
    try:
        prompts.write_arpa(prompts.task_lm(words), arpa)
        return build_graph(output_dir, words, arpa, **options)
    finally:
        if os.path.exists(arpa):
            os.remove(arpa)
