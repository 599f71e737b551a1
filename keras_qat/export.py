"""Export: SavedModel, int8 TFLite, and checking the .tflite against the QAT model."""

import itertools
import os
import warnings

import numpy as np
import tensorflow as tf
from tensorflow.lite.tools import flatbuffer_utils

from keras_qat.atomic import refuse_existing, write_dir_atomic, write_file_atomic
from keras_qat.calibration.collect import is_array_set, iterate_batches
from keras_qat.errors import ExportError
from keras_qat.record import write_quant_record
from keras_qat.tflite.bias_scales import repair_bias_scales
from keras_qat.tflite.ready_copy import tflite_ready_copy
from keras_qat.tflite.weights import pin_weights

# Representative data: enough batches for the converter to calibrate the
# tensors the QAT model has no range for, without a long conversion.
REPRESENTATIVE_BATCHES = 32
REPRESENTATIVE_BATCH_SIZE = 16

# Below this top-1 agreement on the representative data, export warns.
AGREEMENT_WARNING = 0.99


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
    """
    write_dir_atomic(path, lambda tmp: tf.saved_model.save(qat_model, tmp), overwrite)
    return path


def _chunks(data):
    """Splits an array calibration set into small batches (the converter wants many)."""
    arrays = tf.nest.flatten(data)
    count = min(len(arrays[0]), REPRESENTATIVE_BATCHES * REPRESENTATIVE_BATCH_SIZE)
    for start in range(0, count, REPRESENTATIVE_BATCH_SIZE):
        yield tf.nest.pack_sequence_as(
            data, [a[start : start + REPRESENTATIVE_BATCH_SIZE] for a in arrays]
        )


def _batches(data, model, limit, what):
    """Up to `limit` checked batches of `data` (array set, Dataset or iterable)."""
    source = _chunks(data) if is_array_set(data) else data
    taken = list(itertools.islice(source, limit))
    return iterate_batches(iter(taken), len(taken), model, what)  # iter: one element per batch


def export_tflite(qat_model, path, representative_data=None, int8_io=False, overwrite=False):
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

    Returns:
        The path. The quant record (`quant_record`) is written beside it as
        `<name>.quant_record.json`. With `representative_data`, the file is
        run in LiteRT on it and a `RuntimeWarning` is issued when its top-1
        agreement with the QAT model is below `AGREEMENT_WARNING`.

    Raises:
        ExportError: if the converter rejects the model (no file is written).
        FileExistsError: if `path` exists and `overwrite` is False.
    """
    if int8_io and representative_data is None:
        raise ValueError("int8_io=True needs representative_data to range the model's inputs.")
    batches = None
    if representative_data is not None:
        batches = list(
            _batches(representative_data, qat_model, REPRESENTATIVE_BATCHES, "representative_data")
        )
    copy = tflite_ready_copy(qat_model, batches)
    converter = tf.lite.TFLiteConverter.from_keras_model(copy)
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
        with warnings.catch_warnings():
            # Feeding representative data by name, the converter opens a
            # tf.lite.Interpreter itself; its deprecation notice is not for the user.
            warnings.filterwarnings("ignore", r"\s*Warning: tf.lite.Interpreter is deprecated")
            flatbuffer = converter.convert()
    except Exception as e:  # the converter raises several types; all mean "rejected"
        message = str(e)
        start = message.find("error:")
        raise ExportError(
            f"TFLite conversion of model '{qat_model.name}' failed: "
            f"{message[start : start + 500] if start >= 0 else message[:500]}"
        ) from e
    # The converter's weights and biases are corrected on one parsed copy of the file.
    tflite = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    pin_weights(tflite, copy)
    repair_bias_scales(tflite)
    flatbuffer = bytes(flatbuffer_utils.convert_object_to_bytearray(tflite))
    record_path = record_path_for(path)
    refuse_existing(record_path, overwrite)
    write_file_atomic(path, flatbuffer, overwrite)
    write_quant_record(qat_model, record_path, overwrite)
    if representative_data is not None:
        _warn_on_disagreement(qat_model, path, representative_data)
    return path


def _warn_on_disagreement(qat_model, path, data):
    result = check_tflite(qat_model, path, data, max_batches=REPRESENTATIVE_BATCHES)
    if result["top1_agreement"] < AGREEMENT_WARNING:
        warnings.warn(
            f"{path} agrees with the QAT model on only {result['top1_agreement']:.1%} of "
            f"{result['samples']} representative samples (top-1; max |error| "
            f"{result['max_abs_error']:.3g}). Do not deploy it unchecked.",
            RuntimeWarning,
            stacklevel=3,
        )


def record_path_for(tflite_path):
    """The quant record written beside an export: `model.tflite` -> `model.quant_record.json`."""
    root, _ = os.path.splitext(os.fspath(tflite_path))
    return root + ".quant_record.json"


def _signature_runner(tflite_path):
    """LiteRT's runner of the file's only signature: inputs and outputs by name.

    By name, because the file orders its outputs (and may order its inputs)
    differently from the Keras model.
    """
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_path=str(tflite_path)).get_signature_runner()


def _run_tflite(runner, inputs):
    """Runs a signature on float inputs; int8 tensors take the file's own quantization.

    Args:
        runner: From `_signature_runner`.
        inputs: Dict of input name to float array.

    Returns:
        Dict of output name to float32 array.
    """
    feeds = {}
    for name, detail in runner.get_input_details().items():
        array = np.asarray(inputs[name])
        if detail["dtype"] == np.int8:
            scale, zero_point = detail["quantization"]
            array = np.clip(np.round(array / scale + zero_point), -128, 127)
        feeds[name] = array.astype(detail["dtype"])
    outputs = runner(**feeds)
    results = {}
    for name, detail in runner.get_output_details().items():
        result = outputs[name].astype(np.float32)
        if detail["dtype"] == np.int8:
            scale, zero_point = detail["quantization"]
            result = (result - zero_point) * scale
        results[name] = result
    return results


def predict_tflite(tflite_path, inputs, batch_size=256):
    """Runs a .tflite file from `export_tflite` with LiteRT.

    Int8 inputs and outputs are quantized and dequantized with the file's own
    parameters, so the result compares with the Keras model's.

    Args:
        tflite_path: The file.
        inputs: A float array, batch first; for a model with several inputs, a
            dict of such arrays keyed by the Keras input names.
        batch_size: Samples per interpreter call. Defaults to `256`.

    Returns:
        A float32 array; for a model with several outputs, a dict of arrays
        keyed by the Keras output names.

    Raises:
        ValueError: if `inputs` does not name exactly the file's inputs.
    """
    runner = _signature_runner(tflite_path)
    names = sorted(runner.get_input_details())
    if not isinstance(inputs, dict):
        if len(names) != 1:
            raise ValueError(
                f"{tflite_path} has {len(names)} inputs {names}: pass a dict keyed by these names."
            )
        inputs = {names[0]: inputs}
    if sorted(inputs) != names:
        raise ValueError(f"{tflite_path} takes inputs {names}. Received: {sorted(inputs)}")
    count = len(next(iter(inputs.values())))
    parts = [
        _run_tflite(runner, {name: a[start : start + batch_size] for name, a in inputs.items()})
        for start in range(0, count, batch_size)
    ]
    outputs = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    return next(iter(outputs.values())) if len(outputs) == 1 else outputs


def _top1(outputs):
    """Argmax over the last axis; a rank-1 output is one value per sample."""
    return np.argmax(outputs.reshape(len(outputs), -1) if outputs.ndim == 1 else outputs, -1)


def check_tflite(qat_model, tflite_path, data, max_batches=1000):
    """Runs the .tflite with LiteRT and compares it with the Keras QAT model.

    Args:
        qat_model: The model the file was exported from.
        tflite_path: The exported file.
        data: Sample inputs (array set, Dataset or iterable of batches).
        max_batches: At most this many batches are compared. Defaults to `1000`.

    Returns:
        Dict with `samples`, `top1_agreement` (the fraction of positions where
        the first output's argmax over its last axis is the same: one per
        sample for a classifier's logits) and `max_abs_error` (the largest
        difference over all outputs).

    Raises:
        ExportError: if the file's inputs or outputs are not the model's.
    """
    runner = _signature_runner(tflite_path)
    names = (qat_model.input_names, qat_model.output_names)
    file_names = (runner.get_input_details(), runner.get_output_details())
    if any(sorted(a) != sorted(b) for a, b in zip(names, file_names, strict=True)):
        raise ExportError(
            f"{tflite_path} has inputs {sorted(file_names[0])} and outputs "
            f"{sorted(file_names[1])}; model '{qat_model.name}' has {names[0]} and {names[1]}."
        )
    agree = positions = samples = 0
    max_error = 0.0
    for batch in _batches(data, qat_model, max_batches, "data"):
        expected = tf.nest.flatten(qat_model.predict_on_batch(batch))
        results = _run_tflite(runner, dict(zip(names[0], batch, strict=True)))
        got = [results[name] for name in names[1]]
        same = _top1(got[0]) == _top1(expected[0])
        agree += int(np.sum(same))
        positions += same.size
        samples += len(batch[0])
        for value, want in zip(got, expected, strict=True):
            max_error = max(max_error, float(np.max(np.abs(value - want))))
    return {"samples": samples, "top1_agreement": agree / positions, "max_abs_error": max_error}
