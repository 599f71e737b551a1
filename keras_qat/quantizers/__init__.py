"""ARQ and ULQ as TFMOT quantizers, and what is needed to load models that use them."""

from keras_qat._keras import tfmot
from keras_qat.attention_layers import ATTENTION_LAYERS
from keras_qat.quantizers.arq import ArqQuantizer
from keras_qat.quantizers.bias import BiasQuantizer
from keras_qat.quantizers.file_activation import ActivatedOutputQuantizer, FileActivation
from keras_qat.quantizers.file_arithmetic import (
    FileAdd,
    FileAttentionContext,
    FileAttentionScores,
    FileDot,
    FileMultiply,
    FilePReLU,
    FileScalarOperation,
    FileSubtract,
)
from keras_qat.quantizers.file_resize import FileResizeBilinear, FileResizing
from keras_qat.quantizers.input_layer import InputQuantizeLayer
from keras_qat.quantizers.output_layer import OutputQuantizeLayer
from keras_qat.quantizers.quantize_config import WeightQuantizeConfig
from keras_qat.quantizers.reader_grid import ReaderGridLayer
from keras_qat.quantizers.tracked import TrackedRangeQuantizer
from keras_qat.quantizers.ulq import UlqQuantizer
from keras_qat.quantizers.ulq_weight import UlqWeightQuantizer
from keras_qat.quantizers.wrapper import QatWrapper

CUSTOM_OBJECTS = {
    cls.__name__: cls
    for cls in (
        ActivatedOutputQuantizer,
        ArqQuantizer,
        BiasQuantizer,
        FileActivation,
        FileAdd,
        FileAttentionContext,
        FileAttentionScores,
        FileDot,
        FileMultiply,
        FilePReLU,
        FileResizeBilinear,
        FileResizing,
        FileScalarOperation,
        FileSubtract,
        InputQuantizeLayer,
        OutputQuantizeLayer,
        QatWrapper,
        ReaderGridLayer,
        TrackedRangeQuantizer,
        UlqQuantizer,
        UlqWeightQuantizer,
        WeightQuantizeConfig,
    )
} | ATTENTION_LAYERS


def quantize_scope():
    """Scope in which `tf_keras.models.load_model` restores a keras_qat QAT model.

    Example:

    >>> with quantize_scope():  # doctest: +SKIP
    ...     model = tf_keras.models.load_model("qat_model.keras")

    Returns:
        A context manager knowing TFMOT's and keras_qat's classes.
    """
    return tfmot.quantization.keras.quantize_scope(CUSTOM_OBJECTS)


__all__ = [
    "ActivatedOutputQuantizer",
    "ArqQuantizer",
    "BiasQuantizer",
    "FileActivation",
    "FileAdd",
    "FileAttentionContext",
    "FileAttentionScores",
    "FileDot",
    "FileMultiply",
    "FilePReLU",
    "FileResizeBilinear",
    "FileResizing",
    "FileScalarOperation",
    "FileSubtract",
    "InputQuantizeLayer",
    "OutputQuantizeLayer",
    "QatWrapper",
    "ReaderGridLayer",
    "TrackedRangeQuantizer",
    "UlqQuantizer",
    "UlqWeightQuantizer",
    "WeightQuantizeConfig",
    "quantize_scope",
]
