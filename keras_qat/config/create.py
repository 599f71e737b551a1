"""Creating a retrain config for a model, optionally from a simple definition file.

The definition file follows AMCT's simple config, as AMCT's protobuf text
(`.cfg`, see `amct_cfg`) or in JSON::

    {"batch_num": 2,
     "skip_layers": ["logits"],
     "skip_layer_types": ["Conv2DTranspose"],
     "retrain_data_quant_config": {"dst_type": "INT4"},
     "retrain_weight_quant_config": {"dst_type": "INT4"},
     "override_layer_types": {"Dense": {"retrain_weight_quant_config": {"channel_wise": false}}},
     "override_layer_configs": {"conv1": {"retrain_data_quant_config": {"dst_type": "INT8"},
                                          "retrain_weight_quant_config": {"dst_type": "INT8"}}}}

Layer types are Keras class names, or AMCT's TensorFlow op types
(`DepthwiseConv2dNative`, `MatMul`, `Conv2DBackpropInput`, `AvgPool`).
Priority per key: per-layer override > per-type override > global > default.
Skipped layers keep an entry with `retrain_enable: false`, so turning one
back on is a one-word edit.
"""

import os

from keras_qat.config import schema
from keras_qat.config.amct_cfg import read_cfg
from keras_qat.config.jsonio import write_json_atomic
from keras_qat.config.retrain_config import (
    DataQuantConfig,
    LayerRetrainConfig,
    WeightQuantConfig,
)
from keras_qat.config.schema_errors import did_you_mean, schema_errors
from keras_qat.config.validate import load_config_document, parse_retrain_config
from keras_qat.errors import ConfigError
from keras_qat.graph.model_check import checked_model, model_layers
from keras_qat.layer_table import DEFINITION_TYPE_NAMES, TYPE_ALIASES, layer_spec, source_kind

_BLOCKS = {
    "retrain_data_quant_config": "retrain_data_config",
    "retrain_weight_quant_config": "retrain_weight_config",
}


def default_layer_entry(layer):
    """Returns the default config entry (AMCT's defaults) for a quantizable layer.

    Args:
        layer: A layer whose type is in the layer table.

    Returns:
        The entry as a JSON object, every key at its default.
    """
    spec = layer_spec(layer)
    weights = WeightQuantConfig(spec.channel_wise_default) if spec.has_weights else None
    data = DataQuantConfig() if spec.operands else None
    return LayerRetrainConfig(data, weights).to_dict()


def _describe_definition(path):
    return "", ".".join(str(p) for p in path) or "the definition"


def _unknown_names(definition, layers):
    """Errors for layer names and layer types in the definition that do not fit the model."""
    errors = []
    quantizable = [name for name, layer in layers.items() if layer_spec(layer)]
    for key in ("skip_layers", "override_layer_configs"):
        for name in definition.get(key, ()):
            if name not in layers:
                hint = did_you_mean(name, list(layers))
                errors.append(f"{key}: the model has no layer '{name}'.{hint}")
            elif name not in quantizable:
                kind = type(layers[name]).__name__
                errors.append(f"{key}: layer '{name}' ({kind}) cannot be quantized.")
    for key in ("skip_layer_types", "override_layer_types"):
        for kind in definition.get(key, ()):
            if kind not in DEFINITION_TYPE_NAMES:
                hint = did_you_mean(kind, DEFINITION_TYPE_NAMES)
                listed = ", ".join(DEFINITION_TYPE_NAMES)
                errors.append(
                    f"{key}: '{kind}' is not a quantizable layer type.{hint} "
                    f"Quantizable types: {listed}"
                )
    return errors


def _canonical(block):
    """Renames the English table's weight algorithm key to `algo`."""
    block = dict(block)
    if schema.WEIGHT_ALGO_KEY_ALIAS in block:
        block.setdefault("algo", block.pop(schema.WEIGHT_ALGO_KEY_ALIAS))
    return block


def _apply_overrides(entry, overrides, only_present=False):
    """Merges a definition block into `entry`, key by key.

    With `only_present`, blocks the entry does not have are skipped: global
    weight settings pass over layers without weights, whereas a per-type or
    per-layer one aimed at such a layer is kept and reported on validation.
    """
    for definition_key, config_key in _BLOCKS.items():
        if definition_key not in overrides or (only_present and config_key not in entry):
            continue
        entry.setdefault(config_key, {}).update(_canonical(overrides[definition_key]))


def build_config_document(model, definition):
    """Returns the config document for `model` shaped by a definition.

    Args:
        model: A checked tf_keras model.
        definition: The parsed definition (may be empty).

    Returns:
        The config as a JSON object, not yet validated.
    """
    document = {"version": schema.VERSION}
    document["batch_num"] = definition.get("batch_num", schema.DEFAULT_BATCH_NUM)
    skip_layers = set(definition.get("skip_layers", ()))
    skip_types = set(definition.get("skip_layer_types", ()))
    for layer in model_layers(model):
        if layer_spec(layer) is None:
            continue
        kind = source_kind(layer)
        entry = default_layer_entry(layer)
        _apply_overrides(entry, definition, only_present=True)
        _apply_overrides(entry, definition.get("override_layer_types", {}).get(kind, {}))
        _apply_overrides(entry, definition.get("override_layer_configs", {}).get(layer.name, {}))
        if layer.name in skip_layers or kind in skip_types:
            entry["retrain_enable"] = False
        document[layer.name] = entry
    return document


def _resolve_type_aliases(definition):
    """Renames AMCT's op type names to Keras class names; errors for a type given twice."""
    errors = []
    if isinstance(definition.get("skip_layer_types"), list):
        definition["skip_layer_types"] = [
            TYPE_ALIASES.get(kind, kind) for kind in definition["skip_layer_types"]
        ]
    overrides = definition.get("override_layer_types")
    if isinstance(overrides, dict):
        renamed = {}
        for kind, block in overrides.items():
            name = TYPE_ALIASES.get(kind, kind)
            if name in renamed:
                errors.append(f"override_layer_types: '{kind}' and '{name}' are the same type.")
            renamed[name] = block
        definition["override_layer_types"] = renamed
    return errors


def _read_definition(config_definition, model):
    if config_definition is None:
        return {}, None
    source = "config_definition"
    if isinstance(config_definition, (str, os.PathLike)):
        source = f"config_definition {os.fspath(config_definition)}"
    if isinstance(config_definition, (str, os.PathLike)) and source.endswith(".cfg"):
        definition = read_cfg(config_definition)
    else:
        definition = load_config_document(config_definition)
    errors = schema_errors(definition, schema.CONFIG_DEFINITION_SCHEMA, _describe_definition)
    if not errors:
        errors = _resolve_type_aliases(definition)
    if not errors:
        errors = _unknown_names(definition, {layer.name: layer for layer in model_layers(model)})
    if errors:
        raise ConfigError([f"{source}: {e}" for e in errors])
    return definition, source


def create_quant_retrain_config(config_file, model, config_definition=None, overwrite=False):
    """Writes a retrain config with one entry per quantizable layer of `model`.

    Every key is at AMCT's default unless `config_definition` says
    otherwise. The file is written only once everything has been validated,
    and atomically: an existing file is never left half-written.

    Example:

    >>> import tempfile, os
    >>> from keras_qat._keras import keras
    >>> model = keras.Sequential([keras.Input((8, 8, 1)),
    ...     keras.layers.Conv2D(4, 3, name="conv"), keras.layers.Flatten(name="flat"),
    ...     keras.layers.Dense(10, name="logits")])
    >>> path = os.path.join(tempfile.mkdtemp(), "config.json")
    >>> config = create_quant_retrain_config(path, model)
    >>> config["logits"]["retrain_weight_config"]
    {'algo': 'arq_retrain', 'channel_wise': False, 'dst_type': 'INT8'}

    Args:
        config_file: Where to write the config (JSON).
        model: A tf_keras or Keras 3 Sequential or Functional model.
        config_definition: Optional simple definition (path to a JSON file or
            an AMCT `.cfg` file, or a dict) that skips layers and sets
            defaults globally, per layer type and per layer. Defaults to `None`.
        overwrite: Replace an existing `config_file`. Defaults to `False`, so
            that hand edits are never lost by accident.

    Returns:
        The config written, as a dict in canonical form.

    Raises:
        UnsupportedModelError: if the model cannot be quantized.
        ConfigError: if the definition is invalid or yields an invalid config.
        FileExistsError: if `config_file` exists and `overwrite` is False.
    """
    model = checked_model(model)
    definition, source = _read_definition(config_definition, model)
    document = build_config_document(model, definition)
    config = parse_retrain_config(document, model, source).to_dict()
    write_json_atomic(config_file, config, overwrite=overwrite)
    return config
