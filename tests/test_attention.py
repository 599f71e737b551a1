"""Attention models: opened up, quantized part by part, exported to an int8 file that agrees."""

import json

import numpy as np
import pytest

import keras_qat
from keras_qat._keras import keras
from keras_qat.attention import open_attention
from keras_qat.attention_layers import AttentionContext, AttentionScores
from keras_qat.config.validate import read_retrain_config
from keras_qat.datasets import load_pointer_sequences
from keras_qat.errors import ConfigError, ExportError, UnsupportedModelError
from keras_qat.example_models import sequence_transformer, vision_transformer
from keras_qat.layer_table import source_kind
from tests.litert_ops import op_types

L = keras.layers
LOSS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
MHA_PARTS = ["query", "key", "scores", "value", "context", "output"]


def test_products_compute_the_einsums_of_multi_head_attention():
    rng = np.random.default_rng(0)
    query, key = rng.normal(size=(2, 5, 3, 4)), rng.normal(size=(2, 7, 3, 4))
    scores = AttentionScores()([query, key]).numpy()
    np.testing.assert_allclose(
        scores, np.einsum("aecd,abcd->acbe", key, query), rtol=1e-5, atol=1e-6
    )
    probabilities, value = rng.random((2, 3, 5, 7)), rng.normal(size=(2, 7, 3, 6))
    context = AttentionContext()([probabilities, value]).numpy()
    np.testing.assert_allclose(
        context, np.einsum("acbe,aecd->abcd", probabilities, value), rtol=1e-5, atol=1e-6
    )


def cross_attention():
    query, memory = keras.Input((5, 12)), keras.Input((7, 6))
    attended = L.MultiHeadAttention(
        3, 4, value_dim=5, output_shape=(2, 4), dropout=0.1, name="cross"
    )(query, memory, memory)
    return keras.Model([query, memory], attended)


def einsum_dense_layers():
    inputs = keras.Input((5, 12))
    x = L.EinsumDense("abc,cde->abde", (5, 3, 4), bias_axes="e", name="split")(inputs)
    x = L.EinsumDense("abcd,cde->abe", (5, 6), activation="relu", name="merge")(x)
    return keras.Model(inputs, L.EinsumDense("abc,cd->abd", (5, 2), name="plain")(x))


def shared_layers():
    """One attention layer and one Dense, each called at two places."""
    first, second = keras.Input((5, 8)), keras.Input((5, 8))
    attention, dense = L.MultiHeadAttention(2, 4, name="shared"), L.Dense(8, name="dense")
    outputs = [dense(attention(x, x)) for x in (first, second)]
    return keras.Model([first, second], L.Add(name="add")(outputs))


@pytest.mark.parametrize("build", [cross_attention, einsum_dense_layers, shared_layers])
def test_the_opened_model_computes_what_the_original_computes(build):
    keras.utils.set_random_seed(1)
    model = build()
    for layer in model.layers:  # random biases too: the defaults are zeros
        layer.set_weights([np.random.normal(size=w.shape) for w in layer.get_weights()])
    opened = open_attention(model)
    rng = np.random.default_rng(0)
    samples = [rng.normal(size=(3, *t.shape[1:])).astype(np.float32) for t in model.inputs]
    np.testing.assert_allclose(
        opened(samples).numpy(), model(samples).numpy(), rtol=1e-4, atol=1e-4
    )
    kinds = {layer.name: source_kind(layer) for layer in opened.layers}
    if build is cross_attention:
        assert all(kinds[f"cross/{part}"] == "MultiHeadAttention" for part in MHA_PARTS)
        assert kinds["cross/dropout"] == "MultiHeadAttention"
    elif build is shared_layers:  # made once, called twice
        assert len(opened.get_layer("shared/scores").inbound_nodes) == 2
        assert len(opened.get_layer("dense").inbound_nodes) == 2
    else:
        assert [kinds[name] for name in ("split", "merge", "plain")] == ["EinsumDense"] * 3
        assert all(isinstance(opened.get_layer(n), L.Dense) for n in ("split", "merge", "plain"))


def test_attention_keras_qat_cannot_open_is_refused_naming_the_layer():
    inputs = keras.Input((6, 8))
    causal = L.MultiHeadAttention(2, 4, name="causal")(inputs, inputs, use_causal_mask=True)
    with pytest.raises(UnsupportedModelError, match="MultiHeadAttention 'causal'"):
        keras_qat.create_quant_retrain_config("unused.json", keras.Model(inputs, causal))
    transposing = L.EinsumDense("abc,bd->adc", (4, 8), name="transposing")(inputs)
    with pytest.raises(UnsupportedModelError, match="EinsumDense 'transposing'"):
        keras_qat.create_quant_retrain_config("unused.json", keras.Model(inputs, transposing))


def sequence_model():
    return sequence_transformer(8, 8, 8, dim=16, heads=2, blocks=1)


def test_config_entries_of_an_attention_model(tmp_path):
    model = sequence_model()
    path = tmp_path / "config.json"
    keras_qat.create_quant_retrain_config(path, model)
    config = json.loads(path.read_text())
    parts = [f"mha0/{part}" for part in MHA_PARTS]
    assert [k for k in config if k not in ("version", "batch_num")] == [
        "token_embed", "position_embed", *parts, "mlp0a", "mlp0b", "logits",
    ]  # fmt: skip
    assert "retrain_data_config" not in config["token_embed"]
    assert "retrain_weight_config" not in config["mha0/scores"]
    resolved = read_retrain_config(str(path), model).resolved_fixed_min
    # Query, key and value are signed; the probabilities are a softmax's.
    assert [resolved[k] for k in ("mha0/scores", "mha0/scores/rhs")] == [False, False]
    assert [resolved[k] for k in ("mha0/context", "mha0/context/rhs")] == [True, False]
    assert resolved["mlp0b"] is False  # after a GELU, which goes below 0

    definition = tmp_path / "definition.json"
    definition.write_text(json.dumps({"skip_layer_types": ["MultiHeadAttention"]}))
    keras_qat.create_quant_retrain_config(path, model, definition, overwrite=True)
    config = json.loads(path.read_text())
    entries = {name: e for name, e in config.items() if isinstance(e, dict)}
    disabled = [name for name, entry in entries.items() if not entry["retrain_enable"]]
    assert disabled == parts
    assert config["mlp0a"]["retrain_enable"] is True


def test_an_embedding_entry_with_data_settings_is_refused():
    model = sequence_model()
    with pytest.raises(ConfigError, match=r"'token_embed'.*remove retrain_data_config"):
        read_retrain_config({"token_embed": {"retrain_data_config": {"dst_type": "INT8"}}}, model)


@pytest.fixture(scope="module")
def pointer_data():
    return load_pointer_sequences(train=3000, test=500, length=8, vocabulary=8)


@pytest.fixture(scope="module")
def trained_sequence(pointer_data):
    keras.utils.set_random_seed(0)
    model = sequence_model()
    model.compile(keras.optimizers.Adam(3e-3), LOSS)
    model.fit(pointer_data[0], pointer_data[1], epochs=6, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def trained_vit(digits):
    keras.utils.set_random_seed(0)
    model = vision_transformer((8, 8, 1), 10, patch=2, dim=16, heads=2, blocks=1)
    model.compile(keras.optimizers.Adam(3e-3), LOSS)
    model.fit(digits[0], digits[1], epochs=6, batch_size=64, verbose=0)
    return model


def default_config(model, tmp_path):
    path = tmp_path / "config.json"
    keras_qat.create_quant_retrain_config(path, model)
    return path


def test_each_product_input_has_its_own_quantizer(trained_vit, digits, tmp_path):
    qat = keras_qat.apply_retrain_config(
        trained_vit, default_config(trained_vit, tmp_path), digits[0][:128]
    )
    names = {layer.name for layer in qat.layers}
    assert {"mha0/scores_input_quant", "mha0/scores/rhs_input_quant"} <= names
    # The probabilities stay on the softmax's own int8 grid: no second rounding.
    assert "mha0/context/rhs_input_quant" in names
    assert "mha0/context_input_quant" not in names
    report = keras_qat.quant_report(qat)
    assert report["mha0/scores/rhs"]["clip_min"] < 0 < report["mha0/scores/rhs"]["clip_max"]
    assert report["mha0/context/rhs"]["fixed_min"] is False


def qat_and_file(model, x, y, config, path):
    qat = keras_qat.apply_retrain_config(model, config, x[:256])
    qat.compile(keras.optimizers.Adam(1e-4), LOSS)
    qat.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return qat, keras_qat.export_tflite(qat, path, x[:256])


W4A8 = {"retrain_weight_quant_config": {"dst_type": "INT4"}}


@pytest.mark.parametrize(
    ("case", "weights"),
    [
        ("vit", "INT8"),
        pytest.param("vit", "INT4", marks=pytest.mark.slow),
        pytest.param("sequence", "INT8", marks=pytest.mark.slow),
        pytest.param("sequence", "INT4", marks=pytest.mark.slow),
    ],
)
def test_the_file_runs_the_products_in_int8_and_agrees(
    case, weights, trained_vit, trained_sequence, digits, pointer_data, tmp_path
):
    model, (x, y, x_test, _) = {
        "vit": (trained_vit, digits),
        "sequence": (trained_sequence, pointer_data),
    }[case]
    config = tmp_path / "config.json"
    definition = tmp_path / "definition.json"
    definition.write_text(json.dumps(W4A8 if weights == "INT4" else {}))
    keras_qat.create_quant_retrain_config(config, model, definition)
    qat, path = qat_and_file(model, x, y, config, tmp_path / "m.tflite")
    ops = op_types(path)
    matmuls = [dtype for op, dtype in ops if op in ("FULLY_CONNECTED", "BATCH_MATMUL")]
    # Four projections, two products, the MLP's two Dense layers and the classifier.
    assert len(matmuls) == 9 and all(dtype == np.int8 for dtype in matmuls)
    # LayerNormalization computes in float, as in the QAT model.
    assert ("RSQRT", np.float32) in ops and ("RSQRT", np.int8) not in ops
    assert ("MEAN", np.int8) not in ops
    if case == "sequence":
        assert ops.count(("GATHER", np.int8)) == 2
    report = keras_qat.check_tflite(qat, path, x_test)
    assert report["agreement"] >= 0.99


def test_a_per_row_embedding_is_refused_at_export(trained_sequence, pointer_data, tmp_path):
    config = {"token_embed": {"retrain_weight_config": {"channel_wise": True}}}
    qat = keras_qat.apply_retrain_config(trained_sequence, config)
    with pytest.raises(ExportError, match=r"'token_embed'.*channel_wise"):
        keras_qat.export_tflite(qat, tmp_path / "m.tflite", pointer_data[0][:64])
    assert not list(tmp_path.iterdir())


def test_an_attention_qat_model_reloads(trained_vit, digits, tmp_path):
    qat = keras_qat.apply_retrain_config(
        trained_vit, default_config(trained_vit, tmp_path), digits[0][:128]
    )
    qat.save(tmp_path / "qat.keras")
    loaded = keras_qat.load_model(tmp_path / "qat.keras")
    np.testing.assert_allclose(loaded(digits[2][:16]), qat(digits[2][:16]), rtol=1e-5, atol=1e-6)


def test_recurrent_layers_stay_float_and_export_says_why(pointer_data, tmp_path):
    tokens = keras.Input((8,), dtype="int32")
    x = L.GRU(8, name="gru")(L.Embedding(8, 8, name="embed")(tokens))
    model = keras.Model(tokens, L.Dense(8, name="logits")(x))
    path = tmp_path / "config.json"
    keras_qat.create_quant_retrain_config(path, model)
    entries = json.loads(path.read_text())
    assert [k for k in entries if k not in ("version", "batch_num")] == ["embed", "logits"]
    qat = keras_qat.apply_retrain_config(model, path, pointer_data[0][:64])
    with pytest.raises(ExportError, match=r"recurrent layers \['gru'\] stay float"):
        keras_qat.export_tflite(qat, tmp_path / "m.tflite", pointer_data[0][:64])


def test_a_keras3_attention_model_is_rebuilt_and_opened(tmp_path):
    import keras as keras3

    inputs = keras3.Input((6, 8))
    x = keras3.layers.LayerNormalization(name="ln")(inputs)
    x = keras3.layers.Add(name="res")(
        [inputs, keras3.layers.MultiHeadAttention(2, 4, name="mha")(x, x)]
    )
    x = keras3.layers.EinsumDense("abc,cd->abd", (6, 5), bias_axes="d", name="ed")(x)
    model = keras3.Model(inputs, x)
    path = tmp_path / "config.json"
    keras_qat.create_quant_retrain_config(path, model)
    entries = [k for k in json.loads(path.read_text()) if k not in ("version", "batch_num")]
    assert entries == [*(f"mha/{part}" for part in MHA_PARTS), "ed"]


def test_the_cli_validates_an_attention_model_file(tmp_path, capsys):
    from keras_qat.cli import main

    model_file, config = tmp_path / "model.keras", tmp_path / "config.json"
    sequence_model().save(model_file)
    assert main(["create-config", str(model_file), "-o", str(config)]) == 0
    assert main(["validate", str(model_file), str(config)]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()}
    assert rows["mha0/context"][1:5] == ["AttentionContext", "True", "INT8", "True/False"]
    assert rows["token_embed"][3:5] == ["-", "-"]


class Block(L.Layer):
    """A transformer block of the user's own class: keras_qat cannot see inside its call."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.attention = L.MultiHeadAttention(2, 4)
        self.norm = L.LayerNormalization()

    def call(self, x):
        return self.norm(x + self.attention(x, x))


def test_a_custom_block_holding_attention_is_named_and_left_float(tmp_path):
    inputs = keras.Input((6, 8))
    x = Block(name="block")(L.Dense(8, name="embed")(inputs))
    model = keras.Model(inputs, L.Dense(3, name="logits")(L.Flatten()(x)))
    path = tmp_path / "config.json"
    with pytest.warns(UserWarning, match=r"'block': \[.*'MultiHeadAttention'\].*stay float"):
        keras_qat.create_quant_retrain_config(path, model)
    samples = np.random.default_rng(0).normal(size=(64, 6, 8)).astype(np.float32)
    qat = keras_qat.apply_retrain_config(model, path, samples)
    ops = op_types(keras_qat.export_tflite(qat, tmp_path / "m.tflite", samples))
    assert ("BATCH_MATMUL", np.float32) in ops and ("BATCH_MATMUL", np.int8) not in ops
    assert ops.count(("FULLY_CONNECTED", np.int8)) == 2  # embed and logits
