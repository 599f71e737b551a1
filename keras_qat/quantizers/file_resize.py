"""A bilinear resize of an int8 tensor, computed as the file's `RESIZE_BILINEAR`.

The converter gives the op one scale for its input and output: the scale of
the quantizer reading its output (behind layers that keep the scale, or a
Concatenate alone reading it). The layer before writes its int8 output on
that grid, and the op interpolates those levels in fixed point and rounds
them onto it again: two roundings on one grid, which a fake-quant after a
float interpolation does not make (a U-Net-like CNN: 64 % of its outputs
exact, up to 4 steps off). So the QAT model rounds the resize's input on
its reader's grid (`reader_grid.ReaderGridLayer`) and
interpolates as XNNPACK does: a bilinear `UpSampling2D` as a
`FileResizeBilinear`, a bilinear `Resizing` as a `FileResizing`.
"""

import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.quantizers import requantize
from keras_qat.quantizers.file_arithmetic import FileOperation
from keras_qat.quantizers.ranges import divided


class _BilinearResize(FileOperation):
    """A mixin for a bilinear resize layer whose forward pass computes the file's `RESIZE_BILINEAR`.

    Where its input is on a known grid (`grid_holder`: a `ReaderGridLayer`'s,
    or the tracked range of the quantized layer before it where no
    quantizer reads the output), it interpolates the levels as XNNPACK
    does (`requantize.resize_bilinear_levels`; LiteRT's built-in kernel
    where it runs the op) and writes them on that grid, in training too
    (the gradient is the float interpolation's). A `ReaderGridLayer`'s grid
    is its reader's, whose fake-quant then keeps the values. Its
    `plain_copy` is the plain layer.
    """

    def call(self, inputs, training=None):
        outputs = super().call(inputs)
        if self._plain:
            return outputs
        return outputs + tf.stop_gradient(self._file_values(inputs, outputs) - outputs)

    def _file_values(self, inputs, outputs):
        reference = getattr(self, "_grids", [None])[0]
        holder = None if reference is None else reference()
        if holder is None:
            return outputs
        grid = holder.grid()
        scale, zero_point, low = grid
        levels = tf.round(divided(inputs - low, scale)) - zero_point
        size = requantize.spatial_size(outputs)
        if self._size_computed_in_file():
            interpolated = requantize.builtin_resize_bilinear_levels(levels, zero_point, size)
        else:
            interpolated = requantize.resize_bilinear_levels(levels, size)
        # Tracked ranges and fixed grids are 8-bit; an input quantizer's may be 4-bit.
        return requantize.on_grid(interpolated, grid, getattr(holder, "bits", 8))

    def _size_computed_in_file(self):
        """Whether the file computes the output size when it runs (XNNPACK then declines the op)."""
        return False


class FileResizeBilinear(_BilinearResize, keras.layers.UpSampling2D):
    """A bilinear `UpSampling2D` computing the file's `RESIZE_BILINEAR` (`_BilinearResize`).

    Of a tensor whose height or width is known only when the model runs,
    the file computes the output size (SHAPE, SLICE, MUL), XNNPACK declines
    the op and LiteRT's built-in kernel runs it
    (`requantize.builtin_resize_bilinear_levels`).

    Args:
        **kwargs: `UpSampling2D` arguments (`size`, `interpolation`, ...).
    """

    def _size_computed_in_file(self):
        # The model's input shape, not the traced one: Keras traces a predict
        # function on the batch's known shape, and the file's op is the same.
        return None in tuple(self.get_input_shape_at(0))[1:3]


class FileResizing(_BilinearResize, keras.layers.Resizing):
    """A bilinear `Resizing` computing the file's `RESIZE_BILINEAR` (`_BilinearResize`).

    Args:
        **kwargs: `Resizing` arguments (`height`, `width`, ...).
    """
