"""Merges of several tensors spelled out at the door as the file's two-input ops."""

import numpy as np

import keras_qat
from keras_qat._keras import keras
from keras_qat.graph.model_check import checked_model

L = keras.layers


def branches():
    inputs = keras.Input((6, 6, 2), name="image")
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    return inputs, [L.Conv2D(4, 1, activation="relu", name=f"b{i}")(x) for i in range(3)]


def test_merges_of_several_tensors_become_chains_of_two_input_layers():
    inputs, (a, b, c) = branches()
    added = L.Add(name="add")([a, b, c])
    highest = L.Maximum(name="max")([a, b, added])
    model = keras.Model(
        inputs, [L.Average(name="mean")([highest, c]), L.Multiply(name="mul")([a, b])]
    )
    checked = checked_model(model)
    kinds = {layer.name: type(layer).__name__ for layer in checked.layers}
    assert {k: kinds[k] for k in ("add/2", "add", "max/2", "max", "mean/2", "mean", "mul")} == {
        "add/2": "Add",
        "add": "Add",
        "max/2": "Maximum",
        "max": "Maximum",
        "mean/2": "Add",
        "mean": "TFOpLambda",  # x / 2, which the converter writes as a MUL by 1/2
        "mul": "Multiply",  # two inputs: one op already
    }
    assert checked.get_layer("add/2").input[0] is checked.get_layer("b0").output
    assert checked.output_names == model.output_names
    x = np.random.default_rng(0).random((4, 6, 6, 2)).astype("f4")
    for got, want in zip(checked.predict(x, verbose=0), model.predict(x, verbose=0), strict=True):
        np.testing.assert_array_equal(got, want)


def test_an_average_of_non_negative_tensors_is_read_on_a_grid_from_zero():
    inputs, (a, b, _) = branches()
    model = keras.Model(inputs, L.Conv2D(2, 1, name="head")(L.Average(name="mean")([a, b])))
    x = np.random.default_rng(0).random((8, 6, 6, 2)).astype("f4")
    qat = keras_qat.apply_retrain_config(model, {"conv": {}, "b0": {}, "b1": {}, "head": {}}, x)
    assert keras_qat.quant_report(qat)["head"]["fixed_min"] is True
