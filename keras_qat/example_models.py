"""Small attention models, as tf_keras Functional models, for the tests, benchmarks and users.

Both are pre-norm transformer encoders: blocks of LayerNormalization ->
MultiHeadAttention -> residual Add -> LayerNormalization -> Dense-GELU-Dense
-> residual Add, then a LayerNormalization, average pooling over the tokens
and a Dense classifier (logits).
"""

import tensorflow as tf

from keras_qat._keras import keras

_L = keras.layers


def _encoder(x, dim, heads, blocks):
    for block in range(blocks):
        y = _L.LayerNormalization(epsilon=1e-6, name=f"ln{block}a")(x)
        y = _L.MultiHeadAttention(heads, dim // heads, name=f"mha{block}")(y, y)
        x = _L.Add(name=f"res{block}a")([x, y])
        y = _L.LayerNormalization(epsilon=1e-6, name=f"ln{block}b")(x)
        y = _L.Dense(2 * dim, activation="gelu", name=f"mlp{block}a")(y)
        y = _L.Dense(dim, name=f"mlp{block}b")(y)
        x = _L.Add(name=f"res{block}b")([x, y])
    x = _L.LayerNormalization(epsilon=1e-6, name="ln_final")(x)
    return _L.GlobalAveragePooling1D(name="pool")(x)


def vision_transformer(input_shape, classes, patch=4, dim=64, heads=4, blocks=2):
    """A ViT: patches embedded by a strided Conv2D, then the encoder.

    Args:
        input_shape: `(height, width, channels)`, both sides multiples of `patch`.
        classes: Outputs of the classifier.
        patch: Patch side. Defaults to `4`.
        dim: Token width. Defaults to `64`.
        heads: Attention heads (`dim` divisible by it). Defaults to `4`.
        blocks: Encoder blocks. Defaults to `2`.

    Returns:
        A `tf_keras.Model` named "vit".
    """
    images = keras.Input(input_shape, name="image")
    x = _L.Conv2D(dim, patch, strides=patch, name="patch_embed")(images)
    x = _L.Reshape((-1, dim), name="tokens")(x)
    logits = _L.Dense(classes, name="logits")(_encoder(x, dim, heads, blocks))
    return keras.Model(images, logits, name="vit")


def sequence_transformer(length, vocabulary, classes, dim=64, heads=4, blocks=2):
    """A text-style encoder: token and learned position embeddings, then the encoder.

    Args:
        length: Tokens per sequence.
        vocabulary: Distinct tokens.
        classes: Outputs of the classifier.
        dim: Token width. Defaults to `64`.
        heads: Attention heads (`dim` divisible by it). Defaults to `4`.
        blocks: Encoder blocks. Defaults to `2`.

    Returns:
        A `tf_keras.Model` named "sequence" taking int32 tokens `(batch, length)`.
    """
    tokens = keras.Input((length,), dtype="int32", name="tokens")
    x = _L.Embedding(vocabulary, dim, name="token_embed")(tokens)
    positions = tf.math.cumsum(tf.ones_like(tokens), axis=1) - 1
    x = _L.Add(name="embed")([x, _L.Embedding(length, dim, name="position_embed")(positions)])
    logits = _L.Dense(classes, name="logits")(_encoder(x, dim, heads, blocks))
    return keras.Model(tokens, logits, name="sequence")
