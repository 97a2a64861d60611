"""Model folder I/O without a training run: crash states, optimizer state, trainers, policy."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from hotfolders.errors import InputError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A lightweight model saved twice (iterations 5 then 7) with a real optimizer state."""
    import tensorflow as tf

    from hotfolders.model import Networks, save_checkpoint
    from hotfolders.training import make_optimizer

    model_dir = tmp_path_factory.mktemp("io") / "m"
    model_dir.mkdir()
    nets = Networks("lightweight")
    opt = make_optimizer("float32")
    x = tf.random.uniform((2, 64, 64, 3), seed=1)
    state = {"version": 1, "name": "m", "trainer": "lightweight", "input_size": 64,
             "output_size": 64, "coverage": 0.85, "padding": 0.5, "mask": "extended",
             "loss": "mae", "history": []}
    for iterations in (5, 7):
        for _ in range(iterations - int(opt.iterations.numpy())):
            with tf.GradientTape() as tape:
                code = nets.encoder(x)
                loss = tf.reduce_mean(tf.abs(nets.decoder_a(code) - x)) + tf.reduce_mean(
                    tf.abs(nets.decoder_b(code) - x))
            grads = tape.gradient(loss, nets.trainable_variables)
            opt.apply_gradients(zip(grads, nets.trainable_variables))
        save_checkpoint(model_dir, nets, opt, {**state, "iterations": iterations})
    return model_dir, nets, opt


def _copy(saved, tmp_path: Path) -> Path:
    dest = tmp_path / "m"
    shutil.copytree(saved[0], dest)
    return dest


def test_save_layout_and_exact_optimizer_roundtrip(saved):
    from hotfolders.model import Networks, load_checkpoint
    from hotfolders.training import make_optimizer

    model_dir, nets, opt = saved
    assert sorted(p.name for p in model_dir.iterdir()) == ["save", "save.bak", "state.json"]
    assert json.loads((model_dir / "save" / "state.json").read_text())["iterations"] == 7
    assert json.loads((model_dir / "save.bak" / "state.json").read_text())["iterations"] == 5
    nets2, opt2 = Networks("lightweight"), make_optimizer("float32")
    state, folder = load_checkpoint(model_dir, nets2, opt2)
    assert (state["iterations"], folder.name) == (7, "save")
    assert int(opt2.iterations.numpy()) == 7
    for a, b in zip(opt.variables, opt2.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    for a, b in zip(nets.trainable_variables, nets2.trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    with np.load(model_dir / "save" / "optimizer.npz", allow_pickle=False) as data:
        assert "paths" in data.files  # readable without pickle


def test_kill_between_renames_leaves_a_loadable_model(saved, tmp_path):
    """The states a kill -9 inside save_checkpoint can leave behind all load."""
    from hotfolders.model import Networks, clean_temporary, load_checkpoint, read_state

    model_dir = _copy(saved, tmp_path)
    # killed after `save` -> `save.bak`, before the new temp folder became `save`
    shutil.rmtree(model_dir / "save.bak")
    os.replace(model_dir / "save", model_dir / "save.bak")
    shutil.copytree(model_dir / "save.bak", model_dir / ".save-123.tmp")
    (model_dir / ".save-123.tmp" / "encoder.weights.h5").write_bytes(b"half written")
    state, folder = load_checkpoint(model_dir, Networks("lightweight"))
    assert (state["iterations"], folder.name) == (7, "save.bak")
    clean_temporary(model_dir)
    assert not (model_dir / ".save-123.tmp").exists()
    # killed after the first save's rename, before the readers' state.json
    (model_dir / "state.json").unlink()
    assert read_state(model_dir)["iterations"] == 7


def test_precision_can_change_between_runs(saved):
    """A float32 save resumes under bfloat16 (and float16's loss-scale wrapper) unchanged."""
    from hotfolders.model import Networks, load_checkpoint
    from hotfolders.training import make_optimizer

    model_dir = saved[0]
    for policy in ("mixed_bfloat16", "mixed_float16"):
        opt = make_optimizer(policy)
        state, _ = load_checkpoint(model_dir, Networks("lightweight", policy), opt)
        assert state["iterations"] == 7
        inner = getattr(opt, "inner_optimizer", opt)
        assert int(inner.iterations.numpy()) == 7


def test_trainers_share_one_encoder_layout_and_have_twin_decoders():
    from hotfolders.model import Networks
    from hotfolders.plugins.train import TRAINERS, describe, load_trainer

    assert set(describe()) == set(TRAINERS) == {"lightweight", "original", "dfaker"}
    with pytest.raises(ValueError, match="unknown trainer"):
        load_trainer("nope")
    sizes = {}
    for name in TRAINERS:
        nets = Networks(name)
        a, b = nets.decoder_a, nets.decoder_b
        assert [v.shape for v in a.trainable_variables] == [v.shape for v in b.trainable_variables]
        ids_a = {id(v) for v in a.trainable_variables}
        assert not ids_a & {id(v) for v in b.trainable_variables}
        assert not ids_a & {id(v) for v in nets.encoder.trainable_variables}
        x = np.zeros((1, nets.input_size, nets.input_size, 3), np.float32)
        sizes[name] = tuple(a(nets.encoder(x)).shape)
        del nets
    assert sizes == {"lightweight": (1, 64, 64, 3), "original": (1, 64, 64, 3),
                     "dfaker": (1, 128, 128, 3)}


def test_to_rgb_computes_in_the_model_precision_and_loads_weights_saved_before(tmp_path,
                                                                               monkeypatch):
    """The last convolution runs in the model's precision, the sigmoid in float32: the output
    stays float32, and a bfloat16 model's faces differ from an all-float32 to_rgb's by under
    a quarter of a level of 255 on average, under 2 anywhere. Weights saved when to_rgb was one
    float32 layer load as they are (the activation has no weights)."""
    import keras

    from hotfolders.model import Networks
    from hotfolders.plugins.train import layers, lightweight

    def old_to_rgb(x, name):  # the layout before: one float32 layer with its sigmoid
        return layers.Conv2D(3, 5, padding="same", activation="sigmoid", dtype="float32",
                             name=name)(x)

    keras.utils.set_random_seed(0)  # the same weights, the same figures, every run
    with monkeypatch.context() as patch:
        patch.setattr(lightweight, "to_rgb", old_to_rgb)
        old = Networks("lightweight", "mixed_bfloat16")
    old.decoder_a.save_weights(str(tmp_path / "decoder_a.weights.h5"))
    new = Networks("lightweight", "mixed_bfloat16")
    rgb = new.decoder_a.get_layer("decoder_a_rgb")
    assert rgb.compute_dtype == "bfloat16" and rgb.variable_dtype == "float32"
    new.decoder_a.load_weights(str(tmp_path / "decoder_a.weights.h5"))
    for mine, theirs in zip(new.decoder_a.weights, old.decoder_a.weights):
        np.testing.assert_array_equal(mine.numpy(), theirs.numpy())
    for nets in (old, new):  # logits across the sigmoid's whole range, as a trained model's
        kernel = nets.decoder_a.get_layer("decoder_a_rgb").kernel
        kernel.assign(kernel * 12.0)
    code = keras.random.normal((4, 8, 8, 128), seed=0)
    faces, before = new.decoder_a(code), old.decoder_a(code)
    assert faces.dtype == "float32"
    assert before.numpy().min() < 0.02 and before.numpy().max() > 0.98
    difference = np.abs(faces.numpy() - before.numpy())
    assert 0 < difference.mean() < 0.25 / 255 and difference.max() < 2 / 255, (
        difference.mean() * 255, difference.max() * 255)


def test_precision_choice_without_measuring():
    from hotfolders import precision

    assert precision.cpu_flags("processor\t: 0\nflags\t\t: fpu avx2 amx_bf16 amx_tile\n") >= {
        "amx_bf16", "avx2"}
    assert precision.describe_cpu({"avx512f", "avx512_bf16"}) == "AVX-512 BF16 without AMX"
    assert precision.describe_cpu({"amx_bf16", "avx512_bf16"}) == "AMX"
    assert "bugs" not in precision.cpu_flags("flags\t\t: fpu avx2 fma\nbugs\t\t: amx_bf16\n")
    assert precision.choose("float32", "lightweight", 16) == ("float32", None)
    assert precision.choose("mixed", "lightweight", 16) == ("mixed_bfloat16", None)  # no GPU
    with pytest.raises(ValueError):
        precision.choose("half", "lightweight", 16)
    # the faster wins; reduced precision only when it is clearly faster
    assert precision.pick({"float32": 105.0, "mixed_bfloat16": 81.0}) == "float32"
    assert precision.pick({"float32": 100.0, "mixed_bfloat16": 104.0}) == "float32"
    assert precision.pick({"float32": 100.0, "mixed_bfloat16": 170.0}) == "mixed_bfloat16"


def test_plateau_gain():
    from hotfolders.training import loss_gain

    falling = [[i * 10, 1.0 / i, 1.0 / i] for i in range(1, 9)]
    assert loss_gain(falling[:7]) is None  # two windows of 4 saves needed
    assert loss_gain(falling) > 0.3
    flat = falling + [[90 + i * 10, 0.1, 0.1] for i in range(12)]
    assert abs(loss_gain(flat)) < 1e-9
    slow = [[i, 1.0 - 0.0001 * i, 1.0 - 0.0001 * i] for i in range(40)]
    assert 0 < loss_gain(slow) < 0.01  # windows of 8 saves: "stopped improving"
    # a new stretch (after a stop) is measured on its own saves only
    assert loss_gain(flat, since=170) is None
    assert loss_gain(flat + [[300 + i, 0.1 / (i + 1), 0.1 / (i + 1)] for i in range(8)],
                     since=200) > 0.3


def test_loss_log_drops_rows_after_the_save(tmp_path):
    from hotfolders.training import LossLog

    path = tmp_path / "loss.csv"
    log = LossLog(path, 0)
    for i in range(1, 8):
        log.add(i, 0.5, 0.4)
    log.close()
    LossLog(path, 5).close()
    assert path.read_text().splitlines() == ["iteration,loss_a,loss_b"] + [
        f"{i},0.500000,0.400000" for i in range(1, 6)]


def test_state_from_the_future_or_foreign_is_refused(tmp_path):
    from hotfolders.model import read_state

    (tmp_path / "state.json").write_text(json.dumps({"version": 99, "trainer": "lightweight"}))
    with pytest.raises(InputError, match="newer"):
        read_state(tmp_path)
    (tmp_path / "state.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(InputError, match="not a facedrop model"):
        read_state(tmp_path)


SAVE_LOOP = """
import sys
from hotfolders.model import Networks, save_checkpoint
from hotfolders.training import make_optimizer
nets, opt = Networks("lightweight"), make_optimizer("float32")
opt.build(nets.trainable_variables)
state = {"version": 1, "name": "m", "trainer": "lightweight", "input_size": 64,
         "output_size": 64, "coverage": 0.85, "padding": 0.5, "mask": "extended",
         "loss": "mae", "history": []}
i = int(sys.argv[2])
while True:
    i += 1
    save_checkpoint(sys.argv[1], nets, opt, {**state, "iterations": i})
    print(i, flush=True)
"""


@pytest.mark.slow
def test_kill_9_inside_saves_never_breaks_the_model(tmp_path):
    """Saves back to back in a real process, killed with SIGKILL three times at odd moments."""
    import signal
    import subprocess
    import sys
    import time

    from hotfolders.model import Networks, load_checkpoint, read_state

    model_dir = tmp_path / "m"
    model_dir.mkdir()
    last = 0
    for delay in (0.13, 0.71, 0.37):
        proc = subprocess.Popen([sys.executable, "-c", SAVE_LOOP, str(model_dir), str(last)],
                                stdout=subprocess.PIPE, text=True)
        try:
            first = int(proc.stdout.readline())  # one save done: now kill inside a later one
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            printed = [first] + [int(line) for line in proc.stdout.read().split()]
        finally:
            proc.wait(timeout=30)
        state, _ = load_checkpoint(model_dir, Networks("lightweight"))
        # the last save reported done, or one the kill let finish before it could print
        assert printed[-1] <= state["iterations"] <= printed[-1] + 1
        assert read_state(model_dir)["iterations"] >= state["iterations"] - 1
        last = state["iterations"]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_leaky_relu_gradient_from_its_output_is_tensorflows(dtype):
    """The trainers' LeakyReLU takes its gradient from the output (so Grappler can fuse the
    activation into the convolution): the same values and gradients as TensorFlow's own, in
    either precision, zeros included. In bfloat16 the gradient is TensorFlow's float32 one
    rounded once (TensorFlow's bfloat16 kernel, 2.8x slower, first rounds the slope to 0.1001)."""
    import tensorflow as tf

    from hotfolders.plugins.train.layers import LeakyReLU

    values = np.random.default_rng(0).normal(size=(4, 8, 8, 16))
    values[0, 0, 0, :4] = 0.0
    x = tf.constant(values, dtype)
    layer = LeakyReLU(0.1, dtype=dtype)
    upstream = tf.cast(tf.sin(tf.range(tf.size(x), dtype=tf.float32)), dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        ours = layer(x)
        loss_ours = tf.reduce_sum(tf.reshape(ours, [-1]) * upstream)
    x32 = tf.cast(x, tf.float32)  # bfloat16 values are exact in float32
    with tf.GradientTape() as tape32:
        tape32.watch(x32)
        theirs = tf.nn.leaky_relu(x32, 0.1)
        loss_theirs = tf.reduce_sum(tf.reshape(theirs, [-1]) * tf.cast(upstream, tf.float32))
    np.testing.assert_array_equal(ours.numpy(), tf.nn.leaky_relu(x, 0.1).numpy())
    gradient = tape.gradient(loss_ours, x)
    assert gradient.dtype == x.dtype
    np.testing.assert_array_equal(gradient.numpy(),
                                  tf.cast(tape32.gradient(loss_theirs, x32), dtype).numpy())
    assert type(layer).__name__ == "LeakyReLU"  # saved weights keep their layer names
