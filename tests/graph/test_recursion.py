"""A model deeper than Python's default recursion limit goes through the whole flow."""

import sys

import numpy as np
import pytest

import keras_qat
from keras_qat._keras import keras
from keras_qat.graph.recursion import graph_recursion_room

DEPTH = 1100  # tf_keras recurses once per layer: 1 000 exceeds the default limit


def deep_model():
    """Dense, 1 100 activations, Dense: built as a user must, with tf_keras' room."""
    with graph_recursion_room(layers=DEPTH):  # tf_keras itself needs it to build the model
        inputs = keras.Input((4,), name="x")
        x = keras.layers.Dense(8, name="first")(inputs)
        for index in range(DEPTH):
            x = keras.layers.Activation("linear", name=f"step_{index}")(x)
        return keras.Model(inputs, keras.layers.Dense(3, name="last")(x))


@pytest.fixture
def default_recursion_limit():
    previous = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    yield
    sys.setrecursionlimit(previous)


@pytest.fixture(scope="module")
def deep_qat():
    """The deep model quantized by keras_qat at the default limit."""
    previous = sys.getrecursionlimit()
    keras.utils.set_random_seed(0)  # the tolerance below holds for these weights, not for all
    model = deep_model()
    sys.setrecursionlimit(1000)
    try:
        x = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
        config = keras_qat.read_retrain_config({"first": {}, "last": {}}, model)
        qat = keras_qat.apply_retrain_config(model, config, x)
        assert sys.getrecursionlimit() == 1000  # restored after the call
    finally:
        sys.setrecursionlimit(previous)
    return model, qat, x


def test_deep_model_quantizes(deep_qat):
    model, qat, x = deep_qat
    # Linear steps between two Dense layers: the QAT model is the float one, quantized.
    np.testing.assert_allclose(qat.predict(x, verbose=0), model.predict(x, verbose=0), atol=0.05)


@pytest.mark.slow  # saving, loading and converting 2 200 layers take minutes
def test_deep_model_saves_reloads_and_exports(deep_qat, tmp_path, default_recursion_limit):
    _, qat, x = deep_qat
    path = tmp_path / "qat.keras"
    with graph_recursion_room(qat):  # saving is the user's call into tf_keras
        qat.save(path)
    reloaded = keras_qat.load_model(path)
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), qat.predict(x, verbose=0))
    keras_qat.export_tflite(reloaded, tmp_path / "m.tflite", x)
    assert keras_qat.check_tflite(reloaded, tmp_path / "m.tflite", x)["agreement"] >= 0.99


def test_room_is_restored_after_an_error():
    previous = sys.getrecursionlimit()
    with pytest.raises(KeyError), graph_recursion_room(layers=10):
        assert sys.getrecursionlimit() > previous
        raise KeyError
    assert sys.getrecursionlimit() == previous


def test_decorated_functions_take_the_model_by_keyword():
    from keras_qat.graph.recursion import with_graph_recursion_room

    previous = sys.getrecursionlimit()
    limit = with_graph_recursion_room(lambda model, extra=0: sys.getrecursionlimit() + extra)
    assert limit(model=None, extra=1) > previous + 1
    assert limit(None) > previous
