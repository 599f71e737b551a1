"""Rounding a layer's bias to the int32 grid the .tflite stores it on."""

import weakref

import tensorflow as tf

from keras_qat.quantizers.base import QuantizerBase


def bias_units(bias, step):
    """The bias in whole accumulator steps, as the QAT model adds it: `round(bias / step)`.

    The export writes these integers into the file as they are: the same
    quotient taken in float64 lands on the other side of a .5 for about one
    channel in a thousand (3 of ResNet50's).

    Args:
        bias: The float bias.
        step: Its step, `QatWrapper.bias_step()` (one, or per channel), in
            the bias's dtype.

    Returns:
        A float tensor of integers, half to even.
    """
    return tf.round(bias / step)


class BiasQuantizer(QuantizerBase):
    """Rounds the bias to multiples of the wrapper's `bias_step()`; straight-through gradient.

    A convolution or dense op in the int8 file adds its bias as int32 on the
    step `input step * weight step`, the accumulator's unit: the file's bias
    is `round(b / step) * step`, not `b`. This quantizer makes the QAT model
    add that value. The step comes from the layer's input quantizer and its
    kernel quantizer, which the wrapper (`QatWrapper`) knows; where it does
    not know them (a wrapper called on a tensor no input quantizer made) the
    bias stays float.

    Example (a wrapper stand-in whose step is 0.25):

    >>> import numpy as np
    >>> class Wrapper:
    ...     def bias_step(self):
    ...         return 0.25
    >>> wrapper = Wrapper()
    >>> q = BiasQuantizer()
    >>> weights = q.build((3,), "bias", wrapper)
    >>> q(np.array([0.3, -0.2, 1.0], "float32"), True, weights).numpy()
    array([ 0.25, -0.25,  1.  ], dtype=float32)
    """

    def build(self, tensor_shape, name, layer):
        # A weak reference: the wrapper owns this quantizer, and Keras must
        # not track the wrapper as a layer of itself.
        self._wrapper = weakref.ref(layer)
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        wrapper = self._wrapper() if getattr(self, "_wrapper", None) else None
        # A plain TFMOT wrapper (a model saved before QatWrapper) has no step.
        bias_step = getattr(wrapper, "bias_step", None)
        step = bias_step() if bias_step is not None else None
        if step is None:
            return inputs
        step = tf.stop_gradient(tf.cast(step, inputs.dtype))
        rounded = bias_units(inputs, step) * step
        return inputs + tf.stop_gradient(rounded - inputs)

    def get_config(self):
        return {}
