"""Weightless layers called at several places, made one layer per call at the door.

A Keras model may call one ReLU, Add or bilinear `UpSampling2D` at several
places (`relu = ReLU()`, then `relu(...)` after each convolution). The file
computes each call as an op of its own, on the tensors and ranges there,
while keras_qat plans per layer where the QAT model rounds as the file
does (an output quantizer after a ReLU the converter fuses, the grid a
resize reads and writes, the range an Add writes on): a layer called at two
places got one plan for both, or none, and the QAT model parted from the
file (small CNNs, against LiteRT running the file: a ReLU shared by two
convolutions 0.52 top-1 agreement, up to 6 steps off; a shared Add 0.71; a
shared bilinear resize 0.57). A layer without weights computes what copies
of it compute, so each of its calls after the first gets a copy of its own,
named after it. Left shared: layers with weights (their weights are one),
weightless layers keras_qat quantizes (their config entry is the user's,
under their name), and layers whose output is a model output (which keeps
its layer's name).
"""

from keras_qat import functional
from keras_qat.layer_rebuild import Rebuilder, UniqueNames, copy_layer
from keras_qat.layer_table import layer_spec


def _calls_and_names(model, calls, names):
    """Lists the calls of `model` and models nested in it by layer id; collects their names."""
    for layer, _, _ in functional.calls(model):
        names.add(layer.name)
        if functional.is_graph_network(layer):
            _calls_and_names(layer, calls, names)
        else:
            calls.setdefault(id(layer), []).append(layer)


def _split(model):
    """The ids of the layers to copy per call in `model`, and the layer names the model holds."""
    calls, names = {}, {layer.name for layer in model.layers}
    _calls_and_names(model, calls, names)
    returned = {id(functional.producing_layer(t)) for t in model.outputs}
    split = {
        layer_id
        for layer_id, (layer, *more) in calls.items()
        if more and layer_id not in returned and not layer.weights and layer_spec(layer) is None
    }
    return split, names


class _Splitter(Rebuilder):
    """Rebuilds a model with a copy of each given layer per call after its first."""

    def __init__(self, split, names):
        super().__init__()
        self.split = split
        self.names = UniqueNames(names)
        self.calls = {}  # id(layer) -> calls made so far

    def replace(self, layer, args, kwargs):
        if id(layer) not in self.split:
            return None
        count = self.calls[id(layer)] = self.calls.get(id(layer), 0) + 1
        if count == 1:
            return None  # the first call keeps the layer, and its name
        name = self.names(layer.name)
        return self.made_layer(name, lambda: copy_layer(layer, name))(*args, **kwargs)


def split_shared_layers(model):
    """Returns `model` itself, or its rebuild with each weightless shared layer copied per call.

    Args:
        model: A checked tf_keras Functional or Sequential model.

    Returns:
        `model` when no layer is to be copied, else a new Functional model
        of the same name (see the module).

    Raises:
        UnsupportedModelError: for a layer its config does not make, or a
            rebuild that does not compute what the original computes.
    """
    if not functional.is_graph_network(model):
        return model
    split, names = _split(model)
    if not split:
        return model
    return _Splitter(split, names).rebuild(model, "its shared weightless layers copied per call")
