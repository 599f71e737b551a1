import numpy as np
import pytest
import reference
import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.quantizers import InputQuantizeLayer, UlqQuantizer
from keras_qat.quantizers.ulq import ulq_fake_quant

# (bits, clip_min, clip_max): bounds whose step is a power of two, so ties are exact.
GRIDS = [
    pytest.param(8, -2.0, 127 / 64, id="INT8"),
    pytest.param(4, -0.5, 7 / 16, id="INT4"),
]


def run(x, clip_min, clip_max, bits):
    return ulq_fake_quant(tf.constant(x, tf.float32), clip_min, clip_max, bits).numpy()


@pytest.mark.parametrize(("bits", "clip_min", "clip_max"), GRIDS)
def test_edge_table(bits, clip_min, clip_max):
    s = (clip_max - clip_min) / (2**bits - 1)
    x = np.array(
        [0, 0.5 * s, -0.5 * s, 1.5 * s, -1.5 * s, clip_max, clip_max + s / 4, 10, clip_min,
         clip_min - s / 4, -10],
        np.float32,
    )  # fmt: skip
    expected = np.array(
        [0, s, 0, 2 * s, -s, clip_max, clip_max, clip_max, clip_min, clip_min, clip_min],
        np.float32,
    )
    np.testing.assert_array_equal(run(x, clip_min, clip_max, bits), expected)
    np.testing.assert_array_equal(reference.ulq(x, clip_min, clip_max, bits), expected)


@pytest.mark.parametrize(("bits", "clip_min", "clip_max"), GRIDS)
def test_every_level_is_a_fixed_point(bits, clip_min, clip_max):
    s = (clip_max - clip_min) / (2**bits - 1)
    x = (np.arange(2**bits, dtype=np.float32) * s + clip_min).astype(np.float32)
    np.testing.assert_array_equal(run(x, clip_min, clip_max, bits), x)


@pytest.mark.parametrize("bits", [8, 4])
def test_zero_is_exact_with_any_bounds(bits):
    for clip_min, clip_max in [(-0.3, 1.7), (-1.11, 0.05), (0.0, 6.0)]:
        assert run(np.zeros(1, np.float32), clip_min, clip_max, bits)[0] == 0.0
        # Offset from the grid: float32 vs float64 may round an exact tie differently.
        x = (np.linspace(-3, 3, 101) + 1e-3).astype(np.float32)
        np.testing.assert_allclose(
            run(x, clip_min, clip_max, bits), reference.ulq(x, clip_min, clip_max, bits), atol=1e-5
        )


@pytest.mark.parametrize(("bits", "clip_min", "clip_max"), GRIDS)
def test_gradients_match_the_reference(bits, clip_min, clip_max):
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(-3, 3, 200), [clip_max, clip_min, 0.0]]).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    x_t = tf.constant(x)
    low, high = tf.Variable(clip_min), tf.Variable(clip_max)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x_t)
        y = ulq_fake_quant(x_t, low, high, bits)
        loss = tf.reduce_sum(y * dy)
    dx, d_low, d_high = tape.gradient(loss, [x_t, low, high])
    ref_dx, ref_low, ref_high = reference.ulq_gradients(x, dy, clip_min, clip_max, bits)
    np.testing.assert_array_equal(dx.numpy(), ref_dx)
    # Mask: in range (bounds included) passes, beyond them nothing.
    np.testing.assert_array_equal(dx.numpy() != 0, (x >= clip_min) & (x <= clip_max))
    np.testing.assert_allclose(d_low.numpy(), ref_low, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(d_high.numpy(), ref_high, rtol=1e-5, atol=1e-5)


def test_in_range_values_move_the_bounds():
    # Nothing is clipped, yet the LSQ term gives the bounds a gradient; the
    # plain fake-quant gradient would be exactly zero here.
    x = tf.constant(np.linspace(-0.9, 0.9, 37).astype(np.float32))
    low, high = tf.Variable(-1.0), tf.Variable(1.0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(ulq_fake_quant(x, low, high, 4) * x)
    assert tape.gradient(loss, high).numpy() != 0.0


def quant_layer(**kwargs):
    layer = InputQuantizeLayer(UlqQuantizer(**kwargs))
    layer(tf.zeros((1, 4)))
    return layer


def clip_names(weights):
    return sorted(w.name.split("_")[-1].split(":")[0] for w in weights if "clip" in w.name)


def test_variables_fixed_min_and_given_bounds():
    learned = quant_layer()
    assert clip_names(learned.trainable_weights) == ["max", "min"]
    fixed_min = quant_layer(fixed_min=True)
    assert clip_names(fixed_min.weights) == ["max"]  # no clip_min variable at all
    y = fixed_min(tf.constant([[-1.0, 0.0, 0.5, 2.0]])).numpy()
    assert y.min() == 0.0
    given = quant_layer(clip_max=2.0, clip_min=-1.0)
    assert given.trainable_weights == []
    np.testing.assert_allclose(
        given(tf.constant([[-5.0, 5.0]])).numpy(), reference.ulq(np.array([[-5.0, 5.0]]), -1, 2, 8)
    )


def test_assign_clip_range():
    layer = quant_layer()
    UlqQuantizer.assign_clip_range(layer.quantizer_vars, -0.5, 3.0)
    x = np.array([[-2.0, -0.2, 1.3, 4.0]], np.float32)
    np.testing.assert_allclose(layer(x).numpy(), reference.ulq(x, -0.5, 3.0, 8), atol=1e-6)


def test_bounds_stay_ordered_under_any_update():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, InputQuantizeLayer(UlqQuantizer())(inputs))
    model.compile(keras.optimizers.SGD(1000.0), loss=lambda y, p: -tf.reduce_sum(p) * 1e3)
    x = np.full((8, 4), -0.5, np.float32)
    model.fit(x, x, epochs=3, verbose=0)
    weights = {w.name.split("/")[-1].split(":")[0][-8:]: w.numpy() for w in model.weights}
    assert weights["clip_max"] > 0
    assert weights["clip_min"] <= 0
    assert np.isfinite(model.predict(x, verbose=0)).all()


def test_serialises():
    q = UlqQuantizer("INT4", fixed_min=True, clip_max=2.0)
    assert UlqQuantizer.from_config(q.get_config()) == q
    assert q != UlqQuantizer("INT4", fixed_min=False, clip_max=2.0)


def test_fake_quant_gradient_option_drops_the_in_range_term():
    x = tf.constant(np.linspace(-0.9, 0.9, 37), tf.float32)
    grads = {}
    for gradient in ("ulq", "fake_quant"):
        quantizer = UlqQuantizer("INT4", clip_max=1.0, clip_min=-1.0, gradient=gradient)
        low, high = tf.Variable(-1.0), tf.Variable(1.0)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(quantizer(x, True, {"clip_min": low, "clip_max": high}) * x)
        grads[gradient] = tape.gradient(loss, high)
        assert UlqQuantizer(**quantizer.get_config()).gradient == gradient
    assert grads["ulq"].numpy() != 0.0
    assert grads["fake_quant"] is None or grads["fake_quant"].numpy() == 0.0  # nothing clipped
    with pytest.raises(ValueError, match="gradient must be one of"):
        UlqQuantizer(gradient="lsq")
