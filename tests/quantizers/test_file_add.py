"""An Add of two int8 tensors computes, in inference, the file's fixed-point ADD."""

import numpy as np
import tensorflow as tf

import keras_qat
from keras_qat._keras import keras
from keras_qat.quantizers import FileAdd
from keras_qat.quantizers.tracked import TrackedRangeQuantizer
from tests import reference

L = keras.layers

# The input step; the sum's reader has twice it, the Dense's output half of it:
# sums fall on quarter steps of the reader, and half of them are ties.
STEP = np.float32(0.7) / np.float32(255)


def shortcut_model():
    """h + Dense(h): the Add reads the Dense's input quantizer and its tracked output."""
    inputs = keras.Input((1,), name="x")
    hidden = L.Dense(1, use_bias=False, name="stem")(inputs)
    scaled = L.Dense(1, use_bias=False, name="first")(hidden)
    total = L.Add(name="add")([hidden, scaled])
    model = keras.Model(inputs, L.Dense(1, use_bias=False, name="second")(total))
    for name, weight in (("stem", 1.0), ("first", 0.75), ("second", 1.0)):
        model.get_layer(name).set_weights([np.array([[weight]], "f4")])
    return model


def test_an_add_writes_the_files_fixed_point_sum_in_inference_and_adds_in_training(tmp_path):
    x = (np.arange(256, dtype="f4") * STEP)[:, None]  # every input level
    per_tensor = {"retrain_weight_config": {"channel_wise": False}}
    config = dict.fromkeys(("stem", "first", "second"), per_tensor)
    qat = keras_qat.apply_retrain_config(shortcut_model(), config, x)
    assert isinstance(qat.get_layer("add"), FileAdd)
    first_input, reader = qat.get_layer("first_input_quant"), qat.get_layer("second_input_quant")
    for quantizer in (qat.get_layer("stem_input_quant"), first_input):
        quantizer.quantizer.assign_clip_range(quantizer.quantizer_vars, 0.0, 255 * STEP)
    reader.quantizer.assign_clip_range(reader.quantizer_vars, 0.0, 2 * 255 * STEP)
    first = qat.get_layer("first")
    TrackedRangeQuantizer.assign_range(first._output_quantizer_vars, 0.0, 255 * STEP / 2)
    probe = keras.Model(qat.input, [first_input.output, first.output, reader.output])

    addend, scaled, got = probe.predict(x, verbose=0)
    step_a, step_b = first_input.grid()[0].numpy(), first.grid()[0].numpy()
    want = reference.xnnpack_add(
        np.round(addend / step_a), step_a, np.round(scaled / step_b), step_b,
        0.0, 2 * 255 * STEP, 8,
    )  # fmt: skip
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-7)
    # The file computes the same.
    path = keras_qat.export_tflite(qat, tmp_path / "add.tflite", x)
    np.testing.assert_allclose(
        keras_qat.predict_tflite(path, x), qat.predict(x, verbose=0), rtol=0, atol=1e-6
    )
    # Training adds in float; the reader's fake-quant rounds the sum.
    addend, scaled, trained = probe(x, training=True)
    total = addend.numpy().astype("f8") + scaled.numpy()
    np.testing.assert_allclose(trained, reference.ulq(total, 0.0, 2 * 255 * STEP, 8), atol=1e-6)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(probe(x, training=True)[2])
    grads = tape.gradient(loss, [first.trainable_weights[0], *reader.trainable_weights])
    assert all(g is not None and np.all(np.isfinite(g.numpy())) for g in grads)
