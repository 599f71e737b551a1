"""The retrain config: schema and AMCT's defaults, validation, reading and writing."""

from keras_qat.config.create import create_quant_retrain_config
from keras_qat.config.retrain_config import (
    DataQuantConfig,
    LayerRetrainConfig,
    RetrainConfig,
    WeightQuantConfig,
)
from keras_qat.config.validate import read_retrain_config

__all__ = [
    "DataQuantConfig",
    "LayerRetrainConfig",
    "RetrainConfig",
    "WeightQuantConfig",
    "create_quant_retrain_config",
    "read_retrain_config",
]
