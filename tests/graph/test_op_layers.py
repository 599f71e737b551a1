"""TensorFlow ops on Keras tensors rebuilt at the door as the Keras layers that compute them."""

import numpy as np
import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.graph.model_check import checked_model

L = keras.layers


def test_ops_of_tensors_become_layers_and_ops_with_numbers_or_broadcasts_stay():
    inputs = keras.Input((6, 6, 2), name="image")
    a = L.Conv2D(4, 3, padding="same", name="a")(inputs)
    b = L.Conv2D(4, 1, name="b")(inputs)
    pooled = L.GlobalAveragePooling2D(keepdims=True, name="pool")(b)
    residual = tf.nn.relu(a + b)
    gated = residual * tf.sigmoid(b)
    joined = tf.concat([gated, tf.maximum(a, b) - b], axis=-1)
    probabilities = L.Softmax(name="soft")(a)  # over the last axis: the softmax activation
    across = L.Softmax(axis=1, name="across")(a)
    outputs = [joined * 0.5, a * pooled, tf.tanh(a), probabilities, across]  # a number, a broadcast
    model = keras.Model(inputs, outputs)
    checked = checked_model(model)
    kinds = {type(layer).__name__ for layer in checked.layers}
    assert {"Add", "Subtract", "Multiply", "Maximum", "Concatenate", "Activation"} <= kinds
    assert checked.get_layer("soft").get_config()["activation"] == "softmax"
    assert type(checked.get_layer("across")) is L.Softmax
    ops = sorted(layer.symbol for layer in checked.layers if hasattr(layer, "symbol"))
    assert ops == ["math.multiply", "math.multiply"]
    # The layers keep the ops' names, and the model computes the same.
    assert {layer.name for layer in checked.layers} == {layer.name for layer in model.layers}
    x = np.random.default_rng(0).random((4, 6, 6, 2)).astype("f4")
    for got, want in zip(checked.predict(x, verbose=0), model.predict(x, verbose=0), strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_a_model_without_such_ops_is_kept_as_it_is():
    inputs = keras.Input((4,), name="x")
    model = keras.Model(inputs, L.Dense(2, name="d")(inputs) * 2.0)
    assert checked_model(model) is model
