"""INT4 weights in the .tflite: keras_qat's int8 carrier against packed 4-bit; docs/int4_storage.md.

The Fashion-MNIST CNN of `accuracy.py` is trained as float, then QAT
fine-tuned with AMCT's INT4 recipe (`configs/int4_definition.json`: W4A4 but
the first and last layers) and, for reference, all INT8. keras_qat exports
INT4 kernels as int8 values `16 k` on the scale `s / 16` (the carrier). The
packed variant rewrites that file the way the converter stores INT4 (tensor
type INT4, two values to a byte, scale `s`), with each bias requantized to
the op's coarser step `input scale * s`, which the runtime requires. Each
file is run in LiteRT with XNNPACK (the default) and with the built-in
kernels only; the columns are the file size, the top-1 agreement with the
QAT model and the share of logits equal to it (to 1e-4) on the test set, the
test accuracy, and the median latency of one image over `--runs` invokes.
Needs `apt-get install dataset-fashion-mnist`.

    python benchmarks/int4_storage.py [--train-samples 20000] [--runs 300] [--out docs]
"""

import argparse
import pathlib
import time

import numpy as np
from accuracy import (
    INT4_DEFINITION,
    build_cnn,
    fit,
    keras_qat_export,
    keras_qat_model,
    markdown_rows,
)
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from keras_qat._keras import keras
from keras_qat.datasets import load_fashion_mnist
from keras_qat.demo import accuracy

_OPS = schema.BuiltinOperator
_WEIGHTED = (_OPS.CONV_2D, _OPS.DEPTHWISE_CONV_2D, _OPS.FULLY_CONNECTED)
SPREAD = 16  # keras_qat's int8 carrier: 16 k on s / 16
RESOLVERS = (("AUTO", "XNNPACK"), ("BUILTIN_WITHOUT_DEFAULT_DELEGATES", "built-in"))


def packed(flatbuffer):
    """The file with every INT4 carrier kernel packed to 4 bits; also the ops packed."""
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    names = []
    for subgraph in model.subgraphs:
        for op in subgraph.operators:
            entry = model.operatorCodes[op.opcodeIndex]
            if max(entry.builtinCode, entry.deprecatedBuiltinCode) not in _WEIGHTED:
                continue
            weights = subgraph.tensors[op.inputs[1]]
            buffer = model.buffers[weights.buffer]
            if weights.type != schema.TensorType.INT8 or buffer.data is None:
                continue
            values = np.frombuffer(bytes(buffer.data), np.int8).astype(np.int32)
            if np.any(values % SPREAD) or np.abs(values // SPREAD).max() > 7:
                continue  # an INT8 kernel
            k = (values // SPREAD).astype(np.int8)
            k = np.append(k, np.int8(0)) if k.size % 2 else k
            buffer.data = ((k[0::2] & 0x0F) | (k[1::2] << 4)).astype(np.int8).view(np.uint8)
            weights.type = schema.TensorType.INT4
            weights.quantization.scale = [s * SPREAD for s in weights.quantization.scale]
            if len(op.inputs) > 2 and op.inputs[2] >= 0:
                bias = subgraph.tensors[op.inputs[2]]
                data = model.buffers[bias.buffer]
                steps = np.frombuffer(bytes(data.data), np.int32) / SPREAD
                data.data = np.round(steps).astype(np.int32).view(np.uint8)
                bias.quantization.scale = [s * SPREAD for s in bias.quantization.scale]
            names.append(subgraph.tensors[op.outputs[0]].name.decode().split(";")[0])
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), names


def run(flatbuffer, x, resolver, runs):
    """`(logits of x, median seconds of one-image invokes)` in LiteRT."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    def interpreter(batch):
        it = Interpreter(
            model_content=flatbuffer,
            experimental_op_resolver_type=getattr(OpResolverType, resolver),
        )
        inputs = it.get_input_details()[0]
        it.resize_tensor_input(inputs["index"], (batch, *x.shape[1:]))
        it.allocate_tensors()
        return it, inputs["index"], it.get_output_details()[0]["index"]

    it, source, target = interpreter(len(x))
    it.set_tensor(source, x)
    it.invoke()
    logits = it.get_tensor(target)
    it, source, target = interpreter(1)
    times = []
    for i in range(runs):
        it.set_tensor(source, x[i % len(x)][None])
        start = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - start)
    return logits, float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-samples", type=int, default=20000)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--out", default="docs", help="directory for int4_storage.md")
    args = parser.parse_args()
    x_train, y_train, x_test, y_test = load_fashion_mnist()
    x_train, y_train = x_train[: args.train_samples], y_train[: args.train_samples]
    keras.utils.set_random_seed(0)
    model = build_cnn()
    fit(model, x_train, y_train, 4, 2e-3)
    rows, packed_ops = [], []
    for recipe, definition in (("INT8", None), ("W4A4", str(INT4_DEFINITION))):
        qat = keras_qat_model(model, x_train, definition)
        fit(qat, x_train, y_train, 1, 2e-4)
        want = qat.predict(x_test, verbose=0)
        files = [("int8 carrier", keras_qat_export(qat, x_train[:512]))]
        if recipe == "W4A4":
            flatbuffer, packed_ops = packed(files[0][1])
            files.append(("packed 4-bit", flatbuffer))
        for storage, flatbuffer in files:
            for resolver, label in RESOLVERS:
                got, seconds = run(flatbuffer, x_test, resolver, args.runs)
                rows.append((
                    f"{recipe}, {storage if recipe == 'W4A4' else 'int8'}, {label}",
                    len(flatbuffer) / 1024,
                    float(np.mean(got.argmax(1) == want.argmax(1))),
                    float(np.mean(np.abs(got - want) < 1e-4)),
                    accuracy(got, y_test),
                    seconds * 1e6,
                ))  # fmt: skip
                print(f"  {rows[-1]}", flush=True)
    lines = [
        "# INT4 weight storage",
        "",
        f"Written by `python benchmarks/int4_storage.py` (one run; {args.train_samples} training "
        f"images, {len(x_test)} test images; latency: median of {args.runs} one-image invokes).",
        "",
        "| file, kernels | KiB | agreement | logits equal | TFLite acc | latency us |",
        "|---|---:|---:|---:|---:|---:|",
        *markdown_rows(rows, ("7.1f", "6.4f", "6.4f", "6.4f", "7.1f")),
        "",
        f"Ops packed to 4 bits in the packed file: {', '.join(packed_ops) or 'none'}.",
    ]
    out = pathlib.Path(args.out, "int4_storage.md")
    out.write_text("\n".join(lines) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
