"""``train.devices``: one model trained data-parallel on the devices of one node.

With ``devices`` N > 1 the members are built, compiled and fitted inside a
``tf.distribute.MirroredStrategy`` scope; the global batch stays ``train.batch_size``, so a
run's numbers do not depend on N. On a node with GPUs: the first N (asking for more is
refused). Without GPUs the CPU is split into N *logical* devices — no speed gained, it tests
the path — which must happen before TensorFlow starts (a running one is refused). Across
machines it is refused: Keras 3 ``fit`` under ``MultiWorkerMirroredStrategy`` fails
(keras-team/keras#20585; docs/scaling.md), so a ``TF_CONFIG`` naming more than one task is one
clear error. Use ``--ray`` (members, folds) or one bigger node instead.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

from indvision.errors import IndvisionError

MULTI_WORKER_ISSUE = "https://github.com/keras-team/keras/issues/20585"


def check_single_node(environ: dict[str, str] | None = None) -> None:
    """Refuse a multi-worker ``TF_CONFIG`` (see the module docstring)."""
    raw = (environ if environ is not None else os.environ).get("TF_CONFIG")
    if not raw:
        return
    try:
        cluster = json.loads(raw).get("cluster") or {}
    except (ValueError, AttributeError):
        raise IndvisionError("TF_CONFIG is not a JSON object; unset it (indvision trains on "
                             "one node)") from None
    tasks = sum(len(addresses) for addresses in cluster.values())
    if tasks > 1:
        raise IndvisionError(
            f"train.devices: TF_CONFIG names {tasks} workers, but training one model across "
            f"machines is broken in Keras 3 (MultiWorkerMirroredStrategy + fit, "
            f"{MULTI_WORKER_ISSUE}); unset TF_CONFIG and train on one node (train.devices up "
            "to its GPUs), or train several models at once with --ray")


def devices_for(count: int) -> list[str]:
    """The ``count`` device names the strategy mirrors over (see the module docstring)."""
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        if count > len(gpus):
            raise IndvisionError(
                f"train.devices {count}: this node has {len(gpus)} GPU(s); more would mean "
                f"several machines, which Keras 3 cannot train one model on "
                f"({MULTI_WORKER_ISSUE}): lower train.devices, or use --ray to train several "
                "models at once")
        return [f"/gpu:{i}" for i in range(count)]
    cpu = tf.config.list_physical_devices("CPU")[0]
    with contextlib.suppress(RuntimeError):  # raised when TensorFlow already started
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    logical = tf.config.list_logical_devices("CPU")
    if len(logical) < count:
        raise IndvisionError(
            f"train.devices {count}: TensorFlow already started in this process with "
            f"{len(logical)} CPU device(s) and cannot be split any more; run the pipeline "
            "in a fresh process")
    return [device.name for device in logical[:count]]


def limit_threads(cpus: int) -> None:
    """Size TensorFlow's thread pools to the ``cpus`` a Ray task reserved, so tasks that run
    at once share the node instead of each using every core (call before TensorFlow works)."""
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(cpus)
    tf.config.threading.set_inter_op_parallelism_threads(min(cpus, 2))


@contextlib.contextmanager
def scope(count: int) -> Iterator[Any]:
    """The strategy scope models are built and fitted in: none for one device."""
    check_single_node()
    if count <= 1:
        yield None
        return
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(devices_for(count))
    with strategy.scope():
        yield strategy
