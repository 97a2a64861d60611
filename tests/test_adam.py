"""facedrop's fused Adam: Keras's Adam step for step, in one kernel per variable."""
from __future__ import annotations

import numpy as np
import pytest

from hotfolders import quiet

tf = quiet.import_tensorflow()

SHAPES = [(5, 5, 3, 8), (8,), (16, 4), ()]


def _run(optimizer, steps: int = 6):
    """Variables after ``steps`` updates with fixed gradients, the moments, the step count and
    the names of the ops one update traced to."""
    import keras

    variables = [keras.Variable(tf.random.stateless_normal(shape, (i, 0)), name=f"v{i}")
                 for i, shape in enumerate(SHAPES)]

    @tf.function
    def apply(grads):
        optimizer.apply_gradients(zip(grads, variables))

    for step in range(steps):
        apply([tf.random.stateless_normal(shape, (i, step + 1)) for i, shape in enumerate(SHAPES)])
    graph = apply.get_concrete_function(
        [tf.TensorSpec(shape, tf.float32) for shape in SHAPES]).graph
    ops = {op.type for op in graph.get_operations()}
    for function in graph._functions.values():
        ops |= {node.op for node in function.definition.node_def}
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    return ([v.numpy() for v in variables],
            [m.numpy() for m in inner._momentums + inner._velocities],
            int(inner.iterations.numpy()), ops)


@pytest.mark.parametrize("wrapped", [False, True])
def test_fused_adam_steps_as_keras_adam_does(wrapped):
    import keras

    from hotfolders.adam import Adam

    settings = dict(learning_rate=1.5e-4, beta_1=0.5, beta_2=0.99)
    mine, theirs = Adam(**settings), keras.optimizers.Adam(**settings)
    if wrapped:  # mixed float16 wraps it in a loss-scale optimizer
        mine = keras.optimizers.LossScaleOptimizer(mine)
        theirs = keras.optimizers.LossScaleOptimizer(theirs)
    values, moments, iterations, ops = _run(mine)
    expected_values, expected_moments, expected_iterations, keras_ops = _run(theirs)
    assert "ResourceApplyAdam" in ops and "ResourceApplyAdam" not in keras_ops
    assert iterations == expected_iterations == 6
    for a, b in zip(values + moments, expected_values + expected_moments):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    assert any(np.abs(v - tf.random.stateless_normal(v.shape, (i, 0)).numpy()).max() > 1e-4
               for i, v in enumerate(values))  # the variables did move
