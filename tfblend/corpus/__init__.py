"""Where utterances come from: audio, transcripts and frame labels, written as utterance shards.

- ``tfblend.corpus.design``: the embedded default corpus's design (splits, voices, sizes, the
  utterance plan) and one utterance's audio, ``plan_corpus`` and ``render``;
- ``tfblend.corpus.build``: building it (espeak-ng speech, pocketsphinx senone alignments,
  utterance shards), ``build_corpus``;
- ``tfblend.corpus.kaldi``: your own data, a Kaldi data directory with pdf-id alignments,
  ``import_kaldi_dir``;
- ``tfblend.corpus.mdef``: the senone inventory of a Sphinx model (senone -> phone map);
- ``tfblend.corpus.espeak`` and ``tfblend.corpus.align``: synthesis and forced alignment.

The submodules are imported on demand (``from tfblend.corpus import build``), so reading a
model definition does not load the synthesiser or the aligner.
"""
