"""A SeparableConv2D's int8 tensor between its two ops, rounded in the QAT model as in the file."""

import numpy as np

import keras_qat
from keras_qat._keras import keras
from keras_qat.quantizers import QatWrapper, TrackedRangeQuantizer
from keras_qat.quantizers.introspection import weight_scales
from tests.reference import ulq


def test_the_tensor_between_the_two_ops_is_rounded_and_the_bias_on_its_step():
    # 1x1 kernels: the depthwise op scales each channel, the pointwise one mixes them.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((3, 3, 2), name="x")
    layer = keras.layers.SeparableConv2D(3, 1, bias_initializer="random_normal", name="sep")
    model = keras.Model(inputs, layer(inputs))
    x = np.random.default_rng(0).normal(size=(16, 3, 3, 2)).astype("f4")
    qat = keras_qat.apply_retrain_config(model, {"sep": {}}, x)
    wrapper = qat.get_layer("sep")
    assert isinstance(wrapper, QatWrapper)
    # Calibrated on the float model's depthwise output.
    report = keras_qat.quant_report(qat)["sep"]
    float_between = x * layer.depthwise_kernel.numpy()[0, 0, :, 0]
    assert report["intermediate_range_min"] == min(float(float_between.min()), 0.0)
    assert report["intermediate_range_max"] == max(float(float_between.max()), 0.0)
    assert "scale_i" in keras_qat.quant_record(qat)["sep"]
    # A narrower range than the data: values at and beyond its bounds.
    low, high = -0.5, 0.75
    TrackedRangeQuantizer.assign_range(wrapper.intermediate_vars, low, high)

    rounded_input = keras.Model(qat.inputs, wrapper.input)(x).numpy()
    depthwise, pointwise = (q(w, False, v).numpy() for w, q, v in wrapper._weight_vars[:2])
    between = ulq(rounded_input * depthwise[0, 0, :, 0], low, high, 8)
    assert np.any(rounded_input * depthwise[0, 0, :, 0] > high)
    # The bias on the step of the tensor between times the pointwise kernel's.
    step = (high - low) / 255 * weight_scales(wrapper)["pointwise_kernel"]
    bias = wrapper.layer.bias.numpy()
    summed = between @ pointwise[0, 0] + np.round(bias / step) * step
    # A model output: rounded on its tracked range too.
    want = ulq(summed, report["output_range_min"], report["output_range_max"], 8)
    np.testing.assert_allclose(qat(x).numpy(), want, atol=1e-6)
