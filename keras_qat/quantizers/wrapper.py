"""The wrapper that applies a `WeightQuantizeConfig` and knows the input quantizer before it."""

import inspect
import weakref

import tensorflow as tf

from keras_qat import functional
from keras_qat._keras import keras, tfmot
from keras_qat.converter_facts import own_activation_fuses
from keras_qat.quantizers.input_layer import InputQuantizeLayer
from keras_qat.quantizers.tracked import TrackedRangeQuantizer

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


def separable_depthwise(layer, inputs, kernel):
    """The first of a `SeparableConv2D`'s two ops: its depthwise convolution of `inputs`.

    Args:
        layer: The `SeparableConv2D` (channels last).
        inputs: Its input tensor.
        kernel: The depthwise kernel to convolve with.

    Returns:
        The tensor between the two ops.
    """
    return tf.nn.depthwise_conv2d(
        inputs, kernel, (1, *layer.strides, 1), layer.padding.upper(), dilations=layer.dilation_rate
    )


def _quantized(quantizer, values, training, variables):
    """`quantizer` applied to `values`, in training or inference mode as `training` says."""
    return tf.__internal__.smart_cond.smart_cond(
        training,
        lambda: quantizer(values, True, variables),
        lambda: quantizer(values, False, variables),
    )


class QatWrapper(tfmot.quantization.keras.QuantizeWrapperV2):
    """TFMOT's `QuantizeWrapperV2`, which also gives its bias the file's grid.

    When it is called on the output of an input quantizer (an
    `InputQuantizeLayer`, or the fixed form export gives it: any layer with
    an `input_step` method), in every Functional model built from the
    walker's graph (the QAT model, a clone, a model loaded from a file,
    export's copy), it keeps a reference to that layer, from which
    `bias_step` takes the input's step.

    A `SeparableConv2D` is two ops in the file, `DEPTHWISE_CONV_2D` then a
    1x1 `CONV_2D`, and the tensor between them is int8: the wrapper computes
    the two convolutions apart and rounds the tensor between them on an
    8-bit range it tracks (`TrackedRangeQuantizer`, its variables
    `intermediate_range_min`/`_max`), which export gives the file. The
    bias is added by the second op, on that tensor's step times the
    pointwise kernel's.

    A layer that is a model output and is read by an input quantizer
    (`WeightQuantizeConfig.output_on_reader`) is one int8 tensor in the
    file, on that quantizer's grid (an INT4 grid's carrier, not capped
    yet), which the file's output dequantizes: the wrapper rounds its
    output there too (`output_reader`).

    Its output quantizer, and the quantizer reading its output, round in
    inference as the file's op requantizes its int32 sums
    (`accumulator_step`).
    """

    def build(self, input_shape):
        super().build(input_shape)
        self.intermediate_vars = None
        if isinstance(self.layer, keras.layers.SeparableConv2D):
            self.intermediate_vars = TrackedRangeQuantizer().build(None, "intermediate", self)

    def __call__(self, inputs, *args, **kwargs):
        source = functional.producing_layer(inputs)
        if hasattr(source, "input_step"):
            self._input_quantizer = weakref.ref(source)
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, training=None, **kwargs):
        if training is None:
            training = keras.backend.learning_phase()
        outputs = self._computed(inputs, training, **kwargs)
        if self._output_quantizers:
            quantizer, variables = self._output_quantizers[0], self._output_quantizer_vars
            outputs = tf.__internal__.smart_cond.smart_cond(
                training,
                lambda: quantizer(outputs, True, variables),
                lambda: quantizer(
                    outputs, False, variables, accumulator_step=self.accumulator_step()
                ),
            )
        reader = self.output_reader
        if reader is None:
            return outputs
        if reader.bits == 8:
            rounded = reader.quantizer(outputs, training, reader.quantizer_vars)
        else:  # the INT4 grid's int8 carrier: the file caps it after this tensor
            scale, _, low = reader.grid()
            rounded = tf.quantization.fake_quant_with_min_max_vars(
                outputs, low, low + 255.0 * scale, num_bits=8
            )
        return outputs + tf.stop_gradient(rounded - outputs)

    @property
    def output_reader(self):
        """The input quantizer whose grid the output is rounded on, or `None`.

        That is the first `InputQuantizeLayer` reading the wrapper when its
        config says `output_on_reader` (`None` before the model holding them
        is built, and in export's copy, whose quantizers are fixed ones).
        """
        if not self.quantize_config.output_on_reader:
            return None
        for node in self.outbound_nodes:
            if isinstance(node.outbound_layer, InputQuantizeLayer):
                return node.outbound_layer
        return None

    def _computed(self, inputs, training, **kwargs):
        """The layer's output before the output quantizer, from its quantized weights.

        TFMOT's call up to its output quantizer, with a `SeparableConv2D`
        computed as the file's two ops.
        """
        quantized = [
            _quantized(quantizer, weight, training, variables)
            for weight, quantizer, variables in self._weight_vars
        ]
        layer = self.layer
        if self.intermediate_vars is None:
            self.quantize_config.set_quantize_weights(layer, quantized)
            if "training" in inspect.signature(layer.call).parameters:
                kwargs["training"] = training
            return layer.call(inputs, **kwargs)
        depthwise, pointwise, *bias = quantized
        between = separable_depthwise(layer, inputs, depthwise)
        between = _quantized(TrackedRangeQuantizer(), between, training, self.intermediate_vars)
        outputs = tf.nn.conv2d(between, pointwise, 1, "VALID")
        if bias:
            outputs = tf.nn.bias_add(outputs, bias[0])
        return layer.activation(outputs)

    def accumulator_step(self):
        """The step of the op's int32 accumulator, where the QAT model requantizes it as the file.

        The file's op requantizes its accumulator (the bias included) onto
        its output grid, after the activation the converter fuses into it.
        `None` where that is not simulated: an activation that is an op of
        its own in the file, export's copy (its input quantizer is a fixed
        one), or an unknown input step.

        Returns:
            `bias_step()`, or `None`.
        """
        reference = getattr(self, "_input_quantizer", None)
        if reference is None or not isinstance(reference(), InputQuantizeLayer):
            return None
        if not own_activation_fuses(self.layer):
            return None
        return self.bias_step()

    @property
    def tracks_output(self):
        """Whether the output is rounded on a tracked 8-bit range, whose grid `grid()` gives."""
        return (
            bool(self._output_quantizers)
            and type(self._output_quantizers[0]) is TrackedRangeQuantizer
        )

    def grid(self):
        """The grid of the tracked output range (`TrackedRangeQuantizer.grid`)."""
        return TrackedRangeQuantizer.grid(self._output_quantizer_vars)

    def intermediate_step(self):
        """The step of a `SeparableConv2D`'s int8 tensor between its two ops, or `None`."""
        if self.intermediate_vars is None:
            return None
        return TrackedRangeQuantizer.grid(self.intermediate_vars)[0]

    def bias_step(self):
        """The step of the bias in the file, `input step * weight step`, or `None` if unknown.

        The input is the intermediate tensor for a `SeparableConv2D` (the
        weight its pointwise kernel), else the input quantizer's output.

        Returns:
            A float tensor (a scalar, or one per output channel), or `None`
            when the wrapper has no input quantizer reference or its step
            is not known yet.
        """
        input_step = self.intermediate_step()
        if input_step is None:
            reference = getattr(self, "_input_quantizer", None)
            input_layer = reference() if reference is not None else None
            input_step = None if input_layer is None else input_layer.input_step()
            if input_step is None:
                return None
        kernel, kernel_quantizer, variables = kernel_entries(self)[-1]
        weight_step = kernel_quantizer.scale(kernel, variables)
        if self.quantize_config.dst_type == "INT4":
            weight_step = weight_step / INT4_SPREAD
        return input_step * weight_step
