"""quant_report: what a QAT model actually does, layer by layer."""

import numpy as np

from keras_qat._keras import tfmot
from keras_qat.quantizers import InputQuantizeLayer, UlqWeightQuantizer, ranges


def _weight_scales(wrapper):
    """Current per-channel (or per-tensor) weight scales of a wrapped layer."""
    scales = []
    for kernel, quantizer, variables in wrapper._weight_vars:
        if isinstance(quantizer, UlqWeightQuantizer):
            scales.append(np.atleast_1d(variables["scale"].numpy()))
        else:
            channels_last = ranges.to_channels_last(kernel, quantizer.layout)
            bound = ranges.max_abs(channels_last, quantizer.channel_wise).numpy()
            qmax = ranges.signed_qmax(ranges.bits_of(quantizer.dst_type))
            scales.append(np.atleast_1d(bound / qmax))
    return np.concatenate(scales)


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
    wrappers = {}
    for layer in qat_model.layers:
        if isinstance(layer, InputQuantizeLayer):
            quantizer, variables = layer.quantizer, layer.quantizer_vars
            report[layer.target] = {
                "fixed_min": quantizer.fixed_min,
                "clip_min": float(variables["clip_min"].numpy())
                if "clip_min" in variables
                else 0.0,
                "clip_max": float(variables["clip_max"].numpy()),
                "data_dst_type": quantizer.dst_type,
            }
        elif isinstance(layer, tfmot.quantization.keras.QuantizeWrapperV2):
            wrappers[layer.layer.name] = layer
    for name, wrapper in wrappers.items():
        config = wrapper.quantize_config
        scales = _weight_scales(wrapper)
        report.setdefault(name, {}).update(
            weight_algo=config.algo,
            weight_dst_type=config.dst_type,
            channel_wise=config.channel_wise,
            weight_scale_min=float(scales.min()),
            weight_scale_max=float(scales.max()),
        )
    return report
