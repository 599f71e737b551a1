"""Reading a flat Functional model's graph: which layer feeds which, and how often it is called.

The one place outside the walker (which replays nodes itself) that reads
tf_keras's Functional internals (`_nodes_by_depth`, `_inbound_nodes`).
"""

import tensorflow as tf


def edges(model):
    """Yields the `(producer, consumer)` layer pairs of `model`'s own nodes.

    Only this model's nodes: a layer shared with another model (the walker
    shares layers between the QAT model and its export copy) has nodes there
    too.

    Args:
        model: A Functional model.

    Yields:
        Pairs of layers, one per input of each call.
    """
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            for producer in tf.nest.flatten(node.inbound_layers):
                yield producer, node.layer


def sources(model):
    """Layer name -> the layers its inputs come from.

    Args:
        model: A Functional model.

    Returns:
        A dict of lists, in call order.
    """
    found = {}
    for producer, consumer in edges(model):
        found.setdefault(consumer.name, []).append(producer)
    return found


def consumers(model):
    """Layer name -> the layers its output feeds, with `None` for each model output it is.

    Args:
        model: A Functional model.

    Returns:
        A dict of lists.
    """
    found = {}
    for producer, consumer in edges(model):
        found.setdefault(producer.name, []).append(consumer)
    for tensor in model.outputs:
        found.setdefault(tensor._keras_history.layer.name, []).append(None)
    return found


def called_once(layer):
    """Whether `layer` has exactly one call site in the graphs it belongs to.

    Args:
        layer: A layer of a Functional model.

    Returns:
        A bool.
    """
    return len(layer._inbound_nodes) == 1
