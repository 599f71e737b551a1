"""A SeparableConv2D's int8 tensor between its two ops, rounded in the QAT model as in the file."""

import numpy as np

import keras_qat
from keras_qat._keras import keras
from keras_qat.quantizers import QatWrapper, TrackedRangeQuantizer
from keras_qat.quantizers.introspection import weight_scales
from tests.reference import nudged, ulq, xnnpack_requantize


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


def test_inference_computes_both_ops_from_the_files_integer_sums(tmp_path):
    # A 3x3 depthwise op on 512 channels of levels 0 to 255 (a step that is
    # no power of two), its sums requantized onto the grid between; then a
    # pointwise op of 512 products of levels, the bias in whole steps. The
    # float32 convolutions of the values miss those integer sums.
    rng = np.random.default_rng(0)
    channels, clip_max = 512, 0.8293835
    x_levels = rng.integers(0, 256, (32, 3, 3, channels))
    dw_levels = rng.integers(-127, 128, (3, 3, channels, 1))
    dw_levels[0, 0] = 127  # every channel's largest level
    pw_levels = rng.integers(-127, 128, (1, 1, channels, 16))
    pw_levels[0, 0, 0] = 127
    inputs = keras.Input((3, 3, channels), name="x")
    layer = keras.layers.SeparableConv2D(16, 3, name="sep")
    model = keras.Model(inputs, keras.layers.Dense(4, name="head")(layer(inputs)))
    bias = rng.normal(0, 2, 16).astype("f4")
    layer.set_weights([dw_levels * np.float32(0.0123), pw_levels * np.float32(0.0071), bias])
    x = (x_levels * nudged(0.0, clip_max, 8)[2]).astype("f4")
    qat = keras_qat.apply_retrain_config(model, {"sep": {}, "head": {}}, x)
    quantizer = qat.get_layer("sep_input_quant")
    quantizer.quantizer.assign_clip_range(quantizer.quantizer_vars, 0.0, clip_max)
    wrapper = qat.get_layer("sep")
    low, high = -300.0, 310.0  # the tensor between, 8 bits, zero point not 0
    TrackedRangeQuantizer.assign_range(wrapper.intermediate_vars, low, high)
    in_step = quantizer.input_step().numpy()
    dw_step = in_step * wrapper._kernel_unit(0).numpy()
    dw_sums = np.einsum("nhwc,hwc->nc", x_levels, dw_levels[..., 0])[:, None, None, :]
    between_grid = TrackedRangeQuantizer.grid(wrapper.intermediate_vars)
    between = xnnpack_requantize(dw_sums, dw_step / between_grid[0].numpy(), low, high, 8)
    step = wrapper.accumulator_step().numpy()
    between_levels = np.round(between / between_grid[0].numpy()).astype(np.int64)
    sums = between_levels @ pw_levels[0, 0] + np.round(bias / step).astype(np.int64)
    rounded = quantizer(x)
    got = wrapper(rounded).numpy()
    np.testing.assert_array_equal(got, sums.astype("f4") * step)
    # The layer computed in float: its values miss the integer sums.
    assert np.any(wrapper._separable(rounded, inference_weights(wrapper), False).numpy() != got)
    path = keras_qat.export_tflite(qat, tmp_path / "sep.tflite", x)
    np.testing.assert_allclose(
        keras_qat.predict_tflite(path, x), qat.predict(x, verbose=0), rtol=0, atol=1e-5
    )


def inference_weights(wrapper):
    """The wrapper's quantized weights, as inference uses them."""
    return [q(w, False, v) for w, q, v in wrapper._weight_vars]
