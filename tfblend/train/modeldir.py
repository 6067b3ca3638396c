"""The model directory: what a training script leaves behind for the next stage.

``<model_dir>/``:

- ``model.keras``: the trained model alone (a Distiller's student, never its teacher);
- ``model.json``: what the next stage must know: ``role`` ("teacher", "student", "blend"),
  ``model`` (registry name), ``kind`` ("sequence" for utterance models, "window" for models on
  context windows), ``num_classes``, ``feature_dim``, ``context``, ``cmvn`` (the normalisation
  mode), ``train_dir`` and ``train_digest`` (the training set's ``content_digest``), the
  parameter count, the wall time, and ``sha256`` of ``model.keras``;
- ``experiment.yaml`` (the resolved config), ``history.csv``, ``logs/`` (TensorBoard),
  ``resume/`` (only while a run is unfinished).

A model directory is complete when ``model.json`` exists: it is written last, atomically. A model
with NaN/Inf weights is never saved, and never loaded.
A training run holds the directory through :mod:`tfblend.train.rundir`.
"""

import hashlib
import io
import json
import os

import keras
import numpy as np

from tfblend.errors import DataError, NonFiniteError
from tfblend.records import file_sha256, write_file, write_json

MODEL_FILE = "model.keras"
INFO_FILE = "model.json"


def save_model_dir(model: keras.Model, model_dir: str, info: dict) -> dict:
    """Saves ``model`` and its facts; ``model.json`` last, so a half-written dir is incomplete.

    Args:
      model: the model to keep (a student or teacher, not a Distiller).
      model_dir: the directory (created if missing).
      info: the facts of the module docstring (``sha256`` and ``num_params`` are added).

    Returns:
      The info written.

    Raises:
      NonFiniteError (nothing written) when a weight is NaN/Inf; DataError "cannot write
      <file>: <cause>" when a file cannot be written (a full disk, a read-only place), with no
      partial file left.
    """
    check_finite_weights(model, f"the trained model for {model_dir}")
    try:
        os.makedirs(model_dir, exist_ok=True)
    except OSError as error:
        raise DataError(f"cannot write {model_dir}: {error.strerror or error}") from error
    info_path = os.path.join(model_dir, INFO_FILE)
    if os.path.exists(info_path):
        os.remove(info_path)
    data = model_bytes(model)
    write_file(os.path.join(model_dir, MODEL_FILE), data)
    info = {
        **info,
        "num_params": int(model.count_params()),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    write_json(info_path, info)
    return info


def model_bytes(model: keras.Model) -> bytes:
    """The ``.keras`` file of ``model``, made in memory (what ``model.save`` writes to a path),
    so that the file is written whole by :func:`tfblend.records.write_file`."""
    from keras.src.saving import saving_lib  # model.save takes paths only; this, file objects

    buffer = io.BytesIO()
    saving_lib.save_model(model, buffer)
    return buffer.getvalue()


def read_model_info(model_dir: str, role: str | tuple[str, ...] | None = None) -> dict:
    """The facts of a complete model directory.

    Args:
      model_dir: the directory.
      role: the role(s) the caller accepts ("teacher", "student", "blend"), or None for any.

    Raises:
      DataError: naming the directory when it is missing, incomplete or of another role.
    """
    info_path = os.path.join(model_dir, INFO_FILE)
    if not os.path.isdir(model_dir):
        raise DataError(f"model directory {model_dir} does not exist")
    if not os.path.exists(info_path):
        raise DataError(f"{model_dir} holds no finished model ({INFO_FILE} is missing)")
    with open(info_path) as stream:
        info = json.load(stream)
    roles = (role,) if isinstance(role, str) else role
    if roles and info.get("role") not in roles:
        raise DataError(
            f"{model_dir} holds a {info.get('role')} ({info.get('model')}), not a "
            f"{' or '.join(roles)}"
        )
    return info


def load_model_dir(model_dir: str, role: str | tuple[str, ...] | None = None):
    """``(model, info)`` of a complete model directory (see :func:`read_model_info`); the model
    computes in float32 whatever precision it was trained in (``models.precision.as_float32``)."""
    info = read_model_info(model_dir, role)
    path = os.path.join(model_dir, MODEL_FILE)
    if file_sha256(path) != info["sha256"]:
        raise DataError(f"{path} does not match the sha256 in {INFO_FILE}: the model changed")
    import tfblend.models  # noqa: F401  (registers the classes before deserialising)
    from tfblend.models.precision import as_float32

    model = keras.saving.load_model(path, compile=False)
    check_finite_weights(model, path)
    return as_float32(model), info


def check_finite_weights(model: keras.Model, what: str) -> None:
    """Raises NonFiniteError naming ``what`` and the variables that hold NaN/Inf values."""
    bad = [
        variable.path
        for variable in model.variables
        if variable.dtype.startswith("float")
        and not np.isfinite(keras.ops.convert_to_numpy(variable)).all()
    ]
    if bad:
        raise NonFiniteError(
            f"{what} has non-finite (NaN/Inf) weights in {len(bad)} variables "
            f"({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})"
        )
