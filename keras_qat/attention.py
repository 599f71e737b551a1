"""Attention models in the form keras_qat quantizes: attention layers opened up.

TFMOT wraps whole layers, and `MultiHeadAttention` computes four projections
and two products inside one `call`. The model is therefore rebuilt (copies
of its layers, the input model untouched) with each attention layer `mha`
spelled out as layers of its own, which keras_qat quantizes one by one:

    mha/query, mha/key, mha/value   Dense projections, each then reshaped to
                                    (batch, length, heads, depth)
    mha/scores                      `AttentionScores`: query . key^T
    mha/softmax                     softmax over the key axis
    mha/dropout                     the attention dropout, if any
    mha/context                     `AttentionContext`: scores . value
    mha/output                      Dense over the heads, merged by a reshape

and each `EinsumDense` whose equation is a dense layer in disguise (the
contracted axes last in the input and first in the kernel, the output axes
last) as a Dense of the same name between two reshapes. The `1 / sqrt(depth)`
scaling of the query goes into the query projection's weights, so that no
multiplication stands between the projection and its int8 product. The
rebuilt model is run beside the original on sample inputs; if they differ,
an `UnsupportedModelError` says so.
"""

import functools
import math

import numpy as np
import tensorflow as tf

from keras_qat import functional
from keras_qat._keras import keras
from keras_qat.attention_layers import AttentionContext, AttentionScores
from keras_qat.errors import UnsupportedModelError
from keras_qat.layer_table import SOURCE_KIND
from keras_qat.rebuild_check import differing_samples

_L = keras.layers


def _dense_form(layer):
    """`(contracted sizes, output sizes)` of an EinsumDense that is a Dense, else raises."""
    equation = layer.get_config()["equation"]
    try:
        operands, output = equation.split("->")
        inputs, kernel = operands.split(",")
    except ValueError:
        inputs = kernel = output = ""
    contracted = "".join(c for c in kernel if c in inputs and c not in output)
    produced = kernel[len(contracted) :]
    free = inputs[: len(inputs) - len(contracted)]
    bias_axes = layer.get_config().get("bias_axes") or ""
    if (
        not contracted
        or not kernel.startswith(contracted)
        or not inputs.endswith(contracted)
        or output != free + produced
        or any(c not in produced for c in bias_axes)
    ):
        raise UnsupportedModelError(
            f"EinsumDense '{layer.name}' (equation '{equation}', bias_axes '{bias_axes}') is not "
            "a dense layer over its last input axes; keras_qat quantizes EinsumDense layers "
            "whose equation contracts the input's last axes with the kernel's first ones and "
            "puts the kernel's other axes last in the output (e.g. 'abc,cde->abde')."
        )
    shape = tuple(layer.kernel.shape)
    return shape[: len(contracted)], shape[len(contracted) :]


def _dense_weights(layer, scale=1.0):
    """The Dense kernel and bias computing what EinsumDense `layer` computes (times `scale`)."""
    contracted, produced = _dense_form(layer)
    kernel = layer.kernel.numpy().reshape(math.prod(contracted), math.prod(produced))
    weights = [kernel * scale]
    if layer.bias is not None:
        equation = layer.get_config()["equation"]
        produced_axes = equation.split(",")[1].split("->")[0][len(contracted) :]
        bias_axes = layer.get_config()["bias_axes"]
        # The bias broadcast over the output axes it does not name.
        shape = [produced[produced_axes.index(c)] if c in bias_axes else 1 for c in produced_axes]
        bias = np.broadcast_to(layer.bias.numpy().reshape(shape), produced).reshape(-1)
        weights.append(bias * scale)
    return weights


def _reshape(leading, trailing, name):
    """A Reshape to `leading` (non-batch axes kept; an unknown length is -1) then `trailing`."""
    return _L.Reshape((*[-1 if d is None else d for d in leading], *trailing), name=name)


class _Opener:
    """Rebuilds a model with its attention layers opened up; copies of all other layers.

    A layer called at several places is made once and called at each (its
    parts too: they are named after it), as in the original.
    """

    def __init__(self):
        self.made = {}  # name -> (new layer, the weights it takes)

    def _made(self, name, make, weights=lambda: None, kind=None):
        """The new layer `name`, made (`make()`, with `weights()` to assign) on first use."""
        if name not in self.made:
            layer = make()
            if kind is not None:
                setattr(layer, SOURCE_KIND, kind)
            self.made[name] = (layer, weights())
        return self.made[name][0]

    def call(self, layer, args, kwargs):
        if isinstance(layer, keras.Model):
            return functional.replay(layer, tf.nest.flatten(args[0]), self.call)
        if isinstance(layer, _L.MultiHeadAttention):
            return self._attention(layer, *args, **kwargs)
        if isinstance(layer, _L.EinsumDense):
            return self._as_dense(layer, layer.name, args[0], "EinsumDense")
        copy = self._made(layer.name, lambda: _copy(layer), layer.get_weights)
        return copy(*args, **kwargs)

    def _as_dense(self, einsum, name, tensor, kind, scale=1.0):
        """EinsumDense `einsum` on `tensor` as a Dense `name` between reshapes."""
        contracted, produced = _dense_form(einsum)
        dense = self._made(
            name,
            lambda: _L.Dense(
                math.prod(produced),
                activation=einsum.get_config().get("activation"),
                use_bias=einsum.bias is not None,
                name=name,
            ),
            lambda: _dense_weights(einsum, scale),
            kind,
        )
        if len(contracted) > 1:
            leading, flat = tensor.shape[1 : -len(contracted)], (math.prod(contracted),)
            tensor = self._made(
                f"{name}/flatten", lambda: _reshape(leading, flat, f"{name}/flatten")
            )(tensor)
        outputs = dense(tensor)
        if len(produced) > 1:
            leading = outputs.shape[1:-1]
            unflatten = self._made(
                f"{name}/unflatten", lambda: _reshape(leading, produced, f"{name}/unflatten")
            )
            outputs = unflatten(outputs)
        return outputs

    def _attention(self, mha, query, value, key=None, **kwargs):
        config, name = mha.get_config(), mha.name
        unsupported = {
            k: v for k, v in kwargs.items() if k != "training" and v is not None and v is not False
        }
        axes = config["attention_axes"]
        if unsupported or axes not in (None, (1,), [1]) or query.shape.rank != 3:
            raise UnsupportedModelError(
                f"MultiHeadAttention '{name}': keras_qat opens up attention over the sequence "
                "axis of (batch, length, features) inputs, without masks. Received: "
                f"query shape {tuple(query.shape)}, attention_axes={axes}, "
                f"call arguments {unsupported}"
            )
        kind = "MultiHeadAttention"
        scale = 1.0 / math.sqrt(config["key_dim"])
        query = self._as_dense(mha._query_dense, f"{name}/query", query, kind, scale)
        key = self._as_dense(mha._key_dense, f"{name}/key", value if key is None else key, kind)
        value = self._as_dense(mha._value_dense, f"{name}/value", value, kind)

        def part(suffix, cls, inputs, *args):
            make = functools.partial(cls, *args, name=f"{name}/{suffix}")
            return self._made(f"{name}/{suffix}", make, kind=kind)(inputs)

        scores = part("scores", AttentionScores, [query, key])
        probabilities = part("softmax", _L.Activation, scores, "softmax")
        if config["dropout"]:
            probabilities = part("dropout", _L.Dropout, probabilities, config["dropout"])
        context = part("context", AttentionContext, [probabilities, value])
        return self._as_dense(mha._output_dense, f"{name}/output", context, kind)

    def assign(self):
        for layer, weights in self.made.values():
            if weights is not None:
                layer.set_weights(weights)


def _copy(layer):
    """A new layer from `layer`'s config."""
    try:
        return type(layer).from_config(layer.get_config())
    except Exception as e:  # any failure here means the layer cannot be copied
        raise UnsupportedModelError(
            f"Layer '{layer.name}' ({type(layer).__name__}) cannot be copied from its "
            f"config: {e}. Custom layers need get_config()/from_config()."
        ) from e


def _has_attention(model):
    """Whether `model`'s graph (nested models' too, not other layers' insides) has one to open."""
    return any(
        isinstance(layer, (_L.MultiHeadAttention, _L.EinsumDense))
        or (functional.is_graph_network(layer) and _has_attention(layer))
        for layer in model.layers
    )


def open_attention(model):
    """Returns `model` itself, or its rebuild with attention layers opened up.

    Args:
        model: A checked tf_keras Functional or Sequential model.

    Returns:
        `model` when it has no `MultiHeadAttention` or `EinsumDense`, else a
        new Functional model of the same name (see the module).

    Raises:
        UnsupportedModelError: for an attention layer keras_qat cannot open
            (masks, attention over other axes, an EinsumDense that is not a
            dense layer), or a rebuild that does not compute what the
            original computes.
    """
    if not _has_attention(model):
        return model
    opener = _Opener()
    inputs = [
        keras.Input(type_spec=t.type_spec, name=name)
        for t, name in zip(model.inputs, functional.input_names(model), strict=True)
    ]
    outputs = functional.replay(model, inputs, opener.call)
    opened = keras.Model(inputs, outputs, name=model.name)
    opener.assign()
    if differing_samples(model, opened) is not None:
        raise UnsupportedModelError(
            f"Model '{model.name}' with its attention layers opened up computes something else "
            "on sample inputs; keras_qat cannot quantize it faithfully."
        )
    return opened
