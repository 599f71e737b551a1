from keras_qat._keras import keras
from keras_qat.graph.output_plan import output_quantized_layers

L = keras.layers


def plan(outputs, inputs, enabled):
    return output_quantized_layers(keras.Model(inputs, outputs), set(enabled))


def test_logits_and_the_input_of_a_global_pooling_are_planned():
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(4, 3, name="c1")(inputs)
    x = L.ReLU(name="r1")(x)
    x = L.MaxPooling2D(name="p1")(x)  # keeps the scale: c2's quantizer ranges c1
    x = L.Conv2D(4, 3, activation="relu6", name="c2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    outputs = L.Dense(3, name="logits")(x)
    got = plan(outputs, inputs, ["c1", "c2", "logits"])
    assert got == {"c2": (0.0, 6.0, "c2"), "logits": (None, None, "logits")}


def test_a_fused_relu_layer_bounds_the_range():
    inputs = keras.Input((4,))
    x = L.Dense(4, name="d")(inputs)
    outputs = L.ReLU(name="r")(x)
    assert plan(outputs, inputs, ["d"]) == {"d": (0.0, None, "r")}


def test_unfused_activation_and_shared_tensors_are_not_planned():
    inputs = keras.Input((4,))
    soft = L.Dense(4, activation="softmax", name="soft")(inputs)
    shared = L.Dense(4, name="shared")(inputs)
    reader = L.Dense(4, name="reader")(shared)
    added = L.Add(name="add")([shared, reader])
    outputs = L.Multiply(name="mul")([soft, added])
    # "shared" feeds a quantizer and an Add: the quantizer moves up to it
    # (`shared_inputs`). "reader" feeds only the Add: planned.
    got = plan(outputs, inputs, ["soft", "shared", "reader"])
    assert got == {"reader": (None, None, "reader")}


def test_inputs_of_a_concatenation_are_not_planned():
    inputs = keras.Input((4,))
    joined = L.Concatenate()([L.Dense(4, name="a")(inputs), L.Dense(4, name="b")(inputs)])
    outputs = L.Dense(2, name="out")(joined)
    assert plan(outputs, inputs, ["a", "b", "out"]) == {"out": (None, None, "out")}


def test_disabled_readers_do_not_count_as_quantizers():
    inputs = keras.Input((4,))
    x = L.Dense(4, name="a")(inputs)
    outputs = L.Dense(4, name="b")(x)
    assert plan(outputs, inputs, ["a"]) == {"a": (None, None, "a")}
