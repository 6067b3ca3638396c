"""Distribution strategies, input sharding across workers, optimizers, and who writes.

Strategies (``--strategy``):

- ``default``: TensorFlow's default strategy (one device).
- ``mirrored``: ``tf.distribute.MirroredStrategy`` over all visible GPUs, or, without GPUs, over
  ``--num_replicas`` logical CPU devices (for tests, and for trying the multi-replica path on a
  laptop). Logical CPUs must be configured before TensorFlow initialises its devices, so call
  :func:`make_strategy` before building any tensor.
- ``multi_worker``: ``tf.distribute.MultiWorkerMirroredStrategy`` from ``TF_CONFIG``; the wait
  for the other workers to join is bounded (:func:`tfblend.train.guards.waiting_for_cluster`).

Batches: the ``batch_size`` of every config and flag is the **global** batch; each of the R
replicas gets ``batch_size / R``. Losses are reduced over the global batch (see
:mod:`tfblend.distill.distiller`), so one step makes the same update on 1 replica and on R.

Sharding across workers: a training dataset is distributed with an explicit auto-shard policy,
``FILE`` when every worker gets at least one shard file, else ``DATA`` (every worker reads all
files and keeps its part of each global batch; this gives exactly the single-process batches).

Exact resume: :class:`ResumeCheckpoint` writes the student's and optimizer's variables (random
seed states included) and the position ``(epoch, step)`` every N steps, atomically. The input
pipeline's order is a pure function of ``(seed, epoch)`` (:mod:`tfblend.pipeline`), so
:func:`fit_resumable` restarts the killed epoch's dataset and skips the steps already taken:
a killed and resumed run takes the same batches in the same order as an uninterrupted one.
Both are in :mod:`tfblend.train.fit`; only the chief writes (:func:`is_chief`).
"""

import json
import os
import tempfile

import keras
import tensorflow as tf
from official.common import distribute_utils
from official.modeling.optimization import lr_schedule

from tfblend.config import OptimizerConfig
from tfblend.errors import DataError
from tfblend.train.guards import waiting_for_cluster
from tfblend.train.plateau import PlateauSchedule

STRATEGIES = ("default", "mirrored", "multi_worker")


def make_strategy(name: str = "default", num_replicas: int = 0) -> tf.distribute.Strategy:
    """Builds the tf.distribute strategy of the module docstring.

    Args:
      name: "default", "mirrored" or "multi_worker".
      num_replicas: for ``mirrored``: the number of GPUs to use (0: all), or, with no GPU, the
        number of logical CPU replicas (0 or 1: one). The other strategies take no count
        (``default`` has one replica, ``multi_worker`` those of ``TF_CONFIG``'s workers): a
        count given with them is refused, not ignored.

    Returns:
      The strategy; build models and optimizers under ``strategy.scope()``.

    Raises:
      DataError: an unknown strategy, a negative count, a count with another strategy than
        ``mirrored``, or more GPUs than there are.
    """
    if name not in STRATEGIES:
        raise DataError(f"--strategy must be one of {STRATEGIES}, not {name!r}")
    if num_replicas < 0:
        raise DataError(f"--num_replicas={num_replicas} must be 0 (all GPUs, or one CPU) or more")
    if num_replicas and name != "mirrored":
        where = "one replica" if name == "default" else "the replicas of TF_CONFIG's workers"
        raise DataError(
            f"--num_replicas={num_replicas} applies to --strategy=mirrored only; "
            f"--strategy={name} runs {where}"
        )
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "multi_worker":
        config = check_tf_config(os.environ.get("TF_CONFIG"))
        # TensorFlow waits for every task of the cluster without a limit: bounded here
        # ($TFBLEND_WAIT_SECONDS), ending in one line naming the tasks that never started.
        with waiting_for_cluster(config):
            return distribute_utils.get_distribution_strategy("multi_worker_mirrored")
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        count = num_replicas or len(gpus)
        if count > len(gpus):
            raise DataError(f"--num_replicas={count}: this machine has {len(gpus)} GPUs")
        return distribute_utils.get_distribution_strategy("mirrored", num_gpus=count)
    count = max(num_replicas, 1)
    configure_cpu_replicas(count)
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(count)])


def check_tf_config(text: str | None) -> dict:
    """The parsed ``TF_CONFIG`` of a multi-worker run; DataError saying what is wrong with it."""
    if not text:
        raise DataError("--strategy=multi_worker needs the TF_CONFIG environment variable")
    try:
        config = json.loads(text)
    except ValueError as error:
        raise DataError(f"TF_CONFIG is not JSON ({error})") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not cluster or not isinstance(task, dict):
        raise DataError('TF_CONFIG needs "cluster" ({job: ["host:port", ...]}) and "task"')
    for job, addresses in cluster.items():
        if not isinstance(addresses, list) or not all(
            isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addresses
        ):
            raise DataError(f'TF_CONFIG cluster "{job}" must be a list of "host:port" strings')
    kind, index = task.get("type"), task.get("index")
    if kind not in cluster or not isinstance(index, int) or not 0 <= index < len(cluster[kind]):
        raise DataError(
            f"TF_CONFIG task {task} does not name a job of the cluster {sorted(cluster)} and an "
            "index within it"
        )
    return config


def configure_cpu_replicas(count: int) -> None:
    """Splits the CPU into ``count`` logical devices (only possible before TF initialises)."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    current = tf.config.get_logical_device_configuration(cpu)
    if current is not None and len(current) == count:
        return
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * count
        )
    except RuntimeError as error:
        raise RuntimeError(
            f"cannot split the CPU into {count} replicas after TensorFlow initialised its "
            "devices; build the strategy first"
        ) from error


def shard_policy(dataset: tf.data.Dataset, num_files: int, strategy, policy: str = "auto"):
    """Sets the explicit auto-shard policy of the module docstring on a training dataset.

    Args:
      dataset: the global-batch training dataset.
      num_files: the shard files it reads.
      strategy: the tf.distribute strategy (its worker count decides "auto").
      policy: "auto", "file" or "data".
    """
    policies = tf.data.experimental.AutoShardPolicy
    workers = strategy.extended._num_workers if hasattr(strategy.extended, "_num_workers") else 1
    if policy == "auto":
        policy = "file" if workers > 1 and num_files % workers == 0 else "data"
    if policy not in ("file", "data"):
        raise DataError(f"data.auto_shard must be auto, file or data, not {policy!r}")
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        policies.FILE if policy == "file" else policies.DATA
    )
    return dataset.with_options(options)


@keras.saving.register_keras_serializable(package="tfblend")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """tf-models-official's ``LinearWarmup`` over its ``CosineDecayWithOffset``, for Keras 3.

    Model Garden schedules are tf_keras objects; Keras 3 optimizers accept them through this
    thin Keras 3 schedule whose ``__call__(step)`` delegates (docs/reference-facts.md section 1).
    """

    def __init__(self, learning_rate, total_steps, warmup_steps=0, final_fraction=0.05):
        self.learning_rate = float(learning_rate)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.final_fraction = float(final_fraction)
        decay = lr_schedule.CosineDecayWithOffset(
            offset=self.warmup_steps,
            initial_learning_rate=self.learning_rate,
            decay_steps=max(self.total_steps - self.warmup_steps, 1),
            alpha=self.final_fraction,
        )
        self._schedule = (
            lr_schedule.LinearWarmup(decay, self.warmup_steps, 0.0) if self.warmup_steps else decay
        )

    def __call__(self, step):
        return self._schedule(step)

    def get_config(self):
        return {
            "learning_rate": self.learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "final_fraction": self.final_fraction,
        }


def make_optimizer(config: OptimizerConfig, total_steps: int) -> keras.optimizers.Optimizer:
    """Adam with the schedule of ``config`` over ``total_steps`` optimizer steps (the plateau
    schedule's length is decided by the dev metric: ``optimizer.learning_rate`` is then a
    :class:`~tfblend.train.plateau.PlateauSchedule`)."""
    if config.schedule == "plateau":
        learning_rate = PlateauSchedule(config.learning_rate, config.warmup_steps)
    elif config.schedule == "cosine":
        learning_rate = WarmupCosine(
            config.learning_rate, total_steps, config.warmup_steps, config.final_fraction
        )
    elif config.schedule == "constant":
        learning_rate = config.learning_rate
    else:
        raise DataError(
            f"optimizer.schedule must be 'cosine', 'constant' or 'plateau', not "
            f"{config.schedule!r}"
        )
    return keras.optimizers.Adam(learning_rate, clipnorm=config.clipnorm or None)


def is_chief(strategy) -> bool:
    """True on the process that writes the model directory (always, without multi-worker)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (
        task_type == "worker" and task_id == 0 and "chief" not in resolver.cluster_spec().as_dict()
    )


def writable_dir(directory: str, strategy) -> str:
    """``directory`` on the chief; a private temporary directory on other workers.

    tf.distribute needs every worker to take part in saving, but only the chief's files count.
    """
    if is_chief(strategy):
        os.makedirs(directory, exist_ok=True)
        return directory
    return tempfile.mkdtemp(prefix="tfblend-worker-")
