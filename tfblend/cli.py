"""What every tfblend step shares: flag names, one-line errors, progress lines.

Steps (:mod:`tfblend.steps`, the recipe and the study) are thin absl programs over functions of
this package, run as ``python -m tfblend.steps.<name>``. A flag that means the same thing has the
same name in every step (``--corpus_dir``, ``--split``, ``--model_dir``, ``--teacher_dir``,
``--targets_dir``, ``--output_dir``, ``--epochs``, ``--batch_size``, ``--seed``,
``--config_file``, ``--params_override``, ``--strategy``, ``--num_replicas``); its help text is
written once, here. ``--flagfile`` comes with absl.

Bad input (a :class:`tfblend.errors.DataError`, a missing file, a full disk, a failed check of
the input pipeline or the train step) ends a script with one line, ``<script>: error: <what is
wrong>``, and exit status 1, never a traceback (unless ``--verbose``): :func:`run`.
"""

import contextlib
import os
import sys
import time
import traceback

from absl import app, flags, logging

from tfblend.errors import DataError, assertion_text

_COMMON = {
    "corpus_dir": ("string", None, "Corpus root holding train/, dev/ and test/ utterance sets."),
    "split": ("string", None, "Which split of --corpus_dir to read."),
    "model_dir": ("string", None, "Model directory to write (or to read, for evaluate/export)."),
    "teacher_dir": ("string", None, "Model directory of a trained teacher (train_teacher.py)."),
    "targets_dir": ("string", None, "Stored teacher targets of the train split (dump_targets.py)."),
    "output_dir": ("string", None, "Directory to write."),
    "epochs": ("integer", None, "Training epochs; overrides train.epochs of the config."),
    "batch_size": ("integer", None, "Global batch size; overrides data.batch_size."),
    "seed": ("integer", None, "Random seed; overrides train.seed."),
    "config_file": ("string", None, "Experiment YAML (tfblend/configs/*.yaml are the defaults)."),
    "params_override": ("string", "", "Overrides of the config: YAML or 'a.b=1,c.d=x'."),
    "strategy": ("enum", "default", "tf.distribute strategy: default, mirrored, multi_worker."),
    "num_replicas": ("integer", 0, "Replicas for --strategy=mirrored (logical CPUs without GPUs)."),
    "overwrite": ("boolean", False, "Clear --model_dir's earlier run (finished or not) first."),
}
#: The flags every training script takes (and the recipe passes on).
TRAINING_FLAGS = (
    "corpus_dir",
    "model_dir",
    "config_file",
    "params_override",
    "epochs",
    "batch_size",
    "seed",
    "strategy",
    "num_replicas",
    "overwrite",
)
_ENUMS = {"strategy": ["default", "mirrored", "multi_worker"]}


def define_flags(*names: str, required: tuple[str, ...] = (), **defaults) -> None:
    """Defines the named common flags for the running script (shown by its ``--help``).

    Args:
      names: keys of the common flag table above.
      required: the subset that must be given.
      defaults: per-script defaults, e.g. ``split="test"``.
    """
    module = sys.argv[0]
    for name in names:
        kind, default, help_text = _COMMON[name]
        default = defaults.get(name, default)
        if kind == "enum":
            flags.DEFINE_enum(name, default, _ENUMS[name], help_text, module_name=module)
        else:
            define = getattr(flags, f"DEFINE_{kind}")
            define(name, default, help_text, module_name=module)
    for name in required:
        flags.mark_flag_as_required(name)


TRACEBACK_ENV = "TFBLEND_TRACEBACK"
#: Flags naming directories a script writes; a failed run's temporaries (``*tmp-<pid>*``) go.
_WRITTEN_DIRS = ("model_dir", "output_dir", "export_base")


def error_line(error: BaseException) -> str | None:
    """The one-line message for an error a user can act on, or None for a bug (a traceback).

    DataError (bad input, config, non-finite values), OSError (missing files, permissions, a
    full disk: the path is named) and TensorFlow's runtime errors (a failed tf assertion of the
    pipeline or the train step, data loss, exhausted resources) have one.
    """
    import tensorflow as tf

    if isinstance(error, DataError):
        return str(error)
    if isinstance(error, OSError):
        where = f": {error.filename}" if error.filename else ""
        return f"{error.strerror or error}{where}"
    if isinstance(error, tf.errors.OpError):
        text = error.message or type(error).__name__
        asserted = assertion_text(text)
        if asserted is not None:
            return asserted
        first = text.strip().splitlines()[0]
        kind = type(error).__name__
        if isinstance(error, tf.errors.DataLossError):
            return f"TensorFlow {kind}: {first} (a shard changed after it was verified?)"
        return f"TensorFlow {kind}: {first}"
    return None


def _remove_temporaries() -> None:
    marker = f"tmp-{os.getpid()}"
    for name in _WRITTEN_DIRS:
        directory = flags.FLAGS[name].value if name in flags.FLAGS else None
        if not directory or not os.path.isdir(directory):
            continue
        for root, _, files in os.walk(directory):
            for file in files:
                if marker in file:
                    with contextlib.suppress(OSError):
                        os.remove(os.path.join(root, file))


def run(main) -> None:
    """``absl.app.run(main)`` with one top-level handler: an error a user can act on
    (:func:`error_line`) ends the script with ``<script>: error: <what, which file or flag>`` on
    stderr and exit status 1, after removing this process's temporaries; ``--verbose`` (or the
    environment variable ``TFBLEND_TRACEBACK=1``) also prints the traceback.

    ``main`` may come from another module than the one Python runs (a launcher that imports a
    step's ``main``): ``--help`` then shows that module's docstring and flags."""
    _help_from(sys.modules[main.__module__])
    program = os.path.basename(sys.argv[0])
    flags.DEFINE_boolean(
        "verbose", False, f"Print the traceback of an error (or {TRACEBACK_ENV}=1)."
    )

    def guarded(argv):
        if not flags.FLAGS["verbosity"].present:
            logging.set_verbosity(logging.WARNING)  # absl INFO lines (SavedModel fingerprints)
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        try:
            main(argv)
        except Exception as error:
            line = error_line(error)
            if line is None:
                raise
            _remove_temporaries()
            if flags.FLAGS.verbose or os.environ.get(TRACEBACK_ENV) == "1":
                traceback.print_exc()
            print(f"{program}: error: {line}", file=sys.stderr)
            sys.exit(1)

    app.run(guarded)


def _help_from(module) -> None:
    """Makes ``module``'s docstring and flags those of the running program (absl's ``--help``
    shows the ``__main__`` module's)."""
    entry = sys.modules["__main__"]
    if module is entry:
        return
    entry.__doc__ = module.__doc__
    for flag in flags.FLAGS.get_key_flags_for_module(module.__name__):
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


def say(message: str) -> None:
    """One progress line on stdout, time-stamped, flushed."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def split_dir(corpus_dir: str, split: str, purpose: str = "read") -> str:
    """``<corpus_dir>/<split>``, checked to hold an utterance set with at least one frame
    (:func:`tfblend.records.require_frames`; ``purpose`` says what the step would do with it)."""
    from tfblend.records import read_manifest, require_frames

    path = os.path.join(corpus_dir, split)
    if not os.path.exists(os.path.join(path, "manifest.json")):
        raise DataError(
            f"{path} holds no utterance set (no manifest.json); is --corpus_dir a "
            "corpus root made by make_corpus.py or import_kaldi.py?"
        )
    require_frames(path, read_manifest(path), purpose)
    return path


def given(name: str) -> bool:
    """True when the running script's flag ``name`` was set on the command line (or in a
    ``--flagfile``), whatever its value: a default is not a choice."""
    return name in flags.FLAGS and flags.FLAGS[name].present


def refuse_flags(reasons: dict, context: str) -> None:
    """Refuses the first given flag of ``reasons`` (flag name -> why it does not apply) with a
    DataError ``--<name> does not apply <context>: <why>`` (one line from :func:`run`): a flag
    that would be ignored stops the script instead."""
    for name, why in reasons.items():
        if given(name):
            raise DataError(f"--{name} does not apply {context}: {why}")


def model_from_flags() -> str | None:
    """The window model a training script trains: its ``--model`` flag (None: not given),
    checked against the ``model.type`` that ``--config_file`` or ``--params_override`` set
    (:func:`tfblend.config.configured_model_type`); when only one of them says, that one.

    Raises:
      DataError: ``--model`` contradicts the config's ``model.type``.
    """
    from tfblend.config import configured_model_type

    values = flags.FLAGS
    chosen = values["model"].value
    configured = configured_model_type(values["config_file"].value, values["params_override"].value)
    if configured is None:
        return chosen
    model_type, where = configured
    if chosen is not None and chosen != model_type:
        raise DataError(
            f"--model={chosen} contradicts model.type={model_type} of {where}; give one of "
            "them, or make them agree"
        )
    return model_type


def experiment_from_flags(default_config: str, **overrides):
    """The experiment of ``--config_file`` (default: the shipped ``default_config``), then
    ``--params_override``, then the ``--epochs``/``--batch_size``/``--seed`` flags and
    ``overrides`` (dotted keys with ``__`` for ``.``, e.g. ``train__label_smoothing=0.1``)."""
    from tfblend.config import load_experiment, shipped_config

    values = flags.FLAGS
    config_file = values["config_file"].value if "config_file" in values else None
    parts = [values["params_override"].value] if "params_override" in values else []
    for flag, key in (
        ("epochs", "train.epochs"),
        ("batch_size", "data.batch_size"),
        ("seed", "train.seed"),
    ):
        if flag in values and values[flag].value is not None:
            parts.append(f"{key}={values[flag].value}")
    parts += [f"{key.replace('__', '.')}={value}" for key, value in overrides.items()]
    return load_experiment(
        config_file or shipped_config(default_config), ",".join(p for p in parts if p)
    )
