"""Safe model directories for training runs: one run at a time, no silent resume of another.

A training run (on the chief) holds its model directory through :func:`training_run`:

- an exclusive lock, ``<model_dir>/.lock`` (``flock``, holding the pid: :func:`lock_directory`,
  which also locks a recipe's or study's work dir): a second run on the same directory stops at
  once with "model dir X is in use by pid N";
- the settings that determine the run (:func:`run_settings`: the resolved config, seed included,
  and the digests of the train/dev feature values and of the stored targets or online teacher)
  in ``resume/run.json``; a rerun that would resume other settings is refused with the
  differences listed, a finished directory (``model.json``) is refused, unless ``overwrite``
  (then the run's files, :data:`RUN_ENTRIES`, are cleared first);
- a run that fails (or is interrupted) before its first checkpoint leaves nothing behind: the
  directory is removed if the run created it, else the run's files are.

:func:`guarded_run` applies this to the training functions of :mod:`tfblend.train.experiments`.
"""

import contextlib
import errno
import fcntl
import functools
import hashlib
import inspect
import json
import os
import shutil

from tfblend.errors import DataError
from tfblend.records import TARGET_FORMAT, feature_values_digest, read_manifest, write_json
from tfblend.train.modeldir import INFO_FILE, MODEL_FILE, read_model_info
from tfblend.train.strategies import is_chief

LOCK_FILE = ".lock"
#: What a training run writes into its model directory (``overwrite`` clears exactly these).
RUN_ENTRIES = (MODEL_FILE, INFO_FILE, "experiment.yaml", "history.csv", "logs", "resume")


def _flatten(value, prefix=""):
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def _differences(old: dict, new: dict) -> list[str]:
    old, new = _flatten(old), _flatten(new)
    return [
        f"{key}: {old.get(key, '(unset)')!r} -> {new.get(key, '(unset)')!r}"
        for key in sorted(set(old) | set(new))
        if old.get(key) != new.get(key)
    ]


def lock_directory(directory: str, what: str = "model dir") -> int:
    """An open descriptor holding an exclusive lock on ``<directory>/.lock`` (``flock``; the
    file holds the holder's pid). The one lock of tfblend: a training run's model dir
    (:func:`training_run`), a recipe's or study's work dir (:func:`holding`).

    Raises:
      DataError: "<what> <directory> is in use by pid N" when another process holds it; the
        lock file is left as it was.
    """
    fd = os.open(os.path.join(directory, LOCK_FILE), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        if error.errno in (errno.EAGAIN, errno.EACCES):
            raise DataError(f"{what} {directory} is in use by pid {holder}") from None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


@contextlib.contextmanager
def holding(directory: str, what: str):
    """Holds ``directory`` (created if missing) for the ``with`` block with
    :func:`lock_directory`: a second process stops at once, changing nothing. The descriptor is
    not inherited, so the steps a recipe or study runs lock their own model dirs."""
    os.makedirs(directory, exist_ok=True)
    fd = lock_directory(directory, what)
    try:
        yield
    finally:
        os.close(fd)


#: Set by a recipe's or study's stage runner for its steps: who owns the model dirs they train
#: (e.g. "the study of work/study"), so that no message advises --overwrite for them.
OWNER_ENV = "TFBLEND_OWNER"


def _advice(model_dir: str, own: str) -> str:
    """What to do about a refused model dir: ``own`` (the advice of a run of one's own), or,
    for a dir a recipe or study owns (:data:`OWNER_ENV`), never --overwrite."""
    owner = os.environ.get(OWNER_ENV)
    if not owner:
        return own
    return f"it is a run of {owner}: delete {model_dir} to train it again with these settings"


def _clear(model_dir: str) -> None:
    for name in os.listdir(model_dir):
        path = os.path.join(model_dir, name)
        if name in RUN_ENTRIES or (name.startswith(".") and ".tmp-" in name):  # write_file's
            if os.path.isdir(path):
                shutil.rmtree(path)
            else:
                os.remove(path)


@contextlib.contextmanager
def training_run(model_dir: str, settings: dict, *, overwrite: bool = False):
    """Holds ``model_dir`` for one training run (the chief's; see the module docstring).

    Args:
      model_dir: the model directory (created if missing).
      settings: JSON-serialisable facts that determine the run (config, seed, data and target
        digests); a rerun that would resume with other settings is refused.
      overwrite: clear the run's files (:data:`RUN_ENTRIES`) first, finished or not.

    Raises:
      DataError: the directory is in use by another process ("in use by pid N"), holds a
        finished model (without ``overwrite``), or resume state of other settings (the
        differences listed, without ``overwrite``).
    """
    created = not os.path.isdir(model_dir)
    os.makedirs(model_dir, exist_ok=True)
    fd = lock_directory(model_dir)
    resume = os.path.join(model_dir, "resume")
    try:
        if overwrite:
            _clear(model_dir)
        if os.path.exists(os.path.join(model_dir, INFO_FILE)):
            raise DataError(
                f"{model_dir} holds a finished model ({INFO_FILE}); "
                + _advice(
                    model_dir,
                    "pass --overwrite to train it again from scratch, or choose another "
                    "--model_dir",
                )
            )
        recorded_path = os.path.join(resume, "run.json")
        if os.path.exists(os.path.join(resume, "state.json")):
            recorded = {}
            if os.path.exists(recorded_path):
                with open(recorded_path) as stream:
                    recorded = json.load(stream)
            changed = _differences(recorded, settings)
            if changed:
                raise DataError(
                    f"{model_dir} holds resume state of a run with other settings "
                    f"({'; '.join(changed[:8])}{'; ...' if len(changed) > 8 else ''}); "
                    + _advice(
                        model_dir,
                        "rerun with the same settings to continue it, or pass --overwrite to "
                        "start over",
                    )
                )
        else:
            _clear(model_dir)  # leftovers of a run killed before its first checkpoint
            os.makedirs(resume)
            write_json(recorded_path, settings, sort_keys=True)
    except BaseException:
        os.close(fd)
        if created:
            shutil.rmtree(model_dir, ignore_errors=True)
        raise
    try:
        yield
    except BaseException:
        if not os.path.exists(os.path.join(resume, "state.json")):
            if created:
                shutil.rmtree(model_dir, ignore_errors=True)
            else:
                _clear(model_dir)
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(model_dir, LOCK_FILE))
        raise
    finally:
        os.close(fd)


def run_settings(experiment, corpus_dir: str, targets_dir=None, teacher_dir=None) -> dict:
    """What determines a training run, for :func:`training_run`: the resolved config (seed
    included), the digests of the train and dev feature values, and the stored targets' or
    online teacher's digests."""
    settings = {"experiment": experiment.as_dict()}
    for split in ("train", "dev"):
        manifest = read_manifest(os.path.join(corpus_dir, split))
        settings[f"{split}_digest"] = feature_values_digest(manifest)
    if targets_dir:
        manifest = read_manifest(targets_dir, expected_format=TARGET_FORMAT)
        checksums = "".join(shard["sha256"] for shard in manifest["shards"])
        settings["targets_digest"] = hashlib.sha256(checksums.encode()).hexdigest()
    if teacher_dir:
        settings["teacher_sha256"] = read_model_info(teacher_dir, "teacher")["sha256"]
    return settings


def guarded_run(train_fn):
    """Decorates a training function ``fn(corpus_dir, model_dir, experiment, strategy, ...,
    targets_dir=None, teacher_dir=None)``: on the chief the run holds its model directory
    through :func:`training_run` (lock, settings check, cleanup on failure). The decorated
    function takes one more keyword, ``overwrite`` (default False)."""
    signature = inspect.signature(train_fn)

    @functools.wraps(train_fn)
    def guarded(*args, overwrite: bool = False, **kwargs):
        arguments = signature.bind(*args, **kwargs).arguments
        if not is_chief(arguments["strategy"]):
            return train_fn(*args, **kwargs)
        settings = run_settings(
            arguments["experiment"],
            arguments["corpus_dir"],
            arguments.get("targets_dir"),
            arguments.get("teacher_dir"),
        )
        with training_run(arguments["model_dir"], settings, overwrite=overwrite):
            return train_fn(*args, **kwargs)

    return guarded
