"""Reading and replaying a Functional model's graph: which layer feeds which, and how.

The one place that reads tf_keras's Functional internals (`_nodes_by_depth`,
`_inbound_nodes`, `_keras_history`, `_tensor_usage_count`, ...), which are
private and have changed between releases: a change there is fixed here.
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


def call_inputs(model):
    """Yields each call of `model`'s own nodes: `(layer, inputs)`.

    `inputs` lists `(producer, producer's call index)` per input of the
    call: the index in `producer.inbound_nodes` tells apart the outputs of
    a layer called at several places. Only this model's nodes, as `edges`.

    Args:
        model: A Functional model.

    Yields:
        Pairs of a layer and a list of pairs.
    """
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            inputs = [(producer, index) for producer, index, _, _ in node.iterate_inbound()]
            yield node.layer, inputs


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
        found.setdefault(producing_layer(tensor).name, []).append(None)
    return found


def called_once(layer):
    """Whether `layer` has exactly one call site in the graphs it belongs to.

    Args:
        layer: A layer of a Functional model.

    Returns:
        A bool.
    """
    return len(layer._inbound_nodes) == 1


def is_graph_network(model):
    """Whether `model` is a Functional model (or a built Sequential) with a layer graph."""
    return getattr(model, "_is_graph_network", False)


def producing_layer(tensor):
    """The layer that computed a symbolic Keras tensor, or None for another value."""
    history = getattr(tensor, "_keras_history", None)
    return history.layer if history is not None else None


def input_names(model):
    """The names of `model`'s input layers, in its input order."""
    return [producing_layer(t).name for t in model.inputs]


def output_source(model, index):
    """`(layer, output index)` that computes `model`'s output number `index`."""
    layer, _, tensor_index = model.outputs[index]._keras_history
    return layer, tensor_index


def input_position(model, input_layer):
    """The position of `input_layer` among `model`'s inputs, or None."""
    layers = getattr(model, "_input_layers", ())
    return layers.index(input_layer) if input_layer in layers else None


def call_site_inputs(container, layer):
    """Yields, per call of `layer` inside `container`, its `(producer, output index)` inputs.

    A call with no layer input (a model input of the container) gives
    `[(None, 0)]`. An unbuilt Sequential has no nodes yet: its layer list is
    the graph.

    Args:
        container: A Sequential or Functional model holding `layer`.
        layer: One of its layers.

    Yields:
        Lists of pairs, one list per call site.
    """
    if not is_graph_network(container):
        index = container.layers.index(layer)
        yield [(container.layers[index - 1], 0)] if index > 0 else [(None, 0)]
        return
    for index, node in enumerate(layer._inbound_nodes):
        if f"{layer.name}_ib-{index}" in container._network_nodes:
            yield [(inbound, t) for inbound, _, t, _ in node.iterate_inbound()] or [(None, 0)]


def sole_reader_links(container):
    """Yields `(producer, consumer)` where `consumer` reads one tensor that nothing else reads.

    The consumer has one call site with one input, and that input tensor
    feeds no other call in `container`: folding the consumer into its
    producer changes no other reader.

    Args:
        container: A Functional model.

    Yields:
        Pairs of layers.
    """
    usage = container._tensor_usage_count
    for nodes in container._nodes_by_depth.values():
        for node in nodes:
            if node.is_input or not called_once(node.layer):
                continue
            inbound = list(node.iterate_inbound())
            if len(inbound) == 1 and usage.get(str(id(inbound[0][3]))) == 1:
                yield inbound[0][0], node.layer


def calls(container):
    """Yields `(layer, args, kwargs)` for each of `container`'s own calls, inputs first.

    Args:
        container: A Functional model.

    Yields:
        The layer called and the arguments of that call (Keras tensors).
    """
    for depth in sorted(container._nodes_by_depth, reverse=True):
        for node in container._nodes_by_depth[depth]:
            if not node.is_input:
                yield node.layer, node.call_args, node.call_kwargs


def replay(container, inputs, call):
    """Runs `container`'s graph node by node on new `inputs`, as tf_keras's Functional model does.

    Args:
        container: A Functional model.
        inputs: New tensors, one per input of `container`, in order.
        call: `call(layer, args, kwargs)` -> outputs, run for each node in
            topological order with that node's arguments mapped onto the new
            tensors.

    Returns:
        The new outputs, nested as `container`'s outputs.
    """
    tensors = {}
    usage = container._tensor_usage_count
    for original, new in zip(container.inputs, inputs, strict=True):
        tensors[str(id(original))] = [new] * usage[str(id(original))]
    for depth in sorted(container._nodes_by_depth, reverse=True):
        for node in container._nodes_by_depth[depth]:
            if node.is_input:
                continue
            args, kwargs = node.map_arguments(tensors)
            outputs = call(node.layer, args, kwargs)
            for tensor_id, value in zip(
                node.flat_output_ids, tf.nest.flatten(outputs), strict=True
            ):
                tensors[tensor_id] = [value] * usage[tensor_id]
    outputs = [tensors[str(id(t))].pop() for t in container.outputs]
    return tf.nest.pack_sequence_as(container._nested_outputs, outputs)
