"""Does ULQ's in-range clip gradient (AMCT's LSQ-like term) help? Prints one table.

Same float model, same calibration, same fine-tune; the only difference is the
gradient reaching the clip bounds: AMCT's rule (keras_qat's default) versus the
bare `fake_quant_with_min_max_vars` gradient (clipped elements only). Run on
scikit-learn's digits with INT4 activations and weights everywhere but the
first and last layers (AMCT's INT4 recipe), where clip ranges matter most.

    python benchmarks/ulq_gradient.py [--seeds 3] [--epochs 3]
"""

import argparse
import os

import numpy as np
from sklearn.datasets import load_digits

import keras_qat
from keras_qat._keras import keras
from keras_qat.demo import build_demo_model
from keras_qat.quantizers import InputQuantizeLayer

LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
DEFINITION = os.path.join(os.path.dirname(__file__), "..", "configs", "int4_definition.json")


def use_gradient(qat_model, gradient):
    """Gives every input quantizer of `qat_model` the clip `gradient` (before tracing)."""
    for layer in qat_model.layers:
        if isinstance(layer, InputQuantizeLayer):
            layer.quantizer.gradient = gradient
    return qat_model


def run(seed, epochs, gradient, data, tmp):
    x, y, x_test, y_test = data
    keras.utils.set_random_seed(seed)
    model = build_demo_model()
    model.compile(keras.optimizers.Adam(3e-3), LOSS, metrics=["accuracy"])
    model.fit(x, y, epochs=20, batch_size=64, verbose=0)
    float_accuracy = model.evaluate(x_test, y_test, verbose=0)[1]
    config = os.path.join(tmp, f"config_{seed}.json")
    keras_qat.create_quant_retrain_config(config, model, DEFINITION, overwrite=True)
    qat = use_gradient(keras_qat.apply_retrain_config(model, config, x[:256]), gradient)
    qat.compile(keras.optimizers.Adam(1e-3), LOSS, metrics=["accuracy"])
    before = qat.evaluate(x_test, y_test, verbose=0)[1]
    qat.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    after = qat.evaluate(x_test, y_test, verbose=0)[1]
    return float_accuracy, before, after


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    data = images[:1500], digits.target[:1500], images[1500:], digits.target[1500:]
    tmp = os.path.join("benchmarks", "out")
    os.makedirs(tmp, exist_ok=True)
    rows = {"AMCT gradient (default)": "ulq", "bare fake-quant gradient": "fake_quant"}
    results = {name: [run(s, args.epochs, g, data, tmp) for s in range(args.seeds)]
               for name, g in rows.items()}  # fmt: skip
    print(f"\nW4A4 digits, {args.seeds} seeds, {args.epochs} QAT epochs (test accuracy, mean)")
    print(f"{'clip gradient':28} {'float':>7} {'QAT start':>10} {'QAT end':>8}")
    for name, values in results.items():
        mean = np.mean(values, axis=0)
        print(f"{name:28} {mean[0]:7.4f} {mean[1]:10.4f} {mean[2]:8.4f}")


if __name__ == "__main__":
    main()
