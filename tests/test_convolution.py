"""Small convolutions as one matrix multiply: the same numbers from the same weights, chosen by
measurement (hotfolders/convolution.py)."""
from __future__ import annotations

import numpy as np
import pytest

from hotfolders import quiet

tf = quiet.import_tensorflow()


def _gradients(form, x, kernel, dy):
    with tf.GradientTape() as tape:
        tape.watch([x, kernel])
        y = form(x, kernel)
    return [y, *tape.gradient(y, [x, kernel], output_gradients=dy)]


@pytest.mark.parametrize("size,kernel_size,stride,cin,cout", [
    (8, 5, 2, 6, 10), (4, 3, 1, 8, 16), (7, 5, 2, 3, 4), (5, 3, 1, 2, 3), (9, 3, 2, 4, 5),
    (6, 1, 1, 3, 2)])
def test_the_matmul_form_is_the_convolution_forward_and_backward(size, kernel_size, stride,
                                                                  cin, cout):
    from hotfolders.convolution import conv_as_matmul

    rng = np.random.default_rng(size * 100 + kernel_size * 10 + stride)
    x = tf.constant(rng.normal(size=(3, size, size, cin)), tf.float32)
    kernel = tf.constant(rng.normal(size=(kernel_size, kernel_size, cin, cout)), tf.float32)
    out = -(-size // stride)
    dy = tf.constant(rng.normal(size=(3, out, out, cout)), tf.float32)
    reference = _gradients(lambda x, k: tf.nn.conv2d(x, k, stride, "SAME"), x, kernel, dy)
    mine = _gradients(lambda x, k: conv_as_matmul(x, k, (stride, stride)), x, kernel, dy)
    for name, a, b in zip(("output", "input gradient", "kernel gradient"), reference, mine):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-4, err_msg=name)


def test_layers_run_either_form_from_the_same_weights_and_load_older_saves(tmp_path,
                                                                           monkeypatch):
    """A model saved when every layer was Keras's own Conv2D loads into facedrop's Conv2D,
    and its small convolutions give the same faces in either form."""
    import keras

    from hotfolders import convolution
    from hotfolders.model import Networks
    from hotfolders.plugins.train import layers

    monkeypatch.setattr(layers, "Conv2D", keras.layers.Conv2D)  # the layers as saved before
    older = Networks("lightweight", "float32")
    monkeypatch.undo()
    older.save_weights(tmp_path)
    nets = Networks("lightweight", "float32")
    assert not convolution.candidates(older.encoder)  # Keras's own layer is never switched
    nets.load_weights(tmp_path)
    faces = tf.constant(np.random.default_rng(0).random((2, 64, 64, 3)), tf.float32)
    expected = older.decoder_b(older.encoder(faces)).numpy()

    small = convolution.candidates(nets.encoder)
    assert [tuple(layer.output.shape[1:3]) for layer in small] == [(4, 4), (4, 4)]
    assert not convolution.candidates(nets.decoder_a)  # 8x8 and more: oneDNN's
    for as_matmul in (False, True):
        for layer in small:
            layer.as_matmul = as_matmul
        swapped = nets.decoder_b(nets.encoder(faces)).numpy()
        np.testing.assert_allclose(swapped, expected, rtol=1e-4, atol=1e-5)


def test_tune_measures_each_small_layer_and_keeps_the_faster_form(monkeypatch):
    from hotfolders import convolution
    from hotfolders.model import Networks

    nets = Networks("lightweight", "float32")
    monkeypatch.setattr(convolution, "_cache", {})
    rows = nets.tune(4)
    small = convolution.candidates(nets.encoder)
    assert [row["layer"] for row in rows] == ["encoder 8x8->4x4 128->256",
                                              "encoder 4x4->4x4 256->512"]
    for row, layer in zip(rows, small):
        assert row["speedup"] > 0 and layer.as_matmul == row["matmul"] == (
            row["speedup"] >= convolution.MIN_GAIN)
    assert len(convolution._cache) == 2  # one measurement per shape, kept for the process
    # the choice follows the measurement: a faster matmul is chosen, a slower one is not
    for gain in (2.0, 0.5):
        monkeypatch.setattr(convolution, "_cache", {})
        monkeypatch.setattr(convolution, "_speedup", lambda layer, batch, g=gain: g)
        rows = nets.tune(4)
        assert all(layer.as_matmul == (gain > 1) for layer in small)
        assert ("as a matrix multiply" in convolution.describe(rows)) == (gain > 1)
