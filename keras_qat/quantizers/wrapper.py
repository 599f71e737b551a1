"""The wrapper that applies a `WeightQuantizeConfig` and knows the input quantizer before it."""

import weakref

from keras_qat import functional
from keras_qat._keras import tfmot

# INT4 kernels are stored in the .tflite as int8 values 16 k on the step s / 16
# (see `tflite.weights`), which makes the bias's step 16 times finer too.
INT4_SPREAD = 16


def kernel_entries(wrapper):
    """`(kernel variable, quantizer, quantizer variables)` of each quantized kernel.

    With `quantized_variables`, the one place that reads TFMOT's private
    `_weight_vars`: kernels first, in the order of `quantize_config.kernels`,
    then the bias.

    Args:
        wrapper: A `QuantizeWrapperV2` holding a `WeightQuantizeConfig`.

    Returns:
        A list, one entry per kernel.
    """
    return wrapper._weight_vars[: len(wrapper.quantize_config.kernels)]


def quantized_variables(wrapper):
    """The float variables the wrapper quantizes: its kernels, then its bias if any.

    The wrapped layer's attributes hold the quantized tensors once the
    wrapper has run; these are the variables behind them, in the layer's
    weight order.

    Args:
        wrapper: A `QuantizeWrapperV2` holding a `WeightQuantizeConfig`.

    Returns:
        A list of variables.
    """
    return [variable for variable, _, _ in wrapper._weight_vars]


class QatWrapper(tfmot.quantization.keras.QuantizeWrapperV2):
    """TFMOT's `QuantizeWrapperV2`, which also gives its bias the file's grid.

    When it is called on the output of an input quantizer (an
    `InputQuantizeLayer`, or the fixed form export gives it: any layer with
    an `input_step` method), in every Functional model built from the
    walker's graph (the QAT model, a clone, a model loaded from a file,
    export's copy), it keeps a reference to that layer, from which
    `bias_step` takes the input's step.
    """

    def __call__(self, inputs, *args, **kwargs):
        source = functional.producing_layer(inputs)
        if hasattr(source, "input_step"):
            self._input_quantizer = weakref.ref(source)
        return super().__call__(inputs, *args, **kwargs)

    def bias_step(self):
        """The step of the bias in the file, `input step * weight step`, or `None` if unknown.

        Returns:
            A float tensor (a scalar, or one per output channel), or `None`
            when the wrapper has no input quantizer reference or the op does
            not add the bias on that step.
        """
        reference = getattr(self, "_input_quantizer", None)
        input_layer = reference() if reference is not None else None
        if input_layer is None or len(self.quantize_config.kernels) != 1:
            return None  # SeparableConv2D: its bias is on the intermediate tensor's step
        input_step = input_layer.input_step()
        ((kernel, kernel_quantizer, variables),) = kernel_entries(self)
        weight_step = kernel_quantizer.scale(kernel, variables)
        if self.quantize_config.dst_type == "INT4":
            weight_step = weight_step / INT4_SPREAD
        return input_step * weight_step
