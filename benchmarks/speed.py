"""Training and calibration speed of keras_qat, as ratios measured in one run. Prints one table.

Per network (the demo CNN at 28x28 with width 32, and MobileNetV2 from
tf_keras.applications with weights=None at 96x96x3, alpha 0.35): the train-step
time of the float model, of keras_qat INT8 on every quantizable layer and of
TFMOT's `quantize_model` 8-bit QAT; of keras_qat with the image's clip fixed at
[0, 1] in the first layer's config ("image fixed": its input gradient, which
float training never computes, is then not needed either); and ("bare") of
keras_qat with the fake-quant ops' own gradient instead of ULQ's learned-clip
one (the clips learn from clipped values only): what ULQ's in-range term
costs is QAT minus bare. Each model first trains one
warm-up epoch (tracing); then `--rounds` rounds alternate the models so all see
the same machine load, and the fastest round counts. Then IFMR calibration (inside
`apply_retrain_config`, `--calibration-batches` batches) against the float
model's forward passes over the same batches. Targets:
QAT step <= 1.3 x float and <= 1.0 x TFMOT; calibration <= 3 x forward.
Batches of 128 by default, the batch the project's reference figures were
measured with; smaller ones weigh the per-op costs more.

    python benchmarks/speed.py [--samples 2048] [--batch-size 128] [--rounds 3]
                               [--calibration-batches 8]
"""

import argparse
import time

import numpy as np
from image_clip import with_image_clip_fixed
from ulq_gradient import use_gradient

import keras_qat
import keras_qat.apply
from keras_qat._keras import keras, tfmot
from keras_qat.config.create import build_config_document
from keras_qat.demo import LOSS, build_demo_model


def networks():
    yield "demo CNN 28x28", build_demo_model((28, 28, 1), width=32)
    yield (
        "MobileNetV2 96x96 a0.35",
        keras.applications.MobileNetV2(
            (96, 96, 3), alpha=0.35, weights=None, classes=10, classifier_activation=None
        ),
    )


def warm_up(model, x, y, batch):
    model.compile(keras.optimizers.Adam(1e-4), LOSS)
    model.fit(x[: 4 * batch], y[: 4 * batch], epochs=1, batch_size=batch, verbose=0)


def step_time(model, x, y, batch):
    start = time.perf_counter()
    model.fit(x, y, epochs=1, batch_size=batch, verbose=0)
    return (time.perf_counter() - start) / int(np.ceil(len(x) / batch))


def calibration_ratio(model, config, x, batches, batch):
    """`(calibration seconds, forward seconds)` over the same `batches` batches of `config`."""
    calibrate = keras_qat.apply.calibrate
    spent = []

    def timed(*args, **kwargs):
        start = time.perf_counter()
        result = calibrate(*args, **kwargs)
        spent.append(time.perf_counter() - start)
        return result

    keras_qat.apply.calibrate = timed
    try:
        calibrated = {**config, "batch_num": batches}
        keras_qat.apply_retrain_config(model, calibrated, x[: batches * batch])
    finally:
        keras_qat.apply.calibrate = calibrate
    model.predict_on_batch(x[:batch])  # traced once, as a user's model would be
    start = time.perf_counter()
    for index in range(batches):
        model.predict_on_batch(x[index * batch : (index + 1) * batch])
    return spent[0], time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calibration-batches", type=int, default=8)
    args = parser.parse_args()
    batch = args.batch_size
    if args.calibration_batches * batch > args.samples:
        parser.error("--calibration-batches x --batch-size must not exceed --samples")
    rng = np.random.default_rng(0)
    rows = []
    for name, model in networks():
        x = rng.random((args.samples, *model.input_shape[1:])).astype(np.float32)
        y = rng.integers(0, 10, args.samples)
        print(f"{name} ...", flush=True)
        # What create_quant_retrain_config writes: every key at its default.
        config = build_config_document(model, {})
        models = {
            "float": model,
            "keras_qat": keras_qat.apply_retrain_config(model, config, x[:batch]),
            "TFMOT": tfmot.quantization.keras.quantize_model(model),
            "image clip fixed": keras_qat.apply_retrain_config(
                model, with_image_clip_fixed(model, config), x[:batch]
            ),
        }
        for candidate in models.values():
            warm_up(candidate, x, y, batch)
        # The floor: the same fake-quant ops with their own gradient (no learned-clip term).
        bare = keras_qat.apply_retrain_config(model, config, x[:batch])
        models["bare"] = use_gradient(bare, "fake_quant")
        warm_up(models["bare"], x, y, batch)
        times = {key: [] for key in models}
        for _ in range(args.rounds):
            for key, candidate in models.items():
                times[key].append(step_time(candidate, x, y, batch))
        best = {key: min(values) for key, values in times.items()}
        calibration = calibration_ratio(model, config, x, args.calibration_batches, batch)
        rows.append((name, best, calibration))

    print(f"\nbatch {batch}, {args.samples} samples per round, best of {args.rounds} rounds")
    columns = {
        "float ms": lambda best, _: 1000 * best["float"],
        "QAT ms": lambda best, _: 1000 * best["keras_qat"],
        "TFMOT ms": lambda best, _: 1000 * best["TFMOT"],
        "QAT/float": lambda best, _: best["keras_qat"] / best["float"],
        "QAT/TFMOT": lambda best, _: best["keras_qat"] / best["TFMOT"],
        "image fixed/float": lambda best, _: best["image clip fixed"] / best["float"],
        "bare/float": lambda best, _: best["bare"] / best["float"],
        "IFMR/fwd": lambda _, calibration: calibration[0] / calibration[1],
    }
    print(f"| {'network':24} | " + " | ".join(columns) + " |")
    print(f"|{'-' * 26}|" + "|".join("-" * (len(title) + 1) + ":" for title in columns) + "|")
    for name, best, calibration in rows:
        cells = (f"{value(best, calibration):{len(title)}.{1 if 'ms' in title else 2}f}"
                 for title, value in columns.items())  # fmt: skip
        print(f"| {name:24} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
