"""ULQ: asymmetric activation quantization with learned clip bounds."""

import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.quantizers import ranges
from keras_qat.quantizers.base import QuantizerBase


def _round_half_up(values):
    return tf.floor(values + 0.5)


# The gradients the clip bounds can take: AMCT's ULQ rule, or the fake-quant
# op's own (clipped values only), the cost floor benchmarks compare against.
GRADIENTS = ("ulq", "fake_quant")


def ulq_fake_quant(inputs, clip_min, clip_max, num_bits, gradient="ulq"):
    """Fake-quantizes `inputs` to [clip_min, clip_max] with AMCT's ULQ gradients.

    Forward: `fake_quant_with_min_max_vars` (scale `(clip_max - clip_min) /
    (2^b - 1)`, zero point nudged to an integer so that 0 is exact).

    Backward, with U / L the elements above / below the represented range,
    `v` = clip_max on U, clip_min on L, x elsewhere, and
    `e = (round(v/s) - v/s) / (2^b - 1)`:
    `dx = dy` inside the range and 0 outside, `dclip_max = sum(dy * (e + U))`,
    `dclip_min = sum(dy * (L - e))`. The `e` term (LSQ-like) lets in-range
    values move the bounds too; the op's own gradient only counts clipped ones.

    Args:
        inputs: Float activations.
        clip_min: Scalar lower bound (<= 0).
        clip_max: Scalar upper bound (> 0).
        num_bits: 8 or 4.
        gradient: `"ulq"` (the rule above) or `"fake_quant"` (the op's own
            gradient, without the `e` term). Defaults to `"ulq"`.

    Returns:
        The fake-quantized activations.
    """
    if gradient == "fake_quant":
        return tf.quantization.fake_quant_with_min_max_vars(
            inputs, clip_min, clip_max, num_bits=num_bits
        )
    levels = float(2**num_bits - 1)

    def rounding_error(values, scale):
        ratio = values / scale
        return _round_half_up(ratio) - ratio

    @tf.custom_gradient
    def quantize(x, low, high):
        y = tf.quantization.fake_quant_with_min_max_vars(x, low, high, num_bits=num_bits)

        def grad(dy):
            # The op's own gradient gives dx = dy inside the nudged range and
            # the sums of dy over L and U; only sum(dy * e) is added to it.
            # Inside the range y - x is the rounding error times the scale
            # (the zero point is an integer), so e costs no second rounding;
            # clipped elements hold the bound itself, so their e is a scalar.
            dx, d_lower, d_upper = tf.quantization.fake_quant_with_min_max_vars_gradient(
                dy, x, low, high, num_bits=num_bits
            )
            scale = (high - low) / levels  # the op's step; nudging moves the bounds only
            lsq = (
                tf.reduce_sum(dx * (y - x)) / scale
                + d_upper * rounding_error(high, scale)
                + d_lower * rounding_error(low, scale)
            ) / levels
            return dx, d_lower - lsq, d_upper + lsq

        return y, grad

    return quantize(inputs, clip_min, clip_max)


def _non_positive(value):
    return tf.minimum(value, 0.0)


class UlqQuantizer(QuantizerBase):
    """ULQ activation quantizer (`retrain_data_config`), one per quantized layer input.

    The clip bounds are variables of the layer that owns the quantizer, so they
    are saved and restored with it. A bound given in the config is fixed (AMCT's
    retrain config: "if this parameter is included, the bound is fixed"); one left out
    is trainable, initialised by calibration (`assign_clip_range`). Whatever
    the optimiser does, the bounds are projected back to clip_min <= 0 <
    clip_max (variable constraints, which tf_keras optimisers apply after each
    update).

    Example:

    >>> import numpy as np
    >>> q = UlqQuantizer("INT8", clip_max=2.55, fixed_min=True)
    >>> from keras_qat.quantizers import InputQuantizeLayer
    >>> layer = InputQuantizeLayer(q)
    >>> layer(np.array([-1.0, 0.004, 0.006, 3.0], "float32")).numpy()
    array([0.  , 0.  , 0.01, 2.55], dtype=float32)

    Args:
        dst_type: `"INT8"` or `"INT4"`. Defaults to `"INT8"`.
        fixed_min: Pin the lower bound at the constant 0 (no variable).
            Defaults to `False`.
        clip_max: Fixed upper bound, or None for a trainable one. Defaults to `None`.
        clip_min: Fixed lower bound, or None for a trainable one (ignored with
            `fixed_min`). Defaults to `None`.
        gradient: One of `GRADIENTS`: the clip bounds' gradient (see
            `ulq_fake_quant`); read when the model is traced. Defaults to
            `"ulq"`.

    Raises:
        ValueError: for an unknown `gradient`.
    """

    def __init__(
        self, dst_type="INT8", fixed_min=False, clip_max=None, clip_min=None, gradient="ulq"
    ):
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {GRADIENTS}. Received: {gradient!r}")
        self.dst_type = dst_type
        self.fixed_min = fixed_min
        self.clip_max = clip_max
        self.clip_min = clip_min
        self.gradient = gradient

    def build(self, tensor_shape, name, layer):
        weights = {
            "clip_max": layer.add_weight(
                f"{name}_clip_max",
                shape=(),
                initializer=keras.initializers.Constant(self.clip_max or 1.0),
                trainable=self.clip_max is None,
                constraint=ranges.positive,
            )
        }
        if not self.fixed_min:
            weights["clip_min"] = layer.add_weight(
                f"{name}_clip_min",
                shape=(),
                initializer=keras.initializers.Constant(self.clip_min or -1.0),
                trainable=self.clip_min is None,
                constraint=_non_positive,
            )
        return weights

    @staticmethod
    def bounds(weights):
        """Returns `(clip_min, clip_max)` as used by the forward pass.

        The constraints' projection is repeated here so that a custom loop
        that bypasses constraints still runs a valid fake-quant op.

        Args:
            weights: The dict `build` returned.

        Returns:
            Two scalar tensors; clip_min is 0 with `fixed_min`.
        """
        clip_max = ranges.positive(weights["clip_max"])
        clip_min = _non_positive(weights["clip_min"]) if "clip_min" in weights else tf.zeros(())
        return clip_min, clip_max

    def __call__(self, inputs, training, weights, **kwargs):
        clip_min, clip_max = self.bounds(weights)
        bits = ranges.bits_of(self.dst_type)
        return ulq_fake_quant(inputs, clip_min, clip_max, bits, self.gradient)

    @staticmethod
    def assign_clip_range(weights, clip_min, clip_max):
        """Sets the bounds (calibration); `clip_min` is ignored with `fixed_min`.

        Args:
            weights: The dict `build` returned.
            clip_min: New lower bound.
            clip_max: New upper bound.
        """
        weights["clip_max"].assign(clip_max)
        if "clip_min" in weights:
            weights["clip_min"].assign(clip_min)

    def get_config(self):
        return {
            "dst_type": self.dst_type,
            "fixed_min": self.fixed_min,
            "clip_max": self.clip_max,
            "clip_min": self.clip_min,
            "gradient": self.gradient,
        }
