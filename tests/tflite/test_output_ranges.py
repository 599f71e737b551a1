"""Tensors the converter would leave float or give two scales get one int8 range."""

import numpy as np
import pytest
import tensorflow as tf

import keras_qat
from keras_qat._keras import keras
from keras_qat.quantizers.introspection import clip_range
from keras_qat.tflite.output_ranges import (
    export_ranges,
    fanned_out_ranges,
    joining_concatenations,
    shared_quantized_inputs,
)

L = keras.layers
COMPUTE_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}


def residual_model(project_is_an_output=False):
    """MobileNetV2's pattern: a linear projection feeding the next conv and an Add."""
    inputs = keras.Input((8, 8, 4))
    project = L.Conv2D(4, 1, name="project")(inputs)
    expand = L.ReLU(name="relu")(L.Conv2D(8, 1, name="expand")(project))
    back = L.Conv2D(4, 1, name="project2")(expand)
    added = L.Add(name="add")([project, back])
    head = L.Dense(3, name="head")(L.GlobalAveragePooling2D()(added))
    return keras.Model(inputs, [head, project] if project_is_an_output else head)


def exported_error(qat, tmp_path, data, compute_ops):
    """Exports `qat`, checks its `compute_ops` conv/dense ops are int8, returns its max error."""
    from ai_edge_litert.interpreter import Interpreter

    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", data)
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    tensors = interpreter.get_tensor_details()
    compute = [op for op in interpreter._get_ops_details() if op["op_name"] in COMPUTE_OPS]
    assert len(compute) == compute_ops
    for op in compute:
        assert {tensors[i]["dtype"] for i in op["inputs"][:2]} == {np.int8}, op
    return keras_qat.check_tflite(qat, path, data)["max_abs_error"]


@pytest.mark.parametrize("project_is_an_output", [False, True])
def test_shared_tensor_producer_is_int8(tmp_path, project_is_an_output):
    keras.utils.set_random_seed(0)
    model = residual_model(project_is_an_output)
    data = np.random.default_rng(0).normal(size=(64, 8, 8, 4)).astype(np.float32)
    config = {name: {} for name in ("project", "expand", "project2", "head")}
    qat = keras_qat.apply_retrain_config(model, config, data)
    # The Add reads expand's quantizer output, also where the model returns
    # the tensor: the file holds it once, on that quantizer's grid.
    assert shared_quantized_inputs(qat) == []

    assert exported_error(qat, tmp_path, data, 4) < 0.05


def inception_cell():
    """Inception's pattern: a Concatenate feeding branch convs and an average pooling."""
    inputs = keras.Input((8, 8, 3))
    stem = L.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    reduced = L.Conv2D(4, 3, 2, padding="same", activation="relu", name="reduce")(stem)
    mixed = L.Concatenate(name="mixed")([reduced, L.MaxPooling2D(3, 2, padding="same")(stem)])
    pooled = L.AveragePooling2D(3, 1, padding="same", name="pool")(mixed)
    branches = [
        L.Conv2D(4, 1, activation="relu", name="pool_conv")(pooled),
        L.Conv2D(4, 1, activation="relu", name="branch")(mixed),
    ]
    outputs = L.Dense(3, name="head")(L.GlobalAveragePooling2D()(L.Concatenate()(branches)))
    return keras.Model(inputs, outputs)


def test_fanned_out_tensor_gets_one_range_and_its_pooling_converts(tmp_path):
    keras.utils.set_random_seed(0)
    model = inception_cell()
    data = np.random.default_rng(0).normal(size=(64, 8, 8, 3)).astype(np.float32)
    # Different fixed ranges on the two quantizers of `mixed`: the converter
    # used to refuse the model (AVERAGE_POOL_2D same-scale constraint). The
    # file holds `mixed` on its first reader's grid and requantizes it for
    # the pooling, whose quantizer rounds the first's output again.
    clips = {"stem": 1.0, "reduce": 3.0, "pool": 2.0, "pool_conv": 2.5, "branch": 1.5, "head": 4.0}
    config = {
        name: {"retrain_data_config": {"clip_max": clip, "clip_min": -clip / 2}}
        for name, clip in clips.items()
    }
    qat = keras_qat.apply_retrain_config(model, config, data)
    assert fanned_out_ranges(qat) == {}
    assert qat.get_layer("pool_input_quant").input is qat.get_layer("branch_input_quant").output

    assert exported_error(qat, tmp_path, data, 5) < 1e-4


@pytest.mark.parametrize("kind", ["ReLU", "Lambda"])
def test_identical_layers_on_one_tensor_are_one_tensor(kind):
    # The converter merges NASNet's five identical ReLUs of its stem into one
    # tensor. ReLU layers are made one at the door (`graph.repeated_layers`),
    # so the conv's quantizer rounds the tensor for the padding too; equal
    # Lambdas are not, and one of them feeding a non-quantizer makes all of
    # them shared at export.
    def relu(name):
        return L.ReLU(name=name) if kind == "ReLU" else L.Lambda(tf.nn.relu, name=name)

    inputs = keras.Input((8, 8, 3))
    stem = L.Conv2D(4, 3, name="stem")(inputs)
    quantized = L.Conv2D(4, 1, name="conv")(relu("relu_a")(stem))
    padded = L.ZeroPadding2D(name="pad")(relu("relu_b")(stem))
    outputs = L.Add()([L.GlobalAveragePooling2D()(quantized), L.GlobalAveragePooling2D()(padded)])
    model = keras.Model(inputs, outputs)
    data = np.random.default_rng(0).normal(size=(8, 8, 8, 3)).astype(np.float32)
    qat = keras_qat.apply_retrain_config(model, {"stem": {}, "conv": {}}, data)
    if kind == "ReLU":
        assert shared_quantized_inputs(qat) == []
        assert qat.get_layer("pad").input is qat.get_layer("conv_input_quant").output
    else:
        assert sorted(shared_quantized_inputs(qat)) == ["relu_a", "relu_b"]


def nasnet_cell():
    """NASNet's normal cell: a shared tensor concatenated with sums reaching 2-3x its range."""
    inputs = keras.Input((8, 8, 3))
    shared = L.Conv2D(8, 3, padding="same", name="shared")(inputs)
    pooled = L.AveragePooling2D(3, 1, padding="same", name="pool")(shared)
    added = L.Add(name="add")([L.Conv2D(8, 1, name="conv")(pooled), shared, shared])
    joined = L.Concatenate(name="cell")([shared, added])
    joined = L.Concatenate(name="outer")([joined, L.Add(name="twice")([added, added])])
    outputs = L.Dense(4, name="head")(L.GlobalAveragePooling2D()(L.ReLU()(joined)))
    return keras.Model(inputs, outputs)


def test_concatenation_joining_a_ranged_tensor_gets_its_own_range(tmp_path):
    keras.utils.set_random_seed(0)
    data = np.random.default_rng(0).normal(size=(64, 8, 8, 3)).astype(np.float32)
    qat = keras_qat.apply_retrain_config(
        nasnet_cell(), {name: {} for name in ("shared", "pool", "conv", "head")}, data
    )
    # "shared" is held on the pooling's input grid, which joins "cell";
    # "outer", read by a ReLU the converter does not fuse into it, is
    # rounded on a range of its own in the QAT model (`graph.output_plan`).
    assert shared_quantized_inputs(qat) == []
    assert joining_concatenations(qat, set()) == ["cell"]
    ranges = export_ranges(qat, [[data]])
    # The sums reach beyond the shared tensor's range, which used to cap them all.
    shared_max = clip_range(qat.get_layer("pool_input_quant"))[1]
    assert ranges["cell"][1] > 1.5 * shared_max

    assert exported_error(qat, tmp_path, data, 3) < 0.05  # 0.39 with the sums capped


def test_an_average_pooling_read_by_a_layer_and_a_concatenation_converts(tmp_path):
    # DenseNet's transition when its pooling's output is read by a quantized
    # layer: that output is int8 on the pooling's input grid already, not a
    # tensor the converter leaves float. Ranged as one, the converter refused
    # the model (AVERAGE_POOL_2D same-scale constraint). The file requantizes
    # it onto the concatenation's grid, and the layer reads that.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv0")(inputs)
    x = L.AveragePooling2D(2, name="pool")(x)
    grown = L.Conv2D(4, 3, padding="same", name="grow")(x)
    joined = L.ReLU()(L.Concatenate(name="cat")([x, grown]))
    outputs = L.Dense(3, name="head")(L.GlobalAveragePooling2D()(L.Conv2D(4, 1, name="c")(joined)))
    data = np.random.default_rng(0).random((32, 8, 8, 3)).astype(np.float32)
    config = {name: {} for name in ("conv0", "pool", "grow", "c", "head")}
    qat = keras_qat.apply_retrain_config(keras.Model(inputs, outputs), config, data)
    assert shared_quantized_inputs(qat) == []
    assert qat.get_layer("grow_input_quant").followed is qat.get_layer("cat_output_quant")
    assert keras_qat.quant_report(qat)["grow"]["input_grid_of"] == "cat_output_quant"
    assert exported_error(qat, tmp_path, data, 4) < 1e-6


def test_a_concatenation_joining_an_int4_carrier_takes_its_readers_scale(tmp_path):
    # DenseNet's growth at W4A4: "cat1" joins the block input, held on
    # "grow1"'s INT4 grid (its int8 carrier), and "grow2" reads "cat1" on a
    # narrower grid. The converter gives a concatenation the widest range
    # among its inputs: with the carrier left as it was, "cat1" took
    # grow1's scale, the convolution wrote onto it and the file requantized
    # the result for grow2, two roundings where the QAT model has one.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv0")(inputs)
    grown = L.Conv2D(4, 3, padding="same", activation="relu", name="grow1")(x)
    x = L.Concatenate(name="cat1")([x, grown])
    grown = L.Conv2D(4, 3, padding="same", activation="relu", name="grow2")(x)
    x = L.Concatenate(name="cat2")([x, grown])
    outputs = L.Dense(3, name="head")(L.GlobalAveragePooling2D()(L.Conv2D(4, 1, name="c")(x)))
    data = np.random.default_rng(0).random((64, 8, 8, 3)).astype(np.float32)
    int4 = {
        "retrain_data_config": {"dst_type": "INT4"},
        "retrain_weight_config": {"dst_type": "INT4"},
    }
    config = {"conv0": {}, "grow1": int4, "grow2": int4, "c": int4, "head": {}}
    qat = keras_qat.apply_retrain_config(keras.Model(inputs, outputs), config, data)
    high = clip_range(qat.get_layer("grow1_input_quant"))[1]
    grow2 = qat.get_layer("grow2_input_quant")
    grow2.quantizer.assign_clip_range(grow2.quantizer_vars, 0.0, 0.8 * high)
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", data)
    report = keras_qat.check_tflite(qat, path, data, measure="steps")
    assert report["outputs"]["head"]["max_error_steps"] < 0.01, report
