"""The config edit the benchmarks compare against the default: the image's clip fixed at [0, 1]."""

import tensorflow as tf

from keras_qat.graph.model_check import model_layers


def with_image_clip_fixed(model, config):
    """Returns `config` with `clip_max: 1.0, fixed_min: true` in the layers reading the input.

    What a user whose images are 8-bit pixels scaled to [0, 1] can write by
    hand: 8 bits over [0, 1] represent such pixels exactly (up to float32
    rounding), and with no clip to learn there the first layer's input
    gradient, which float training never computes, is not needed either.

    Args:
        model: The float model.
        config: A retrain config dict (layer name -> entry), not modified.

    Returns:
        The edited copy.
    """
    inputs = {id(tensor) for tensor in model.inputs}
    edited = dict(config)
    for layer in model_layers(model):
        if layer.name in config and any(id(t) in inputs for t in tf.nest.flatten(layer.input)):
            entry = config[layer.name]
            data = {**entry.get("retrain_data_config", {}), "clip_max": 1.0, "fixed_min": True}
            edited[layer.name] = {**entry, "retrain_data_config": data}
    return edited
