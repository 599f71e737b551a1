import json
import os

import keras
import pytest
from conftest import all_types_model, assert_same_weights

import keras_qat
from keras_qat._keras import keras as tf_keras

L = tf_keras.layers
DATA_DEFAULT = {"algo": "ulq_quantize", "dst_type": "INT8"}


def weight_default(channel_wise):
    return {"algo": "arq_retrain", "channel_wise": channel_wise, "dst_type": "INT8"}


def test_defaults_per_layer_type(model, tmp_path):
    path = tmp_path / "config.json"
    config = keras_qat.create_quant_retrain_config(path, model)
    assert json.loads(path.read_text()) == config
    assert list(config)[:2] == ["version", "batch_num"]
    assert (config["version"], config["batch_num"]) == (1, 1)
    expected_channel_wise = {
        "conv": True,
        "depthwise": True,
        "separable": True,
        "transpose": True,
        "conv1d": True,
        "dense": False,
    }
    layers = {k: v for k, v in config.items() if k not in ("version", "batch_num")}
    assert set(layers) == {*expected_channel_wise, "avgpool"}
    for name, channel_wise in expected_channel_wise.items():
        assert layers[name] == {
            "retrain_enable": True,
            "retrain_data_config": DATA_DEFAULT,
            "retrain_weight_config": weight_default(channel_wise),
        }, name
    assert layers["avgpool"] == {"retrain_enable": True, "retrain_data_config": DATA_DEFAULT}


def test_created_config_reads_back(model, tmp_path):
    path = tmp_path / "config.json"
    written = keras_qat.create_quant_retrain_config(path, model)
    assert keras_qat.read_retrain_config(path, model).to_dict() == written


def test_input_model_untouched(model, tmp_path, weights_of):
    before = weights_of(model)
    names = [layer.name for layer in model.layers]
    keras_qat.create_quant_retrain_config(tmp_path / "c.json", model)
    keras_qat.read_retrain_config(tmp_path / "c.json", model)
    assert_same_weights(before, model.get_weights())
    assert [layer.name for layer in model.layers] == names


def test_nested_and_sequential_models(tmp_path):
    inner = tf_keras.Sequential(
        [tf_keras.Input((4,)), L.Dense(3, name="inner_dense")], name="inner"
    )
    inputs = tf_keras.Input((4,))
    outputs = L.Dense(2, name="outer_dense")(inner(inputs))
    model = tf_keras.Model(inputs, outputs)
    config = keras_qat.create_quant_retrain_config(tmp_path / "c.json", model)
    assert {"inner_dense", "outer_dense"} <= set(config)
    unbuilt = tf_keras.Sequential([L.Dense(3, name="d1"), L.ReLU(), L.Dense(2, name="d2")])
    config = keras_qat.create_quant_retrain_config(tmp_path / "s.json", unbuilt)
    assert {"d1", "d2"} <= set(config)


def test_refuses_duplicate_layer_names(tmp_path):
    inner = tf_keras.Sequential([tf_keras.Input((4,)), L.Dense(4, name="dense")], name="inner")
    inputs = tf_keras.Input((4,))
    model = tf_keras.Model(inputs, L.Dense(2, name="dense")(inner(inputs)))
    with pytest.raises(keras_qat.UnsupportedModelError, match=r"duplicate layer names.*'dense'"):
        keras_qat.create_quant_retrain_config(tmp_path / "c.json", model)
    assert not (tmp_path / "c.json").exists()


def test_keras3_sequential_model_gets_its_config(tmp_path):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
    config = keras_qat.create_quant_retrain_config(tmp_path / "c.json", model)
    assert config["d"]["retrain_weight_config"]["channel_wise"] is False
    assert keras_qat.read_retrain_config(config, model).enabled_layers == ["d"]


def test_subclassed_model_gets_clear_error(tmp_path):
    class Net(tf_keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(2)

        def call(self, x):
            return self.dense(x)

    with pytest.raises(keras_qat.UnsupportedModelError, match=r"subclassed.*Functional"):
        keras_qat.create_quant_retrain_config(tmp_path / "c.json", Net())


def test_no_quantizable_layer_is_an_error(tmp_path):
    model = tf_keras.Sequential([tf_keras.Input((4,)), L.ReLU()])
    with pytest.raises(keras_qat.ConfigError, match="nothing would be quantized"):
        keras_qat.create_quant_retrain_config(tmp_path / "c.json", model)


def test_existing_file_is_not_overwritten_by_default(model, tmp_path):
    path = tmp_path / "config.json"
    path.write_text("my edits")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        keras_qat.create_quant_retrain_config(path, model)
    assert path.read_text() == "my edits"
    keras_qat.create_quant_retrain_config(path, model, overwrite=True)
    assert json.loads(path.read_text())["version"] == 1


def test_failed_creation_leaves_existing_file_untouched(model, tmp_path):
    path = tmp_path / "config.json"
    path.write_text("my edits")
    with pytest.raises(keras_qat.ConfigError):
        keras_qat.create_quant_retrain_config(
            path, model, {"skip_layers": ["nope"]}, overwrite=True
        )
    assert path.read_text() == "my edits"
    assert os.listdir(tmp_path) == ["config.json"]


def test_interrupted_write_leaves_no_partial_file(model, tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    path.write_text("my edits")

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        keras_qat.create_quant_retrain_config(path, model, overwrite=True)
    assert path.read_text() == "my edits"
    assert os.listdir(tmp_path) == ["config.json"]


class TestDefinition:
    def test_priorities_layer_over_type_over_global(self, model, tmp_path):
        definition = {
            "batch_num": 3,
            "retrain_data_quant_config": {"dst_type": "INT4"},
            "retrain_weight_quant_config": {"dst_type": "INT4"},
            "override_layer_types": {
                "Dense": {"retrain_weight_quant_config": {"channel_wise": True}},
                "Conv2D": {"retrain_weight_quant_config": {"dst_type": "INT8"}},
            },
            "override_layer_configs": {
                "conv": {
                    "retrain_data_quant_config": {"dst_type": "INT8"},
                    "retrain_weight_quant_config": {"weights_retrain_algo": "ulq_retrain"},
                }
            },
        }
        config = keras_qat.create_quant_retrain_config(tmp_path / "c.json", model, definition)
        assert config["batch_num"] == 3
        assert config["conv"]["retrain_data_config"]["dst_type"] == "INT8"
        assert config["conv"]["retrain_weight_config"] == {
            "algo": "ulq_quantize",
            "channel_wise": True,
            "dst_type": "INT8",
        }
        assert config["dense"]["retrain_weight_config"] == {
            "algo": "arq_retrain",
            "channel_wise": True,
            "dst_type": "INT4",
        }
        assert config["depthwise"]["retrain_data_config"]["dst_type"] == "INT4"
        assert config["avgpool"] == {
            "retrain_enable": True,
            "retrain_data_config": {"algo": "ulq_quantize", "dst_type": "INT4"},
        }

    def test_skips_keep_an_entry_disabled(self, model, tmp_path):
        definition = {"skip_layers": ["dense"], "skip_layer_types": ["Conv2DTranspose"]}
        config = keras_qat.create_quant_retrain_config(tmp_path / "c.json", model, definition)
        assert config["dense"]["retrain_enable"] is False
        assert config["transpose"]["retrain_enable"] is False
        assert config["conv"]["retrain_enable"] is True

    def test_shipped_example_definition(self, tmp_path):
        from keras_qat.demo import build_demo_model

        example = os.path.join(os.path.dirname(__file__), "../../configs/int4_definition.json")
        config = keras_qat.create_quant_retrain_config(
            tmp_path / "c.json", build_demo_model(), example
        )
        assert config["conv1"]["retrain_weight_config"]["dst_type"] == "INT8"
        assert config["logits"]["retrain_data_config"]["dst_type"] == "INT8"
        assert config["pwconv2"]["retrain_weight_config"]["dst_type"] == "INT4"

    @pytest.mark.parametrize(
        ("definition", "message"),
        [
            ({"skip_layers": ["dense2"]}, "skip_layers: the model has no layer 'dense2'. Did you"),
            ({"skip_layers": ["flatten"]}, "layer 'flatten' (Flatten) cannot be quantized"),
            ({"skip_layer_types": ["Dens"]}, "'Dens' is not a quantizable layer type. Did you"),
            (
                {"override_layer_types": {"Flatten": {}}},
                "override_layer_types: 'Flatten' is not a quantizable",
            ),
            ({"skip_layer": []}, "unknown key skip_layer. Did you mean 'skip_layers'?"),
            ({"batch_num": 0}, "batch_num must be >= 1. Received: batch_num=0"),
            (
                {"retrain_weight_quant_config": {"channel_wise": "yes"}},
                'retrain_weight_quant_config.channel_wise must be a boolean (true or false). '
                'Received: channel_wise="yes"',
            ),
            (
                {"override_layer_configs": {"conv": {
                    "retrain_data_quant_config": {"clip_min": -1.0, "fixed_min": True}}}},
                "Layer 'conv': retrain_data_config.clip_min cannot be set together with fixed_min",
            ),
            (
                {"override_layer_types": {"AveragePooling2D": {
                    "retrain_weight_quant_config": {"channel_wise": True}}}},
                "Layer 'avgpool': AveragePooling2D has no weights",
            ),
            (
                {"skip_layer_types": ["Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Dense",
                                      "Conv2DTranspose", "Conv1D", "AveragePooling2D"]},
                "nothing would be quantized",
            ),
        ],
        ids=lambda v: None if isinstance(v, dict) else v[:30],
    )  # fmt: skip
    def test_errors(self, model, tmp_path, definition, message):
        with pytest.raises(keras_qat.ConfigError) as info:
            keras_qat.create_quant_retrain_config(tmp_path / "c.json", model, definition)
        assert message in str(info.value)
        assert str(info.value).startswith("config_definition")
        assert not (tmp_path / "c.json").exists()

    def test_definition_file_with_a_duplicate_key(self, model, tmp_path):
        path = tmp_path / "def.json"
        path.write_text('{"skip_layers": ["dense"],\n "skip_layers": []}')
        with pytest.raises(keras_qat.ConfigError, match="duplicate key 'skip_layers' at line 2"):
            keras_qat.create_quant_retrain_config(tmp_path / "c.json", model, path)


def test_all_types_model_builds():
    assert all_types_model().count_params() > 0
