"""The copy of a QAT model that the TFLite converter is given.

The QAT model's numbers, in forms the converter keeps: input quantizers
become fixed-range ones (`FixedInputQuantizer`: INT4 ones their int8
carriers, those reading a model input capped by a MINIMUM), Embeddings their
int8 tables (`embedding_table`), per-channel Dense, Conv1D and
Conv2DTranspose layers become their `deploy_layers` forms, and producers of
tensors shared by an input quantizer and another layer or fanned out to
several, and concatenations joining such a tensor, get an explicit output
range (`output_ranges`), and a global pooling's output reshaped for a
quantized layer, and the inputs of a concatenation an input quantizer
reads, are rounded before the reshape or concatenation too
(`QuantizedBefore`). The tracked ranges of output quantizers and of the
rebuilt wrappers move onto bounds on which the converter takes the fake-quant
op's step (`unambiguous_bounds`). One change of numbers is deliberate: an
INT8 input quantizer reading a tensor that already has a range becomes an
identity, since a tensor has one range in a .tflite (the converter drops a
second one anyway). The weight-quantized
layers are rebuilt, with the QAT model's weights, so that their bias
rounding reads the fixed input quantizers of the copy, not the QAT model's
variables; every other layer is shared with the QAT model.
"""

import tensorflow as tf

from keras_qat import functional
from keras_qat._keras import keras, tfmot
from keras_qat.converter_facts import COMPARISONS, MEANS
from keras_qat.quantizers import (
    InputQuantizeLayer,
    OutputQuantizeLayer,
    QatWrapper,
    ReaderGridLayer,
    WeightQuantizeConfig,
)
from keras_qat.quantizers.file_arithmetic import FileOperation
from keras_qat.quantizers.input_layer import on_a_grid, scale_given_elsewhere
from keras_qat.tflite.deploy_layers import DEPLOY_FORMS, DenseOnRows
from keras_qat.tflite.embedding_table import int8_table
from keras_qat.tflite.fixed_quant import (
    FixedInputQuantizer,
    QuantizedBefore,
    settle_tracked_ranges,
)
from keras_qat.tflite.output_ranges import RangedOutput, export_ranges, merged_quantizers


def _rebuilt_wrapper(wrapper, form=None):
    """A new wrapper of `wrapper`'s layer, in its deploy `form` if one is given."""
    config = wrapper.quantize_config.get_config()
    layer_config = wrapper.layer.get_config()
    if form is None:
        layer = type(wrapper.layer).from_config(layer_config)
    else:
        config["kernels"] = [("kernel", "last")]
        layer = form(**form.config_from(layer_config))
    return QatWrapper(layer, WeightQuantizeConfig.from_config(config), name=wrapper.name)


def _copy_weights(source, target, form=None):
    """Copies weights in build order, moving the kernel to its deploy layout."""
    values = [
        form.deploy_kernel(value) if form and weight.name.endswith("kernel:0") else value
        for value, weight in zip(source.get_weights(), target.weights, strict=True)
    ]
    target.set_weights(values)


def _fixed_quantizer(layer, name, cap=False):
    """The fixed form of an input or output quantizer `layer` at its current range, named `name`.

    `cap`: as `FixedInputQuantizer`'s.
    """
    if isinstance(layer, OutputQuantizeLayer):
        # A plain fake-quant: the converter writes the requantizations
        # itself; on fixed bounds it takes the op's step (`unambiguous_bounds`).
        variables = layer.quantizer_vars
        bounds = (float(variables["range_min"]), float(variables["range_max"]))
        return FixedInputQuantizer(*bounds, "INT8", cap=cap, name=name)
    return FixedInputQuantizer.freeze(layer, cap=cap, name=name)


_RESHAPES = (keras.layers.Reshape, keras.layers.Flatten)


def _one_quantizer_reading(layer, consumers):
    """The `InputQuantizeLayer` that is `layer`'s one reader, or `None`."""
    readers = {id(r): r for r in consumers.get(layer.name, [])}
    if len(readers) != 1:
        return None
    (reader,) = readers.values()
    return reader if isinstance(reader, InputQuantizeLayer) else None


def _quantized_before_reader(layer, sources, consumers):
    """The input quantizer to apply before `layer` too (`QuantizedBefore`), or `None`.

    That is the one reader of a Concatenate, or of a reshape of a global
    pooling's output which nothing else reads, so that rounding before the
    layer too changes what no other layer reads. A layer called at several
    places reads several tensors and is left alone.
    """
    if not functional.called_once(layer):
        return None
    if isinstance(layer, keras.layers.Concatenate):
        return _one_quantizer_reading(layer, consumers)
    producers = sources.get(layer.name, [])
    if (
        not isinstance(layer, _RESHAPES)
        or len(producers) != 1
        or not isinstance(producers[0], MEANS)
        or len(consumers.get(producers[0].name, [])) != 1
    ):
        return None
    return _one_quantizer_reading(layer, consumers)


def tflite_ready_copy(qat_model, batches=None):
    """The QAT model rebuilt in the forms the TFLite converter keeps.

    Args:
        qat_model: A model from `apply_retrain_config`.
        batches: Representative input batches, which range the shared
            tensors. Defaults to `None` (those stay as the converter leaves them).

    Returns:
        The copy.

    Raises:
        ExportError: for a per-channel layer option no deploy form reproduces.
    """
    replaced = {}
    sources = functional.sources(qat_model)
    consumers = functional.consumers(qat_model)
    ranges = export_ranges(qat_model, batches)
    merged = set(merged_quantizers(qat_model, ranges))

    def rewrite(layer):
        if layer.name in merged:
            return keras.layers.Activation("linear", name=layer.name)
        if isinstance(layer, InputQuantizeLayer):
            # Capped, an input or another quantizer's output is requantized
            # onto this grid by the file's QUANTIZE, not given a second range.
            capped = all(
                isinstance(producer, (keras.layers.InputLayer, InputQuantizeLayer))
                for producer in sources[layer.name]
            )
            return FixedInputQuantizer.freeze(layer, capped)
        if isinstance(layer, FileOperation):
            return layer.plain_copy()
        if isinstance(layer, OutputQuantizeLayer):
            return _fixed_quantizer(layer, layer.name)
        if isinstance(layer, ReaderGridLayer):
            # The converter's op reads and writes the lender's grid: so does
            # the copy. An operand of a MAXIMUM on another reader's grid is
            # QUANTIZEd onto it behind a cap (a second range on one tensor
            # the converter refuses; without the grid it may take the
            # operand's for the op, and requantize its output).
            elsewhere = any(source is not None for source in layer.grid_sources)
            cap = elsewhere and isinstance(consumers[layer.name][0], COMPARISONS)
            return _fixed_quantizer(layer.owner, layer.name, cap)
        reader = _quantized_before_reader(layer, sources, consumers)
        if reader is not None and reader.name not in merged and layer.name not in ranges:
            quantizer = FixedInputQuantizer.freeze(reader).get_config()
            inputs = list(enumerate(tf.nest.flatten(layer.input)))
            on_grid = [i for i, x in inputs if on_a_grid(x)]
            capped = [i for i, x in inputs if scale_given_elsewhere(x)]
            return QuantizedBefore(layer, quantizer, on_grid, capped, name=layer.name)
        if isinstance(layer, tfmot.quantization.keras.QuantizeWrapperV2):
            if isinstance(layer.layer, keras.layers.Embedding):
                return int8_table(layer)
            form = DEPLOY_FORMS.get(type(layer.layer))
            if not layer.quantize_config.channel_wise:
                form = None
            if isinstance(layer.layer, keras.layers.Dense) and layer.input.shape.rank > 2:
                form = form or DenseOnRows
            rebuilt = _rebuilt_wrapper(layer, form)
            replaced[layer.name] = (layer, form, rebuilt)
            return rebuilt
        return layer

    def clone(layer):
        rewritten = rewrite(layer)
        if layer.name in ranges:
            return RangedOutput(rewritten, *ranges[layer.name], name=layer.name)
        return rewritten

    copy = keras.models.clone_model(qat_model, clone_function=clone)
    for source, form, rebuilt in replaced.values():
        _copy_weights(source, rebuilt, form)
        settle_tracked_ranges(rebuilt)
    return copy
