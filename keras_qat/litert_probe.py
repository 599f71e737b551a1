"""Running a .tflite signature, and `python -m keras_qat.litert_probe FILE [INPUTS.npz]`.

The command prepares the file in LiteRT with its default delegate and runs it
on the inputs (or on zeros), so that a file LiteRT refuses, or aborts on, is
found in a child process: an abort in LiteRT's native code ends the process
it runs in. It imports NumPy and LiteRT only, not TensorFlow, so it starts
in a fraction of a second. Exit 0: the file ran; otherwise LiteRT's error is
on stderr.
"""

import sys

import numpy as np

# Samples per interpreter call when the probe runs a data set.
PROBE_BATCH_SIZE = 16


def run_signature(runner, inputs):
    """Runs a signature on float inputs; int8 tensors take the file's own quantization.

    Args:
        runner: The file's signature runner.
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


def _zeros(runner):
    """One sample of zeros per input, in the input's shape."""
    return {
        name: np.zeros([1, *detail["shape"][1:]], np.float32)
        for name, detail in runner.get_input_details().items()
    }


def main(argv=None):
    """Prepares and runs a .tflite; returns 0 when it ran, 1 with the error on stderr.

    Args:
        argv: `[file]` or `[file, inputs.npz]` (one array per input name).
            Defaults to `sys.argv[1:]`.

    Returns:
        The exit code.
    """
    from ai_edge_litert.interpreter import Interpreter

    argv = sys.argv[1:] if argv is None else argv
    try:
        runner = Interpreter(model_path=argv[0]).get_signature_runner()
        if len(argv) > 1:
            with np.load(argv[1]) as archive:
                inputs = dict(archive)
        else:
            inputs = _zeros(runner)
        count = len(next(iter(inputs.values())))
        for start in range(0, count, PROBE_BATCH_SIZE):
            run_signature(
                runner, {n: a[start : start + PROBE_BATCH_SIZE] for n, a in inputs.items()}
            )
    except (RuntimeError, ValueError) as e:
        print(str(e).strip(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
