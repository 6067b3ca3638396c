"""Hybrid HMM decoding of exported models' senone log-likelihoods, and word error rates.

- ``hmm``: triphone -> senones and transition probabilities, from the acoustic model's files;
- ``lexicon``: the pronunciation lexicon L;
- ``graph``: HCLG (kaldifst, kaldilm), cached on disk by the digest of its inputs;
- ``decoder``: kaldi-decoder's FasterDecoder over a ``[T, K]`` log-likelihood matrix, and the
  sources of matrices (an export's ``log_likelihoods``, a Kaldi ark);
- ``ensemble``: an ensemble's log-likelihoods (log mean posterior - log prior) from its
  members' served matrices;
- ``wer``: WER with kaldialign, per utterance, per voice and overall, and a paired bootstrap;
- ``anchor``: pocketsphinx's own recognizer on the same test audio.

Decoding knows no Keras model: it consumes what an export serves.
"""
