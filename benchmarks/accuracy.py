"""Fashion-MNIST accuracy: keras_qat vs TFLite PTQ and TFMOT, one float model. Prints one table.

The demo CNN (Conv-BN-ReLU, depthwise, pointwise, average pooling, dense;
width 32) is trained once as float by the demo's Fashion-MNIST recipe (6
epochs at 2e-3, 2 at 2e-4, batch 128). Every QAT row fine-tunes that same
model for `--qat-epochs` epochs at 2e-4 and is exported to int8 TFLite with
the same 512 representative training images; TFLite accuracy is measured in
LiteRT on the full test set. W4A4 is AMCT's INT4 recipe
(`configs/int4_definition.json`: INT4 everywhere except the first and last
layers). "image fixed" is keras_qat INT8 with the first layer's input clip
fixed at [0, 1] by hand in the config (`image_clip.py`). Epoch: the fastest of
the row's epochs; "/ float" divides it by the fastest of two float epochs
timed right after it, so that a busy neighbour slows both. Needs
`apt-get install dataset-fashion-mnist`.

    python benchmarks/accuracy.py [--train-samples 60000] [--qat-epochs 2] [--plot accuracy.png]
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
from keras_qat.demo import LOSS, RECIPES, accuracy, build_demo_model, train_float

INT4_DEFINITION = pathlib.Path(__file__).parents[1] / "configs" / "int4_definition.json"
REPRESENTATIVE = 512


class EpochTimer(keras.callbacks.Callback):
    """Keeps the fastest epoch: the first one also traces the graph."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.start)


def fine_tune(model, x, y, epochs, batch_size):
    """QAT fine-tuning; returns the fastest epoch's seconds."""
    timer = EpochTimer()
    model.compile(keras.optimizers.Adam(2e-4), LOSS)
    model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[timer])
    return min(timer.times)


def tflite_accuracy(model, x_rep, x_test, y_test, int8=True):
    """Converts `model` (int8 with representative data) and measures it; None if it fails."""
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x_rep[i : i + 1]] for i in range(len(x_rep)))
    try:
        flatbuffer = converter.convert()
    except Exception as e:  # the converter raises several types
        print(f"  conversion failed: {str(e).splitlines()[0][:120]}")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "m.tflite")
        pathlib.Path(path).write_bytes(flatbuffer)
        return accuracy(keras_qat.predict_tflite(path, x_test), y_test)


def keras_qat_model(model, x_train, definition=None, edit=None):
    """Creates the default config (shaped by `definition`), edits it as a user would, applies it."""
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp, "config.json")
        keras_qat.create_quant_retrain_config(str(path), model, config_definition=definition)
        if edit is not None:
            path.write_text(json.dumps(edit(model, json.loads(path.read_text()))))
        return keras_qat.apply_retrain_config(model, str(path), x_train[:256])


def keras_qat_tflite_accuracy(qat, x_rep, x_test, y_test):
    with tempfile.TemporaryDirectory() as tmp:
        path = keras_qat.export_tflite(qat, os.path.join(tmp, "m.tflite"), x_rep)
        return accuracy(keras_qat.predict_tflite(path, x_test), y_test)


def tfmot_model(model, scheme=None):
    q = tfmot.quantization.keras
    with q.quantize_scope():
        if scheme is None:
            return q.quantize_model(model)
        return q.quantize_apply(q.quantize_annotate_model(model), scheme)


def float_epoch_time(model, x, y, batch_size):
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return fine_tune(copy, x, y, 2, batch_size)


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [name for name, *_ in rows]
    keras_acc = [k if k is not None else 0 for _, k, _, *_ in rows]
    tflite_acc = [t if t is not None else 0 for _, _, t, *_ in rows]
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
    print(f"plot written to {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-samples", type=int, default=60000)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--plot", help="write a PNG bar chart of the table here")
    args = parser.parse_args()
    x_train, y_train, x_test, y_test = load_fashion_mnist()
    x_train, y_train = x_train[: args.train_samples], y_train[: args.train_samples]
    x_rep = x_train[:REPRESENTATIVE]
    recipe = RECIPES["fashion-mnist"]
    batch = recipe.batch_size
    keras.utils.set_random_seed(0)

    model = build_demo_model(x_train.shape[1:], recipe.width)
    train_float(model, (x_train, y_train), recipe)
    float_time = float_epoch_time(model, x_train, y_train, batch)
    rows = [
        ("float", accuracy(model.predict(x_test, verbose=0), y_test),
         tflite_accuracy(model, x_rep, x_test, y_test, int8=False), float_time, 1.0),
        ("TFLite post-training int8", None, tflite_accuracy(model, x_rep, x_test, y_test), None,
         None),
    ]  # fmt: skip
    candidates = [
        ("TFMOT quantize_model 8-bit", lambda: tfmot_model(model), tflite_accuracy),
        (
            "TFMOT n-bit 4/4",
            lambda: tfmot_model(
                model,
                tfmot.quantization.keras.experimental.default_n_bit.DefaultNBitQuantizeScheme(
                    num_bits_weight=4, num_bits_activation=4
                ),
            ),
            tflite_accuracy,
        ),
        ("keras_qat INT8", lambda: keras_qat_model(model, x_train), keras_qat_tflite_accuracy),
        (
            "keras_qat INT8, image fixed",
            lambda: keras_qat_model(model, x_train, edit=with_image_clip_fixed),
            keras_qat_tflite_accuracy,
        ),
        (
            "keras_qat W4A4",
            lambda: keras_qat_model(model, x_train, str(INT4_DEFINITION)),
            keras_qat_tflite_accuracy,
        ),
    ]
    for name, build, to_tflite in candidates:
        print(f"{name} ...", flush=True)
        qat = build()
        epoch = fine_tune(qat, x_train, y_train, args.qat_epochs, batch)
        keras_acc = accuracy(qat.predict(x_test, verbose=0), y_test)
        # Float epochs timed right after, so that both see the same machine load.
        ratio = epoch / float_epoch_time(model, x_train, y_train, batch)
        rows.append((name, keras_acc, to_tflite(qat, x_rep, x_test, y_test), epoch, ratio))
        print(f"  {rows[-1]}", flush=True)

    def cell(value, fmt):
        return f"{value:{fmt}}" if value is not None else f"{'-':>{fmt.split('.')[0]}}"

    print(f"\nFashion-MNIST, {len(x_train)} training / {len(x_test)} test images, "
          f"QAT {args.qat_epochs} epochs")  # fmt: skip
    header = ("model", "Keras acc", "TFLite acc", "epoch s", "/ float")
    print("| {:28} | {:>9} | {:>10} | {:>7} | {:>7} |".format(*header))
    print(f"|{'-' * 30}|{'-' * 10}:|{'-' * 11}:|{'-' * 8}:|{'-' * 8}:|")
    for name, keras_acc, tflite_acc, epoch, ratio in rows:
        print(
            f"| {name:28} | {cell(keras_acc, '9.4f')} | {cell(tflite_acc, '10.4f')} "
            f"| {cell(epoch, '7.2f')} | {cell(ratio, '7.2f')} |"
        )
    if args.plot:
        plot(rows, args.plot)


if __name__ == "__main__":
    main()
