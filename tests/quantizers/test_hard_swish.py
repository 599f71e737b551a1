"""LiteRT's int8 HARD_SWISH, computed by the QAT model for a tensor times its hard sigmoid."""

import numpy as np
import pytest
import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.quantizers.hard_swish import hard_sigmoid_input, hard_swish_requantize
from keras_qat.quantizers.requantize import op_grid
from tests import reference

L = keras.layers

# (input step, output clip, output bits). The kernel's hard-sigmoid
# multiplier has exponent 4 (left shifts), 5 (levels far past +-3
# saturate), 0, -4 (a right shift) and 1 (onto INT4); its output multiplier
# exponent is 0 in the fourth case (the output step just above the input
# step / 128). The third is a digits model's first hard swish.
CASES = [
    (0.1, (-0.375, 12.0), 8),
    (0.25, (-0.4, 30.0), 8),
    (0.008030956611037254, (0.0, 2.149431), 8),
    (0.0005, (-0.0003, 0.0003 + 255 * 0.0005 / 128 * 1.5), 8),
    (0.0137, (-0.375, 2.68), 4),
]


@pytest.mark.parametrize(("in_scale", "clip", "bits"), CASES)
def test_hard_swish_requantize_matches_litert_kernel(in_scale, clip, bits):
    levels = np.arange(-255, 256)
    grid = op_grid(*clip, bits)
    got = hard_swish_requantize(tf.constant(levels, tf.float32), np.float32(in_scale), grid, bits)
    want = reference.litert_hard_swish(levels, in_scale, *clip, bits)
    np.testing.assert_allclose(got.numpy(), want, rtol=0, atol=1e-6 * clip[1])
    # The fake-quant of the float hard swish rounds a level or two elsewhere.
    x = levels * np.float32(in_scale)
    rounded = reference.ulq(x * np.clip(x + 3, 0, 6) / 6, *np.float32(clip), bits)
    assert np.any(np.abs(rounded - want) > grid[0].numpy() / 2)


def hard_swish_file(in_clip, out_clip):
    """A .tflite of one int8 HARD_SWISH between fake-quant ranges, as an interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    @tf.function(input_signature=[tf.TensorSpec([1, 256], tf.float32)])
    def hard_swish(x):
        x = tf.quantization.fake_quant_with_min_max_args(x, *in_clip)
        y = x * tf.nn.relu6(x + 3.0) * (1.0 / 6.0)
        return tf.quantization.fake_quant_with_min_max_args(y, *out_clip)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [hard_swish.get_concrete_function()], hard_swish
    )
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    interpreter = Interpreter(
        model_content=converter.convert(), experimental_preserve_all_tensors=True
    )
    interpreter.allocate_tensors()
    return interpreter


@pytest.mark.parametrize(("in_clip", "out_clip"), [((-1.3, 2.1), (-0.4, 1.5)), ((-9, 12), (-1, 9))])
def test_the_reference_is_what_litert_computes(in_clip, out_clip):
    interpreter = hard_swish_file(in_clip, out_clip)
    (op,) = [op for op in interpreter._get_ops_details() if op["op_name"] == "HARD_SWISH"]
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    (in_scale, in_zero), (out_scale, out_zero) = (
        tensors[op[key][0]]["quantization"] for key in ("inputs", "outputs")
    )
    raw = np.arange(-128, 128)
    interpreter.set_tensor(0, ((raw - in_zero) * in_scale).astype(np.float32)[None])
    interpreter.invoke()
    written = interpreter.get_tensor(op["outputs"][0])[0].astype(np.int64)
    np.testing.assert_array_equal(interpreter.get_tensor(op["inputs"][0])[0], raw)
    # The reference on the file's output grid (levels 0 to 255, zero point out_zero + 128).
    out_clip = (-(out_zero + 128) * out_scale, (127 - out_zero) * out_scale)
    want = reference.litert_hard_swish(raw - in_zero, in_scale, *out_clip, 8)
    np.testing.assert_array_equal(np.rint((want - out_clip[0]) / out_scale) - 128, written)


def test_hard_sigmoid_input_finds_the_forms_the_converter_fuses():
    x = keras.Input((4,))
    fused = {
        "multiply": L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0),  # tf_keras.applications' MobileNetV3
        "divide": L.ReLU(6.0)(x + 3.0) / 6.0,
        "tf.nn.relu6": tf.nn.relu6(3.0 + x) * (1.0 / 6.0),
    }
    for form, tensor in fused.items():
        assert hard_sigmoid_input(tensor) is x, form
    others = {
        "slope": L.ReLU(6.0, negative_slope=0.1)(x + 3.0) / 6.0,
        "plain relu": L.ReLU()(x + 3.0) / 6.0,
        "shift 2": L.ReLU(6.0)(x + 2.0) / 6.0,
        "scale 0.2": L.ReLU(6.0)(x + 3.0) * 0.2,
        "two tensors": L.ReLU(6.0)(x + x) / 6.0,
    }
    for form, tensor in others.items():
        assert hard_sigmoid_input(tensor) is None, form
