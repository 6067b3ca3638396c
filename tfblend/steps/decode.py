"""Word error rates: decode exported models' log-likelihoods with HCLG and score them.

For every model (an export, whose own served log_likelihoods are decoded, a Kaldi ark of
log-likelihood matrices, or an --ensemble of exports: log(mean of the members' posteriors) - log
prior, from the matrices the members served; see tfblend.decoding.ensemble) the acoustic scale
is chosen on --dev_split from --acoustic_scales and then applied once to --split (never chosen
on it). The decoding graph is built from the corpus's task LM (and reused while its inputs are
unchanged), or given (--nobuild_graph).
--anchor adds pocketsphinx's own recognizer (its GMM acoustic model) on the same test audio,
re-rendered from the corpus plan, with the task LM and with its default LM.

Reads:  <corpus_dir>/<split> and <corpus_dir>/<dev_split> (features, transcripts in text), the
        exports or arks, <graph_dir> (built if missing), <report_dir>/results.json (optional).
Writes: <output_dir>/<model>/hyp.txt (utt-id words...) and wer.json (per utterance, per voice,
        overall, with substitutions/deletions/insertions), <output_dir>/wer.json (every model,
        the anchor, paired bootstraps), and with --report_dir a WER column and section in
        results.md / results.json.

Example:
  python -m tfblend.steps.decode --corpus_dir=work/demo/corpus --graph_dir=work/demo/graph \
      --model=blended=savedmodels/tfblend_blended_cnn/1 --output_dir=work/demo/wer
  ... --model=teacher=work/demo/exports/teacher/1 --model=cnn=work/demo/exports/cnn/1 \
      --ensemble=ensemble=teacher+cnn
  ... --member=teacher=work/demo/exports/teacher/1 --member=cnn=... --ensemble=ens=teacher+cnn
      (decodes the ensemble only; its members are scored for it, not decoded)
"""

import os
import time

from absl import flags

from tfblend import cli
from tfblend.errors import DataError

cli.define_flags(
    "corpus_dir", "split", "output_dir", split="test", required=("corpus_dir", "output_dir")
)
flags.DEFINE_string("dev_split", "dev", "Split the acoustic scale is chosen on.")
flags.DEFINE_multi_string("model", [], "NAME=EXPORT_DIR: decode what this export serves.")
flags.DEFINE_multi_string(
    "member",
    [],
    "NAME=EXPORT_DIR: an export that only serves an --ensemble: scored once for it, not "
    "decoded on its own (its own WER is decoded elsewhere, e.g. by an earlier --model run).",
)
flags.DEFINE_multi_string(
    "loglikes", [], "NAME=TEST_ARK[,DEV_ARK]: Kaldi ark/scp of [T, K] log-likelihoods."
)
flags.DEFINE_multi_string(
    "ensemble",
    [],
    "NAME=A+B[+C]: decode the mean of the posteriors of the --model or --member exports A, B "
    "(same senone "
    "count and priors), with its own acoustic scale from dev.",
)
flags.DEFINE_string("graph_dir", None, "Decoding graph directory.")
flags.DEFINE_bool(
    "build_graph",
    True,
    "Build --graph_dir from the corpus's task LM (reused while its inputs are unchanged); "
    "--nobuild_graph decodes with the graph --graph_dir holds.",
)
flags.DEFINE_list(
    "acoustic_scales", ["0.05", "0.07", "0.1", "0.16"], "Scales tried on the dev split."
)
flags.DEFINE_float("beam", 13.0, "Decoding beam.")
flags.DEFINE_integer("max_active", 5000, "Most active tokens per frame.")
flags.DEFINE_integer("per_voice", None, "Decode the first N utterances of each test voice.")
flags.DEFINE_integer("dev_per_voice", None, "Choose the scale on the first N of each dev voice.")
flags.DEFINE_bool("anchor", False, "Also score pocketsphinx's own recognizer on the test audio.")
flags.DEFINE_string("focus", None, "Compare this model with every other (paired bootstrap).")
flags.DEFINE_string("report_dir", None, "Add the WER column to this evaluation report.")
flags.mark_flag_as_required("graph_dir")
FLAGS = flags.FLAGS


def _pairs(values):
    out = {}
    for value in values:
        name, _, rest = value.partition("=")
        if not name or not rest:
            raise DataError(f"expected NAME=VALUE, got {value!r}")
        out[name] = rest
    return out


def _graph(test_dir):
    """The graph: built (or reused, by digest, with its files verified) from the corpus's task
    LM for an LM-prompted corpus (unless --nobuild_graph); otherwise --graph_dir must hold one,
    intact (``GraphDecoder`` verifies its files). Either way it must be built from the
    dictionary and acoustic model the corpus labels came from (pocketsphinx's); a graph of
    another LM than the corpus's task LM is named in a warning line."""
    from tfblend.corpus.mdef import default_dictionary, default_model_dir
    from tfblend.decoding import graph as graph_lib

    corpus = read_corpus_facts(test_dir)
    lm_prompted = corpus.get("prompts") == "lm"
    if FLAGS.build_graph and lm_prompted:
        record = graph_lib.build_task_graph(FLAGS.graph_dir, corpus["prompt_vocabulary"])
        how = "reused" if record["reused"] else f"built in {record['build_seconds']:.0f} s"
        if record["rebuilt_because"]:
            how = f"rebuilt in {record['build_seconds']:.0f} s: {record['rebuilt_because']}"
        cli.say(
            f"graph {FLAGS.graph_dir}: {record['num_words']} words, "
            f"{record['sizes']['HCLG_states']:,} states, {record['hclg_bytes'] / 1e6:.0f} MB, "
            + how
        )
        return FLAGS.graph_dir
    record_path = os.path.join(FLAGS.graph_dir, graph_lib.GRAPH_FILE)
    if not lm_prompted and not os.path.exists(record_path):
        raise DataError(
            f"{test_dir}: the corpus was not prompted from a task LM and {record_path} does "
            "not exist; build a graph for its vocabulary (tfblend.decoding.graph.build_graph)"
        )
    record = graph_lib.read_graph_record(FLAGS.graph_dir)
    expected = graph_lib.acoustic_digests(default_dictionary(), default_model_dir())
    foreign = graph_lib.input_differences(record["inputs"], expected, graph_lib.ACOUSTIC_INPUTS)
    if foreign:
        raise DataError(
            f"{record_path}: built for another {' and '.join(foreign)} than the corpus labels "
            f"come from ({default_dictionary()}, {default_model_dir()}); rebuild it"
        )
    if lm_prompted:
        task = graph_lib.task_lm_digests(corpus["prompt_vocabulary"])
        other = graph_lib.input_differences(record["inputs"], task, ("arpa", "vocabulary"))
        if other:
            cli.say(
                f"warning: graph {FLAGS.graph_dir} was built from another "
                f"{' and '.join(other)} than the corpus's task LM (--nobuild_graph keeps it)"
            )
    return FLAGS.graph_dir


def read_corpus_facts(split_dir: str) -> dict:
    """The corpus facts a split's manifest records (``metadata.corpus``; {} for imported data)."""
    from tfblend.records import read_manifest

    return read_manifest(split_dir)["metadata"].get("corpus", {})


def _warn_out_of_vocabulary(decoder, refs: dict, utterances) -> dict:
    """Says, before decoding, how many test words the graph cannot recognise (a warning line);
    returns the counts for wer.json."""
    from tfblend.decoding import wer_runs

    oov = wer_runs.out_of_vocabulary(refs, utterances, decoder.words)
    if oov["words"]:
        cli.say(
            f"warning: {oov['words']} of {oov['distinct']} test words are not in the graph's "
            f"vocabulary ({FLAGS.graph_dir}/words.txt): {oov['tokens']} of {oov['ref_tokens']} "
            f"word tokens, OOV rate {oov['rate']:.1%}, which no model can recognise "
            f"(first: {', '.join(oov['examples'])})"
        )
    return oov


def main(_):
    from tfblend.decoding import wer_runs
    from tfblend.decoding.decoder import ExportScorer, GraphDecoder
    from tfblend.decoding.ensemble import Ensemble, parse_ensembles

    decoded, arks = _pairs(FLAGS.model), _pairs(FLAGS.loglikes)
    serving_only = _pairs(FLAGS.member)
    if not decoded and not arks and not FLAGS.ensemble and not FLAGS.anchor:
        raise DataError("give at least one --model=NAME=EXPORT_DIR or --loglikes=NAME=ARK")
    members = parse_ensembles(_pairs(FLAGS.ensemble), decoded, arks, serving_only)
    exports = {**decoded, **serving_only}
    scorers = {name: ExportScorer(export_dir) for name, export_dir in exports.items()}
    ensembles = {  # test and dev accumulate apart
        name: {split: Ensemble(name, {m: scorers[m] for m in names}) for split in ("test", "dev")}
        for name, names in members.items()
    }
    test_dir = cli.split_dir(FLAGS.corpus_dir, FLAGS.split)
    dev_dir = cli.split_dir(FLAGS.corpus_dir, FLAGS.dev_split)
    if FLAGS.dev_split == FLAGS.split:
        raise DataError("--dev_split must differ from --split: the scale is never chosen on test")
    graph_dir = _graph(test_dir)
    decoder = GraphDecoder(graph_dir, beam=FLAGS.beam, max_active=FLAGS.max_active)
    refs = wer_runs.load_references(test_dir)
    dev_refs = wer_runs.load_references(dev_dir)
    test_utts = wer_runs.select_utterances(test_dir, refs, FLAGS.per_voice)
    dev_utts = wer_runs.select_utterances(dev_dir, dev_refs, FLAGS.dev_per_voice)
    speakers = {u.utt_id: u.speaker for u in test_utts}
    scales = [float(s) for s in FLAGS.acoustic_scales]
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    oov = _warn_out_of_vocabulary(decoder, refs, test_utts)
    summary = {"split": FLAGS.split, "graph": decoder.record, "oov": oov, "models": {},
               "anchor": {}}  # fmt: skip
    all_hyps = {}

    def run(name, test_ll, dev_ll, source):
        start = time.time()
        hyps, report = wer_runs.decode_model(
            decoder, test_ll, dev_ll, source, output_dir=os.path.join(FLAGS.output_dir, name),
            refs=refs, dev_refs=dev_refs, speakers=speakers, scales=scales,
        )  # fmt: skip
        summary["models"][name] = {k: v for k, v in report.items() if k != "per_utterance"}
        all_hyps[name] = hyps
        _say(name, report, time.time() - start)

    _decode_exports(run, decoder, scorers, decoded, ensembles, test_utts, dev_utts)
    _decode_arks(run, arks, test_utts)
    for name, parts in ensembles.items():
        source = "mean posterior of " + " + ".join(f"{m} ({exports[m]})" for m in members[name])
        run(name, parts["test"].loglikes(), parts["dev"].loglikes(), source)
    if FLAGS.anchor:
        summary["anchor"] = _anchor(test_dir, test_utts, refs, speakers, graph_dir, all_hyps)
    if FLAGS.focus:
        summary["bootstrap"] = _bootstrap(refs, all_hyps)
    _write_summary(summary)


def _say(name: str, report: dict, seconds: float) -> None:
    o = report["overall"]
    cli.say(
        f"{name}: WER {o['wer']:.2%} (S {o['sub']}, D {o['del']}, I {o['ins']} of "
        f"{o['ref']} words, {o['utterances']} utterances), acoustic scale "
        f"{report['acoustic_scale']} from dev {report['dev_wer_by_scale']}, "
        f"{report['real_time_factor']:.2f} x real time, {seconds:.0f} s"
    )


def _decode_exports(run, decoder, scorers, decoded, ensembles, test_utts, dev_utts) -> None:
    """Scores the test and dev subsets with every export once: decodes the --model ones and
    feeds the ensembles they are members of."""
    from tfblend.decoding import wer_runs

    for scorer in scorers.values():
        decoder.check_senones(scorer.num_classes, f"export {scorer.export_dir}")
    for name, scorer in scorers.items():
        test_ll = wer_runs.score_matrices(scorer, test_utts)
        dev_ll = wer_runs.score_matrices(scorer, dev_utts)
        if name in decoded:
            run(name, test_ll, dev_ll, scorer.export_dir)
        for parts in ensembles.values():
            if name in parts["test"].members:
                parts["test"].add(name, test_ll)
                parts["dev"].add(name, dev_ll)


def _decode_arks(run, arks: dict, test_utts) -> None:
    """Decodes the --loglikes arks (their test matrices of the test subset only)."""
    from tfblend.decoding.decoder import read_ark

    for name, value in arks.items():
        test_ark, _, dev_ark = value.partition(",")
        if not dev_ark:
            raise DataError(f"--loglikes {name}: give TEST_ARK,DEV_ARK (the scale needs dev)")
        test_ll, dev_ll = read_ark(test_ark), read_ark(dev_ark)
        wanted = {u.utt_id for u in test_utts}
        run(name, {u: m for u, m in test_ll.items() if u in wanted}, dev_ll, test_ark)


def _write_summary(summary: dict) -> None:
    """``<output_dir>/wer.json``, the WER table on stdout, the report's WER column."""
    from tfblend.decoding import wer as wer_lib
    from tfblend.records import write_json

    write_json(os.path.join(FLAGS.output_dir, "wer.json"), summary)
    rows = {n: m["overall"] for n, m in summary["models"].items()}
    rows.update({n: a["overall"] for n, a in summary["anchor"].items()})
    print(wer_lib.format_table(rows))
    if FLAGS.report_dir:
        from tfblend.evaluation.report import add_word_error_rates

        add_word_error_rates(FLAGS.report_dir, summary)
        cli.say(f"WER column added to {FLAGS.report_dir}/results.md")


def _anchor(test_dir, test_utts, refs, speakers, graph_dir, all_hyps):
    from tfblend.decoding import anchor
    from tfblend.decoding import wer as wer_lib
    from tfblend.decoding.graph import LM_FILE
    from tfblend.records import read_manifest

    corpus = read_manifest(test_dir)["metadata"].get("corpus")
    if not corpus or corpus.get("name") != "tfblend.synthetic":
        raise DataError(f"{test_dir}: --anchor needs the synthetic corpus (its audio is rendered)")
    audio = anchor.rendered_audio(corpus, [u.utt_id for u in test_utts])
    results = {}
    for name, lm in (
        ("pocketsphinx GMM, task LM", os.path.join(graph_dir, LM_FILE)),
        ("pocketsphinx GMM, default LM", None),
    ):
        start = time.process_time()
        recognizer = anchor.PocketsphinxRecognizer(lm=lm)
        hyps = {utt_id: recognizer(pcm) for utt_id, pcm in audio.items()}
        seconds = time.process_time() - start
        report = wer_lib.score(refs, hyps, speakers, source=name)
        report.pop("per_utterance")
        audio_seconds = sum(p.shape[0] for p in audio.values()) / 16000
        report["real_time_factor"] = round(seconds / audio_seconds, 4)
        results[name] = report
        all_hyps[name] = hyps
        cli.say(f"{name}: WER {report['overall']['wer']:.2%}")
    return results


def _bootstrap(refs, all_hyps):
    from tfblend.decoding import wer as wer_lib

    if FLAGS.focus not in all_hyps:
        raise DataError(f"--focus {FLAGS.focus!r} is not one of the decoded {list(all_hyps)}")
    return {
        other: wer_lib.paired_bootstrap(refs, hyps, all_hyps[FLAGS.focus])
        for other, hyps in all_hyps.items()
        if other != FLAGS.focus
    }


if __name__ == "__main__":
    cli.run(main)
