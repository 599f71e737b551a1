"""Every quantizable layer type through TFMOT's wrapper, and saving/loading."""

import numpy as np
import pytest
import reference
import tensorflow as tf

import keras_qat
from keras_qat._keras import keras, tfmot
from keras_qat.config import WeightQuantConfig
from keras_qat.layer_table import layer_spec
from keras_qat.quantizers import InputQuantizeLayer, UlqQuantizer, WeightQuantizeConfig
from keras_qat.quantizers.quantize_config import initialize_weight_scales

L = keras.layers

# (layer, input shape)
LAYERS = {
    "Conv1D": (lambda: L.Conv1D(3, 2), (5, 2)),
    "Conv2D": (lambda: L.Conv2D(3, 2), (4, 4, 2)),
    "DepthwiseConv2D": (lambda: L.DepthwiseConv2D(2, depth_multiplier=2), (4, 4, 3)),
    "SeparableConv2D": (lambda: L.SeparableConv2D(3, 2, depth_multiplier=2), (4, 4, 2)),
    "Conv2DTranspose": (lambda: L.Conv2DTranspose(3, 2), (4, 4, 2)),
    "Dense": (lambda: L.Dense(3), (5,)),
}


def reference_output(layer, x, bits, channel_wise):
    """Runs a float copy of `layer` whose kernels hold the reference ARQ values."""
    values = [w.numpy() for w in layer.weights]
    for attr, layout in layer_spec(layer).kernels:
        index = [w is getattr(layer, attr) for w in layer.weights].index(True)
        values[index] = reference.arq(values[index], bits, channel_wise, layout)
    float_layer = type(layer).from_config(layer.get_config())
    float_layer(x)
    float_layer.set_weights(values)
    return float_layer(x).numpy()


@pytest.mark.parametrize("bits", [8, 4], ids=["INT8", "INT4"])
@pytest.mark.parametrize("channel_wise", [True, False], ids=["per-channel", "per-tensor"])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_wrapped_layer_matches_reference(kind, channel_wise, bits):
    make, shape = LAYERS[kind]
    layer = make()
    x = tf.constant(np.random.default_rng(6).normal(size=(2, *shape)).astype(np.float32))
    layer(x)
    # Random kernels with per-channel magnitudes, so a wrong channel axis shows.
    for attr, _ in layer_spec(layer).kernels:
        kernel = getattr(layer, attr)
        scaled = np.random.default_rng(7).normal(size=kernel.shape)
        kernel.assign((scaled * np.linspace(0.1, 3, kernel.shape[-1])).astype(np.float32))
    config = WeightQuantizeConfig.for_layer(
        layer, WeightQuantConfig(channel_wise, dst_type=f"INT{bits}")
    )
    expected = reference_output(layer, x, bits, channel_wise)
    wrapper = tfmot.quantization.keras.QuantizeWrapperV2(layer, config)
    np.testing.assert_allclose(wrapper(x).numpy(), expected, atol=1e-4)


def test_config_round_trip():
    kernels = (("depthwise_kernel", "depthwise"),)
    config = WeightQuantizeConfig(kernels, "ulq_quantize", False, "INT4")
    assert WeightQuantizeConfig.from_config(config.get_config()) == config
    assert config != WeightQuantizeConfig((("kernel", "last"),))


def qat_model():
    inputs = keras.Input((6, 6, 2))
    x = InputQuantizeLayer(UlqQuantizer("INT8"), name="conv_input_quant")(inputs)
    conv = L.Conv2D(4, 3, name="conv")
    conv_config = WeightQuantizeConfig.for_layer(conv, WeightQuantConfig(True))
    x = tfmot.quantization.keras.QuantizeWrapperV2(conv, conv_config, name="quant_conv")(x)
    x = L.ReLU()(x)
    x = InputQuantizeLayer(UlqQuantizer("INT4", fixed_min=True), name="dw_input_quant")(x)
    dw = L.DepthwiseConv2D(3)
    dw_config = WeightQuantizeConfig.for_layer(dw, WeightQuantConfig(True, "ulq_quantize", "INT4"))
    dw_wrapper = tfmot.quantization.keras.QuantizeWrapperV2(dw, dw_config, name="quant_dw")
    x = dw_wrapper(x)
    initialize_weight_scales(dw_wrapper)
    return keras.Model(inputs, L.Flatten()(x))


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_save_and_load_under_quantize_scope(tmp_path, suffix):
    model = qat_model()
    x = np.random.default_rng(8).normal(size=(4, 6, 6, 2)).astype(np.float32)
    model.compile("adam", "mse")
    before = [w.numpy() for w in model.trainable_weights]
    model.fit(x, np.zeros((4, 16), np.float32), epochs=2, verbose=0)
    for old, new in zip(before, model.trainable_weights, strict=True):
        assert not np.array_equal(old, new.numpy()), new.name  # everything trains
    path = tmp_path / f"qat{suffix}"
    model.save(path)
    with keras_qat.quantize_scope():
        loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    for saved, restored in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(saved.numpy(), restored.numpy())
