"""The two products of dot-product attention, as layers of their own.

`MultiHeadAttention` computes them inside its `call` with `tf.einsum`; as
layers they can be quantized like any other (both inputs on a learned int8
grid, no weights) and the converter makes each one int8 BATCH_MATMUL. Heads
are moved next to the batch axis first, the layout BATCH_MATMUL takes.
Query, key and value are `(batch, length, heads, depth)`, as the projections
of `MultiHeadAttention` write them.
"""

import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.plain_call import PlainCall


class AttentionScores(PlainCall, keras.layers.Layer):
    """`query . key^T` per head: `(batch, heads, query length, key length)`.

    The `1 / sqrt(depth)` scaling of `MultiHeadAttention` is not applied
    here: the query projection's weights carry it (see `attention`).
    """

    def call(self, inputs):
        query, key = inputs
        query = tf.transpose(query, (0, 2, 1, 3))
        key = tf.transpose(key, (0, 2, 3, 1))
        return tf.matmul(query, key)


class AttentionContext(PlainCall, keras.layers.Layer):
    """`scores . value` per head, back in `(batch, query length, heads, depth)`."""

    def call(self, inputs):
        scores, value = inputs
        value = tf.transpose(value, (0, 2, 1, 3))
        return tf.transpose(tf.matmul(scores, value), (0, 2, 1, 3))


ATTENTION_LAYERS = {cls.__name__: cls for cls in (AttentionScores, AttentionContext)}
