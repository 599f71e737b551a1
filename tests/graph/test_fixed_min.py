import pytest

from keras_qat._keras import keras
from keras_qat.graph.fixed_min import FixedMinResolver

L = keras.layers


def resolve(build):
    """Builds `x -> build(x) -> Dense('target')` and resolves the target's fixed_min."""
    inputs = keras.Input((4, 4, 2))
    target = L.Conv2D(2, 1, name="target")
    model = keras.Model(inputs, target(build(inputs)))
    return FixedMinResolver(model).input_is_non_negative(target)


CASES = [
    ("model-input", lambda x: x, False),
    ("relu-layer", lambda x: L.ReLU()(x), True),
    ("relu6", lambda x: L.ReLU(max_value=6.0)(x), True),
    ("leaky-relu-layer", lambda x: L.ReLU(negative_slope=0.1)(x), False),
    ("activation-relu", lambda x: L.Activation("relu")(x), True),
    ("activation-sigmoid", lambda x: L.Activation("sigmoid")(x), True),
    ("activation-tanh", lambda x: L.Activation("tanh")(x), False),
    ("conv-with-relu", lambda x: L.Conv2D(2, 1, activation="relu")(x), True),
    ("conv-linear", lambda x: L.Conv2D(2, 1)(x), False),
    ("leakyrelu", lambda x: L.LeakyReLU()(x), False),
    ("relu-maxpool-dropout-pad", lambda x: L.ZeroPadding2D()(L.Dropout(0.1)(
        L.MaxPooling2D(padding="same")(L.ReLU()(x)))), True),
    ("relu-then-batchnorm", lambda x: L.BatchNormalization()(L.ReLU()(x)), False),
    ("concat-both-relu", lambda x: L.Concatenate()([L.ReLU()(x), L.ReLU()(x)]), True),
    ("concat-one-signed", lambda x: L.Concatenate()([L.ReLU()(x), x]), False),
    ("add-both-relu", lambda x: L.Add()([L.ReLU()(x), L.ReLU()(x)]), True),
    ("maximum-one-relu", lambda x: L.Maximum()([L.ReLU()(x), x]), True),
    ("subtract", lambda x: L.Subtract()([L.ReLU()(x), L.ReLU()(x)]), False),
]  # fmt: skip


@pytest.mark.parametrize(("build", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_resolution(build, expected):
    assert resolve(build) is expected


def test_shared_layer_needs_every_call_site_non_negative():
    inputs = keras.Input((4,))
    shared = L.Dense(4, name="shared")
    a = shared(L.ReLU()(inputs))
    b = shared(inputs)
    model = keras.Model(inputs, L.Add()([a, b]))
    assert FixedMinResolver(model).input_is_non_negative(shared) is False
    model_a = keras.Model(inputs, a)
    assert FixedMinResolver(model_a).input_is_non_negative(shared) is True


def test_unbuilt_sequential_uses_layer_order():
    model = keras.Sequential([L.Dense(4), L.ReLU(), L.Dense(2, name="d2"), L.Dense(2, name="d3")])
    resolver = FixedMinResolver(model)
    assert resolver.input_is_non_negative(model.get_layer("d2")) is True
    assert resolver.input_is_non_negative(model.get_layer("d3")) is False
    assert resolver.input_is_non_negative(model.layers[0]) is False


def test_resolution_crosses_nested_model_boundaries():
    inner_in = keras.Input((4,))
    inner_first = L.Dense(4, name="inner_first")
    inner = keras.Model(inner_in, L.ReLU()(inner_first(inner_in)), name="inner")
    inputs = keras.Input((4,))
    after_inner = L.Dense(2, name="after_inner")
    relu_in = L.ReLU()(inputs)
    model = keras.Model(inputs, after_inner(inner(relu_in)))
    resolver = FixedMinResolver(model)
    assert resolver.input_is_non_negative(after_inner) is True  # inner ends in a ReLU
    assert resolver.input_is_non_negative(inner_first) is True  # fed a ReLU from outside
    signed = keras.Model(inputs, inner(inputs))
    assert FixedMinResolver(signed).input_is_non_negative(inner_first) is False
