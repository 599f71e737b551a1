"""The .tflite against the QAT model, on tf_keras.applications networks; writes docs/fidelity.md.

Each network (weights=None, 10 classes, logits, 64x64x3 input; InceptionV3
75x75) is trained as float for one epoch on Fashion-MNIST images (resized,
grey to three channels), then taken through keras_qat with the default INT8
config and with W4A4 (INT4 for every layer with weights but the first and
the last, AMCT's recipe): apply (calibrated on 64 images), one QAT epoch at
1e-4, export with 256 representative images, and both run on the test images.

Columns: top-1 agreement between Keras and LiteRT; the share of logits the
file computes exactly (within 0.01 of its output step: the same int8 level,
up to float32 summation order); the largest difference in output steps.
Needs `apt-get install dataset-fashion-mnist`.

    python benchmarks/fidelity.py [--families MobileNetV2,ResNet50] [--train 2048] [--test 1000]

A run over some families replaces their rows in docs/fidelity.md and keeps
the others; each row names the commit it was measured at.
"""

import argparse
import json
import pathlib
import subprocess
import tempfile

import numpy as np
import tensorflow as tf

import keras_qat
from keras_qat._keras import keras
from keras_qat.datasets import load_fashion_mnist
from keras_qat.demo import LOSS

FAMILIES = (
    "MobileNetV2",
    "ResNet50",
    "EfficientNetB0",
    "MobileNetV3Small",
    "InceptionV3",
    "DenseNet121",
)
SIZES = {"InceptionV3": 75}


def images(x, size):
    """Fashion-MNIST 28x28 grey in [0, 1] -> size x size x 3."""
    return tf.image.resize(np.repeat(x, 3, axis=-1), (size, size)).numpy()


def output_step(path):
    """The scale of the int8 tensor the file dequantizes into its output."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    tensors = interpreter.get_tensor_details()
    output = interpreter.get_output_details()[0]["index"]
    for op in interpreter._get_ops_details():
        if op["op_name"] == "DEQUANTIZE" and output in op["outputs"]:
            return tensors[op["inputs"][0]]["quantization"][0]
    raise RuntimeError(f"{path}: the output is not dequantized from int8")


def w4a4(config):
    """INT4 data and weights for every layer with weights but the first and the last.

    Layers without weights (average poolings) keep INT8 inputs, as in
    `configs/int4_definition.json`.
    """
    names = [name for name, entry in config.items() if isinstance(entry, dict)]
    for name in names[1:-1]:
        if "retrain_weight_config" in config[name]:
            config[name]["retrain_data_config"]["dst_type"] = "INT4"
            config[name]["retrain_weight_config"]["dst_type"] = "INT4"
    return config


def measure(model, recipe, data, tmp):
    x_train, y_train, x_test = data
    path = tmp / f"{model.name}_{recipe}.json"
    keras_qat.create_quant_retrain_config(str(path), model)
    config = json.loads(path.read_text())
    if recipe == "W4A4":
        path.write_text(json.dumps(w4a4(config)))
    qat = keras_qat.apply_retrain_config(model, str(path), x_train[:64])
    qat.compile(keras.optimizers.Adam(1e-4), LOSS)
    qat.fit(x_train, y_train, batch_size=32, epochs=1, verbose=0)
    tflite = keras_qat.export_tflite(qat, tmp / f"{model.name}_{recipe}.tflite", x_train[:256])
    want = qat.predict(x_test, verbose=0)
    got = keras_qat.predict_tflite(tflite, x_test)
    steps = np.abs(got - want) / output_step(tflite)
    return {
        "agreement": float(np.mean(got.argmax(1) == want.argmax(1))),
        "exact": float(np.mean(steps < 0.01)),
        "max_steps": float(steps.max()),
    }


def earlier_rows(path):
    """The rows of an earlier fidelity.md, keyed by (network, recipe), with their commit.

    Rows written before the commit column get "?" there.
    """
    if not path.exists():
        return {}
    rows = {}
    for line in path.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) in (5, 6) and cells[1] in ("INT8", "W4A4"):
            commit = cells[5] if len(cells) == 6 else "?"
            rows[(cells[0], cells[1])] = "| " + " | ".join([*cells[:5], commit]) + " |"
    return rows


def row_order(key):
    """Networks in `FAMILIES` order (others after), INT8 before W4A4."""
    family, recipe = key
    position = FAMILIES.index(family) if family in FAMILIES else len(FAMILIES)
    return position, family, recipe


def write_table(out, rows, commit, train, test):
    """Writes `rows` (`(family, recipe, result)`) into `out`/fidelity.md over the earlier ones."""
    measured = {
        (family, recipe): (
            f"| {family} | {recipe} | {r['agreement']:.4f} | {r['exact']:.4f} "
            f"| {r['max_steps']:.2f} | {commit or '?'} |"
        )
        for family, recipe, r in rows
    }
    out.mkdir(parents=True, exist_ok=True)
    table = {**earlier_rows(out / "fidelity.md"), **measured}
    lines = [
        "| network | recipe | top-1 agreement | logits exact | max error (output steps) | commit |",
        "|---|---|---:|---:|---:|---|",
        *(table[key] for key in sorted(table, key=row_order)),
    ]
    (out / "fidelity.md").write_text(
        "# Fidelity: the .tflite against the QAT model\n\n"
        f"Written by `python benchmarks/fidelity.py` ({train} training images, "
        f"{test} test images; see its docstring for the protocol). A run over some "
        "families replaces their rows and keeps the others; the last column is the commit "
        "each row was measured at.\n\n" + "\n".join(lines) + "\n"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--train", type=int, default=2048)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--out", default="docs", help="directory for fidelity.md")
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    ).stdout.strip()
    out = pathlib.Path(args.out)
    x_train, y_train, x_test, _ = load_fashion_mnist()
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families.split(","):
            size = SIZES.get(family, 64)
            data = (
                images(x_train[: args.train], size),
                y_train[: args.train],
                images(x_test[: args.test], size),
            )
            keras.utils.set_random_seed(0)
            model = getattr(keras.applications, family)(
                input_shape=(size, size, 3), weights=None, classes=10, classifier_activation=None
            )
            model.compile(keras.optimizers.Adam(1e-3), LOSS)
            model.fit(data[0], data[1], batch_size=32, epochs=1, verbose=0)
            rows = []
            for recipe in ("INT8", "W4A4"):
                result = measure(model, recipe, data, pathlib.Path(tmp))
                rows.append((family, recipe, result))
                print(family, recipe, result, flush=True)
            # Each network's rows as soon as they are measured: a long run may be cut short.
            write_table(out, rows, commit, args.train, args.test)
            print(f"written: {out / 'fidelity.md'}", flush=True)


if __name__ == "__main__":
    main()
