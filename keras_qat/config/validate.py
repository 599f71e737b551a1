"""Reading a retrain config against a model: every check, before anything else happens."""

import copy
import math
import os

import numpy as np

from keras_qat.config import schema
from keras_qat.config.jsonio import read_json
from keras_qat.config.retrain_config import (
    DataQuantConfig,
    LayerRetrainConfig,
    RetrainConfig,
    WeightQuantConfig,
)
from keras_qat.config.schema_errors import did_you_mean, schema_errors, show
from keras_qat.errors import ConfigError
from keras_qat.graph.fixed_min import FixedMinResolver
from keras_qat.graph.model_check import checked_model, model_layers
from keras_qat.layer_table import QUANTIZABLE_TYPE_NAMES, layer_spec, operand_keys


def load_config_document(config):
    """Returns the raw config document from a path or a dict.

    Args:
        config: A path to a JSON file, or an already parsed dict.

    Returns:
        A deep copy of the document (the caller's dict is never modified).

    Raises:
        ConfigError: if the file cannot be read or parsed.
    """
    if isinstance(config, (str, os.PathLike)):
        return read_json(config)
    return copy.deepcopy(config)


def _describe(path):
    if not path:
        return "", ""
    head, rest = str(path[0]), [str(p) for p in path[1:]]
    if head in schema.TOP_LEVEL_KEYS:
        return "", ".".join([head, *rest])
    return f"Layer '{head}': ", ".".join(rest) or "its entry"


def _weight_algo(name, entry, errors):
    algo = entry.get("algo")
    alias = entry.get(schema.WEIGHT_ALGO_KEY_ALIAS)
    if algo is not None and alias is not None and algo != alias:
        errors.append(
            f"Layer '{name}': retrain_weight_config.algo and its alias "
            f"{schema.WEIGHT_ALGO_KEY_ALIAS} disagree; give one. "
            f"Received: algo={show(algo)}, {schema.WEIGHT_ALGO_KEY_ALIAS}={show(alias)}"
        )
    algo = algo or alias or WeightQuantConfig.algo
    return schema.WEIGHT_ALGO_ALIASES.get(algo, algo)


# The largest finite float32: the QAT model holds clip bounds in float32.
FLOAT32_MAX = float(np.finfo(np.float32).max)
# The narrowest clip range the int8 file keeps: the TFLite converter widens
# ranges narrower than 1e-6 (its near-zero tolerance), so the file would no
# longer compute what the QAT model computes; a factor 10 of margin.
MIN_CLIP_SPAN = 1e-5


def _as_float(value):
    """`float(value)`, with integers too large for a float as infinity."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _clip_value_errors(where, data):
    errors = []
    for key in ("clip_max", "clip_min"):
        value = data.get(key)
        if value is not None and not abs(_as_float(value)) <= FLOAT32_MAX:
            shown = show(value)
            shown = shown if len(shown) <= 40 else f"{shown[:20]}...({len(shown)} characters)"
            errors.append(
                f"{where}.{key} must be a finite number within float32's range "
                f"(|value| <= {FLOAT32_MAX:.4g}). Received: {key}={shown}"
            )
    return errors


def _clip_span_errors(where, clip_max, clip_min):
    with np.errstate(over="ignore"):  # an overflow is what this measures
        span = np.float32(_as_float(clip_max)) - np.float32(_as_float(clip_min))
    if MIN_CLIP_SPAN <= span < np.inf:
        return []
    why = (
        f"narrower than {MIN_CLIP_SPAN:g}, which the int8 file cannot represent"
        if span < MIN_CLIP_SPAN
        else "wider than float32 can hold"
    )
    return [
        f"{where}: the clip range clip_max - clip_min is {why}. "
        f"Received: clip_max={show(clip_max)}, clip_min={show(clip_min)}"
    ]


def _clip_errors(name, data, fixed_min):
    """Checks the clip bounds of one layer; `fixed_min` is given or resolved."""
    clip_max, clip_min = data.get("clip_max"), data.get("clip_min")
    where = f"Layer '{name}': retrain_data_config"
    errors = _clip_value_errors(where, data)
    if not errors and clip_max is not None and (clip_min is not None or fixed_min):
        errors += _clip_span_errors(where, clip_max, 0 if clip_min is None else clip_min)
    if clip_min is not None and data.get("fixed_min") is True:
        errors.append(
            f"{where}.clip_min cannot be set together with fixed_min: true (the lower bound is "
            f"then 0). Received: clip_min={show(clip_min)}, fixed_min=true"
        )
    elif clip_min is not None and clip_max is None:
        errors.append(
            f"{where}.clip_min requires clip_max: the clip range is given whole or learned. "
            f"Received: clip_min={show(clip_min)}"
        )
    elif clip_max is not None and clip_min is None and not fixed_min:
        why = (
            "fixed_min is false"
            if data.get("fixed_min") is False
            else "fixed_min resolves to false: the layer's input is not provably non-negative"
        )
        errors.append(
            f"{where}.clip_max without clip_min needs the lower bound fixed at 0, but {why}. "
            f"Give clip_min too, or set fixed_min: true. Received: clip_max={show(clip_max)}"
        )
    return errors


class _LayerReader:
    """Builds `LayerRetrainConfig`s for one model, collecting errors."""

    def __init__(self, model):
        self.model = model
        self.layers = {layer.name: layer for layer in model_layers(model)}
        self.order = {name: index for index, name in enumerate(self.layers)}
        self.fixed_min = FixedMinResolver(model)
        self.resolved_fixed_min = {}
        self.errors = []

    def lookup(self, name):
        """Returns the quantizable layer called `name`, or None after noting why not."""
        layer = self.layers.get(name)
        if layer is None:
            hint = did_you_mean(name, list(self.layers))
            self.errors.append(
                f"Layer '{name}': the model '{self.model.name}' has no layer of that name.{hint}"
            )
        elif layer_spec(layer) is None:
            types = ", ".join(QUANTIZABLE_TYPE_NAMES)
            self.errors.append(
                f"Layer '{name}': layers of type {type(layer).__name__} cannot be quantized "
                f"(quantizable types: {types}). Remove its entry."
            )
            layer = None
        return layer

    def read(self, layer, entry):
        """Returns the `LayerRetrainConfig` of a schema-valid entry, noting errors."""
        name, spec = layer.name, layer_spec(layer)
        data = entry.get("retrain_data_config", {})
        weights = entry.get("retrain_weight_config")
        if weights is not None and not spec.has_weights:
            self.errors.append(
                f"Layer '{name}': {type(layer).__name__} has no weights, only its input is "
                f"quantized; remove retrain_weight_config. Received: retrain_weight_config="
                f"{show(weights)}"
            )
        if not spec.operands and "retrain_data_config" in entry:
            self.errors.append(
                f"Layer '{name}': {type(layer).__name__} reads indices, only its weights are "
                f"quantized; remove retrain_data_config. Received: retrain_data_config="
                f"{show(data)}"
            )
        keys = operand_keys(name, spec)
        for position, key in enumerate(keys):
            fixed_min = data.get("fixed_min")
            if fixed_min is None:
                # An explicit lower bound is the user's choice, even after a ReLU.
                fixed_min = "clip_min" not in data and self.fixed_min.input_is_non_negative(
                    layer, position if len(keys) > 1 else None
                )
            self.resolved_fixed_min[key] = fixed_min
        if keys:
            fixed = all(self.resolved_fixed_min[key] for key in keys)
            self.errors += _clip_errors(name, data, fixed)
        weight_config = None
        if spec.has_weights:
            weights = weights or {}
            weight_config = WeightQuantConfig(
                channel_wise=weights.get("channel_wise", spec.channel_wise_default),
                algo=_weight_algo(name, weights, self.errors),
                **_present(weights, ("dst_type",)),
            )
        data_config = None
        if spec.operands:
            data_config = DataQuantConfig(
                **_present(data, ("algo", "dst_type", "fixed_min")),
                **{k: _as_float(v) for k, v in _present(data, ("clip_max", "clip_min")).items()},
            )
        config = LayerRetrainConfig(
            retrain_data_config=data_config,
            retrain_weight_config=weight_config,
            **_present(entry, ("retrain_enable",)),
        )
        if config.retrain_enable and layer.compute_dtype != "float32":
            # The fake-quant ops are float32 only, and their grid would not
            # survive a cast to a narrower float on the way into the layer.
            self.errors.append(
                f"Layer '{name}': computes in {layer.compute_dtype} (dtype policy "
                f"'{layer.dtype_policy.name}'); quantization-aware training needs float32. "
                "Build the model under the 'float32' policy "
                "(tf_keras.mixed_precision.set_global_policy('float32')) or set "
                "retrain_enable: false for it. Received: retrain_enable=true"
            )
        return config


def _present(mapping, keys):
    """The items of `mapping` among `keys`: absent keys keep the dataclass defaults."""
    return {k: mapping[k] for k in keys if k in mapping}


def _batch_num(document, entries, errors):
    """Reconciles the top-level batch_num with the English table's per-layer spelling."""
    found = {}
    if "batch_num" in document:
        found["batch_num"] = document["batch_num"]
    for name, entry in entries.items():
        if "batch_num" in entry.get("retrain_data_config", {}):
            found[f"{name}.retrain_data_config.batch_num"] = entry["retrain_data_config"][
                "batch_num"
            ]
    values = {int(v) for v in found.values()}
    if len(values) > 1:
        listed = ", ".join(f"{k}={v}" for k, v in found.items())
        errors.append(f"batch_num is given several times with different values. Received: {listed}")
    return values.pop() if len(values) == 1 else schema.DEFAULT_BATCH_NUM


def parse_retrain_config(document, model, source=None):
    """Validates a parsed retrain config against an already checked `model`.

    Args:
        document: The parsed JSON document (not modified).
        model: The tf_keras model the config is for, already accepted by
            `check_model`.
        source: The config file's path, prefixed to every error, or None.
            Defaults to `None`.

    Returns:
        A `RetrainConfig` in canonical form, layers in model order, defaults
        filled in.

    Raises:
        ConfigError: listing every problem found in the config.
    """
    if not isinstance(document, dict):
        errors = schema_errors(document, schema.RETRAIN_CONFIG_SCHEMA, _describe)
        raise _config_error(errors, source)
    # Entries are checked one by one so that a bad entry does not hide the
    # model-level errors of the others.
    top_level = {k: document[k] for k in schema.TOP_LEVEL_KEYS if k in document}
    top_level_errors = schema_errors(top_level, schema.RETRAIN_CONFIG_SCHEMA, _describe)
    errors = list(top_level_errors)
    reader = _LayerReader(model)
    valid_entries, layers = {}, {}
    for name, entry in document.items():
        if name in schema.TOP_LEVEL_KEYS:
            continue
        entry_errors = schema_errors({name: entry}, schema.RETRAIN_CONFIG_SCHEMA, _describe)
        errors += entry_errors
        layer = reader.lookup(name)
        if layer is not None and not entry_errors:
            valid_entries[name] = entry
            layers[name] = reader.read(layer, entry)
    errors += reader.errors
    # An invalid top-level batch_num is already reported; only valid values are reconciled.
    batch_num = _batch_num({} if top_level_errors else top_level, valid_entries, errors)
    if not errors and not any(layer.retrain_enable for layer in layers.values()):
        errors.append(
            "No layer has retrain_enable: true, so nothing would be quantized. "
            f"Received: {len(layers)} layer entries, none enabled"
        )
    if errors:
        raise _config_error(errors, source)
    ordered = sorted(layers, key=reader.order.__getitem__)
    return RetrainConfig(
        layers={name: layers[name] for name in ordered},
        batch_num=batch_num,
        version=document.get("version", schema.VERSION),
        resolved_fixed_min={
            key: reader.resolved_fixed_min[key]
            for name in ordered
            for key in operand_keys(name, layer_spec(reader.layers[name]))
        },
    )


def read_retrain_config(config, model):
    """Reads and validates a retrain config (path, dict or `RetrainConfig`) for `model`.

    Args:
        config: Path to a config.json, the parsed dict, or a `RetrainConfig`
            (read for this or another model: it is checked again).
        model: The tf_keras or Keras 3 model the config is for.

    Returns:
        The validated `RetrainConfig`.

    Raises:
        UnsupportedModelError: if the model cannot be quantized at all.
        ConfigError: listing every problem found in the config.
    """
    model = checked_model(model)
    if isinstance(config, RetrainConfig):
        config = config.to_dict()
    source = os.fspath(config) if isinstance(config, (str, os.PathLike)) else None
    return parse_retrain_config(load_config_document(config), model, source)


def _config_error(errors, source):
    return ConfigError([f"{source}: {e}" if source else e for e in errors])
