"""AMCT's simple config (.cfg): protobuf text format read into the JSON definition's form.

AMCT writes its simple retrain config as a text-format `AMCTRetrainConfig`
message (the fields of AMCT's public `retrain_config_pytorch.proto`, which the
CANN documentation lists for TensorFlow too). keras_qat defines the part of
that message it implements (quantization, no pruning) as a protobuf
descriptor built here, lets the protobuf library parse the file, and turns
the message into the JSON definition `create` reads, so both forms share one
meaning and one set of checks. Clip bounds are doubles here (AMCT: float),
so `clip_max: 0.1` stays 0.1.
"""

import os
import re

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from keras_qat.config.schema_errors import did_you_mean
from keras_qat.errors import ConfigError

_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "keras_qat.amct"
_SCALARS = {"uint32": _F.TYPE_UINT32, "bool": _F.TYPE_BOOL, "double": _F.TYPE_DOUBLE,
            "string": _F.TYPE_STRING}  # fmt: skip
_LABELS = {"optional": _F.LABEL_OPTIONAL, "required": _F.LABEL_REQUIRED,
           "repeated": _F.LABEL_REPEATED}  # fmt: skip

_OVERRIDE = [
    ("retrain_data_quant_config", 2, "RetrainDataQuantConfig"),
    ("retrain_weight_quant_config", 3, "RetrainWeightQuantConfig"),
]

# message -> its fields: (name, number, scalar/enum/message type[, label[, oneof]])
_MESSAGES = {
    "AMCTRetrainConfig": [
        ("batch_num", 1, "uint32"),
        *_OVERRIDE,
        ("skip_layers", 4, "string", "repeated"),
        ("override_layer_configs", 5, "RetrainOverrideLayer", "repeated"),
        ("skip_layer_types", 6, "string", "repeated"),
        ("override_layer_types", 7, "RetrainOverrideLayerType", "repeated"),
    ],
    "RetrainDataQuantConfig": [
        ("ulq_quantize", 13, "ActULQquantize", "optional", "data_retrain_algo"),
    ],
    "ActULQquantize": [
        ("clip_max_min", 1, "ClipMaxMin"),
        ("fixed_min", 2, "bool"),
        ("dst_type", 3, "DataType"),
    ],
    "ClipMaxMin": [
        ("clip_max", 3, "double", "required"),
        ("clip_min", 5, "double", "required"),
    ],
    "RetrainWeightQuantConfig": [
        ("arq_retrain", 1, "WeightRetrain", "optional", "weights_retrain_algo"),
        ("ulq_retrain", 2, "WeightRetrain", "optional", "weights_retrain_algo"),
    ],
    "WeightRetrain": [("dst_type", 1, "DataType"), ("channel_wise", 2, "bool")],
    "RetrainOverrideLayer": [("layer_name", 1, "string", "required"), *_OVERRIDE],
    "RetrainOverrideLayerType": [("layer_type", 1, "string", "required"), *_OVERRIDE],
}

# AMCT's DataType; INT16 is AMCT's too, and is refused by the config schema.
_DATA_TYPES = {"INT4": 0, "INT8": 1, "INT16": 2}
_DATA_TYPE_NAMES = {number: name for name, number in _DATA_TYPES.items()}

_WEIGHT_ALGOS = {"arq_retrain": "arq_retrain", "ulq_retrain": "ulq_quantize"}


def _file_descriptor():
    file = descriptor_pb2.FileDescriptorProto(
        name="keras_qat_amct_retrain_config.proto", package=_PACKAGE, syntax="proto2"
    )
    enum = file.enum_type.add(name="DataType")
    for name, number in _DATA_TYPES.items():
        enum.value.add(name=name, number=number)
    for message_name, fields in _MESSAGES.items():
        message = file.message_type.add(name=message_name)
        oneofs = []
        for name, number, kind, label, oneof in (
            f + ("optional", None)[len(f) - 3 :] for f in fields
        ):
            field = message.field.add(name=name, number=number, label=_LABELS[label])
            if kind in _SCALARS:
                field.type = _SCALARS[kind]
            else:
                field.type = _F.TYPE_ENUM if kind == "DataType" else _F.TYPE_MESSAGE
                field.type_name = f".{_PACKAGE}.{kind}"
            if oneof:
                if oneof not in oneofs:
                    oneofs.append(oneof)
                    message.oneof_decl.add(name=oneof)
                field.oneof_index = oneofs.index(oneof)
    return file


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())
AMCTRetrainConfig = message_factory.GetMessageClass(
    _POOL.FindMessageTypeByName(f"{_PACKAGE}.AMCTRetrainConfig")
)


def _hint(message):
    """ " Did you mean 'x'?" for an unknown field in a protobuf parse error, else ""."""
    match = re.search(r'Message type "([\w.]+)" has no field named "(\w+)"', message)
    if match is None:
        return ""
    fields = _POOL.FindMessageTypeByName(match.group(1)).fields_by_name
    return did_you_mean(match.group(2), list(fields))


def _present(message, names):
    """The fields of `names` that `message` sets, with DataType values by name."""
    fields = {}
    for name in names:
        if message.HasField(name):
            value = getattr(message, name)
            fields[name] = _DATA_TYPE_NAMES[value] if name == "dst_type" else value
    return fields


def _data_block(config):
    ulq = config.ulq_quantize
    block = {"algo": "ulq_quantize"}
    if ulq.HasField("clip_max_min"):
        block["clip_max"] = ulq.clip_max_min.clip_max
        block["clip_min"] = ulq.clip_max_min.clip_min
    return {**block, **_present(ulq, ("fixed_min", "dst_type"))}


def _weight_block(config):
    algo = config.WhichOneof("weights_retrain_algo")
    if algo is None:
        return {}
    settings = _present(getattr(config, algo), ("channel_wise", "dst_type"))
    return {"algo": _WEIGHT_ALGOS[algo], **settings}


def _quant_blocks(message):
    """The data and weight blocks a message sets, keyed as in the JSON definition."""
    blocks = {}
    if message.HasField("retrain_data_quant_config"):
        data = message.retrain_data_quant_config
        blocks["retrain_data_quant_config"] = (
            _data_block(data) if data.HasField("ulq_quantize") else {}
        )
    if message.HasField("retrain_weight_quant_config"):
        blocks["retrain_weight_quant_config"] = _weight_block(message.retrain_weight_quant_config)
    return blocks


def _overrides(entries, key, source):
    found = {}
    for entry in entries:
        name = getattr(entry, key)
        if name in found:
            raise ConfigError(
                f"{source}: {key} '{name}' is given twice; merge its settings into one block."
            )
        found[name] = _quant_blocks(entry)
    return found


def definition_from_cfg(text, source="config_definition"):
    """Parses AMCT's `.cfg` text into the JSON definition's form.

    Args:
        text: The file's text (protobuf text format, `#` comments allowed).
        source: How errors name the file.

    Returns:
        A dict with the keys of the JSON definition that the file sets.

    Raises:
        ConfigError: naming the line, column and field of a syntax error or
            an unknown field (with the closest valid name); naming a missing
            required field, or a layer or type overridden twice.
    """
    message = AMCTRetrainConfig()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        where = f"line {e.GetLine()}, column {e.GetColumn()}: " if e.GetLine() else ""
        detail = re.sub(r"^\d+:\d+ : ", "", str(e)).replace(f"{_PACKAGE}.", "")
        raise ConfigError(f"{source}: {where}{detail}{_hint(str(e))}") from None
    missing = message.FindInitializationErrors()
    if missing:
        raise ConfigError(f"{source}: required fields missing: {', '.join(missing)}")
    definition = {}
    if message.HasField("batch_num"):
        definition["batch_num"] = message.batch_num
    for key in ("skip_layers", "skip_layer_types"):
        if getattr(message, key):
            definition[key] = list(getattr(message, key))
    definition.update(_quant_blocks(message))
    if message.override_layer_types:
        definition["override_layer_types"] = _overrides(
            message.override_layer_types, "layer_type", source
        )
    if message.override_layer_configs:
        definition["override_layer_configs"] = _overrides(
            message.override_layer_configs, "layer_name", source
        )
    return definition


def read_cfg(path):
    """Reads a `.cfg` file into the JSON definition's form (see `definition_from_cfg`).

    Args:
        path: The file.

    Returns:
        The definition dict.

    Raises:
        ConfigError: if the file cannot be read or parsed.
    """
    source = f"config_definition {os.fspath(path)}"
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{source}: cannot be read: {e}") from None
    return definition_from_cfg(text, source)
