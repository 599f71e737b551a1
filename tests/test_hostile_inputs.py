"""Property-based: random malformed configs and random small models never get past validation
unexplained, never change the model and never leave a file behind."""

import json
import os
import re

import numpy as np
from conftest import all_types_model
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import keras_qat
from keras_qat._keras import keras
from keras_qat.layer_table import layer_spec

L = keras.layers
MODEL = all_types_model()
LAYER_NAMES = ["conv", "depthwise", "separable", "transpose", "avgpool", "conv1d", "dense"]
KEYS = [
    "retrain_enable",
    "retrain_data_config",
    "retrain_weight_config",
    "algo",
    "clip_max",
    "clip_min",
    "fixed_min",
    "dst_type",
    "channel_wise",
    "weights_retrain_algo",
    "batch_num",
    "version",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["INT8", "INT4", "INT2", "arq_retrain", "ulq_quantize", "", "true"]),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=4),
    ),
    max_leaves=8,
)
LAYER_ENTRIES = st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=4)
CONFIGS = st.dictionaries(
    st.one_of(st.sampled_from([*LAYER_NAMES, "version", "batch_num"]), st.text(max_size=6)),
    st.one_of(LAYER_ENTRIES, VALUES),
    max_size=5,
)
SNAPSHOT = [w.copy() for w in MODEL.get_weights()]


def assert_model_untouched():
    after = MODEL.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(SNAPSHOT, after, strict=True))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(CONFIGS)
def test_random_configs_are_accepted_or_explained(config):
    try:
        keras_qat.read_retrain_config(config, MODEL)
    except keras_qat.ConfigError as e:
        assert str(e).strip()
    assert_model_untouched()


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40).map(lambda s: "{" + s))
def test_broken_json_files_are_explained(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("json") / "config.json"
    path.write_bytes(text.encode())
    try:
        keras_qat.read_retrain_config(str(path), MODEL)
    except keras_qat.ConfigError as e:
        # Each message names the file; a syntax error also says where in it.
        assert all(message.startswith(f"{path}: ") for message in e.errors), e.errors
        if "invalid JSON" in str(e):
            assert re.search(r"at line \d+, column \d+", str(e)), e.errors
    assert path.read_bytes() == text.encode()


@settings(max_examples=40, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["batch_num", "skip_layers", "skip_layer_types", "override_layer_configs", "junk"]
        ),
        VALUES,
        max_size=3,
    )
)
def test_random_definitions_write_nothing_or_a_valid_config(tmp_path_factory, definition):
    out = tmp_path_factory.mktemp("out")
    definition_path = out / "definition.json"
    definition_path.write_text(json.dumps(definition))
    config_path = out / "config.json"
    try:
        keras_qat.create_quant_retrain_config(str(config_path), MODEL, str(definition_path))
    except keras_qat.ConfigError as e:
        assert str(e).strip()
        assert sorted(os.listdir(out)) == ["definition.json"]
    else:
        keras_qat.read_retrain_config(str(config_path), MODEL)  # what it wrote is valid
    assert_model_untouched()


LAYER_MAKERS = [
    lambda n: L.Conv2D(n, 3, padding="same"),
    lambda n: L.DepthwiseConv2D(3, padding="same"),
    lambda n: L.SeparableConv2D(n, 3, padding="same"),
    lambda n: L.Conv2DTranspose(n, 3, padding="same"),
    lambda n: L.ReLU(),
    lambda n: L.BatchNormalization(),
    lambda n: L.AveragePooling2D(padding="same"),
    lambda n: L.MaxPooling2D(padding="same"),
]


@settings(max_examples=10, deadline=None)
@given(
    st.lists(st.integers(0, len(LAYER_MAKERS) - 1), min_size=1, max_size=5),
    st.integers(1, 4),
    st.booleans(),
    st.booleans(),
)
def test_random_small_models_quantize_or_explain(choices, width, add_residual, name_all_layers):
    inputs = keras.Input((6, 6, width))
    x = inputs
    for choice in choices:
        x = LAYER_MAKERS[choice](width)(x)
    if add_residual and x.shape == inputs.shape:
        x = L.Add()([x, inputs])
    model = keras.Model(inputs, L.Dense(3)(L.Flatten()(x)))
    before = [w.copy() for w in model.get_weights()]
    data = np.random.default_rng(0).normal(size=(8, 6, 6, width)).astype(np.float32)
    named = [
        layer for layer in model.layers[1:] if name_all_layers or layer_spec(layer) is not None
    ]
    config = {layer.name: {} for layer in named}
    try:
        qat = keras_qat.apply_retrain_config(model, config, data)
    except (keras_qat.ConfigError, keras_qat.UnsupportedModelError) as e:
        assert str(e).strip()
    else:
        assert qat.predict(data, verbose=0).shape == (8, 3)
    after = model.get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
