"""Fashion-MNIST: keras_qat vs TFLite PTQ and TFMOT, one float model; writes docs/accuracy.md.

The CNN of issue 18 (Conv-BN-ReLU, MaxPool, depthwise-BN-ReLU,
pointwise-BN-ReLU, MaxPool, Conv-ReLU, GlobalAveragePooling, Dense-ReLU,
Dense; width 32) is trained once as float (6 epochs at 2e-3, 2 at 2e-4,
batch 128). Every QAT row fine-tunes that same model for `--qat-epochs`
epochs at 2e-4 and is exported to int8 TFLite with the same 512
representative training images; TFLite results are measured in LiteRT on
the full test set. W4A4 is AMCT's INT4 recipe (`configs/int4_definition.json`:
INT4 everywhere except the first and last layers). "image fixed" is
keras_qat INT8 with the first layer's input clip fixed at [0, 1] by hand in
the config (`image_clip.py`).

Columns: accuracy in Keras and in the .tflite; agreement, the share of test
images whose top-1 class is the same in both; the median |logit error|
between them; the fastest QAT epoch, and "/ float", that epoch over the
fastest of two float epochs timed right after it (so that a busy neighbour
slows both). Needs `apt-get install dataset-fashion-mnist`.

    python benchmarks/accuracy.py [--train-samples 60000] [--qat-epochs 2] [--out docs]
"""

import argparse
import json
import os
import pathlib
import tempfile
import time

import numpy as np
import tensorflow as tf
from image_clip import with_image_clip_fixed

import keras_qat
from keras_qat._keras import keras, tfmot
from keras_qat.datasets import load_fashion_mnist
from keras_qat.demo import LOSS, accuracy

INT4_DEFINITION = pathlib.Path(__file__).parents[1] / "configs" / "int4_definition.json"
REPRESENTATIVE = 512
BATCH = 128
FLOAT_STAGES = ((6, 2e-3), (2, 2e-4))


def build_cnn(width=32, classes=10):
    """The benchmark's CNN (see the module docstring), for 28x28x1 images."""
    layers = keras.layers
    inputs = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = layers.ReLU(name="relu1")(layers.BatchNormalization(name="bn1")(x))
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw2")(x)
    x = layers.ReLU(name="relu2")(layers.BatchNormalization(name="bn2")(x))
    x = layers.Conv2D(2 * width, 1, use_bias=False, name="pw2")(x)
    x = layers.ReLU(name="relu3")(layers.BatchNormalization(name="bn3")(x))
    x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Conv2D(2 * width, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(64, activation="relu", name="fc1")(x)
    outputs = layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="fashion_cnn")


class EpochTimer(keras.callbacks.Callback):
    """Keeps every epoch's seconds: the first one also traces the graph."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def fit(model, x, y, epochs, learning_rate):
    """Trains `model`; returns the fastest epoch's seconds."""
    timer = EpochTimer()
    model.compile(keras.optimizers.Adam(learning_rate), LOSS)
    model.fit(x, y, epochs=epochs, batch_size=BATCH, verbose=0, callbacks=[timer])
    return min(timer.times)


def convert(model, x_rep, int8=True):
    """The plain converter's .tflite of `model` (int8 with representative data), or None."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x_rep[i : i + 1]] for i in range(len(x_rep)))
    try:
        return converter.convert()
    except Exception as e:  # the converter raises several types
        print(f"  conversion failed: {str(e).splitlines()[0][:120]}")
        return None


def tflite_logits(flatbuffer, x):
    """Runs a .tflite (bytes) in LiteRT on `x`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp, "m.tflite")
        path.write_bytes(flatbuffer)
        return keras_qat.predict_tflite(path, x)


def keras_qat_export(qat, x_rep):
    with tempfile.TemporaryDirectory() as tmp:
        path = keras_qat.export_tflite(qat, os.path.join(tmp, "m.tflite"), x_rep)
        return pathlib.Path(path).read_bytes()


def config_document(model, definition=None):
    """The config `create_quant_retrain_config` writes for `model` (shaped by `definition`)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp, "config.json")
        keras_qat.create_quant_retrain_config(str(path), model, config_definition=definition)
        return json.loads(path.read_text())


def keras_qat_model(model, x_train, definition=None, edit=None):
    """Creates the default config (shaped by `definition`), edits it as a user would, applies it."""
    document = config_document(model, definition)
    if edit is not None:
        document = edit(model, document)
    return keras_qat.apply_retrain_config(model, document, x_train[:256])


def tfmot_model(model, scheme=None):
    q = tfmot.quantization.keras
    with q.quantize_scope():
        if scheme is None:
            return q.quantize_model(model)
        return q.quantize_apply(q.quantize_annotate_model(model), scheme)


def float_epoch_time(model, x, y):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return fit(copy, x, y, 2, 2e-4)


def row(name, keras_logits, flatbuffer, x_test, y_test, epoch=None, ratio=None):
    """One table row: accuracies, agreement and median |logit error| (None where not run)."""
    file_logits = tflite_logits(flatbuffer, x_test) if flatbuffer is not None else None
    keras_acc = accuracy(keras_logits, y_test) if keras_logits is not None else None
    tflite_acc = accuracy(file_logits, y_test) if file_logits is not None else None
    agreement = error = None
    if keras_logits is not None and file_logits is not None:
        agreement = float(np.mean(keras_logits.argmax(-1) == file_logits.argmax(-1)))
        error = float(np.median(np.abs(keras_logits - file_logits)))
    result = (name, keras_acc, tflite_acc, agreement, error, epoch, ratio)
    print(f"  {result}", flush=True)
    return result


def markdown_rows(rows, formats):
    """Table lines `| name | value | ... |`, each value in its format ("-" for None)."""
    lines = []
    for name, *values in rows:
        cells = " | ".join(
            f"{v:{f}}" if v is not None else "-" for v, f in zip(values, formats, strict=True)
        )
        lines.append(f"| {name} | {cells} |")
    return lines


def table(rows, args, samples, tests):
    lines = [
        f"Fashion-MNIST, {samples} training / {tests} test images, QAT {args.qat_epochs} epochs "
        "(`python benchmarks/accuracy.py`).",
        "",
        "| model | Keras acc | TFLite acc | agreement | median abs logit error | epoch s "
        "| / float |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += markdown_rows(rows, ("6.4f", "6.4f", "6.4f", "6.3f", "6.2f", "6.2f"))
    return "\n".join(lines) + "\n"


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, *_ in rows]
    keras_acc = [r[1] or 0 for r in rows]
    tflite_acc = [r[2] or 0 for r in rows]
    positions = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(8, 3.8))
    ax.bar(positions - 0.2, keras_acc, 0.4, label="Keras")
    ax.bar(positions + 0.2, tflite_acc, 0.4, label="int8 TFLite (LiteRT)")
    ax.set_xticks(positions, names, rotation=20, ha="right", fontsize=8)
    low = min(a for a in keras_acc + tflite_acc if a > 0)
    ax.set_ylim(max(0, low - 0.05), 1.0)
    ax.set_ylabel("Fashion-MNIST test accuracy")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-samples", type=int, default=60000)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--out", default="docs", help="directory for accuracy.md and .png")
    args = parser.parse_args()
    x_train, y_train, x_test, y_test = load_fashion_mnist()
    x_train, y_train = x_train[: args.train_samples], y_train[: args.train_samples]
    x_rep = x_train[:REPRESENTATIVE]
    keras.utils.set_random_seed(0)

    model = build_cnn()
    for epochs, learning_rate in FLOAT_STAGES:
        fit(model, x_train, y_train, epochs, learning_rate)
    float_logits = model.predict(x_test, verbose=0)
    rows = [
        row("float", float_logits, convert(model, x_rep, int8=False), x_test, y_test,
            float_epoch_time(model, x_train, y_train), 1.0),
        row("TFLite post-training int8", float_logits, convert(model, x_rep), x_test, y_test),
    ]  # fmt: skip
    n_bit = tfmot.quantization.keras.experimental.default_n_bit.DefaultNBitQuantizeScheme
    candidates = [
        ("TFMOT quantize_model 8-bit", lambda: tfmot_model(model), convert),
        (
            "TFMOT n-bit 4/4",
            lambda: tfmot_model(model, n_bit(num_bits_weight=4, num_bits_activation=4)),
            convert,
        ),
        ("keras_qat INT8", lambda: keras_qat_model(model, x_train), keras_qat_export),
        (
            "keras_qat INT8, image fixed",
            lambda: keras_qat_model(model, x_train, edit=with_image_clip_fixed),
            keras_qat_export,
        ),
        (
            "keras_qat W4A4",
            lambda: keras_qat_model(model, x_train, str(INT4_DEFINITION)),
            keras_qat_export,
        ),
    ]
    for name, build, export in candidates:
        print(f"{name} ...", flush=True)
        qat = build()
        epoch = fit(qat, x_train, y_train, args.qat_epochs, 2e-4)
        # Float epochs timed right after, so that both see the same machine load.
        ratio = epoch / float_epoch_time(model, x_train, y_train)
        logits = qat.predict(x_test, verbose=0)
        rows.append(row(name, logits, export(qat, x_rep), x_test, y_test, epoch, ratio))

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    text = table(rows, args, len(x_train), len(x_test))
    (out / "accuracy.md").write_text(
        "# Accuracy and fidelity\n\n" + text + "\n![accuracy per scheme](accuracy.png)\n"
    )
    plot(rows, out / "accuracy.png")
    print(text)
    print(f"written: {out / 'accuracy.md'}, {out / 'accuracy.png'}")


if __name__ == "__main__":
    main()
