import numpy as np

import keras_qat
from keras_qat._keras import keras
from keras_qat.graph.shared_inputs import shared_input_readers
from keras_qat.quantizers import InputQuantizeLayer

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
    h = L.Concatenate(name="cat")([g, L.Dense(4, name="h")(g)])  # "g" joins a Concatenate
    i = L.Dense(4, name="i")(h)
    j = L.Dense(4, name="j")(i)  # "i" feeds "j" and "k", whose settings differ
    k = L.Dense(4, name="k")(i)
    model = keras.Model(inputs, [f, j, k])
    settings = dict.fromkeys("abdefghij", "INT8")
    settings["k"] = "INT4"
    # The model input feeds only "a"; were it shared, it is never called to
    # put a quantizer after.
    assert shared_input_readers(model, settings) == {"a": ("b",), "add": ("d", "e")}


def test_every_reader_of_a_shared_tensor_reads_the_quantizer_output():
    inputs = keras.Input((4,), name="x")
    a = L.Dense(4, name="a")(inputs)
    b = L.Dense(4, name="b")(a)
    model = keras.Model(inputs, L.Add(name="add")([a, b]))
    config = {"a": {}, "b": {}}
    qat = keras_qat.apply_retrain_config(model, config, np.random.randn(64, 4).astype("f4"))
    quantizer = qat.get_layer("b_input_quant")
    assert isinstance(quantizer, InputQuantizeLayer)
    # The Add reads the rounded tensor, as the .tflite's int8 ADD does.
    add_inputs = [t.node.layer.name for t in qat.get_layer("add").input]
    assert add_inputs == ["b_input_quant", "b"]
    probe = keras.Model(qat.inputs, [quantizer.output, qat.get_layer("add").input[0]])
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
