"""The quant record: what another runtime needs to deploy the quantized layers.

Like AMCT's record file, per quantized layer: the input's scale and integer
offset (`scale_d`, `offset_d`, signed storage: int8 offset = uint8 zero point
- 128), its clip bounds, and per kernel the weight scales per channel
(`scale_w`) with their offsets (`offset_w`, always 0: ARQ is symmetric), and
the bit widths; for a layer whose output is quantized too (no input
quantizer reads it), the output's `scale_o` and `offset_o`; for a
`SeparableConv2D`, the int8 tensor's between its two ops, `scale_i` and
`offset_i` (its pointwise op's input). Scales and
offsets are those of the fake-quant ops, the values the TFLite converter
writes into the .tflite.
"""

from keras_qat.quantizers.introspection import (
    checked_quantized_layers,
    clip_range,
    intermediate_range,
    output_range,
    weight_scales,
)
from keras_qat.quantizers.ranges import bits_of, op_nudge


def input_scale_and_offset(clip_min, clip_max, num_bits):
    """Scale and signed offset of the fake-quant op's grid over [clip_min, clip_max].

    Args:
        clip_min: Lower bound (<= 0).
        clip_max: Upper bound (> 0).
        num_bits: Bit width.

    Returns:
        `(scale, offset)`: real = scale * (q - offset), q signed.
    """
    grid = op_nudge(clip_min, clip_max, num_bits)
    return grid.scale, grid.zero_point - 2 ** (num_bits - 1)


def quant_record(qat_model):
    """Returns the quant record of a QAT model.

    Args:
        qat_model: A model from `apply_retrain_config` (or loaded).

    Returns:
        Layer name -> dict (see the module docstring).

    Raises:
        UnsupportedModelError: if the model is not a QAT model, or its clips
            or weight scales are NaN or infinite.
    """
    record = {}
    inputs, wrappers = checked_quantized_layers(qat_model, "quant_record")
    for name, layer in inputs.items():
        bits = layer.bits
        clip_min, clip_max = clip_range(layer)
        scale, offset = input_scale_and_offset(clip_min, clip_max, bits)
        record[name] = {
            "data_bits": bits,
            "scale_d": scale,
            "offset_d": offset,
            "clip_min": clip_min,
            "clip_max": clip_max,
        }
    for name, wrapper in wrappers.items():
        scales = weight_scales(wrapper)
        record.setdefault(name, {}).update(
            weight_bits=bits_of(wrapper.quantize_config.dst_type),
            scale_w={attr: values.tolist() for attr, values in scales.items()},
            offset_w={attr: [0] * len(values) for attr, values in scales.items()},
        )
        tracked = output_range(wrapper)
        if tracked is not None:
            scale, offset = input_scale_and_offset(*tracked, 8)
            record[name].update(output_bits=8, scale_o=scale, offset_o=offset)
        between = intermediate_range(wrapper)
        if between is not None:
            scale, offset = input_scale_and_offset(*between, 8)
            record[name].update(scale_i=scale, offset_i=offset)
    return record
