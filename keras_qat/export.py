"""Export: SavedModel, and int8 TFLite with its quant record (checked in LiteRT before writing)."""

import json
import os
import warnings

import tensorflow as tf
from tensorflow.lite.tools import flatbuffer_utils

from keras_qat import functional
from keras_qat._keras import keras
from keras_qat.atomic import check_writable, write_dir_atomic, write_files_atomic
from keras_qat.data import sample_batches
from keras_qat.errors import DataError, ExportError
from keras_qat.graph.recursion import with_graph_recursion_room
from keras_qat.litert import check_tflite, deciding_measure, describe_check, refuse_unrunnable
from keras_qat.quantizers.introspection import checked_quantized_layers
from keras_qat.record import quant_record
from keras_qat.tflite.bias_scales import repair_bias_scales
from keras_qat.tflite.converter_log import captured_stderr
from keras_qat.tflite.float_front import convert_with_float_front, float_kinds
from keras_qat.tflite.float_layers import float_layers, run_in_float
from keras_qat.tflite.float_ops import run_weightless_in_float
from keras_qat.tflite.ready_copy import tflite_ready_copy
from keras_qat.tflite.weights import pin_weights

# Representative data: enough batches for the converter to calibrate the
# tensors the QAT model has no range for, without a long conversion.
REPRESENTATIVE_BATCHES = 32
REPRESENTATIVE_BATCH_SIZE = 16

# Below this top-1 agreement on the representative data, export warns.
AGREEMENT_WARNING = 0.99


@with_graph_recursion_room
def export_saved_model(qat_model, path, overwrite=False):
    """Saves the QAT model as a TensorFlow SavedModel with a `serving_default` signature.

    The SavedModel holds the fake-quant graph itself, so `tf.saved_model.load`
    runs it without keras_qat installed.

    Args:
        qat_model: A model from `apply_retrain_config`.
        path: Destination directory.
        overwrite: Replace an existing directory. Defaults to `False`.

    Returns:
        The path.

    Raises:
        UnsupportedModelError: if the model is not a QAT model, or its clips
            or weight scales are NaN or infinite.
        FileExistsError: if `path` exists and `overwrite` is False.
        FileNotFoundError: if `path`'s parent directory does not exist.
    """
    checked_quantized_layers(qat_model, "export_saved_model")
    write_dir_atomic(path, lambda tmp: tf.saved_model.save(qat_model, tmp), overwrite)
    return path


@with_graph_recursion_room
def export_tflite(
    qat_model, path, representative_data=None, int8_io=False, overwrite=False, decisive_output=None
):
    """Converts the QAT model to an int8 TFLite file.

    Convolution and dense inputs and weights take the learned ULQ ranges and
    ARQ scales from the model's fake-quant ops; `representative_data`
    (recommended) lets the converter range the remaining tensors so that the
    whole model runs in int8.

    Args:
        qat_model: A model from `apply_retrain_config`.
        path: Destination `.tflite` file (written atomically).
        representative_data: Sample inputs, as accepted by
            `apply_retrain_config`'s `calibration_data`. Defaults to `None`.
        int8_io: Make the model's inputs and outputs int8 (needs
            `representative_data`). Defaults to `False`.
        overwrite: Replace an existing file. Defaults to `False`.
        decisive_output: The output whose agreement decides the warning (see
            `check_tflite`). Defaults to the first output.

    Returns:
        The path. The quant record (`quant_record`) is written beside it as
        `<name>.quant_record.json`. With `representative_data`, the file is
        run in LiteRT on it and a `RuntimeWarning` is issued when its top-1
        agreement with the QAT model is below `AGREEMENT_WARNING`.

    Raises:
        ExportError: if the converter rejects the model. Nothing is written
            when any error is raised.
        UnsupportedModelError: if the model is not a QAT model, or its clips
            or weight scales are NaN or infinite.
        DataError: if `representative_data` does not fit the model,
            `int8_io` is asked without it, or `decisive_output` is not an
            output of the model.
        FileExistsError: if the file or its record exists and `overwrite` is
            False (checked before converting).
        FileNotFoundError: if `path`'s parent directory does not exist.
    """
    if int8_io and representative_data is None:
        raise DataError("int8_io=True needs representative_data to range the model's inputs.")
    checked_quantized_layers(qat_model, "export_tflite")
    deciding_measure(qat_model, decisive_output)  # before converting: the warning needs it
    record_path = record_path_for(path)
    check_writable(path, overwrite)
    check_writable(record_path, overwrite)
    batches = None
    if representative_data is not None:
        batches = sample_batches(
            representative_data,
            qat_model,
            "representative_data",
            REPRESENTATIVE_BATCH_SIZE,
            max_samples=REPRESENTATIVE_BATCHES * REPRESENTATIVE_BATCH_SIZE,
            max_batches=REPRESENTATIVE_BATCHES,
        )
    copy = tflite_ready_copy(qat_model, batches)
    converter = _converter(copy)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if batches is not None:
        # By name: a list is matched by position, and the converted graph does
        # not always keep the Keras model's input order.
        dtypes = [tensor.dtype.as_numpy_dtype for tensor in copy.inputs]  # uint8 images stay so
        specs = list(zip(copy.input_names, dtypes, strict=True))
        converter.representative_dataset = lambda: (
            {name: a.astype(dtype) for (name, dtype), a in zip(specs, b, strict=True)}
            for b in batches
        )
    if int8_io:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    try:
        with warnings.catch_warnings(), captured_stderr() as log:
            # Feeding representative data by name, the converter opens a
            # tf.lite.Interpreter itself; its deprecation notice is not for the
            # user. Nor is its note that the inputs have no range statistics:
            # the input quantizers' fake-quant ops give the ranges.
            warnings.filterwarnings("ignore", r"\s*Warning: tf.lite.Interpreter is deprecated")
            warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected")
            # Float ops need float input and output and calibrated ranges.
            keep_float = not int8_io and batches is not None
            in_float = float_kinds(copy) if keep_float else set()
            if keep_float:
                flatbuffer = convert_with_float_front(converter, copy, in_float)
            else:
                flatbuffer = converter.convert()
            disabled = float_layers(copy) if keep_float else []
            if disabled:
                float_file = _converter(copy).convert()
    except Exception as e:  # the converter raises several types; all mean "rejected"
        message = str(e)
        start = message.find("error:")
        # The quantizer's own rejection is a bare RuntimeError: its reason is in the log.
        reason = message[start : start + 500] if start >= 0 else message[:500]
        reason = reason or log.first_error()
        recurrent = [layer.name for layer in copy.layers if isinstance(layer, keras.layers.RNN)]
        hint = (
            f" The model's recurrent layers {recurrent} stay float (keras_qat does not quantize "
            "them), and the converter's TensorFlow Lite builtins take them only with a fixed "
            "batch size; export such a model with tf.lite and SELECT_TF_OPS instead."
            if recurrent
            else ""
        )
        raise ExportError(
            f"TFLite conversion of model '{qat_model.name}' failed: {reason}{hint}"
        ) from e
    # The converter's weights and biases are corrected on one parsed copy of the file.
    tflite = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    pin_weights(tflite, copy)
    repair_bias_scales(tflite)
    missed, twins = run_in_float(tflite, float_file, copy.name, disabled) if disabled else ([], {})
    # After the layers: a weightless op made float then reads a float layer's
    # output, and drops the round trip (QUANTIZE, DEQUANTIZE) to one it feeds.
    weighted = {layer.name for layer in copy.layers if layer.weights}
    run_weightless_in_float(tflite, copy.name, in_float, twins, in_float - weighted)
    if missed:
        warnings.warn(
            f"Ops {missed} of layers with retrain_enable: false stay int8 in {path}: the float "
            "conversion has no op of that name to take float weights from.",
            RuntimeWarning,
            stacklevel=3,  # the caller of export_tflite (and of its decorator)
        )
    flatbuffer = bytes(flatbuffer_utils.convert_object_to_bytearray(tflite))
    refuse_unrunnable(flatbuffer, qat_model.name, batches, functional.input_names(qat_model))
    record = json.dumps(quant_record(qat_model), indent=2) + "\n"
    write_files_atomic({path: flatbuffer, record_path: record}, overwrite)
    if representative_data is not None:
        _warn_on_disagreement(qat_model, path, batches, decisive_output)
    return path


def _converter(model):
    """A `TFLiteConverter` of `model`'s inference call, signature named as Keras names it.

    The converter's own `from_keras_model` first saves the model as a
    SavedModel, tracing every layer's call for it (about 2 s per export of a
    small QAT copy, most of an export); the one concrete function it then
    converts is this one, with the same op names, inputs named after the
    model's inputs and outputs after its output layers. A model holding
    resources other than variables (a lookup layer's table) takes the
    converter's own way.

    Args:
        model: A built Functional tf_keras model.

    Returns:
        A `tf.lite.TFLiteConverter`.
    """
    specs = [
        tf.TensorSpec(tensor.shape, tensor.dtype, name=name)
        for tensor, name in zip(model.inputs, model.input_names, strict=True)
    ]

    def serve(inputs):
        outputs = tf.nest.flatten(model(inputs, training=False))
        return dict(zip(model.output_names, outputs, strict=True))

    function = tf.function(serve, input_signature=[specs]).get_concrete_function()
    handles = {id(variable.handle) for variable in model.variables}
    if any(
        tensor.dtype == tf.resource and id(tensor) not in handles
        for tensor in function.captured_inputs
    ):
        # A lookup layer's table is saved only with its layer, by Keras's own SavedModel.
        return tf.lite.TFLiteConverter.from_keras_model(model)
    holder = tf.Module()  # what the SavedModel saves: the variables, not the layers
    holder.model_variables = list(model.variables)
    return tf.lite.TFLiteConverter.from_concrete_functions([function], holder)


def _warn_on_disagreement(qat_model, path, batches, decisive_output):
    """Warns when the file disagrees with the model on the representative batches."""
    result = check_tflite(qat_model, path, iter(batches), decisive_output=decisive_output)
    if result["agreement"] < AGREEMENT_WARNING:
        warnings.warn(
            f"{path} does not agree with the QAT model on the representative data. "
            f"{describe_check(result)}\nDo not deploy it unchecked.",
            RuntimeWarning,
            stacklevel=4,  # the caller of export_tflite (and of its decorator)
        )


def record_path_for(tflite_path):
    """The quant record written beside an export: `model.tflite` -> `model.quant_record.json`."""
    root, _ = os.path.splitext(os.fspath(tflite_path))
    return root + ".quant_record.json"
