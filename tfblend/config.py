"""Experiment configs: tf-models-official ``hyperparams`` dataclasses with YAML overrides.

This follows the TF Model Garden convention: an experiment is a typed dataclass tree; a YAML file
(``--config_file``) and a ``--params_override`` string (YAML or ``a.b=c,d=e``) override it
strictly, so a misspelt key is an error, not a silently ignored setting. Command-line flags of the
scripts override both.

The YAML files shipped with tfblend live in ``tfblend/configs/`` (see :func:`shipped_config`).
"""

import dataclasses
import os
import typing

import yaml
from official.modeling import hyperparams
from official.modeling.hyperparams import params_dict

from tfblend.errors import DataError

CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")


@dataclasses.dataclass
class DataConfig(hyperparams.Config):
    """Input pipeline settings.

    Attributes:
      context: W, the half-width of the context window (the window has 2W + 1 frames).
      cmvn: "global" (train statistics), "speaker", "utterance" or "none".
      chunk_frames: L, output frames per training chunk of a student that computes densely
        over time (the VGG student: ``tfblend.pipeline.chunk_dataset``, inputs of L + 2W
        frames); 0 trains it on spliced windows instead. The DNN always trains on windows.
        ``batch_size`` then still counts frames and must be a multiple of L.
      batch_size: global batch size: frames for window models (also when they train on
        chunks), utterances for the LSTM.
      shuffle_buffer: frames shuffled together (one block, held in memory).
      auto_shard: how a multi-worker run splits the data: "auto" (by file when every worker
        gets whole shard files, else by data), "file" or "data" (every worker reads all files
        and keeps its part of each global batch: the exact single-process batches).
    """

    context: int = 20
    chunk_frames: int = 64
    cmvn: str = "global"
    batch_size: int = 256
    shuffle_buffer: int = 65536
    auto_shard: str = "auto"


@dataclasses.dataclass
class LSTMConfig(hyperparams.Config):
    """:class:`tfblend.models.LSTMTeacher` arguments (``projection`` 0 means none)."""

    num_layers: int = 2
    units: int = 128
    bidirectional: bool = True
    projection: int = 0
    dropout: float = 0.0


@dataclasses.dataclass
class VGGConfig(hyperparams.Config):
    """:class:`tfblend.models.VGGStudent` arguments.

    ``synchronized_bn`` (with ``normalization: batch``) takes the batch statistics over the
    global batch when a step runs on several replicas, so that N replicas make the 1-replica
    update; on one replica it costs nothing (the fused kernel runs).
    """

    preset: str = "small"
    channels: int = 1
    dropout: float = 0.0
    normalization: str = "batch"
    synchronized_bn: bool = True


@dataclasses.dataclass
class DNNConfig(hyperparams.Config):
    """:class:`tfblend.models.DNNBaseline` arguments."""

    hidden_units: tuple[int, ...] = (512, 512, 512)
    dropout: float = 0.0


@dataclasses.dataclass
class ModelConfig(hyperparams.OneOfConfig):
    """The model, chosen by ``type`` (a name of the model registry)."""

    type: str = "vgg"
    lstm: LSTMConfig = dataclasses.field(default_factory=LSTMConfig)
    vgg: VGGConfig = dataclasses.field(default_factory=VGGConfig)
    dnn: DNNConfig = dataclasses.field(default_factory=DNNConfig)


@dataclasses.dataclass
class OptimizerConfig(hyperparams.Config):
    """Adam with an optional linear warm-up, then a cosine decay over the whole run, a constant
    rate, or the rate cut on a dev plateau.

    Attributes:
      learning_rate: peak learning rate.
      schedule: "constant", "cosine" (cosine decay to ``final_fraction`` of the peak) or
        "plateau" (``tfblend.train.plateau``: the rate is multiplied by ``plateau_factor`` when the
        dev metric ``train.monitor`` has not improved by ``plateau_min_delta`` for
        ``plateau_patience`` epochs, the weights rolled back to the best epoch's, and training
        stops once the rate is below ``min_learning_rate``; the best epoch's weights are kept).
      warmup_steps: linear warm-up steps from 0 (tf-models-official ``LinearWarmup``).
      final_fraction: the cosine schedule's final learning rate over its peak.
      clipnorm: gradient-norm clipping; 0 disables it.
      plateau_factor: the cut at a plateau, in (0, 1).
      plateau_patience: epochs without improvement before a cut.
      plateau_min_delta: the smallest improvement of the monitored metric that counts.
      min_learning_rate: the plateau schedule stops below this rate.
    """

    learning_rate: float = 1e-3
    schedule: str = "cosine"
    warmup_steps: int = 0
    final_fraction: float = 0.05
    clipnorm: float = 0.0
    plateau_factor: float = 0.5
    plateau_patience: int = 1
    plateau_min_delta: float = 0.0
    min_learning_rate: float = 1e-4


@dataclasses.dataclass
class TrainConfig(hyperparams.Config):
    """Training length, seed and the hard-label loss.

    Attributes:
      epochs: passes over the training split (with the plateau schedule: at most).
      max_hours: with the plateau schedule: stop after this much training time (0: no limit).
      monitor: the dev metric the plateau schedule watches ("val_accuracy" or "val_loss").
      seed: seeds weights, shuffling and dropout.
      label_smoothing: epsilon of the hard-label cross-entropy (the smoothing control).
      checkpoint_every_steps: how often the resumable checkpoint is written.
      precision: "float32", or "mixed_bfloat16" (Keras's policy: convolutions and matmuls in
        bfloat16, variables, statistics, logits and losses in float32;
        ``tfblend.models.precision``). Fast only where the hardware has bf16 arithmetic
        (AVX512_BF16, AMX, GPUs); on AVX2-only CPUs it is emulated and several times slower
        (docs/student.md). Saved models are loaded, scored and exported in float32.
    """

    epochs: int = 3
    max_hours: float = 0.0
    monitor: str = "val_accuracy"
    seed: int = 0
    label_smoothing: float = 0.0
    checkpoint_every_steps: int = 200
    precision: str = "float32"


@dataclasses.dataclass
class DistillConfig(hyperparams.Config):
    """The blend: ``alpha * hard + (1 - alpha) * T^2 * soft``.

    Attributes:
      alpha: weight of the hard-label loss.
      temperature: T, applied to the stored T = 1 teacher probabilities and the student.
      tail: how the teacher mass outside the stored ids is treated: "renormalize", "ghost" or
        "ignore" (sampled targets ignore this setting).
    """

    alpha: float = 0.5
    temperature: float = 1.0
    tail: str = "renormalize"


@dataclasses.dataclass
class ExperimentConfig(hyperparams.Config):
    """One training run: data, model, optimizer, schedule and (for blending) the distillation."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    distill: DistillConfig = dataclasses.field(default_factory=DistillConfig)


def shipped_config(name: str) -> str:
    """The path of a YAML experiment shipped with tfblend, e.g. ``shipped_config("teacher")``."""
    path = os.path.join(CONFIG_DIR, f"{name}.yaml")
    if not os.path.exists(path):
        names = sorted(f[:-5] for f in os.listdir(CONFIG_DIR) if f.endswith(".yaml"))
        raise DataError(f"no shipped config {name!r} in {CONFIG_DIR}; there are: {names}")
    return path


def load_experiment(config_file: str | None = None, params_override: str = "") -> ExperimentConfig:
    """Builds an :class:`ExperimentConfig` from defaults, a YAML file and an override string.

    Args:
      config_file: a YAML file (or None for the defaults).
      params_override: YAML text or ``"train.epochs=5,model.type=dnn"``.

    Returns:
      The config, validated and locked.

    Raises:
      DataError: naming the file or key when a file is missing or a key does not exist.
    """
    experiment = ExperimentConfig()
    sources = []
    if config_file:
        if not os.path.exists(config_file):
            raise DataError(f"config file {config_file} does not exist")
        sources.append((config_file, config_file))
    if params_override:
        sources.append(("--params_override", params_override))
    for where, source in sources:
        try:
            experiment = params_dict.override_params_dict(experiment, source, is_strict=True)
        except (KeyError, ValueError, TypeError, yaml.YAMLError) as error:
            message = error.args[0] if error.args else error
            raise DataError(f"bad experiment config in {where}: {message}") from None
    if experiment.model.type not in ("lstm", "vgg", "dnn"):
        raise DataError(f"model.type must be lstm, vgg or dnn, not {experiment.model.type!r}")
    check_values(experiment)
    experiment.validate()
    experiment.lock()
    return experiment


def configured_model_type(
    config_file: str | None, params_override: str = ""
) -> tuple[str, str] | None:
    """The ``model.type`` that a YAML file or an override string sets explicitly, and where
    (``(type, "--params_override")``, the override winning), or None when neither sets it (the
    field's default is not a choice). Bad sources are left to :func:`load_experiment`."""
    found = None
    sources = [(config_file, config_file)] if config_file and os.path.exists(config_file) else []
    if params_override:
        sources.append(("--params_override", params_override))
    for where, source in sources:
        probe = params_dict.ParamsDict({"model": {"type": None}})
        try:
            probe = params_dict.override_params_dict(probe, source, is_strict=False)
        except (KeyError, ValueError, TypeError, AttributeError, yaml.YAMLError):
            return found
        value = getattr(getattr(probe, "model", None), "type", None)
        if value is not None:
            found = (value, where)
    return found


def _choices() -> dict[str, tuple]:
    """The settings with a fixed set of values, from the modules that define them."""
    from tfblend.distill.losses import TAILS
    from tfblend.models.cnn import NORMALIZATIONS, PRESETS
    from tfblend.models.precision import PRECISIONS
    from tfblend.pipeline import CMVN_MODES

    return {
        "data.cmvn": CMVN_MODES,
        "data.auto_shard": ("auto", "file", "data"),
        "model.vgg.preset": tuple(sorted(PRESETS)),
        "model.vgg.normalization": NORMALIZATIONS,
        "optimizer.schedule": ("cosine", "constant", "plateau"),
        "train.monitor": ("val_accuracy", "val_loss"),
        "train.precision": PRECISIONS,
        "distill.tail": TAILS,
    }


#: (lowest, highest or None, lowest included) of numeric settings.
_BOUNDS = {
    "data.context": (0, None, True),
    "data.batch_size": (1, None, True),
    "data.shuffle_buffer": (1, None, True),
    "optimizer.learning_rate": (0, None, False),
    "train.epochs": (1, None, True),
    "train.max_hours": (0, None, True),
    "optimizer.plateau_factor": (0, 1, False),
    "optimizer.plateau_patience": (1, None, True),
    "optimizer.plateau_min_delta": (0, None, True),
    "optimizer.min_learning_rate": (0, None, True),
    "train.label_smoothing": (0, 1, True),
    "train.checkpoint_every_steps": (1, None, True),
    "distill.alpha": (0, 1, True),
    "distill.temperature": (0, None, False),
}


def _type_error(key: str, value, annotation) -> str | None:
    origin = typing.get_origin(annotation)
    if origin is tuple:
        (item,) = {a for a in typing.get_args(annotation) if a is not Ellipsis}
        if not isinstance(value, list | tuple) or not all(
            _type_error(key, v, item) is None for v in value
        ):
            return f"{key} must be a list of {item.__name__}, got {value!r}"
        return None
    if annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(annotation, type) and annotation in (bool, str):
        ok = isinstance(value, annotation)
    else:
        return None
    if ok:
        return None
    return f"{key} must be {annotation.__name__}, got {value!r} ({type(value).__name__})"


def check_values(config: hyperparams.Config, prefix: str = "") -> None:
    """Type-checks every field against its annotation, and the choices and bounds above.

    Raises:
      DataError naming the key (e.g. ``train.epochs must be int, got 'three' (str)``).
    """
    choices = _choices() if not prefix else {}
    for field in dataclasses.fields(config):
        key, value = f"{prefix}{field.name}", getattr(config, field.name)
        if isinstance(value, hyperparams.Config):
            check_values(value, f"{key}.")
            continue
        problem = _type_error(key, value, field.type)
        if problem:
            raise DataError(f"bad experiment config: {problem}")
    for key, allowed in choices.items():
        value = _get(config, key)
        if value not in allowed:
            raise DataError(
                f"bad experiment config: {key} must be one of {list(allowed)}, not {value!r}"
            )
    for key, (low, high, closed) in ({} if prefix else _BOUNDS).items():
        value = _get(config, key)
        if (value < low if closed else value <= low) or (high is not None and value > high):
            interval = f"{'[' if closed else '('}{low}, {high if high is not None else 'inf'}]"
            raise DataError(f"bad experiment config: {key} = {value!r} is outside {interval}")


def _get(config, dotted: str):
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def model_kwargs(model: ModelConfig) -> dict:
    """The keyword arguments of the chosen model's constructor (without ``num_classes``)."""
    kwargs = model.get().as_dict()
    if model.type == "lstm":
        kwargs["projection"] = kwargs["projection"] or None
    if model.type == "dnn":
        kwargs["hidden_units"] = tuple(kwargs["hidden_units"])
    return kwargs


def save_experiment(experiment: ExperimentConfig, path: str) -> None:
    """Writes the resolved config as YAML next to a model, atomically
    (:func:`tfblend.records.write_file`: one DataError naming the file if it cannot)."""
    from tfblend.records import write_file

    write_file(path, yaml.safe_dump(experiment.as_dict(), sort_keys=False))
