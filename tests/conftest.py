"""Shared fixtures: small tf_keras models covering every quantizable layer type."""

import numpy as np
import pytest
from sklearn.datasets import load_digits

from keras_qat._keras import keras
from keras_qat.demo import build_demo_model

L = keras.layers


def all_types_model():
    """A Functional model with one layer of each quantizable type (two inputs)."""
    image = keras.Input((8, 8, 3), name="image")
    x = L.Conv2D(4, 3, padding="same", name="conv")(image)
    x = L.ReLU(name="relu")(x)
    x = L.DepthwiseConv2D(3, padding="same", name="depthwise")(x)
    x = L.SeparableConv2D(4, 3, padding="same", name="separable")(x)
    x = L.Conv2DTranspose(4, 3, padding="same", name="transpose")(x)
    x = L.AveragePooling2D(name="avgpool")(x)
    x = L.Flatten(name="flatten")(x)
    sequence = keras.Input((6, 2), name="sequence")
    y = L.Conv1D(3, 2, name="conv1d")(sequence)
    y = L.Flatten(name="flatten_seq")(y)
    z = L.Concatenate(name="concat")([x, y])
    out = L.Dense(5, name="dense")(z)
    return keras.Model([image, sequence], out, name="all_types")


@pytest.fixture
def model():
    return all_types_model()


@pytest.fixture
def weights_of():
    def snapshot(m):
        return [w.copy() for w in m.get_weights()]

    return snapshot


def assert_same_weights(before, after):
    assert len(before) == len(after)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_array_equal(a, b)


LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="session")
def digits():
    data = load_digits()
    x = (data.images / 16.0).astype(np.float32)[..., None]
    return x[:1500], data.target[:1500], x[1500:], data.target[1500:]


@pytest.fixture(scope="session")
def trained(digits):
    keras.utils.set_random_seed(0)
    x, y, _, _ = digits
    model = build_demo_model()
    model.compile(keras.optimizers.Adam(3e-3), LOSS, metrics=["accuracy"])
    model.fit(x, y, epochs=20, batch_size=64, verbose=0)
    return model
