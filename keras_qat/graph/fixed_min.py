"""Resolving `fixed_min` from the layer graph: is a layer's input provably >= 0?

The lower clip bound may be pinned at 0 only when every value reaching the
layer is non-negative. That holds for outputs of ReLU-like layers, and stays
true through layers that never change a sign (pooling, reshaping, padding,
dropout...) or combine non-negative inputs (concatenation, addition...).
Anything else, including a model input, is assumed to be signed. Nested
models are looked through: into what they return, and out to what each of
their calls feeds them.
"""

from keras_qat import functional
from keras_qat._keras import keras
from keras_qat.converter_facts import scalar_operation
from keras_qat.graph.model_check import iter_containers

_L = keras.layers

# Activations whose output is never negative.
_NON_NEGATIVE_ACTIVATIONS = {"relu", "relu6", "sigmoid", "hard_sigmoid", "softmax", "exponential"}

# Layers that keep non-negative inputs non-negative: "all" inputs must be
# non-negative, or "any" suffices (Maximum).
_SIGN_PRESERVING = {
    **dict.fromkeys(
        (
            _L.MaxPooling1D, _L.MaxPooling2D, _L.MaxPooling3D,
            _L.AveragePooling1D, _L.AveragePooling2D, _L.AveragePooling3D,
            _L.GlobalMaxPooling1D, _L.GlobalMaxPooling2D, _L.GlobalMaxPooling3D,
            _L.GlobalAveragePooling1D, _L.GlobalAveragePooling2D, _L.GlobalAveragePooling3D,
            _L.Flatten, _L.Reshape, _L.Permute, _L.RepeatVector,
            _L.Dropout, _L.SpatialDropout1D, _L.SpatialDropout2D, _L.SpatialDropout3D,
            _L.ZeroPadding1D, _L.ZeroPadding2D, _L.ZeroPadding3D,
            _L.Cropping1D, _L.Cropping2D, _L.Cropping3D,
            _L.UpSampling1D, _L.UpSampling2D, _L.UpSampling3D, _L.Resizing,
            _L.Concatenate, _L.Add, _L.Multiply, _L.Average, _L.Minimum,
        ),
        "all",
    ),
    _L.Maximum: "any",
}  # fmt: skip


def _activation_name(activation):
    try:
        return keras.activations.serialize(activation)
    except ValueError:  # a custom callable
        return None


def _is_non_negative_source(layer):
    if isinstance(layer, _L.ReLU):
        # A leaky ReLU lets negative values through (tf_keras forbids a negative threshold).
        return float(layer.negative_slope) == 0.0
    if isinstance(layer, _L.Softmax):
        return True
    activation = getattr(layer, "activation", None)
    return activation is not None and _activation_name(activation) in _NON_NEGATIVE_ACTIVATIONS


def _keeps_sign(layer):
    """Whether `layer` multiplies or divides a tensor by a positive number, or adds one.

    Such a `TFOpLambda` (`x / 2`, as an `Average` is spelled out at the
    door: `graph.merge_chains`) keeps non-negative values non-negative.
    """
    if not functional.called_once(layer):
        return False
    node = layer.inbound_nodes[0]
    operation = scalar_operation(layer, node.call_args, node.call_kwargs)
    return operation is not None and operation[1] > 0


class FixedMinResolver:
    """Decides `fixed_min` for layers of one model, across nested models.

    Args:
        model: A tf_keras Sequential or Functional model (already checked).
    """

    def __init__(self, model):
        self._containers = list(iter_containers(model))
        self._members = {id(c): {id(layer) for layer in c.layers} for c in self._containers}
        self._memo = {}

    def input_is_non_negative(self, layer, position=None):
        """Tells whether every input `layer` receives (or its input `position`) is provably >= 0.

        Args:
            layer: A layer of the model.
            position: Index of the one input asked about (the operands of a
                product are quantized apart). Defaults to all inputs.

        Returns:
            True when all call sites of the layer get non-negative inputs.
        """
        if position is None:
            return self._inputs_non_negative(layer, all)
        sites = self._sites(layer)
        return bool(sites) and all(
            self._output_non_negative(*producers[position]) for producers in sites
        )

    def _sites(self, layer):
        return [
            producers
            for container in self._containers
            if id(layer) in self._members[id(container)]
            for producers in functional.call_site_inputs(container, layer)
        ]

    def _inputs_non_negative(self, layer, combine):
        sites = self._sites(layer)
        return bool(sites) and all(
            combine(self._output_non_negative(*producer) for producer in producers)
            for producers in sites
        )

    def _output_non_negative(self, layer, tensor_index=0):
        if layer is None:
            return False
        key = (id(layer), tensor_index)
        if key not in self._memo:
            self._memo[key] = False  # guards against cycles while resolving
            self._memo[key] = self._resolve(layer, tensor_index)
        return self._memo[key]

    def _resolve(self, layer, tensor_index):
        if isinstance(layer, keras.Model):  # a nested model: look at what it returns
            return self._output_non_negative(*functional.output_source(layer, tensor_index))
        if isinstance(layer, _L.InputLayer):
            return self._nested_input_non_negative(layer)
        if _is_non_negative_source(layer):
            return True
        rule = "all" if _keeps_sign(layer) else _SIGN_PRESERVING.get(type(layer))
        if rule is None:
            return False
        return self._inputs_non_negative(layer, all if rule == "all" else any)

    def _nested_input_non_negative(self, input_layer):
        """An input of a nested model is >= 0 when every call of that model feeds >= 0."""
        for container in self._containers[1:]:  # the outermost model's inputs are signed
            position = functional.input_position(container, input_layer)
            if position is not None:
                sites = self._sites(container)
                return bool(sites) and all(
                    self._output_non_negative(*producers[position]) for producers in sites
                )
        return False
