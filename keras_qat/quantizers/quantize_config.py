"""The TFMOT QuantizeConfig that attaches keras_qat's weight quantizers to a layer."""

from keras_qat._keras import tfmot
from keras_qat.layer_table import layer_spec
from keras_qat.quantizers.arq import ArqQuantizer
from keras_qat.quantizers.bias import BiasQuantizer
from keras_qat.quantizers.file_activation import ActivatedOutputQuantizer
from keras_qat.quantizers.tracked import TrackedRangeQuantizer
from keras_qat.quantizers.ulq_weight import UlqWeightQuantizer
from keras_qat.quantizers.wrapper import kernel_entries

WEIGHT_QUANTIZERS = {"arq_retrain": ArqQuantizer, "ulq_quantize": UlqWeightQuantizer}


class WeightQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
    """Quantizes a layer's kernels as its `retrain_weight_config` says.

    The layer's input is quantized by a separate `UlqQuantizer` layer placed
    before it; its bias is rounded to the file's int32 grid (`BiasQuantizer`).
    Its output is left to the next layer's input quantizer, unless
    no input quantizer reads it: then `output_bounds` gives it a
    `TrackedRangeQuantizer` (see `graph.output_plan`). A layer that is a
    model output with an activation the converter does not fuse runs
    linear, and its output quantizer applies `output_activation` after the
    rounding as the file does (`ActivatedOutputQuantizer`). A layer that is a model
    output and is read by an input quantizer (`output_on_reader`) has its
    output rounded on that quantizer's grid, where the file holds the one
    int8 tensor both read (`QatWrapper`).

    Args:
        kernels: `(attribute, channel layout)` pairs from the layer table.
        algo: `"arq_retrain"` or `"ulq_quantize"`. Defaults to `"arq_retrain"`.
        channel_wise: One scale per output channel. Defaults to `True`.
        dst_type: `"INT8"` or `"INT4"`. Defaults to `"INT8"`.
        output_bounds: `(floor, ceiling)` of the output quantizer's range
            (`None` where unbounded), or `None` for no output quantizer.
            Defaults to `None`.
        output_activation: The activation the output quantizer applies (a
            tf_keras activation name), or `None`. Needs
            `output_bounds`. Defaults to `None`.
        output_on_reader: Round the output on the grid of the input
            quantizer reading it. Defaults to `False`.
    """

    def __init__(
        self,
        kernels,
        algo="arq_retrain",
        channel_wise=True,
        dst_type="INT8",
        output_bounds=None,
        output_activation=None,
        output_on_reader=False,
    ):
        self.kernels = tuple(tuple(pair) for pair in kernels)
        self.algo = algo
        self.channel_wise = channel_wise
        self.dst_type = dst_type
        self.output_bounds = None if output_bounds is None else tuple(output_bounds)
        self.output_activation = output_activation
        self.output_on_reader = output_on_reader
        quantizer = WEIGHT_QUANTIZERS[algo]
        self.quantizers = [quantizer(dst_type, channel_wise, layout) for _, layout in self.kernels]

    @classmethod
    def for_layer(
        cls,
        layer,
        weight_config,
        output_bounds=None,
        output_activation=None,
        output_on_reader=False,
    ):
        """Builds the config of `layer` from its `WeightQuantConfig`.

        Args:
            layer: A quantizable layer with weights.
            weight_config: The layer's validated `retrain_weight_config`.
            output_bounds: See the class. Defaults to `None`.
            output_activation: See the class. Defaults to `None`.
            output_on_reader: See the class. Defaults to `False`.

        Returns:
            A `WeightQuantizeConfig`.
        """
        return cls(
            layer_spec(layer).kernels,
            weight_config.algo,
            weight_config.channel_wise,
            weight_config.dst_type,
            output_bounds,
            output_activation,
            output_on_reader,
        )

    def get_weights_and_quantizers(self, layer):
        # The wrapper's build calls this once `layer` is built. The wrapper runs
        # `layer.call` itself with quantized kernel tensors put in place of the
        # variables; with a full-rank input spec (Conv2DTranspose,
        # SeparableConv2D) SavedModel would also trace `layer` on its own and
        # capture such a tensor of the wrapper's graph: "Unable to save function"
        # (tensorflow/model-optimization#964). Without a spec it is not traced
        # alone, as for Conv2D, whose spec has only a minimum rank.
        layer.input_spec = None
        pairs = [
            (getattr(layer, attr), quantizer)
            for (attr, _), quantizer in zip(self.kernels, self.quantizers, strict=True)
        ]
        if getattr(layer, "use_bias", False):
            pairs.append((layer.bias, BiasQuantizer()))
        return pairs

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        attrs = [attr for attr, _ in self.kernels]
        if getattr(layer, "use_bias", False):
            attrs.append("bias")
        for attr, weight in zip(attrs, quantize_weights, strict=True):
            setattr(layer, attr, weight)

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        if self.output_bounds is None:
            return []
        if self.output_activation is not None:
            return [ActivatedOutputQuantizer(self.output_activation, *self.output_bounds)]
        return [TrackedRangeQuantizer(*self.output_bounds)]

    def get_config(self):
        return {
            "kernels": [list(pair) for pair in self.kernels],
            "algo": self.algo,
            "channel_wise": self.channel_wise,
            "dst_type": self.dst_type,
            "output_bounds": None if self.output_bounds is None else list(self.output_bounds),
            "output_activation": self.output_activation,
            "output_on_reader": self.output_on_reader,
        }

    def __eq__(self, other):
        return type(other) is type(self) and other.get_config() == self.get_config()

    def __ne__(self, other):
        return not self == other


def initialize_weight_scales(wrapper):
    """Sets learned weight scales from the wrapped layer's current kernels.

    ULQ weight scales start from the ARQ rule, which needs the trained float
    weights: call this once the wrapper holds them (ARQ needs nothing).

    Args:
        wrapper: A built wrapper using a `WeightQuantizeConfig`.
    """
    for kernel, quantizer, quantizer_vars in kernel_entries(wrapper):
        if isinstance(quantizer, UlqWeightQuantizer):
            quantizer.initialize(quantizer_vars, kernel)
