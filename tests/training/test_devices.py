"""``train.devices`` (:mod:`indvision.training.devices`): one model data-parallel on the devices
of one node (MirroredStrategy; logical CPU devices here), and the clear refusal of what Keras 3
cannot do — one model across several workers (keras-team/keras#20585)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from indvision.errors import IndvisionError
from indvision.stages import train
from indvision.training.devices import MULTI_WORKER_ISSUE, check_single_node
from tests.conftest import PROJECT_ROOT


def test_a_multi_worker_tf_config_is_refused_with_the_keras_issue() -> None:
    config = {"cluster": {"worker": ["127.0.0.1:2222", "127.0.0.1:2223"]},
              "task": {"type": "worker", "index": 0}}
    with pytest.raises(IndvisionError, match="2 workers") as raised:
        check_single_node({"TF_CONFIG": json.dumps(config)})
    assert MULTI_WORKER_ISSUE in str(raised.value) and "--ray" in str(raised.value)
    check_single_node({"TF_CONFIG": json.dumps({"cluster": {"worker": ["a:1"]}})})  # one node
    check_single_node({})


def test_devices_must_divide_the_global_batch() -> None:
    with pytest.raises(ValueError, match="divide batch_size"):
        train.Config(batch_size=30, devices=4)


SCRIPT = """
import json, sys
from pathlib import Path
from tests.conftest import make_tree, train_tiny
from indvision.rundir import Run
from indvision.stages import ingest
base = Path(sys.argv[1])
tree = make_tree(base / "data", per_class=30)
run = Run.create(base / "exports", "tiny", seed=0, config={"name": "tiny", "stages": {}},
                 config_hash="test")
run.start_stage("ingest")
run.finish_stage("ingest", ingest.run(ingest.Config(source=str(tree), good_class="ok"), run), 0)
train_tiny(run, devices=2)
print(json.dumps(json.loads((run.root / "train" / "train_info.json").read_text())))
"""


@pytest.mark.slow
def test_two_logical_cpu_devices_train_one_model_data_parallel(tmp_path: Path) -> None:
    """In a fresh process (the CPU is split before TensorFlow starts)."""
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "data-parallel on 2 devices" in done.stdout
    assert "device:CPU:1" in done.stdout
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert info["devices"] == 2
    assert info["val_accuracy"] >= 0.9  # it learnt the tiny classes, not just ran


def test_a_running_tensorflow_cannot_be_split_later() -> None:
    code = ("import tensorflow as tf; tf.constant(1.0) + 1; "
            "from indvision.training.devices import devices_for\n"
            "from indvision.errors import IndvisionError\n"
            "try:\n    devices_for(2)\nexcept IndvisionError as e:\n    print(e)")
    done = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, timeout=300)
    assert "already started in this process with 1 CPU device" in done.stdout, done.stderr
