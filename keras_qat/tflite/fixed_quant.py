"""The export copy's activation fake-quants: fixed ranges the converter reads as the op does.

In the copy the TFLite converter is given, every activation range is a
number. The converter nudges a fake-quant's bounds in float64, the op in
float32; where the zero point is a tie (any symmetric range at 8 bits, e.g.
a hand-written [-1, 1]: 127.5) they round it to neighbouring integers, which
puts the file's int8 range one step away from the op's, and values in the
outer step apart. The copy's ops therefore get `unambiguous_bounds`:
their zero point is an integer, and on them the op computes exactly what it
computes on the clip range.
"""

import numpy as np
import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.plain_call import PlainCall
from keras_qat.quantizers import ranges
from keras_qat.quantizers.introspection import clip_range, output_range_vars


def _near(value, ulps=2):
    """`value` (float32), then its neighbours up to `ulps` away, nearest first."""
    yield value
    up = down = value
    for _ in range(ulps):
        up = np.nextafter(up, np.float32(np.inf))
        down = np.nextafter(down, np.float32(-np.inf))
        yield up
        yield down


def unambiguous_bounds(clip_min, clip_max):
    """Bounds with the 8-bit op's grid for [clip_min, clip_max] and no tie in their zero point.

    The lower one is the op's nudged lower bound, a whole number of steps
    below 0 (within an ulp of the upper one), so float32 and float64
    nudging agree on the zero point. The pair's exact difference is the float32 width
    `clip_max - clip_min`, from which the op derives its step and its
    inverse: on these bounds it rounds every value as it does on the clip
    range, and the converter, which subtracts them in float64, takes the
    same step. (Should no such pair keep the zero point, the nudged bounds
    are returned: the same zero point, the step within an ulp.)

    Args:
        clip_min: Lower bound, a number.
        clip_max: Upper bound, a number above `clip_min`.

    Returns:
        `(low, high)` as Python floats (float32 values).
    """
    grid = ranges.op_nudge(clip_min, clip_max, 8)
    width = np.float32(clip_max) - np.float32(clip_min)
    for high in _near(np.float32(grid.low) + width):
        # Smaller than both in magnitude, `high - width` is a float32 number:
        # the pair's float64 difference is `width` itself. (A float32
        # difference that only rounds to `width` gave the file a step an ulp
        # off the op's: ResNet50 at W4A4, a logit 4e-6 from a tie.)
        low = np.float32(np.float64(high) - np.float64(width))
        exact = np.float64(high) - np.float64(low) == np.float64(width)
        if exact and ranges.op_nudge(low, high, 8).zero_point == grid.zero_point:
            return float(low), float(high)
    return grid.low, grid.high


def settle_tracked_ranges(wrapper):
    """Moves the tracked ranges of an export copy's wrapper onto `unambiguous_bounds`.

    The converter takes a fake-quant's step as `(max - min) / 255` in
    float64, the op as `float32(max - min) / 255`: on a tracked range (two
    arbitrary float32 numbers) the file's step was an ulp off the QAT
    model's for a good share of tensors, enough to move a requantized sum
    sitting within 1e-7 of a .5 (one of ResNet50's residual branches, 2
    steps after its Add). On these bounds the width is a float32 number
    and both take the same step.

    Args:
        wrapper: A `QatWrapper` of the copy (its variables are its own).
    """
    for variables in (output_range_vars(wrapper), wrapper.intermediate_vars):
        if variables is not None:
            low, high = unambiguous_bounds(
                float(variables["range_min"]), float(variables["range_max"])
            )
            variables["range_min"].assign(low)
            variables["range_max"].assign(high)


def fixed_fake_quant(inputs, clip_min, clip_max):
    """Fake-quantizes `inputs` to 8 bits over [clip_min, clip_max], on `unambiguous_bounds`.

    Args:
        inputs: Float tensor.
        clip_min: Lower bound, a number.
        clip_max: Upper bound, a number above `clip_min`.

    Returns:
        The fake-quantized tensor: `fake_quant_with_min_max_vars`' numbers
        for the same bounds.
    """
    low, high = unambiguous_bounds(clip_min, clip_max)
    # The _vars op, as in training: _args rounds with 1 / step, not its own inverse.
    return tf.quantization.fake_quant_with_min_max_vars(
        inputs, tf.constant(low), tf.constant(high), num_bits=8
    )


class FixedInputQuantizer(PlainCall, keras.layers.Layer):
    """An `InputQuantizeLayer` of the export copy, its range frozen as numbers.

    INT8: the 8-bit fake-quant over the clip range. INT4 becomes its int8
    carrier (TFLite has no 4-bit activations), with the same numbers: the
    input is capped at the 4-bit grid's top hi (an int8 MINIMUM in the
    .tflite), then fake-quantized to 8 bits over [lo, lo + 255 * s4], s4 the
    4-bit step, which clips below lo. Every 4-bit level is an 8-bit level of
    that grid and nothing beyond hi survives, so the int8 model reproduces
    the 4-bit one (up to the float32 rounding of the step, which can move a
    value lying on a rounding boundary). A lower clip is left out on purpose:
    at lo = 0 it would become a rescaling RELU, rounding twice.

    Args:
        clip_min: Lower bound (<= 0).
        clip_max: Upper bound (> clip_min).
        dst_type: `"INT8"` or `"INT4"`.
        cap: Cap an INT8 input at the grid's top too, as an op of its own,
            which changes no number. A model input read through a bare
            fake-quant can get requantized by the converter to its observed
            range, a second rounding (FULLY_CONNECTED always; convolutions
            when the clip is wider than the data); behind the MINIMUM the
            op reads the fake-quant's grid. Defaults to `False`.
        **kwargs: Base `Layer` arguments (`name`, ...).
    """

    def __init__(self, clip_min, clip_max, dst_type, cap=False, **kwargs):
        super().__init__(**kwargs)
        self.clip_min = float(clip_min)
        self.clip_max = float(clip_max)
        self.dst_type = dst_type
        self.cap = cap

    @classmethod
    def freeze(cls, layer, cap=False, name=None):
        """The fixed form of an `InputQuantizeLayer` at its current bounds.

        Args:
            layer: The `InputQuantizeLayer`.
            cap: See the class. Defaults to `False`.
            name: The new layer's name. Defaults to `layer`'s.

        Returns:
            A `FixedInputQuantizer`.
        """
        name = layer.name if name is None else name
        return cls(*clip_range(layer), layer.quantizer.dst_type, cap=cap, name=name)

    def call(self, inputs, call_index=0):
        # `call_index` tells a `RequantizingLayer`'s calls apart; a frozen grid is each call's.
        del call_index
        bits = ranges.bits_of(self.dst_type)
        if self.cap or bits == 4:
            inputs = tf.minimum(inputs, ranges.op_nudge(self.clip_min, self.clip_max, bits).high)
        return fixed_fake_quant(inputs, *self.carrier_bounds())

    def carrier_bounds(self):
        """The bounds of the 8-bit fake-quant this applies: the clip range, or INT4's carrier's.

        Returns:
            `(low, high)`, floats.
        """
        bits = ranges.bits_of(self.dst_type)
        if bits == 8:
            return self.clip_min, self.clip_max
        grid = ranges.op_nudge(self.clip_min, self.clip_max, bits)
        top = np.float32(grid.low) + np.float32(255) * np.float32(grid.scale)
        return float(grid.low), float(top)

    def input_step(self):
        """The step of the grid, as `InputQuantizeLayer.input_step` computes it (float32)."""
        levels = np.float32(2 ** ranges.bits_of(self.dst_type) - 1)
        return tf.constant((np.float32(self.clip_max) - np.float32(self.clip_min)) / levels)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "clip_min": self.clip_min,
            "clip_max": self.clip_max,
            "dst_type": self.dst_type,
            "cap": self.cap,
        }


class AroundLayer(PlainCall, keras.layers.Layer):
    """A layer of the export copy that runs a shared layer with fixed quantization around it.

    Args:
        layer: The layer it runs (shared with the QAT model, not copied).
        **kwargs: Base `Layer` arguments (`name`, ...).
    """

    def __init__(self, layer, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "layer": keras.layers.deserialize(config["layer"])})

    def get_config(self):
        return {**super().get_config(), "layer": keras.layers.serialize(self.layer)}


class QuantizedBefore(AroundLayer):
    """A layer of the export copy, its one reader's fixed quantizer applied to its inputs too.

    Rounding before the layer as well changes no number of the copy where a
    fake-quant commutes with the layer, and it tells the converter the grid
    of the layer's inputs:

    - An int8 `MEAN` (a global average pooling) reshaped for the
      convolution after it, as in EfficientNet's squeeze-and-excite blocks,
      got a range of its own from the converter, which does not carry the
      quantizer's range back through the `RESHAPE`: the file averaged onto
      that range and then requantized the result (`QUANTIZE`, XNNPACK's
      8-bit multiplier), two roundings where the QAT model has one. Rounded
      before the reshape, the `MEAN` writes on the reader's grid.
    - A Concatenate joining a tensor on another quantizer's INT4 carrier
      (behind its MINIMUM) took that carrier's scale for all its inputs:
      the file wrote the other inputs on it and requantized the result, two
      roundings where the QAT model has one. With its float inputs rounded
      before the concatenation, they are written on the reader's grid, and
      the inputs already on a grid are requantized to it once. An INT4
      reader rounds those too: the converter gives a concatenation the
      widest range among its inputs, and a carrier wider than the reader's
      (DenseNet121 at W4A4, a growth layer's grid narrower than the one
      before) would give it its scale. (Rounded there at INT8, a grid's
      tensor made the converter fail on the concatenation's same-scale
      constraint.)
    - A U-Net's skip connection, a convolution's output read by a max
      pooling before another quantizer and by the Concatenate: rounded
      before the concatenation, the converter failed on that constraint
      (INT8); left float, it wrote the convolution on the concatenation's
      scale and requantized it for the pooling. Rounded behind a cap (an
      int8 MINIMUM, as an INT4 grid's), the convolution writes on the
      pooling's reader's grid and the file requantizes it once for the
      concatenation, as the QAT model does.

    Args:
        layer: The reshaping or concatenating layer (shared, not copied).
        quantizer: The reader's `FixedInputQuantizer` config.
        on_grid: Positions of the inputs already on a grid, left as they
            are unless the reader is INT4. Defaults to `()`.
        capped: Positions of the inputs rounded behind a cap. Defaults to `()`.
        **kwargs: Base `Layer` arguments (`name`, ...).
    """

    def __init__(self, layer, quantizer, on_grid=(), capped=(), **kwargs):
        super().__init__(layer, **kwargs)
        self.quantizer = FixedInputQuantizer.from_config(quantizer)
        self.capping = FixedInputQuantizer.from_config({**quantizer, "cap": True})
        self.on_grid = tuple(on_grid)
        self.capped = tuple(capped)

    def call(self, inputs):
        if not isinstance(inputs, (list, tuple)):
            return self.layer(self.quantizer(inputs))
        return self.layer([self._rounded(i, x) for i, x in enumerate(inputs)])

    def _rounded(self, position, tensor):
        if position in self.on_grid and self.quantizer.dst_type != "INT4":
            return tensor
        return (self.capping if position in self.capped else self.quantizer)(tensor)

    def get_config(self):
        return {
            **super().get_config(),
            "quantizer": self.quantizer.get_config(),
            "on_grid": list(self.on_grid),
            "capped": list(self.capped),
        }
