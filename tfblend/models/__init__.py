"""Acoustic models (all `keras.Model` subclasses, serialisable) and the name registry.

from tfblend.models import get_model, MODEL_NAMES
student = get_model("vgg", num_classes=5126, preset="small")
"""

from tfblend.models.cnn import PRESETS, VGGStudent
from tfblend.models.dnn import DNNBaseline
from tfblend.models.lstm import LSTMTeacher
from tfblend.models.registry import MODEL_NAMES, get_model, get_model_class, register_model

__all__ = [
    "MODEL_NAMES",
    "PRESETS",
    "DNNBaseline",
    "LSTMTeacher",
    "VGGStudent",
    "get_model",
    "get_model_class",
    "register_model",
]
