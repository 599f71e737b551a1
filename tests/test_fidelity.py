"""The QAT model predicts its .tflite: the same int8 logits, bit for bit."""

import numpy as np
import pytest
import tensorflow as tf

import keras_qat
from keras_qat._keras import keras
from keras_qat.graph.model_check import checked_model
from keras_qat.layer_table import layer_spec
from keras_qat.quantizers import InputQuantizeLayer

L = keras.layers


def build_plain():
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = L.ReLU(name="relu1")(L.BatchNormalization(name="bn1")(x))
    x = L.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = L.ReLU(name="relu2")(x)
    x = L.Conv2D(16, 1, activation="relu", name="pw")(x)
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="conv3")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dense(16, activation="relu", name="fc")(x)
    return keras.Model(inputs, L.Dense(10, name="logits")(x))


def inverted_residual(x, name):
    """MobileNetV2's block: its input is read by the expand convolution and by the Add."""
    y = L.Conv2D(24, 1, use_bias=False, name=f"{name}_expand")(x)
    y = L.ReLU(6.0, name=f"{name}_expand_relu")(L.BatchNormalization(name=f"{name}_expand_bn")(y))
    y = L.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw")(y)
    y = L.ReLU(6.0, name=f"{name}_dw_relu")(L.BatchNormalization(name=f"{name}_dw_bn")(y))
    y = L.Conv2D(x.shape[-1], 1, use_bias=False, name=f"{name}_project")(y)
    return L.Add(name=f"{name}_add")([x, L.BatchNormalization(name=f"{name}_project_bn")(y)])


def build_residual():
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = L.ReLU(6.0, name="relu1")(L.BatchNormalization(name="bn1")(x))
    for name in ("b1", "b2", "b3"):
        x = inverted_residual(x, name)
    x = L.Conv2D(16, 1, activation="relu", name="last")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(10, name="logits")(x))


def build_squeeze_excite():
    """EfficientNet's pattern: swish, and a sigmoid gate (LOGISTIC then MUL in the file).

    As in `keras.applications.EfficientNetB0`, the squeeze is a global
    pooling reshaped for the convolution after it (MEAN then RESHAPE).
    """
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(16, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = L.Activation("swish", name="swish1")(L.BatchNormalization(name="bn1")(x))
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = L.Activation("swish", name="swish2")(L.BatchNormalization(name="bn2")(x))
    gate = L.GlobalAveragePooling2D(name="squeeze")(x)
    gate = L.Reshape((1, 1, 16), name="squeeze_reshape")(gate)
    gate = L.Conv2D(4, 1, activation="swish", name="reduce")(gate)
    gate = L.Conv2D(16, 1, activation="sigmoid", name="expand")(gate)
    x = L.Multiply(name="excite")([x, gate])
    x = L.Conv2D(16, 1, name="project")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(10, name="logits")(x))


def build_inception_cell():
    """Inception's pattern: branches reading one tensor, one through an average pooling.

    In the W4A4 recipe the pooling stays INT8 beside INT4 convolutions: the
    file holds the tensor on the pooling's grid and requantizes it for them,
    and requantizes the pooling's output for the convolution after it.
    """
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = L.ReLU(name="relu1")(L.BatchNormalization(name="bn1")(x))
    a = L.Conv2D(8, 1, activation="relu", name="branch1x1")(x)
    b = L.Conv2D(8, 3, padding="same", activation="relu", name="branch3x3")(x)
    c = L.AveragePooling2D(3, strides=1, padding="same", name="branch_pool")(x)
    c = L.Conv2D(4, 1, activation="relu", name="branch_pool_conv")(c)
    x = L.Concatenate(name="mixed")([a, b, c])
    x = L.Conv2D(16, 3, activation="relu", name="conv3")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(10, name="logits")(x))


def build_inception_tail():
    """Inception's last block: its concatenation read by the global pooling alone.

    The file writes the branches (one a concatenation itself, one a max
    pooling of a tensor on an input quantizer's grid) on the
    concatenation's one scale.
    """
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = L.ReLU(name="relu1")(L.BatchNormalization(name="bn1")(x))
    a = L.Conv2D(8, 1, activation="relu", name="branch1x1")(x)
    b1 = L.Conv2D(6, (1, 3), padding="same", activation="relu", name="branch1x3")(x)
    b2 = L.Conv2D(6, (3, 1), padding="same", activation="relu", name="branch3x1")(x)
    b = L.Concatenate(name="branch3x3")([b1, b2])
    c = L.AveragePooling2D(3, strides=1, padding="same", name="branch_pool")(x)
    c = L.Conv2D(4, 1, activation="relu", name="branch_pool_conv")(c)
    d = L.MaxPooling2D(3, strides=1, padding="same", name="branch_max")(x)
    x = L.Concatenate(name="mixed")([a, b, c, d])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(10, name="logits")(x))


def dense_growth(x, name):
    """DenseNet's layer: BatchNormalization, ReLU, convolution, joined to its input."""
    new = L.ReLU(name=f"{name}_relu")(L.BatchNormalization(name=f"{name}_bn")(x))
    new = L.Conv2D(8, 3, padding="same", activation="relu", name=name)(new)
    return L.Concatenate(name=f"{name}_cat")([x, new])


def build_dense_block():
    """DenseNet's pattern: each layer's output is concatenated to its input.

    The concatenation is read by a BatchNormalization that folds into
    nothing (before a ReLU and a convolution), which keras_qat spells out as
    a 1x1 depthwise convolution; the concatenation's input, read by it too,
    is held on its input grid and requantized to the next concatenation's.
    After the transition, the first one reads the pooling's output, which
    the file requantizes onto the next concatenation's grid.
    """
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = dense_growth(dense_growth(x, "grow1"), "grow2")
    x = L.ReLU(name="transition_relu")(L.BatchNormalization(name="transition_bn")(x))
    x = L.Conv2D(12, 1, use_bias=False, name="transition")(x)
    x = L.AveragePooling2D(name="transition_pool")(x)
    x = dense_growth(x, "grow3")
    x = L.ReLU(name="last_relu")(L.BatchNormalization(name="last_bn")(x))
    x = L.Conv2D(16, 3, activation="relu", name="conv3")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(10, name="logits")(x))


def build_nasnet_cell():
    """NASNet's pattern: each branch applies its own ReLU to the cell's input.

    The converter merges the equal ReLUs into one op, so the file holds one
    tensor where the model has three, each read by a quantized layer. A
    separable convolution is two ops in the file, with an int8 tensor
    between them.
    """
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(inputs)
    x = L.BatchNormalization(name="bn1")(x)
    a = L.Activation("relu", name="left_relu")(x)
    a = L.SeparableConv2D(8, 3, padding="same", name="left")(a)
    b = L.ZeroPadding2D(name="right_pad")(L.Activation("relu", name="right_relu")(x))
    b = L.Conv2D(8, 3, name="right")(b)
    c = L.Activation("relu", name="pool_relu")(x)
    c = L.AveragePooling2D(3, strides=1, padding="same", name="pool")(c)
    x = L.Concatenate(name="cell")([L.Add(name="add")([a, b]), c])
    x = L.Conv2D(16, 3, activation="relu", name="conv3")(L.ReLU(name="cell_relu")(x))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(10, name="logits")(x))


def build_merges():
    """Merges the file computes as several int8 ops, or on one scale for all inputs.

    An Average (an ADD, then a MUL by 1/2), an Add of three tensors (two
    ADDs), a Maximum read by convolutions (MAXIMUM writes its inputs on its
    output's scale) and a Minimum of three read by the global pooling
    alone (on a range of its own).
    """
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    a = L.Conv2D(8, 1, name="a")(x)
    b = L.Conv2D(8, 3, padding="same", name="b")(x)
    c = L.Conv2D(8, 1, activation="relu", name="c")(x)
    x = L.Add(name="add3")([L.Average(name="average")([a, b]), b, c])
    x = L.Maximum(name="max")([L.Conv2D(8, 1, name="d")(x), L.Conv2D(8, 1, name="e")(x)])
    x = L.Minimum(name="min")([L.Conv2D(8, 1, name=name)(x) for name in ("f", "g", "h")])
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(10, name="logits")(x))


TOPOLOGIES = {
    "plain": build_plain,
    "residual": build_residual,
    "squeeze_excite": build_squeeze_excite,
    "inception_cell": build_inception_cell,
    "inception_tail": build_inception_tail,
    "dense_block": build_dense_block,
    "nasnet_cell": build_nasnet_cell,
    "merges": build_merges,
}
# The cases the default run exports: a chain, a skip connection at INT4 and a
# gate. The others run with the slow tests (each case trains and converts a
# model: 15-40 s on two cores); so do the concatenating topologies, whose
# requantizations tests/tflite/test_output_ranges.py exports by default.
DEFAULT_RECIPES = {
    "plain": ("INT8",),
    "residual": ("W4A4",),
    "squeeze_excite": ("INT8",),
    "merges": ("W4A4",),
}
MATRIX = [
    pytest.param(
        name,
        recipe,
        id=f"{name}-{recipe}",
        marks=() if recipe in DEFAULT_RECIPES.get(name, ()) else pytest.mark.slow,
    )
    for name in TOPOLOGIES
    for recipe in ("INT8", "W4A4")
]


@pytest.fixture(scope="module")
def float_model(request, digits):
    keras.utils.set_random_seed(0)
    model = TOPOLOGIES[request.param]()
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(digits[0], digits[1], epochs=8, batch_size=64, verbose=0)
    return model


def file_output_step(path):
    """The scale of the int8 tensor the file dequantizes into its output."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (dequantize,) = [op for op in interpreter._get_ops_details() if op["op_name"] == "DEQUANTIZE"]
    tensors = interpreter.get_tensor_details()
    return tensors[dequantize["inputs"][0]]["quantization"][0]


def quantizable(model):
    """The layers keras_qat quantizes (standalone BatchNormalizations as convolutions)."""
    return [layer for layer in checked_model(model).layers if layer_spec(layer) is not None]


# A layer's config entry for INT4 data and weights.
INT4 = {"retrain_data_config": {"dst_type": "INT4"}, "retrain_weight_config": {"dst_type": "INT4"}}


def int4_except_ends(model):
    """W4A4 on layers with weights but the first and last (AMCT's INT4 recipe); poolings INT8."""
    return {
        layer.name: {} if layer.name in ("conv1", "logits") or not layer.weights else INT4
        for layer in quantizable(model)
    }


def assert_logits_exact(model, recipe, digits, tmp_path):
    """Quantizes `model` ("INT8", or "W4A4": `int4_except_ends`), exports it, checks its logits.

    The file's logits must be the QAT model's on the test digits, to float32 error.
    """
    config = {layer.name: {} for layer in quantizable(model)}
    if recipe == "W4A4":
        config = int4_except_ends(model)
    qat = keras_qat.apply_retrain_config(model, config, digits[0][:256])
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", digits[0][:256])
    report = keras_qat.check_tflite(qat, path, digits[2], measure="steps")
    assert report["outputs"]["logits"]["max_error_steps"] < 0.01, report


def assert_trained_logits_exact(model, digits, tmp_path, recipe="INT8"):
    """Trains `model` on the digits for 3 epochs, then checks its file's logits."""
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(digits[0], digits[1], epochs=3, batch_size=64, verbose=0)
    assert_logits_exact(model, recipe, digits, tmp_path)


def assert_rows_logits_exact(model, digits, tmp_path, recipe="INT8"):
    """Trains `model`, on the digits' rows as 8 tokens, and checks its file's logits."""
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(digits[0].reshape(-1, 8, 8), digits[1], epochs=3, batch_size=64, verbose=0)
    rows = tuple(part.reshape(-1, 8, 8) if part.ndim > 1 else part for part in digits)
    assert_logits_exact(model, recipe, rows, tmp_path)


@pytest.mark.parametrize(("float_model", "recipe"), MATRIX, indirect=["float_model"])
def test_tflite_computes_what_the_qat_model_computes(float_model, digits, tmp_path, recipe):
    x_train, y_train, x_test = digits[0], digits[1], digits[2]
    if recipe == "INT8":
        config = {layer.name: {} for layer in quantizable(float_model)}
    else:
        config = int4_except_ends(float_model)
    qat = keras_qat.apply_retrain_config(float_model, config, x_train[:256])
    qat.compile(keras.optimizers.Adam(2e-4), keras.losses.SparseCategoricalCrossentropy(True))
    qat.fit(x_train, y_train, epochs=1, batch_size=64, verbose=0)
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", x_train[:256])
    want = qat.predict(x_test, verbose=0)
    got = keras_qat.predict_tflite(path, x_test)
    step = file_output_step(path)
    # The logits are int8 in both: the same level on every test image, up
    # to the float rounding of dequantizing.
    steps = np.abs(got - want) / step
    assert steps.max() < 0.01


@pytest.mark.parametrize(
    ("activation", "recipe"),
    [
        # The default run exports a softmax head in the dropout test below.
        pytest.param("softmax", "INT8", id="softmax", marks=pytest.mark.slow),
        pytest.param("sigmoid", "W4A4", id="sigmoid", marks=pytest.mark.slow),
    ],
)
def test_a_classifier_head_with_its_activation_exports_as_trained(
    digits, tmp_path, activation, recipe
):
    """A Dense model output with a softmax or sigmoid: logits rounded, then the op's grid.

    The file writes the logits as an int8 tensor and runs SOFTMAX or
    LOGISTIC on the fixed grid 1/256; the QAT model keeps the layer's name
    on its output.
    """
    x_train, y_train, x_test = digits[0], digits[1], digits[2]
    targets = y_train if activation == "softmax" else keras.utils.to_categorical(y_train, 10)
    loss = "sparse_categorical_crossentropy" if activation == "softmax" else "binary_crossentropy"
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, L.Dense(10, activation=activation, name="predictions")(x))
    model.compile(keras.optimizers.Adam(3e-3), loss)
    model.fit(x_train, targets, epochs=8, batch_size=64, verbose=0)
    config = {layer.name: {} for layer in quantizable(model)}
    if recipe == "W4A4":
        config = int4_except_ends(model) | {"predictions": {}}
    qat = keras_qat.apply_retrain_config(model, config, x_train[:256])
    assert qat.output_names == ["predictions"]
    qat.compile(keras.optimizers.Adam(2e-4), loss)
    qat.fit(x_train, targets, epochs=1, batch_size=64, verbose=0)
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", x_train[:256])
    want = qat.predict(x_test, verbose=0)
    got = keras_qat.predict_tflite(path, x_test)
    assert file_output_step(path) == 1 / 256
    steps = np.abs(got - want) * 256
    assert steps.max() < 0.01
    qat.save(tmp_path / "qat.keras")
    reloaded = keras_qat.load_model(tmp_path / "qat.keras")
    np.testing.assert_array_equal(reloaded.predict(x_test, verbose=0), want)


@pytest.mark.parametrize("reader_bits", [8, pytest.param(4, marks=pytest.mark.slow)])
def test_an_output_a_quantized_layer_reads_too_exports_as_trained(digits, tmp_path, reader_bits):
    """A model output read by the next layer's quantizer: one int8 tensor in the file.

    The file's output dequantizes it, on that quantizer's grid (at INT4 its
    carrier, capped only after it); the QAT model rounds the output there.
    """
    x_train, y_train, x_test = digits[0], digits[1], digits[2]
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    features = L.Conv2D(8, 3, padding="same", activation="relu", name="features")(inputs)
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(features)
    logits = L.Dense(10, name="logits")(L.GlobalAveragePooling2D(name="gap")(x))
    model = keras.Model(inputs, [logits, features])
    model.compile(
        keras.optimizers.Adam(3e-3), [keras.losses.SparseCategoricalCrossentropy(True), None]
    )
    model.fit(x_train, y_train, epochs=4, batch_size=64, verbose=0)
    int4 = {"dst_type": "INT4"}
    config = {"features": {}, "logits": {}, "conv2": {} if reader_bits == 8 else
              {"retrain_data_config": int4, "retrain_weight_config": int4}}  # fmt: skip
    qat = keras_qat.apply_retrain_config(model, config, x_train[:256])
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", x_train[:256])
    report = keras_qat.check_tflite(qat, path, x_test, measure="steps")
    for name in ("features", "logits"):
        assert report["outputs"][name]["max_error_steps"] < 0.01, report


def test_a_dropout_before_a_quantized_layer_keeps_its_readers_grid(digits, tmp_path):
    """Dense, BatchNormalization (after the ReLU: a 1x1 depthwise), Dropout, Dense, softmax.

    Dropout is no op in inference: the normalization writes on the next
    layer's grid, not on a range of the representative data and then
    requantized (on a model like this one the probabilities were up to 7 of
    their 1/256 steps off).
    """
    x = digits[0].reshape(-1, 64)
    keras.utils.set_random_seed(3)
    inputs = keras.Input((64,), name="features")
    hidden = L.BatchNormalization(name="bn")(L.Dense(48, activation="relu", name="first")(inputs))
    hidden = L.Dense(32, activation="relu6", name="second")(L.Dropout(0.1, name="drop")(hidden))
    model = keras.Model(inputs, L.Dense(10, activation="softmax", name="probs")(hidden))
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    model.fit(x, digits[1], epochs=10, verbose=0)
    qat = keras_qat.apply_retrain_config(
        model, {layer.name: {} for layer in quantizable(model)}, x[:256]
    )
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", x[:256])
    report = keras_qat.check_tflite(qat, path, digits[2].reshape(-1, 64), measure="steps")
    assert report["outputs"]["probs"]["max_error_steps"] < 0.01, report


def test_a_permute_before_a_convolution_keeps_its_readers_grid(digits, tmp_path):
    """A convolution, a Permute of height and width (a TRANSPOSE), a convolution.

    The TRANSPOSE keeps the scale: the first convolution writes on the
    second one's grid, not on a range of its own then requantized: top-1
    agreement 0.94 before.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    x = L.Conv2D(8, 3, activation="relu", name="conv2")(L.Permute((2, 1, 3), name="swap")(x))
    model = keras.Model(inputs, L.Dense(10, name="logits")(L.Flatten(name="flat")(x)))
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(digits[0], digits[1], epochs=3, batch_size=64, verbose=0)
    assert_logits_exact(model, "INT8", digits, tmp_path)


def test_a_dot_of_two_projections_is_a_product_of_two_quantized_inputs(digits, tmp_path):
    """Rows of the digit as tokens, two Dense projections, their `Dot`: an int8 BATCH_MATMUL.

    A `Dot` quantizes both its inputs (one config entry, data only), as the
    attention products do; it was a float product of tracked ranges (top-1
    agreement 0.97 on a small model like this one, a step off). One that
    normalizes its inputs first is no one int8 product and stays out.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8), name="rows")
    a, b = (L.Dense(8, name=name)(inputs) for name in ("a", "b"))
    products = L.Dot(axes=(2, 2), name="dot")([a, b])
    cosines = L.Dot(axes=(2, 2), normalize=True, name="cosine")([a, b])
    assert [layer.name for layer in quantizable(keras.Model(inputs, cosines))] == ["a", "b"]
    model = keras.Model(inputs, L.Dense(10, name="logits")(L.Flatten(name="flat")(products)))
    assert [layer.name for layer in quantizable(model)] == ["a", "b", "dot", "logits"]
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(True))
    x = digits[0].reshape(-1, 8, 8)
    model.fit(x, digits[1], epochs=3, batch_size=64, verbose=0)
    config = {name: {} for name in ("a", "b", "dot", "logits")}
    qat = keras_qat.apply_retrain_config(model, config, x[:256])
    assert {"dot_input_quant", "dot/rhs_input_quant"} <= {layer.name for layer in qat.layers}
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", x[:256])
    report = keras_qat.check_tflite(qat, path, digits[2].reshape(-1, 8, 8), measure="steps")
    assert report["outputs"]["logits"]["max_error_steps"] < 0.01, report


def test_a_model_written_with_tensorflow_ops_exports_as_trained(digits, tmp_path):
    """`tf.nn.relu(h + y)`, `h * tf.sigmoid(g)` and `tf.concat`: an int8 ADD, MUL and CONCATENATION.

    As TFOpLambda layers, the QAT model knew none of them (a float sum, a
    sigmoid off its fixed grid, a concatenation's inputs on their own ranges):
    top-1 agreement 0.94 before; they are rebuilt as Keras layers at the door.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    h = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    h = tf.nn.relu(h + L.Conv2D(8, 3, padding="same", name="conv2")(h))
    h = h * tf.sigmoid(L.Conv2D(8, 1, name="gate")(h))
    h = tf.concat([h, L.Conv2D(8, 1, activation="relu", name="side")(inputs)], axis=-1)
    x = L.GlobalAveragePooling2D(name="gap")(L.Conv2D(8, 3, name="conv3")(h))
    model = keras.Model(inputs, L.Dense(10, name="logits")(x))
    assert_trained_logits_exact(model, digits, tmp_path)


def test_a_swish_output_read_by_a_convolution_and_an_add_is_rounded_once(digits, tmp_path):
    """A convolution's swish (split off: LOGISTIC then MUL) read by the next one and a residual Add.

    The file holds the MUL's output once, on the next convolution's grid,
    and the Add reads it there; the QAT model rounds it once for both (its
    convolution read the float swish, and the logits were up to 7 steps off
    on such a model).
    """
    keras.utils.set_random_seed(5)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="swish", name="conv1")(inputs)
    y = L.Conv2D(8, 3, padding="same", name="conv2")(x)
    x = L.ReLU(name="relu")(L.Add(name="add")([x, y]))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, L.Dense(10, name="logits")(x))
    qat = keras_qat.apply_retrain_config(
        model, {layer.name: {} for layer in quantizable(model)}, digits[0][:256]
    )
    conv2_input = qat.get_layer("conv2").input._keras_history.layer
    assert conv2_input.name == "conv2_input_quant"
    assert qat.get_layer("add").input[0]._keras_history.layer is conv2_input
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", digits[0][:256])
    report = keras_qat.check_tflite(qat, path, digits[2], measure="steps")
    assert report["outputs"]["logits"]["max_error_steps"] < 0.01, report


def test_a_model_input_read_by_a_quantized_layer_and_an_add_is_rounded_once(digits, tmp_path):
    """x + Dense(x): the file rounds the model input once, for the Dense and the ADD.

    The QAT model added the float input (logits within one step on 96 %).
    """
    x = digits[0].reshape(-1, 64)
    keras.utils.set_random_seed(2)
    inputs = keras.Input((64,), name="features")
    hidden = L.Dense(64, name="first")(inputs)
    hidden = L.ReLU(name="relu")(L.Add(name="add")([inputs, hidden]))
    model = keras.Model(inputs, L.Dense(10, name="logits")(hidden))
    qat = keras_qat.apply_retrain_config(model, {"first": {}, "logits": {}}, x[:256])
    assert qat.get_layer("add").input[0]._keras_history.layer.name == "first_input_quant"
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", x[:256])
    report = keras_qat.check_tflite(qat, path, digits[2].reshape(-1, 64), measure="steps")
    assert report["outputs"]["logits"]["max_error_steps"] < 0.01, report


def build_skip_connection():
    """U-Net's pattern: a convolution's output max-pooled for the next one and concatenated.

    The file writes it on the next convolution's grid (through the MAX_POOL)
    and requantizes it once for the concatenation, beside the up-sampled
    deeper output (RESIZE_NEAREST_NEIGHBOR keeps the scale) written on the
    concatenation's grid. At INT8 the converter failed on the
    concatenation's same-scale constraint; at W4A4 the logits were up to 8
    steps off.
    """
    inputs = keras.Input((8, 8, 1), name="image")
    skip = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="down")(L.MaxPooling2D()(skip))
    x = L.Concatenate(name="join")([L.UpSampling2D(name="upsample")(x), skip])
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="up")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(10, name="logits")(x))


def build_gated_conv1d():
    """WaveNet's pattern: causal dilated Conv1D, tanh times sigmoid, residual Adds, max pooling.

    A per-channel Conv1D is a CONV_2D between reshapes in the file, its
    bias fused only when added before the squeeze (it was an int8 ADD of its
    own: top-1 agreement 0.55); the global max pooling (REDUCE_MAX) keeps the
    scale, so the last Add writes on the Dense's grid (its tracked range was
    a second one the file did not use).
    """
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv1D(16, 3, padding="causal", name="conv1")(L.Reshape((64, 1), name="flat")(inputs))
    for k, rate in enumerate((1, 2)):
        tanh = L.Conv1D(16, 3, padding="causal", dilation_rate=rate, activation="tanh",
                        name=f"tanh{k}")(x)  # fmt: skip
        gate = L.Conv1D(16, 3, padding="causal", dilation_rate=rate, activation="sigmoid",
                        name=f"gate{k}")(x)  # fmt: skip
        y = L.Conv1D(16, 1, name=f"residual{k}")(L.Multiply(name=f"gated{k}")([tanh, gate]))
        x = L.Add(name=f"add{k}")([x, y])
    x = L.GlobalMaxPooling1D(name="pool")(L.ReLU(name="relu")(x))
    return keras.Model(inputs, L.Dense(10, name="logits")(x))


@pytest.mark.parametrize(
    ("build", "recipe"),
    [
        pytest.param(
            build_skip_connection, "INT8", id="skip_connection-INT8", marks=pytest.mark.slow
        ),
        pytest.param(
            build_skip_connection, "W4A4", id="skip_connection-W4A4", marks=pytest.mark.slow
        ),
        pytest.param(build_gated_conv1d, "INT8", id="gated_conv1d-INT8", marks=pytest.mark.slow),
    ],
)
def test_a_unet_skip_and_a_gated_conv1d_export_as_trained(digits, tmp_path, build, recipe):
    keras.utils.set_random_seed(0)
    model = build()
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(digits[0], digits[1], epochs=3, batch_size=64, verbose=0)  # nonzero biases
    assert_logits_exact(model, recipe, digits, tmp_path)


def test_an_activation_op_that_no_quantizer_reads_writes_on_a_tracked_range(digits, tmp_path):
    """A GELU convolution before a global average pooling: GELU is an int8 op of its own.

    Its output got the converter's calibrated range, which the QAT model
    never rounded on (logits within one step on 84 %, up to 4 steps off);
    now an output quantizer rounds it on a tracked range the file uses.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = L.Conv2D(8, 3, padding="same", activation="gelu", name="conv2")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, L.Dense(10, name="logits")(x))
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(digits[0], digits[1], epochs=2, batch_size=64, verbose=0)
    qat = keras_qat.apply_retrain_config(
        model, {layer.name: {} for layer in quantizable(model)}, digits[0][:256]
    )
    assert "conv2_activation_output_quant" in [layer.name for layer in qat.layers]
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", digits[0][:256])
    report = keras_qat.check_tflite(qat, path, digits[2], measure="steps")
    assert report["outputs"]["logits"]["max_error_steps"] < 0.01, report


def build_leaky(reader):
    """A convolution, a LeakyReLU (an int8 LEAKY_RELU of its tracked output), then a
    convolution reading it, an Add of it and that convolution's output, or a
    Flatten of it for the Dense."""
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.LeakyReLU(0.3, name="leaky")(L.Conv2D(16, 3, padding="same", name="conv1")(inputs))
    if reader != "flattened":
        y = L.Conv2D(16, 1, name="conv2")(x)
        x = L.Add(name="add")([x, y]) if reader == "added" else y
    return keras.Model(inputs, L.Dense(10, name="logits")(L.Flatten(name="flat")(x)))


@pytest.mark.parametrize(
    ("reader", "recipe"),
    [
        pytest.param(reader, recipe, id=f"{reader}-{recipe}", marks=marks)
        for reader, recipe, marks in [
            ("read", "INT8", ()),
            ("flattened", "INT8", ()),
            ("added", "W4A4", ()),
            ("read", "W4A4", pytest.mark.slow),
            ("added", "INT8", pytest.mark.slow),
            ("flattened", "W4A4", pytest.mark.slow),
        ]
    ],
)
def test_a_leaky_relu_writes_as_xnnpacks_leaky_relu(digits, tmp_path, reader, recipe):
    """XNNPACK's LEAKY_RELU requantizes with an 8-bit multiplier per sign.

    The QAT model rounded the float activation: untrained, the logits were up
    to 1 (INT8) and 11 or 12 (W4A4) steps off, top-1 agreement 0.964 at W4A4;
    behind a Flatten, 2 and 13 steps.
    """
    keras.utils.set_random_seed(0)
    model = build_leaky(reader)
    assert_logits_exact(model, recipe, digits, tmp_path)


def hard_sigmoid(x, form):
    """A hard sigmoid as tf_keras.applications.MobileNetV3 writes it, or a Keras 3 one rebuilt.

    "layers": TFOpLambda add and multiply around a ReLU(6) layer; "ops":
    `tf.nn.relu6(x + 3) / 6`, the TensorFlow function keras_qat rebuilds
    Keras 3's `hard_sigmoid` activation as.
    """
    if form == "layers":
        return L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)
    return tf.nn.relu6(x + 3.0) / 6.0


def hard_swish(x, form):
    """A Multiply layer of `x` and its hard sigmoid, or (a Keras 3 rebuild) a TFOpLambda one."""
    if form == "layers":
        return L.Multiply()([x, hard_sigmoid(x, form)])
    return x * hard_sigmoid(x, form)


@pytest.mark.parametrize(
    ("form", "recipe"),
    [
        ("layers", "INT8"),
        pytest.param("ops", "INT8", marks=pytest.mark.slow),
        pytest.param("layers", "W4A4", marks=pytest.mark.slow),
    ],
)
def test_mobilenet_v3s_hard_swish_and_gate_write_as_the_file_computes(
    digits, tmp_path, form, recipe
):
    """A hard swish is one HARD_SWISH; an excitation gate's hard sigmoid an ADD and a MUL.

    LiteRT's built-in HARD_SWISH computes in 16-bit fixed point; the gate's
    `+ 3` (with its ReLU6) and `* (1 / 6)` are int8 ops with a constant,
    whose outputs the converter calibrated. With the float product rounded
    and the gate in float, untrained: a hard swish alone (conv, hard swish,
    conv, hard swish, Dense) 99 % (INT8) and 98.9 % (W4A4) of the logits
    within one step, up to 1 step off; with the gate, top-1 agreement
    97.3 %, 84.6 % within one step, up to 2 steps off.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, name="conv1")(inputs)
    x = hard_swish(x, form)
    gate = L.Conv2D(4, 1, activation="relu", name="se1")(L.GlobalAveragePooling2D(keepdims=True)(x))
    x = L.Multiply()([x, hard_sigmoid(L.Conv2D(8, 1, name="se2")(gate), form)])
    x = hard_swish(L.Conv2D(8, 3, name="conv2")(x), form)
    model = keras.Model(inputs, L.Dense(10, name="logits")(L.Flatten(name="flat")(x)))
    assert_logits_exact(model, recipe, digits, tmp_path)


@pytest.mark.parametrize(("activation", "pooled"), [("tanh", False), ("sigmoid", True)])
def test_a_fixed_grid_activation_read_through_a_flatten_or_pooling_stays_on_its_grid(
    digits, tmp_path, activation, pooled
):
    """The file drops the reader's quantizer behind layers that keep the scale too.

    A tanh convolution flattened for a Dense, or a sigmoid one max-pooled for
    a convolution: the file reads TANH's 1/128 or LOGISTIC's 1/256 grid,
    where the QAT model rounded on the reader's own range (untrained: 93 %
    and 88 % of the logits within one step, up to 2 steps off).
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, activation=activation, name="conv1")(inputs)
    if pooled:
        x = L.Conv2D(8, 3, name="conv2")(L.MaxPooling2D(name="pool")(x))
    model = keras.Model(inputs, L.Dense(10, name="logits")(L.Flatten(name="flat")(x)))
    assert_logits_exact(model, "INT8", digits, tmp_path)


@pytest.mark.parametrize("recipe", ["INT8", pytest.param("W4A4", marks=pytest.mark.slow)])
def test_a_prelu_writes_as_litert_computes_it(digits, tmp_path, recipe):
    """PReLUs, read by a convolution's quantizer and (on a range of its own) by the pooling.

    The file's PRELU stores the alpha as int8 and requantizes in fixed
    point: the QAT model rounded the float product, up to 2 steps off.
    """
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    x = L.PReLU(shared_axes=[1, 2], name="prelu1")(x)
    x = L.PReLU(name="prelu2")(L.Conv2D(8, 3, name="conv2")(x))
    outputs = L.Dense(10, name="logits")(L.GlobalAveragePooling2D(name="gap")(x))
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(0)
    for name in ("prelu1", "prelu2"):
        layer = model.get_layer(name)
        layer.set_weights([rng.uniform(-0.5, 0.8, layer.alpha.shape).astype("f4")])
    assert_logits_exact(model, recipe, digits, tmp_path)


@pytest.mark.parametrize("recipe", ["INT8", pytest.param("W4A4", marks=pytest.mark.slow)])
def test_bilinear_resizes_write_as_xnnpack_interpolates(digits, tmp_path, recipe):
    """Bilinear resizes: of the model input, into a concatenation, by (3, 2), to 9 x 7.

    The file's RESIZE_BILINEAR reads the layer before written on its
    reader's grid (the model input quantized onto it) and interpolates in
    fixed point onto that grid, at positions XNNPACK computes in float32.
    The QAT model interpolated the float output: top-1 agreement 0.63
    (INT8), 0.90 (W4A4) on the up-samplings; with the `Resizing` layers
    0.82 (INT8).
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Resizing(10, 10, name="resize_in")(inputs)
    skip = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = L.Conv2D(16, 3, padding="same", activation="relu", name="down")(L.MaxPooling2D()(skip))
    x = L.UpSampling2D(interpolation="bilinear", name="upsample")(x)
    x = L.Conv2D(8, 3, padding="same", name="up")(L.Concatenate(name="join")([x, skip]))
    x = L.UpSampling2D((3, 2), interpolation="bilinear", name="widen")(x)
    x = L.Conv2D(8, 3, strides=2, activation="relu", name="conv2")(x)
    x = L.Resizing(9, 7, name="shrink")(x)
    model = keras.Model(inputs, L.Dense(10, name="logits")(L.Flatten(name="flat")(x)))
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(digits[0], digits[1], epochs=3, batch_size=64, verbose=0)
    assert_logits_exact(model, recipe, digits, tmp_path)


def test_resizes_of_images_of_any_size_write_as_xnnpack_interpolates(digits, tmp_path):
    """A model taking images of any size: a bilinear `UpSampling2D` into a `Resizing`, another.

    The first resizes' input height and width are known only when the model
    runs. XNNPACK runs the int8 RESIZE_BILINEAR to a `Resizing`'s fixed
    size all the same; the up-sampling's size is computed in the file,
    which XNNPACK declines, and LiteRT's built-in kernel runs it. Both read
    and write the grid of the convolution after them. The QAT model
    interpolated the float output: top-1 agreement 0.62 (Resizing) and
    0.63 (UpSampling2D) on small CNNs; with a convolution between the
    resizes, this one 0.89 with XNNPACK's arithmetic for the up-sampling;
    as it is, 0.85 where the up-sampling interpolated on a range of its own.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 1), name="image")
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="conv0")(inputs)
    x = L.UpSampling2D(interpolation="bilinear", name="upsample")(x)
    x = L.Resizing(10, 10, name="resize")(x)
    x = L.Conv2D(8, 3, activation="relu", name="conv1")(x)
    x = L.Resizing(6, 5, name="shrink")(x)
    x = L.Conv2D(8, 3, activation="relu", name="conv2")(x)
    model = keras.Model(inputs, L.Dense(10, name="logits")(L.Flatten(name="flat")(x)))
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(digits[0], digits[1], epochs=3, batch_size=64, verbose=0)
    assert_logits_exact(model, "INT8", digits, tmp_path)


def test_a_layer_reading_a_fixed_grid_computes_the_files_integer_sums(digits, tmp_path):
    """Rows of the digit, a Dense, a softmax over each row, a tanh Dense, the logits.

    The Dense layers after the softmax and the tanh read LOGISTIC's and
    TANH's fixed grids, with no input quantizer of their own: their sums
    were computed in float and rounded near the file's ties (a model like
    this one: top-1 agreement 0.992, logits a step off).
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8), name="rows")
    x = L.Softmax(name="weights")(L.Dense(16, name="scores")(inputs))
    x = L.Dense(16, activation="tanh", name="mix")(x)
    model = keras.Model(inputs, L.Dense(10, name="logits")(L.Flatten(name="flat")(x)))
    assert_rows_logits_exact(model, digits, tmp_path)


def test_a_layer_reading_a_returned_fixed_grid_computes_the_files_integer_sums(digits, tmp_path):
    """A convolution with a tanh, returned, read by a convolution and through a global pooling.

    The returned tanh is on TANH's fixed grid in the file, and the second
    convolution reads it with no input quantizer. That grid was in the
    first convolution's output quantizer, which gave the reader no input
    step: it summed in float and added its float bias (a step off on a
    small CNN, a sigmoid's reader too). The wrapper is that grid's holder
    now, as a `FileActivation` is.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    features = L.Conv2D(8, 3, padding="same", activation="tanh", name="features")(x)
    pooled = L.GlobalAveragePooling2D(name="pool")(features)
    heads = [L.Dense(10, name="logits")(pooled), L.Conv2D(4, 3, name="side")(features)]
    model = keras.Model(inputs, [features, *heads])
    config = {layer.name: {} for layer in quantizable(model)}
    qat = keras_qat.apply_retrain_config(model, config, digits[0][:256])
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", digits[0][:256])
    report = keras_qat.check_tflite(qat, path, digits[2], measure="steps")
    for name in model.output_names:
        assert report["outputs"][name]["max_error_steps"] < 0.01, (name, report["outputs"])


def test_what_the_converter_decomposes_runs_in_float_in_both(digits, tmp_path):
    """selu, hard_sigmoid, mish, softsign, a ReLU with a threshold, a Rescaling, a cosine Dot.

    The converter writes each as int8 ops (selu: GREATER, MUL, EXP, SUB,
    MUL, SELECT_V2; a Rescaling: MUL, ADD; a normalizing Dot:
    L2_NORMALIZATION, BATCH_MATMUL), each on a range of its own from the
    representative data, where the QAT model computes them in float: logits
    up to 6 steps off, top-1 agreement 0.51-0.81 on small models. The file
    now computes them in float too, a mish's TANH without the round trip
    through its int8 grid that the converter puts after it.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = L.Rescaling(0.5, offset=0.1, name="rescale")(x)
    x = L.Conv2D(8, 3, activation="selu", name="conv2")(x)
    x = L.Conv2D(8, 3, activation="hard_sigmoid", name="conv3")(x)
    x = L.Conv2D(8, 3, activation="mish", name="conv4")(x)
    x = L.ReLU(max_value=4.0, threshold=0.2, name="relu")(L.Dense(8, name="mix")(x))
    tokens = L.Reshape((4, 8), name="tokens")(x)
    query, key = (L.Dense(8, name=name)(tokens) for name in ("query", "key"))
    cosines = L.Dot(axes=(2, 2), normalize=True, name="cosines")([query, key])
    x = L.Concatenate(name="join")([L.Flatten()(x), L.Flatten()(cosines)])
    x = L.Dense(16, activation="softsign", name="hidden")(x)
    model = keras.Model(inputs, L.Dense(10, name="logits")(x))
    assert_trained_logits_exact(model, digits, tmp_path)


def test_heads_with_activations_the_file_runs_in_float_export_as_trained(digits, tmp_path):
    """Two Dense model outputs: a GELU classifier and a softplus rate head.

    The QAT model rounds each layer's linear output on a tracked range and
    applies the activation in float after it (`ActivatedOutputQuantizer`);
    the file computes the activation in float after that int8 tensor. It
    rounded the activation's output on ranges of its own (the softplus as
    EXP, ADD, LOG, each int8): a small CNN's softplus head agreed on 50 %
    of its top-1 classes, up to 5 steps off, a GELU head 96 %.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = L.Flatten(name="flat")(x)
    heads = [L.Dense(10, activation="gelu", name="logits")(x)]
    heads.append(L.Dense(4, activation="softplus", name="rate")(x))
    model = keras.Model(inputs, heads)
    rates = np.abs(digits[0].reshape(-1, 64)[:, :4])
    model.compile(
        keras.optimizers.Adam(3e-3), [keras.losses.SparseCategoricalCrossentropy(True), "mse"]
    )
    model.fit(digits[0], [digits[1], rates], epochs=3, batch_size=64, verbose=0)
    config = {layer.name: {} for layer in quantizable(model)}
    qat = keras_qat.apply_retrain_config(model, config, digits[0][:256])
    assert qat.output_names == ["logits", "rate"]
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", digits[0][:256])
    report = keras_qat.check_tflite(qat, path, digits[2], measure="steps")
    for name in ("logits", "rate"):
        assert report["outputs"][name]["max_error_steps"] < 0.01, report
    qat.save(tmp_path / "qat.keras")
    reloaded = keras_qat.load_model(tmp_path / "qat.keras")
    want = qat.predict(digits[2], verbose=0)
    for got, expected in zip(reloaded.predict(digits[2], verbose=0), want, strict=True):
        np.testing.assert_array_equal(got, expected)


def test_returned_float_activations_that_dense_layers_read_are_the_files_outputs(digits, tmp_path):
    """A selu Activation, Dense layers with softplus and GELU activations: returned and read.

    The file computes these activations in float and QUANTIZEs their output
    for the reader. It returned the selu half on the reader's grid (the
    converter quantizes its positive branch, a MUL by the selu scale,
    although the export denylists it) and the softplus wholly (the output
    DEQUANTIZEs the reader's tensor), where the QAT model returned the
    dense layers' outputs on the reader's grid, and the GELU's two readers
    had no input quantizer at all (their shared one was planned for the
    activation the float copy splits off): outputs 0.14-1 step off on a
    small model, the readers 1-2 steps. The file now returns each float, as
    the QAT model does, and the GELU's readers share one quantizer.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Flatten(name="flat")(L.Conv2D(8, 3, activation="relu", name="conv")(inputs))
    returned = [
        L.Activation("selu", name="embedding")(L.Dense(16, name="pre")(x)),
        L.Dense(8, activation="softplus", name="rate")(x),
        L.Dense(8, activation="gelu", name="gate")(x),
    ]
    heads = [L.Dense(4, name=f"{t.node.layer.name}_head")(t) for t in returned]
    heads.append(L.Dense(4, name="gate_head2")(returned[-1]))
    model = keras.Model(inputs, returned + heads)
    config = {layer.name: {} for layer in quantizable(model)}
    qat = keras_qat.apply_retrain_config(model, config, digits[0][:256])
    assert qat.output_names == model.output_names
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", digits[0][:256])
    report = keras_qat.check_tflite(qat, path, digits[2], measure="steps")
    for name in model.output_names:
        assert report["outputs"][name]["max_error_steps"] < 0.01, (name, report["outputs"])


def test_model_outputs_that_layers_read_are_the_files_tensors(digits, tmp_path):
    """Returned and read by layers: a feature map, its global pooling, an embedding (two heads).

    The file holds each such output once, on its readers' grid (one
    quantizer, shared by the readers), and dequantizes it for the output.
    Before, the readers had quantizers of their own, the file took one's
    range for all, and the QAT model left the outputs unrounded: the
    embedding 29 steps off (clipped), the feature map 4.6, the heads'
    logits 4. The pooling, a weightless layer, was returned unrounded too,
    where the file clipped it to its Dense's range (14 steps off here);
    the model now returns its quantizer's output under its name. A feature
    map read by one convolution alone was rounded as a fake-quant rounds,
    where the file requantizes the convolution's sums: 3 of 401 408 values
    a step off (ties) on a small CNN.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    features = L.Conv2D(8, 3, activation="relu", name="features")(inputs)
    x = L.Conv2D(8, 3, padding="same", name="conv2")(features)
    x = L.GlobalAveragePooling2D(name="gap")(L.Add(name="add")([features, x]))
    embedding = L.Dense(16, activation="relu", name="embedding")(x)
    heads = [L.Dense(10, name="logits")(embedding), L.Dense(2, name="parity")(embedding)]
    model = keras.Model(inputs, [features, x, embedding, *heads])
    loss = keras.losses.SparseCategoricalCrossentropy(True)
    model.compile(keras.optimizers.Adam(3e-3), {"logits": loss, "parity": loss})
    model.fit(digits[0], {"logits": digits[1], "parity": digits[1] % 2}, epochs=3, verbose=0)
    config = {layer.name: {} for layer in quantizable(model)}
    qat = keras_qat.apply_retrain_config(model, config, digits[0][:256])
    assert qat.output_names == ["features", "gap", "embedding", "logits", "parity"]
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", digits[0][:256])
    report = keras_qat.check_tflite(qat, path, digits[2], measure="steps")
    for name in qat.output_names:
        assert report["outputs"][name]["max_error_steps"] < 0.01, report


def test_a_dense_output_returned_and_read_through_a_relu_is_two_ops_in_the_file(digits, tmp_path):
    """An embedding returned, summed with another projection and read through a ReLU.

    The converter fuses the ReLU into a copy of the embedding's
    FULLY_CONNECTED, written on the logits' input grid; the original writes
    on a range of its own for the output and the Add. The ReLU read the
    rounded embedding, which the file never does: logits 3 steps off, 81 %
    within one, on a small CNN. An Add returned, rounded on a tracked range,
    was returned under its quantizer's name (`total_output_quant`).
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    embedding = L.Dense(16, name="embedding")(x)
    total = L.Add(name="total")([embedding, L.Dense(16, name="side")(x)])
    logits = L.Dense(10, name="logits")(L.ReLU(name="relu")(embedding))
    model = keras.Model(inputs, [embedding, total, logits])
    loss = keras.losses.SparseCategoricalCrossentropy(True)
    model.compile(keras.optimizers.Adam(3e-3), {"logits": loss})
    model.fit(digits[0], {"logits": digits[1]}, epochs=3, verbose=0)
    config = {layer.name: {} for layer in quantizable(model)}
    qat = keras_qat.apply_retrain_config(model, config, digits[0][:256])
    assert qat.output_names == ["embedding", "total", "logits"]
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", digits[0][:256])
    report = keras_qat.check_tflite(qat, path, digits[2], measure="steps")
    for name in qat.output_names:
        assert report["outputs"][name]["max_error_steps"] < 0.01, report


def test_a_relu_op_no_quantizer_reads_writes_on_a_tracked_range(digits, tmp_path):
    """NASNet's head: its last cell's Concatenate, a ReLU, the global pooling, the logits.

    The ReLU is an int8 RELU of its own in the file (none fuses into a
    CONCATENATION), written on a range the converter calibrated; the QAT
    model left it unrounded: logits 3 steps off.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    left = L.Conv2D(8, 3, padding="same", name="left")(x)
    right = L.Conv2D(8, 1, name="right")(x)
    x = L.ReLU(name="cell_relu")(L.Concatenate(name="cell")([left, right]))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, L.Dense(10, name="logits")(x))
    assert_trained_logits_exact(model, digits, tmp_path)


def test_a_relu_of_a_tensor_on_another_readers_grid_requantizes_from_it(digits, tmp_path):
    """A convolution read by a ReLU into the pooled logits and, flattened, by an auxiliary head.

    The file writes the convolution on the auxiliary Dense's grid and its
    RELU requantizes from there; the QAT model requantized the sums as if
    the ReLU were fused into the convolution: logits 2 steps off.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    features = L.Conv2D(8, 3, name="features")(x)
    pooled = L.GlobalAveragePooling2D(name="gap")(L.ReLU(name="relu")(features))
    aux = L.Dense(10, name="aux")(L.Flatten(name="flat")(features))
    model = keras.Model(inputs, [L.Dense(10, name="logits")(pooled), aux])
    loss = keras.losses.SparseCategoricalCrossentropy(True)
    model.compile(keras.optimizers.Adam(3e-3), [loss, loss])
    model.fit(digits[0], [digits[1], digits[1]], epochs=3, batch_size=64, verbose=0)
    config = {layer.name: {} for layer in quantizable(model)}
    qat = keras_qat.apply_retrain_config(model, config, digits[0][:256])
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", digits[0][:256])
    report = keras_qat.check_tflite(qat, path, digits[2], measure="steps")
    for name in qat.output_names:
        assert report["outputs"][name]["max_error_steps"] < 0.01, report


@pytest.mark.parametrize("shared", ["add", "convolution"])
def test_a_tensor_a_concatenation_and_an_add_read_is_on_the_concatenations_grid(
    digits, tmp_path, shared
):
    """NASNet's reduction cell: a sum joined in the cell's output and added to a pooling too.

    The file writes the shared tensor on the concatenation's one scale,
    and the other Add reads it there; the QAT model left it unrounded, and
    added the pooling's unrounded average: logits 2 steps off (top-1
    agreement 0.79 for the sum, 0.94 for the convolution, which the
    converter even left float: its output had two scales to take).
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    left = L.Conv2D(8, 3, padding="same", name="left")(x)
    if shared == "add":
        left = L.Add(name="sum")([left, L.Conv2D(8, 1, name="right")(x)])
    pooled = L.AveragePooling2D(3, strides=1, padding="same", name="pool")(x)
    added = L.Add(name="added")([left, pooled])
    x = L.ReLU(name="cell_relu")(L.Concatenate(name="cell")([left, added]))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, L.Dense(10, name="logits")(x))
    assert_trained_logits_exact(model, digits, tmp_path)


def test_relus_of_one_tensor_padded_apart_are_one_tensor_on_one_grid(digits, tmp_path):
    """NASNet's reduction cell: each strided branch pads its own ReLU of the cell's input.

    The converter merges the ReLUs into the op before them, which writes
    one int8 tensor for both branches' quantizers, each behind its own
    padding: on one's grid, requantized for the other (logits 2 steps off,
    top-1 agreement 0.93; 1 step where two branches share a padding, as
    here, before that case was followed too). Those quantizers are one
    now, before the paddings.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = L.Conv2D(8, 1, name="conv2")(x)
    # Two branches of one kernel size pad alike: one padding at the door.
    branches = [(3, 1, "left"), (5, 2, "right"), (5, 2, "right2")]
    x = L.Add(name="add")(
        [
            L.SeparableConv2D(8, size, strides=2, name=name)(
                L.ZeroPadding2D(pad, name=f"{name}_pad")(
                    L.Activation("relu", name=f"{name}_relu")(x)
                )
            )
            for size, pad, name in branches
        ]
    )
    x = L.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inputs, L.Dense(10, name="logits")(x))
    assert_trained_logits_exact(model, digits, tmp_path)


def build_two_relus():
    """A convolution read by a ReLU and a ReLU6: two int8 RELU ops of its tracked output."""
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    x = L.Conv2D(8, 3, padding="same", name="shared")(x)
    a = L.Conv2D(4, 3, name="after_relu")(L.ReLU(name="relu")(x))
    b = L.Conv2D(4, 3, name="after_relu6")(L.ReLU(6.0, name="relu6")(x))
    x = L.Flatten(name="flat")(L.Concatenate(name="join")([a, b]))
    return keras.Model(inputs, L.Dense(10, name="logits")(x))


def build_returned_sequence():
    """A Dense of a sequence, returned and read through a ReLU: an int8 RELU op in the file."""
    inputs = keras.Input((8, 8), name="rows")
    x = L.Conv1D(8, 3, activation="relu", name="conv1")(inputs)
    tokens = L.Dense(16, name="tokens")(x)
    x = L.Dense(8, name="mix")(L.ReLU(name="relu")(tokens))
    x = L.GlobalAveragePooling1D(name="gap")(x)
    return keras.Model(inputs, [tokens, L.Dense(10, name="logits")(x)])


@pytest.mark.parametrize("build", [build_two_relus, build_returned_sequence])
def test_relu_ops_reading_a_tracked_output_requantize_as_litert(digits, tmp_path, build):
    """An int8 RELU or RELU6 writes a tracked output onto its reader's grid, in fixed point.

    The reader's quantizer rounded the ReLU of the tracked grid's values
    once, where LiteRT's built-in kernel (XNNPACK does not take these)
    multiplies by a 31-bit multiplier and rounds twice, and RELU6 caps
    at `roundf(6 / step)`: at W4A4, the logits 7 steps off (top-1
    agreement 0.51) and 6 steps off here. At INT8 the two differ only
    near ties.
    """
    keras.utils.set_random_seed(0)
    model = build()
    if build is build_returned_sequence:
        loss = keras.losses.SparseCategoricalCrossentropy(True)
        model.compile(keras.optimizers.Adam(3e-3), [None, loss])
        rows = tuple(part.reshape(-1, 8, 8) if part.ndim > 1 else part for part in digits)
        model.fit(rows[0], [np.zeros((len(rows[0]), 6, 16)), rows[1]], epochs=3, verbose=0)
        assert_logits_exact(model, "W4A4", rows, tmp_path)
    else:
        assert_trained_logits_exact(model, digits, tmp_path, "W4A4")


def test_a_softmax_over_another_axis_and_a_permute_write_as_the_file(digits, tmp_path):
    """Rows of the digit: a softmax over the rows, a Permute that moves the last axis.

    The file computes `Softmax(axis=1)` as TRANSPOSE, SOFTMAX, TRANSPOSE:
    on SOFTMAX's fixed grid, which the Dense after it reads (the QAT model
    rounded a float softmax on that Dense's own range: top-1 agreement 0.63
    on a model like this one). A TRANSPOSE keeps the scale whatever the
    axes: the Dense before the Permute writes on its reader's grid (it was
    rounded on a range of its own, then requantized: 0.83).
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8), name="rows")
    x = L.Softmax(axis=1, name="weights")(L.Dense(8, name="scores")(inputs))
    x = L.Permute((2, 1), name="swap")(L.Dense(8, name="mix")(x))
    x = L.Dense(8, activation="relu", name="cols")(x)
    model = keras.Model(inputs, L.Dense(10, name="logits")(L.Flatten(name="flat")(x)))
    assert_rows_logits_exact(model, digits, tmp_path)


def test_a_tensor_read_by_a_dense_and_a_products_input_is_rounded_once(digits, tmp_path):
    """Attention pooling: features read by a Dense (the scores) and by a Dot (the weighted sum).

    The file holds the features once, on one grid; the Dense's quantizer and
    the Dot's second input's were two, the second rounding the first's
    output again (top-1 agreement 0.87 on a model like this one, 2 steps
    off). They are one now, shared as two Dense layers' are. The Dot's
    BATCH_MATMUL (on LiteRT's built-in kernel: the features' zero point is
    -128) requantizes its sums with a fixed-point multiplier, which
    inference computes (`FileDot`): a float product rounded by its reader
    was a step off (top-1 agreement 0.991 on a model like this one).
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8), name="rows")
    features = L.Conv1D(16, 3, padding="same", activation="relu", name="conv")(inputs)
    weights = L.Softmax(axis=1, name="weights")(L.Dense(1, name="scores")(features))
    pooled = L.Flatten(name="flat")(L.Dot(axes=1, name="pool")([weights, features]))
    model = keras.Model(inputs, L.Dense(10, name="logits")(pooled))
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(True))
    x = digits[0].reshape(-1, 8, 8)
    model.fit(x, digits[1], epochs=3, batch_size=64, verbose=0)
    config = {layer.name: {} for layer in quantizable(model)}
    qat = keras_qat.apply_retrain_config(model, config, x[:256])
    targets = [layer.targets for layer in qat.layers if isinstance(layer, InputQuantizeLayer)]
    assert sorted(targets) == [("conv",), ("logits",), ("pool/rhs", "scores")]
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", x[:256])
    report = keras_qat.check_tflite(qat, path, digits[2].reshape(-1, 8, 8), measure="steps")
    assert report["outputs"]["logits"]["max_error_steps"] < 0.01, report


@pytest.mark.parametrize("recipe", ["INT8", pytest.param("INT4", marks=pytest.mark.slow)])
def test_readers_of_one_tensor_with_different_data_settings_requantize_it(digits, tmp_path, recipe):
    """Two convolutions read one tensor; the user fixed one's clip range in the config.

    The file holds the tensor once, on the first reader's grid, and its
    QUANTIZE requantizes it onto the other's. The two quantizers were
    apart, and the file read the union of their ranges for both: top-1
    agreement 0.16 (INT8) and 0.24 (INT4 readers) here, 0.43 and 0.63 on a
    small CNN of random data (logits up to 17 steps off). The other
    reader's quantizer now rounds the first's output again, as that
    QUANTIZE computes.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = L.Add(name="add")([L.Conv2D(8, 3, padding="same", name="wide")(x),
                           L.Conv2D(8, 1, name="narrow")(x)])  # fmt: skip
    model = keras.Model(inputs, L.Dense(10, name="logits")(L.GlobalAveragePooling2D()(x)))
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(digits[0], digits[1], epochs=3, batch_size=64, verbose=0)
    setting = {"dst_type": recipe}
    fixed = {**setting, "clip_max": 0.5, "clip_min": -0.1}
    config = {"conv1": {}, "logits": {}, "wide": {"retrain_data_config": setting},
              "narrow": {"retrain_data_config": fixed}}  # fmt: skip
    qat = keras_qat.apply_retrain_config(model, config, digits[0][:256])
    targets = [layer.targets for layer in qat.layers if isinstance(layer, InputQuantizeLayer)]
    assert ("wide",) in targets and ("narrow",) in targets
    assert qat.get_layer("narrow_input_quant").input.node.layer.name == "wide_input_quant"
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", digits[0][:256])
    report = keras_qat.check_tflite(qat, path, digits[2], measure="steps")
    assert report["outputs"]["logits"]["max_error_steps"] < 0.01, report


def test_a_product_of_a_tensor_with_itself_reads_one_grid(digits, tmp_path):
    """A Gram matrix of projected rows: a Dot of one tensor with itself.

    The file's BATCH_MATMUL reads that tensor once, on one grid, as both
    inputs; the QAT model rounded it with a quantizer for each input: logits
    2 steps off here (top-1 agreement 0.998), 3 on a small model of random
    rows (0.81). Both inputs share one quantizer now.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8), name="rows")
    projected = L.Dense(6, name="proj")(inputs)
    gram = L.Flatten(name="flat")(L.Dot(axes=1, name="gram")([projected, projected]))
    model = keras.Model(inputs, L.Dense(10, name="logits")(gram))
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(True))
    x = digits[0].reshape(-1, 8, 8)
    model.fit(x, digits[1], epochs=3, batch_size=64, verbose=0)
    qat = keras_qat.apply_retrain_config(model, {"proj": {}, "gram": {}, "logits": {}}, x[:256])
    targets = [layer.targets for layer in qat.layers if isinstance(layer, InputQuantizeLayer)]
    assert sorted(targets) == [("gram", "gram/rhs"), ("logits",), ("proj",)]
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", x[:256])
    report = keras_qat.check_tflite(qat, path, digits[2].reshape(-1, 8, 8), measure="steps")
    assert report["outputs"]["logits"]["max_error_steps"] < 0.01, report


@pytest.mark.parametrize("recipe", [pytest.param("INT8", marks=pytest.mark.slow), "W4A4"])
def test_attention_products_requantize_as_the_kernel_that_runs_them(tmp_path, recipe):
    """A MultiHeadAttention block over 12 random tokens: its products are int8 BATCH_MATMULs.

    XNNPACK runs one whose second input has int8 zero point 0; LiteRT's
    built-in kernel the others (at W4A4 the key and value are INT4 grids'
    carriers, zero point -120), each requantizing its own way: a float
    product rounded by its reader was 3 steps off at W4A4 (top-1 agreement
    0.87 on this block, 0.80-0.93 on others) and a step off at INT8 on
    some (0.9996).
    """
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(512, 12, 8)).astype(np.float32), rng.integers(0, 10, 512)
    inputs = keras.Input((12, 8), name="tokens")
    h = L.Dense(16, name="embed")(inputs)
    h = L.Add(name="residual")([h, L.MultiHeadAttention(2, 8, name="mha")(h, h)])
    h = L.GlobalAveragePooling1D(name="pool")(L.LayerNormalization(name="norm")(h))
    model = keras.Model(inputs, L.Dense(10, name="logits")(h))
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(x, y, epochs=2, verbose=0)
    # W4A4: INT4 but the first and last layers, the products' inputs too.
    data4 = {"retrain_data_config": {"dst_type": "INT4"}}
    int4 = {**data4, "retrain_weight_config": {"dst_type": "INT4"}}
    config = {
        layer.name: {} if recipe == "INT8" or layer.name in ("embed", "logits") else
        int4 if layer.weights else data4
        for layer in quantizable(model)
    }  # fmt: skip
    qat = keras_qat.apply_retrain_config(model, config, x[:64])
    qat.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(True))
    qat.fit(x, y, epochs=1, verbose=0)
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", x[:128])
    report = keras_qat.check_tflite(qat, path, x, measure="steps")
    assert report["outputs"]["logits"]["max_error_steps"] < 0.01, report


def test_weightless_layers_called_at_several_places_compute_the_files_ops(digits, tmp_path):
    """One ReLU after two convolutions, one Add twice, one bilinear UpSampling2D twice.

    The file computes each call as an op of its own, where keras_qat planned
    the rounding per layer: one plan for both calls, or none (small CNNs of
    these shapes: 0.52, 0.71 and 0.57 top-1 agreement, 4-9 steps off). At
    the door each call after the first gets a copy of its layer.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    relu, add = L.ReLU(name="relu"), L.Add(name="add")
    up = L.UpSampling2D(2, interpolation="bilinear", name="up")
    x = relu(L.Conv2D(8, 3, padding="same", name="conv1")(inputs))
    x = add([x, relu(L.Conv2D(8, 3, padding="same", name="conv2")(x))])
    x = add([x, L.Conv2D(8, 1, name="conv3")(x)])
    small = L.Conv2D(4, 3, strides=2, padding="same", name="down")(x)
    joined = L.Concatenate(name="cat")(
        [up(small), up(L.Conv2D(4, 3, strides=2, padding="same", activation="relu")(x))]
    )
    features = L.GlobalAveragePooling2D(name="gap")(L.Conv2D(8, 3, name="conv4")(joined))
    model = keras.Model(inputs, L.Dense(10, name="logits")(features))
    config = {layer.name: {} for layer in quantizable(model)}
    qat = keras_qat.apply_retrain_config(model, config, digits[0][:256])
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", digits[0][:256])
    report = keras_qat.check_tflite(qat, path, digits[2], measure="steps")
    assert report["outputs"]["logits"]["max_error_steps"] < 0.01, report["outputs"]


@pytest.mark.parametrize("recipe", ["INT8", "W4A4"])
def test_a_maximum_of_a_tensor_another_layer_reads_compares_the_files_operands(
    digits, tmp_path, recipe
):
    """A Maximum and a Minimum of two convolutions, one of which another convolution reads.

    The file's MAXIMUM has one scale for its operands and output: the ops
    write their outputs on it, and an operand on another reader's grid is
    QUANTIZEd onto it (a second rounding, with XNNPACK's 8-bit multiplier).
    The QAT model compared the float operands and rounded the result once
    (here 1 step off at INT8; a trained model of this shape: 0.92 top-1
    agreement); at W4A4 the converter took that operand's grid for the op
    and requantized its output (4 steps off here). Each operand is now
    rounded on the op's one scale as the file writes it, and the export
    makes the converter keep that scale.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    a, b, c, d = (L.Conv2D(8, 3, padding="same", name=name)(x) for name in "abcd")
    branches = [
        L.Conv2D(8, 3, name="after_max")(L.Maximum(name="max")([a, b])),
        L.Conv2D(8, 3, name="side")(a),
        L.Conv2D(8, 3, name="after_min")(L.Minimum(name="min")([c, d])),
    ]
    pooled = L.Concatenate(name="cat")([L.GlobalAveragePooling2D()(t) for t in branches])
    model = keras.Model(inputs, L.Dense(10, name="logits")(pooled))
    assert_logits_exact(model, recipe, digits, tmp_path)


def test_global_average_poolings_read_by_a_subtract_or_returned_are_the_files_means(
    digits, tmp_path
):
    """Two towers' global average poolings, subtracted (one also returned), then a Dense.

    The file's int8 MEAN writes on an output range of its own where no
    quantizer reads it, which the QAT model did not round: the SUB read
    its operands on unknown grids and computed in float (a small model of
    this shape: 0.61 top-1 agreement, 5 steps off). An `OutputQuantizeLayer`
    now rounds each MEAN's output on a tracked range, computing the file's
    MEAN in inference.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    towers = [
        L.GlobalAveragePooling2D(name=f"pooled{i}")(
            L.Conv2D(8, 3, activation="relu", name=f"tower{i}")(x)
        )
        for i in (1, 2)
    ]
    difference = L.Subtract(name="difference")(towers)
    model = keras.Model(inputs, [L.Dense(10, name="logits")(difference), towers[0]])
    config = {layer.name: {} for layer in quantizable(model)}
    qat = keras_qat.apply_retrain_config(model, config, digits[0][:256])
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", digits[0][:256])
    report = keras_qat.check_tflite(qat, path, digits[2], measure="steps")
    for name in model.output_names:
        assert report["outputs"][name]["max_error_steps"] < 0.01, report["outputs"]


def test_dense_layers_on_a_five_dimensional_tensor_add_their_bias_in_the_fully_connected(
    digits, tmp_path
):
    """Dense layers on a 5-D tensor (the digits as 2x4 blocks of 8 pixels), then a classifier.

    The export's Dense on rows reshaped the FULLY_CONNECTED's output back
    before adding the bias, which the converter kept apart at rank 5: an
    int8 ADD of an int8 bias, with a range of its own (here 1 step off; a
    small model of this shape: 0.60 top-1 agreement, 4 steps). The bias and
    activation now go in before the reshape, into the FULLY_CONNECTED.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Reshape((2, 4, 8, 1), name="blocks")(inputs)
    x = L.Dense(6, activation="relu", name="expand")(x)
    x = L.Dense(4, activation="relu", name="mix")(x)
    model = keras.Model(inputs, L.Dense(10, name="logits")(L.Flatten(name="flat")(x)))
    assert_trained_logits_exact(model, digits, tmp_path)


@pytest.mark.parametrize("recipe", ["INT8", "W4A4"])
def test_a_siamese_tower_called_on_two_images_computes_each_files_branch(digits, tmp_path, recipe):
    """One nested model of two convolutions and a global pooling, called on two images.

    Its convolutions are called twice, and keras_qat planned no output
    range for a layer called more than once: the file ranged each call's
    output from the representative data (a trained model of this shape:
    0.72 top-1 agreement, 12 steps off; its ReLU layer, shared too: 0.36).
    Each call now writes on the wrapper's one tracked range, calibrated
    over all calls, which the export gives each call's op.
    """
    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1))
    relu = L.ReLU(name="relu")
    x = relu(L.Conv2D(8, 3, name="conv1")(image))
    x = L.Conv2D(8, 3, activation="relu", name="conv2")(x)
    tower = keras.Model(image, L.GlobalAveragePooling2D(name="gap")(x), name="tower")
    left, right = keras.Input((8, 8, 1), name="left"), keras.Input((8, 8, 1), name="right")
    difference = L.Subtract(name="difference")([tower(left), tower(right)])
    model = keras.Model([left, right], L.Dense(10, name="logits")(difference))
    train, test = ({"left": x, "right": x[::-1]} for x in (digits[0], digits[2]))
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(train, digits[1], epochs=3, batch_size=64, verbose=0)
    # The tower's layers by name: `quantizable` lists the outer model's, the tower one of them.
    config = {"conv1": {}, "conv2": INT4 if recipe == "W4A4" else {}, "logits": {}}
    calibration = {name: x[:256] for name, x in train.items()}
    qat = keras_qat.apply_retrain_config(model, config, calibration)
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", calibration)
    report = keras_qat.check_tflite(qat, path, test, measure="steps")
    assert report["outputs"]["logits"]["max_error_steps"] < 0.01, report


def test_a_shared_dense_embedding_of_two_inputs_is_the_files(tmp_path):
    """Two Dense layers embedding two inputs; both embeddings and their product, joined.

    The embedding's two calls fed one input quantizer, called twice, which
    the export took for a tensor fanned out to two quantizers: it gave the
    first Dense's output a range of its own and hid its kernel from the
    rewrite (the converter's re-rounded kernel and bias stayed in the
    file); and a Concatenate joining both calls of the second Dense counted
    as two, which left that Dense float in the file (3 steps off here; a
    model of this shape: 0.82 top-1 agreement, 11 steps).
    """
    keras.utils.set_random_seed(0)
    features = keras.Input((6,))
    x = L.Dense(16, activation="relu", name="hidden")(features)
    embed = keras.Model(features, L.Dense(8, name="embedding")(x), name="embed")
    left, right = keras.Input((6,), name="left"), keras.Input((6,), name="right")
    a, b = embed(left), embed(right)
    joined = L.Concatenate(name="cat")([a, b, L.Multiply(name="product")([a, b])])
    model = keras.Model([left, right], L.Dense(10, name="logits")(joined))
    rng = np.random.default_rng(0)
    data = {name: rng.normal(size=(512, 6)).astype("f4") for name in ("left", "right")}
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(True))
    labels = rng.integers(0, 10, 512)
    model.fit(data, labels, epochs=2, verbose=0)
    config = {name: {} for name in ("hidden", "embedding", "logits")}
    calibration = {name: x[:128] for name, x in data.items()}
    qat = keras_qat.apply_retrain_config(model, config, calibration)
    qat.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(True))
    qat.fit(data, labels, epochs=1, verbose=0)
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", calibration)
    report = keras_qat.check_tflite(qat, path, data, measure="steps")
    assert report["outputs"]["logits"]["max_error_steps"] < 0.01, report


def test_a_global_average_and_a_global_max_pooling_joined_are_the_files(digits, tmp_path):
    """Concat pooling: a global average and a global max pooling of one feature map, joined.

    The converter writes the feature map on the concatenation's scale, which
    the max pooling keeps, and the MEAN requantizes its average from there;
    the QAT model averaged the feature map unrounded (a small CNN: a step
    off on ties). A `ReaderGridLayer` now rounds it on that grid (its lender
    found behind the max pooling) and the quantizer after the concatenation
    computes the MEAN of it.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = L.Conv2D(16, 3, activation="relu", name="features")(x)
    pooled = [L.GlobalAveragePooling2D(name="average")(x), L.GlobalMaxPooling2D(name="max")(x)]
    joined = L.Concatenate(name="pooled")(pooled)
    assert_trained_logits_exact(
        keras.Model(inputs, L.Dense(10, name="logits")(joined)), digits, tmp_path
    )


def build_convolution_steps():
    """One convolution applied three times in sequence; its last output to an Add and a pooling."""
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    step = L.Conv2D(8, 3, padding="same", activation="relu", name="step")
    x = step(step(step(x)))
    x = L.Add(name="add")([x, L.MaxPooling2D(1, name="keep")(x)])
    return keras.Model(inputs, L.Dense(10, name="logits")(L.GlobalAveragePooling2D()(x)))


def build_steps_through_a_relu_layer():
    """One linear convolution applied twice, a ReLU layer between; its last output pooled."""
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    step = L.Conv2D(8, 3, padding="same", name="step")
    x = step(L.ReLU(name="relu")(step(x)))
    return keras.Model(inputs, L.Dense(10, name="logits")(L.GlobalAveragePooling2D()(x)))


def build_dense_steps():
    """One Dense applied twice in sequence to the flattened image."""
    inputs = keras.Input((8, 8, 1), name="image")
    step = L.Dense(64, activation="relu", name="step")
    x = step(step(L.Flatten(name="flat")(inputs)))
    return keras.Model(inputs, L.Dense(10, name="logits")(x))


@pytest.mark.parametrize("recipe", ["INT8", "W4A4"])
@pytest.mark.parametrize(
    "build", [build_convolution_steps, build_steps_through_a_relu_layer, build_dense_steps]
)
def test_a_layer_applied_several_times_in_sequence_computes_each_calls_file_arithmetic(
    digits, tmp_path, build, recipe
):
    """A convolution or a Dense applied several times in sequence (weights tied across steps).

    Its input quantizer reads another layer's sums at the first call and
    its own at the next; the convolution's last output goes to a global
    pooling and an Add on a range of its own, which the other calls skip.
    The QAT model computed every call as the last one (a small CNN of this
    shape: 0.81-0.86 top-1 agreement, 3-5 steps off); the file kept one
    range for the calls (the Dense: 4-7 steps off). A call whose output a
    ReLU layer reads has that ReLU fused into its op, the other call not
    (2 steps off). The model reloaded computes the same.
    """
    keras.utils.set_random_seed(0)
    model = build()
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(digits[0], digits[1], epochs=3, batch_size=64, verbose=0)
    config = {layer.name: {} for layer in quantizable(model)}
    if recipe == "W4A4":
        config = int4_except_ends(model)
    qat = keras_qat.apply_retrain_config(model, config, digits[0][:256])
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", digits[0][:256])
    qat.save(tmp_path / "qat.keras")
    for computed in (qat, keras_qat.load_model(tmp_path / "qat.keras")):
        report = keras_qat.check_tflite(computed, path, digits[2], measure="steps")
        assert report["outputs"]["logits"]["max_error_steps"] < 0.01, report["outputs"]


def test_one_average_pooling_on_two_branches_computes_each_calls_file_arithmetic(digits, tmp_path):
    """One quantized AveragePooling2D on a ReLU convolution's output and a linear one's.

    Its input quantizer requantizes each call's input from another op's
    sums; it computed both as its last call (1 step off here).
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    pool = L.AveragePooling2D(name="pool")
    relu = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    linear = L.Conv2D(8, 3, padding="same", name="conv2")(inputs)
    x = L.Concatenate(name="cat")([pool(relu), pool(linear)])
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv3")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    assert_trained_logits_exact(
        keras.Model(inputs, L.Dense(10, name="logits")(x)), digits, tmp_path
    )


@pytest.mark.parametrize("recipe", ["INT8", "W4A4"])
def test_a_convolution_applied_to_a_feature_map_and_to_its_max_pooling_reads_one_grid(
    digits, tmp_path, recipe
):
    """One convolution applied to a feature map and to its max pooling, its outputs pooled.

    Its input quantizer reads the map directly at one call and behind the
    max pooling at the other: the QAT model writes the map on that
    quantizer's grid. The export gave the map the range observed on the
    representative data, and the converter dropped the quantizer on the
    direct read (a small CNN of this shape: 2 steps off, 12 at W4A4); it
    gives the map the quantizer's grid now.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    step = L.Conv2D(8, 3, padding="same", activation="relu", name="step")
    pooled = [
        L.GlobalAveragePooling2D(name="average")(step(x)),
        L.GlobalMaxPooling2D(name="max")(step(L.MaxPooling2D(name="pool")(x))),
    ]
    joined = L.Concatenate(name="pooled")(pooled)
    model = keras.Model(inputs, L.Dense(10, name="logits")(joined))
    assert_trained_logits_exact(model, digits, tmp_path, recipe)


def test_a_transformer_block_applied_twice_shares_its_projections_quantizers(digits, tmp_path):
    """An ALBERT-style encoder: one attention and feed-forward block, weights tied, applied twice.

    The query, key and value projections read each block's input, which the
    residual Add reads too. Called twice, they did not share a quantizer
    there: the export ranged the tensor from the representative data and
    the converter dropped their quantizers (0.97 top-1 agreement, 9 steps
    off). They share one at each call now, the same one at every call.
    INT8 only: at W4A4 the file's float LayerNormalization can differ from
    TensorFlow's by an ulp, enough to cross an INT4 tie here (2 of 38 000
    values; the same model trained one QAT epoch more is exact).
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8), name="rows")
    x = L.Dense(16, name="embed")(inputs)
    attention = L.MultiHeadAttention(2, 8, name="mha")
    grow, shrink = L.Dense(32, activation="relu", name="grow"), L.Dense(16, name="shrink")
    for block in range(2):
        x = L.Add(name=f"attended{block}")([x, attention(x, x)])
        x = L.LayerNormalization(name=f"norm{block}")(x)
        x = L.Add(name=f"fed{block}")([x, shrink(grow(x))])
        x = L.LayerNormalization(name=f"out{block}")(x)
    x = L.GlobalAveragePooling1D(name="pool")(x)
    assert_rows_logits_exact(keras.Model(inputs, L.Dense(10, name="logits")(x)), digits, tmp_path)


@pytest.mark.parametrize("recipe", ["INT8", "W4A4"])
@pytest.mark.parametrize("readers", ["two_dense", "one_dense", "convolution", "steps"])
def test_a_global_average_pooling_beside_a_quantized_reader_averages_the_files_levels(
    digits, tmp_path, readers, recipe
):
    """A feature map's global average pooling beside a global max pooling or a convolution.

    The poolings are read by a Dense each, or by one Dense called twice: the
    file writes the map on the grid of the quantizer after the max pooling,
    and its MEAN averages the levels there; the QAT model averaged the
    unrounded map (2 steps off, 14-27 at W4A4). A `ReaderGridLayer` rounds
    the map on that grid now, before both poolings; so for a map a
    convolution applied twice writes (`steps`: its first call's output goes
    to its own quantizer). Beside a convolution, the two read one quantizer
    after the map already.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="image")
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    if readers == "steps":
        step = L.Conv2D(8, 3, padding="same", activation="relu", name="step")
        x = step(step(x))
    average = L.GlobalAveragePooling2D(name="average")(x)
    if readers == "convolution":
        x = L.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    largest = L.GlobalMaxPooling2D(name="max")(x)
    if readers in ("one_dense", "steps"):
        dense = L.Dense(16, activation="relu", name="head")
        heads = [dense(average), dense(largest)]
    else:
        heads = [
            L.Dense(16, activation="relu", name=f"head{i}")(x)
            for i, x in enumerate([average, largest])
        ]
    x = L.Add(name="add")(heads)
    assert_trained_logits_exact(
        keras.Model(inputs, L.Dense(10, name="logits")(x)), digits, tmp_path, recipe
    )
