"""Blending: the Distiller and the loss objects it blends.

- :mod:`tfblend.distill.distiller`: ``Distiller(keras.Model)``, its train step and its hooks;
- :mod:`tfblend.distill.losses`: hard cross-entropy and the soft losses on teacher targets
  (sparse top-k with its tail handling, the sampled estimate, dense targets).
"""

from tfblend.distill.distiller import Distiller
from tfblend.distill.losses import (
    TAILS,
    DenseSoftCrossEntropy,
    SampledSoftCrossEntropy,
    SoftLoss,
    SparseSoftCrossEntropy,
)

__all__ = [
    "TAILS",
    "DenseSoftCrossEntropy",
    "Distiller",
    "SampledSoftCrossEntropy",
    "SoftLoss",
    "SparseSoftCrossEntropy",
]
