"""The `keras-qat` console command: create-config, validate, search, report, export, demo.

TensorFlow is imported only once the arguments are parsed (`--help` stays
fast), and unless `--verbose` its C++ log lines (the converter's progress
among them) are not shown: they are not for the user.
"""

import argparse
import contextlib
import logging
import os
import sys
import traceback

from keras_qat.datasets import DATASETS  # NumPy only: no TensorFlow yet


class _CommandError(Exception):
    """Ends the command with exit code 1 and the listed messages."""

    def __init__(self, messages):
        super().__init__(messages)
        self.messages = messages


def _load_model(args, path):
    from keras_qat.loading import load_model

    return load_model(path, safe_mode=not args.unsafe)


def _config_table(model, config):
    """Formats one row per config entry, with fixed_min as the graph resolves it.

    `model` is the checked model (`checked_model`: attention layers opened up).
    """
    from keras_qat.graph.model_check import model_layers
    from keras_qat.layer_table import layer_spec, operand_keys

    layers = {layer.name: layer for layer in model_layers(model)}
    resolved = config.resolved_fixed_min
    header = ("layer", "type", "enabled", "data", "fixed_min", "weights", "channel_wise")
    rows = [header]
    for name, entry in config.layers.items():
        data, weights = entry.retrain_data_config, entry.retrain_weight_config
        if data is None:  # an Embedding
            fixed_min = "-"
        else:  # a product's two inputs as "True/False"
            keys = operand_keys(name, layer_spec(layers[name]))
            fixed_min = "/".join(str(resolved[key]) for key in keys)
            fixed_min += " (graph)" if data.fixed_min is None else ""
        rows.append((
            name,
            type(layers[name]).__name__,
            str(entry.retrain_enable),
            data.dst_type if data else "-",
            fixed_min,
            f"{weights.algo} {weights.dst_type}" if weights else "-",
            str(weights.channel_wise) if weights else "-",
        ))  # fmt: skip
    return _format_rows(rows)


def _format_rows(rows):
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows)
    return "\n".join(line.rstrip() for line in lines)


def _report_table(report):
    """Formats `quant_report` output, one row per quantized layer."""
    header = ("layer", "data", "fixed_min", "clip_min", "clip_max", "weights", "scale range")
    rows = [header]
    for name, entry in report.items():
        weights, scales = "-", "-"
        if "weight_algo" in entry:
            weights = f"{entry['weight_algo']} {entry['weight_dst_type']}" + (
                " per-channel" if entry["channel_wise"] else " per-tensor"
            )
            scales = f"{entry['weight_scale_min']:.3g}..{entry['weight_scale_max']:.3g}"
        rows.append((
            name,
            entry.get("data_dst_type", "-"),
            str(entry.get("fixed_min", "-")),
            f"{entry['clip_min']:.4g}" if "clip_min" in entry else "-",
            f"{entry['clip_max']:.4g}" if "clip_max" in entry else "-",
            weights,
            scales,
        ))  # fmt: skip
    return _format_rows(rows)


def _create_config(args):
    from keras_qat.config import create_quant_retrain_config

    model = _load_model(args, args.model_file)
    create_quant_retrain_config(args.output, model, args.definition, overwrite=args.force)
    print(f"wrote {args.output}")


def _validate(args):
    from keras_qat.config import read_retrain_config
    from keras_qat.graph.model_check import checked_model

    # Checked (and its attention opened) once, for the config and for the table.
    model = checked_model(_load_model(args, args.model_file))
    config = read_retrain_config(args.config, model)
    print(_config_table(model, config))
    print(f"{args.config}: valid, {len(config.enabled_layers)} layer(s) enabled")


def _search(args):
    from keras_qat.search import format_table, plot_choices, search_mixed_precision

    model = _load_model(args, args.model_file)
    evaluation = (_load_array(args.eval[0]), _load_array(args.eval[1]))
    fine_tune = None
    if args.fine_tune:
        from keras_qat._keras import keras

        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=args.from_logits)
        x, y = (_load_array(path) for path in args.fine_tune)
        fine_tune = (x, y, args.epochs, loss)
    _, rows = search_mixed_precision(
        model,
        args.config,
        _load_array(args.calibration),
        evaluation,
        args.max_drop,
        fine_tune,
        args.output,
        args.force,
    )
    print(format_table(rows))
    print(f"config written: {args.output}")
    if args.plot:
        print(f"plot written: {plot_choices(rows, args.plot)}")


def _report(args):
    from keras_qat.report import quant_report

    model = _load_model(args, args.qat_model_file)
    print(_report_table(quant_report(model)))


def _load_array(path):
    """A .npy array of inputs, or a .npz archive of one array per model input, by name."""
    import numpy as np

    try:
        data = np.load(path)
    except (OSError, ValueError) as e:
        what = "a .npy array, or a .npz of arrays named as the inputs"
        raise _CommandError([f"cannot load data {path} ({what}): {e}"]) from None
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            return dict(data)
    return data


def _export(args):
    from keras_qat.atomic import check_writable
    from keras_qat.data import sample_batches
    from keras_qat.export import export_saved_model, export_tflite
    from keras_qat.litert import CHECK_BATCH_SIZE, check_tflite, deciding_measure, describe_check

    model = _load_model(args, args.qat_model_file)
    # What export_tflite does not check itself is checked before it writes.
    if args.saved_model:
        check_writable(args.saved_model, args.force)
    representative = _load_array(args.representative) if args.representative else None
    check = _load_array(args.check) if args.check else None
    if check is not None:
        sample_batches(check, model, f"--check {args.check}", CHECK_BATCH_SIZE)
    deciding_measure(model, args.decisive_output, args.measure)  # before anything is written
    export_tflite(
        model, args.output, representative, args.int8_io, args.force, args.decisive_output
    )
    print(f"wrote {args.output}")
    if args.saved_model:
        export_saved_model(model, args.saved_model, overwrite=args.force)
        print(f"wrote {args.saved_model}/")
    if check is None:
        return
    result = check_tflite(model, args.output, check, None, args.decisive_output, args.measure)
    print(describe_check(result))
    if result["agreement"] < args.min_agreement:
        raise _CommandError([
            f"{args.output} agrees with the QAT model on {result['agreement']:.2%} "
            f"(output '{result['decisive_output']}'), below --min-agreement "
            f"{args.min_agreement:.2%}. Do not deploy it unchecked."
        ])  # fmt: skip


def _demo(args):
    from keras_qat.demo import run_demo

    results = run_demo(args.output_dir, args.dataset, overwrite=args.force)
    samples = results["test_samples"]
    print(f"\n{args.dataset}: {samples} test images; files in {args.output_dir}/")
    print(f"{'':22} {'accuracy':>9}")
    print(f"{'float (Keras)':22} {results['float_accuracy']:>9.4f}")
    print(f"{'QAT INT8 (Keras)':22} {results['qat_accuracy']:>9.4f}")
    print(f"{'int8 TFLite (LiteRT)':22} {results['tflite_accuracy']:>9.4f}")
    print(
        f"TFLite vs QAT: top-1 agreement {results['agreement']:.2%}, "
        f"max |logit error| {results['max_abs_error']:.3f}"
    )
    print(
        f"model.tflite: {results['tflite_bytes']:,} bytes "
        f"(float .tflite {results['float_tflite_bytes']:,} bytes)"
    )


def _parser():
    parser = argparse.ArgumentParser(prog="keras-qat", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--verbose", action="store_true", help="show TensorFlow's and the converter's log lines"
    )
    parser.add_argument(
        "--unsafe",
        action="store_true",
        help="load model files that carry Python code (Lambda layers): only files you trust",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create-config", help="write a default retrain config")
    create.add_argument(
        "model_file", help="a tf_keras or Keras 3 model (.keras, .h5 or SavedModel dir)"
    )
    create.add_argument("-o", "--output", required=True, help="config file to write")
    create.add_argument(
        "--definition", help="simple config definition (JSON, or AMCT's .cfg text format)"
    )
    create.add_argument("--force", action="store_true", help="replace an existing output file")
    create.set_defaults(run=_create_config)
    validate = commands.add_parser("validate", help="check a retrain config against a model")
    validate.add_argument("model_file")
    validate.add_argument("config")
    validate.set_defaults(run=_validate)
    search = commands.add_parser(
        "search", help="choose INT4 layers by measured sensitivity within an accuracy budget"
    )
    search.add_argument("model_file")
    search.add_argument("config", help="the starting config (its INT8 layers are candidates)")
    search.add_argument("--calibration", required=True, help=".npy calibration inputs")
    search.add_argument(
        "--eval", nargs=2, required=True, metavar=("X", "Y"), help=".npy inputs and labels"
    )
    search.add_argument(
        "--fine-tune",
        nargs=2,
        metavar=("X", "Y"),
        help=".npy inputs and labels of the short QAT fine-tune that checks the budget",
    )
    search.add_argument("--epochs", type=int, default=1, help="fine-tune epochs (default 1)")
    search.add_argument(
        "--from-logits", action="store_true", help="the model outputs logits, not probabilities"
    )
    search.add_argument(
        "--max-drop", type=float, default=0.5, help="accuracy budget in points (default 0.5)"
    )
    search.add_argument("-o", "--output", required=True, help="config file to write")
    search.add_argument("--plot", help="image file for the sensitivities (needs matplotlib)")
    search.add_argument("--force", action="store_true", help="replace an existing output file")
    search.set_defaults(run=_search)
    report = commands.add_parser("report", help="print a QAT model's quantization settings")
    report.add_argument("qat_model_file", help="a model saved after apply_retrain_config")
    report.set_defaults(run=_report)
    export = commands.add_parser("export", help="export a QAT model to int8 TFLite")
    export.add_argument("qat_model_file", help="a model saved after apply_retrain_config")
    export.add_argument("-o", "--output", required=True, help=".tflite file to write")
    export.add_argument(
        "--representative",
        help=".npy inputs (.npz keyed by input name for several) to range the other tensors",
    )
    export.add_argument("--int8-io", action="store_true", help="int8 model inputs and outputs")
    export.add_argument("--saved-model", help="also write a SavedModel to this directory")
    export.add_argument(
        "--check", help=".npy (or .npz) inputs: compare the .tflite with the QAT model"
    )
    export.add_argument(
        "--min-agreement",
        type=float,
        default=0.99,
        help="with --check: exit 1 below this agreement (default 0.99)",
    )
    export.add_argument(
        "--decisive-output", help="with --check: the output that decides (default: the first)"
    )
    export.add_argument(
        "--measure",
        choices=("top1", "steps"),
        help="with --check: top-1 agreement, or values within one output step "
        "(default: top1 for class scores)",
    )
    export.add_argument("--force", action="store_true", help="replace existing outputs")
    export.set_defaults(run=_export)
    demo = commands.add_parser(
        "demo", help="train, quantize, export and compare the built-in example CNN"
    )
    demo.add_argument("--output-dir", default="keras_qat_demo")
    demo.add_argument("--dataset", choices=sorted(DATASETS), default="digits")
    demo.add_argument("--force", action="store_true", help="replace an earlier demo's files")
    demo.set_defaults(run=_demo)
    return parser


@contextlib.contextmanager
def _native_logs_silenced():
    """Sends what TensorFlow's C++ code logs to /dev/null; Python's output stays.

    TensorFlow, XLA and the converter log through absl straight to file
    descriptor 2, some of it before any log level is read, so the descriptor
    is pointed at /dev/null while `sys.stderr` (error lines, warnings,
    tracebacks) keeps writing to the terminal through a copy of it. A native
    crash's own message is hidden too: `--verbose` shows it.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    python_stderr = sys.stderr
    try:
        on_descriptor_2 = python_stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # replaced, e.g. captured by a test
        on_descriptor_2 = False
    if on_descriptor_2:
        sys.stderr = os.fdopen(
            os.dup(saved),
            "w",
            buffering=1,
            encoding=python_stderr.encoding,
            errors=python_stderr.errors,
        )
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        # The copy stays open: logging handlers created inside (TensorFlow's,
        # absl's) hold it, and it writes where stderr does.
        sys.stderr = python_stderr


def _run(args):
    """Runs the command; returns the error messages of a user mistake (empty when done)."""
    from keras_qat.errors import ConfigError

    try:
        args.run(args)
    except ConfigError as e:
        return e.errors
    except (ValueError, OSError, _CommandError) as e:
        # keras_qat's own errors (bad config, data, model file, export) are
        # ValueErrors; OSErrors are files that exist, or directories that do not.
        if args.verbose:
            traceback.print_exc()
        return getattr(e, "messages", [str(e)])
    return []


def main(argv=None):
    """Runs the command line; returns the exit code (0 ok, 1 errors found).

    Args:
        argv: Arguments without the program name. Defaults to `sys.argv[1:]`.

    Returns:
        The process exit code.
    """
    args = _parser().parse_args(argv)
    if args.verbose:
        messages = _run(args)
    else:
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        with _native_logs_silenced():
            messages = _run(args)
    for message in messages:
        print(f"error: {message}", file=sys.stderr)
    return 1 if messages else 0


if __name__ == "__main__":
    sys.exit(main())
