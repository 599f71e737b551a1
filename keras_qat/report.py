"""quant_report: what a QAT model actually does, layer by layer."""

import numpy as np

from keras_qat.quantizers.introspection import (
    checked_quantized_layers,
    clip_range,
    intermediate_range,
    output_range,
    weight_scales,
)


def quant_report(qat_model):
    """Returns the resolved quantization settings of every quantized layer.

    Args:
        qat_model: A model returned by `apply_retrain_config` (or loaded).

    Returns:
        Layer name -> dict with `fixed_min`, `clip_min`, `clip_max`,
        `data_dst_type`, and for layers with weights `weight_algo`,
        `weight_dst_type`, `channel_wise`, `weight_scale_min`,
        `weight_scale_max`, and for layers whose output is quantized too
        (no input quantizer reads it: see `TrackedRangeQuantizer`)
        `output_range_min` and `output_range_max`, before the activation
        of a model output (`ActivatedOutputQuantizer`), and for a
        `SeparableConv2D` `intermediate_range_min` and
        `intermediate_range_max` (the int8 tensor between its two ops), and
        for a layer that reads an average pooling's grid instead of a range
        of its own (`InputQuantizeLayer`'s `follows_pooling`)
        `input_grid_of`, the quantizer whose grid that is (its clips are that
        grid's, and `fixed_min` says whether its lower bound is 0). Clips
        that training sent to NaN or infinity show as such (export refuses
        them).

    Raises:
        UnsupportedModelError: if the model holds no keras_qat quantizer.
    """
    report = {}
    inputs, wrappers = checked_quantized_layers(qat_model, "quant_report", finite=False)
    for name, layer in inputs.items():
        clip_min, clip_max = clip_range(layer)
        report[name] = {
            "fixed_min": clip_min == 0.0 if layer.follows_pooling else layer.quantizer.fixed_min,
            "clip_min": clip_min,
            "clip_max": clip_max,
            "data_dst_type": f"INT{layer.bits}",
        }
        if layer.follows_pooling:
            report[name]["input_grid_of"] = layer.followed.name
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
        tracked = output_range(wrapper)
        if tracked is not None:
            report[name].update(output_range_min=tracked[0], output_range_max=tracked[1])
        between = intermediate_range(wrapper)
        if between is not None:
            low, high = between
            report[name].update(intermediate_range_min=low, intermediate_range_max=high)
    return report
