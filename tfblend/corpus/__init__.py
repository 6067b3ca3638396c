"""Where utterances come from: audio, transcripts and frame labels, written as utterance shards.

- ``tfblend.corpus.build``: the embedded default corpus (espeak-ng speech, pocketsphinx
  senone alignments), ``build_corpus``;
- ``tfblend.corpus.kaldi``: your own data, a Kaldi data directory with pdf-id alignments,
  ``import_kaldi_dir``;
- ``tfblend.corpus.mdef``: the senone inventory of a Sphinx model (senone -> phone map);
- ``tfblend.corpus.espeak`` and ``tfblend.corpus.align``: synthesis and forced alignment.

The submodules are imported on demand (``from tfblend.corpus import synthetic``), so reading a
model definition does not load the synthesiser or the aligner.
"""
