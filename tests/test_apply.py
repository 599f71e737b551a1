"""apply_retrain_config end to end on real small data (scikit-learn's digits)."""

import numpy as np
import pytest
import reference
import tensorflow as tf
from conftest import LOSS, assert_same_weights

import keras_qat
from keras_qat._keras import keras
from keras_qat.calibration.ifmr import ifmr_clip_range
from keras_qat.graph.walker import GraphRebuilder
from keras_qat.quantizers import InputQuantizeLayer

L = keras.layers


def full_config(model, **top):
    return {**top, **{n: {} for n in ("conv1", "dwconv2", "pwconv2", "pool2", "logits")}}


def test_qat_accuracy_within_one_point_of_float(trained, digits):
    x, y, x_test, y_test = digits
    before = [w.copy() for w in trained.get_weights()]
    qat = keras_qat.apply_retrain_config(trained, full_config(trained, batch_num=2), x[:256])
    assert_same_weights(before, trained.get_weights())
    qat.compile(keras.optimizers.Adam(2e-4), LOSS, metrics=["accuracy"])
    qat.fit(x, y, epochs=2, batch_size=64, verbose=0)
    float_accuracy = trained.evaluate(x_test, y_test, verbose=0)[1]
    qat_accuracy = qat.evaluate(x_test, y_test, verbose=0)[1]
    assert qat_accuracy >= float_accuracy - 0.01, (qat_accuracy, float_accuracy)
    assert_same_weights(before, trained.get_weights())


def test_structure_bn_folded_and_names(trained, digits):
    qat = keras_qat.apply_retrain_config(trained, full_config(trained), digits[0][:64])
    names = [layer.name for layer in qat.layers]
    assert "conv1_bn" not in names
    assert len(names) == len(set(names))
    quantizers = [layer for layer in qat.layers if isinstance(layer, InputQuantizeLayer)]
    assert [q.target for q in quantizers] == ["conv1", "dwconv2", "pwconv2", "pool2", "logits"]
    report = keras_qat.quant_report(qat)
    assert report["conv1"]["fixed_min"] is False  # model input
    assert report["dwconv2"]["fixed_min"] is True  # after conv1_relu
    assert report["pool2"]["clip_min"] == 0.0 and "weight_algo" not in report["pool2"]
    assert report["logits"]["channel_wise"] is False
    assert report["conv1"]["weight_scale_min"] > 0


def test_bn_folded_float_copy_equals_original(trained, digits):
    config = keras_qat.read_retrain_config(full_config(trained), trained)
    fixed_min = dict.fromkeys(config.layers, False)
    folded = GraphRebuilder(trained, config, fixed_min, quantize=False).build()
    assert not any(isinstance(layer, L.BatchNormalization) for layer in folded.layers)
    x = digits[2]
    np.testing.assert_allclose(folded(x), trained(x, training=False), atol=1e-4)


def test_ifmr_initialises_from_layer_inputs(trained, digits):
    x = digits[0][:100]
    qat = keras_qat.apply_retrain_config(trained, full_config(trained, batch_num=1), x)
    relu_out = keras.Model(trained.inputs, trained.get_layer("conv1_relu").output)(x).numpy()
    report = keras_qat.quant_report(qat)
    expected = ifmr_clip_range(relu_out, 8, fixed_min=True)
    assert report["dwconv2"]["clip_max"] == pytest.approx(expected[0], rel=1e-5)
    assert expected == pytest.approx(reference.ifmr(relu_out, 8, True))
    assert report["conv1"]["clip_max"] == pytest.approx(ifmr_clip_range(x, 8)[0], rel=1e-5)


def test_given_clip_bounds_are_fixed_and_need_no_data(trained):
    config = {
        "conv1": {"retrain_data_config": {"clip_max": 1.0, "clip_min": -0.5}},
        "logits": {"retrain_data_config": {"clip_max": 4.0}},
    }
    qat = keras_qat.apply_retrain_config(trained, config)
    report = keras_qat.quant_report(qat)
    assert (report["conv1"]["clip_max"], report["conv1"]["clip_min"]) == (1.0, -0.5)
    assert report["logits"]["fixed_min"] is True
    quantizers = [layer for layer in qat.layers if isinstance(layer, InputQuantizeLayer)]
    assert all(not q.trainable_weights for q in quantizers)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (None, "calibration_data is needed"),
        (np.full((8, 8, 8, 1), np.nan, np.float32), "contains NaN or Inf"),
        (np.zeros((8, 8, 8), np.float32), r"expects shape \(None, 8, 8, 1\)"),
        (np.zeros((1, 8, 8, 1), np.float32), "fewer than batch_num=2"),
        (iter([np.zeros((4, 8, 8, 1), np.float32)]), r"yielded 1 batch\(es\), fewer than"),
    ],
    ids=["none", "nan", "shape", "array-too-small", "generator-too-short"],
)
def test_calibration_data_errors(trained, data, message):
    before = [w.copy() for w in trained.get_weights()]
    with pytest.raises(ValueError, match=message):
        keras_qat.apply_retrain_config(trained, full_config(trained, batch_num=2), data)
    assert_same_weights(before, trained.get_weights())


def test_dataset_and_generator_of_x_y(trained, digits):
    x, y = digits[0][:128], digits[1][:128]
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    from_dataset = keras_qat.quant_report(
        keras_qat.apply_retrain_config(trained, full_config(trained, batch_num=4), dataset)
    )
    generator = ((x[i : i + 32], y[i : i + 32]) for i in range(0, 128, 32))
    from_generator = keras_qat.quant_report(
        keras_qat.apply_retrain_config(trained, full_config(trained, batch_num=4), generator)
    )
    assert from_dataset == from_generator


def test_single_input_data_forms_and_a_read_config(trained, digits):
    x = digits[0][:64]
    config = full_config(trained, batch_num=2)
    expected = keras_qat.quant_report(keras_qat.apply_retrain_config(trained, config, x))
    retrain = keras_qat.read_retrain_config(config, trained)
    for data in ([x], (x,), tf.constant(x)):
        got = keras_qat.apply_retrain_config(trained, retrain, data)
        assert keras_qat.quant_report(got) == expected


def test_generator_of_python_rows_for_one_input():
    inputs = keras.Input((3,), name="x")
    model = keras.Model(inputs, L.Dense(2, name="out")(inputs))
    rows = ([[0.1 * i, 0.2, -0.3] for i in range(4)] for _ in range(2))
    qat = keras_qat.apply_retrain_config(model, {"batch_num": 2, "out": {}}, rows)
    assert keras_qat.quant_report(qat)["out"]["clip_max"] > 0


def test_float64_data_overflowing_float32_is_caught(trained):
    beyond = np.full((8, 8, 8, 1), 1e39)  # finite in float64, inf in the model's float32
    with pytest.raises(keras_qat.DataError, match="input 'image' contains NaN or Inf"):
        keras_qat.apply_retrain_config(trained, full_config(trained), beyond)
    inputs = keras.Input((4,), name="x")
    hidden = L.Dense(4, kernel_initializer="ones", name="hidden")(inputs)
    model = keras.Model(inputs, L.Dense(2, name="out")(hidden))
    data = np.full((8, 4), 1e38)  # finite in float32; the hidden layer's sums overflow it
    with pytest.raises(keras_qat.DataError, match="input of layer 'out' holds NaN or Inf"):
        keras_qat.apply_retrain_config(model, {"hidden": {}, "out": {}}, data)


def test_nested_shared_multi_io(tmp_path):
    keras.utils.set_random_seed(1)
    block_in = keras.Input((6,))
    block = keras.Model(block_in, L.Dense(6, activation="relu", name="inner")(block_in), name="blk")
    a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    shared = L.Dense(4, name="shared")
    out1 = shared(block(a))
    out2 = L.Dense(2, name="head")(shared(b))
    model = keras.Model([a, b], [out1, out2])
    config = {"inner": {}, "shared": {}, "head": {}}
    data = [np.random.default_rng(2).normal(size=(32, 6)).astype(np.float32) for _ in range(2)]
    qat = keras_qat.apply_retrain_config(model, config, data)
    quant_layers = [layer for layer in qat.layers if isinstance(layer, InputQuantizeLayer)]
    assert sorted(q.target for q in quant_layers) == ["head", "inner", "shared"]
    expected = model.predict(data, verbose=0)
    for got, want in zip(qat.predict(data, verbose=0), expected, strict=True):
        np.testing.assert_allclose(got, want, atol=0.1)
    report = keras_qat.quant_report(qat)
    assert report["shared"]["fixed_min"] is False  # one call site takes raw input b


def test_inserted_names_never_collide():
    inputs = keras.Input((4,))
    x = L.Dense(4, name="d")(inputs)
    x = L.Activation("linear", name="d_input_quant")(x)
    x = L.Dense(4, name="d_quant")(x)
    model = keras.Model(inputs, L.Dense(2, name="d_input_quant_1")(x))
    config = {"d": {"retrain_data_config": {"clip_max": 1.0, "clip_min": -1.0}}}
    names = [layer.name for layer in keras_qat.apply_retrain_config(model, config).layers]
    assert len(names) == len(set(names))


def test_outputs_keep_their_names():
    inputs = keras.Input((4,))
    hidden = L.Dense(8, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, [L.Dense(2, name="box")(hidden), L.Dense(3, name="label")(hidden)])
    data = np.random.default_rng(0).normal(size=(32, 4)).astype(np.float32)
    qat = keras_qat.apply_retrain_config(model, {"hidden": {}, "box": {}, "label": {}}, data)
    assert qat.output_names == ["box", "label"]
    assert {layer.name for layer in model.layers} <= {layer.name for layer in qat.layers}
    # A loss dict written for the float model works unchanged.
    qat.compile("adam", loss={"box": "mse", "label": keras.losses.CategoricalCrossentropy()})
    qat.fit(data, {"box": data[:, :2], "label": np.eye(3)[np.arange(32) % 3]}, verbose=0)


@pytest.mark.parametrize("suffix", [".keras", pytest.param(".h5", marks=pytest.mark.slow)])
def test_save_load_and_resume(trained, digits, tmp_path, suffix):
    x, y = digits[0][:256], digits[1][:256]
    qat = keras_qat.apply_retrain_config(trained, full_config(trained), x[:64])
    qat.compile(keras.optimizers.Adam(2e-4), LOSS)
    qat.fit(x, y, epochs=1, verbose=0)
    qat.save(tmp_path / f"qat{suffix}")
    with keras_qat.quantize_scope():
        loaded = keras.models.load_model(tmp_path / f"qat{suffix}")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))
    assert keras_qat.quant_report(loaded) == keras_qat.quant_report(qat)
    loaded.fit(x, y, epochs=1, verbose=0)  # training continues from the restored state


def test_fit_with_validation_checkpoint_and_resume(trained, digits, tmp_path):
    x, y, x_val, y_val = digits
    config = full_config(trained)
    qat = keras_qat.apply_retrain_config(trained, config, x[:64])
    qat.compile(keras.optimizers.Adam(2e-4), LOSS, metrics=["accuracy"])
    checkpoint = str(tmp_path / "ckpt")
    history = qat.fit(
        x[:512], y[:512], epochs=2, verbose=0, validation_data=(x_val, y_val),
        callbacks=[keras.callbacks.ModelCheckpoint(checkpoint, save_weights_only=True)],
    )  # fmt: skip
    assert "val_accuracy" in history.history
    resumed = keras_qat.apply_retrain_config(trained, config, x[:64])
    resumed.load_weights(checkpoint).expect_partial()  # the optimizer state is not restored
    np.testing.assert_array_equal(resumed.predict(x_val, verbose=0), qat.predict(x_val, verbose=0))


def test_unknown_layers_pass_through_and_subclassed_models_are_refused():
    class Scale(L.Layer):
        def call(self, inputs):
            return inputs * 2.0

    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2, name="d")(Scale(name="scale")(inputs)))
    config = {"d": {"retrain_data_config": {"clip_max": 8.0, "clip_min": -8.0}}}
    qat = keras_qat.apply_retrain_config(model, config)
    x = np.ones((1, 4), np.float32)
    np.testing.assert_allclose(qat(x), model(x), atol=0.1)

    class Net(keras.Model):
        def call(self, inputs):
            return inputs

    with pytest.raises(keras_qat.UnsupportedModelError, match="subclassed"):
        keras_qat.apply_retrain_config(Net(), {})


def test_an_activation_function_of_the_users_own_gets_a_clear_error():
    """A Dense whose activation is a function of the user's own (its config a dict).

    The walker's activation checks raised a bare TypeError (unhashable dict);
    now the copy of the layer names it, as for a custom layer.
    """

    def halved_relu(x):
        return tf.nn.relu(x) * 0.5

    inputs = keras.Input((4,))
    hidden = L.Dense(4, activation=halved_relu, name="hidden")(inputs)
    model = keras.Model(inputs, L.Dense(2, activation=halved_relu, name="head")(hidden))
    config = {name: {"retrain_data_config": {"clip_max": 4.0, "clip_min": -4.0}}
              for name in ("hidden", "head")}  # fmt: skip
    with pytest.raises(
        keras_qat.UnsupportedModelError, match=r"Layer 'hidden' .* cannot be copied"
    ):
        keras_qat.apply_retrain_config(model, config)


def test_unbuilt_sequential_gets_a_clear_error():
    model = keras.Sequential([L.Dense(4, name="d1"), L.Dense(2, name="d2")])
    with pytest.raises(keras_qat.UnsupportedModelError, match=r"tf_keras.Input\(shape\)"):
        keras_qat.apply_retrain_config(model, {"d1": {}}, np.zeros((4, 3), np.float32))
    model.build((None, 3))
    qat = keras_qat.apply_retrain_config(model, {"d1": {}}, np.zeros((4, 3), np.float32))
    assert qat.output_shape == (None, 2)


def test_explicit_clip_min_wins_over_the_graph(trained):
    # dwconv2's input comes out of a ReLU, so the graph alone would pin it at 0.
    config = {"dwconv2": {"retrain_data_config": {"clip_max": 4.0, "clip_min": -0.5}}}
    report = keras_qat.quant_report(keras_qat.apply_retrain_config(trained, config))
    assert report["dwconv2"]["fixed_min"] is False
    assert (report["dwconv2"]["clip_min"], report["dwconv2"]["clip_max"]) == (-0.5, 4.0)


def test_quantization_aware_models_are_refused(tmp_path):
    from keras_qat._keras import tfmot

    inputs = keras.Input((4,))
    model = keras.Model(inputs, L.Dense(2, name="d")(L.Dense(3, name="h")(inputs)))
    qat = keras_qat.apply_retrain_config(model, {"h": {}, "d": {}}, np.ones((4, 4), np.float32))
    already = r"already quantization-aware .* Received: quantization layers \['h_input_quant', 'h'"
    with pytest.raises(keras_qat.UnsupportedModelError, match=already):
        keras_qat.apply_retrain_config(qat, {"h": {}, "d": {}})
    with pytest.raises(keras_qat.UnsupportedModelError, match=already):
        keras_qat.create_quant_retrain_config(str(tmp_path / "c.json"), qat)
    assert not (tmp_path / "c.json").exists()
    tfmot_model = tfmot.quantization.keras.quantize_model(model)
    with pytest.raises(keras_qat.UnsupportedModelError, match="already quantization-aware"):
        keras_qat.apply_retrain_config(tfmot_model, {"d": {}})
