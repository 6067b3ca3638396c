"""Acoustic models (all `keras.Model` subclasses, serialisable) and the name registry.

from tfblend.models import get_model, MODEL_NAMES
student = get_model("vgg", num_classes=5126, preset="deep")
check_receptive_field(student, context=20)  # before training on 41-frame windows or chunks
"""

from tfblend.models.cnn import PRESETS, VGGStudent
from tfblend.models.dnn import DNNBaseline
from tfblend.models.lstm import LSTMTeacher
from tfblend.models.receptive import check_receptive_field
from tfblend.models.registry import MODEL_NAMES, get_model, get_model_class, register_model

__all__ = [
    "MODEL_NAMES",
    "PRESETS",
    "DNNBaseline",
    "LSTMTeacher",
    "VGGStudent",
    "check_receptive_field",
    "get_model",
    "get_model_class",
    "register_model",
]
