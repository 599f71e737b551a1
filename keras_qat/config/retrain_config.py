"""The validated retrain config: one plain object per JSON object, same key names."""

import dataclasses

from keras_qat.config import schema
from keras_qat.layer_table import owner_of


@dataclasses.dataclass(frozen=True)
class DataQuantConfig:
    """`retrain_data_config`: how a layer's input activation is quantized.

    Args:
        algo: Always `"ulq_quantize"`. Defaults to `"ulq_quantize"`.
        dst_type: `"INT8"` or `"INT4"`. Defaults to `"INT8"`.
        clip_max: Fixed upper clip bound (> 0), or None to initialise it with
            IFMR and learn it. Defaults to `None`.
        clip_min: Fixed lower clip bound (< 0), or None. Defaults to `None`.
        fixed_min: True pins the lower bound at 0; None resolves it from the
            layer graph. Defaults to `None`.
    """

    algo: str = "ulq_quantize"
    dst_type: str = "INT8"
    clip_max: float | None = None
    clip_min: float | None = None
    fixed_min: bool | None = None

    def to_dict(self):
        """Returns the canonical JSON object, leaving out unset optional keys."""
        keys = ("algo", "clip_max", "clip_min", "fixed_min", "dst_type")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


@dataclasses.dataclass(frozen=True)
class WeightQuantConfig:
    """`retrain_weight_config`: how a layer's weights are quantized.

    Args:
        channel_wise: One scale per output channel (True) or per tensor.
        algo: `"arq_retrain"` or `"ulq_quantize"`. Defaults to `"arq_retrain"`.
        dst_type: `"INT8"` or `"INT4"`. Defaults to `"INT8"`.
    """

    channel_wise: bool
    algo: str = "arq_retrain"
    dst_type: str = "INT8"

    def to_dict(self):
        """Returns the canonical JSON object."""
        return {"algo": self.algo, "channel_wise": self.channel_wise, "dst_type": self.dst_type}


@dataclasses.dataclass(frozen=True)
class LayerRetrainConfig:
    """One layer's entry.

    Args:
        retrain_data_config: The input quantization; None for an Embedding
            (its input holds indices).
        retrain_weight_config: The weight quantization; None for layers
            without weights (AveragePooling2D).
        retrain_enable: False leaves the layer float. Defaults to `True`.
    """

    retrain_data_config: DataQuantConfig | None
    retrain_weight_config: WeightQuantConfig | None
    retrain_enable: bool = True

    def to_dict(self):
        """Returns the canonical JSON object."""
        entry = {"retrain_enable": self.retrain_enable}
        if self.retrain_data_config is not None:
            entry["retrain_data_config"] = self.retrain_data_config.to_dict()
        if self.retrain_weight_config is not None:
            entry["retrain_weight_config"] = self.retrain_weight_config.to_dict()
        return entry


@dataclasses.dataclass(frozen=True)
class RetrainConfig:
    """A whole validated config.

    Args:
        layers: Layer name -> `LayerRetrainConfig`, in model order.
        batch_num: Calibration batches for IFMR. Defaults to `1`.
        version: Config format version. Defaults to `1`.
        resolved_fixed_min: Layer name (for a product, each of its
            `layer_table.operand_keys`) -> the `fixed_min` used for it, as
            validation resolved it against the model: as given; false when
            the config gives `clip_min`; otherwise true exactly when the
            layer's input is provably non-negative (after a ReLU, say).
            Defaults to empty (not written by `to_dict`).
    """

    layers: dict
    batch_num: int = schema.DEFAULT_BATCH_NUM
    version: int = schema.VERSION
    resolved_fixed_min: dict = dataclasses.field(default_factory=dict, compare=False)

    def enabled_inputs(self):
        """`{operand key: layer name}` of the quantized inputs of the enabled layers, in order."""
        enabled = set(self.enabled_layers)
        return {
            key: owner_of(key, self.layers)
            for key in self.resolved_fixed_min
            if owner_of(key, self.layers) in enabled
        }

    @property
    def enabled_layers(self):
        """Names of the layers with `retrain_enable` true, in model order."""
        return [name for name, layer in self.layers.items() if layer.retrain_enable]

    def to_dict(self):
        """Returns the canonical JSON document."""
        document = {"version": self.version, "batch_num": self.batch_num}
        document.update((name, layer.to_dict()) for name, layer in self.layers.items())
        return document
