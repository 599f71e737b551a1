"""Attention models: keras_qat vs float, TFLite PTQ int8 and TFMOT; writes docs/attention.md.

Two models from `keras_qat.example_models`, each trained once as float:
- a ViT on Fashion-MNIST (4x4 patches embedded by a strided Conv2D, 2
  pre-norm blocks of width 64 and 4 heads, average pooling, classifier);
  needs `apt-get install dataset-fashion-mnist`;
- a sequence transformer (token and position Embeddings, 2 blocks) on the
  pointer task of `keras_qat.datasets.load_pointer_sequences` (16 tokens of
  16 kinds; the label is the token the first one points at).

Every QAT row fine-tunes that float model for `--qat-epochs` epochs at 1e-4
and exports it with 512 representative training samples; TFLite results
come from LiteRT on the whole test set. W4A8 is INT4 weights everywhere,
INT8 activations. Columns: accuracy in Keras and in the .tflite; agreement,
the share of test samples whose top-1 class is the same in both; the
median |logit error| between them; the share of FULLY_CONNECTED and
BATCH_MATMUL ops that run in int8; the fastest QAT epoch over the fastest
float epoch timed right after it.

    python benchmarks/attention.py [--qat-epochs 2] [--out docs]
"""

import argparse
import json
import pathlib
import tempfile

import numpy as np
from accuracy import (
    convert,
    fit,
    float_epoch_time,
    keras_qat_export,
    keras_qat_model,
    markdown_rows,
    tflite_logits,
    tfmot_model,
)

from keras_qat._keras import keras
from keras_qat.datasets import load_fashion_mnist, load_pointer_sequences
from keras_qat.demo import accuracy
from keras_qat.example_models import sequence_transformer, vision_transformer

REPRESENTATIVE = 512
MATMULS = ("FULLY_CONNECTED", "BATCH_MATMUL")


def int8_matmul_share(flatbuffer):
    """The share of FULLY_CONNECTED and BATCH_MATMUL ops of a .tflite with int8 inputs."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=bytes(flatbuffer))
    interpreter.allocate_tensors()
    tensors = interpreter.get_tensor_details()
    kinds = [
        tensors[op["inputs"][0]]["dtype"] == np.int8
        for op in interpreter._get_ops_details()
        if op["op_name"] in MATMULS
    ]
    return float(np.mean(kinds)) if kinds else None


def measured(name, keras_logits, flatbuffer, x_test, y_test, ratio=None):
    """One row: accuracies, agreement, median |logit error|, int8 matmul share, epoch ratio."""
    file_logits = tflite_logits(flatbuffer, x_test) if flatbuffer is not None else None
    agreement = error = None
    if keras_logits is not None and file_logits is not None:
        agreement = float(np.mean(keras_logits.argmax(-1) == file_logits.argmax(-1)))
        error = float(np.median(np.abs(keras_logits - file_logits)))
    result = (
        name,
        accuracy(keras_logits, y_test) if keras_logits is not None else None,
        accuracy(file_logits, y_test) if file_logits is not None else None,
        agreement,
        error,
        int8_matmul_share(flatbuffer) if flatbuffer is not None else None,
        ratio,
    )
    print(f"  {result}", flush=True)
    return result


def qat_rows(model, data, epochs, note):
    """The float, post-training, TFMOT and keras_qat rows of one float model."""
    x_train, y_train, x_test, y_test = data
    x_rep = x_train[:REPRESENTATIVE]
    float_logits = model.predict(x_test, verbose=0)
    float_epoch = float_epoch_time(model, x_train, y_train)
    rows = [
        measured("float", float_logits, convert(model, x_rep, int8=False), x_test, y_test, 1.0),
        measured("TFLite post-training int8", float_logits, convert(model, x_rep), x_test, y_test),
    ]
    try:
        tfmot_model(model)
        note.append("TFMOT `quantize_model` returned a model (not trained here).")
    except Exception as e:  # TFMOT raises several types for layers it does not support
        message = " ".join(str(e).replace("`", "'").split())[:300]
        note.append(f"TFMOT `quantize_model` fails ({type(e).__name__}): {message}")
    with tempfile.TemporaryDirectory() as tmp:
        w4a8 = pathlib.Path(tmp, "w4a8.json")
        w4a8.write_text(json.dumps({"retrain_weight_quant_config": {"dst_type": "INT4"}}))
        for name, definition in (("keras_qat INT8", None), ("keras_qat W4A8", str(w4a8))):
            qat = keras_qat_model(model, x_train, definition)
            epoch = fit(qat, x_train, y_train, epochs, 1e-4)
            ratio = epoch / min(float_epoch, float_epoch_time(model, x_train, y_train))
            rows.append(
                measured(
                    name,
                    qat.predict(x_test, verbose=0),
                    keras_qat_export(qat, x_rep),
                    x_test,
                    y_test,
                    ratio,
                )
            )
    return rows


def table(title, command, rows, note):
    lines = [
        f"## {title}",
        "",
        command,
        "",
        "| model | Keras acc | TFLite acc | agreement | median abs logit error "
        "| int8 FC/BATCH_MATMUL | QAT epoch / float |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    lines += markdown_rows(rows, ("6.4f", "6.4f", "6.4f", "6.3f", "6.2f", "6.2f"))
    return "\n".join([*lines, "", *note]) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument("--vit-epochs", type=int, default=10)
    parser.add_argument("--sequence-epochs", type=int, default=8)
    parser.add_argument("--out", default="docs", help="directory for attention.md")
    args = parser.parse_args()
    sections = []

    cases = (
        (
            "ViT on Fashion-MNIST",
            load_fashion_mnist,
            lambda: vision_transformer((28, 28, 1), 10),
            args.vit_epochs,
            "60000 training / 10000 test images",
        ),
        (
            "Sequence transformer on the pointer task",
            load_pointer_sequences,
            lambda: sequence_transformer(16, 16, 16),
            args.sequence_epochs,
            "20000 training / 4000 test sequences",
        ),
    )
    for title, load, build, epochs, data_note in cases:
        keras.utils.set_random_seed(0)
        data = load()
        model = build()
        fit(model, data[0], data[1], epochs, 1e-3)
        note = []
        rows = qat_rows(model, data, args.qat_epochs, note)
        setup = f"{data_note}; float {epochs} epochs at 1e-3, QAT {args.qat_epochs} epochs."
        sections.append(table(title, setup, rows, note))

    out = pathlib.Path(args.out, "attention.md")
    header = (
        "# Attention models\n\n"
        "Written by `python benchmarks/attention.py` (one run; see its docstring for the "
        "setup). Targets: INT8 TFLite accuracy >= float - 0.5 pt, >= 90 % of FULLY_CONNECTED "
        "and BATCH_MATMUL ops int8, top-1 agreement >= 0.99.\n\n"
    )
    out.write_text(header + "\n".join(sections))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
