"""Rebuilding a model at the door with some layers spelled out as quantizable ones.

keras_qat quantizes whole layers, so a layer that computes something the
.tflite computes in several int8 ops, or that no quantizable layer stands
for, is replaced by layers that do (`attention`, `graph.standalone_batch_norms`).
The model is rebuilt from copies of its layers (the input model untouched,
nested models inlined), run beside the original on sample inputs, and
refused with an `UnsupportedModelError` where the two differ.
"""

import tensorflow as tf

from keras_qat import functional
from keras_qat._keras import keras
from keras_qat.errors import UnsupportedModelError
from keras_qat.layer_table import SOURCE_KIND
from keras_qat.rebuild_check import differing_samples


def copy_layer(layer, name=None):
    """A new layer from `layer`'s config, named `name` (`None`: as `layer`).

    Raises:
        UnsupportedModelError: if the config does not make one.
    """
    try:
        config = layer.get_config()
        if name is not None:
            config = config | {"name": name}
        return type(layer).from_config(config)
    except Exception as e:  # any failure here means the layer cannot be copied
        raise UnsupportedModelError(
            f"Layer '{layer.name}' ({type(layer).__name__}) cannot be copied from its "
            f"config: {e}. Custom layers need get_config()/from_config()."
        ) from e


class UniqueNames:
    """Hands out layer names that collide with no name taken already nor each other.

    Args:
        taken: The names in use (a model's layers' and nested models').
    """

    def __init__(self, taken):
        self._used = set(taken)

    def __call__(self, base):
        name, index = base, 1
        while name in self._used:
            name, index = f"{base}_{index}", index + 1
        self._used.add(name)
        return name


class Rebuilder:
    """Replays a model with copies of its layers, except those `replace` spells out.

    A layer called at several places is made once and called at each (its
    replacements too: they are named after it), as in the original.
    """

    def __init__(self):
        self.made = {}  # name -> (new layer, the weights it takes)

    def made_layer(self, name, make, weights=lambda: None, kind=None):
        """The new layer `name`, made (`make()`, with `weights()` to assign) on first use.

        Args:
            name: Its name.
            make: Makes it.
            weights: Returns the weights to assign once the model is built,
                or `None`.
            kind: The type name a config definition knows it by
                (`layer_table.source_kind`), or `None` for its own class's.

        Returns:
            The layer.
        """
        if name not in self.made:
            layer = make()
            if kind is not None:
                setattr(layer, SOURCE_KIND, kind)
            self.made[name] = (layer, weights())
        return self.made[name][0]

    def replace(self, layer, args, kwargs):
        """The outputs of `layer` spelled out on `args`, or `None` to copy it as it is."""
        return None

    def call(self, layer, args, kwargs):
        if isinstance(layer, keras.Model):
            return functional.replay(layer, tf.nest.flatten(args[0]), self.call)
        outputs = self.replace(layer, args, kwargs)
        if outputs is not None:
            return outputs
        copy = self.made_layer(layer.name, lambda: copy_layer(layer), layer.get_weights)
        return copy(*args, **kwargs)

    def rebuild(self, model, what):
        """The rebuilt `model`, checked against it.

        Args:
            model: A checked tf_keras Functional or Sequential model.
            what: What was spelled out, for the error ("its attention
                layers opened up").

        Returns:
            A new Functional model of the same name.

        Raises:
            UnsupportedModelError: if the rebuild computes something else on
                sample inputs.
        """
        inputs = [
            keras.Input(type_spec=t.type_spec, name=name)
            for t, name in zip(model.inputs, functional.input_names(model), strict=True)
        ]
        outputs = functional.replay(model, inputs, self.call)
        rebuilt = keras.Model(inputs, outputs, name=model.name)
        for layer, weights in self.made.values():
            if weights is not None:
                layer.set_weights(weights)
        if differing_samples(model, rebuilt) is not None:
            raise UnsupportedModelError(
                f"Model '{model.name}' with {what} computes something else on sample inputs; "
                "keras_qat cannot quantize it faithfully."
            )
        return rebuilt
