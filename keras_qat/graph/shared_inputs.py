"""Which input quantizers move up to the tensor they read, so that every reader reads their output.

A tensor that feeds a quantized layer and also other layers (in MobileNetV2
and ResNet: a block's output, read by the next block's first convolution and
by its residual Add) is one int8 tensor in the .tflite, on the grid of the
quantizer in front of that layer. For the QAT model to compute what the file
computes, the other readers must read the rounded tensor too: the quantizer
is applied where the tensor is produced, and every reader takes its output.
Tensors read by several quantized layers, by a Concatenate (whose inputs the
file requantizes to one common scale) or as a model output are left to the
export (see `tflite.output_ranges`).
"""

import tensorflow as tf

from keras_qat import functional
from keras_qat._keras import keras


def shared_input_readers(float_model, enabled):
    """Producer name -> the one quantized layer among several readers of its output.

    Args:
        float_model: The flat float copy of the model (nested models inlined,
            BatchNormalization folded), layers named as in the original.
        enabled: Names of the layers that are quantized.

    Returns:
        A dict from producer layer name to the name of the quantized layer
        whose input quantizer is to be applied right after the producer.
    """
    consumers = functional.consumers(float_model)
    planned = {}
    for layer in float_model.layers:
        readers = consumers.get(layer.name, [])
        quantized = [r for r in readers if r is not None and r.name in enabled]
        if (
            isinstance(layer, keras.layers.InputLayer)  # never called: a model input
            or len(quantized) != 1
            or len(readers) < 2
            or None in readers
            or any(isinstance(r, keras.layers.Concatenate) for r in readers)
            or not functional.called_once(layer)
            or not functional.called_once(quantized[0])
            or len(tf.nest.flatten(layer.output)) != 1
        ):
            continue
        planned[layer.name] = quantized[0].name
    return planned
