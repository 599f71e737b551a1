"""The one place that selects Keras 2 (`tf_keras`) for keras_qat and TFMOT.

TensorFlow 2.21 ships Keras 3 as `tf.keras` unless `TF_USE_LEGACY_KERAS` is set
before `tf.keras` is first touched. TFMOT only works with Keras 2; on import it
sets that variable and, when `tf.keras` already resolved to Keras 3, falls back
to `tf_keras` itself. Importing `tf_keras` directly here makes keras_qat behave
the same whichever of the two happened in the user's interpreter.
"""

import tensorflow_model_optimization as tfmot
import tf_keras as keras
from tf_keras.src.layers.core.tf_op_layer import TFOpLambda
from tf_keras.src.saving.serialization_lib import SafeModeScope

__all__ = ["SafeModeScope", "TFOpLambda", "is_keras3_object", "keras", "tfmot"]


def is_keras3_object(obj):
    """Tells whether `obj` is a Keras 3 layer or model (not usable with TFMOT).

    Args:
        obj: Any object, typically what a user passed as `model`.

    Returns:
        True when the object's class comes from the Keras 3 package.
    """
    if isinstance(obj, keras.layers.Layer):
        return False
    return any(cls.__module__.split(".")[0] == "keras" for cls in type(obj).__mro__)
