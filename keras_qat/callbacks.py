"""Keras callbacks for QAT training."""

import tensorflow as tf

from keras_qat._keras import keras
from keras_qat.quantizers.introspection import non_finite_layers


class StopOnNonFiniteClips(keras.callbacks.Callback):
    """Stops `fit` at the first batch after which a clip bound or weight scale is NaN or infinite.

    A learning rate far too high can send learned clips to NaN; every later
    step then trains a model that cannot be exported. After each batch one
    compiled reduction tells whether every float variable of the model is
    finite; only when one is not are the quantizers read one by one.

    Args:
        raise_error: Raise `FloatingPointError` naming the layers instead of
            only stopping (and printing them). Defaults to `False`.

    Attributes:
        layers: The layers found non-finite (empty while training is healthy).
    """

    def __init__(self, raise_error=False):
        super().__init__()
        self.raise_error = raise_error
        self.layers = []
        self._all_finite = None

    def on_train_begin(self, logs=None):
        variables = [v for v in self.model.variables if v.dtype.is_floating]
        self._all_finite = tf.function(
            lambda: tf.reduce_all([tf.reduce_all(tf.math.is_finite(v)) for v in variables])
        )
        self._all_finite()  # traced here, not in the first batches Keras times

    def on_train_batch_end(self, batch, logs=None):
        if bool(self._all_finite()):
            return
        self.layers = non_finite_layers(self.model)
        if not self.layers:
            return
        message = (
            f"clip bounds or weight scales became NaN or infinite after batch {batch} in "
            f"layer(s) {self.layers}; training stopped. Lower the learning rate and retrain."
        )
        if self.raise_error:
            raise FloatingPointError(message)
        print(message)
        self.model.stop_training = True

    def get_config(self):
        return {"raise_error": self.raise_error}
