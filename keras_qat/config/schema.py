"""The retrain config's keys, defaults and JSON Schema, as AMCT's retrain config defines them.

Canonical form (what keras_qat writes)::

    {"version": 1, "batch_num": 1,
     "<layer name>": {"retrain_enable": true,
                      "retrain_data_config": {"algo": "ulq_quantize", "dst_type": "INT8"},
                      "retrain_weight_config": {"algo": "arq_retrain",
                                                "channel_wise": true, "dst_type": "INT8"}}}

`clip_max`, `clip_min` and `fixed_min` have no default: AMCT recommends
leaving them out (IFMR initialises the clip bounds, the graph decides
`fixed_min`). The English table's spellings are accepted as aliases on read:
`weights_retrain_algo` for the weight `algo`, and `batch_num` inside
`retrain_data_config`. AMCT's code spells the weight ULQ `ulq_retrain`.
"""

VERSION = 1
DEFAULT_BATCH_NUM = 1
DST_TYPES = ("INT8", "INT4")
DATA_ALGOS = ("ulq_quantize",)
WEIGHT_ALGOS = ("arq_retrain", "ulq_quantize")
WEIGHT_ALGO_ALIASES = {"ulq_retrain": "ulq_quantize"}
WEIGHT_ALGO_KEY_ALIAS = "weights_retrain_algo"

TOP_LEVEL_KEYS = ("version", "batch_num")

_DST_TYPE = {"enum": list(DST_TYPES)}
_WEIGHT_ALGO = {"enum": [*WEIGHT_ALGOS, *WEIGHT_ALGO_ALIASES]}
_BATCH_NUM = {"type": "integer", "minimum": 1}

DATA_CONFIG_SCHEMA = {
    "type": "object",
    "properties": {
        "algo": {"enum": list(DATA_ALGOS)},
        "clip_max": {"type": "number", "exclusiveMinimum": 0},
        "clip_min": {"type": "number", "exclusiveMaximum": 0},
        "fixed_min": {"type": "boolean"},
        "dst_type": _DST_TYPE,
        "batch_num": _BATCH_NUM,
    },
    "additionalProperties": False,
}

WEIGHT_CONFIG_SCHEMA = {
    "type": "object",
    "properties": {
        "algo": _WEIGHT_ALGO,
        WEIGHT_ALGO_KEY_ALIAS: _WEIGHT_ALGO,
        "channel_wise": {"type": "boolean"},
        "dst_type": _DST_TYPE,
    },
    "additionalProperties": False,
}

LAYER_CONFIG_SCHEMA = {
    "type": "object",
    "properties": {
        "retrain_enable": {"type": "boolean"},
        "retrain_data_config": DATA_CONFIG_SCHEMA,
        "retrain_weight_config": WEIGHT_CONFIG_SCHEMA,
    },
    "additionalProperties": False,
}

RETRAIN_CONFIG_SCHEMA = {
    "type": "object",
    "properties": {"version": {"type": "integer", "const": VERSION}, "batch_num": _BATCH_NUM},
    # Every other top-level key is a layer name.
    "additionalProperties": LAYER_CONFIG_SCHEMA,
}


def _quant_override(data_schema):
    return {
        "type": "object",
        "properties": {
            "retrain_data_quant_config": data_schema,
            "retrain_weight_quant_config": WEIGHT_CONFIG_SCHEMA,
        },
        "additionalProperties": False,
    }


_DATA_DEFAULTS_SCHEMA = {
    **DATA_CONFIG_SCHEMA,
    "properties": {k: v for k, v in DATA_CONFIG_SCHEMA["properties"].items() if k != "batch_num"},
}
_NAME_LIST = {"type": "array", "items": {"type": "string"}}

CONFIG_DEFINITION_SCHEMA = {
    "type": "object",
    "properties": {
        "batch_num": _BATCH_NUM,
        "skip_layers": _NAME_LIST,
        "skip_layer_types": _NAME_LIST,
        "retrain_data_quant_config": _DATA_DEFAULTS_SCHEMA,
        "retrain_weight_quant_config": WEIGHT_CONFIG_SCHEMA,
        "override_layer_types": {
            "type": "object",
            "additionalProperties": _quant_override(_DATA_DEFAULTS_SCHEMA),
        },
        "override_layer_configs": {
            "type": "object",
            "additionalProperties": _quant_override(_DATA_DEFAULTS_SCHEMA),
        },
    },
    "additionalProperties": False,
}
