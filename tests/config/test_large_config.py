"""A config for a model with 1 000 quantizable layers is written and validated whole."""

import json

import pytest

import keras_qat
from keras_qat._keras import keras
from keras_qat.graph.recursion import graph_recursion_room


@pytest.mark.slow  # ~20 s: builds and validates a 1 000-layer model
def test_thousand_layer_config(tmp_path):
    with graph_recursion_room(layers=1000):  # tf_keras recurses once per layer to build it
        inputs = keras.Input((4,))
        x = inputs
        for index in range(1000):
            x = keras.layers.Dense(4, name=f"dense_{index}")(x)
        model = keras.Model(inputs, x)
    path = tmp_path / "config.json"
    keras_qat.create_quant_retrain_config(str(path), model)
    document = json.loads(path.read_text())
    assert len(document) == 1000 + 2  # version, batch_num
    document["dense_999"]["retrain_weight_config"]["chanel_wise"] = True
    config = keras_qat.read_retrain_config(
        {k: v for k, v in document.items() if k != "dense_999"}, model
    )
    assert len(config.enabled_layers) == 999
    with pytest.raises(keras_qat.ConfigError, match="Layer 'dense_999': unknown key"):
        keras_qat.read_retrain_config(document, model)
