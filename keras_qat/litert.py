"""Running an exported .tflite in LiteRT, and comparing it with the QAT model output by output."""

import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf

from keras_qat import functional
from keras_qat.data import sample_batches
from keras_qat.errors import DataError, ExportError
from keras_qat.graph.recursion import with_graph_recursion_room
from keras_qat.litert_probe import run_signature

# Samples per interpreter call when an array set is compared.
CHECK_BATCH_SIZE = 256
# Deciding measures: top-1 agreement (class scores), or the fraction of values
# within one output step of the QAT model (regressions, maps).
MEASURES = ("top1", "steps")


def _interpreter(tflite_path):
    from ai_edge_litert.interpreter import Interpreter  # LiteRT loads slowly; only when run

    return Interpreter(model_path=str(tflite_path))


def _failure(stderr, returncode):
    """LiteRT's reason, from the probe's stderr: the failing op when it names one."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    ops = [line for line in lines if re.search(r"Node number \d+ \(\w+\) failed to", line)]
    reason = ops[-1] if ops else (lines[-1] if lines else "no message")
    if returncode < 0:
        return f"LiteRT aborted (signal {-returncode}): {reason}"
    return reason


def refuse_unrunnable(content, model_name, batches=None, names=None):
    """Raises unless LiteRT, with its default delegate, prepares and runs the file.

    It runs in a child process (`litert_probe`): an abort in LiteRT's native
    code must not end the caller's process.

    Args:
        content: The .tflite flatbuffer.
        model_name: The Keras model's name, for the message.
        batches: Sample batches to run it on (lists of arrays, one per
            input); one sample of zeros when `None`. Defaults to `None`.
        names: The input names, in the batches' order. Defaults to `None`.

    Raises:
        ExportError: if LiteRT refuses or fails on the file, naming the op
            where LiteRT does.
    """
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "probe.tflite")
        with open(path, "wb") as f:
            f.write(content)
        command = [sys.executable, "-m", "keras_qat.litert_probe", path]
        if batches:
            inputs = os.path.join(directory, "inputs.npz")
            arrays = [np.concatenate(parts) for parts in zip(*batches, strict=True)]
            np.savez(inputs, **dict(zip(names, arrays, strict=True)))
            command.append(inputs)
        # The child finds this keras_qat even where it is not installed.
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        path_entries = [root, *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(path_entries)}
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        raise ExportError(
            f"LiteRT cannot run the file converted from model '{model_name}' (nothing was "
            f"written): {_failure(done.stderr, done.returncode)[:500]}"
        )


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
        DataError: if `inputs` does not name exactly the file's inputs.
    """
    runner = _interpreter(tflite_path).get_signature_runner()
    names = sorted(runner.get_input_details())
    if not isinstance(inputs, dict):
        if len(names) != 1:
            raise DataError(
                f"{tflite_path} has {len(names)} inputs {names}: pass a dict keyed by these names."
            )
        inputs = {names[0]: inputs}
    if sorted(inputs) != names:
        raise DataError(f"{tflite_path} takes inputs {names}. Received: {sorted(inputs)}")
    count = len(next(iter(inputs.values())))
    parts = [
        run_signature(runner, {name: a[start : start + batch_size] for name, a in inputs.items()})
        for start in range(0, count, batch_size)
    ]
    outputs = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    return next(iter(outputs.values())) if len(outputs) == 1 else outputs


def output_steps(interpreter):
    """The int8 step of each signature output: the value of one integer step.

    A float output is the dequantized int8 tensor before it; an int8 output
    has its own scale. An output computed in float has no step (`None`).

    Args:
        interpreter: A LiteRT interpreter of the file.

    Returns:
        Output name -> step (float or None).
    """
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    producers = {}
    for op in interpreter._get_ops_details():
        for index in op["outputs"]:
            producers[index] = op
    steps = {}
    outputs = interpreter._get_full_signature_list()["serving_default"]["outputs"]
    for name, index in outputs.items():
        tensor = details[index]
        if tensor["dtype"] == np.int8:
            steps[name] = float(tensor["quantization"][0])
            continue
        op = producers.get(index)
        source = details.get(op["inputs"][0]) if op and op["op_name"] == "DEQUANTIZE" else None
        steps[name] = float(source["quantization"][0]) if source else None
    return steps


def _has_classes(shape):
    """Top-1 applies: more than one value along the last axis."""
    return len(shape) >= 2 and (shape[-1] or 0) > 1


def deciding_measure(qat_model, decisive_output=None, measure=None):
    """Checks and completes the choice of what decides `check_tflite`'s agreement.

    Args:
        qat_model: The QAT model.
        decisive_output: An output name, or `None` for the first output.
        measure: One of `MEASURES`, or `None`: top-1 for class scores (rank 2,
            or 3 for a sequence, with more than one value along the last
            axis), steps for maps and regressions.

    Returns:
        `(decisive_output, measure)`.

    Raises:
        DataError: for an unknown output or measure, or top-1 asked of an
            output with one value along its last axis.
    """
    names = list(qat_model.output_names)
    decisive_output = decisive_output or names[0]
    if decisive_output not in names:
        raise DataError(
            f"decisive_output must be one of the model's outputs {names}. "
            f"Received: decisive_output={decisive_output!r}"
        )
    if measure not in (None, *MEASURES):
        raise DataError(f"measure must be one of {MEASURES}. Received: measure={measure!r}")
    shape = tuple(qat_model.outputs[names.index(decisive_output)].shape)
    if measure is None:
        measure = "top1" if _has_classes(shape) and len(shape) <= 3 else "steps"
    if measure == "top1" and not _has_classes(shape):
        raise DataError(
            f"output '{decisive_output}' has one value along its last axis: top-1 does not "
            "apply; measure it in steps."
        )
    return decisive_output, measure


def _top1(outputs):
    """Argmax over the last axis; a rank-1 output is one value per sample."""
    return np.argmax(outputs.reshape(len(outputs), -1) if outputs.ndim == 1 else outputs, -1)


class _OutputComparison:
    """Running comparison of one output of the file with the QAT model's."""

    def __init__(self, step):
        self.step = step
        self.agree = self.positions = self.within = self.values = 0
        self.max_error = 0.0
        self.reach_step = 0.0  # the step used where the output has no int8 step
        self.scores = None  # top-1 applies: more than one value along the last axis

    def add(self, got, expected):
        error = np.abs(got - expected)
        if not error.size:
            return
        self.scores = _has_classes(expected.shape)
        self.max_error = max(self.max_error, float(np.max(error)))
        if self.scores:
            same = _top1(got) == _top1(expected)
            self.agree += int(np.sum(same))
            self.positions += same.size
        # Without an int8 step (a float output), one step of int8 over the output's reach.
        step = self.step or max(float(np.max(np.abs(expected))), 1e-12) / 127
        self.reach_step = max(self.reach_step, step)
        self.within += int(np.sum(error <= step * (1 + 1e-6)))
        self.values += error.size

    def result(self):
        result = {
            "max_abs_error": self.max_error,
            "step": self.step,
            "max_error_steps": self.max_error / (self.step or self.reach_step or 1.0),
            "within_one_step": self.within / max(self.values, 1),
        }
        if self.scores and self.positions:
            result["top1_agreement"] = self.agree / self.positions
        return result


@with_graph_recursion_room
def check_tflite(
    qat_model, tflite_path, data, max_batches=1000, decisive_output=None, measure=None
):
    """Runs the .tflite with LiteRT and compares it with the Keras QAT model, output by output.

    Every sample of an array set is compared (in batches of
    `CHECK_BATCH_SIZE`); a Dataset or iterable gives up to `max_batches`
    elements. Each output is measured by top-1 agreement when it has more
    than one value along its last axis (class scores, per-pixel classes), and
    by its error in output steps (the int8 step of the file's output tensor)
    in every case. One output decides `agreement`.

    Args:
        qat_model: The model the file was exported from.
        tflite_path: The exported file.
        data: Sample inputs (array set, Dataset or iterable of batches).
        max_batches: At most this many elements of a Dataset or iterable are
            compared. Defaults to `1000`.
        decisive_output: Name of the output that decides `agreement`.
            Defaults to the model's first output.
        measure: `"top1"` or `"steps"`: how the deciding output is measured
            (see `deciding_measure` for the default).

    Returns:
        Dict with `samples` (how many were compared), `decisive_output`,
        `measure`, `agreement` (the deciding output's top-1 agreement, or
        its fraction of values within one output step), `max_abs_error`
        (over all outputs), and `outputs`: output name -> `max_abs_error`,
        `step`, `max_error_steps`, `within_one_step`, and `top1_agreement`
        where it applies.

    Raises:
        ExportError: if the file's inputs or outputs are not the model's.
        DataError: if `data` does not fit the model, or `decisive_output`
            and `measure` are refused by `deciding_measure` (checked first).
    """
    interpreter = _interpreter(tflite_path)
    runner = interpreter.get_signature_runner()
    names = (functional.input_names(qat_model), list(qat_model.output_names))
    file_names = (runner.get_input_details(), runner.get_output_details())
    if any(sorted(a) != sorted(b) for a, b in zip(names, file_names, strict=True)):
        raise ExportError(
            f"{tflite_path} has inputs {sorted(file_names[0])} and outputs "
            f"{sorted(file_names[1])}; model '{qat_model.name}' has {names[0]} and {names[1]}."
        )
    decisive_output, measure = deciding_measure(qat_model, decisive_output, measure)
    steps = output_steps(interpreter)
    comparisons = {name: _OutputComparison(steps[name]) for name in names[1]}
    samples = 0
    batches = sample_batches(data, qat_model, "data", CHECK_BATCH_SIZE, max_batches=max_batches)
    for batch in batches:
        expected = tf.nest.flatten(qat_model.predict_on_batch(batch))
        results = run_signature(runner, dict(zip(names[0], batch, strict=True)))
        for name, want in zip(names[1], expected, strict=True):
            comparisons[name].add(results[name], np.asarray(want))
        samples += len(batch[0])
    outputs = {name: comparison.result() for name, comparison in comparisons.items()}
    decisive = outputs[decisive_output]
    return {
        "samples": samples,
        "decisive_output": decisive_output,
        "measure": measure,
        "agreement": decisive["top1_agreement" if measure == "top1" else "within_one_step"],
        "max_abs_error": max(o["max_abs_error"] for o in outputs.values()),
        "outputs": outputs,
    }


def describe_check(result):
    """One line per output of a `check_tflite` result, the deciding one first.

    Args:
        result: What `check_tflite` returned.

    Returns:
        The text.
    """
    what = "top-1 agreement" if result["measure"] == "top1" else "values within one output step"
    lines = [
        f"check on {result['samples']} samples: {what} {result['agreement']:.2%} "
        f"(output '{result['decisive_output']}')"
    ]
    for name, output in result["outputs"].items():
        top1 = output.get("top1_agreement")
        lines.append(
            f"  {name}: "
            + (f"top-1 {top1:.2%}, " if top1 is not None else "")
            + f"within one step {output['within_one_step']:.2%}, "
            f"max |TFLite - Keras| {output['max_abs_error']:.4g} "
            f"({output['max_error_steps']:.2f} steps)"
        )
    return "\n".join(lines)
