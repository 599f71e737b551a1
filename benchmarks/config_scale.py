"""Time to create and to validate the retrain config of a model with many quantizable layers.

python benchmarks/config_scale.py [--layers 1000 3000]
"""

import argparse
import os
import tempfile
import time

import keras_qat
from keras_qat._keras import keras

BRANCHES = 20


def branches(layers):
    inputs = keras.Input((4,))
    ends = []
    for branch in range(BRANCHES):
        x = inputs
        for index in range(branch, layers, BRANCHES):
            x = keras.layers.Dense(4, name=f"dense_{index}")(x)
        ends.append(x)
    return keras.Model(inputs, keras.layers.Concatenate()(ends))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[1000, 5000])
    args = parser.parse_args()
    print(f"| {'layers':>6} | {'create s':>8} | {'validate s':>10} |")
    print(f"|{'-' * 7}:|{'-' * 9}:|{'-' * 11}:|")
    for count in args.layers:
        model = branches(count)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "config.json")
            start = time.perf_counter()
            keras_qat.create_quant_retrain_config(path, model)
            created = time.perf_counter() - start
            start = time.perf_counter()
            keras_qat.read_retrain_config(path, model)
            validated = time.perf_counter() - start
        print(f"| {count:6d} | {created:8.3f} | {validated:10.3f} |")


if __name__ == "__main__":
    main()
