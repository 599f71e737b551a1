"""The built-in example: a small CNN for 8x8 digit images and its config."""

import os

from keras_qat._keras import keras
from keras_qat.config import create_quant_retrain_config, read_retrain_config


def build_demo_model():
    """Builds the demo CNN (Conv-BN-ReLU, depthwise, pooling, dense) for 8x8x1 input.

    Returns:
        An uncompiled tf_keras Functional model with 10 outputs.
    """
    layers = keras.layers
    inputs = keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = layers.BatchNormalization(name="conv1_bn")(x)
    x = layers.ReLU(name="conv1_relu")(x)
    x = layers.DepthwiseConv2D(3, padding="same", activation="relu", name="dwconv2")(x)
    x = layers.Conv2D(32, 1, activation="relu", name="pwconv2")(x)
    x = layers.AveragePooling2D(name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(10, name="logits")(x)
    return keras.Model(inputs, outputs, name="digits_cnn")


def run_demo(output_dir):
    """Saves the demo model, writes its default config and validates it.

    Args:
        output_dir: Directory for `demo_model.keras` and `config.json`
            (created; files the demo wrote before are replaced).

    Returns:
        `(model, config)`: the model and its validated `RetrainConfig`.
    """
    os.makedirs(output_dir, exist_ok=True)
    model = build_demo_model()
    model.save(os.path.join(output_dir, "demo_model.keras"))
    config_path = os.path.join(output_dir, "config.json")
    create_quant_retrain_config(config_path, model, overwrite=True)
    return model, read_retrain_config(config_path, model)
