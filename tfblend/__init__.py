"""tfblend: blend an LSTM acoustic model into a VGG-style CNN with stored sparse teacher targets.

The public API, re-exported (each documented where it is defined):

- models: :class:`LSTMTeacher`, :class:`VGGStudent`, :class:`DNNBaseline`, :func:`get_model`;
- blending: :class:`Distiller` and the soft losses :class:`SparseSoftCrossEntropy`,
  :class:`SampledSoftCrossEntropy`, :class:`DenseSoftCrossEntropy`;
- data: :func:`frame_dataset`, :func:`chunk_dataset`, :func:`utterance_dataset` (read as one
  :class:`DatasetOptions` says), :func:`eval_utterances`, :func:`log_mel`, :class:`FeatureConfig`;
- stored targets: :func:`dump_targets`, :func:`derive_targets`;
- serving: :func:`export_model`;
- errors: :class:`DataError`.
"""

from tfblend import _quiet  # noqa: F401  (must run before anything imports tensorflow)
from tfblend.distill.distiller import Distiller
from tfblend.distill.losses import (
    DenseSoftCrossEntropy,
    SampledSoftCrossEntropy,
    SparseSoftCrossEntropy,
)
from tfblend.errors import DataError
from tfblend.export import export_model
from tfblend.features import FeatureConfig, log_mel
from tfblend.models import DNNBaseline, LSTMTeacher, VGGStudent, get_model
from tfblend.pipeline import (
    DatasetOptions,
    chunk_dataset,
    eval_utterances,
    frame_dataset,
    utterance_dataset,
)
from tfblend.targets import derive_targets, dump_targets

__version__ = "0.1.0"

__all__ = [
    "DNNBaseline",
    "DataError",
    "DatasetOptions",
    "DenseSoftCrossEntropy",
    "Distiller",
    "FeatureConfig",
    "LSTMTeacher",
    "SampledSoftCrossEntropy",
    "SparseSoftCrossEntropy",
    "VGGStudent",
    "chunk_dataset",
    "derive_targets",
    "dump_targets",
    "eval_utterances",
    "export_model",
    "frame_dataset",
    "get_model",
    "log_mel",
    "utterance_dataset",
]
