"""Resolving `fixed_min` from the layer graph: is a layer's input provably >= 0?

The lower clip bound may be pinned at 0 only when every value reaching the
layer is non-negative. That holds for outputs of ReLU-like layers, and stays
true through layers that never change a sign (pooling, reshaping, padding,
dropout...) or combine non-negative inputs (concatenation, addition...).
Anything else, including a model input, is assumed to be signed.
"""

from keras_qat._keras import keras
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
            _L.UpSampling1D, _L.UpSampling2D, _L.UpSampling3D,
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


def _call_site_inputs(container, layer):
    """Yields, per call of `layer` inside `container`, the layers feeding it."""
    if not container._is_graph_network:  # an unbuilt Sequential: the list is the graph
        index = container.layers.index(layer)
        yield [container.layers[index - 1]] if index > 0 else [None]
        return
    for index, node in enumerate(layer._inbound_nodes):
        if f"{layer.name}_ib-{index}" in container._network_nodes:
            yield [inbound for inbound, _, _, _ in node.iterate_inbound()] or [None]


class FixedMinResolver:
    """Decides `fixed_min` for layers of one model.

    Args:
        model: A tf_keras Sequential or Functional model (already checked).
    """

    def __init__(self, model):
        self._containers = [
            (container, {id(layer) for layer in container.layers})
            for container in iter_containers(model)
        ]
        self._memo = {}

    def input_is_non_negative(self, layer):
        """Tells whether every input `layer` receives is provably >= 0.

        Args:
            layer: A layer of the model.

        Returns:
            True when all call sites of the layer get non-negative inputs.
        """
        return self._inputs_non_negative(layer, all)

    def _inputs_non_negative(self, layer, combine):
        sites = [
            producers
            for container, members in self._containers
            if id(layer) in members
            for producers in _call_site_inputs(container, layer)
        ]
        return bool(sites) and all(
            combine(self._output_non_negative(p) for p in producers) for producers in sites
        )

    def _output_non_negative(self, layer):
        # Nested model outputs and model inputs are treated as signed: the walk
        # stays inside one container.
        if layer is None or isinstance(layer, (_L.InputLayer, keras.Model)):
            return False
        if id(layer) not in self._memo:
            self._memo[id(layer)] = False  # guards against cycles while resolving
            self._memo[id(layer)] = self._resolve(layer)
        return self._memo[id(layer)]

    def _resolve(self, layer):
        if _is_non_negative_source(layer):
            return True
        rule = _SIGN_PRESERVING.get(type(layer))
        if rule is None:
            return False
        return self._inputs_non_negative(layer, all if rule == "all" else any)
