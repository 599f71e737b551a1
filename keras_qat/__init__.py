"""keras_qat: quantization-aware training for tf_keras models from an AMCT-style retrain config."""

from keras_qat.apply import apply_retrain_config
from keras_qat.config import create_quant_retrain_config, read_retrain_config
from keras_qat.errors import ConfigError, ExportError, UnsupportedModelError
from keras_qat.export import check_tflite, export_saved_model, export_tflite, predict_tflite
from keras_qat.quantizers import quantize_scope
from keras_qat.record import quant_record
from keras_qat.report import quant_report

__all__ = [
    "ConfigError",
    "ExportError",
    "UnsupportedModelError",
    "apply_retrain_config",
    "check_tflite",
    "create_quant_retrain_config",
    "export_saved_model",
    "export_tflite",
    "predict_tflite",
    "quant_record",
    "quant_report",
    "quantize_scope",
    "read_retrain_config",
]

__version__ = "0.1.0"
