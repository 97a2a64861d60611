"""The GPU path, with TensorFlow's device list faked (this machine and CI's have no GPU).

Checked here, by the same code that runs on a GPU: which GPUs the ``gpu`` setting makes
visible, memory growth on each, clear errors for an index the machine lacks, ``precision``
timing float32 against float16 when a GPU is visible (bfloat16 when ``gpu = "cpu"`` hides
it), and real training steps of the mixed-float16 path with its loss scale (run here on the
CPU, slowly) that save and resume.

Not checked here: that the CUDA wheels load, that kernels run on the card, memory use and
speed — run ``bench/train.py`` and ``bench/convert.py`` on a GPU for those.
"""
from __future__ import annotations

import json

import pytest

from hotfolders import devices, quiet


@pytest.fixture
def two_gpus(monkeypatch):
    """TensorFlow reports two GPUs; what facedrop asks of them is recorded."""
    tf = quiet.import_tensorflow()
    fake = [tf.config.PhysicalDevice(name=f"/physical_device:GPU:{i}", device_type="GPU")
            for i in range(2)]
    calls = {"visible": list(fake), "growth": []}
    real_list, real_visible = tf.config.list_physical_devices, tf.config.get_visible_devices

    def list_physical(device_type=None):
        return list(fake) if device_type == "GPU" else real_list(device_type)

    def set_visible(devices_, device_type=None):
        assert device_type == "GPU"
        calls["visible"] = list(devices_)

    def get_visible(device_type=None):
        return list(calls["visible"]) if device_type == "GPU" else real_visible(device_type)

    monkeypatch.setattr(tf.config, "list_physical_devices", list_physical)
    monkeypatch.setattr(tf.config, "set_visible_devices", set_visible)
    monkeypatch.setattr(tf.config, "get_visible_devices", get_visible)
    monkeypatch.setattr(tf.config.experimental, "set_memory_growth",
                        lambda device, on: calls["growth"].append((device.name, on)))
    return calls


def test_the_gpu_setting_picks_cards_with_memory_growth(two_gpus):
    assert devices.select_gpus("auto") == ["/physical_device:GPU:0", "/physical_device:GPU:1"]
    assert two_gpus["growth"] == [("/physical_device:GPU:0", True),
                                  ("/physical_device:GPU:1", True)]
    two_gpus["growth"].clear()
    assert devices.select_gpus("1") == ["/physical_device:GPU:1"]
    assert [d.name for d in two_gpus["visible"]] == ["/physical_device:GPU:1"]
    assert two_gpus["growth"] == [("/physical_device:GPU:1", True)]
    assert devices.select_gpus("cpu") == [] and two_gpus["visible"] == []
    with pytest.raises(ValueError, match=r"has 2 GPU\(s\).*indices 0-1"):
        devices.select_gpus("0,2")
    with pytest.raises(ValueError, match='"auto", "cpu" or GPU indices'):
        devices.select_gpus("the big one")


def test_no_gpu_gives_a_clear_error_for_an_index():
    with pytest.raises(ValueError, match="sees no GPU"):
        devices.select_gpus("0")
    assert devices.select_gpus("auto") == []


def test_auto_precision_follows_the_visible_gpus(two_gpus):
    from hotfolders import precision

    devices.select_gpus("auto")
    assert precision.reduced_policy() == "mixed_float16"
    assert precision.choose("mixed", "lightweight", 16) == ("mixed_float16", None)
    policy, choice = precision.choose("auto", "lightweight", 16)  # timed on the GPU
    assert set(choice["images_per_second"]) == {"float32", "mixed_float16"}
    assert policy == precision.pick(choice["images_per_second"])
    devices.select_gpus("cpu")
    assert precision.reduced_policy() == "mixed_bfloat16"


def test_the_gpu_setting_is_validated(tmp_path):
    from daemon.config import ConfigError, load

    (tmp_path / "facedrop.toml").write_text('gpu = "0,1"\n')
    assert load(tmp_path).gpu == "0,1"
    (tmp_path / "facedrop.toml").write_text('gpu = "first"\n')
    with pytest.raises(ConfigError, match="gpu must be"):
        load(tmp_path)


@pytest.mark.slow
def test_mixed_float16_training_with_a_loss_scale_saves_and_resumes(two_gpus, tmp_path,
                                                                   astronaut_faces,
                                                                   grace_faces):
    """What a GPU runs (float16 compute, float32 weights, a dynamic loss scale), on the CPU."""
    from hotfolders.training import train

    devices.select_gpus("auto")
    model = tmp_path / "m"
    first = train([astronaut_faces], [grace_faces], model, batch_size=2, iterations=2,
                  save_every=2, precision="mixed", seed=1)  # auto would time the fake GPU
    state = json.loads((model / "save" / "state.json").read_text())
    assert first.precision == "mixed_float16" and state["iterations"] == 2
    again = train([astronaut_faces], [grace_faces], model, batch_size=2, iterations=3,
                  save_every=3, precision="mixed", seed=1)
    assert again.precision == "mixed_float16"
    assert again.iterations == 3 and again.start_iteration == 2 and again.loaded_from == "save"
    loss = (model / "loss.csv").read_text().splitlines()
    assert len(loss) == 4 and all("nan" not in row for row in loss)
