"""The wrapper that applies a `WeightQuantizeConfig` and knows the input quantizer before it."""

import inspect
import weakref

import tensorflow as tf

from keras_qat import functional
from keras_qat._keras import keras, tfmot
from keras_qat.converter_facts import own_activation_fuses
from keras_qat.plain_call import PlainCall
from keras_qat.quantizers import requantize
from keras_qat.quantizers.bias import bias_units
from keras_qat.quantizers.file_activation import (
    ActivatedOutputQuantizer,
    FileActivation,
    fixed_grid,
)
from keras_qat.quantizers.file_arithmetic import grid_holder
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


class QatWrapper(PlainCall, tfmot.quantization.keras.QuantizeWrapperV2):
    """TFMOT's `QuantizeWrapperV2`, which also gives its bias the file's grid.

    When it is called on the output of an input quantizer (an
    `InputQuantizeLayer`, or the fixed form export gives it: any layer with
    an `input_step` method), or on a tensor that a `FileActivation` or a
    wrapper's output quantizer (`writes_fixed_grid`) writes on its op's
    fixed grid (a softmax's, a tanh's, behind layers that keep the scale:
    the file reads that grid, and no input quantizer stands between), in
    every Functional model built from the walker's graph (the QAT model, a
    clone, a model loaded from a file, export's copy), it
    keeps a reference to that layer, from which `bias_step` takes the
    input's step.

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

    A layer called at several places rounds the output of a call that an
    input quantizer reads on that quantizer's grid alone (the file's op
    writes there), and of one whose op fuses the ReLU layer reading it after
    that ReLU: such calls pass `round_output=False`, and skip the output
    quantizer that rounds the other calls' outputs.

    Call arguments:
        inputs: The layer's input.
        training: Whether the model is training. Defaults to `None` (the
            learning phase).
        round_output: Whether to apply the output quantizer. Defaults to
            `True`.
        **kwargs: The wrapped layer's call arguments.
    """

    def build(self, input_shape):
        super().build(input_shape)
        self.intermediate_vars = None
        if isinstance(self.layer, keras.layers.SeparableConv2D):
            self.intermediate_vars = TrackedRangeQuantizer().build(None, "intermediate", self)

    def __call__(self, inputs, *args, **kwargs):
        source = functional.producing_layer(inputs)
        if not hasattr(source, "input_step"):
            source = grid_holder(inputs)
        if hasattr(source, "input_step"):
            self._input_quantizer = weakref.ref(source)
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, training=None, round_output=True, **kwargs):
        if training is None:
            training = keras.backend.learning_phase()
        outputs = self._computed(inputs, training, **kwargs)
        if self._output_quantizers and round_output:
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
        rounded = tf.__internal__.smart_cond.smart_cond(
            training,
            lambda: self._on_reader_grid(outputs, reader, True),
            lambda: self._on_reader_grid(outputs, reader, False),
        )
        return outputs + tf.stop_gradient(rounded - outputs)

    def _on_reader_grid(self, outputs, reader, training):
        """`outputs` on the `output_reader`'s grid (an INT4 grid's int8 carrier) as the file writes.

        The file requantizes the op's int32 sums there: so does inference,
        where they are known (`accumulator_step`); training rounds the
        float output as the reader does.
        """
        step = self.accumulator_step()
        if not training and step is not None:
            return requantize.accumulator_requantize(
                tf.round(outputs / step), step, reader.grid(), 8
            )
        if reader.bits == 8:
            return reader.quantizer(outputs, training, reader.quantizer_vars)
        # The INT4 grid's int8 carrier: the file caps it after this tensor.
        scale, _, low = reader.grid()
        return tf.quantization.fake_quant_with_min_max_vars(
            outputs, low, low + 255.0 * scale, num_bits=8
        )

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
            if "training" in inspect.signature(layer.call).parameters:
                kwargs["training"] = training
            if not self._sums_simulated():
                return self._run_with(inputs, quantized, **kwargs)
            return tf.__internal__.smart_cond.smart_cond(
                training,
                lambda: self._run_with(inputs, quantized, **kwargs),
                lambda: self._from_exact_sums(inputs, quantized, **kwargs),
            )
        if self.accumulator_step() is None:
            return self._separable(inputs, quantized, training)
        return tf.__internal__.smart_cond.smart_cond(
            training,
            lambda: self._separable(inputs, quantized, True),
            lambda: self._separable_from_exact_sums(inputs, quantized),
        )

    def _separable(self, inputs, quantized, training):
        """A `SeparableConv2D`: its depthwise op rounded on the tracked grid, then its pointwise."""
        depthwise, pointwise, *bias = quantized
        between = separable_depthwise(self.layer, inputs, depthwise)
        between = _quantized(TrackedRangeQuantizer(), between, training, self.intermediate_vars)
        outputs = tf.nn.conv2d(between, pointwise, 1, "VALID")
        if bias:
            outputs = tf.nn.bias_add(outputs, bias[0])
        return self.layer.activation(outputs)

    def _separable_from_exact_sums(self, inputs, quantized):
        """A `SeparableConv2D` from the file's int32 sums of both its ops (see `_from_exact_sums`).

        The depthwise op's sums are requantized onto the tracked grid
        between the ops as XNNPACK does (`accumulator_requantize`); the
        pointwise op's, the bias in whole steps, times `accumulator_step()`.
        """
        depthwise, pointwise, *bias = quantized
        (_, first, _), (_, second, _) = kernel_entries(self)
        input_step, first_unit = self._input_quantizer().input_step(), self._kernel_unit(0)
        sums = separable_depthwise(
            self.layer, tf.round(inputs / input_step), first.levels(depthwise, first_unit)
        )
        grid = TrackedRangeQuantizer.grid(self.intermediate_vars)
        between = requantize.accumulator_requantize(sums, input_step * first_unit, grid, 8)
        step = self.accumulator_step()
        sums = tf.nn.conv2d(
            tf.round(between / grid[0]), second.levels(pointwise, self.weight_unit()), 1, "VALID"
        )
        if bias:
            sums = tf.nn.bias_add(sums, bias_units(bias[0], step))
        return self.layer.activation(sums * step)

    def _run_with(self, inputs, quantized, **kwargs):
        """The layer's call on `inputs` with the `quantized` weights put in place."""
        self.quantize_config.set_quantize_weights(self.layer, quantized)
        return self.layer.call(inputs, **kwargs)

    def _sums_simulated(self):
        """Whether inference computes the op's int32 sums (`_from_exact_sums`).

        It does for a layer with one kernel and an activation argument
        (convolutions, dense layers), channels last (the sums' steps, one per
        channel, then broadcast), whose sums the file requantizes
        (`accumulator_step`).
        """
        return (
            len(kernel_entries(self)) == 1
            and hasattr(self.layer, "activation")
            and getattr(self.layer, "data_format", "channels_last") == "channels_last"
            and self.accumulator_step() is not None
        )

    def _from_exact_sums(self, inputs, quantized, **kwargs):
        """The layer's output from the file's int32 sums: `activation(sums * accumulator_step())`.

        The op is run on the input's levels and the kernel's (the INT4
        spread included) and adds the bias in whole steps: a float32 sum of
        integers is exact while the sum of the absolute products stays below
        2^24. Run on the float values, a convolution of a thousand products
        misses its sum by up to a step, and the reader's requantization
        (`RequantizingLayer`, `accumulator_requantize`) then parts from the
        file's near a tie (DenseNet121 at 64x64, INT8: 2 of 1 000 images a
        step off on a logit).
        """
        step = self.accumulator_step()
        _, quantizer, _ = kernel_entries(self)[0]
        kernel_levels = quantizer.levels(quantized[0], self.weight_unit())
        bias_levels = [bias_units(bias, step) for bias in quantized[1:]]
        layer = self.layer
        activation = layer.activation
        layer.activation = None  # applied to the values, below: a ReLU6 caps them
        try:
            sums = self._run_with(
                tf.round(inputs / self._input_quantizer().input_step()),
                [kernel_levels, *bias_levels],
                **kwargs,
            )
        finally:
            layer.activation = activation
        outputs = sums * step
        return outputs if activation is None else activation(outputs)

    def accumulator_step(self):
        """The step of the op's int32 accumulator, where the QAT model requantizes it as the file.

        The file's op requantizes its accumulator (the bias included) onto
        its output grid, after the activation the converter fuses into it.
        `None` where that is not simulated: an activation that is an op of
        its own in the file, export's copy (its input quantizer is a fixed
        one, its activations plain copies), or an unknown input step.

        Returns:
            `bias_step()`, or `None`.
        """
        reference = getattr(self, "_input_quantizer", None)
        if reference is None or not isinstance(
            reference(), (InputQuantizeLayer, FileActivation, QatWrapper)
        ):
            return None
        if not own_activation_fuses(self.layer):
            return None
        return self.bias_step()

    def rounds_output(self, node_index):
        """Whether call `node_index` applies the output quantizer (see `round_output`)."""
        kwargs = self.inbound_nodes[node_index].call_kwargs
        return bool(self._output_quantizers) and kwargs.get("round_output", True)

    def tracks_output(self, node_index):
        """Whether call `node_index` rounds its output on a tracked 8-bit range (`grid()`'s)."""
        return (
            self.rounds_output(node_index)
            and type(self._output_quantizers[0]) is TrackedRangeQuantizer
        )

    @property
    def activates_in_float(self):
        """Whether the output quantizer applies an activation the file computes in float.

        That is an `ActivatedOutputQuantizer` whose activation has no fixed
        int8 grid (`runs_in_float`), under `FLOAT_ACTIVATION_SCOPE`.
        """
        return any(getattr(q, "runs_in_float", False) for q in self._output_quantizers)

    @property
    def writes_fixed_grid(self):
        """Whether the output quantizer applies an activation on its op's fixed grid.

        A sigmoid, tanh or softmax model output (`ActivatedOutputQuantizer`):
        a quantized layer reads that grid with no input quantizer, as it
        reads a `FileActivation`'s.
        """
        return any(
            isinstance(q, ActivatedOutputQuantizer) and not q.runs_in_float
            for q in self._output_quantizers
        )

    def input_step(self):
        """The step of the fixed grid, the input step of a quantized layer reading it.

        Returns:
            A scalar tensor, or `None` without a fixed grid and where the
            wrapper's own sums are not simulated (`accumulator_step`: in
            export's copy, whose input quantizers are fixed ones): there its
            readers' are not either.
        """
        if not self.writes_fixed_grid or self.accumulator_step() is None:
            return None
        return self.grid()[0]

    @property
    def gathers_rows(self):
        """Whether the output is rows of a per-tensor quantized table (an Embedding's).

        The file gathers them as int8 on the table's step, the grid `grid()`
        gives, and requantizes them for a reader on another grid.
        """
        return (
            isinstance(self.layer, keras.layers.Embedding) and not self.quantize_config.channel_wise
        )

    def grid(self):
        """The grid of the output: of the tracked range (`TrackedRangeQuantizer.grid`), or fixed.

        Returns:
            `(scale, zero_point, low)` as float32 tensors: the activation's
            fixed grid where the wrapper `writes_fixed_grid`; the table's step
            (`weight_unit`) and zeros where the layer `gathers_rows`.
        """
        if self.writes_fixed_grid:
            return fixed_grid(self._output_quantizers[0].activation)
        if self.gathers_rows:
            return self.weight_unit(), tf.zeros(()), tf.zeros(())
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
        return input_step * self.weight_unit()

    def weight_unit(self):
        """The step of the kernel the file holds: the quantizer's, over `INT4_SPREAD` at INT4.

        For a `SeparableConv2D`, of its pointwise kernel.

        Returns:
            A float tensor, a scalar or one per output channel.
        """
        return self._kernel_unit(-1)

    def _kernel_unit(self, index):
        """The step the file holds kernel `index` on (`weight_unit`'s, for any kernel)."""
        kernel, kernel_quantizer, variables = kernel_entries(self)[index]
        weight_step = kernel_quantizer.scale(kernel, variables)
        if self.quantize_config.dst_type == "INT4":
            return weight_step / INT4_SPREAD
        return weight_step
