"""Convolutions in other forms (a matrix multiply, a space-to-depth convolution): the same
numbers from the same weights, chosen by measurement (hotfolders/convolution.py)."""
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


@pytest.mark.parametrize("form,size,kernel_size,stride,cin,cout", [
    ("matmul", 8, 5, 2, 6, 10), ("matmul", 4, 3, 1, 8, 16), ("matmul", 7, 5, 2, 3, 4),
    ("matmul", 5, 3, 1, 2, 3), ("matmul", 9, 3, 2, 4, 5), ("matmul", 6, 1, 1, 3, 2),
    ("dw-matmul", 8, 5, 2, 6, 10), ("dw-matmul", 4, 3, 1, 8, 16), ("dw-matmul", 7, 5, 2, 3, 4),
    ("dw-matmul", 9, 3, 2, 4, 5),
    ("s2d", 8, 5, 1, 4, 3), ("s2d", 6, 3, 1, 2, 5), ("s2d", 10, 1, 1, 3, 3),
    ("s2d", 16, 5, 1, 24, 3)])
def test_each_form_is_the_convolution_forward_and_backward(form, size, kernel_size, stride,
                                                           cin, cout):
    from hotfolders.convolution import FORMS

    rng = np.random.default_rng(size * 100 + kernel_size * 10 + stride)
    x = tf.constant(rng.normal(size=(3, size, size, cin)), tf.float32)
    kernel = tf.constant(rng.normal(size=(kernel_size, kernel_size, cin, cout)), tf.float32)
    out = -(-size // stride)
    dy = tf.constant(rng.normal(size=(3, out, out, cout)), tf.float32)
    reference = _gradients(lambda x, k: tf.nn.conv2d(x, k, stride, "SAME"), x, kernel, dy)
    mine = _gradients(lambda x, k: FORMS[form](x, k, (stride, stride)), x, kernel, dy)
    for name, a, b in zip(("output", "input gradient", "kernel gradient"), reference, mine):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-4, atol=1e-3, err_msg=name)


def test_layers_run_every_form_from_the_same_weights_and_load_older_saves(tmp_path,
                                                                          monkeypatch):
    """A model saved when every layer was Keras's own Conv2D loads into facedrop's Conv2D,
    and gives the same faces whichever form its layers run in."""
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

    found = {(model.name, tuple(layer.output.shape[1:])): convolution.forms(layer)
             for model in (nets.encoder, nets.decoder_b)
             for layer in convolution.candidates(model)}
    assert found == {("encoder", (8, 8, 128)): ("dw-matmul",),   # small outputs
                     ("encoder", (4, 4, 256)): ("matmul", "dw-matmul"),
                     ("encoder", (4, 4, 512)): ("matmul", "dw-matmul"),
                     ("decoder_b", (8, 8, 384)): ("dw-matmul",),
                     ("decoder_b", (64, 64, 3)): ("s2d",)}       # to_rgb: 3 filters
    layers_ = convolution.candidates(nets.encoder) + convolution.candidates(nets.decoder_b)
    for form in convolution.FORMS:
        for layer in layers_:
            layer.form = form if form in convolution.forms(layer) else convolution.ONEDNN
        swapped = nets.decoder_b(nets.encoder(faces)).numpy()
        np.testing.assert_allclose(swapped, expected, rtol=1e-4, atol=1e-5, err_msg=form)


def test_tune_measures_each_candidate_and_keeps_the_fastest_form(monkeypatch):
    import keras

    from hotfolders import convolution
    from hotfolders.model import Networks
    from hotfolders.plugins.train.layers import Conv2D

    nets = Networks("lightweight", "float32")
    monkeypatch.setattr(convolution, "_cache", {})
    rows = nets.tune(4)
    assert [(row["layer"], list(row["speedups"])) for row in rows] == [
        ("encoder 16x16->8x8 64->128", ["dw-matmul"]),
        ("encoder 8x8->4x4 128->256", ["matmul", "dw-matmul"]),
        ("encoder 4x4->4x4 256->512", ["matmul", "dw-matmul"]),
        ("decoder_a 8x8->8x8 128->384", ["dw-matmul"]), ("decoder_a 64x64->64x64 24->3", ["s2d"]),
        ("decoder_b 8x8->8x8 128->384", ["dw-matmul"]), ("decoder_b 64x64->64x64 24->3", ["s2d"])]
    layers_ = [layer for name in ("encoder", "decoder_a", "decoder_b")
               for layer in convolution.candidates(nets.part(name))]
    for row, layer in zip(rows, layers_):
        gains = row["speedups"]
        fastest = max(gains, key=gains.get)
        assert min(gains.values()) > 0 and layer.form == row["form"] == (
            fastest if gains[fastest] >= convolution.MIN_GAIN else convolution.ONEDNN)
    assert len(convolution._cache) == 5  # one measurement per shape, kept for the process

    # a layer two forms can run: both are timed, the faster of them wins if it beats oneDNN
    inputs = keras.Input((4, 4, 8))
    both = keras.Model(inputs, Conv2D(3, 3, padding="same")(inputs), name="both")
    (row,) = convolution.tune([both], 4)
    assert sorted(row["speedups"]) == ["dw-matmul", "matmul", "s2d"]
    for gains, chosen in (({"matmul": 1.5, "s2d": 2.0}, "s2d"), ({"matmul": 1.5, "s2d": 0.7},
                                                                   "matmul"),
                          ({"matmul": 1.02, "s2d": 0.7}, convolution.ONEDNN)):
        monkeypatch.setattr(convolution, "_speedups", lambda layer, batch, g=gains: g)
        rows = convolution.tune([both], 4)
        assert both.layers[1].form == rows[0]["form"] == chosen
        assert convolution.describe(rows) == (
            "all run as oneDNN convolutions" if chosen == convolution.ONEDNN else
            f"measured faster in another form: both 4x4->4x4 8->3 as {chosen} "
            f"{gains[chosen]:.2f}x")
