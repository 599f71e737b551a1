"""The deploy forms compute what the layers they replace compute, in float."""

import numpy as np
import pytest

from keras_qat._keras import keras
from keras_qat.tflite.deploy_layers import DEPLOY_FORMS

L = keras.layers


@pytest.mark.parametrize(
    ("layer", "shape"),
    [
        (L.Dense(5, activation="relu"), (7,)),
        (L.Dense(5, use_bias=False), (3, 4, 7)),
        (L.Conv1D(4, 3), (9, 2)),
        (L.Conv1D(4, 3, strides=2, padding="same"), (9, 2)),
        (L.Conv1D(4, 2, padding="causal", dilation_rate=3), (9, 2)),
        (L.Conv2DTranspose(4, 3, padding="same"), (5, 6, 2)),
        (L.Conv2DTranspose(4, 3, 2, padding="same"), (5, 6, 2)),
        (L.Conv2DTranspose(4, 3, 2), (5, 6, 2)),
        (L.Conv2DTranspose(4, 2, 3), (5, 6, 2)),
        (L.Conv2DTranspose(4, 2, 3, padding="same"), (5, 6, 2)),
        (L.Conv2DTranspose(4, (4, 1), (2, 1), padding="same"), (5, 6, 2)),
    ],
    ids=lambda v: v.name if hasattr(v, "name") else None,
)
def test_deploy_form_equals_the_layer(layer, shape):
    x = np.random.default_rng(0).normal(size=(3, *shape)).astype(np.float32)
    layer.build(x.shape)
    if layer.use_bias:
        layer.bias.assign(np.linspace(-1, 1, layer.bias.shape[0]))
    want = layer(x).numpy()
    form = DEPLOY_FORMS[type(layer)]
    deployed = form(**form.config_from(layer.get_config()))
    deployed.build(x.shape)
    weights = layer.get_weights()
    deployed.set_weights([form.deploy_kernel(weights[0]), *weights[1:]])
    np.testing.assert_allclose(deployed(x).numpy(), want, atol=1e-5)
    clone = form.from_config(deployed.get_config())
    assert clone.get_config() == deployed.get_config()
