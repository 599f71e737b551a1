"""Keras 3 models in: rebuilt as tf_keras, quantized, exported, as a tf_keras model would be."""

import json

import keras
import numpy as np
import pytest

import keras_qat
from keras_qat._keras import keras as tf_keras
from keras_qat.cli import main
from keras_qat.keras3 import as_tf_keras

L = keras.layers


def build_keras3_cnn():
    """The issue's model: Rescaling, Conv-BN-ReLU, depthwise, Add, GAP, Dropout, Dense-GELU.

    And a bilinear Resizing, whose Keras 3 config has arguments tf_keras lacks.
    """
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Rescaling(2.0, offset=-1.0, name="rescale")(inputs)
    x = L.Resizing(10, 10, name="resize")(x)
    x = L.Conv2D(32, 3, padding="same", use_bias=False, name="conv1")(x)
    x = L.ReLU(name="relu1")(L.BatchNormalization(momentum=0.9, name="bn1")(x))
    y = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = L.ReLU(name="relu2")(L.BatchNormalization(momentum=0.9, name="bn2")(y))
    x = L.Add(name="residual")([x, y])
    x = L.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dropout(0.2, name="drop")(x)
    x = L.Dense(32, activation="gelu", name="fc")(x)
    return keras.Model(inputs, L.Dense(10, name="logits")(x), name="k3cnn")


@pytest.fixture(scope="module")
def trained_keras3(digits):
    keras.utils.set_random_seed(0)
    model = build_keras3_cnn()
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(digits[0], digits[1], epochs=30, batch_size=64, verbose=0)
    return model


def test_the_rebuild_computes_what_keras3_computes(trained_keras3, digits):
    rebuilt = as_tf_keras(trained_keras3)
    assert isinstance(rebuilt, tf_keras.Model)
    assert [layer.name for layer in rebuilt.layers] == [
        layer.name for layer in trained_keras3.layers
    ]
    x = digits[2][:64]
    np.testing.assert_allclose(
        rebuilt.predict(x, verbose=0), trained_keras3.predict(x, verbose=0), atol=1e-5
    )


def test_api_create_apply_fit_export(trained_keras3, digits, tmp_path):
    x_train, y_train, x_test, y_test = digits
    config = tmp_path / "config.json"
    written = keras_qat.create_quant_retrain_config(config, trained_keras3)
    assert {"conv1", "dw", "conv2", "fc", "logits"} <= set(written)
    qat = keras_qat.apply_retrain_config(trained_keras3, config, x_train[:256])
    assert isinstance(qat, tf_keras.Model)
    qat.compile(tf_keras.optimizers.Adam(2e-4), tf_keras.losses.SparseCategoricalCrossentropy(True))
    qat.fit(x_train, y_train, epochs=1, batch_size=64, verbose=0)
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", x_train[:256])
    report = keras_qat.check_tflite(qat, path, x_test)
    assert report["agreement"] >= 0.99, report
    accuracy = np.mean(keras_qat.predict_tflite(path, x_test).argmax(1) == y_test)
    assert accuracy >= 0.9


def test_cli_takes_a_keras3_file(trained_keras3, digits, tmp_path, capsys):
    model_file = tmp_path / "k3.keras"
    trained_keras3.save(model_file)
    assert json.loads(__import__("zipfile").ZipFile(model_file).read("metadata.json"))[
        "keras_version"
    ].startswith("3.")
    config = tmp_path / "config.json"
    assert main(["create-config", str(model_file), "-o", str(config)]) == 0
    assert main(["validate", str(model_file), str(config)]) == 0
    assert "valid, 5 layer(s) enabled" in capsys.readouterr().out
    loaded = keras_qat.load_model(model_file)
    x = digits[2][:32]
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), trained_keras3.predict(x, verbose=0), atol=1e-5
    )


def test_operations_in_the_graph_translate():
    """MobileNetV3's hard sigmoid `ReLU(6)(x + 3) * (1/6)` and keras.ops calls."""
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 1, name="conv")(inputs)
    x = L.ReLU(6.0, name="hs_relu")(x + 3.0) * (1.0 / 6.0)
    x = L.Activation("hard_swish", name="hswish")(x)
    x = keras.ops.reshape(keras.ops.mean(x, axis=(1, 2)), (-1, 4))
    x = keras.ops.concatenate([x, keras.ops.relu6(x)], axis=-1)
    model = keras.Model(inputs, L.Dense(2, name="head")(x))
    samples = np.random.default_rng(0).normal(size=(4, 6, 6, 3)).astype("f4")
    rebuilt = as_tf_keras(model)
    np.testing.assert_allclose(rebuilt(samples), model(samples), atol=1e-5)


def test_refusals_name_the_layer_or_operation():
    inputs = keras.Input((4,))
    lora = L.Dense(3, name="lora_dense")
    lora(inputs)
    lora.enable_lora(2)
    with pytest.raises(keras_qat.UnsupportedModelError, match=r"'lora_dense'.*lora_rank"):
        as_tf_keras(keras.Model(inputs, lora(inputs)))
    odd = keras.Model(inputs, keras.ops.cumsum(inputs, axis=-1))
    with pytest.raises(keras_qat.UnsupportedModelError, match=r"Operation 'cumsum'.*Cumsum"):
        as_tf_keras(odd)

    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(keras_qat.UnsupportedModelError, match="subclassed Keras 3 model"):
        keras_qat.create_quant_retrain_config("unused.json", Net())


@pytest.mark.slow
@pytest.mark.parametrize(
    "family", ["MobileNetV2", "ResNet50", "EfficientNetB0", "ConvNeXtTiny", "MobileNetV3Small"]
)
def test_keras3_application_to_int8_tflite(family, tmp_path):
    from test_applications import int8_compute_fraction

    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, family)(
        input_shape=(64, 64, 3), weights=None, classes=10, classifier_activation=None
    )
    rng = np.random.default_rng(0)
    x = rng.random((64, 64, 64, 3)).astype(np.float32)
    y = rng.integers(0, 10, len(x))
    config = tmp_path / "config.json"
    keras_qat.create_quant_retrain_config(config, model)
    qat = keras_qat.apply_retrain_config(model, config, x[:32])
    qat.compile(tf_keras.optimizers.Adam(1e-4), tf_keras.losses.SparseCategoricalCrossentropy(True))
    qat.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0)
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", x)
    assert int8_compute_fraction(path) >= 0.95
