"""AMCT's simple config (.cfg) read as is, with the JSON definition's meaning."""

import json
import pathlib

import pytest

import keras_qat
from keras_qat.cli import main
from keras_qat.config.amct_cfg import definition_from_cfg
from keras_qat.demo import build_demo_model

CONFIGS = pathlib.Path(__file__).parents[2] / "configs"

# The example, field for field.
EXAMPLE = """
batch_num: 2
retrain_data_quant_config: { ulq_quantize: { clip_max_min: { clip_max: 6.0 clip_min: -6.0 } fixed_min: true dst_type: INT8 } }
retrain_weight_quant_config: { arq_retrain: { channel_wise: true dst_type: INT8 } }
skip_layers: "conv5"
skip_layer_types: "Dense"
override_layer_types: { layer_type: "Dense" retrain_weight_quant_config: { arq_retrain: { channel_wise: false dst_type: INT8 } } }
override_layer_configs: { layer_name: "conv1" retrain_data_quant_config: { ulq_quantize: { clip_max_min: { clip_max: 3.0 clip_min: -3.0 } dst_type: INT8 } } }
"""  # noqa: E501


def test_every_field_of_the_example_is_read():
    assert definition_from_cfg(EXAMPLE) == {
        "batch_num": 2,
        "skip_layers": ["conv5"],
        "skip_layer_types": ["Dense"],
        "retrain_data_quant_config": {
            "algo": "ulq_quantize",
            "clip_max": 6.0,
            "clip_min": -6.0,
            "fixed_min": True,
            "dst_type": "INT8",
        },
        "retrain_weight_quant_config": {
            "algo": "arq_retrain",
            "channel_wise": True,
            "dst_type": "INT8",
        },
        "override_layer_types": {
            "Dense": {
                "retrain_weight_quant_config": {
                    "algo": "arq_retrain",
                    "channel_wise": False,
                    "dst_type": "INT8",
                }
            }
        },
        "override_layer_configs": {
            "conv1": {
                "retrain_data_quant_config": {
                    "algo": "ulq_quantize",
                    "clip_max": 3.0,
                    "clip_min": -3.0,
                    "dst_type": "INT8",
                }
            }
        },
    }


def test_repeated_fields_comments_and_ulq_weights():
    text = """
    # two layers skipped, weights by ULQ
    skip_layers: "a"  # trailing comment
    skip_layers: "b"
    retrain_weight_quant_config { ulq_retrain { dst_type: INT4 } }
    """
    assert definition_from_cfg(text) == {
        "skip_layers": ["a", "b"],
        "retrain_weight_quant_config": {"algo": "ulq_quantize", "dst_type": "INT4"},
    }


def test_int4_recipe_cfg_and_json_twins_give_the_same_config(tmp_path):
    model = build_demo_model()
    from_cfg = keras_qat.create_quant_retrain_config(
        tmp_path / "a.json", model, CONFIGS / "int4_definition.cfg"
    )
    from_json = keras_qat.create_quant_retrain_config(
        tmp_path / "b.json", model, CONFIGS / "int4_definition.json"
    )
    assert from_cfg == from_json
    assert from_cfg["conv1"]["retrain_weight_config"]["dst_type"] == "INT8"
    assert from_cfg["logits"]["retrain_weight_config"]["channel_wise"] is True
    middle = [
        entry
        for name, entry in from_cfg.items()
        if isinstance(entry, dict)
        and "retrain_weight_config" in entry
        and name not in ("conv1", "logits")
    ]
    assert middle and all(e["retrain_data_config"]["dst_type"] == "INT4" for e in middle)


def test_the_cli_reads_a_cfg_as_its_json_twin(tmp_path):
    model_file = tmp_path / "model.keras"
    build_demo_model().save(model_file)
    outputs = []
    for twin in ("cfg", "json"):
        out = tmp_path / f"{twin}.json"
        definition = CONFIGS / f"int4_definition.{twin}"
        assert (
            main(
                ["create-config", str(model_file), "-o", str(out), "--definition", str(definition)]
            )
            == 0
        )
        outputs.append(json.loads(out.read_text()))
    assert outputs[0] == outputs[1]


def test_amct_op_types_are_aliases(tmp_path):
    model = build_demo_model()
    text = """
    skip_layer_types: "DepthwiseConv2dNative"
    override_layer_types { layer_type: "MatMul" retrain_weight_quant_config { arq_retrain { channel_wise: true } } }
    """  # noqa: E501
    path = tmp_path / "d.cfg"
    path.write_text(text)
    config = keras_qat.create_quant_retrain_config(tmp_path / "c.json", model, path)
    kinds = {layer.name: type(layer).__name__ for layer in model.layers}
    for name, entry in config.items():
        if kinds.get(name) == "DepthwiseConv2D":
            assert entry["retrain_enable"] is False
        if kinds.get(name) == "Dense":
            assert entry["retrain_weight_config"]["channel_wise"] is True
    assert "Dense" in kinds.values() and "DepthwiseConv2D" in kinds.values()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "batch_num: 2\nretrain_weight_quant_config { arq_retrain { channel_wize: true } }",
            'line 2, column 45: Message type "WeightRetrain" has no field named "channel_wize". '
            "Did you mean 'channel_wise'?",
        ),
        ('skip_layer: "conv1"', "Did you mean 'skip_layers'?"),
        ("retrain_data_quant_config { ulq_quantize { dst_type: INT2 } }", "line 1, column"),
        (
            "override_layer_configs { }",
            "required fields missing: override_layer_configs[0].layer_name",
        ),
        (
            'override_layer_types { layer_type: "MatMul" }\n'
            'override_layer_types { layer_type: "Dense" }',
            "override_layer_types: 'Dense' and 'Dense' are the same type",
        ),
        ('skip_layer_types: "Conv3D"', "'Conv3D' is not a quantizable layer type"),
        ("retrain_data_quant_config { ulq_quantize { dst_type: INT16 } }", "INT16"),
    ],
)
def test_errors_name_the_place_and_nothing_is_written(tmp_path, text, message):
    path = tmp_path / "bad.cfg"
    path.write_text(text)
    out = tmp_path / "config.json"
    with pytest.raises(keras_qat.ConfigError) as error:
        keras_qat.create_quant_retrain_config(out, build_demo_model(), path)
    assert message in str(error.value)
    assert str(path) in str(error.value)
    assert not out.exists()
