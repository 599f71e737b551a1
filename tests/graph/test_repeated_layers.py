import numpy as np

from keras_qat._keras import keras
from keras_qat.graph.model_check import checked_model
from keras_qat.graph.repeated_layers import merge_repeated_layers

L = keras.layers


def cell():
    """NASNet's pattern: a ReLU per branch on one tensor; a padding and a pooling repeated too."""
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    a = L.Conv2D(8, 1, name="left")(L.Activation("relu", name="left_relu")(x))
    b = L.ZeroPadding2D(name="right_pad")(L.Activation("relu", name="right_relu")(x))
    b = L.Conv2D(8, 3, name="right")(b)
    c = L.ZeroPadding2D(name="other_pad")(L.ReLU(name="relu_layer")(x))
    c = L.Cropping2D(1, name="other_crop")(c)
    pools = [L.AveragePooling2D(3, 1, "same", name=f"pool{i}")(x) for i in (1, 2)]
    x = L.Concatenate(name="cell")([a, b, c, *pools])
    sixes = [L.ReLU(6.0, name=f"relu6_{i}")(x) for i in (1, 2)]
    return keras.Model(inputs, [L.Add(name="add")(sixes), L.ReLU(6.0, name="out_relu6")(x)])


def test_equal_weightless_calls_on_one_tensor_become_one_layer():
    model = cell()
    merged = checked_model(model)
    names = {layer.name for layer in merged.layers}
    # Equal Activations merge; a ReLU layer is another class, kept.
    assert len(names & {"left_relu", "right_relu"}) == 1 and "relu_layer" in names
    # The paddings read different tensors; the quantizable poolings keep
    # their config entries; a model output keeps its layer and its name.
    assert {"right_pad", "other_pad", "pool1", "pool2", "out_relu6"} <= names
    assert len(names & {"relu6_1", "relu6_2"}) == 1
    assert merged.output_names == model.output_names
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("f4")
    for got, want in zip(merged(x), model(x), strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6)


def test_a_model_without_repeats_is_returned_as_it_is():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2)(L.ReLU()(L.Dense(4)(inputs))))
    assert merge_repeated_layers(model) is model
