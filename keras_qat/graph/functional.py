"""Reading a flat Functional model's graph: which layer feeds which."""

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
