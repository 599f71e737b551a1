"""quant_report: what a QAT model actually does, layer by layer (and the helpers behind it)."""

import numpy as np

from keras_qat._keras import tfmot
from keras_qat.quantizers import InputQuantizeLayer, UlqWeightQuantizer, ranges


def weight_scales(wrapper):
    """Current weight scales of a wrapped layer, per kernel attribute.

    Args:
        wrapper: A `QuantizeWrapperV2` built by the walker.

    Returns:
        Kernel attribute -> 1-D array (one scale per output channel, or one).
    """
    scales = {}
    for (attr, _), (kernel, quantizer, variables) in zip(
        wrapper.quantize_config.kernels, wrapper._weight_vars, strict=True
    ):
        if isinstance(quantizer, UlqWeightQuantizer):
            scales[attr] = np.atleast_1d(variables["scale"].numpy())
        else:
            channels_last = ranges.to_channels_last(kernel, quantizer.layout)
            bound = ranges.max_abs(channels_last, quantizer.channel_wise).numpy()
            qmax = ranges.signed_qmax(ranges.bits_of(quantizer.dst_type))
            scales[attr] = np.atleast_1d(bound / qmax)
    return scales


def quantized_layers(qat_model):
    """Yields `(input quantizer layers, weight wrappers)` of a QAT model, by target name.

    Args:
        qat_model: A model from `apply_retrain_config` (or loaded).

    Returns:
        `(inputs, wrappers)`: two dicts from quantized layer name to layer.
    """
    inputs, wrappers = {}, {}
    for layer in qat_model.layers:
        if isinstance(layer, InputQuantizeLayer):
            inputs[layer.target] = layer
        elif isinstance(layer, tfmot.quantization.keras.QuantizeWrapperV2):
            wrappers[layer.layer.name] = layer
    return inputs, wrappers


def clip_range(input_layer):
    """Returns `(clip_min, clip_max)` of an `InputQuantizeLayer` as floats."""
    clip_min, clip_max = input_layer.quantizer.bounds(input_layer.quantizer_vars)
    return float(clip_min.numpy()), float(clip_max.numpy())


def quant_report(qat_model):
    """Returns the resolved quantization settings of every quantized layer.

    Args:
        qat_model: A model returned by `apply_retrain_config` (or loaded).

    Returns:
        Layer name -> dict with `fixed_min`, `clip_min`, `clip_max`,
        `data_dst_type`, and for layers with weights `weight_algo`,
        `weight_dst_type`, `channel_wise`, `weight_scale_min`,
        `weight_scale_max`.
    """
    report = {}
    inputs, wrappers = quantized_layers(qat_model)
    for name, layer in inputs.items():
        clip_min, clip_max = clip_range(layer)
        report[name] = {
            "fixed_min": layer.quantizer.fixed_min,
            "clip_min": clip_min,
            "clip_max": clip_max,
            "data_dst_type": layer.quantizer.dst_type,
        }
    for name, wrapper in wrappers.items():
        config = wrapper.quantize_config
        scales = np.concatenate(list(weight_scales(wrapper).values()))
        report.setdefault(name, {}).update(
            weight_algo=config.algo,
            weight_dst_type=config.dst_type,
            channel_wise=config.channel_wise,
            weight_scale_min=float(scales.min()),
            weight_scale_max=float(scales.max()),
        )
    return report
