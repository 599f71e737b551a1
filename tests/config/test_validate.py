import copy

import pytest

import keras_qat
from keras_qat.config import DataQuantConfig, WeightQuantConfig


def layer(data=None, weights=None, **entry):
    if data is not None:
        entry["retrain_data_config"] = data
    if weights is not None:
        entry["retrain_weight_config"] = weights
    return entry


# (config, the exact message expected among the errors)
ERRORS = [
    ({"version": 2, "conv": {}}, "version must be 1. Received: version=2"),
    ({"batch_num": 0, "conv": {}}, "batch_num must be >= 1. Received: batch_num=0"),
    ({"batch_num": "3", "conv": {}}, 'batch_num must be an integer. Received: batch_num="3"'),
    ({"batch_num": 1.5, "conv": {}}, "batch_num must be an integer. Received: batch_num=1.5"),
    ({"conv": layer(retrain_enable="true")},
     "Layer 'conv': retrain_enable must be a boolean (true or false). "
     'Received: retrain_enable="true"'),
    ({"conv": layer(data={"clip_max": -0.5, "clip_min": -1})},
     "Layer 'conv': retrain_data_config.clip_max must be > 0. Received: clip_max=-0.5"),
    ({"conv": layer(data={"clip_max": 0, "clip_min": -1})},
     "Layer 'conv': retrain_data_config.clip_max must be > 0. Received: clip_max=0"),
    ({"conv": layer(data={"clip_max": 1, "clip_min": 0.0})},
     "Layer 'conv': retrain_data_config.clip_min must be < 0. Received: clip_min=0.0"),
    ({"conv": layer(data={"clip_max": "1.0", "clip_min": -1})},
     'Layer \'conv\': retrain_data_config.clip_max must be a number. Received: clip_max="1.0"'),
    ({"conv": layer(data={"clip_min": -1.0})},
     "Layer 'conv': retrain_data_config.clip_min requires clip_max: the clip range is given "
     "whole or learned. Received: clip_min=-1.0"),
    ({"conv": layer(data={"clip_max": 2.0})},
     "Layer 'conv': retrain_data_config.clip_max without clip_min needs the lower bound fixed at "
     "0, but fixed_min resolves to false: the layer's input is not provably non-negative. Give "
     "clip_min too, or set fixed_min: true. Received: clip_max=2.0"),
    ({"depthwise": layer(data={"clip_max": 2.0, "fixed_min": False})},
     "Layer 'depthwise': retrain_data_config.clip_max without clip_min needs the lower bound "
     "fixed at 0, but fixed_min is false. Give clip_min too, or set fixed_min: true. "
     "Received: clip_max=2.0"),
    ({"conv": layer(data={"clip_max": 2.0, "clip_min": -1.0, "fixed_min": True})},
     "Layer 'conv': retrain_data_config.clip_min cannot be set together with fixed_min: true "
     "(the lower bound is then 0). Received: clip_min=-1.0, fixed_min=true"),
    ({"conv": layer(data={"fixed_min": "false"})},
     "Layer 'conv': retrain_data_config.fixed_min must be a boolean (true or false). "
     'Received: fixed_min="false"'),
    ({"conv": layer(data={"dst_type": "INT16"})},
     "Layer 'conv': retrain_data_config.dst_type must be one of 'INT8', 'INT4'. "
     'Received: dst_type="INT16"'),
    ({"conv": layer(weights={"dst_type": "int4"})},
     "Layer 'conv': retrain_weight_config.dst_type must be one of 'INT8', 'INT4'. "
     "Did you mean 'INT4'? Received: dst_type=\"int4\""),
    ({"conv": layer(data={"algo": "arq_retrain"})},
     "Layer 'conv': retrain_data_config.algo must be one of 'ulq_quantize'. "
     'Received: algo="arq_retrain"'),
    ({"conv": layer(weights={"algo": "lsq"})},
     "Layer 'conv': retrain_weight_config.algo must be one of 'arq_retrain', 'ulq_quantize', "
     "'ulq_retrain'. Received: algo=\"lsq\""),
    ({"conv": layer(weights={"channel_wise": 1})},
     "Layer 'conv': retrain_weight_config.channel_wise must be a boolean (true or false). "
     "Received: channel_wise=1"),
    ({"conv": layer(weights={"chanel_wise": True})},
     "Layer 'conv': unknown key retrain_weight_config.chanel_wise. Did you mean 'channel_wise'? "
     "Valid keys: algo, weights_retrain_algo, channel_wise, dst_type. Received: chanel_wise=true"),
    ({"conv": layer(retrain_enabled=True)},
     "Layer 'conv': unknown key retrain_enabled. Did you mean 'retrain_enable'? Valid keys: "
     "retrain_enable, retrain_data_config, retrain_weight_config. Received: retrain_enabled=true"),
    ({"conv": layer(data={"clip_maxx": 1.0})},
     "Layer 'conv': unknown key retrain_data_config.clip_maxx. Did you mean 'clip_max'? Valid "
     "keys: algo, clip_max, clip_min, fixed_min, dst_type, batch_num. Received: clip_maxx=1.0"),
    ({"conv": 5}, "Layer 'conv': its entry must be an object. Received: conv=5"),
    ({"conv": layer(data=[])},
     "Layer 'conv': retrain_data_config must be an object. Received: retrain_data_config=[]"),
    ({"conv": layer(weights={"algo": "arq_retrain", "weights_retrain_algo": "ulq_quantize"})},
     "Layer 'conv': retrain_weight_config.algo and its alias weights_retrain_algo disagree; "
     'give one. Received: algo="arq_retrain", weights_retrain_algo="ulq_quantize"'),
    ({"batch_num": 2, "conv": layer(data={"batch_num": 3})},
     "batch_num is given several times with different values. "
     "Received: batch_num=2, conv.retrain_data_config.batch_num=3"),
    ({"conv2": {}}, "Layer 'conv2': the model 'all_types' has no layer of that name. "
                    "Did you mean 'conv'?"),
    ({"flatten": {}, "conv": {}},
     "Layer 'flatten': layers of type Flatten cannot be quantized (quantizable types: Conv1D, "
     "Conv2D, DepthwiseConv2D, SeparableConv2D, Conv2DTranspose, Dense, AveragePooling2D, "
     "Embedding, Dot, AttentionScores, AttentionContext). "
     "Remove its entry."),
    ({"avgpool": layer(weights={"channel_wise": True})},
     "Layer 'avgpool': AveragePooling2D has no weights, only its input is quantized; remove "
     'retrain_weight_config. Received: retrain_weight_config={"channel_wise": true}'),
    ({"conv": layer(retrain_enable=False)},
     "No layer has retrain_enable: true, so nothing would be quantized. "
     "Received: 1 layer entries, none enabled"),
    ({"version": 1}, "No layer has retrain_enable: true, so nothing would be quantized. "
                     "Received: 0 layer entries, none enabled"),
    ([], "The config must be an object. Received: config=[]"),
]  # fmt: skip


@pytest.mark.parametrize(("config", "message"), ERRORS, ids=[m[:40] for _, m in ERRORS])
def test_error_messages(model, config, message):
    original = copy.deepcopy(config)
    with pytest.raises(keras_qat.ConfigError) as info:
        keras_qat.read_retrain_config(config, model)
    assert message in info.value.errors
    assert isinstance(info.value, ValueError)
    assert config == original


def test_all_errors_are_listed_together(model):
    config = {
        "batch_num": 0,
        "conv": layer(weights={"chanel_wise": True}),
        "dens": {},
        "depthwise": layer(data={"clip_min": -1.0}),
    }
    with pytest.raises(keras_qat.ConfigError) as info:
        keras_qat.read_retrain_config(config, model)
    assert len(info.value.errors) == 4
    assert str(info.value) == "\n".join(info.value.errors)


def test_defaults_are_filled_in(model):
    config = keras_qat.read_retrain_config({"dense": {}, "conv": {}}, model)
    assert list(config.layers) == ["conv", "dense"]  # model order
    assert config.batch_num == 1 and config.version == 1
    assert config.layers["conv"].retrain_data_config == DataQuantConfig()
    assert config.layers["conv"].retrain_weight_config == WeightQuantConfig(channel_wise=True)
    assert config.layers["dense"].retrain_weight_config == WeightQuantConfig(channel_wise=False)


def test_integers_accepted_for_floats(model):
    config = keras_qat.read_retrain_config(
        {"conv": layer(data={"clip_max": 6, "clip_min": -6})}, model
    )
    data = config.layers["conv"].retrain_data_config
    assert (data.clip_max, data.clip_min) == (6.0, -6.0)
    assert isinstance(data.clip_max, float)


def test_english_table_spellings(model):
    config = keras_qat.read_retrain_config(
        {
            "conv": layer(data={"batch_num": 4}, weights={"weights_retrain_algo": "ulq_quantize"}),
            "dense": layer(data={"batch_num": 4}, weights={"algo": "ulq_retrain"}),
        },
        model,
    )
    assert config.batch_num == 4
    assert config.layers["conv"].retrain_weight_config.algo == "ulq_quantize"
    assert config.layers["dense"].retrain_weight_config.algo == "ulq_quantize"
    written = config.to_dict()
    assert written["batch_num"] == 4
    assert written["conv"]["retrain_data_config"] == {"algo": "ulq_quantize", "dst_type": "INT8"}
    assert written["conv"]["retrain_weight_config"]["algo"] == "ulq_quantize"


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("depthwise", {"clip_max": 2.0}),  # after a ReLU layer: resolved fixed_min
        ("conv", {"clip_max": 2.0, "fixed_min": True}),
        ("conv", {"clip_max": 2.0, "clip_min": -1.0}),
        ("conv", {"fixed_min": True}),
    ],
    ids=["resolved", "given", "both-bounds", "fixed-only"],
)
def test_valid_clip_settings(model, name, data):
    config = keras_qat.read_retrain_config({name: layer(data=data)}, model)
    assert config.layers[name].retrain_data_config.to_dict() == {
        "algo": "ulq_quantize",
        **{k: float(v) if k.startswith("clip") else v for k, v in data.items()},
        "dst_type": "INT8",
    }


def test_file_errors_name_the_file(model, tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{\n  "conv": {"retrain_enable": tru}\n}')
    with pytest.raises(keras_qat.ConfigError, match=r"config.json: invalid JSON at line 2, column"):
        keras_qat.read_retrain_config(path, model)
    path.write_text('{"conv": {},\n "conv": {}}')
    with pytest.raises(keras_qat.ConfigError, match="duplicate key 'conv' at line 2, column 2"):
        keras_qat.read_retrain_config(path, model)
    path.write_text('{"conv": {"retrain_data_config": {"clip_max": NaN}}}')
    with pytest.raises(keras_qat.ConfigError, match="NaN is not valid JSON"):
        keras_qat.read_retrain_config(path, model)
    path.write_text('{"conv": {"retrain_enable": 1}}')
    with pytest.raises(keras_qat.ConfigError) as info:
        keras_qat.read_retrain_config(path, model)
    assert info.value.errors[0].startswith(f"{path}: Layer 'conv': retrain_enable must be")
    with pytest.raises(keras_qat.ConfigError, match="cannot read the file"):
        keras_qat.read_retrain_config(tmp_path / "missing.json", model)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"clip_max": float("inf"), "clip_min": -1.0}, "clip_max must be a finite number"),
        ({"clip_max": 1e39, "clip_min": -1.0}, r"clip_max must be .* within float32's range"),
        ({"clip_max": 1.0, "clip_min": -(10**400)}, r"clip_min must be .*\(402 characters\)"),
        ({"clip_max": 3e38, "clip_min": -3e38}, "wider than float32 can hold"),
        ({"clip_max": 4e-6, "clip_min": -4e-6}, "narrower than 1e-05"),
        ({"clip_max": 5e-6, "fixed_min": True}, "narrower than 1e-05"),
    ],
    ids=["inf", "beyond-float32", "400-digits", "span-overflows", "too-narrow", "narrow-at-0"],
)
def test_unrepresentable_clips_name_layer_and_key(model, data, message):
    with pytest.raises(
        keras_qat.ConfigError, match=f"Layer 'conv': retrain_data_config.*{message}"
    ):
        keras_qat.read_retrain_config({"conv": layer(data=data)}, model)


def test_layer_not_computing_in_float32():
    from keras_qat._keras import keras

    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 3, dtype="mixed_bfloat16", name="half")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="full")(x))
    with pytest.raises(keras_qat.ConfigError) as error:
        keras_qat.read_retrain_config({"half": {}, "full": {}}, model)
    assert error.value.errors == [
        "Layer 'half': computes in bfloat16 (dtype policy 'mixed_bfloat16'); quantization-aware "
        "training needs float32. Build the model under the 'float32' policy "
        "(tf_keras.mixed_precision.set_global_policy('float32')) or set retrain_enable: false "
        "for it. Received: retrain_enable=true"
    ]
    config = keras_qat.read_retrain_config({"half": {"retrain_enable": False}, "full": {}}, model)
    assert not config.layers["half"].retrain_enable
