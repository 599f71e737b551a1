import numpy as np
import pytest
import reference
import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.quantizers import UlqWeightQuantizer
from keras_qat.quantizers.ulq_weight import ulq_weight_fake_quant

BITS = [pytest.param(8, id="INT8"), pytest.param(4, id="INT4")]


@pytest.mark.parametrize("bits", BITS)
def test_edge_table(bits):
    qmax = 2 ** (bits - 1) - 1
    s = 1 / 64
    w = np.array([0, 0.5, -0.5, 2.5, -2.5, qmax, qmax + 0.4, qmax + 3, -qmax - 3], np.float32) * s
    expected = np.array([0, 1, 0, 3, -2, qmax, qmax, qmax, -qmax], np.float32) * s
    got = ulq_weight_fake_quant(tf.constant(w), tf.constant(s), bits).numpy()
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(reference.ulq_weight(w, s, bits), expected)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("channel_wise", [True, False], ids=["per-channel", "per-tensor"])
def test_lsq_gradients_match_the_reference(bits, channel_wise):
    rng = np.random.default_rng(4)
    w = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    scale = np.array([0.01, 0.02, 0.05, 0.1], np.float32) if channel_wise else np.float32(0.03)
    dy = rng.normal(size=w.shape).astype(np.float32)
    w_t, s_t = tf.constant(w), tf.Variable(scale)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(w_t)
        loss = tf.reduce_sum(ulq_weight_fake_quant(w_t, s_t, bits) * dy)
    ref_dw, ref_ds = reference.ulq_weight_gradients(w, dy, scale, bits, channel_wise)
    np.testing.assert_array_equal(tape.gradient(loss, w_t).numpy(), ref_dw)
    np.testing.assert_allclose(tape.gradient(loss, s_t).numpy(), ref_ds, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layout", ["last", "depthwise", "transpose"])
def test_initialize_by_the_arq_rule(layout):
    layer = keras.layers.Layer()
    kernel = tf.Variable(np.random.default_rng(5).normal(size=(3, 3, 2, 3)).astype(np.float32))
    q = UlqWeightQuantizer("INT8", channel_wise=True, kernel_layout=layout)
    weights = q.build(kernel.shape, "k", layer)
    q.initialize(weights, kernel)
    expected = reference.arq(kernel.numpy(), 8, True, layout)
    np.testing.assert_allclose(q(kernel, True, weights).numpy(), expected, atol=1e-6)
    channels = {"last": 3, "depthwise": 6, "transpose": 2}[layout]
    assert weights["scale"].shape == (channels,)
    assert UlqWeightQuantizer.from_config(q.get_config()) == q
