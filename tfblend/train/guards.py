"""Nothing hangs: a training run checks before it starts that it can take a step and validate,
and every wait that could last forever is bounded.

Checks (:func:`epoch_steps`, run by :mod:`tfblend.train.inputs` before any model is built):

- an epoch has at least one step. A train split smaller than one batch would have none (the
  epochs drop their last partial batch), and a run with no step per epoch waits forever for a
  batch. On one replica the run then trains on one smaller batch per epoch (the Distiller's
  loss is the mean over the frames of the batch, so a smaller batch is sound) and says so in
  one line; over several replicas (``mirrored``, ``multi_worker``) it stops with one line
  naming the split, its frames, the batch and the largest batch that would work.
- the train and dev splits hold frames (:func:`tfblend.records.require_frames`).

Bounded waits (the limit is ``$TFBLEND_WAIT_SECONDS``, :data:`WAIT_ENV`, default
:data:`DEFAULT_WAIT_SECONDS`): the first batch of the training pipeline
(:func:`first_batch_within`), and the other workers of a multi-worker cluster
(:func:`waiting_for_cluster`). Either ends in one line naming what it waited for.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time

import tensorflow as tf

from tfblend.errors import DataError

#: Seconds a run waits for its first training batch and for the workers of its cluster.
WAIT_ENV = "TFBLEND_WAIT_SECONDS"
DEFAULT_WAIT_SECONDS = 600.0


def wait_seconds() -> float:
    """The bounded waits' limit: ``$TFBLEND_WAIT_SECONDS`` (default 600); DataError if it is
    not a positive number."""
    value = os.environ.get(WAIT_ENV, "").strip()
    if not value:
        return DEFAULT_WAIT_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise DataError(f"{WAIT_ENV}={value!r}: expected a positive number of seconds")
    return seconds


def _largest_batch(rows: int, replicas: int, per_row: int) -> int:
    """The largest global batch (in frames) of whole rows that gives every replica a row and
    that ``rows`` rows fill at least once (0: the split has fewer rows than replicas)."""
    return (rows // replicas) * replicas * per_row


def epoch_steps(
    make_dataset,
    steps: int,
    remake,
    *,
    train_dir: str,
    manifest: dict,
    batch_size: int,
    replicas: int,
    chunk_frames: int = 0,
    say=None,
):
    """``(make_dataset, steps)`` of a run whose epoch has at least one step.

    Args:
      make_dataset: ``fn(epoch, repeat)`` of the run (its epochs drop the last partial batch).
      steps: the batches of one of its epochs.
      remake: returns the same ``make_dataset`` keeping each epoch's last partial batch.
      train_dir, manifest: the train split and its manifest.
      batch_size: the global batch, in frames (output frames for chunks).
      replicas: the strategy's replicas in sync (all workers').
      chunk_frames: L of a dense student's chunks (0: windows).
      say: ``fn(line)`` for the one line that says a smaller batch is used (default: stdout).

    Raises:
      DataError: no step per epoch with several replicas.
    """
    if steps > 0:
        return make_dataset, steps
    frames = manifest["num_frames"]
    if replicas > 1:
        # A global batch that the split cannot fill is not trained on over several replicas:
        # tf.distribute would split the one partial batch unevenly (some replicas would get no
        # rows: batch statistics of nothing, a replica's metrics of nothing), and the workers
        # of a multi-worker run, each reading its own part, could disagree on whether an epoch
        # has a step at all and wait for each other in a collective forever.
        rows = _count_rows(remake()(0, False)) if chunk_frames else frames
        largest = _largest_batch(rows, replicas, chunk_frames or 1)
        unit = f" ({rows} chunks of {chunk_frames})" if chunk_frames else ""
        change = (
            f"lower --batch_size to at most {largest} frames (a multiple of "
            f"{replicas * (chunk_frames or 1)}: every replica gets as many "
            f"{'chunks' if chunk_frames else 'frames'})"
            if largest
            else f"train with fewer than {replicas} replicas or on a larger split"
        )
        raise DataError(
            f"{train_dir}: the train split has {frames} frames{unit}, fewer than one global "
            f"batch of {batch_size} frames over {replicas} replicas, so an epoch has no step; "
            f"{change}"
        )
    make_dataset = remake()
    rows = _count_rows(make_dataset(0, False))
    unit = f"{rows} chunks of {chunk_frames} frames" if chunk_frames else f"{frames} frames"
    (say or _say)(
        f"{train_dir}: the train split has {frames} frames, fewer than one batch of "
        f"{batch_size} frames: each epoch is one smaller batch of {unit} (a smaller --batch_size "
        "gives more steps per epoch)"
    )
    return make_dataset, 1


def _count_rows(dataset) -> int:
    """Rows (windows or chunks) in a one-epoch dataset smaller than one batch."""
    return sum(int(tf.shape(batch[1])[0]) for batch in dataset)


def _say(line: str) -> None:
    from tfblend.cli import say

    say(line)


def first_batch_within(dataset, what: str, seconds: float | None = None):
    """The first element of ``dataset``, waited for at most ``seconds`` (default
    :func:`wait_seconds`).

    The element is pulled on a daemon thread; the caller's thread waits with a bound, so a
    pipeline that yields nothing (an infinite stream of empty epochs, a reader that blocks)
    ends in a DataError naming ``what`` instead of a silent wait.

    Raises:
      DataError: the dataset ended without an element, or none came within the limit.
    """
    seconds = wait_seconds() if seconds is None else seconds
    box: dict = {}

    def pull():
        try:
            box["value"] = next(iter(dataset))
        except StopIteration:
            box["ended"] = True
        except BaseException as error:  # handed to the waiting thread
            box["error"] = error

    puller = threading.Thread(target=pull, name="tfblend-first-batch", daemon=True)
    puller.start()
    puller.join(seconds)
    if "error" in box:
        raise box["error"]
    if box.get("ended"):
        raise DataError(f"{what} ended without yielding a batch")
    if "value" not in box:
        raise DataError(
            f"{what} yielded no batch within {seconds:g} s ({WAIT_ENV}); check the split and "
            f"--batch_size, or raise {WAIT_ENV} if reading really is that slow"
        )
    return box["value"]


def _listening(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with contextlib.suppress(OSError), socket.create_connection((host, int(port)), timeout=1):
        return True
    return False


def _tasks(config: dict) -> list[tuple[str, int, str]]:
    """``(job, index, address)`` of every task of a TF_CONFIG cluster."""
    return [
        (job, index, address)
        for job, addresses in config["cluster"].items()
        for index, address in enumerate(addresses)
    ]


def _absent_peers(config: dict, only=None) -> list[str]:
    """The other tasks of a TF_CONFIG cluster (or those of ``only``, ``(job, index)`` pairs)
    whose address accepts no connection."""
    task = config["task"]
    return [
        f"{job} {index} ({address})"
        for job, index, address in _tasks(config)
        if (job, index) != (task["type"], task["index"])
        and (only is None or (job, index) in only)
        and not _listening(address)
    ]


def _cluster_line(config: dict, seconds: float, only=None) -> str:
    absent = _absent_peers(config, only)
    who = (
        f"{', '.join(absent)} never started"
        if absent
        else "every address answers, but not every task joined"
    )
    task = config["task"]
    return (
        f"{task['type']} {task['index']} of TF_CONFIG waited {seconds:g} s ({WAIT_ENV}) for "
        f"the other workers of its cluster to join: {who}; start every task of TF_CONFIG's "
        f"cluster (each with its own task index), or raise {WAIT_ENV}"
    )


def _leader(cluster: dict) -> tuple[str, int]:
    """The task that leads a cluster's coordination (TensorFlow's rule: chief 0, else worker 0)."""
    return ("chief", 0) if "chief" in cluster else ("worker", 0)


def _wait_for(config: dict, seconds: float, only=None) -> None:
    """Waits until the other tasks' addresses (or those of ``only``) accept connections, at
    most ``seconds``; DataError naming those that never did."""
    deadline = time.monotonic() + seconds
    while _absent_peers(config, only):
        if time.monotonic() >= deadline:
            raise DataError(_cluster_line(config, seconds, only))
        time.sleep(0.5)


@contextlib.contextmanager
def _answering(address: str):
    """Listens on ``address`` (its port, every interface) for the ``with`` block, so that the
    other tasks see this one up while it waits for them; nothing when the port is taken."""
    listener = socket.socket()
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("", int(address.rpartition(":")[2])))
        listener.listen(64)
    except OSError:
        listener.close()
        listener = None
    try:
        yield
    finally:
        if listener is not None:
            listener.close()


def _bound_registration(config: dict, seconds: float) -> None:
    """Configures TensorFlow's coordination service as MultiWorkerMirroredStrategy would, with
    a limit on a task's wait to register with the leader (TensorFlow's default: none)."""
    from tensorflow.python.eager import context
    from tensorflow.tsl.protobuf import coordination_config_pb2

    cluster = config["cluster"]
    if config["task"]["type"] not in ("chief", "worker") or context.context().coordination_service:
        return
    jobs = [
        coordination_config_pb2.CoordinatedJob(name=job, num_tasks=len(cluster[job]))
        for job in ("chief", "worker")
        if job in cluster
    ]
    context.context().configure_coordination_service(
        service_type="standalone",
        service_leader=f"/job:{_leader(cluster)[0]}/replica:0/task:0",
        coordinated_jobs=jobs,
        cluster_register_timeout_in_ms=int(seconds * 1000),
    )


@contextlib.contextmanager
def waiting_for_cluster(config: dict, seconds: float | None = None):
    """Bounds the wait for the tasks of a multi-worker cluster (``config``: the parsed
    TF_CONFIG) while the ``with`` block builds the strategy.

    TensorFlow waits for the cluster inside native calls that hold the interpreter and, on the
    leader (chief 0, else worker 0), have no limit. So every task first waits here, at most
    ``seconds``: the leader, listening on its address meanwhile, until every other task's
    address accepts connections; the others until the leader's does (each task listens before
    it registers with the leader). Only then is the strategy built, with TensorFlow's own limit
    on a task's registration set to ``seconds`` as well. A task that never joins ends the wait
    in a DataError, one line naming the tasks whose address never answered; the strategy is
    built before a run writes anything, so nothing is left half-written.
    """
    seconds = wait_seconds() if seconds is None else seconds
    task = (config["task"]["type"], config["task"]["index"])
    leader = _leader(config["cluster"])
    _bound_registration(config, seconds)
    if task == leader:
        with _answering(config["cluster"][task[0]][task[1]]):
            _wait_for(config, seconds)
    else:
        _wait_for(config, seconds, only=[leader])
    try:
        yield
    except (tf.errors.DeadlineExceededError, tf.errors.UnavailableError) as error:
        raise DataError(_cluster_line(config, seconds)) from error
