"""The mixed-precision search against all-INT8 and AMCT's W4A4 recipe; writes docs/search.md.

Per network, a float model is trained once on Fashion-MNIST; then
`search_mixed_precision` runs from the default config for each budget
(`--budgets`, points of top-1 accuracy against the default config, both
fine-tuned `--check-epochs` epochs), on a held-out part of the training set.
Each resulting config, the default (all INT8) and AMCT's INT4 recipe
(W4A4 but the first and last layers, `fidelity.w4a4`, as
`configs/int4_definition.json` writes it for the CNN) is then
QAT fine-tuned `--qat-epochs` epochs and exported; the table gives the
accuracy in Keras and in the .tflite (LiteRT, test set), the .tflite size,
and the bytes of the quantized weights at their bit widths (INT4 kernels
are stored on an int8 carrier in the file: see docs/int4_storage.md, so the
file does not shrink with them). Networks: the CNN of `accuracy.py`, and
MobileNetV2 (alpha 0.35, weights=None) on 32x32 images (Fashion-MNIST
padded and repeated to 3 channels). Needs `apt-get install dataset-fashion-mnist`.

    python benchmarks/search.py [--networks cnn mobilenetv2] [--budgets 0.3 1 2] [--out docs]
"""

import argparse
import pathlib
import tempfile

import numpy as np
from accuracy import build_cnn, config_document, fit, keras_qat_export, markdown_rows
from fidelity import w4a4

import keras_qat
from keras_qat._keras import keras
from keras_qat.datasets import load_fashion_mnist
from keras_qat.demo import LOSS, accuracy
from keras_qat.graph.model_check import checked_model, model_layers
from keras_qat.layer_table import layer_spec


def mobilenet_v2():
    model = keras.applications.MobileNetV2(
        input_shape=(32, 32, 3), alpha=0.35, weights=None, classes=10, classifier_activation=None
    )
    # Trained from scratch for a few epochs, BatchNormalization's moving
    # statistics (momentum 0.999) stay far from the batch ones: the float
    # model scored 0.10 in inference, and so did every QAT model folded from it.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return model


def as_rgb32(images):
    return np.repeat(np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0))), 3, axis=-1)


NETWORKS = {"cnn": (build_cnn, lambda x: x, 4), "mobilenetv2": (mobilenet_v2, as_rgb32, 6)}


def weight_bytes(model, document):
    """Bytes of the enabled layers' kernels at the bit widths `document` gives them."""
    total = 0.0
    for layer in model_layers(checked_model(model)):
        entry = document.get(layer.name)
        spec = layer_spec(layer)
        if not isinstance(entry, dict) or not entry["retrain_enable"] or not spec.has_weights:
            continue
        bits = 4 if entry["retrain_weight_config"]["dst_type"] == "INT4" else 8
        total += sum(np.prod(getattr(layer, a).shape) for a, _ in spec.kernels) * bits / 8
    return total


def measured(name, model, document, data, epochs):
    """One row: fine-tune the config's QAT model, export, measure."""
    x_train, y_train, x_test, y_test = data
    qat = keras_qat.apply_retrain_config(model, document, x_train[:512])
    fit(qat, x_train, y_train, epochs, 2e-4)
    flatbuffer = keras_qat_export(qat, x_train[:512])
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp, "m.tflite")
        path.write_bytes(flatbuffer)
        file_logits = keras_qat.predict_tflite(path, x_test)
    int4 = sum(
        isinstance(e, dict) and e.get("retrain_weight_config", {}).get("dst_type") == "INT4"
        for e in document.values()
    )
    row = (
        name,
        float(int4),
        accuracy(qat.predict(x_test, verbose=0), y_test),
        accuracy(file_logits, y_test),
        len(flatbuffer) / 1024,
        weight_bytes(model, document) / 1024,
    )
    print(f"  {row}", flush=True)
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", choices=sorted(NETWORKS), default=sorted(NETWORKS))
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.3, 1.0, 2.0])
    parser.add_argument("--train-samples", type=int, default=20000)
    parser.add_argument("--check-epochs", type=int, default=1)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--out", default="docs", help="directory for search.md")
    args = parser.parse_args()
    x_train, y_train, x_test, y_test = load_fashion_mnist()
    held_out = slice(args.train_samples, args.train_samples + 2000)
    sections = []
    for network in args.networks:
        build, prepare, float_epochs = NETWORKS[network]
        data = (
            prepare(x_train[: args.train_samples]),
            y_train[: args.train_samples],
            prepare(x_test),
            y_test,
        )
        evaluation = (prepare(x_train[held_out]), y_train[held_out])
        keras.utils.set_random_seed(0)
        model = build()
        fit(model, data[0], data[1], float_epochs, 2e-3)
        float_accuracy = accuracy(model.predict(data[2], verbose=0), data[3])
        print(f"{network}: float accuracy {float_accuracy:.4f}", flush=True)
        default = config_document(model)
        recipe = w4a4(config_document(model))
        rows = [
            measured("all INT8", model, default, data, args.qat_epochs),
            measured("AMCT INT4 recipe (hand-written)", model, recipe, data, args.qat_epochs),
        ]
        sensitivities = None  # measured by the first budget's search, reused by the others
        for budget in args.budgets:
            chosen, sensitivities = keras_qat.search_mixed_precision(
                model,
                default,
                data[0][:512],
                evaluation,
                max_drop=budget,
                fine_tune=(data[0], data[1], args.check_epochs, LOSS),
                sensitivities=sensitivities,
            )
            rows.append(
                measured(f"search, budget {budget} pt", model, chosen, data, args.qat_epochs)
            )
        sections += [
            f"## {network}",
            "",
            f"Float {float_epochs} epochs on {args.train_samples} images (test accuracy "
            f"{float_accuracy:.4f}); budget checks "
            f"fine-tune {args.check_epochs} epoch(s), rows {args.qat_epochs}.",
            "",
            "| config | INT4 layers | Keras acc | TFLite acc | .tflite KiB | weights KiB |",
            "|---|---:|---:|---:|---:|---:|",
            *markdown_rows(rows, ("4.0f", "6.4f", "6.4f", "7.1f", "7.1f")),
            "",
        ]
    out = pathlib.Path(args.out, "search.md")
    header = "# Mixed-precision search\n\nWritten by `python benchmarks/search.py` (one run).\n\n"
    out.write_text(header + "\n".join(sections))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
