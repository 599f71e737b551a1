"""keras_qat: quantization-aware training for Keras models from an AMCT-style retrain config.

The public names load on first use, so that `keras-qat --help` and
`import keras_qat.datasets` do not import TensorFlow.
"""

import importlib

# Public name -> the module that defines it.
_EXPORTS = {
    "ConfigError": "keras_qat.errors",
    "DataError": "keras_qat.errors",
    "ExportError": "keras_qat.errors",
    "ModelFileError": "keras_qat.errors",
    "UnsupportedModelError": "keras_qat.errors",
    "StopOnNonFiniteClips": "keras_qat.callbacks",
    "apply_retrain_config": "keras_qat.apply",
    "check_tflite": "keras_qat.litert",
    "create_quant_retrain_config": "keras_qat.config",
    "export_saved_model": "keras_qat.export",
    "export_tflite": "keras_qat.export",
    "load_model": "keras_qat.loading",
    "predict_tflite": "keras_qat.litert",
    "quant_record": "keras_qat.record",
    "quant_report": "keras_qat.report",
    "quantize_scope": "keras_qat.quantizers",
    "read_retrain_config": "keras_qat.config",
    "search_mixed_precision": "keras_qat.search",
}

__all__ = sorted(_EXPORTS)

__version__ = "0.1.0"


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'keras_qat' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted([*globals(), *__all__])
