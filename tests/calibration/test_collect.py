import numpy as np
import pytest

from keras_qat._keras import keras
from keras_qat.calibration.collect import tensor_ranges, tensor_samples


def _relu_model(shape):
    inputs = keras.Input(shape)
    return keras.Model(inputs, keras.layers.ReLU(name="relu")(inputs))


@pytest.mark.parametrize("shape", [(8, 8, 4), (None, 4)], ids=["static", "unknown-size"])
def test_samples_are_bounded_uniform_and_repeatable(shape):
    model = _relu_model(shape)
    batch = np.arange(64 * 8 * 8 * 4, dtype=np.float32).reshape(64, -1, 4)
    if len(shape) == 3:
        batch = batch.reshape(64, 8, 8, 4)
    tensors = [model.get_layer("relu").output]
    drawn = [s for (s,) in tensor_samples(model, tensors, [[batch], [batch[:2]]], 1000, seed=3)]
    assert drawn[0].shape == (1000,)
    assert np.isin(drawn[0], batch).all()
    assert len(np.unique(drawn[0] % 4)) == 4  # every channel is represented
    assert len(np.unique(drawn[0] // 256)) > 50  # and most of the batch's examples
    np.testing.assert_array_equal(drawn[1], batch[:2].ravel())  # no more than 1000: all
    again = next(tensor_samples(model, tensors, [[batch]], 1000, seed=3))[0]
    np.testing.assert_array_equal(again, drawn[0])


def test_ranges_are_per_batch_min_and_max():
    model = _relu_model((3,))
    batches = [[np.array([[-1.0, 2.0, 0.5]], np.float32)], [np.array([[3.0, 4.0, 5.0]], "f4")]]
    got = [r for (r,) in tensor_ranges(model, [model.get_layer("relu").output], batches)]
    np.testing.assert_array_equal(got, [[0.0, 2.0], [3.0, 5.0]])
