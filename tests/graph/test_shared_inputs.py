import numpy as np

import keras_qat
from keras_qat._keras import keras
from keras_qat.graph.shared_inputs import returned_on_grid, shared_input_readers
from keras_qat.quantizers import InputQuantizeLayer
from tests import reference

L = keras.layers


def test_the_one_quantized_reader_among_several_is_planned():
    inputs = keras.Input((4,), name="x")
    a = L.Dense(4, name="a")(inputs)  # read by "b" (quantized) and by the Add
    b = L.Dense(4, name="b")(a)
    c = L.Add(name="add")([a, b])  # read by "d" and "e", both quantized alike
    d = L.Dense(4, name="d")(c)
    e = L.Dense(4, name="e")(c)
    f = L.Dense(4, name="f")(L.Add(name="add2")([d, e]))  # read by "g" and as a model output
    g = L.Dense(4, name="g")(f)
    h = L.Concatenate(name="cat")([g, L.Dense(4, name="h")(g)])  # "g" joins a Concatenate too
    i = L.Dense(4, name="i")(h)
    j = L.Dense(4, name="j")(i)  # "i" feeds "j" and "k", whose widths differ
    k = L.Dense(4, name="k")(i)
    m = L.Dense(4, name="m")(j)  # "j" feeds "l" and "m", whose settings differ at one width
    l_ = L.Dense(4, name="l")(j)
    model = keras.Model(inputs, [f, k, l_, m])
    settings = dict.fromkeys("abdefghijl", "INT8")
    settings["k"] = "INT4"
    settings["m"] = "INT8, fixed"
    bits = {name: 4 if value == "INT4" else 8 for name, value in settings.items()}
    # The model input feeds only "a"; were it shared, it is never called to
    # put a quantizer after. "g" is held on "h"'s grid, which the file
    # requantizes for the Concatenate; "i" is held on its INT8 reader's grid,
    # "j" on its first reader's, which the file requantizes for the other.
    assert shared_input_readers(model, settings, bits) == {
        "a": ("b",),
        "add": ("d", "e"),
        "g": ("h",),
        "i": ("j",),
        "j": ("m",),
    }


def test_quantized_readers_behind_pads_share_one_quantizer_before_them():
    inputs = keras.Input((8, 8, 1), name="x")
    relu = L.ReLU(name="relu")(L.Conv2D(4, 3, name="conv")(inputs))
    # NASNet's strided separable convolutions, each behind its own padding,
    # or two behind one.
    a = L.SeparableConv2D(4, 3, strides=2, name="a")(L.ZeroPadding2D(1, name="pad1")(relu))
    padded = L.ZeroPadding2D(2, name="pad2")(relu)
    b = L.SeparableConv2D(4, 5, strides=2, name="b")(padded)
    b = L.Add(name="add_b")([b, L.SeparableConv2D(4, 5, strides=2, name="f")(padded)])
    # One quantized reader behind a pooling, beside a layer that is not one:
    # the file holds "c" on "d"'s grid, and requantizes it for the Add.
    c = L.Conv2D(4, 1, name="c")(L.Conv2D(4, 1, name="e")(inputs))
    d = L.Conv2D(4, 2, name="d")(L.MaxPooling2D(name="pool")(c))
    model = keras.Model(inputs, [L.Add(name="add")([a, b]), d, L.Add(name="add2")([c, c])])
    settings = dict.fromkeys(["conv", "a", "b", "c", "d", "e", "f"], "INT8")
    bits = dict.fromkeys(settings, 8)
    assert shared_input_readers(model, settings, bits) == {
        "x": ("e", "conv"),
        "relu": ("a", "b", "f"),
    }


def test_a_returned_output_counts_as_a_reader_where_the_file_holds_it_int8():
    # Each output below is returned and read by quantized Dense layers. The
    # file holds a global pooling of a quantized layer's output as int8, on
    # its reader's grid: the model returns the reader's quantizer output. It
    # returns in float what the file computes in float: a Dense left float,
    # a selu, and what comes before the first quantizer (here read by two).
    inputs = keras.Input((6, 6, 2), name="x")
    front = L.Flatten(name="front")(L.Rescaling(0.5, name="scale")(inputs))
    pooled = L.GlobalAveragePooling2D(name="pooled")(L.Conv2D(4, 1, name="conv")(inputs))
    other = L.GlobalAveragePooling2D(name="other")(L.Conv2D(4, 1, name="conv2")(inputs))
    left_float = L.Dense(4, name="left_float")(other)
    selu = L.Activation("selu", name="selu")(L.Dense(4, name="pre")(other))
    returned = [front, pooled, left_float, selu]
    heads = [L.Dense(2, name=f"head_{i}")(t) for i, t in enumerate([*returned, front])]
    model = keras.Model(inputs, returned + heads)
    quantized = ["conv", "conv2", "pre", *(f"head_{i}" for i in range(5))]
    settings = dict.fromkeys(quantized, "INT8")
    planned = shared_input_readers(model, settings, dict.fromkeys(quantized, 8))
    # The model input and `other` are read by quantized and other layers, as any tensor.
    assert planned == {
        "x": ("conv", "conv2"),
        "front": ("head_4", "head_0"),
        "other": ("pre",),
        "pooled": ("head_1",),
    }
    assert returned_on_grid(model, settings, planned) == {"pooled"}


def test_a_narrower_reader_rounds_the_wider_readers_grid_again():
    # AMCT's INT4 recipe keeps average poolings INT8: beside an INT4
    # convolution on the same tensor, the file holds the tensor on the
    # pooling's grid and requantizes it for the convolution.
    inputs = keras.Input((6, 6, 2), name="x")
    a = L.Conv2D(4, 1, activation="relu", name="a")(inputs)
    pooled = L.AveragePooling2D(name="pool")(a)
    conv = L.GlobalAveragePooling2D(name="gap")(L.Conv2D(4, 1, name="b")(a))
    model = keras.Model(inputs, [L.Flatten(name="flat")(pooled), conv])
    config = {
        "a": {},
        "pool": {},
        "b": {
            "retrain_data_config": {"dst_type": "INT4"},
            "retrain_weight_config": {"dst_type": "INT4"},
        },
    }
    x = np.random.default_rng(0).random((16, 6, 6, 2)).astype("f4")
    qat = keras_qat.apply_retrain_config(model, config, x)
    wide, narrow = qat.get_layer("pool_input_quant"), qat.get_layer("b_input_quant")
    assert functional_source(narrow) == "pool_input_quant"
    assert functional_source(qat.get_layer("pool")) == "pool_input_quant"
    assert narrow.grid_sources == [wide]
    probe = keras.Model(qat.inputs, [wide.output, narrow.output])
    rounded, again = probe.predict(x, verbose=0)
    # ... as the file's int8-to-int8 QUANTIZE computes it.
    low, high = (float(v) for v in wide.quantizer.bounds(wide.quantizer_vars))
    in_scale = (np.float32(high) - np.float32(low)) / np.float32(255)
    levels = np.round(rounded / in_scale).astype(int)
    low, high = (float(v) for v in narrow.quantizer.bounds(narrow.quantizer_vars))
    want = reference.file_requantize(levels, in_scale, low, high, 4)
    np.testing.assert_allclose(again, want, atol=1e-6)


def test_every_reader_of_a_shared_tensor_reads_the_quantizer_output():
    inputs = keras.Input((4,), name="x")
    a = L.Dense(4, name="a")(inputs)
    b = L.Dense(4, name="b")(a)
    model = keras.Model(inputs, L.Add(name="add")([a, b]))
    config = {"a": {}, "b": {}}
    qat = keras_qat.apply_retrain_config(model, config, np.random.randn(64, 4).astype("f4"))
    quantizer = qat.get_layer("b_input_quant")
    assert isinstance(quantizer, InputQuantizeLayer)
    # The Add reads the rounded tensor, as the .tflite's int8 ADD does. (The
    # model output, its rounded sum, keeps the name "add".)
    add_inputs = [t.node.layer.name for t in qat.get_layer("add_op").input]
    assert add_inputs == ["b_input_quant", "b"]
    probe = keras.Model(qat.inputs, [quantizer.output, qat.get_layer("add_op").input[0]])
    rounded, read = probe.predict(np.random.randn(8, 4).astype("f4"), verbose=0)
    np.testing.assert_array_equal(rounded, read)


def test_quantized_readers_of_one_tensor_share_its_quantizer():
    inputs = keras.Input((4,), name="x")
    a = L.Dense(4, name="a")(inputs)
    model = keras.Model(
        inputs, L.Add(name="add")([L.Dense(4, name="b")(a), L.Dense(4, name="c")(a)])
    )
    qat = keras_qat.apply_retrain_config(model, {"a": {}, "b": {}, "c": {}}, np.ones((8, 4), "f4"))
    quantizer = qat.get_layer("b_input_quant")
    assert quantizer.targets == ("b", "c")
    assert [layer.name for layer in qat.layers if isinstance(layer, InputQuantizeLayer)] == [
        "a_input_quant",
        "b_input_quant",
    ]
    report = keras_qat.quant_report(qat)
    assert report["b"]["clip_max"] == report["c"]["clip_max"]


def functional_source(layer):
    """The name of the layer whose output `layer` reads."""
    return layer.input.node.layer.name
