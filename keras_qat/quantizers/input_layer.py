"""The Keras layer that quantizes a quantized layer's input."""

import weakref
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.converter_facts import (
    MEANS,
    activation_bounds,
    computed_in_float,
    fused_activation,
    fuses_into_copies,
    is_opaque,
    keeps_layout,
    keeps_scale,
    leaky_slope,
    unquantized_with_weights,
)
from keras_qat.quantizers import ranges, requantize
from keras_qat.quantizers.quantizer_layer import QuantizerLayer
from keras_qat.quantizers.ulq import UlqQuantizer


class _Piece(NamedTuple):
    """A slice of a quantizer's input, and the grid the file holds it on.

    Attributes:
        width: Its size along the concatenation axis (`None`: the whole input).
        source: A weakref to the `RequantizingLayer` whose grid the slice is
            on in the file (the source's variables are its own; for a
            `MEAN`, also a quantized layer's tracked output range), or
            `None` for a float slice.
        pooled: Whether an int8 average pooling of that grid wrote it.
        relu: The ceiling of an int8 RELU (`inf`) or RELU6 (6) of that grid
            that writes it on the reader's grid (requantizing in its own
            arithmetic), or `None`.
        leaky: The slope of an int8 LEAKY_RELU of that grid (the source may
            be a quantized layer's tracked output) that writes the slice,
            or `None`.
        mean_of: The number of values a global average pooling of that
            grid averaged into the slice (an int8 `MEAN` in the file), or
            `None`.
        chain: The calls from a quantized layer's op to the slice
            (`_accumulator_chain`), whose int32 accumulator the file may
            requantize straight onto the reader's grid, or `None`.
        from_float: Whether the file `QUANTIZE`s the slice from float: no
            quantizer precedes it (a model input, or what the model computes
            from its inputs before quantizing, such as a `Normalization`),
            or a layer the file computes in float wrote it (an ELU).
    """

    width: int | None
    source: weakref.ref | None
    pooled: bool = False
    relu: float | None = None
    mean_of: int | None = None
    leaky: float | None = None
    chain: tuple | None = None
    from_float: bool = False

    def requantized(self, ties):
        """Whether the file's values may differ from the fake-quant's on this slice.

        An op's requantized sums (`chain`, `mean_of`) and a quantized float
        tensor differ only on ties and within float32 error of one: with
        `ties` False (training) they count as the fake-quant's, which costs
        less.
        """
        if self.chain is not None or self.mean_of is not None or self.from_float:
            return ties
        return self.source is not None


def _producer(tensor):
    """The layer that produced Keras tensor `tensor`, and that call's inputs (a list)."""
    layer, node_index, _ = tensor._keras_history
    return layer, tf.nest.flatten(layer.inbound_nodes[node_index].keras_inputs)


def _relu_ceiling(layer):
    """The ceiling of the int8 RELU or RELU6 the file computes for `layer` (`inf`: none), or `None`.

    `None` for any other layer.
    """
    if not fused_activation(layer):
        return None
    floor, ceiling = activation_bounds(layer)
    if floor != 0.0:
        return None
    return float("inf") if ceiling is None else ceiling


def tracks_output(layer, node_index):
    """Whether `layer`'s call `node_index` rounds its output on a range it tracks (a wrapper's).

    Args:
        layer: A layer of a built Functional model.
        node_index: The index of the call in `layer.inbound_nodes`.

    Returns:
        A bool.
    """
    tracks = getattr(layer, "tracks_output", None)
    return tracks is not None and tracks(node_index)


def reading_nodes(layer, node_index):
    """The nodes (calls) that read the output of `layer`'s call `node_index`.

    Args:
        layer: A layer of a built Functional model.
        node_index: The index of the call in `layer.inbound_nodes`.

    Returns:
        A list of nodes, each its reader's call (`node.outbound_layer`).
    """
    node = layer.inbound_nodes[node_index]
    return [read for read in layer.outbound_nodes if node in read.parent_nodes]


def _readers(link):
    """The layers that read the output of the call `link` (`(layer weakref, node index)`)."""
    return [read.outbound_layer for read in reading_nodes(link[0](), link[1])]


def _accumulator_chain(tensor):
    """The calls from a quantized layer's op to `tensor`, if the op may write it, else `None`.

    That is a wrapper (a layer with an `accumulator_step`) without an output
    quantizer of its own, then fused activation layers, then layers that
    keep each value on the op's grid and the channels' layout
    (`keeps_layout`: ResNet's stem pads and max-pools its first
    convolution's output; a Flatten before a Dense, channels last, which
    `_laid_out` follows; not a Permute that moves the channels): `((layer weakref, node
    index), ...)`, the wrapper's call first. Whether each call is the one
    reader of the one before is known only once the model is built
    (`_writes_accumulator`).
    """
    chain = []
    activated = False  # whether a fused activation was passed (no padding before one)
    while getattr(tensor, "_keras_history", None) is not None:
        layer, node_index, _ = tensor._keras_history
        chain.insert(0, (weakref.ref(layer), node_index))
        if getattr(layer, "gathers_rows", False):
            return None  # a table's rows: no sums
        if hasattr(layer, "accumulator_step"):
            rounds = layer.rounds_output(node_index) or layer.quantize_config.output_on_reader
            return None if rounds else tuple(chain)
        _, inputs = _producer(tensor)
        if len(inputs) != 1:
            return None
        channels_last = getattr(layer, "data_format", "channels_last") == "channels_last"
        if fused_activation(layer):
            activated = True
        elif activated or not (keeps_layout(layer) and channels_last):
            return None
        tensor = inputs[0]
    return None


def _laid_out(step, values):
    """An op's accumulator `step` for each of `values`, its output behind `_accumulator_chain`.

    The chain keeps the channel the fastest-varying index of every sample,
    through a Flatten or Reshape too, where a per-channel step no longer
    broadcasts: it is tiled over each sample in that order.

    Args:
        step: A scalar, or one step per output channel of the op.
        values: The chain's output (or a slice of it along the last axis).

    Returns:
        A tensor that broadcasts against `values`.
    """
    if step.shape.rank == 0 or step.shape[0] == 1:
        return step
    per_sample = tf.shape(values)[1:]
    return tf.reshape(tf.tile(step, [tf.reduce_prod(per_sample) // tf.size(step)]), per_sample)


def _writes_accumulator(piece):
    """Whether the file writes `piece` straight from its op's accumulator on the reader's grid.

    The converter fuses the activations into the op when each reads the
    tensor before it alone. The op's output is then on the grid of the
    one quantizer reading it (any other readers take it on that grid), or
    of the Concatenate that alone reads a slice.
    """
    if piece.chain is None or any(link[0]() is None for link in piece.chain):
        return False
    if any(len(_readers(link)) != 1 for link in piece.chain[:-1]):
        return False
    readers = _readers(piece.chain[-1])
    if piece.width is not None:
        return len(readers) == 1
    return sum(isinstance(reader, RequantizingLayer) for reader in readers) == 1


def _written_link(piece):
    """The index in `piece.chain` of the call whose output the file's op writes.

    The converter fuses an activation into the op only where it reads the
    tensor before it alone (or into a copy of the op: `fuses_into_copies`):
    after the first call that several layers read, each activation is an
    op of its own (a RELU, which requantizes).
    """
    if fuses_into_copies(piece.chain[0][0]()):
        return len(piece.chain) - 1
    for index, link in enumerate(piece.chain[:-1]):
        if len(_readers(link)) != 1:
            return index
    return len(piece.chain) - 1


def _scale_giver(piece):
    """The `RequantizingLayer` whose grid the file writes `piece`'s op's output on, or `None`.

    When several layers read that output (a U-Net's skip connection: a max
    pooling before the next quantizer, and a Concatenate), it is on the
    grid of the one quantizer reading it behind layers that keep the scale,
    and the Concatenate requantizes it from there (the export rounds it
    before the Concatenate behind a cap, which makes the converter do so:
    `tflite.fixed_quant.QuantizedBefore`); so does a ReLU of it, a RELU op.
    """
    if piece.chain is None or any(link[0]() is None for link in piece.chain):
        return None
    givers, links = set(), [piece.chain[_written_link(piece)]]
    while links:
        layer, node_index = links.pop()
        for read in reading_nodes(layer(), node_index):
            reader = read.outbound_layer
            if isinstance(reader, RequantizingLayer):
                givers.add(reader)
            elif keeps_scale(reader):
                links.append((weakref.ref(reader), reader.inbound_nodes.index(read)))
    return givers.pop() if len(givers) == 1 else None


def _averaged(layer, tensor):
    """How many values of `tensor` global average pooling `layer` averages, or `None` if unknown."""
    if layer.data_format != "channels_last" or None in tensor.shape[1:-1]:
        return None
    return int(np.prod(tensor.shape[1:-1]))


def _quantizing(layer):
    """Whether `layer` is a quantizer or a quantized layer (a wrapper)."""
    return isinstance(layer, QuantizerLayer) or hasattr(layer, "quantize_config")


def _before_any_quantizer(tensor):
    """Whether no quantizer or quantized layer computes anything `tensor` depends on.

    The export keeps such a tensor float (`tflite/float_front.py`: a
    `Normalization` or a rescaling of the model input).
    """
    stack, seen = [tensor], set()
    while stack:
        tensor = stack.pop()
        if getattr(tensor, "_keras_history", None) is None or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        layer, inputs = _producer(tensor)
        if _quantizing(layer):
            return False
        stack.extend(inputs)
    return True


def _written_in_float(tensor, known):
    """Whether a layer the file computes in float wrote `tensor`, behind weightless layers.

    Those are the `converter_facts.computed_in_float` layers (an ELU), the
    user's own layers with weights, and the layers with weights keras_qat
    leaves unquantized (`converter_facts.unquantized_with_weights`:
    `retrain_enable: false`, a `SeparableConv1D`); the export keeps the
    weightless layers after them float (`tflite/float_front.py`).
    `known`: tensor id -> answer, for the tensors already asked about.
    """
    if getattr(tensor, "_keras_history", None) is None:
        return False
    if id(tensor) not in known:
        layer, inputs = _producer(tensor)
        if _quantizing(layer):
            known[id(tensor)] = False
        elif computed_in_float(layer) or is_opaque(layer) or unquantized_with_weights(layer):
            known[id(tensor)] = True
        else:
            known[id(tensor)] = (
                bool(inputs)
                and not layer.weights
                and all(_written_in_float(joined, known) for joined in inputs)
            )
    return known[id(tensor)]


def _grid_piece(tensor, width):
    """The grid `tensor` is on in the file, as a `_Piece` of size `width`.

    `tensor` is on a `RequantizingLayer`'s grid when that layer produced
    it, behind layers that keep the scale (max pooling, padding, reshapes)
    and at most one average pooling (an int8 average pooling keeps its
    input's grid; after two, the Keras values no longer tell the first
    one's rounded sums), or a global average pooling of such a tensor (a
    `MEAN`, which requantizes its sums). A ReLU read directly (not fused
    into the op before it, as after a Concatenate), behind layers that keep
    the scale too, leaves a grid that its RELU op requantizes; so does a
    leaky ReLU (a LEAKY_RELU), also of a quantized layer's tracked output.
    An Embedding's rows are on its table's grid (the file gathers them as
    int8 and `QUANTIZE`s them for a reader on another grid).
    A tensor no quantizer precedes, or that a layer the file computes in
    float wrote, is float in the file, which `QUANTIZE`s it.
    """
    if _before_any_quantizer(tensor) or _written_in_float(tensor, {}):
        return _Piece(width, None, from_float=True)
    chain = _accumulator_chain(tensor)
    if chain is not None:
        return _Piece(width, None, chain=chain)
    pooled = False
    mean_of = leaky = relu = None
    # The activation op writes on the reader's grid behind layers that keep the scale too.
    activated = tensor
    while getattr(activated, "_keras_history", None) is not None:
        layer, inputs = _producer(activated)
        if len(inputs) != 1:
            break
        if (ceiling := _relu_ceiling(layer)) is not None:
            relu, tensor = ceiling, inputs[0]
        elif (slope := leaky_slope(layer)) is not None:
            leaky, tensor = slope, inputs[0]
        elif keeps_scale(layer):
            activated = inputs[0]
            continue
        break
    requantized = relu is not None or leaky is not None
    while getattr(tensor, "_keras_history", None) is not None:
        layer, inputs = _producer(tensor)
        # A quantized layer's output on its tracked range is a grid to a MEAN,
        # a RELU or a LEAKY_RELU.
        reads_tracked = mean_of is not None or requantized
        tracked = reads_tracked and tracks_output(layer, tensor._keras_history.node_index)
        if isinstance(layer, RequantizingLayer) or tracked or getattr(layer, "gathers_rows", False):
            return _Piece(width, weakref.ref(layer), pooled, relu, mean_of, leaky=leaky)
        if len(inputs) != 1 or mean_of is not None:
            break  # a global average pooling reads its grid directly
        if isinstance(layer, MEANS):
            mean_of = None if pooled or requantized else _averaged(layer, inputs[0])
            if mean_of is None:
                break
        else:
            pooling = isinstance(layer, keras.layers.AveragePooling2D)
            if (pooled or requantized) and pooling:
                break
            if not (pooling or keeps_scale(layer)):
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
    return piece.source is not None and piece.relu is None and piece.leaky is None


def scale_given_elsewhere(tensor):
    """Whether an op writes `tensor` on the grid of a quantizer that reads it elsewhere.

    That is an op's output read by one quantizer behind layers that keep
    the scale and by other layers (`_scale_giver`), for which the file
    requantizes it.

    Args:
        tensor: A Keras tensor of a built Functional model.

    Returns:
        A bool.
    """
    piece = _grid_piece(tensor, None)
    return (
        piece.chain is not None
        and not _writes_accumulator(piece)
        and _scale_giver(piece) is not None
    )


def pooling_source(tensor):
    """The `RequantizingLayer` on whose grid an int8 average pooling wrote `tensor`, or `None`.

    Args:
        tensor: A Keras tensor of a Functional model.

    Returns:
        The layer, when `tensor` is an average pooling's output (behind
        layers that keep the scale) of a tensor on that layer's grid.
    """
    piece = _grid_piece(tensor, None)
    requantized = piece.relu is not None or piece.leaky is not None
    if piece.source is None or not piece.pooled or requantized:
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
    quantizer's own gradients in training (inference computes the values
    alone, as the quantized layers' integer sums do: no gradient flows
    there). So does inference for the output of a
    quantized layer's op (behind the activations the converter fuses into
    it, and padding or max pooling), which the file requantizes from the
    op's int32 sums, and for a global average pooling of a grid (an int8
    `MEAN`); training keeps the fake-quant there, which parts from them on
    ties only (and where the file rounds a skip connection twice, by up to
    a step). Subclasses give the quantizer's grid (`grid`) and its width
    (`bits`).

    A layer called at several places computes each call's file arithmetic:
    its calls after the first pass their index in `inbound_nodes`.

    Args:
        quantizer: The activation quantizer.
        **kwargs: Base `Layer` arguments (`name`, ...).

    Call arguments:
        inputs: The tensor to round.
        training: Whether the model is training. Defaults to `None`.
        call_index: The call this is, which the layer sets when called on
            a Keras tensor. Defaults to 0.
    """

    def __init__(self, quantizer, **kwargs):
        super().__init__(quantizer, **kwargs)
        # Call index -> how the file holds that call's input (`_grid_pieces`).
        # A plain dict, outside Keras's attribute tracking, which would save it
        # with the model (and refuses its int keys): calls rebuild it.
        object.__setattr__(self, "_calls", {})

    def __call__(self, inputs, *args, **kwargs):
        if getattr(inputs, "_keras_history", None) is not None:
            # A layer called at several places (a convolution applied twice,
            # one pooling on two branches) reads each call's input on other
            # grids. The index, kept in the call's node, tells the calls apart
            # when the model runs, and when it is rebuilt from its config.
            index = kwargs.get("call_index", len(self.inbound_nodes))
            if index:
                kwargs["call_index"] = index
            self._calls[index] = _grid_pieces(inputs)
        return super().__call__(inputs, *args, **kwargs)

    def _held(self, call_index):
        """`(axis, pieces)` of call `call_index` (`_grid_pieces`), or one float piece if unknown."""
        return self._calls.get(call_index, (None, [_Piece(None, None)]))

    @property
    def grid_sources(self):
        """Per slice of the first call's input, the `InputQuantizeLayer` whose grid it is on.

        `None` for a slice on no grid. One entry, unless the input is a
        Concatenate of tensors on grids.
        """
        return [None if piece.source is None else piece.source() for piece in self._held(0)[1]]

    @property
    def bits(self):
        """The width of the quantizer's grid, 8 or 4."""
        raise NotImplementedError

    def grid(self):
        """The fake-quant op's grid of the current bounds: `requantize.op_grid`'s triple."""
        raise NotImplementedError

    def call(self, inputs, training=None, call_index=0):
        outputs = super().call(inputs, training)
        return self._file_values_of(inputs, outputs, training, call_index)

    def _file_values_of(self, inputs, outputs, training, call_index):
        """`_file_values` of call `call_index`, in training or in inference."""
        return tf.__internal__.smart_cond.smart_cond(
            False if training is None else training,
            lambda: self._file_values(inputs, outputs, call_index, ties=False),
            lambda: self._file_values(inputs, outputs, call_index, ties=True),
        )

    def _file_values(self, inputs, outputs, call_index, ties):
        """`outputs` with the file's values forward and the quantizer's gradients backward.

        In inference (`ties`), the file's values alone: the fake-quant that
        would carry the gradients is then not computed.
        """
        axis, pieces = self._held(call_index)
        if not any(piece.requantized(ties) for piece in pieces):
            return outputs
        if axis is None:
            written = self._written(inputs, outputs, pieces[0], ties)
        else:  # slice by slice
            widths = [piece.width for piece in pieces]
            written = tf.concat(
                [
                    self._written(*slices, piece, ties)
                    for *slices, piece in zip(
                        tf.split(inputs, widths, axis),
                        tf.split(outputs, widths, axis),
                        pieces,
                        strict=True,
                    )
                ],
                axis,
            )
        if ties:
            return written
        return outputs + tf.stop_gradient(written - outputs)

    def _written(self, inputs, outputs, piece, ties=True):
        """What the file writes for one slice: `outputs` where it is a float, else requantized.

        With `ties` False, a slice that differs only on ties keeps `outputs`
        (`_Piece.requantized`).
        """
        if not piece.requantized(ties):
            return outputs
        if piece.chain is not None:
            return self._written_from_sums(inputs, outputs, piece)
        if piece.from_float:
            return requantize.float_quantize(inputs, self.grid(), self.bits)
        source = piece.source()
        # A `ReaderGridLayer` lending this grid (a Concatenate's input) holds
        # the slice on it already, unless a MEAN of it wrote the slice; its
        # lender is unknown while this is built.
        if hasattr(source, "lender") and (
            source.lender is None or (source.lender is self and piece.mean_of is None)
        ):
            return outputs
        in_grid = source.grid()
        in_scale, zero_point, _ = in_grid
        if piece.relu is not None:
            levels = tf.round(inputs / in_scale)
            return requantize.relu_requantize(levels, in_scale, self.grid(), self.bits, piece.relu)
        if piece.leaky is not None:
            # The activation's input levels: its output, below 0 divided by the slope.
            levels = tf.round(tf.where(inputs >= 0, inputs, inputs / piece.leaky) / in_scale)
            written, accepted = requantize.leaky_relu_requantize(
                levels, in_scale, piece.leaky, self.grid(), self.bits
            )
            # Where XNNPACK declines the op, LiteRT's built-in kernel runs it: not simulated.
            return tf.where(accepted, written, outputs)
        if piece.mean_of is not None:
            sums = tf.round(inputs * (piece.mean_of / in_scale))
            return requantize.mean_requantize(sums, in_grid, piece.mean_of, self.grid(), self.bits)
        if piece.pooled:
            levels = requantize.pooled_levels(inputs, in_scale, zero_point)
        else:
            levels = tf.round(inputs / in_scale)
        return requantize.file_requantize(levels, in_scale, self.grid(), self.bits)

    def _written_from_sums(self, inputs, outputs, piece):
        """What the file writes for a slice an op writes from its sums (`piece.chain`).

        The op writes on this quantizer's grid, or on another's that the
        file requantizes from (`_scale_giver`); `outputs` where neither is
        known.
        """
        giver = self if _writes_accumulator(piece) else _scale_giver(piece)
        sums_step = None if giver is None else piece.chain[0][0]().accumulator_step()
        # The activations after the op's output are RELU ops of their own,
        # which read it on another quantizer's grid (one RELU is simulated).
        after = [link[0]() for link in piece.chain[_written_link(piece) + 1 :]]
        ceilings = [_relu_ceiling(layer) for layer in after if fused_activation(layer)]
        unknown = None in ceilings or len(ceilings) > 1 or (ceilings and giver is self)
        if sums_step is None or unknown:
            return outputs
        sums_step = _laid_out(sums_step, inputs)
        sums = tf.round(inputs / sums_step)
        if giver is self:
            return requantize.accumulator_requantize(sums, sums_step, self.grid(), self.bits)
        # On an INT4 grid's int8 carrier: the MINIMUM capping it is on the giver's path only.
        given_scale = giver.grid()[0]
        written = requantize.accumulator_requantize(sums, sums_step, giver.grid(), 8)
        levels = tf.round(written / given_scale)
        if ceilings:
            return requantize.relu_requantize(
                levels, given_scale, self.grid(), self.bits, ceilings[0]
            )
        return requantize.file_requantize(levels, given_scale, self.grid(), self.bits)


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

    def call(self, inputs, training=None, call_index=0):
        if not self.follows_pooling:
            return super().call(inputs, training, call_index)
        if self.followed is None:
            return inputs  # only while the model is built: the concatenation comes later
        written = self._written(inputs, inputs, self._held(call_index)[1][0])
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
