"""QAT training time relative to float, measured as a ratio in one run. Prints one table.

First version: the demo CNN on random 8x8 inputs, keras_qat INT8 on every quantizable layer.
Each model trains `--epochs` epochs per round after a warm-up epoch; the best of `--rounds`
rounds counts, alternating models so both see the same machine load.
(The MobileNetV2 and TFMOT comparisons of SPEC.md section 7 are still to come.)

    python benchmarks/speed.py [--samples 8192] [--epochs 3] [--rounds 3]
"""

import argparse
import time

import numpy as np

import keras_qat
from keras_qat._keras import keras
from keras_qat.demo import build_demo_model

LAYERS = ("conv1", "dwconv2", "pwconv2", "pool2", "logits")


def epoch_time(model, x, y, epochs):
    start = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=128, verbose=0)
    return (time.perf_counter() - start) / epochs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.random((args.samples, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 10, args.samples)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    float_model = build_demo_model()
    qat_model = keras_qat.apply_retrain_config(float_model, {n: {} for n in LAYERS}, x[:256])
    models = {"float": float_model, "keras_qat INT8": qat_model}
    for model in models.values():
        model.compile("adam", loss)
        model.fit(x, y, epochs=1, batch_size=128, verbose=0)  # warm-up: tracing
    times = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            times[name].append(epoch_time(model, x, y, args.epochs))
    best = {name: min(values) for name, values in times.items()}
    print(f"\n{'model':16} {'epoch s':>8} {'/ float':>8}")
    for name, seconds in best.items():
        print(f"{name:16} {seconds:8.3f} {seconds / best['float']:8.2f}")


if __name__ == "__main__":
    main()
