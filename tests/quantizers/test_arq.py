import numpy as np
import pytest
import reference
import tensorflow as tf

from keras_qat.quantizers import ArqQuantizer
from keras_qat.quantizers.arq import arq_fake_quant

BITS = [pytest.param(8, id="INT8"), pytest.param(4, id="INT4")]


def run(kernel, bits, channel_wise, layout="last"):
    return arq_fake_quant(tf.constant(kernel, tf.float32), bits, channel_wise, layout).numpy()


@pytest.mark.parametrize("bits", BITS)
def test_edge_table_per_tensor(bits):
    qmax = 2 ** (bits - 1) - 1
    step = 1 / 64  # max|w| = qmax * step makes every tie exact in float32
    w = np.array([qmax, -qmax, 0, 2.5, -2.5, 0.5, -0.5, 1.49, qmax - 0.5], np.float32) * step
    expected = np.array([qmax, -qmax, 0, 3, -2, 1, 0, 1, qmax], np.float32) * step
    np.testing.assert_array_equal(run(w, bits, False), expected)
    np.testing.assert_array_equal(reference.arq(w, bits, False), expected)


@pytest.mark.parametrize("bits", BITS)
def test_every_integer_is_a_fixed_point(bits):
    qmax = 2 ** (bits - 1) - 1
    w = np.arange(-qmax, qmax + 1, dtype=np.float32) / 32
    np.testing.assert_array_equal(run(w, bits, False), w)


@pytest.mark.parametrize("bits", BITS)
def test_per_channel_with_an_all_zero_channel(bits):
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    w[..., 2] = 0.0
    w[..., 3] *= 100  # a channel far larger than the rest keeps its own scale
    got = run(w, bits, True)
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got[..., 2], 0.0)
    np.testing.assert_allclose(got, reference.arq(w, bits, True), rtol=0, atol=1e-6 * 100)
    qmax = 2 ** (bits - 1) - 1
    for c in (0, 1, 3):  # each channel lands on its own grid
        scale = np.abs(w[..., c]).max() / qmax
        np.testing.assert_allclose(got[..., c] / scale, np.round(got[..., c] / scale), atol=1e-3)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("layout", ["depthwise", "transpose"])
def test_channel_layouts(bits, layout):
    rng = np.random.default_rng(1)
    # Give every channel of the layout a different magnitude so a wrong axis shows.
    w = rng.normal(size=(3, 3, 2, 3)).astype(np.float32)
    w *= np.arange(1, 7, dtype=np.float32).reshape(1, 1, 2, 3)
    expected = reference.arq(w, bits, True, layout)
    np.testing.assert_allclose(run(w, bits, True, layout), expected, atol=1e-5)
    wrong = reference.arq(w, bits, True, "last")
    assert not np.allclose(expected, wrong, atol=1e-5)


def test_straight_through_gradient_and_no_scale_gradient():
    w = tf.Variable(np.array([[0.3, -1.0], [0.05, 0.5]], np.float32))
    with tf.GradientTape() as tape:
        y = arq_fake_quant(w, 8, True, "last")
        loss = tf.reduce_sum(y * tf.constant([[1.0, 2.0], [3.0, 4.0]]))
    # Every weight is inside [-max|w|, max|w|]: the gradient passes unchanged,
    # and nothing flows back through max|w|.
    np.testing.assert_array_equal(tape.gradient(loss, w).numpy(), [[1.0, 2.0], [3.0, 4.0]])


def test_quantizer_is_the_function_and_serialises():
    q = ArqQuantizer("INT4", channel_wise=True, kernel_layout="depthwise")
    w = np.random.default_rng(2).normal(size=(3, 3, 2, 2)).astype(np.float32)
    np.testing.assert_array_equal(q(tf.constant(w), True, {}).numpy(), run(w, 4, True, "depthwise"))
    assert ArqQuantizer.from_config(q.get_config()) == q
    expected = {"dst_type": "INT4", "channel_wise": True, "kernel_layout": "depthwise"}
    assert q.get_config() == expected
    assert q != ArqQuantizer("INT8", True, "depthwise")


def test_unknown_layout_is_refused():
    with pytest.raises(ValueError, match="kernel_layout must be one of"):
        ArqQuantizer("INT8", True, "first")
