"""Export and check never pass silently: every sample and output counted, broken models refused."""

import numpy as np
import pytest

import keras_qat
from keras_qat._keras import keras
from keras_qat.demo import build_demo_model
from keras_qat.quantizers.introspection import quantized_layers

L = keras.layers


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """A box regression output first, then a two-class face score; exported."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,), name="x")
    hidden = L.Dense(32, activation="relu", name="hidden")(inputs)
    outputs = [L.Dense(4, name="boxes")(hidden), L.Dense(2, name="face")(hidden)]
    model = keras.Model(inputs, outputs)
    data = np.random.default_rng(1).normal(size=(2400, 16)).astype(np.float32)
    qat = keras_qat.apply_retrain_config(model, {"hidden": {}, "boxes": {}, "face": {}}, data)
    path = tmp_path_factory.mktemp("detector") / "m.tflite"
    keras_qat.export_tflite(qat, path, data)
    return qat, path, data


def test_check_compares_every_sample_given(detector):
    qat, path, data = detector
    assert keras_qat.check_tflite(qat, path, data)["samples"] == 2400  # was 512


def test_check_reports_each_output_with_its_measure(detector):
    qat, path, data = detector
    result = keras_qat.check_tflite(qat, path, data, decisive_output="face")
    assert set(result["outputs"]) == {"boxes", "face"}
    assert result["decisive_output"] == "face" and result["measure"] == "top1"
    assert result["agreement"] == result["outputs"]["face"]["top1_agreement"]
    for output in result["outputs"].values():
        assert output["step"] > 0  # the file's int8 step of the output
        assert output["max_error_steps"] == pytest.approx(output["max_abs_error"] / output["step"])
        assert 0.9 <= output["within_one_step"] <= 1.0, result
    boxes = keras_qat.check_tflite(qat, path, data, decisive_output="boxes", measure="steps")
    assert boxes["agreement"] == boxes["outputs"]["boxes"]["within_one_step"]


def test_check_refuses_unknown_output_or_measure(detector):
    qat, path, data = detector
    with pytest.raises(keras_qat.DataError, match=r"outputs \['boxes', 'face'\]"):
        keras_qat.check_tflite(qat, path, data, decisive_output="score")
    with pytest.raises(keras_qat.DataError, match="measure must be one of"):
        keras_qat.check_tflite(qat, path, data, measure="mse")


def test_float_model_is_refused_everywhere(tmp_path):
    model = build_demo_model()
    for call in (
        lambda: keras_qat.export_tflite(model, tmp_path / "m.tflite"),
        lambda: keras_qat.export_saved_model(model, tmp_path / "saved"),
        lambda: keras_qat.quant_report(model),
        lambda: keras_qat.quant_record(model),
    ):
        with pytest.raises(keras_qat.UnsupportedModelError, match="holds no keras_qat quantizer"):
            call()
    assert list(tmp_path.iterdir()) == []


def _poison(qat, layer_name):
    inputs, _ = quantized_layers(qat)
    variables = inputs[layer_name].quantizer_vars
    variables["clip_max"].assign(np.nan)


def test_non_finite_clips_are_named_at_export(tmp_path):
    x = np.random.default_rng(0).random((16, 8, 8, 1)).astype(np.float32)
    qat = keras_qat.apply_retrain_config(build_demo_model(), {"conv1": {}, "logits": {}}, x)
    _poison(qat, "logits")
    assert np.isnan(keras_qat.quant_report(qat)["logits"]["clip_max"])  # shown as it is
    for call in (
        lambda: keras_qat.export_tflite(qat, tmp_path / "m.tflite", x),
        lambda: keras_qat.export_saved_model(qat, tmp_path / "saved"),
    ):
        with pytest.raises(keras_qat.UnsupportedModelError, match=r"layer\(s\) \['logits'\]"):
            call()
    assert list(tmp_path.iterdir()) == []


def test_callback_stops_training_at_the_first_non_finite_clip():
    x = np.random.default_rng(0).random((64, 8, 8, 1)).astype(np.float32)
    y = np.zeros(64, np.int64)
    qat = keras_qat.apply_retrain_config(build_demo_model(), {"conv1": {}, "logits": {}}, x)
    qat.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(True))
    batches = []

    class PoisonAtBatchTwo(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            batches.append(batch)
            if batch == 2:
                _poison(qat, "conv1")

    stop = keras_qat.StopOnNonFiniteClips()
    qat.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[PoisonAtBatchTwo(), stop])
    assert batches == [0, 1, 2] and stop.layers == ["conv1"]
    with pytest.raises(FloatingPointError, match=r"in layer\(s\) \['conv1'"):
        qat.fit(x, y, batch_size=8, verbose=0, callbacks=[keras_qat.StopOnNonFiniteClips(True)])


def test_file_that_fails_in_litert_is_an_export_error_and_not_written(tmp_path):
    import tensorflow as tf

    inputs = keras.Input((16,), name="x")
    # A float front end before the first quantizer, made int8 as int8_io asks:
    # LiteRT refuses an int8 DIV whose divisor rounds to the zero point.
    front = tf.math.log(inputs + 1.0) / (inputs + 1e-3)
    hidden = L.Dense(8, activation="relu", name="hidden")(front)
    model = keras.Model(inputs, L.Dense(3, name="out")(hidden))
    data = np.random.default_rng(0).uniform(0, 100, (256, 16)).astype(np.float32)
    qat = keras_qat.apply_retrain_config(model, {"hidden": {}, "out": {}}, data)
    with pytest.raises(keras_qat.ExportError, match=r"\(DIV\) failed to invoke"):
        keras_qat.export_tflite(qat, tmp_path / "m.tflite", data, int8_io=True)
    assert list(tmp_path.iterdir()) == []
    # Without int8_io the front end stays float, as in the QAT model, and runs.
    path = keras_qat.export_tflite(qat, tmp_path / "m.tflite", data)
    want, got = qat.predict(data, verbose=0), keras_qat.predict_tflite(path, data)
    assert np.mean(want.argmax(1) == got.argmax(1)) >= 0.99


def test_a_lookup_table_the_converter_refuses_is_named(tmp_path):
    """An `IntegerLookup` before an Embedding: its hash table is no TFLite builtin.

    Export converts one concrete function saved with the model's variables;
    a table is saved only by Keras's own SavedModel, and without it the
    converter's error named a `tf.Placeholder` instead of the table.
    """
    inputs = keras.Input((4,), dtype="int64", name="ids")
    ids = L.IntegerLookup(vocabulary=[3, 7, 11, 20, 42], name="lookup")(inputs)
    hidden = L.Dense(8, activation="relu", name="hidden")(
        L.Flatten()(L.Embedding(10, 4, name="embed")(ids))
    )
    model = keras.Model(inputs, L.Dense(3, name="out")(hidden))
    data = np.random.default_rng(0).choice([3, 7, 11, 20, 42, 5], (64, 4)).astype(np.int64)
    qat = keras_qat.apply_retrain_config(model, {"hidden": {}, "out": {}}, data)
    with pytest.raises(keras_qat.ExportError, match="HashTable"):
        keras_qat.export_tflite(qat, tmp_path / "m.tflite", data)
    assert list(tmp_path.iterdir()) == []
