"""Folding a BatchNormalization into the layer before it, so ARQ sees the deployed kernel.

Formula: with `f = gamma / sqrt(moving_variance + epsilon)` per channel,
`kernel' = kernel * f` (along the output channels) and
`bias' = beta + (bias - moving_mean) * f`. Folding before QAT keeps the
trained integers equal to the deployed ones for per-tensor ARQ too (a
per-tensor scale does not commute with a per-channel factor).
"""

import numpy as np

from keras_qat import kernel_layout
from keras_qat._keras import keras
from keras_qat.layer_table import layer_spec


def is_foldable_batch_norm(batch_norm, producer):
    """Tells whether `batch_norm` can be folded into `producer` (structure aside).

    Args:
        batch_norm: A layer with a single call site.
        producer: The layer whose output it normalises.

    Returns:
        True for a BatchNormalization over the last axis after a layer with
        weights and no activation of its own (a BN after a ReLU does not
        commute with it).
    """
    if type(batch_norm) is not keras.layers.BatchNormalization:
        return False
    spec = layer_spec(producer)
    axes = batch_norm.axis if isinstance(batch_norm.axis, (list, tuple)) else [batch_norm.axis]
    ndim = len(batch_norm.input_shape)
    linear = producer.get_config().get("activation", "linear") == "linear"
    return (
        spec is not None and spec.has_weights and linear and [a % ndim for a in axes] == [ndim - 1]
    )


def affine(batch_norm):
    """`(factor, offset)` per channel: in inference, `batch_norm(x) = x * factor + offset`.

    Args:
        batch_norm: A BatchNormalization layer.

    Returns:
        Two float arrays over the normalised axis: `gamma / sqrt(moving_variance
        + epsilon)` and `beta - moving_mean * factor` (gamma 1 and beta 0
        where the layer has none).
    """
    bn = {w.name.split("/")[-1].split(":")[0]: w.numpy() for w in batch_norm.weights}
    factor = bn.get("gamma", 1.0) / np.sqrt(bn["moving_variance"] + batch_norm.epsilon)
    return factor, bn.get("beta", 0.0) - bn["moving_mean"] * factor


def folded_config(layer):
    """The config of `layer` with a bias (the fold always produces one)."""
    return {**layer.get_config(), "use_bias": True}


def folded_weights(layer, batch_norm):
    """Returns `layer`'s weights with `batch_norm` folded in, in clone order.

    Args:
        layer: The producing layer (its kernels per the layer table).
        batch_norm: The BatchNormalization right after it.

    Returns:
        Kernels (the output one scaled) followed by the folded bias.
    """
    factor, offset = affine(batch_norm)
    kernels = [getattr(layer, attr).numpy() for attr, _ in layer_spec(layer).kernels]
    _, layout = layer_spec(layer).kernels[-1]
    out = kernels[-1]
    scaled = kernel_layout.to_channels_last(out, layout) * factor
    out = np.asarray(kernel_layout.from_channels_last(scaled, layout, out.shape))
    bias = layer.bias.numpy() if layer.use_bias else 0.0
    new_bias = offset + bias * factor
    return [*kernels[:-1], out.astype(np.float32), new_bias.astype(np.float32)]
