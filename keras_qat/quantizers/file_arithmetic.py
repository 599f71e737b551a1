"""The .tflite's int8 ADD, SUB, MUL, BATCH_MATMUL and PRELU, computed by the QAT model in inference.

An Add, Subtract or Multiply of two tensors the file holds as int8 (a residual Add;
an excitation gate; swish's product of its input and the LOGISTIC of it)
is an int8 op in the file, which writes its result on the grid of the
quantizer reading it. Its arithmetic is XNNPACK's (`requantize`): a sum
of levels times fixed-point multipliers for `ADD` and `SUB`, a product of levels
requantized in float32 for `MUL`. A float result rounded by the reader's
fake-quant parts from it on ties and near them. In inference the layers
here compute the file's result, which the reader's fake-quant keeps as it
is; in training they compute in float, as the Keras layers do.
"""

import weakref

import numpy as np
import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.attention_layers import AttentionContext, AttentionScores
from keras_qat.converter_facts import fused_activation, keeps_scale
from keras_qat.plain_call import PlainCall
from keras_qat.quantizers import requantize
from keras_qat.quantizers.hard_swish import hard_swish_requantize, swished_operand
from keras_qat.quantizers.input_layer import (
    RequantizingLayer,
    pooling_source,
    reading_nodes,
    tracks_output,
)
from keras_qat.quantizers.ranges import divided


def grid_holder(tensor):
    """The layer whose grid Keras tensor `tensor` is on in the file, or `None`.

    That is a `RequantizingLayer`, a quantized layer rounding its output on
    a tracked range, or an activation written on its op's fixed grid, behind
    layers that keep the scale: any layer with a `grid()` for the tensor.

    Args:
        tensor: A Keras tensor of a Functional model.

    Returns:
        The layer, or `None`.
    """
    while getattr(tensor, "_keras_history", None) is not None:
        layer, node_index, _ = tensor._keras_history
        if (
            isinstance(layer, RequantizingLayer)
            or tracks_output(layer, node_index)
            or getattr(layer, "writes_fixed_grid", False)
        ):
            return layer
        inputs = tf.nest.flatten(layer.inbound_nodes[node_index].keras_inputs)
        if len(inputs) != 1 or not keeps_scale(layer):
            return None
        tensor = inputs[0]
    return None


def _sole_reading_call(layer, node_index):
    """`(layer, node index)` of the one call reading the output of `layer`'s call, or `None`."""
    reads = reading_nodes(layer, node_index)
    if len(reads) != 1:
        return None
    reader = reads[0].outbound_layer
    return reader, reader.inbound_nodes.index(reads[0])


def output_grid_holder(layer, node_index):
    """The `RequantizingLayer` on whose grid the file writes `layer`'s call's output, or `None`.

    The converter fuses the activations that follow (each the one reader of
    the tensor before it) into the op, whose output is then on the grid of
    the one quantizer reading it, behind layers that keep the scale (a
    global max pooling), or of a Concatenate alone reading it (the file
    writes a concatenation's inputs on its one scale).

    Args:
        layer: A layer of a built Functional model.
        node_index: The index of its call in `layer.inbound_nodes`.

    Returns:
        The layer, or `None`.
    """
    call = _sole_reading_call(layer, node_index)
    while call is not None and fused_activation(call[0]):
        call = _sole_reading_call(*call)
    while call is not None and keeps_scale(call[0]):
        call = _sole_reading_call(*call)
    if call is not None and isinstance(call[0], keras.layers.Concatenate):
        call = _sole_reading_call(*call)
    if call is None or not isinstance(call[0], RequantizingLayer):
        return None
    return call[0]


class FileOperation(PlainCall):
    """A mixin for a layer the file computes as an int8 op of two operands, onto its reader's grid.

    When the layer is called on a Keras tensor, it notes the grid of each
    operand (`_operand_grids`, layers with a `grid()`) and its call; in
    inference (`_in_inference`) it computes the file's arithmetic of the
    operands' levels (`_OP`, a function like `requantize.add_requantize`)
    onto the grid of the quantizer reading its output
    (`output_grid_holder`), where all are known. Its `plain_copy` computes
    as in training everywhere: the layer export's copy calls, from which the
    converter writes the op itself.
    """

    _plain = False

    def plain_copy(self):
        """A new layer of the same config and weights, computing as in training in inference too."""
        copy = type(self).from_config(self.get_config())
        copy._plain = True
        if self.weights:  # a PReLU's alpha
            copy.build(self.input_shape)
            copy.set_weights(self.get_weights())
        return copy

    def __call__(self, inputs, *args, **kwargs):
        symbolic = all(getattr(t, "_keras_history", None) for t in tf.nest.flatten(inputs))
        if self._plain or not symbolic:
            return super().__call__(inputs, *args, **kwargs)
        holders = self._operand_grids(inputs)
        outputs = super().__call__(inputs, *args, **kwargs)
        self._grids = [None if h is None else weakref.ref(h) for h in holders]
        self._node_index = outputs._keras_history.node_index
        return outputs

    def _operand_grids(self, inputs):
        """The layers whose grids the operands are on (`None` where unknown), from Keras tensors.

        An int8 average pooling's output is on its input's grid, as the
        pooling rounds it (`pooling_source`; noted in `_pooled`).
        """
        holders = [grid_holder(t) for t in tf.nest.flatten(inputs)]
        sources = [
            None if holder is not None else pooling_source(tensor)
            for holder, tensor in zip(holders, tf.nest.flatten(inputs), strict=True)
        ]
        self._pooled = [source is not None for source in sources]
        return [
            holder if source is None else source
            for holder, source in zip(holders, sources, strict=True)
        ]

    def _operands(self, inputs):
        """The two operand tensors of the op, from the layer's inputs."""
        return inputs

    def _operand_and_reader(self):
        """The layers whose grids an op of one int8 operand reads and writes on.

        Returns:
            `(holder, reader)`, or `(None, None)` where either is unknown
            (also while the layer's call is being made: `__call__` notes
            the operand's grid once it has returned).
        """
        grid = getattr(self, "_grids", [None])[0]
        holder = None if grid is None else grid()
        reader = None if holder is None else output_grid_holder(self, self._node_index)
        return (holder, reader) if reader is not None else (None, None)

    def _in_inference(self, inputs, outputs, training):
        """`outputs` in training; in inference, what the file writes (`_file_values`)."""
        return tf.__internal__.smart_cond.smart_cond(
            False if training is None else training,
            lambda: outputs,
            lambda: self._file_values(inputs, outputs),
        )

    def _file_values(self, inputs, outputs):
        """What the file writes for `outputs` of `inputs`, or `outputs` where that is unknown."""
        holders = [None if h is None else h() for h in getattr(self, "_grids", [None])]
        operands = self._operands(inputs)
        if len(operands) != 2 or len(holders) != 2 or None in holders:
            return outputs
        reader = output_grid_holder(self, self._node_index)
        if reader is None:
            return outputs
        grids = [holder.grid() for holder in holders]
        levels_a, levels_b = (
            requantize.pooled_levels(operand, *grid[:2]) if pooled else tf.round(operand / grid[0])
            for operand, grid, pooled in zip(
                operands, grids, getattr(self, "_pooled", (False, False)), strict=True
            )
        )
        (step_a, _, _), (step_b, _, _) = grids
        return self._requantized(levels_a, step_a, levels_b, step_b, reader.grid(), reader.bits)

    def _requantized(self, levels_a, step_a, levels_b, step_b, out_grid, num_bits):
        """The file's op of the operands' levels, onto `out_grid` (`_OP`'s)."""
        return self._OP(levels_a, step_a, levels_b, step_b, out_grid, num_bits)


class _FileMerge(FileOperation):
    """An Add or Multiply as a `FileOperation`."""

    def call(self, inputs, training=None):
        return self._in_inference(inputs, super().call(inputs), training)


class FileAdd(_FileMerge, keras.layers.Add):
    """An `Add` of two int8 tensors, whose inference computes the file's `ADD`.

    Where the .tflite holds both inputs on known grids (an input
    quantizer's, or a quantized layer's tracked output range) and writes the
    sum on the grid of the quantizer reading it (behind the activations the
    converter fuses into the `ADD`), inference gives the values the file
    writes (`requantize.add_requantize`). Training adds in float, and the
    quantizer reading the sum rounds it. Elsewhere it is an `Add`.

    Args:
        **kwargs: `Add` arguments (`name`, ...).
    """

    _OP = staticmethod(requantize.add_requantize)


class FileSubtract(_FileMerge, keras.layers.Subtract):
    """A `Subtract` of two int8 tensors, whose inference computes the file's `SUB`.

    As `FileAdd`, with `requantize.subtract_requantize`.

    Args:
        **kwargs: `Subtract` arguments (`name`, ...).
    """

    _OP = staticmethod(requantize.subtract_requantize)


class FileMultiply(_FileMerge, keras.layers.Multiply):
    """A `Multiply` of two int8 tensors, whose inference computes the file's `MUL`.

    As `FileAdd`, with `multiply_requantize`: an excitation gate (a sigmoid
    on its op's fixed grid) times the tensor it scales. (Swish's `MUL` is
    `FileActivation`'s.) A tensor times its hard sigmoid is one
    `HARD_SWISH` in the file (`hard_swish`): inference computes that op
    from the tensor's grid.

    Args:
        **kwargs: `Multiply` arguments (`name`, ...).
    """

    _OP = staticmethod(requantize.multiply_requantize)

    def _operand_grids(self, inputs):
        self._swished = swished_operand(inputs)
        if self._swished is None:
            return super()._operand_grids(inputs)
        return [grid_holder(inputs[self._swished])]

    def _file_values(self, inputs, outputs):
        if getattr(self, "_swished", None) is None:
            return super()._file_values(inputs, outputs)
        holder, reader = self._operand_and_reader()
        if reader is None:
            return outputs
        step = holder.grid()[0]
        levels = tf.round(inputs[self._swished] / step)
        return hard_swish_requantize(levels, step, reader.grid(), reader.bits)


class _FileProduct(_FileMerge):
    """A product of two int8 tensors, whose inference computes the file's `BATCH_MATMUL`.

    As `FileAdd`: where both inputs are on known grids (their input
    quantizers', a softmax's fixed grid) and a quantizer reads the product,
    inference takes the layer's product of the inputs' levels, exact int32
    sums, and requantizes them as the kernel that runs the op does, found
    by reading both kernels' results off converted files: XNNPACK takes it
    where the second input's int8 zero point is 0 (as a kernel's), and
    requantizes as it does a convolution's sums
    (`requantize.accumulator_requantize`); elsewhere (a ReLU's grid or a
    softmax's, zero point -128; an INT4 grid's carrier, whose levels start
    at -128) LiteRT's built-in kernel runs it, with its fixed-point
    multiplier (`requantize.product_requantize`).
    """

    def _requantized(self, levels_a, step_a, levels_b, step_b, out_grid, num_bits):
        sums = super(_FileMerge, self).call([levels_a, levels_b])  # the layer's own product
        by_xnnpack = requantize.accumulator_requantize(sums, step_a * step_b, out_grid, num_bits)
        built_in = requantize.product_requantize(sums, step_a, step_b, out_grid, num_bits)
        # The file's int8 zero point is the grid's level of 0 minus 128, at any width.
        zero_point_b = self._grids[1]().grid()[1] - 128.0
        return tf.where(tf.equal(zero_point_b, 0.0), by_xnnpack, built_in)


class FileDot(_FileProduct, keras.layers.Dot):
    """A `Dot` of two int8 tensors, whose inference computes the file's `BATCH_MATMUL`.

    See `_FileProduct`. One that normalizes its inputs is no int8 product:
    the file computes it in float, and so does this layer.

    Args:
        **kwargs: `Dot` arguments (`axes`, `name`, ...).
    """

    def _file_values(self, inputs, outputs):
        return outputs if self.normalize else super()._file_values(inputs, outputs)


class FileAttentionScores(_FileProduct, AttentionScores):
    """A `MultiHeadAttention`'s `query . key^T`, whose inference computes the file's op.

    See `_FileProduct`.
    """


class FileAttentionContext(_FileProduct, AttentionContext):
    """A `MultiHeadAttention`'s `scores . value`, whose inference computes the file's op.

    See `_FileProduct`.
    """


class FileScalarOperation(FileOperation, keras.layers.Layer):
    """An add or multiply of an int8 tensor and a number, whose inference computes the file's op.

    It stands for a TFOpLambda `x + c` or `x * c` (MobileNetV3's hard
    sigmoid gate: `relu6(x + 3) * (1 / 6)`), which the file computes as an
    int8 `ADD` or `MUL` with a constant operand that the converter
    quantizes on `[0, c]` (or `[c, 0]`) in 255 steps: `c` is 255 levels
    of the step `|c| / 255`. Where the file holds `x` on a known grid and
    writes the result on the grid of the quantizer reading it (behind the
    ReLU or ReLU6 it fuses), inference computes that op
    (`add_requantize`, `multiply_requantize`); training computes in float.

    Args:
        kind: "add" or "multiply".
        constant: The number (not 0).
        **kwargs: Base `Layer` arguments (`name`, ...).
    """

    def __init__(self, kind, constant, **kwargs):
        super().__init__(**kwargs)
        if kind not in ("add", "multiply"):
            raise ValueError(f"kind must be 'add' or 'multiply'. Received: kind={kind!r}")
        self.kind = kind
        self.constant = float(constant)

    def call(self, inputs, training=None):
        constant = tf.constant(self.constant, inputs.dtype)
        outputs = inputs + constant if self.kind == "add" else inputs * constant
        return self._in_inference(inputs, outputs, training)

    def _file_values(self, inputs, outputs):
        holder, reader = self._operand_and_reader()
        if reader is None:
            return outputs
        step = holder.grid()[0]
        # The converter's step for the constant: float32 of the float64 quotient.
        constant = np.float32(self.constant)
        constant_step = np.float32(abs(np.float64(constant)) / 255.0)
        operation = (
            requantize.add_requantize if self.kind == "add" else requantize.multiply_requantize
        )
        return operation(
            tf.round(inputs / step),
            step,
            tf.constant(255.0 if constant > 0 else -255.0),
            constant_step,
            reader.grid(),
            reader.bits,
        )

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "kind": self.kind, "constant": self.constant}


class FilePReLU(FileOperation, keras.layers.PReLU):
    """A `PReLU` of an int8 tensor, whose inference computes the file's `PRELU`.

    The file stores the alpha as int8 on the step `max|alpha| / 127` (zero
    point 0, the quotient in float32) and runs LiteRT's built-in kernel,
    which requantizes the level, or below 0 its product with the alpha's
    level, in fixed point (`requantize.prelu_requantize`) onto the grid of
    the quantizer reading the output. Where the file holds the input on a
    known grid and that quantizer is known, inference computes that;
    training computes the float `PReLU`.

    Args:
        **kwargs: `PReLU` arguments.
    """

    def call(self, inputs, training=None):
        return self._in_inference(inputs, super().call(inputs), training)

    def _file_values(self, inputs, outputs):
        holder, reader = self._operand_and_reader()
        if reader is None:
            return outputs
        step = holder.grid()[0]
        alpha_scale = divided(tf.reduce_max(tf.abs(self.alpha)), 127.0)
        alpha_scale = tf.where(alpha_scale > 0, alpha_scale, 1.0)  # an all-zero alpha
        return requantize.prelu_requantize(
            tf.round(inputs / step),
            step,
            tf.round(self.alpha / alpha_scale),
            alpha_scale,
            reader.grid(),
            reader.bits,
        )
