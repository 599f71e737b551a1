"""Exceptions raised by keras_qat for bad user input."""


class ConfigError(ValueError):
    """A retrain config (or config definition) that cannot be used.

    Every problem found is listed, one per line, each naming the layer and the
    key and showing the received value.

    Args:
        errors: The individual error messages.

    Attributes:
        errors: The individual error messages, in the order they were found.
    """

    def __init__(self, errors):
        if isinstance(errors, str):
            errors = [errors]
        self.errors = list(errors)
        super().__init__("\n".join(self.errors))


class UnsupportedModelError(ValueError):
    """A model keras_qat cannot quantize (Keras 3, subclassed, duplicate names...)."""


class ExportError(ValueError):
    """The model cannot be exported as asked (converter rejection, no or non-finite quantizers).

    Nothing is written when it is raised.
    """


class DataError(ValueError):
    """Calibration, representative or check data that does not fit the model."""


class ModelFileError(ValueError):
    """A model file that cannot be loaded, or that would run code to load (safe mode)."""
