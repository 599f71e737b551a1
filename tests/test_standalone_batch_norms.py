"""BatchNormalizations that fold into no layer become 1x1 depthwise convolutions at the door."""

import numpy as np
import pytest

import keras_qat
from keras_qat._keras import keras
from keras_qat.graph.model_check import checked_model
from keras_qat.layer_table import source_kind

L = keras.layers


def dense_net_like():
    """DenseNet's BN after a Concatenate, beside BNs that stay what they are."""
    inputs = keras.Input((6, 6, 2), name="image")
    x = L.BatchNormalization(name="input_bn")(inputs)  # before any quantizable layer: float
    x = L.Conv2D(4, 3, padding="same", name="conv")(x)
    x = L.BatchNormalization(name="conv_bn")(x)  # folds into "conv"
    x = L.ReLU()(x)
    joined = L.Concatenate(name="cat")([x, L.Conv2D(4, 1, activation="relu", name="grow")(x)])
    x = L.ReLU()(L.BatchNormalization(name="cat_bn")(joined))
    x = L.Conv2D(4, 1, name="after")(x)
    flat = L.GlobalAveragePooling2D()(x)
    flat = L.BatchNormalization(name="flat_bn")(flat)  # 2-D: spelled out through reshapes
    return keras.Model(inputs, L.Dense(3, name="logits")(flat))


def trained_statistics(model):
    """Non-trivial BatchNormalization weights, so that the rebuild check means something."""
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, L.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 2.0, gamma.shape),
                    rng.normal(size=beta.shape),
                    rng.normal(size=mean.shape),
                    rng.uniform(0.2, 3.0, variance.shape),
                ]
            )
    return model


def test_a_standalone_batch_norm_becomes_a_depthwise_convolution():
    model = trained_statistics(dense_net_like())
    rebuilt = checked_model(model)
    kinds = {layer.name: type(layer).__name__ for layer in rebuilt.layers}
    for name in ("cat_bn", "flat_bn"):
        assert kinds[name] == "DepthwiseConv2D"
        assert source_kind(rebuilt.get_layer(name)) == "BatchNormalization"
    for name in ("input_bn", "conv_bn"):
        assert kinds[name] == "BatchNormalization"
    assert isinstance(model.get_layer("cat_bn"), L.BatchNormalization)  # the user's model
    x = np.random.default_rng(1).normal(size=(4, 6, 6, 2)).astype("f4")
    np.testing.assert_allclose(rebuilt(x).numpy(), model(x).numpy(), rtol=1e-5, atol=1e-5)
    bn = model.get_layer("cat_bn")
    gamma, beta, mean, variance = bn.get_weights()
    factor = gamma / np.sqrt(variance + bn.epsilon)
    kernel, bias = rebuilt.get_layer("cat_bn").get_weights()
    np.testing.assert_allclose(kernel[0, 0, :, 0], factor, rtol=1e-6)
    np.testing.assert_allclose(bias, beta - mean * factor, rtol=1e-5, atol=1e-6)


def test_its_config_entry_goes_by_the_batch_norms_name_and_type(tmp_path):
    model = trained_statistics(dense_net_like())
    config = keras_qat.create_quant_retrain_config(tmp_path / "c.json", model)
    assert config["cat_bn"]["retrain_weight_config"]["channel_wise"] is True
    assert "conv_bn" not in config and "input_bn" not in config
    definition = {"skip_layer_types": ["BatchNormalization"]}
    config = keras_qat.create_quant_retrain_config(tmp_path / "d.json", model, definition)
    assert config["cat_bn"]["retrain_enable"] is False
    assert config["conv"]["retrain_enable"] is True
    int4 = {"dst_type": "INT4"}
    definition = {
        "retrain_data_quant_config": int4,
        "retrain_weight_quant_config": int4,
        "override_layer_types": {
            "BatchNormalization": {
                "retrain_data_quant_config": {"dst_type": "INT8"},
                "retrain_weight_quant_config": {"dst_type": "INT8"},
            }
        },
    }
    config = keras_qat.create_quant_retrain_config(tmp_path / "e.json", model, definition)
    assert config["cat_bn"]["retrain_weight_config"]["dst_type"] == "INT8"
    assert config["conv"]["retrain_weight_config"]["dst_type"] == "INT4"


def test_one_reading_a_pooling_that_a_concatenation_joins_is_spelled_out_too():
    # DenseNet's first BatchNormalization after a transition; its input
    # quantizer follows the concatenation's grid (tests/test_fidelity.py's
    # dense_block exports it exactly).
    inputs = keras.Input((8, 8, 2))
    x = L.AveragePooling2D(name="pool")(L.Conv2D(4, 1, name="conv")(inputs))
    grown = L.Conv2D(4, 1, name="grow")(L.ReLU()(L.BatchNormalization(name="after_pool")(x)))
    joined = L.Concatenate(name="cat")([x, grown])
    model = keras.Model(inputs, L.BatchNormalization(name="after_cat")(joined))
    kinds = {layer.name: type(layer).__name__ for layer in checked_model(model).layers}
    assert kinds["after_pool"] == kinds["after_cat"] == "DepthwiseConv2D"


@pytest.mark.slow  # ~12 s: trains and converts
def test_equal_int4_kernels_sharing_a_buffer_export_as_trained(tmp_path):
    # At INT4 per channel, a spelled-out BatchNormalization's kernel is +-7 in
    # every channel: two of equal width have equal integers, which the
    # converter stores once. Pinning one op's weights used to rewrite the
    # buffer under the other (DenseNet121 W4A4: agreement 0.18).
    inputs = keras.Input((6, 6, 2), name="image")
    x = inputs
    for block in ("a", "b"):
        x = L.Conv2D(4, 1, activation="relu", name=f"{block}_conv")(x)
        joined = L.Concatenate(name=f"{block}_cat")([x, L.Conv2D(4, 1, name=f"{block}_grow")(x)])
        x = L.ReLU()(L.BatchNormalization(name=f"{block}_bn")(joined))
    outputs = L.Dense(3, name="head")(L.GlobalAveragePooling2D()(x))
    model = trained_statistics(keras.Model(inputs, outputs))
    int4 = {"retrain_weight_config": {"dst_type": "INT4"}}
    config = {
        name: int4 if name.endswith("_bn") else {}
        for name in ("a_conv", "a_grow", "a_bn", "b_conv", "b_grow", "b_bn", "head")
    }
    x = np.random.default_rng(2).normal(size=(64, 6, 6, 2)).astype("f4")
    qat = keras_qat.apply_retrain_config(model, config, x)
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", x)
    report = keras_qat.check_tflite(qat, path, x, measure="steps")
    assert report["outputs"]["head"]["max_error_steps"] < 0.01, report


@pytest.mark.parametrize("kind", ["features", "sequence", "any_length"])
def test_one_on_features_or_a_sequence_exports_as_trained(tmp_path, kind):
    # A head's BatchNormalization after its global pooling (2-D), or one on a
    # sequence's features (3-D, of a known length or of any): one row of an
    # image for the depthwise convolution. Left a BatchNormalization, the
    # file ran an int8 MUL and ADD on representative ranges (here 2 output
    # steps off, 78 % and 86 % of the logits within one; of any length, 2
    # steps off on a small Conv1D model, 82 % of its logits exact).
    if kind == "features":
        inputs = keras.Input((6, 6, 2), name="image")
        x = L.GlobalAveragePooling2D()(L.Conv2D(4, 3, activation="relu", name="conv")(inputs))
    else:
        inputs = keras.Input((5 if kind == "sequence" else None, 3), name="sequence")
        x = L.Dense(4, activation="relu", name="conv")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    pooled = L.GlobalAveragePooling1D()(x) if kind == "any_length" else L.Flatten()(x)
    model = trained_statistics(keras.Model(inputs, L.Dense(3, name="head")(pooled)))
    assert type(checked_model(model).get_layer("bn")).__name__ == "DepthwiseConv2D"
    shape = (5, 3) if kind == "any_length" else inputs.shape[1:]
    data = np.random.default_rng(3).normal(size=(64, *shape)).astype("f4")
    qat = keras_qat.apply_retrain_config(model, {name: {} for name in ("conv", "bn", "head")}, data)
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", data)
    report = keras_qat.check_tflite(qat, path, data, measure="steps")
    assert report["outputs"]["head"]["max_error_steps"] < 0.01, report


def test_one_on_features_that_is_a_model_output_stays_and_keeps_its_name():
    # Spelled out, it would end in a Reshape, and loss dicts keyed by the
    # output's name would break.
    inputs = keras.Input((6, 6, 2))
    features = L.GlobalAveragePooling2D()(L.Conv2D(4, 3, name="conv")(inputs))
    model = keras.Model(inputs, L.BatchNormalization(name="embedding")(features))
    rebuilt = checked_model(model)
    assert rebuilt.output_names == ["embedding"]
    assert type(rebuilt.get_layer("embedding")) is L.BatchNormalization
