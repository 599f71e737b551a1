"""A tensor feeding an input quantizer and another layer still gets an int8 producer."""

import numpy as np

import keras_qat
from keras_qat._keras import keras
from keras_qat.tflite.output_ranges import shared_quantized_inputs

L = keras.layers
COMPUTE_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def residual_model():
    """MobileNetV2's pattern: a linear projection feeding the next conv and an Add."""
    inputs = keras.Input((8, 8, 4))
    project = L.Conv2D(4, 1, name="project")(inputs)
    expand = L.ReLU(name="relu")(L.Conv2D(8, 1, name="expand")(project))
    back = L.Conv2D(4, 1, name="project2")(expand)
    added = L.Add(name="add")([project, back])
    return keras.Model(inputs, L.Dense(3, name="head")(L.GlobalAveragePooling2D()(added)))


def test_shared_tensor_producer_is_int8(tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    keras.utils.set_random_seed(0)
    model = residual_model()
    data = np.random.default_rng(0).normal(size=(64, 8, 8, 4)).astype(np.float32)
    config = {name: {} for name in ("project", "expand", "project2", "head")}
    qat = keras_qat.apply_retrain_config(model, config, data)
    assert shared_quantized_inputs(qat) == ["project_quant"]

    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", data)
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    tensors = interpreter.get_tensor_details()
    compute = [op for op in interpreter._get_ops_details() if op["op_name"] in COMPUTE_OPS]
    assert len(compute) == 4
    for op in compute:
        assert {tensors[i]["dtype"] for i in op["inputs"][:2]} == {np.int8}, op
    report = keras_qat.check_tflite(qat, path, data)
    assert report["max_abs_error"] < 0.05, report
