"""The anchor: pocketsphinx's own recognizer (its GMM acoustic model) on the same test audio.

The corpus stores features, not audio, so the test audio is rendered again from the corpus plan
(``tfblend.corpus.design.plan_corpus`` and ``render``: synthesis, resampling, pauses and
seeded white noise are all functions of the corpus seed), which gives the very samples the
stored features were computed from. That audio already carries white noise at 25-45 dB SNR
around and under the speech, so pocketsphinx never sees espeak's exact digital silence (which
costs it much accuracy: docs/reference-facts.md section 3).

Two configurations, scored with the same WER code as the hybrid models:
- ``task LM``: the task's ARPA bigram (the same one the decoding graph holds) and the
  pocketsphinx dictionary;
- ``default LM``: pocketsphinx's own ``en-us.lm.bin`` trigram and dictionary (open vocabulary).
"""

import re

import numpy as np

from tfblend.corpus import mdef
from tfblend.errors import DataError

_ALTERNATE = re.compile(r"\(\d+\)$")


def rendered_audio(corpus_info: dict, utt_ids) -> dict:
    """``{utt_id: int16 [N] 16 kHz pcm}`` re-rendered from a synthetic corpus manifest's
    ``metadata["corpus"]`` (size, seed, prompts). DataError for an id not in the plan."""
    from tfblend.corpus import design, prompts

    plan = design.plan_corpus(
        corpus_info["size"],
        corpus_info["seed"],
        corpus_info.get("prompts", "uniform"),
        corpus_info.get("prompt_vocabulary", prompts.DEFAULT_VOCABULARY),
    )
    jobs = {job.utt_id: job for job in plan}
    audio = {}
    for utt_id in utt_ids:
        if utt_id not in jobs:
            raise DataError(f"utterance {utt_id} is not in the corpus plan it claims to be from")
        audio[utt_id] = design.render(jobs[utt_id])[0]
    return audio


class PocketsphinxRecognizer:
    """pocketsphinx 5 decoding 16 kHz int16 audio with its en-us model.

    Args:
      lm: an ARPA or ``.lm.bin`` language model (None: pocketsphinx's default ``en-us.lm.bin``).
      dictionary: pronunciations (default: pocketsphinx's ``cmudict-en-us.dict``).
    """

    def __init__(self, lm: str | None = None, dictionary: str | None = None):
        import pocketsphinx

        from tfblend.corpus.prompts import default_lm_path

        self._decoder = pocketsphinx.Decoder(
            hmm=mdef.default_model_dir(),
            lm=lm or default_lm_path(),
            dict=dictionary or mdef.default_dictionary(),
            samprate=16000,
            loglevel="FATAL",
        )

    def __call__(self, pcm: np.ndarray) -> tuple:
        """The recognised words of one utterance (fillers and ``<s>``, ``</s>`` dropped)."""
        decoder = self._decoder
        decoder.start_utt()
        decoder.process_raw(np.ascontiguousarray(pcm, np.int16).tobytes(), full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        if hyp is None:
            return ()
        words = [_ALTERNATE.sub("", w) for w in hyp.hypstr.split()]
        return tuple(w for w in words if not (w.startswith("<") or w.startswith("[")))
