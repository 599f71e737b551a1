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

from keras_qat import functional
from keras_qat._keras import keras
from keras_qat.attention_layers import AttentionContext, AttentionScores
from keras_qat.errors import UnsupportedModelError
from keras_qat.layer_rebuild import Rebuilder

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


class _Opener(Rebuilder):
    """Rebuilds a model with its attention layers opened up; copies of all other layers."""

    def replace(self, layer, args, kwargs):
        if isinstance(layer, _L.MultiHeadAttention):
            return self._attention(layer, *args, **kwargs)
        if isinstance(layer, _L.EinsumDense):
            return self._as_dense(layer, layer.name, args[0], "EinsumDense")
        return None

    def _as_dense(self, einsum, name, tensor, kind, scale=1.0):
        """EinsumDense `einsum` on `tensor` as a Dense `name` between reshapes."""
        contracted, produced = _dense_form(einsum)
        dense = self.made_layer(
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
            tensor = self.made_layer(
                f"{name}/flatten", lambda: _reshape(leading, flat, f"{name}/flatten")
            )(tensor)
        outputs = dense(tensor)
        if len(produced) > 1:
            leading = outputs.shape[1:-1]
            unflatten = self.made_layer(
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
            return self.made_layer(f"{name}/{suffix}", make, kind=kind)(inputs)

        scores = part("scores", AttentionScores, [query, key])
        probabilities = part("softmax", _L.Activation, scores, "softmax")
        if config["dropout"]:
            probabilities = part("dropout", _L.Dropout, probabilities, config["dropout"])
        context = part("context", AttentionContext, [probabilities, value])
        return self._as_dense(mha._output_dense, f"{name}/output", context, kind)


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
    return _Opener().rebuild(model, "its attention layers opened up")
