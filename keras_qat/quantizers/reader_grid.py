"""A rounding on the grid of the quantizer after a reader, with no range of its own.

The converter gives some ops one scale for their input and output, or for
all their inputs: a bilinear resize (`RESIZE_BILINEAR` reads and writes
the grid of the quantizer reading its output) and a concatenation (its
inputs are written on its one scale). The layer before such an op writes
its int8 output on that grid, for every reader: the QAT model rounds there
too (`ReaderGridLayer`).
"""

import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.converter_facts import keeps_scale
from keras_qat.quantizers.file_arithmetic import output_grid_holder
from keras_qat.quantizers.input_layer import InputQuantizeLayer, RequantizingLayer, reading_nodes


class ReaderGridLayer(RequantizingLayer):
    """Rounds a tensor on the grid the file writes the output of one of its readers on.

    That reader is its one reader, a bilinear resize, or the Concatenate
    among its readers; the quantizer whose grid it is (`lender`) is found
    once the model is built (`output_grid_holder`). The forward pass rounds
    on its grid, or computes what the file writes there
    (`RequantizingLayer`: a convolution's requantized sums in inference);
    the gradient passes straight through, and the lender's range gets none
    from here.

    Args:
        **kwargs: Base `Layer` arguments (`name`, ...).
    """

    def __init__(self, **kwargs):
        super().__init__(None, **kwargs)

    def build(self, input_shape):
        keras.layers.Layer.build(self, input_shape)  # no variables of its own

    @property
    def lender(self):
        """The `RequantizingLayer` whose grid this rounds on (`None` while the model is built).

        A Concatenate among the readers lends its grid also behind layers
        that keep the scale (a global max pooling beside a global average
        pooling, joined); so does an input quantizer among them, where no
        Concatenate is (a global max pooling read by a quantizer beside a
        global average pooling), and one that is the one reader.
        """
        reads = reading_nodes(self, 0) if self.inbound_nodes else []
        if len(reads) == 1:
            reader = reads[0].outbound_layer
            if isinstance(reader, InputQuantizeLayer):
                return reader
            return output_grid_holder(reader, reader.inbound_nodes.index(reads[0]))
        while reads:
            read = reads.pop(0)
            reader, index = read.outbound_layer, read.outbound_layer.inbound_nodes.index(read)
            if isinstance(reader, keras.layers.Concatenate):
                return output_grid_holder(reader, index)
            if isinstance(reader, InputQuantizeLayer):
                return reader
            if keeps_scale(reader):
                reads.extend(reading_nodes(reader, index))
        return None

    @property
    def owner(self):
        """The quantizer whose grid this is: the lender, or the one lending to the lender.

        A resize whose output another resize reads (an `UpSampling2D` into a
        `Resizing`) reads the grid of that resize's `ReaderGridLayer`.
        """
        owner = self.lender
        while isinstance(owner, ReaderGridLayer):
            owner = owner.lender
        return owner

    @property
    def bits(self):
        return self.lender.bits

    def grid(self):
        return self.lender.grid()

    def call(self, inputs, training=None, call_index=0):
        lender = self.lender
        if lender is None:
            return inputs  # only while the model is built: the reader comes later
        scale, _, low = (tf.stop_gradient(value) for value in lender.grid())
        high = low + scale * float(2**lender.bits - 1)
        rounded = tf.quantization.fake_quant_with_min_max_vars(
            inputs, low, high, num_bits=lender.bits
        )
        outputs = inputs + tf.stop_gradient(rounded - inputs)
        return self._file_values_of(inputs, outputs, training, call_index)
