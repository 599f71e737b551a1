"""Room on Python's stack for tf_keras' graph code on deep models.

tf_keras maps a Functional model's graph (`Functional._build_map_helper`,
run when a model is built, cloned, loaded or saved) by recursing once per
layer along the longest path, so a chain of about 1 000 layers exceeds
Python's default recursion limit of 1 000. keras_qat builds models deeper
than the user's (an input quantizer before each quantized layer), so every
public entry point that builds, copies or converts a model runs inside
`graph_recursion_room`.
"""

import contextlib
import functools
import inspect
import sys

# Frames per layer: the walk itself plus the calls tf_keras makes around it
# (a quantized layer adds its input quantizer to the path).
_FRAMES_PER_LAYER = 4
# What the caller's stack and TensorFlow's tracing below the walk may use.
_BASE_FRAMES = 2000


def _layer_count(model):
    layers = getattr(model, "layers", None)
    if not isinstance(layers, (list, tuple)):
        return 0
    return sum(1 + _layer_count(layer) for layer in layers)


@contextlib.contextmanager
def graph_recursion_room(*models, layers=0):
    """Raises Python's recursion limit for graph code on `models`, restoring it after.

    Pure-Python recursion lives on the heap from Python 3.11 on, so the raise
    costs nothing until the frames are used.

    Args:
        *models: Models whose graphs the code inside will walk (anything
            without `layers` counts as none).
        layers: Layers to make room for besides those of `models` (for a
            model not loaded yet). Defaults to `0`.

    Yields:
        None.
    """
    previous = sys.getrecursionlimit()
    layers += sum(_layer_count(model) for model in models)
    sys.setrecursionlimit(previous + _BASE_FRAMES + _FRAMES_PER_LAYER * layers)
    try:
        yield
    finally:
        sys.setrecursionlimit(previous)


def with_graph_recursion_room(function):
    """Decorates a function whose first parameter is a model with `graph_recursion_room`.

    Args:
        function: Takes the model as its first parameter (by position or name).

    Returns:
        The wrapped function.
    """

    first = next(iter(inspect.signature(function).parameters))

    @functools.wraps(function)
    def wrapped(*args, **kwargs):
        model = args[0] if args else kwargs.get(first)
        with graph_recursion_room(model):
            return function(*args, **kwargs)

    return wrapped
