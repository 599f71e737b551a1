"""Per layer type: the int8 .tflite agrees with the Keras QAT model within one output step.

Each case is a one-layer model, quantized as configured, exported with int8
input and output and run in LiteRT on its own calibration data (so the output
range the converter calibrates covers every value compared). The compute
op's weights must carry the QAT model's scales, not re-calibrated ones.
"""

import numpy as np
import pytest

import keras_qat
from keras_qat._keras import keras

L = keras.layers
COMPUTE_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV"}


def case(layer, shape, ops, weights=None, data=None, steps=1, id=None, slow=False):
    """One parity case; `ops`: the compute op expected -> the kernel it holds (or a name).

    `slow`: a variant of a layer type another case exports in the default run
    (each case converts a model, 2-7 s); it runs with the slow tests.
    """
    config = {}
    if weights is not None:
        config["retrain_weight_config"] = weights
    if data is not None:
        config["retrain_data_config"] = data
    ops = {ops: "kernel"} if isinstance(ops, str) else ops
    marks = pytest.mark.slow if slow else ()
    return pytest.param(layer, shape, config, ops, steps, id=id, marks=marks)


PER_TENSOR = {"channel_wise": False}
INT4 = {"dst_type": "INT4"}
# Wider than the data, as training can leave a learned clip: the converter
# requantized such a model input to its observed range (1.4 steps) unless capped.
WIDE = {"clip_min": -8.0, "clip_max": 8.0}

CASES = [
    case(L.Conv2D(6, 3, padding="same"), (7, 7, 3), "CONV_2D", id="conv2d"),
    case(
        L.Conv2D(6, 3, strides=2),
        (9, 9, 3),
        "CONV_2D",
        PER_TENSOR,
        id="conv2d-per-tensor",
        slow=True,
    ),
    case(L.Conv2D(6, 3, activation="relu"), (7, 7, 3), "CONV_2D", INT4, INT4, id="conv2d-w4a4"),
    case(L.Conv2D(6, 3), (7, 7, 3), "CONV_2D", data=WIDE, id="conv2d-wide-clip", slow=True),
    case(
        L.DepthwiseConv2D(3, depth_multiplier=2, padding="same"),
        (6, 6, 3),
        {"DEPTHWISE_CONV_2D": "depthwise_kernel"},
        id="depthwise-x2",
        slow=True,
    ),
    case(
        L.DepthwiseConv2D(3),
        (6, 6, 4),
        {"DEPTHWISE_CONV_2D": "depthwise_kernel"},
        INT4,
        INT4,
        id="depthwise-w4a4",
    ),
    case(
        L.DepthwiseConv2D(3),
        (6, 6, 4),
        {"DEPTHWISE_CONV_2D": "depthwise_kernel"},
        data=WIDE,
        id="depthwise-wide-clip",
        slow=True,
    ),
    case(
        L.SeparableConv2D(5, 3),
        (6, 6, 3),
        {"DEPTHWISE_CONV_2D": "depthwise_kernel", "CONV_2D": "pointwise_kernel"},
        id="separable",
    ),
    case(L.Conv1D(5, 3), (10, 4), "CONV_2D", id="conv1d", slow=True),
    case(
        L.Conv1D(5, 3, strides=2, padding="same"),
        (11, 4),
        "CONV_2D",
        id="conv1d-strided",
        slow=True,
    ),
    case(L.Conv1D(5, 2, padding="causal", dilation_rate=2), (10, 4), "CONV_2D", id="conv1d-causal"),
    case(L.Conv1D(5, 3), (10, 4), "CONV_2D", PER_TENSOR, id="conv1d-per-tensor", slow=True),
    case(L.Conv2DTranspose(4, 3, padding="same"), (5, 5, 3), "CONV_2D", id="transpose", slow=True),
    case(L.Conv2DTranspose(4, 3, 2, padding="same"), (5, 5, 3), "CONV_2D", id="transpose-s2"),
    case(L.Conv2DTranspose(4, 2, 3), (4, 5, 3), "CONV_2D", id="transpose-k2s3-valid", slow=True),
    case(
        L.Conv2DTranspose(4, 4, 2, padding="same"),
        (4, 4, 3),
        "CONV_2D",
        INT4,
        id="transpose-w4",
        slow=True,
    ),
    case(
        L.Conv2DTranspose(4, 3, 2, padding="same"),
        (5, 5, 3),
        "TRANSPOSE_CONV",
        PER_TENSOR,
        id="transpose-per-tensor",
    ),
    case(L.Dense(7), (12,), "FULLY_CONNECTED", id="dense", slow=True),
    case(
        L.Dense(7, activation="relu"),
        (12,),
        "CONV_2D",
        {"channel_wise": True},
        id="dense-pc",
        slow=True,
    ),
    case(L.Dense(7), (3, 12), "CONV_2D", {"channel_wise": True}, id="dense-3d-pc"),
    case(L.Dense(7), (12,), "FULLY_CONNECTED", INT4, INT4, id="dense-w4a4"),
    case(L.AveragePooling2D(), (6, 6, 3), {}, id="avgpool", slow=True),
    case(L.AveragePooling2D(), (6, 6, 3), {}, data=INT4, id="avgpool-a4"),
]


def interpreter_for(path):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    return interpreter


def only_op(interpreter, name):
    ops = [op for op in interpreter._get_ops_details() if op["op_name"] == name]
    assert len(ops) == 1, [op["op_name"] for op in interpreter._get_ops_details()]
    return ops[0]


@pytest.mark.parametrize(("layer", "shape", "config", "ops", "steps"), CASES)
def test_tflite_matches_keras_within_one_step(layer, shape, config, ops, steps, tmp_path):
    keras.utils.set_random_seed(1)
    inputs = keras.Input(shape, name="x")
    model = keras.Model(inputs, layer(inputs))
    rng = np.random.default_rng(2)
    for bias in (weight for weight in layer.weights if "bias" in weight.name):
        # Nonzero, as trained: the converter drops a zero BiasAdd, fusable or not.
        bias.assign(rng.normal(0.0, 0.2, bias.shape))
    data = rng.normal(size=(64, *shape)).astype(np.float32)
    qat = keras_qat.apply_retrain_config(model, {layer.name: config}, data)
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", data, int8_io=True)

    interpreter = interpreter_for(path)
    details = interpreter._get_ops_details()
    names = [detail["op_name"] for detail in details]
    assert set(names) & COMPUTE_OPS == set(ops), names
    assert "DEQUANTIZE" not in names, names  # int8 end to end: no float round trip inside
    assert "ADD" not in names, names  # the op takes the bias in: one rounding, not two
    tensors = interpreter.get_tensor_details()
    for compute in details:
        if compute["op_name"] in COMPUTE_OPS:
            data_and_weights = (2, 1) if compute["op_name"] == "TRANSPOSE_CONV" else (0, 1)
            assert {tensors[compute["inputs"][i]]["dtype"] for i in data_and_weights} == {np.int8}
    record = keras_qat.quant_record(qat)[layer.name]
    for op, kernel in ops.items():
        weight_index = only_op(interpreter, op)["inputs"][1]
        scales = tensors[weight_index]["quantization_parameters"]["scales"]
        # INT4 kernels are stored as int8 values 16 k on the scale s / 16.
        want = np.asarray(record["scale_w"][kernel]) / (16 if record["weight_bits"] == 4 else 1)
        np.testing.assert_allclose(np.broadcast_to(want, scales.shape), scales, rtol=1e-5)

    got = keras_qat.predict_tflite(path, data)
    step = interpreter.get_output_details()[0]["quantization"][0]
    want = qat.predict(data, verbose=0)
    assert np.max(np.abs(got - want)) <= steps * step * 1.001, (np.max(np.abs(got - want)), step)
