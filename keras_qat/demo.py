"""The built-in example: train a small CNN, quantize it with keras_qat, export and compare."""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.apply import apply_retrain_config
from keras_qat.atomic import refuse_existing
from keras_qat.config import create_quant_retrain_config
from keras_qat.datasets import DATASETS
from keras_qat.export import export_saved_model, export_tflite
from keras_qat.litert import check_tflite, predict_tflite

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def build_demo_model(input_shape=(8, 8, 1), width=16, classes=10):
    """Builds the demo CNN: Conv-BN-ReLU, depthwise, pointwise, average pooling, dense.

    Args:
        input_shape: Image shape. Inputs larger than 8x8 get a stride-2 first
            convolution. Defaults to `(8, 8, 1)` (scikit-learn's digits).
        width: Channels of the first convolution (the pointwise one has
            twice as many). Defaults to `16`.
        classes: Outputs (logits). Defaults to `10`.

    Returns:
        An uncompiled tf_keras Functional model.
    """
    layers = keras.layers
    strides = 1 if input_shape[0] <= 8 else 2
    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(width, 3, strides, padding="same", use_bias=False, name="conv1")(inputs)
    x = layers.BatchNormalization(name="conv1_bn")(x)
    x = layers.ReLU(name="conv1_relu")(x)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dwconv2")(x)
    x = layers.Conv2D(2 * width, 1, activation="relu", name="pwconv2")(x)
    x = layers.AveragePooling2D(name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="demo_cnn")


@dataclasses.dataclass(frozen=True)
class Recipe:
    """How the demo trains on one data set.

    Args:
        width: `build_demo_model` width.
        float_epochs: `(epochs, learning rate)` stages of float training (Adam).
        qat_epochs: QAT fine-tuning epochs, at `qat_learning_rate`.
        qat_learning_rate: Adam learning rate of QAT.
        batch_size: Training batch size.
    """

    width: int
    float_epochs: tuple[tuple[int, float], ...]
    qat_epochs: int
    qat_learning_rate: float
    batch_size: int


RECIPES = {
    "digits": Recipe(16, ((20, 3e-3),), 2, 2e-4, 64),
    "fashion-mnist": Recipe(32, ((6, 2e-3), (2, 2e-4)), 2, 2e-4, 128),
}


def train_float(model, data, recipe, verbose=0):
    """Trains `model` on `data` by the recipe's float stages.

    Args:
        model: The demo model.
        data: `(x_train, y_train, x_test, y_test)`.
        recipe: A `Recipe`.
        verbose: Keras `fit` verbosity. Defaults to `0`.
    """
    for epochs, learning_rate in recipe.float_epochs:
        model.compile(keras.optimizers.Adam(learning_rate), LOSS, metrics=["accuracy"])
        model.fit(data[0], data[1], epochs=epochs, batch_size=recipe.batch_size, verbose=verbose)


def accuracy(logits, labels):
    """Top-1 accuracy of `logits` against integer `labels`."""
    return float(np.mean(np.argmax(logits, -1) == labels))


# What the demo writes into its output directory.
DEMO_FILES = (
    "float_model.keras",
    "config.json",
    "saved_model",
    "model.tflite",
    "model.quant_record.json",
)


def run_demo(output_dir, dataset="digits", verbose=1, overwrite=False):
    """The whole flow: float training, config, QAT, export, comparison.

    Files written to `output_dir` (created if needed): `DEMO_FILES`.

    Args:
        output_dir: Directory for the demo's files.
        dataset: A key of `datasets.DATASETS`. Defaults to `"digits"`.
        verbose: Progress output of training: 0 none, 1 progress bars.
            Defaults to `1`.
        overwrite: Replace files an earlier run left in `output_dir`.
            Defaults to `False`.

    Returns:
        Dict: `float_accuracy`, `qat_accuracy`, `tflite_accuracy` (test
        set), `agreement` and `max_abs_error` (.tflite vs QAT model),
        `tflite_bytes`, `float_tflite_bytes`, `test_samples`.

    Raises:
        FileExistsError: if one of the files exists and `overwrite` is False
            (checked before training).
        FileNotFoundError: if the dataset is not installed.
    """
    for name in DEMO_FILES:
        refuse_existing(os.path.join(output_dir, name), overwrite)
    data = DATASETS[dataset]()
    x_train, y_train, x_test, y_test = data
    recipe = RECIPES[dataset]
    os.makedirs(output_dir, exist_ok=True)
    keras.utils.set_random_seed(0)

    model = build_demo_model(x_train.shape[1:], recipe.width)
    if verbose:
        epochs = sum(epochs for epochs, _ in recipe.float_epochs)
        print(f"training the float model: {epochs} epochs on {len(x_train)} images")
    train_float(model, data, recipe)
    # Existing files were refused above; overwrite=False would prompt on stdin.
    model.save(os.path.join(output_dir, "float_model.keras"), overwrite=True)
    config_path = os.path.join(output_dir, "config.json")
    create_quant_retrain_config(config_path, model, overwrite=overwrite)
    if verbose:
        print(f"config written: {config_path}; quantization-aware training:")

    qat_model = apply_retrain_config(model, config_path, x_train[:256])
    qat_model.compile(keras.optimizers.Adam(recipe.qat_learning_rate), LOSS)
    qat_model.fit(
        x_train, y_train, epochs=recipe.qat_epochs, batch_size=recipe.batch_size, verbose=verbose
    )

    export_saved_model(qat_model, os.path.join(output_dir, "saved_model"), overwrite=overwrite)
    tflite_path = os.path.join(output_dir, "model.tflite")
    export_tflite(qat_model, tflite_path, x_train[:512], overwrite=overwrite)
    check = check_tflite(qat_model, tflite_path, x_test)
    return {
        "float_accuracy": accuracy(model.predict(x_test, verbose=0), y_test),
        "qat_accuracy": accuracy(qat_model.predict(x_test, verbose=0), y_test),
        "tflite_accuracy": accuracy(predict_tflite(tflite_path, x_test), y_test),
        "agreement": check["agreement"],
        "max_abs_error": check["max_abs_error"],
        "tflite_bytes": os.path.getsize(tflite_path),
        "float_tflite_bytes": len(tf.lite.TFLiteConverter.from_keras_model(model).convert()),
        "test_samples": len(x_test),
    }
