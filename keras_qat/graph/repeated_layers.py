"""Weightless layers applied twice to the same tensors, made one at the door.

NASNet applies a ReLU to a cell's input in each branch that reads it: up
to five `Activation("relu")` layers on one tensor, each followed by its
own quantized layers. The converter merges equal ops on equal inputs into
one, so the file holds one int8 tensor there, and with its readers' input
quantizers trained apart (learned clips 2.45 and 2.52 on NASNetMobile's
first cell) it had no one range for it and took the representative data's
(2.996): half of that tensor's values landed a level or more away from the
QAT model's, up to 46 levels. Made one layer with one output, the tensor
is read by several quantized layers, which `graph.shared_inputs` gives one
quantizer, as the file has one grid.

Only layers the converter makes a pure op of, and that keras_qat does not
quantize (a quantized layer has a config entry of its own), are merged; the
layer called first keeps its name.
"""

import tensorflow as tf

from keras_qat import functional
from keras_qat.converter_facts import MERGED_WHEN_REPEATED
from keras_qat.layer_rebuild import Rebuilder, copy_layer
from keras_qat.layer_table import layer_spec


def _mergeable(layer):
    return isinstance(layer, MERGED_WHEN_REPEATED) and layer_spec(layer) is None


def _call_key(layer, args, kwargs):
    """What makes two calls compute the same, or `None` for a call not to merge."""
    if not _mergeable(layer) or any(tf.is_tensor(v) for v in tf.nest.flatten(kwargs)):
        return None
    config = {k: v for k, v in layer.get_config().items() if k != "name"}
    return (type(layer), repr(config), tuple(id(t) for t in tf.nest.flatten(args)), repr(kwargs))


def _has_repeats(model):
    """Whether two calls in `model` (or a model nested in it) would merge."""
    seen = set()
    for layer, args, kwargs in functional.calls(model):
        if functional.is_graph_network(layer) and _has_repeats(layer):
            return True
        key = _call_key(layer, args, kwargs)
        if key in seen:
            return True
        if key is not None:
            seen.add(key)
    return False


class _Merger(Rebuilder):
    """Rebuilds a model with each repeated weightless call made once."""

    def __init__(self, model_outputs):
        super().__init__()
        self.model_outputs = model_outputs  # names of the layers that compute them
        self.first = {}  # call key -> the outputs of the first such call

    def replace(self, layer, args, kwargs):
        key = _call_key(layer, args, kwargs)
        if key is None or layer.name in self.model_outputs:
            return None  # a model output keeps its layer, and so its name
        if key not in self.first:
            copy = self.made_layer(layer.name, lambda: copy_layer(layer))
            self.first[key] = copy(*args, **kwargs)
        return self.first[key]


def merge_repeated_layers(model):
    """Returns `model` itself, or its rebuild with repeated weightless calls made one.

    Args:
        model: A checked tf_keras Functional or Sequential model.

    Returns:
        `model` when no two calls merge, else a new Functional model of the
        same name (see the module).

    Raises:
        UnsupportedModelError: for a rebuild that does not compute what the
            original computes.
    """
    if not functional.is_graph_network(model) or not _has_repeats(model):
        return model
    model_outputs = {functional.producing_layer(t).name for t in model.outputs}
    return _Merger(model_outputs).rebuild(model, "its repeated weightless layers made one")
