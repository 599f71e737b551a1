"""An Embedding as the .tflite stores it: its quantized table, gathered as int8.

TFLite's GATHER takes one scale for its table and no 4-bit table. The export
copy therefore replaces each quantized Embedding with `Int8Table`: the QAT
model's table, already on its grid (`k * s`, |k| <= 127, or <= 7 at INT4),
fake-quantized once more on the 8-bit grid of step `s` (INT8) or `s / 16`
(INT4, the int8 carrier of the other INT4 weights, `wrapper.INT4_SPREAD`),
which leaves every value where it is and gives the converter that grid.
"""

import numpy as np
import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.errors import ExportError
from keras_qat.plain_call import PlainCall
from keras_qat.quantizers import ranges
from keras_qat.quantizers.introspection import weight_scales
from keras_qat.quantizers.wrapper import INT4_SPREAD, kernel_entries


class Int8Table(PlainCall, keras.layers.Layer):
    """Gathers rows of a fixed table through an 8-bit fake-quant of step `step`.

    Args:
        table: The quantized table, `(rows, width)`.
        step: The int8 grid's step.
        **kwargs: Base `Layer` arguments (`name`, ...).
    """

    def __init__(self, table, step, **kwargs):
        super().__init__(**kwargs)
        self.table = np.asarray(table, np.float32)
        self.step = float(step)

    def call(self, inputs):
        bound = self.step * ranges.signed_qmax(8)
        table = tf.quantization.fake_quant_with_min_max_args(
            tf.constant(self.table), -bound, bound, num_bits=8, narrow_range=True
        )
        return tf.gather(table, tf.cast(inputs, tf.int32))

    def get_config(self):
        return {**super().get_config(), "table": self.table.tolist(), "step": self.step}


def int8_table(wrapper):
    """The `Int8Table` standing for a wrapped Embedding in the export copy.

    Args:
        wrapper: A `QatWrapper` of an Embedding.

    Returns:
        An `Int8Table` of the wrapper's name.

    Raises:
        ExportError: for a table with one scale per row, which GATHER cannot read.
    """
    config = wrapper.quantize_config
    if config.channel_wise:
        raise ExportError(
            f"Layer '{wrapper.name}': retrain_weight_config.channel_wise is true (one scale per "
            "row), and TFLite's GATHER reads one scale for its whole table. Set it to false "
            "to export to TFLite (export_saved_model keeps the per-row scales)."
        )
    ((kernel, quantizer, variables),) = kernel_entries(wrapper)
    table = quantizer(kernel, False, variables).numpy()
    (scale,) = weight_scales(wrapper)["embeddings"]
    spread = INT4_SPREAD if config.dst_type == "INT4" else 1
    return Int8Table(table, scale / spread, name=wrapper.name)
