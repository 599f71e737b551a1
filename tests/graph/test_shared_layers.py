import numpy as np

from keras_qat._keras import keras
from keras_qat.graph.model_check import checked_model
from keras_qat.graph.shared_layers import split_shared_layers

L = keras.layers


def shared():
    """One ReLU after two convolutions, one Add twice, a shared Dense, a shared ReLU returned."""
    inputs = keras.Input((8, 8, 1), name="image")
    relu, add, head = L.ReLU(name="relu"), L.Add(name="add"), L.Dense(4, name="head")
    x = relu(L.Conv2D(4, 3, padding="same", name="conv1")(inputs))
    x = add([x, relu(L.Conv2D(4, 3, padding="same", name="conv2")(x))])
    x = add([x, L.Conv2D(4, 1, name="conv3")(x)])
    pooled = [L.GlobalAveragePooling2D(name=f"gap{i}")(t) for i, t in ((1, x), (2, inputs))]
    out = L.ReLU(name="out_relu")
    logits = [out(head(L.Dense(4, name=f"fc{i}")(t))) for i, t in enumerate(pooled)]
    return keras.Model(inputs, logits)


def test_each_call_of_a_shared_weightless_layer_after_its_first_gets_a_copy():
    model = shared()
    split = checked_model(model)
    names = [layer.name for layer in split.layers]
    assert {"relu", "relu_1", "add", "add_1"} <= set(names)
    assert len(names) == len(set(names))
    by_name = {layer.name: layer for layer in split.layers}
    # Each call on a layer of its own; the Dense keeps its one kernel, and
    # the ReLU whose output the model returns keeps its layer and its name.
    assert all(len(by_name[n].inbound_nodes) == 1 for n in ("relu", "relu_1", "add", "add_1"))
    assert len(by_name["head"].inbound_nodes) == 2 and len(by_name["out_relu"].inbound_nodes) == 2
    assert split.output_names == model.output_names
    assert len(model.get_layer("relu").inbound_nodes) == 2  # the user's model is untouched
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("f4")
    for got, want in zip(split(x), model(x), strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6)


def test_a_copy_takes_a_name_no_layer_holds():
    inputs = keras.Input((4,))
    relu = L.ReLU(name="relu")
    x = L.Dense(4, name="relu_1")(relu(L.Dense(4, name="fc")(inputs)))
    model = keras.Model(inputs, L.Dense(2, name="logits")(relu(x)))
    names = [layer.name for layer in split_shared_layers(model).layers]
    assert "relu_2" in names and len(names) == len(set(names))


def test_a_model_without_shared_weightless_layers_is_returned_as_it_is():
    inputs = keras.Input((4,))
    dense = L.Dense(4)
    model = keras.Model(inputs, dense(L.ReLU()(dense(inputs))))
    assert split_shared_layers(model) is model
