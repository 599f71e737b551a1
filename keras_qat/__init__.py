"""keras_qat: quantization-aware training for tf_keras models from an AMCT-style retrain config."""

from keras_qat.apply import apply_retrain_config
from keras_qat.config import create_quant_retrain_config, read_retrain_config
from keras_qat.errors import ConfigError, UnsupportedModelError
from keras_qat.quantizers import quantize_scope
from keras_qat.report import quant_report

__all__ = [
    "ConfigError",
    "UnsupportedModelError",
    "apply_retrain_config",
    "create_quant_retrain_config",
    "quant_report",
    "quantize_scope",
    "read_retrain_config",
]

__version__ = "0.1.0"
