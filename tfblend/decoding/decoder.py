"""Decoding a ``[T, K]`` senone log-likelihood matrix with HCLG, and where the matrices come from.

The decoder is kaldi-decoder's ``FasterDecoder`` (Kaldi's beam-pruned Viterbi over the graph)
fed through ``DecodableCtc``, which returns ``matrix[t, i - 1]`` for graph input label i and
applies no acoustic scale: the matrix handed to it is ``acoustic_scale * loglikes[:, senone of
label]`` (one column per graph label; see ``tfblend.decoding.graph``).

The log-likelihoods come from what an export serves (the SavedModel's own ``log_likelihoods``
output: the ``utterance`` signature of a window model, ``serving_default`` of a sequence model)
or from a Kaldi ark of matrices (``tfblend.steps.compute_loglikes`` writes one). Decoding knows no
Keras model.
"""

import dataclasses
import os

import numpy as np

from tfblend.errors import DataError, assertion_text


@dataclasses.dataclass(frozen=True)
class Hypothesis:
    """A decoded utterance: ``words`` (tuple of str), ``cost`` (graph + scaled acoustic cost of
    the best path), ``reached_final`` (False: no final state survived the beam and the best
    partial path was taken)."""

    words: tuple
    cost: float
    reached_final: bool


class GraphDecoder:
    """Decodes log-likelihood matrices with one graph (``tfblend.decoding.graph``'s directory).

    Args:
      graph_dir: a graph directory (``HCLG.fst``, ``words.txt``, ``label_senones.npy``,
        ``graph.json``), verified against graph.json (``tfblend.decoding.graph.verify_graph``:
        DataError naming the file that is missing, truncated or changed) before it is read.
      acoustic_scale: multiplies the log-likelihoods (the LM weight is 1).
      beam: the decoding beam (cost units).
      max_active: the most tokens kept per frame.
    """

    def __init__(
        self, graph_dir: str, acoustic_scale: float = 0.1, beam: float = 13.0, max_active=7000
    ):
        import kaldi_decoder
        import kaldifst

        from tfblend.decoding.graph import verify_graph

        self.graph_dir = graph_dir
        self.record = verify_graph(graph_dir)  # the files' sizes and sha256 first
        try:
            self.label_senones = np.load(os.path.join(graph_dir, "label_senones.npy"))
            with open(os.path.join(graph_dir, "words.txt")) as f:
                self.words = [line.split()[0] for line in f]
        except (OSError, ValueError) as e:
            raise DataError(f"{graph_dir} is not a complete decoding graph directory: {e}") from e
        self.num_senones = int(self.record["num_senones"])
        self.acoustic_scale = acoustic_scale
        # FasterDecoder keeps a reference to the FST: this object keeps the FST alive.
        self.fst = kaldifst.StdVectorFst.read(os.path.join(graph_dir, "HCLG.fst"))
        options = kaldi_decoder.FasterDecoderOptions(beam=beam, max_active=max_active)
        self._decoder = kaldi_decoder.FasterDecoder(self.fst, options)
        self._decodable = kaldi_decoder.DecodableCtc

    def check_senones(self, num_classes: int, source: str) -> None:
        """Raises DataError naming ``source`` and the graph when their senone counts differ."""
        if num_classes != self.num_senones:
            raise DataError(
                f"{source} scores {num_classes} senones but the graph "
                f"{self.graph_dir}/graph.json was built for {self.num_senones}"
            )

    def decode(self, loglikes: np.ndarray, utt_id: str = "utterance") -> Hypothesis:
        """Decodes float ``[T, K]`` senone log-likelihoods (K = the graph's senone count)."""
        import kaldifst

        loglikes = np.asarray(loglikes, np.float32)
        if loglikes.ndim != 2 or loglikes.shape[0] == 0:
            raise DataError(f"{utt_id}: log-likelihoods of shape {loglikes.shape}, not [T, K]")
        self.check_senones(loglikes.shape[1], utt_id)
        if not np.isfinite(loglikes).all():
            raise DataError(f"{utt_id}: log-likelihoods hold NaN or infinite values")
        matrix = np.ascontiguousarray(self.acoustic_scale * loglikes[:, self.label_senones[1:]])
        self._decoder.decode(self._decodable(matrix))
        final = self._decoder.reached_final()
        ok, lattice = self._decoder.get_best_path(use_final_probs=final)
        if not ok:
            raise DataError(f"{utt_id}: the decoder found no path (beam too small?)")
        ok, _, olabels, weight = kaldifst.get_linear_symbol_sequence(lattice)
        words = tuple(self.words[o] for o in olabels)
        cost = float(weight.value1 + weight.value2) if hasattr(weight, "value1") else 0.0
        return Hypothesis(words=words, cost=cost, reached_final=bool(final))


class ExportScorer:
    """The log-likelihoods an export serves, utterance by utterance.

    Args:
      export_dir: ``<base>/<name>/<version>`` written by ``tfblend.export``.

    Attributes: ``num_classes`` K, ``feature_dim`` D, ``kind``, ``metadata`` (the export's
    ``tfblend.json``), ``log_priors`` (float32 ``[K]``: the senone log priors its served
    ``log_likelihoods`` are relative to, i.e. ``log_likelihoods = log_posteriors - log_priors``).

    Raises DataError naming the export when it is not a tfblend export, serves no
    ``log_likelihoods`` or stores no ``[K]`` priors.
    """

    def __init__(self, export_dir: str):
        import tensorflow as tf

        from tfblend.export import read_export_metadata

        self.export_dir = export_dir
        self.metadata = read_export_metadata(export_dir)
        self.kind = self.metadata["kind"]
        self.num_classes = int(self.metadata["num_classes"])
        self.feature_dim = int(self.metadata["feature_dim"])
        self.log_priors = np.asarray(self.metadata.get("log_priors", ()), np.float32)
        if self.log_priors.shape != (self.num_classes,):
            raise DataError(
                f"{export_dir}: assets.extra/tfblend.json holds log_priors of shape "
                f"{self.log_priors.shape}, not [{self.num_classes}]"
            )
        loaded = tf.saved_model.load(export_dir)
        name = "utterance" if self.kind == "window" else "serving_default"
        if name not in loaded.signatures:
            raise DataError(f"{export_dir}: no {name!r} signature to score utterances with")
        self._signature = loaded.signatures[name]
        if "log_likelihoods" not in self._signature.structured_outputs:
            raise DataError(f"{export_dir}: signature {name!r} serves no log_likelihoods")
        self._loaded = loaded
        self._tf = tf

    def __call__(self, features: np.ndarray, utt_id: str = "utterance") -> np.ndarray:
        """float32 ``[T, D]`` raw features -> float32 ``[T, K]`` log-likelihoods. DataError
        naming ``utt_id`` and the export when the export refuses them (a NaN or Inf frame)."""
        tf = self._tf
        features = np.asarray(features, np.float32)
        if features.ndim != 2 or features.shape[1] != self.feature_dim:
            raise DataError(
                f"{utt_id}: features of shape {features.shape}; the export {self.export_dir} "
                f"takes [T, {self.feature_dim}]"
            )
        try:
            if self.kind == "window":
                out = self._signature(features=tf.constant(features))
                return out["log_likelihoods"].numpy()
            out = self._signature(
                features=tf.constant(features[None]), lengths=tf.constant([features.shape[0]])
            )
        except tf.errors.InvalidArgumentError as error:  # the graph's input checks
            why = assertion_text(error.message) or error.message.strip().splitlines()[0]
            raise DataError(
                f"utterance {utt_id}: the export {self.export_dir} refused its features: {why}"
            ) from None
        return out["log_likelihoods"].numpy()[0]


def read_ark(path: str) -> dict:
    """``{utt_id: float32 [T, K]}`` from a Kaldi ark or scp of matrices (kaldiio)."""
    import kaldiio

    try:
        if path.endswith(".scp"):
            return {k: np.asarray(v, np.float32) for k, v in kaldiio.load_scp(path).items()}
        return {k: np.asarray(v, np.float32) for k, v in kaldiio.load_ark(path)}
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read Kaldi matrices: {e}") from e
