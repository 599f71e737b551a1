"""Training, inference and calibration speed of keras_qat, as ratios in one run; docs/speed.md.

Per network (the demo CNN at 28x28 with width 32, and MobileNetV2 from
tf_keras.applications with weights=None at 96x96x3, alpha 0.35): the train-step
time of the float model, of keras_qat INT8 on every quantizable layer and of
TFMOT's `quantize_model` 8-bit QAT; of keras_qat with the image's clip fixed at
[0, 1] in the first layer's config ("image fixed": its input gradient, which
float training never computes, is then not needed either); and ("bare") of
keras_qat with the fake-quant ops' own gradient instead of ULQ's learned-clip
one (the clips learn from clipped values only): what ULQ's in-range term
costs is QAT minus bare; and a copy of the float model ("float copy"), whose
ratio to the float model shows the measurement's own noise. Each model first
trains one warm-up epoch (tracing); then each round runs one train step of
every model (Keras's own train function on the same batches), in an order
that rotates from round to round, so that all see the same machine load at
the same moment: on these shared machines the load swings by tens of percent
within seconds, which longer rounds average into their ratios. Each ratio is
the median of the per-round ratios, with their interquartile range; rounds
run for about `--seconds` per network. Then calibration (`apply_retrain_config` with
`--calibration-batches` batches of calibration data, minus the same call with
every clip fixed at the calibrated values and no data) against the float
model's forward passes over the same batches. Targets:
QAT step <= 1.3 x float and <= 1.0 x TFMOT; calibration <= 3 x forward.
Then an inference step (Keras's predict function) of the float model, of
keras_qat (which computes the file's integer sums and requantizations
there, not in training) and of TFMOT, interleaved the same way for a third
of the time. Batches of 128 by default, the batch the project's reference figures were
measured with; smaller ones weigh the per-op costs more.

    python benchmarks/speed.py [--samples 2048] [--batch-size 128] [--seconds 150]
                               [--calibration-batches 8] [--out docs]
"""

import argparse
import pathlib
import time

import numpy as np
import tensorflow as tf
from image_clip import with_image_clip_fixed
from ulq_gradient import use_gradient

import keras_qat
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


def interleaved_step_times(models, x, y, batch, seconds, predict=False):
    """Per-model train-step (or inference-step) seconds, one step of every model per round.

    Args:
        models: Name -> compiled, warmed-up model.
        x: Training inputs.
        y: Labels.
        batch: Batch size.
        seconds: About how long to measure (at least 30 rounds).
        predict: Time Keras's predict function instead of its train function.

    Returns:
        Name -> list of step times, one per round.
    """
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat()
    steps = {
        key: model.make_predict_function() if predict else model.make_train_function()
        for key, model in models.items()
    }
    batches = {key: iter(dataset) for key in models}
    times = {key: [] for key in models}
    keys = list(models)
    rounds, index = 30, 0
    start = time.perf_counter()
    while index < rounds:
        shift = index % len(keys)
        for key in keys[shift:] + keys[:shift]:
            begin = time.perf_counter()
            outputs = steps[key](batches[key])
            np.asarray(outputs if predict else outputs["loss"])  # waits for the step to finish
            times[key].append(time.perf_counter() - begin)
        index += 1
        if index == rounds:
            per_round = (time.perf_counter() - start) / rounds
            rounds = max(rounds, int(seconds / per_round))
    return times


def with_clips_fixed(config, report):
    """`config` with every layer's clip bounds fixed at the values `report` gives."""
    fixed = dict(config)
    for name, entry in report.items():
        if "clip_max" not in entry:
            continue
        data = {"clip_max": entry["clip_max"]}
        if entry["fixed_min"]:
            data["fixed_min"] = True
        else:
            data["clip_min"] = entry["clip_min"]
        fixed[name] = {**config[name], "retrain_data_config": data}
    return fixed


def calibration_ratio(model, config, x, batches, batch):
    """`(calibration seconds, forward seconds)` over the same `batches` batches of `config`."""
    calibrated = {**config, "batch_num": batches}
    start = time.perf_counter()
    qat = keras_qat.apply_retrain_config(model, calibrated, x[: batches * batch])
    with_calibration = time.perf_counter() - start
    # The same call without calibration: building the QAT model only.
    fixed = with_clips_fixed(calibrated, keras_qat.quant_report(qat))
    start = time.perf_counter()
    keras_qat.apply_retrain_config(model, fixed)
    building = time.perf_counter() - start
    model.predict_on_batch(x[:batch])  # traced once, as a user's model would be
    start = time.perf_counter()
    for index in range(batches):
        model.predict_on_batch(x[index * batch : (index + 1) * batch])
    return with_calibration - building, time.perf_counter() - start


def ratio(times, key, reference):
    """`(median, 25th, 75th percentile)` of the per-round ratios `times[key] / times[reference]`."""
    ratios = np.array(times[key]) / np.array(times[reference])
    return tuple(float(np.percentile(ratios, q)) for q in (50, 25, 75))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--seconds", type=float, default=150, help="step measurement time per network"
    )
    parser.add_argument("--calibration-batches", type=int, default=8)
    parser.add_argument("--out", default="docs", help="directory for speed.md")
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
            "float copy": keras.models.clone_model(model),
            "keras_qat": keras_qat.apply_retrain_config(model, config, x[:batch]),
            "TFMOT": tfmot.quantization.keras.quantize_model(model),
            "image clip fixed": keras_qat.apply_retrain_config(
                model, with_image_clip_fixed(model, config), x[:batch]
            ),
            # The floor: the same fake-quant ops with their own gradient (no learned-clip term).
            "bare": use_gradient(
                keras_qat.apply_retrain_config(model, config, x[:batch]), "fake_quant"
            ),
        }
        for candidate in models.values():
            warm_up(candidate, x, y, batch)
        times = interleaved_step_times(models, x, y, batch, args.seconds)
        inferring = {key: models[key] for key in ("float", "keras_qat", "TFMOT")}
        predict_times = interleaved_step_times(
            inferring, x, y, batch, args.seconds / 3, predict=True
        )
        calibration = calibration_ratio(model, config, x, args.calibration_batches, batch)
        rows.append((name, times, predict_times, calibration))

    def cell(value):
        median, low, high = value
        return f"{median:.2f} ({low:.2f}-{high:.2f})"

    columns = {
        "rounds": lambda t: str(len(t["float"])),
        "float ms": lambda t: f"{1000 * np.median(t['float']):.1f}",
        "float copy/float": lambda t: cell(ratio(t, "float copy", "float")),
        "QAT/float": lambda t: cell(ratio(t, "keras_qat", "float")),
        "QAT/TFMOT": lambda t: cell(ratio(t, "keras_qat", "TFMOT")),
        "TFMOT/float": lambda t: cell(ratio(t, "TFMOT", "float")),
        "image fixed/float": lambda t: cell(ratio(t, "image clip fixed", "float")),
        "bare/float": lambda t: cell(ratio(t, "bare", "float")),
    }
    predict_columns = {
        "QAT predict/float": lambda t: cell(ratio(t, "keras_qat", "float")),
        "TFMOT predict/float": lambda t: cell(ratio(t, "TFMOT", "float")),
    }
    lines = [
        f"Train-step time ratios, batch {batch}; each round one step of every model, "
        "interleaved: median of the per-round ratios (interquartile range). "
        "Calibration: IFMR over "
        f"{args.calibration_batches} batches against the float forward passes over them "
        "(`python benchmarks/speed.py`). Targets: QAT/float <= 1.3, QAT/TFMOT <= 1.0, "
        "calibration/forward <= 3.",
        "",
        "How to read it: float copy/float is the noise of the measurement itself (two identical "
        "models). bare/float is the cost of the fake-quant ops with their own gradient; "
        "QAT/float minus bare/float is what ULQ's in-range clip term adds, and QAT/float minus "
        "image fixed/float what learning the image's clip adds (the first convolution's input "
        "gradient). QAT can be cheaper than float: the QAT model trains with its "
        "BatchNormalization layers folded, the float one computes batch statistics. "
        "QAT predict/float is an inference step (evaluation, validation in `fit`): there "
        "the QAT model computes the file's integer sums and requantizations, which training "
        "does not.",
        "",
        "| network | " + " | ".join([*columns, *predict_columns]) + " | calibration/forward |",
        "|---|" + "---:|" * (len(columns) + len(predict_columns) + 1),
    ]
    for name, times, predict_times, (calibrating, forward) in rows:
        cells = [value(times) for value in columns.values()]
        cells += [value(predict_times) for value in predict_columns.values()]
        lines.append(f"| {name} | {' | '.join(cells)} | {calibrating / forward:.2f} |")
    text = "\n".join(lines) + "\n"
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "speed.md").write_text("# Training speed\n\n" + text)
    print(text)
    print(f"written: {out / 'speed.md'}")


if __name__ == "__main__":
    main()
