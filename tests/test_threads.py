"""``threads``: TensorFlow's thread layout, measured in worker processes and applied by a
training that starts in a fresh process (see hotfolders/threads.py)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from hotfolders import precision, threads


def test_layouts_and_settings_without_measuring():
    assert threads.pools("shared") == (0, 0)  # TensorFlow's default
    assert threads.pools("per-op") == (threads.cores(), 1)
    with pytest.raises(ValueError, match="threads must be one of auto, shared, per-op"):
        threads.pools("many")
    with pytest.raises(ValueError, match="threads must be one of"):
        threads.choose("many", "lightweight", 16, "mae", ("float32",))
    assert threads.choose("per-op", "lightweight", 16, "mae", ("float32",)) == ("per-op", None,
                                                                                None)
    assert threads.summary(None, None) == "as TensorFlow sets them"
    assert threads.summary("shared", None) == "shared as set"
    choice = {"chosen": "per-op", "images_per_second": {"shared": 344.2, "per-op": 395.0}}
    assert threads.summary("per-op", choice) == "auto: per-op (shared 344 img/s, per-op 395 img/s)"
    assert threads.summary("shared", choice) == "shared as set"  # set since it was measured
    slow = {"chosen": "shared", "images_per_second": {"shared": 3.56, "per-op": 3.44}}
    assert threads.describe(slow) == "shared (shared 3.6 img/s, per-op 3.4 img/s)"


def test_a_recorded_choice_holds_on_its_machine_for_its_trainer_and_precisions():
    here = precision.machine()["id"]
    previous = {"chosen": "per-op", "machine": here, "trainer": "lightweight", "batch_size": 16,
                "policies": ["float32", "mixed_bfloat16"]}
    assert threads.reusable(previous, "lightweight", 16, ("mixed_bfloat16",))  # resumed model
    assert threads.reusable(previous, "lightweight", 16, ("float32", "mixed_bfloat16"))
    assert not threads.reusable(previous, "original", 16, ("float32",))
    assert not threads.reusable(previous, "lightweight", 8, ("float32",))
    assert not threads.reusable({**previous, "machine": "elsewhere"}, "lightweight", 16,
                                ("float32",))
    assert not threads.reusable({**previous, "policies": ["float32"]}, "lightweight", 16,
                                ("mixed_bfloat16",))
    assert not threads.reusable({**previous, "chosen": "../x"}, "lightweight", 16, ("float32",))


def test_tensorflow_running_here_keeps_its_pools():
    tf = threads.quiet.import_tensorflow()
    float(tf.reduce_sum(tf.ones(3)))  # TensorFlow has run: its pools are fixed
    assert not threads.can_apply()
    assert not threads.apply("per-op")
    assert threads.choose("auto", "lightweight", 16, "mae", ("float32",)) == (None, None, None)


def test_a_failing_worker_is_an_error_not_a_hang():
    with pytest.raises(RuntimeError, match="the shared worker ended"):
        threads.measure("no-such-trainer", 2, "mae", ("float32",), layouts=("shared",))


@pytest.mark.slow
def test_a_fresh_training_times_both_layouts_once_and_trains_in_the_faster(
        astronaut_faces, grace_faces, tmp_path):
    """`facedrop train` in its own process: both layouts timed in workers (each checked to
    run with its pools), the faster applied and recorded; a resume reuses the record."""
    model_dir = tmp_path / "m"
    cmd = [sys.executable, "-m", "daemon.cli", "train", "--a", str(astronaut_faces), "--b",
           str(grace_faces), "--model-dir", str(model_dir), "--batch-size", "2",
           "--save-every", "2", "--precision", "float32", "--threads", "auto"]
    first = subprocess.run(cmd + ["--iterations", "2"], capture_output=True, text=True,
                           timeout=600)
    assert first.returncode == 0, first.stderr
    state = json.loads((model_dir / "state.json").read_text())
    choice = state["threads_choice"]
    assert state["threads_setting"] == "auto" and state["threads"] == choice["chosen"]
    assert set(choice["images_per_second"]) == {"shared", "per-op"}
    assert all(rate > 0 for rate in choice["images_per_second"].values())
    assert choice["policies"] == ["float32"] and choice["trainer"] == "lightweight"
    assert choice["machine"] == precision.machine()["id"]
    faster = max(choice["images_per_second"], key=choice["images_per_second"].get)
    assert choice["chosen"] in (faster, "shared")  # per-op only when >= 5 % faster
    assert f"threads auto: {threads.describe(choice)}" in first.stdout
    again = subprocess.run(cmd + ["--iterations", "4"], capture_output=True, text=True,
                           timeout=600)
    assert again.returncode == 0, again.stderr
    resumed = json.loads((model_dir / "state.json").read_text())
    assert resumed["iterations"] == 4 and resumed["threads_choice"] == choice  # not timed again
    assert "threads auto: " in again.stdout
