"""load_model: a saved model back, QAT or float, without running code it carries."""

import json
import os
import zipfile

import tensorflow as tf

from keras_qat._keras import SafeModeScope, keras
from keras_qat.errors import ModelFileError
from keras_qat.graph.recursion import graph_recursion_room
from keras_qat.keras3 import as_tf_keras
from keras_qat.quantizers import quantize_scope

# The class tf_keras gives a layer it restored from a SavedModel's graph rather
# than from its Python class: in safe mode, a Lambda layer whose code was not run.
_REVIVED_LAMBDA = "tf_keras.src.saving.legacy.saved_model.load.Lambda"
# The depth of graph loading makes room for (the layers are not known before).
_LOADABLE_LAYERS = 10_000


def _revived_lambdas(model):
    return [
        layer.name
        for layer in model.submodules  # nested models' layers too
        if f"{type(layer).__module__}.{type(layer).__name__}" == _REVIVED_LAMBDA
    ]


def _saved_by_keras3(path):
    """Whether `path` is a `.keras` archive that Keras 3 wrote."""
    path = os.fspath(path)
    if not path.endswith(".keras") or not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        try:
            metadata = json.loads(archive.read("metadata.json"))
        except (KeyError, ValueError):
            return False
    return str(metadata.get("keras_version", "")).startswith("3.")


def _load_keras3(path, safe_mode):
    import keras as keras3  # the Keras 3 package, which TensorFlow installs

    return keras3.saving.load_model(path, compile=False, safe_mode=safe_mode)


def load_model(path, safe_mode=True, compile=False):
    """Loads a model saved by tf_keras or Keras 3, with keras_qat's and TFMOT's classes known.

    Use it for the QAT model `apply_retrain_config` returned (saved with
    `model.save`) as for a float model. `.keras`, `.h5` and SavedModel
    directories load alike; in safe mode (the default) none of them runs
    Python code stored in the file (a `Lambda` layer's function), as Keras'
    own `safe_mode` does for `.keras` files only. A `.keras` file written by
    Keras 3 is loaded by Keras 3 and rebuilt as tf_keras
    (`keras3.as_tf_keras`), without its optimizer.

    Args:
        path: A `.keras` or `.h5` file, or a SavedModel directory.
        safe_mode: Refuse files that carry Python code. Set it to `False` only
            for files you trust. Defaults to `True`.
        compile: Restore the optimizer and loss as well, e.g. to resume
            training. Defaults to `False`.

    Returns:
        The tf_keras model.

    Raises:
        ModelFileError: if the file does not exist, cannot be loaded, or
            carries code and `safe_mode` is True.
        UnsupportedModelError: if a Keras 3 model cannot be rebuilt as tf_keras.
    """
    if not tf.io.gfile.exists(os.fspath(path)):  # also gs:// and other TensorFlow paths
        raise ModelFileError(f"cannot load model {path}: no such file or directory")
    try:
        with (
            quantize_scope(),
            SafeModeScope(safe_mode),
            graph_recursion_room(layers=_LOADABLE_LAYERS),
        ):
            if _saved_by_keras3(path):
                model = _load_keras3(path, safe_mode)
            else:
                model = keras.models.load_model(path, compile=compile, safe_mode=safe_mode)
    except Exception as e:  # load_model raises many types; all mean "cannot use this file"
        message = str(e).split("\n")[0]
        if "Lambda" in message and safe_mode:
            message = "it holds a Lambda layer whose Python code loading would run"
        raise ModelFileError(_refusal(path, message, safe_mode)) from None
    model = as_tf_keras(model)  # outside the try: its refusals name the layer, not the file
    lambdas = _revived_lambdas(model) if safe_mode else []
    if lambdas:
        raise ModelFileError(
            _refusal(path, f"it holds Lambda layer(s) {lambdas} with Python code", safe_mode)
        )
    return model


def _refusal(path, reason, safe_mode):
    if safe_mode and "Lambda" in reason:
        return (
            f"cannot load model {path}: {reason}. Load it only if you trust its source: "
            "safe_mode=False (CLI: --unsafe)."
        )
    return f"cannot load model {path}: {reason}"
