"""Reading a QAT model's quantizers: which layers, their clips and weight scales, their health."""

import numpy as np

from keras_qat._keras import tfmot
from keras_qat.errors import UnsupportedModelError
from keras_qat.quantizers.input_layer import InputQuantizeLayer
from keras_qat.quantizers.wrapper import kernel_entries


def weight_scales(wrapper):
    """Current weight scales of a wrapped layer, per kernel attribute.

    Args:
        wrapper: A `QatWrapper` built by the walker.

    Returns:
        Kernel attribute -> 1-D array (one scale per output channel, or one).
    """
    return {
        attr: np.atleast_1d(quantizer.scale(kernel, variables).numpy())
        for (attr, _), (kernel, quantizer, variables) in zip(
            wrapper.quantize_config.kernels, kernel_entries(wrapper), strict=True
        )
    }


def output_range_vars(wrapper):
    """The variables of a wrapper's output quantizer (`TrackedRangeQuantizer`), or `None`.

    Args:
        wrapper: A `QuantizeWrapperV2` built by the walker.

    Returns:
        A dict with `range_min` and `range_max`, or `None` when the layer's
        output is not quantized.
    """
    if not wrapper.quantize_config.get_output_quantizers(wrapper.layer):
        return None
    return wrapper._output_quantizer_vars


def output_range(wrapper):
    """`(range_min, range_max)` of a wrapper's output quantizer as floats, or `None`."""
    variables = output_range_vars(wrapper)
    if variables is None:
        return None
    return float(variables["range_min"].numpy()), float(variables["range_max"].numpy())


def intermediate_range(wrapper):
    """`(range_min, range_max)` of the int8 tensor inside a `SeparableConv2D`, or `None`.

    Args:
        wrapper: A `QuantizeWrapperV2` built by the walker.

    Returns:
        Two floats for a `QatWrapper` of a `SeparableConv2D`, else `None`.
    """
    variables = getattr(wrapper, "intermediate_vars", None)
    if variables is None:
        return None
    return float(variables["range_min"].numpy()), float(variables["range_max"].numpy())


def quantized_layers(qat_model):
    """Returns `(input quantizer layers, weight wrappers)` of a QAT model, by target name.

    Args:
        qat_model: A model from `apply_retrain_config` (or loaded).

    Returns:
        `(inputs, wrappers)`: two dicts from quantized layer name to layer.
    """
    inputs, wrappers = {}, {}
    for layer in qat_model.layers:
        if isinstance(layer, InputQuantizeLayer):
            inputs.update(dict.fromkeys(layer.targets, layer))
        elif isinstance(layer, tfmot.quantization.keras.QuantizeWrapperV2):
            wrappers[layer.layer.name] = layer
    return inputs, wrappers


def clip_range(input_layer):
    """Returns `(clip_min, clip_max)` of an `InputQuantizeLayer` as floats."""
    clip_min, clip_max = input_layer.bounds()
    return float(clip_min.numpy()), float(clip_max.numpy())


def non_finite_layers(qat_model):
    """Names of the quantized layers whose clips, weight scales or output ranges are not finite.

    Args:
        qat_model: A QAT model.

    Returns:
        A sorted list of layer names.
    """
    inputs, wrappers = quantized_layers(qat_model)
    broken = {name for name, layer in inputs.items() if not np.isfinite(clip_range(layer)).all()}
    broken.update(
        name
        for name, wrapper in wrappers.items()
        if not all(np.isfinite(s).all() for s in weight_scales(wrapper).values())
        or not np.isfinite(output_range(wrapper) or 0.0).all()
    )
    return sorted(broken)


def checked_quantized_layers(qat_model, what, finite=True):
    """`quantized_layers` of a model that must be a QAT model.

    Args:
        qat_model: The model given to `what`.
        what: The function or command it was given to, for the message.
        finite: Also require finite clip bounds and weight scales. Defaults
            to `True`.

    Returns:
        `(inputs, wrappers)` as `quantized_layers` returns them.

    Raises:
        UnsupportedModelError: if the model holds no keras_qat quantizer (a
            float model), or a clip bound or weight scale is NaN or infinite
            (training diverged) and `finite` is True, naming the layers.
    """
    inputs, wrappers = quantized_layers(qat_model)
    if not inputs and not wrappers:
        raise UnsupportedModelError(
            f"{what} needs the QAT model apply_retrain_config returns; model "
            f"'{getattr(qat_model, 'name', '?')}' holds no keras_qat quantizer (a float model?)."
        )
    broken = non_finite_layers(qat_model) if finite else []
    if broken:
        raise UnsupportedModelError(
            f"{what}: model '{qat_model.name}' has NaN or infinite clip bounds or weight scales "
            f"in layer(s) {broken}; training diverged (e.g. a learning rate far too "
            "high). Retrain from the float model with a lower learning rate; "
            "keras_qat.StopOnNonFiniteClips() stops fit at the first such step."
        )
    return inputs, wrappers
