"""The Keras layer that quantizes a quantized layer's input."""

import weakref
from typing import NamedTuple

import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.converter_facts import SCALE_KEEPING, activation_bounds, fused_activation
from keras_qat.quantizers import ranges, requantize
from keras_qat.quantizers.quantizer_layer import QuantizerLayer
from keras_qat.quantizers.ulq import UlqQuantizer


class _Piece(NamedTuple):
    """A slice of a quantizer's input, and the grid the file holds it on.

    Attributes:
        width: Its size along the concatenation axis (`None`: the whole input).
        source: A weakref to the `RequantizingLayer` whose grid the slice is
            on in the file (the source's variables are its own), or `None`
            for a float slice.
        pooled: Whether an int8 average pooling of that grid wrote it.
        relu: Whether an int8 RELU of that grid writes it on the reader's
            grid (requantizing in its own arithmetic).
    """

    width: int | None
    source: weakref.ref | None
    pooled: bool = False
    relu: bool = False


def _producer(tensor):
    """The layer that produced Keras tensor `tensor`, and that call's inputs (a list)."""
    layer, node_index, _ = tensor._keras_history
    return layer, tf.nest.flatten(layer.inbound_nodes[node_index].keras_inputs)


def _plain_relu(layer):
    """Whether the file computes `layer` as an int8 RELU (no ceiling, slope or threshold)."""
    return fused_activation(layer) and activation_bounds(layer) == (0.0, None)


def _grid_piece(tensor, width):
    """The grid `tensor` is on in the file, as a `_Piece` of size `width`.

    `tensor` is on a `RequantizingLayer`'s grid when that layer produced
    it, behind layers that keep the scale (max pooling, padding, reshapes)
    and at most one average pooling (an int8 average pooling keeps its
    input's grid; after two, the Keras values no longer tell the first
    one's rounded sums). A ReLU read directly (not fused into the op before
    it, as after a Concatenate) leaves a grid that its RELU op requantizes.
    """
    pooled = relu = False
    if getattr(tensor, "_keras_history", None) is not None:
        layer, inputs = _producer(tensor)
        if _plain_relu(layer) and len(inputs) == 1:
            relu, tensor = True, inputs[0]
    while getattr(tensor, "_keras_history", None) is not None:
        layer, inputs = _producer(tensor)
        if isinstance(layer, RequantizingLayer):
            return _Piece(width, weakref.ref(layer), pooled, relu)
        pooling = isinstance(layer, keras.layers.AveragePooling2D)
        if len(inputs) != 1 or (pooled and pooling) or (relu and pooling):
            break
        if not (pooling or isinstance(layer, SCALE_KEEPING)):
            break
        pooled = pooled or pooling
        tensor = inputs[0]
    return _Piece(width, None)


def on_a_grid(tensor):
    """Whether Keras tensor `tensor` is on an input quantizer's grid in the file (`_grid_piece`).

    Args:
        tensor: A Keras tensor of a Functional model.

    Returns:
        A bool.
    """
    piece = _grid_piece(tensor, None)
    return piece.source is not None and not piece.relu


def pooling_source(tensor):
    """The `RequantizingLayer` on whose grid an int8 average pooling wrote `tensor`, or `None`.

    Args:
        tensor: A Keras tensor of a Functional model.

    Returns:
        The layer, when `tensor` is an average pooling's output (behind
        layers that keep the scale) of a tensor on that layer's grid.
    """
    piece = _grid_piece(tensor, None)
    if piece.source is None or not piece.pooled or piece.relu:
        return None
    return piece.source()


def _grid_pieces(tensor):
    """How the file holds `tensor`: `(axis, pieces)`, slices along `axis` and their grids.

    A Concatenate's inputs are slices of its output, each on its own grid
    (the file requantizes each to the concatenation's one scale). Any other
    tensor is one piece (`axis` None).
    """
    history = getattr(tensor, "_keras_history", None)
    if history is None or not isinstance(history.layer, keras.layers.Concatenate):
        return None, [_grid_piece(tensor, None)]
    _, inputs = _producer(tensor)
    axis = history.layer.axis % len(tensor.shape)
    pieces = [_grid_piece(joined, joined.shape[axis]) for joined in inputs]
    if any(piece.width is None for piece in pieces):  # no static size to slice by
        return None, [_Piece(None, None)]
    return axis, pieces


class RequantizingLayer(QuantizerLayer):
    """A `QuantizerLayer` whose input the .tflite may hold on other quantizers' grids.

    Reading a tensor that the file holds as int8 on an `InputQuantizeLayer`'s
    grid (found when the layer is called on a Keras tensor: the output of
    such a layer, behind max pooling, padding or reshapes, or an average
    pooling of one; or such a tensor joined by a Concatenate, slice by
    slice), the forward pass computes the file's int8-to-int8 requantization
    instead (`requantize`): the values the file writes, with the
    quantizer's own gradients. Subclasses give the quantizer's grid (`grid`)
    and its width (`bits`).

    Args:
        quantizer: The activation quantizer.
        **kwargs: Base `Layer` arguments (`name`, ...).
    """

    def __init__(self, quantizer, **kwargs):
        super().__init__(quantizer, **kwargs)
        self._axis, self._pieces = None, [_Piece(None, None)]

    def __call__(self, inputs, *args, **kwargs):
        if getattr(inputs, "_keras_history", None) is not None:
            self._axis, self._pieces = _grid_pieces(inputs)
        return super().__call__(inputs, *args, **kwargs)

    @property
    def grid_sources(self):
        """Per slice of the input, the `InputQuantizeLayer` whose grid it is on, or `None`.

        One entry, unless the input is a Concatenate of tensors on grids.
        """
        return [None if piece.source is None else piece.source() for piece in self._pieces]

    @property
    def bits(self):
        """The width of the quantizer's grid, 8 or 4."""
        raise NotImplementedError

    def grid(self):
        """The fake-quant op's grid of the current bounds: `requantize.op_grid`'s triple."""
        raise NotImplementedError

    def call(self, inputs, training=None):
        outputs = super().call(inputs, training)
        if all(piece.source is None for piece in self._pieces):
            return outputs
        if self._axis is None:
            written = self._written(inputs, outputs, self._pieces[0])
        else:
            widths = [piece.width for piece in self._pieces]
            written = tf.concat(
                [
                    self._written(*slices, piece)
                    for *slices, piece in zip(
                        tf.split(inputs, widths, self._axis),
                        tf.split(outputs, widths, self._axis),
                        self._pieces,
                        strict=True,
                    )
                ],
                self._axis,
            )
        # The file's values forward, the quantizer's gradients backward.
        return outputs + tf.stop_gradient(written - outputs)

    def _written(self, inputs, outputs, piece):
        """What the file writes for one slice: `outputs` where it is a float, else requantized."""
        if piece.source is None:
            return outputs
        in_scale, zero_point, _ = piece.source().grid()
        if piece.relu:
            levels = tf.round(inputs / in_scale)
            return requantize.relu_requantize(levels, in_scale, self.grid(), self.bits)
        if piece.pooled:
            levels = requantize.pooled_levels(inputs, in_scale, zero_point)
        else:
            levels = tf.round(inputs / in_scale)
        return requantize.file_requantize(levels, in_scale, self.grid(), self.bits)


class InputQuantizeLayer(RequantizingLayer):
    """Applies an activation quantizer (`UlqQuantizer`) and owns its variables.

    It rounds a quantized layer's input; where the file holds that input on
    other grids it computes the file's requantization (`RequantizingLayer`).

    One that follows a pooling (`follows_pooling`) has no range of its own:
    its layer reads an int8 average pooling's output that a Concatenate
    joins too (DenseNet's first layer after a transition). The file
    requantizes that output once, onto the concatenation's grid, and the
    layer reads the result (the converter refuses a second range on it).
    So does the QAT model: the levels the pooling writes, requantized onto
    the grid of the quantizer that reads the concatenation (`followed`),
    whatever this quantizer's own setting. That tensor is int8 whatever the
    grid's width: an INT4 grid's carrier, which no MINIMUM caps there.

    Args:
        quantizer: The activation quantizer.
        target: Name of the layer whose input this quantizes, or a list of
            names when several layers read the one rounded tensor, for
            reports. Defaults to `None`.
        follows_pooling: Read the grid of the concatenation that joins an
            average pooling, as above. Defaults to `False`.
        **kwargs: Base `Layer` arguments (`name`, ...).

    Raises:
        ValueError: when a layer that follows a pooling is called on a
            tensor that is not an int8 average pooling's output.
    """

    def __init__(self, quantizer, target=None, follows_pooling=False, **kwargs):
        super().__init__(quantizer, **kwargs)
        self.target = target
        self.follows_pooling = follows_pooling

    def __call__(self, inputs, *args, **kwargs):
        if self.follows_pooling and getattr(inputs, "_keras_history", None) is not None:
            if pooling_source(inputs) is None:
                raise ValueError(
                    f"Input quantizer '{self.name}' follows a pooling, but its input is not "
                    "an average pooling of a quantized tensor."
                )
            self._pooling = weakref.ref(inputs._keras_history.layer)
        return super().__call__(inputs, *args, **kwargs)

    def build(self, input_shape):
        if self.follows_pooling:
            keras.layers.Layer.build(self, input_shape)  # no variables of its own
        else:
            super().build(input_shape)

    def call(self, inputs, training=None):
        if not self.follows_pooling:
            return super().call(inputs, training)
        if self.followed is None:
            return inputs  # only while the model is built: the concatenation comes later
        written = self._written(inputs, inputs, self._pieces[0])
        return inputs + tf.stop_gradient(written - inputs)

    @property
    def followed(self):
        """The `RequantizingLayer` whose grid a quantizer that follows a pooling reads, or `None`.

        That is the first one reading a Concatenate that joins the pooling
        (`None` before the model holding them is built, and when this does
        not follow a pooling).
        """
        pooling = getattr(self, "_pooling", None)
        if not self.follows_pooling or pooling is None or pooling() is None:
            return None
        for node in pooling().outbound_nodes:
            if isinstance(node.outbound_layer, keras.layers.Concatenate):
                for read in node.outbound_layer.outbound_nodes:
                    if isinstance(read.outbound_layer, RequantizingLayer):
                        return read.outbound_layer
        return None

    @property
    def bits(self):
        if self.follows_pooling:
            return 8
        return ranges.bits_of(self.quantizer.dst_type)

    def bounds(self):
        """`(clip_min, clip_max)` as scalar tensors (the nudged grid's when following a pooling)."""
        if not self.follows_pooling:
            return self.quantizer.bounds(self.quantizer_vars)
        scale, _, low = self.grid()
        return low, low + scale * float(2**self.bits - 1)

    def grid(self):
        if self.follows_pooling:
            return self.followed.grid()
        return requantize.op_grid(*self.bounds(), self.bits)

    @property
    def targets(self):
        """The names of the layers whose input this quantizes, a tuple."""
        if self.target is None:
            return ()
        return (self.target,) if isinstance(self.target, str) else tuple(self.target)

    def input_step(self):
        """The step of the quantizer's grid (the quantized layer's input step), a scalar tensor.

        `None` for one that follows a pooling while its model is built.
        """
        if self.follows_pooling and self.followed is None:
            return None
        return self.grid()[0]

    def get_config(self):
        return {
            **super().get_config(),
            "target": self.target,
            "follows_pooling": self.follows_pooling,
            "quantizer": keras.utils.serialize_keras_object(self.quantizer),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["quantizer"] = keras.utils.deserialize_keras_object(
            config["quantizer"], custom_objects={"UlqQuantizer": UlqQuantizer}
        )
        return cls(**config)
