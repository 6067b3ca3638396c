"""HCLG from the acoustic model's files, the decoder, WER, and the scripts around them.

The end-to-end test needs log-likelihoods that a correct chain must decode to the right words;
a tiny model trained for one epoch decodes nothing, so it could not fail in a useful way. It
therefore exports an "oracle" window model through the real export path (``export_model``: the
``utterance`` signature, splicing in the graph, priors counted on the tiny train alignments,
``log_likelihoods`` = log-posteriors - log priors): the model reads a real tiny-corpus test
utterance's pocketsphinx alignment, carried in feature 0, and puts its posterior mass on the
aligned senone. Decoding that served output gives the transcript only if the graph's triphone
contexts, word positions, silences and pronunciations are those the aligner used, and only if the
export serves log-likelihoods the decoder can read.
"""

import json
import os
import re
import shutil

import kaldiio
import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import run_script

from tfblend import records as records_lib
from tfblend.corpus import mdef, prompts
from tfblend.decoding import graph as graph_lib
from tfblend.decoding import hmm, lexicon, wer, wer_runs
from tfblend.decoding.decoder import ExportScorer, GraphDecoder
from tfblend.errors import DataError
from tfblend.export import export_model, senone_log_priors
from tfblend.records import iterate_utterances


@pytest.fixture(scope="module")
def small_graph(tiny_corpus, tmp_path_factory):
    """A graph of 300 words (the 300 most probable, plus every word of tiny dev and test) and
    the task bigram restricted to them."""
    words = list(prompts.vocabulary(300))
    for split in ("dev", "test"):
        for sentence in wer.read_text(str(tiny_corpus / split / "text")).values():
            words += [w for w in sentence if w not in words]
    root = tmp_path_factory.mktemp("graph")
    arpa = str(root / "lm.arpa")
    prompts.write_arpa(prompts.task_lm(tuple(words)), arpa)
    record = graph_lib.build_graph(str(root / "graph"), words, arpa)
    assert not record["reused"]
    return str(root / "graph")


class _Oracle(keras.Model):
    """Puts its mass on the senone written in feature 0 of the window's centre frame."""

    def __init__(self, num_classes, context):
        super().__init__(name="oracle")
        self.num_classes, self.context = num_classes, context

    def call(self, windows):
        senone = tf.cast(tf.round(windows[:, self.context, 0]), tf.int32)
        return 30.0 * tf.one_hot(senone, self.num_classes)


def _alignment_features(utterance):
    features = np.zeros_like(utterance.features)
    features[:, 0] = utterance.labels
    return features


@pytest.fixture(scope="module")
def oracle_export(tiny_corpus, tmp_path_factory):
    model = _Oracle(mdef.default_senone_model().num_senones, context=2)
    model(np.zeros((1, 5, 40), np.float32))
    priors = senone_log_priors(tiny_corpus / "train", model.num_classes)
    path = str(tmp_path_factory.mktemp("exports") / "oracle" / "1")
    return export_model(model, path, kind="window", feature_dim=40, log_priors=priors, context=2)


def test_graph_is_cached_by_the_digest_of_its_inputs(small_graph, tmp_path):
    with open(os.path.join(small_graph, "graph.json")) as f:
        record = json.load(f)
    assert record["num_senones"] == 5126 and record["num_words"] >= 300
    assert record["sizes"]["HCLG_states"] > record["sizes"]["CLG_states"] > 0
    words = wer.read_text(os.path.join(small_graph, "words.txt"))  # "word id" lines
    words = list(words)[1:-3]  # without <eps>, #0, <s>, </s>
    arpa = os.path.join(small_graph, graph_lib.LM_FILE)
    shutil.copyfile(arpa, tmp_path / "lm.arpa")
    again = graph_lib.build_graph(small_graph, words, str(tmp_path / "lm.arpa"))
    assert again["reused"] and again["digest"] == record["digest"]
    assert graph_lib.input_digests(words[:-1], arpa, mdef.default_dictionary(),
                                   mdef.default_model_dir(), 0.5) != record["inputs"]  # fmt: skip


def _senone_path(words, topology):
    names = {n: i for i, n in enumerate(topology.model.phone_names)}
    prons = lexicon.read_dictionary(mdef.default_dictionary(), words)
    phones = []
    for w in words:
        pron = prons[w][0]
        for k, base in enumerate(pron):
            position = (hmm.SINGLE if len(pron) == 1 else hmm.BEGIN if k == 0
                        else hmm.END if k == len(pron) - 1 else hmm.INTERNAL)  # fmt: skip
            phones.append((names[base], position))
    silence = list(topology.model.phones["senones"][topology.silence])
    path = list(silence)
    for i, (base, position) in enumerate(phones):
        left = phones[i - 1][0] if i else topology.silence
        right = phones[i + 1][0] if i + 1 < len(phones) else topology.silence
        path += list(topology.senones(base, left, right, position))
    return np.array(path + silence)


def test_decoder_finds_the_words_of_a_known_senone_path(small_graph):
    topology = hmm.load_topology()
    decoder = GraphDecoder(small_graph, acoustic_scale=1.0)
    for words in (("they", "know", "what", "you", "like", "about", "people"),
                  ("they", "know", "what", "you", "like", "about", "money")):  # fmt: skip
        frames = np.repeat(_senone_path(words, topology), 3)
        loglikes = np.full((frames.shape[0], 5126), -20.0, np.float32)
        loglikes[np.arange(frames.shape[0]), frames] = 0.0
        hypothesis = decoder.decode(loglikes)
        assert hypothesis.words == words and hypothesis.reached_final


def test_export_output_of_a_real_utterance_decodes_to_its_words(
    tiny_corpus, small_graph, oracle_export
):
    refs = wer_runs.load_references(str(tiny_corpus / "test"))
    scorer = ExportScorer(oracle_export)
    decoder = GraphDecoder(small_graph, acoustic_scale=1.0)
    hyps = {}
    for utterance in iterate_utterances(tiny_corpus / "test"):
        loglikes = scorer(_alignment_features(utterance), utterance.utt_id)
        assert loglikes.shape == (utterance.labels.shape[0], 5126)
        hyps[utterance.utt_id] = decoder.decode(loglikes, utterance.utt_id).words
    assert len(hyps) >= 5
    assert hyps == {u: refs[u] for u in hyps}


def test_wer_counts_substitutions_deletions_insertions():
    refs = {"a-1": ("the", "cat", "sat"), "b-1": ("on", "the", "mat")}
    hyps = {"a-1": ("the", "bat", "sat", "down"), "b-1": ("on", "mat")}
    result = wer.score(refs, hyps, {"a-1": "a", "b-1": "b"})
    assert result["overall"] == {"sub": 1, "del": 1, "ins": 1, "ref": 6, "errors": 3,
                                 "utterances": 2, "wer": 0.5}  # fmt: skip
    assert result["per_voice"]["a"]["wer"] == pytest.approx(2 / 3)
    assert result["per_utterance"]["b-1"]["del"] == 1
    better = wer.paired_bootstrap(refs, hyps, refs, replications=200)
    assert better["wer_b"] == 0.0 and better["p_b_better"] > 0.5
    with pytest.raises(DataError, match="c-1 has no reference"):
        wer.score(refs, {**hyps, "c-1": ("x",)})


def _features_as_alignment(src, dst):
    """A copy of a split whose features are the alignment (what the oracle reads)."""
    from tfblend import records

    utterances = [
        records.Utterance(u.utt_id, u.speaker, _alignment_features(u), u.labels, u.phones)
        for u in iterate_utterances(src)
    ]
    manifest = records.read_manifest(src)
    records.write_utterance_shards(
        dst, iter(utterances), num_shards=1, num_classes=manifest["num_classes"],
        num_phones=manifest.get("num_phones"), metadata=manifest.get("metadata"),
    )  # fmt: skip
    shutil.copyfile(os.path.join(src, "text"), os.path.join(dst, "text"))


def test_decode_and_compute_loglikes_scripts(tiny_corpus, small_graph, oracle_export, tmp_path):
    data = tmp_path / "corpus"
    for split in ("dev", "test"):
        _features_as_alignment(str(tiny_corpus / split), str(data / split))
    run_script(
        "compute_loglikes.py", f"--export_dir={oracle_export}", f"--corpus_dir={data}",
        "--split=test", f"--output={tmp_path / 'test'}",
    )  # fmt: skip
    test = dict(kaldiio.load_scp(str(tmp_path / "test.scp")))
    assert set(test) == set(wer.read_text(str(data / "test" / "text")))
    scorer = ExportScorer(oracle_export)
    for utterance in iterate_utterances(data / "test"):  # the ark holds what the export serves
        np.testing.assert_allclose(test[utterance.utt_id], scorer(utterance.features), rtol=1e-6)
    with kaldiio.WriteHelper(f"ark:{tmp_path / 'dev.ark'}") as writer:
        for utterance in iterate_utterances(data / "dev"):
            writer(utterance.utt_id, scorer(utterance.features))
    out = tmp_path / "wer"
    result = run_script(
        "decode.py", f"--corpus_dir={data}", f"--graph_dir={small_graph}", "--nobuild_graph",
        f"--model=oracle={oracle_export}", f"--output_dir={out}", "--per_voice=1",
        "--acoustic_scales=0.3,1", f"--loglikes=ark={tmp_path / 'test.scp'},{tmp_path / 'dev.ark'}",
    )  # fmt: skip
    assert "| oracle | 0.00% |" in result.stdout, result.stdout
    summary = json.loads((out / "wer.json").read_text())
    assert summary["models"]["oracle"]["overall"]["wer"] == 0.0
    assert summary["models"]["ark"]["overall"] == summary["models"]["oracle"]["overall"]
    hyps = wer.read_text(str(out / "oracle" / "hyp.txt"))
    assert len(hyps) == 2  # --per_voice=1 of the 2 test voices
    refs = wer.read_text(str(data / "test" / "text"))
    assert hyps == {u: refs[u] for u in hyps}


def _one_line_error(result, *fragments):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode != 0 and len(lines) == 1, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_bad_input_is_named(tiny_corpus, small_graph, oracle_export, tmp_path):
    decoder = GraphDecoder(small_graph)
    with pytest.raises(DataError, match="graph.json was built for 5126"):
        decoder.decode(np.zeros((10, 42), np.float32), "u-1")
    with pytest.raises(DataError, match="cmudict-en-us.dict: no pronunciation .*zzqxw"):
        lexicon.read_dictionary(mdef.default_dictionary(), ["the", "zzqxw"])
    refs = wer_runs.load_references(str(tiny_corpus / "test"))
    refs.pop(sorted(refs)[0])
    with pytest.raises(DataError, match="text: no transcript for utterance"):
        wer_runs.select_utterances(str(tiny_corpus / "test"), refs, None)
    # An export that serves no log_likelihoods.
    lacking = tmp_path / "lacking"
    module = tf.Module()
    module.f = tf.function(lambda features: {"posteriors": tf.nn.softmax(features)},
                           input_signature=[tf.TensorSpec([None, 40], tf.float32)])  # fmt: skip
    tf.saved_model.save(module, str(lacking), signatures={"utterance": module.f})
    shutil.copytree(os.path.join(oracle_export, "assets.extra"), lacking / "assets.extra")
    with pytest.raises(DataError, match="lacking: signature 'utterance' serves no log_lik"):
        ExportScorer(str(lacking))
    # A graph built for another dictionary, and a split without transcripts.
    other = tmp_path / "other_graph"
    shutil.copytree(small_graph, other)
    record = json.loads((other / "graph.json").read_text())
    record["inputs"]["dictionary"] = "0" * 64
    (other / "graph.json").write_text(json.dumps(record))
    common = [f"--model=oracle={oracle_export}", f"--output_dir={tmp_path / 'o'}"]
    common.append("--nobuild_graph")
    result = run_script("decode.py", f"--corpus_dir={tiny_corpus}", f"--graph_dir={other}", *common,
                        check=False)  # fmt: skip
    _one_line_error(result, "other_graph/graph.json: built for another dictionary")
    bare = tmp_path / "bare"
    for split in ("dev", "test"):
        shutil.copytree(tiny_corpus / split, bare / split)
    os.remove(bare / "test" / "text")
    result = run_script("decode.py", f"--corpus_dir={bare}", f"--graph_dir={small_graph}", *common,
                        check=False)  # fmt: skip
    _one_line_error(result, "bare/test/text is missing")


def test_report_gains_a_wer_column_and_section(tmp_path):
    from tfblend.evaluation.report import add_word_error_rates

    seed = {"mean": 0.4, "std": 0.0, "values": [0.4]}
    results = {"split": "test", "frames": 10, "models": {
        "CNN baseline": {"summary": {"accuracy": seed}, "info": []},
        "blended CNN": {"summary": {"accuracy": seed}, "info": []},
        "ensemble": {"summary": {"accuracy": seed}, "info": []},
    }}  # fmt: skip
    (tmp_path / "results.json").write_text(json.dumps(results))
    table = "| model | frame acc % |\n|---|---|\n| CNN baseline | 40.00 |\n"
    (tmp_path / "results.md").write_text(f"Held-out split.\n\n{table}\n- a comparison\n")
    overall = {"sub": 2, "del": 1, "ins": 0, "ref": 10, "errors": 3, "utterances": 2, "wer": 0.3}
    entry = {"overall": overall, "per_voice": {"v1": overall}, "acoustic_scale": 0.1,
             "real_time_factor": 0.2}  # fmt: skip
    summary = {
        "split": "test",
        "graph": {"num_words": 300, "sizes": {"HCLG_states": 1000}, "hclg_bytes": 2e6},
        "models": {
            "CNN baseline": entry,
            "blended CNN": {**entry, "overall": {**overall, "wer": 0.2}},
        },
        "anchor": {"pocketsphinx GMM, task LM": {"overall": {**overall, "wer": 0.5}}},
        "bootstrap": {"CNN baseline": {"utterances": 2, "wer_a": 0.3, "wer_b": 0.2,
                                       "p_b_better": 0.9}},
    }  # fmt: skip
    for _ in range(2):  # a second run replaces the section instead of adding one
        markdown = add_word_error_rates(str(tmp_path), summary)
    assert markdown.count("## Word error rate") == 1
    assert "| CNN baseline | 40.00 |" in markdown and "| blended CNN | 40.00 |" in markdown
    table = markdown.split("## Word error rate")[0]  # the results table has the anchor's row
    assert "| pocketsphinx GMM, task LM |  |  |  |  |  |  |  | 50.00 |" in table
    assert "test WER %" in markdown and "| 20.00 |" in markdown and "- a comparison" in markdown
    assert (
        "| pocketsphinx GMM, task LM | 50.00 |" in markdown
        and "P(focus better) = 0.900" in markdown
    )
    assert json.loads((tmp_path / "results.json").read_text())["word_error_rates"] == summary
    with pytest.raises(DataError, match="holds no evaluation report"):
        add_word_error_rates(str(tmp_path / "nothing"), summary)


def test_anchor_hears_the_audio_the_features_came_from(tiny_corpus, small_graph):
    from tfblend import features
    from tfblend.decoding import anchor
    from tfblend.records import read_manifest

    info = read_manifest(tiny_corpus / "test")["metadata"]["corpus"]
    utterance = next(iterate_utterances(tiny_corpus / "test"))
    pcm = anchor.rendered_audio(info, [utterance.utt_id])[utterance.utt_id]
    expected = features.log_mel(
        pcm / 32768.0, features.FeatureConfig(), utterance.features.shape[0]
    )
    np.testing.assert_allclose(utterance.features, expected.numpy(), atol=1e-4)
    recognizer = anchor.PocketsphinxRecognizer(lm=os.path.join(small_graph, graph_lib.LM_FILE))
    words = recognizer(pcm)
    vocabulary = set(wer.read_text(os.path.join(small_graph, "words.txt")))
    assert words and set(words) <= vocabulary
    with pytest.raises(DataError, match="nowhere-0000 is not in the corpus plan"):
        anchor.rendered_audio(info, ["nowhere-0000"])


def _export_model_dir(model_dir, path):
    """A model directory exported as ``scripts/export.py`` exports it (priors and CMVN of its
    training set)."""
    from tfblend.export import train_cmvn
    from tfblend.train.modeldir import load_model_dir

    model, info = load_model_dir(model_dir)
    return export_model(
        model, path, kind=info["kind"], feature_dim=info["feature_dim"],
        log_priors=senone_log_priors(info["train_dir"], info["num_classes"]),
        context=info["context"], cmvn=train_cmvn(info["train_dir"]) if info["cmvn"] == "global"
        else None,
    )  # fmt: skip


@pytest.fixture(scope="module")
def member_exports(tiny_teacher, tiny_student, tmp_path_factory):
    """Exports of the tiny BLSTM teacher and the tiny CNN: {name: export_dir}."""
    base = tmp_path_factory.mktemp("members")
    return {
        "teacher": _export_model_dir(tiny_teacher, str(base / "teacher" / "1")),
        "cnn": _export_model_dir(tiny_student, str(base / "cnn" / "1")),
    }


@pytest.fixture(scope="module")
def odd_exports(tiny_corpus, tmp_path_factory):
    """Oracle exports that cannot join the members' ensembles: "few" scores 42 senones,
    "dev_prior" divides by priors counted on dev."""
    base, out = tmp_path_factory.mktemp("odd"), {}
    for name, classes, prior_split in (("few", 42, "train"), ("dev_prior", 5126, "dev")):
        model = _Oracle(classes, context=2)
        model(np.zeros((1, 5, 40), np.float32))
        priors = senone_log_priors(tiny_corpus / prior_split, classes)
        out[name] = export_model(model, str(base / name / "1"), kind="window", feature_dim=40,
                                 log_priors=priors, context=2)  # fmt: skip
    return out


def _served_posteriors(loaded, features):
    """float32 [T, K] posteriors, from a loaded export's own ``posteriors`` output."""
    if "utterance" in loaded.signatures:
        return loaded.signatures["utterance"](features=tf.constant(features))["posteriors"].numpy()
    out = loaded.signatures["serving_default"](
        features=tf.constant(features[None]), lengths=tf.constant([features.shape[0]])
    )
    return out["posteriors"].numpy()[0]


def test_ensemble_loglikes_are_the_log_mean_posterior_minus_the_log_prior(
    tiny_corpus, member_exports, odd_exports
):
    from tfblend.decoding.ensemble import Ensemble

    scorers = {name: ExportScorer(path) for name, path in member_exports.items()}
    utterances = list(iterate_utterances(tiny_corpus / "test"))[:3]
    ensemble = Ensemble("ens", scorers)
    for name, scorer in scorers.items():
        ensemble.add(name, wer_runs.score_matrices(scorer, utterances))
    loglikes = ensemble.loglikes()
    log_prior = senone_log_priors(tiny_corpus / "train", scorers["cnn"].num_classes)
    loaded = [tf.saved_model.load(path) for path in member_exports.values()]
    for utterance in utterances:
        posteriors = [_served_posteriors(export, utterance.features) for export in loaded]
        expected = np.log(np.mean(posteriors, axis=0)) - log_prior
        assert loglikes[utterance.utt_id].shape == expected.shape
        np.testing.assert_allclose(loglikes[utterance.utt_id], expected, atol=1e-5, rtol=0)
    # Members must agree on the senone count and on the prior their log-likelihoods divide by.
    odd = {name: ExportScorer(path) for name, path in odd_exports.items()}
    with pytest.raises(DataError, match=r"ensemble e: members cnn \(.*\) and few .* 42 senones"):
        Ensemble("e", {"cnn": scorers["cnn"], "few": odd["few"]})
    with pytest.raises(DataError, match="dev_prior .* were exported with different senone prio"):
        Ensemble("e", {"teacher": scorers["teacher"], "dev_prior": odd["dev_prior"]})
    with pytest.raises(DataError, match="needs at least two members"):
        Ensemble("e", {"cnn": scorers["cnn"]})


def test_decode_script_decodes_an_ensemble(tiny_corpus, small_graph, member_exports, tmp_path):
    out = tmp_path / "wer"
    # The teacher is decoded too (--model); the CNN only serves the ensemble (--member).
    result = run_script(
        "decode.py", f"--corpus_dir={tiny_corpus}", f"--graph_dir={small_graph}", "--nobuild_graph",
        f"--model=teacher={member_exports['teacher']}", f"--member=cnn={member_exports['cnn']}",
        "--ensemble=ens=teacher+cnn", "--focus=ens", f"--output_dir={out}",
        "--per_voice=1", "--dev_per_voice=1", "--acoustic_scales=0.1",
    )  # fmt: skip
    assert "| ens |" in result.stdout, result.stdout
    summary = json.loads((out / "wer.json").read_text())
    assert list(summary["models"]) == ["teacher", "ens"]
    assert set(summary["bootstrap"]) == {"teacher"}
    assert not (out / "cnn").exists()
    entry = summary["models"]["ens"]
    assert entry["source"].startswith("mean posterior of teacher") and entry["acoustic_scale"]
    assert json.loads((out / "ens" / "wer.json").read_text())["overall"] == entry["overall"]
    # The script decoded the ensemble's log-likelihoods, not a member's.
    from tfblend.decoding.ensemble import Ensemble

    scorers = {name: ExportScorer(path) for name, path in member_exports.items()}
    refs = wer_runs.load_references(str(tiny_corpus / "test"))
    utterances = wer_runs.select_utterances(str(tiny_corpus / "test"), refs, 1)
    ensemble = Ensemble("ens", scorers)
    for name, scorer in scorers.items():
        ensemble.add(name, wer_runs.score_matrices(scorer, utterances))
    decoder = GraphDecoder(small_graph)
    hyps, _, _ = wer_runs.decode_all(decoder, ensemble.loglikes(), 0.1)
    assert wer.read_text(str(out / "ens" / "hyp.txt")) == hyps


def test_bad_ensembles_are_named(tiny_corpus, small_graph, member_exports, odd_exports, tmp_path):
    common = [f"--corpus_dir={tiny_corpus}", f"--graph_dir={small_graph}", "--nobuild_graph",
              f"--output_dir={tmp_path / 'o'}", f"--model=cnn={member_exports['cnn']}",
              f"--model=few={odd_exports['few']}"]  # fmt: skip
    result = run_script("decode.py", *common, "--ensemble=e=cnn+few", check=False)
    _one_line_error(result, "ensemble e: members cnn", odd_exports["few"], "42 senones")
    assert not (tmp_path / "o").exists()  # refused before anything was decoded
    from tfblend.decoding.ensemble import parse_ensembles

    exports, arks = {"cnn": "C", "teacher": "T"}, {"ark": "A"}
    assert parse_ensembles({"e": "cnn+teacher"}, exports, arks) == {"e": ["cnn", "teacher"]}
    for spec, message in (
        ({"e": "cnn+blend"}, "--ensemble=e=cnn\\+blend: 'blend' is not a --model"),
        ({"e": "cnn"}, "--ensemble=e=cnn: an ensemble needs at least two members"),
        ({"e": "cnn+cnn"}, "names a member twice"),
        ({"e": "cnn+ark"}, "'ark' is a --loglikes ark; members must be --model exports"),
        ({"cnn": "cnn+teacher"}, "'cnn' is already the name of a --model"),
    ):
        with pytest.raises(DataError, match=message):
            parse_ensembles(spec, exports, arks)
    # --member exports only serve ensembles: never also a --model, never in no ensemble.
    assert parse_ensembles({"e": "cnn+m"}, exports, arks, {"m": "M"}) == {"e": ["cnn", "m"]}
    for serving_only, message in (
        ({"cnn": "C2"}, "--member=cnn: 'cnn' is already the name of a --model"),
        ({"m": "M", "n": "N"}, "--member=n: 'n' is a member of no --ensemble"),
    ):
        with pytest.raises(DataError, match=message):
            parse_ensembles({"e": "cnn+m"}, exports, arks, serving_only)


# -- graphs checked on reuse, served NaNs named by utterance ---------------------------------------


def _mini_graph(directory, words=None):
    """A graph of the 20 most probable task words (about 0.6 s to build): (record, words, arpa)."""
    words = list(words or prompts.vocabulary(20))
    arpa = os.path.join(os.path.dirname(directory), "mini.arpa")
    prompts.write_arpa(prompts.task_lm(tuple(words)), arpa)
    return graph_lib.build_graph(directory, words, arpa), words, arpa


def test_graphs_are_checked_on_reuse(tiny_corpus, small_graph, oracle_export, tmp_path):
    """A truncated, zeroed or foreign graph is rebuilt (or, under --nobuild_graph, refused) with
    one line saying what differs; a graph missing test words warns with the OOV rate."""
    mini = str(tmp_path / "mini")
    record, words, arpa = _mini_graph(mini)
    assert record["files"]["HCLG.fst"]["bytes"] == record["hclg_bytes"] > 0
    hclg = os.path.join(mini, "HCLG.fst")
    size = os.path.getsize(hclg)
    with open(hclg, "r+b") as stream:  # truncated: caught by the size, before OpenFst reads it
        stream.truncate(size // 2)
    message = f"{hclg} is {size // 2:,} bytes, graph.json records {size:,} (truncated or replaced)"
    with pytest.raises(DataError, match=re.escape(f"decoding graph {mini}: {message}; rebuild")):
        GraphDecoder(mini)
    again = graph_lib.build_graph(mini, words, arpa)
    assert not again["reused"] and again["rebuilt_because"] == message
    assert graph_lib.verify_graph(mini)["files"]["HCLG.fst"]["bytes"] == size  # whole again
    with open(hclg, "r+b") as stream:  # zeroed, same size: caught by the sha256
        stream.write(bytes(size))
    with pytest.raises(DataError, match="HCLG.fst does not match the sha256 in graph.json"):
        GraphDecoder(mini)
    rebuilt = graph_lib.build_graph(mini, words, arpa)
    assert "does not match the sha256" in rebuilt["rebuilt_because"]
    foreign = graph_lib.build_graph(mini, words[:-1], arpa)  # another vocabulary: rebuilt
    assert foreign["rebuilt_because"] == "its vocabulary changed since graph.json"
    assert graph_lib.build_graph(mini, words[:-1], arpa)["reused"]
    assert sorted(os.listdir(tmp_path)) == ["mini", "mini.arpa"]  # no staging dir left
    (tmp_path / "mini" / "graph.json").write_text("{not json")
    with pytest.raises(DataError, match=f"cannot read {mini}/graph.json: Expecting"):
        GraphDecoder(mini)
    graph_lib.build_graph(mini, words, arpa)
    # Under --nobuild_graph a truncated graph is refused in one line, before anything is written.
    truncated = tmp_path / "truncated"
    shutil.copytree(small_graph, truncated)
    os.truncate(truncated / "HCLG.fst", 0)
    out = tmp_path / "wer"
    result = run_script(
        "decode.py", f"--corpus_dir={tiny_corpus}", f"--graph_dir={truncated}", "--nobuild_graph",
        f"--model=oracle={oracle_export}", f"--output_dir={out}", check=False,
    )  # fmt: skip
    _one_line_error(result, f"decode.py: error: decoding graph {truncated}: {truncated}/HCLG.fst "
                            "is 0 bytes, graph.json records")  # fmt: skip
    assert "Traceback" not in result.stderr and not out.exists()
    # A graph of another LM (20 words): one warning line each for the LM and the OOV words.
    result = run_script(
        "decode.py", f"--corpus_dir={tiny_corpus}", f"--graph_dir={mini}", "--nobuild_graph",
        f"--model=oracle={oracle_export}", f"--output_dir={out}", "--per_voice=1",
        "--dev_per_voice=1", "--acoustic_scales=1",
    )  # fmt: skip
    assert "was built from another arpa and vocabulary than the corpus's task LM" in result.stdout
    oov = json.loads((out / "wer.json").read_text())["oov"]
    assert oov["words"] > 0 and 0 < oov["rate"] <= 1
    line = (f"warning: {oov['words']} of {oov['distinct']} test words are not in the graph's "
            f"vocabulary ({mini}/words.txt): {oov['tokens']} of {oov['ref_tokens']} word tokens, "
            f"OOV rate {oov['rate']:.1%}")  # fmt: skip
    assert line in result.stdout, result.stdout


def test_served_nan_is_named_by_utterance(tiny_corpus, oracle_export, tmp_path):
    """A NaN frame that reaches the export (a foreign shard) stops compute_loglikes in one line
    naming the utterance and the frame; no ark or scp is left."""
    corpus = tmp_path / "corpus"
    utterances = list(iterate_utterances(tiny_corpus / "test"))
    victim = utterances[1]
    victim.features = victim.features.copy()
    victim.features[7, 4] = np.nan
    manifest = records_lib.read_manifest(tiny_corpus / "test")
    path = records_lib.shard_paths(tiny_corpus / "test", manifest)[0]
    shutil.copytree(tiny_corpus / "test", corpus / "test")
    path = str(corpus / "test" / os.path.basename(path))
    first = utterances[: manifest["shards"][0]["num_utterances"]]
    assert victim.utt_id in {u.utt_id for u in first}
    with tf.io.TFRecordWriter(path) as writer:  # a foreign writer: the NaN is not refused
        for utterance in first:
            writer.write(records_lib.utterances._sequence_example(utterance, utterance.features))
    manifest["shards"][0].update(sha256=records_lib.file_sha256(path), bytes=os.path.getsize(path))
    records_lib.write_manifest(corpus / "test", manifest)
    scorer = ExportScorer(oracle_export)
    with pytest.raises(DataError, match=re.escape(
        f"utterance {victim.utt_id}: the export {oracle_export} refused its features: utterance: "
        "input features must be finite: frame 7 (feature 4) is nan"
    )):  # fmt: skip
        wer_runs.score_matrices(scorer, [victim])  # what decode.py scores utterances with
    result = run_script(
        "compute_loglikes.py", f"--export_dir={oracle_export}", f"--corpus_dir={corpus}",
        "--split=test", f"--output={tmp_path / 'out' / 'test'}", check=False,
    )  # fmt: skip
    _one_line_error(result, f"compute_loglikes.py: error: utterance {victim.utt_id}: the export",
                    "frame 7 (feature 4) is nan")  # fmt: skip
    assert result.returncode == 1 and os.listdir(tmp_path / "out") == []
