"""Mixed precision from measured sensitivity: API and CLI."""

import json

import numpy as np
import pytest

import keras_qat
from keras_qat._keras import keras
from keras_qat.cli import main
from keras_qat.demo import LOSS, build_demo_model
from keras_qat.search import LayerChoice, search_mixed_precision

CONFIG = {n: {} for n in ("conv1", "dwconv2", "pwconv2", "pool2", "logits")}


@pytest.fixture(scope="module")
def float_model(digits):
    keras.utils.set_random_seed(0)
    model = build_demo_model()
    model.compile(keras.optimizers.Adam(3e-3), LOSS)
    model.fit(digits[0], digits[1], epochs=10, verbose=0)
    return model


@pytest.mark.slow  # ~30 s: a search with fine-tuning
def test_a_sensitive_layer_stays_int8_and_a_wide_budget_takes_all(float_model, digits, tmp_path):
    x, _, x_test, y_test = digits

    def metric(qat):  # the sensitivity of conv1 is made large: it must stay INT8
        int4 = keras_qat.quant_report(qat)["conv1"]["data_dst_type"] == "INT4"
        return 100.0 * np.mean(qat.predict(x_test, verbose=0).argmax(1) == y_test) - 50 * int4

    chosen, rows = search_mixed_precision(
        float_model, CONFIG, x[:256], metric, max_drop=5.0, output=tmp_path / "s.json"
    )
    by_layer = {r.layer: r for r in rows}
    assert set(by_layer) == {"conv1", "dwconv2", "pwconv2", "logits"}  # pool2 has no weights
    assert by_layer["conv1"].sensitivity >= 40 and by_layer["conv1"].bits == 8
    assert chosen["conv1"]["retrain_data_config"]["dst_type"] == "INT8"
    assert by_layer["logits"].parameters == 5120 and by_layer["logits"].bytes_saved == 2560
    assert json.loads((tmp_path / "s.json").read_text()) == chosen
    keras_qat.read_retrain_config(chosen, float_model)  # the result validates
    calls = []

    def counted(qat):
        calls.append(qat)
        return metric(qat)

    # A second budget on the rows measured above: only the prefix checks run
    # (the reference and log2 of 4 candidates + 1, rounded up).
    _, wide = search_mixed_precision(
        float_model, CONFIG, x[:256], counted, max_drop=100.0, sensitivities=rows
    )
    assert all(r.bits == 4 for r in wide) and len(calls) == 1 + 3
    assert [r.sensitivity for r in wide] == [r.sensitivity for r in rows]
    assert by_layer["conv1"].bits == 8  # the rows given are not changed


def test_refusals_come_before_the_search(float_model, digits, tmp_path):
    x, _, x_test, y_test = digits
    existing = tmp_path / "s.json"
    existing.write_text("{}")
    with pytest.raises(FileExistsError):
        search_mixed_precision(float_model, CONFIG, x[:256], (x_test, y_test), output=existing)
    with pytest.raises(keras_qat.ConfigError, match="max_drop"):
        search_mixed_precision(float_model, CONFIG, x[:256], (x_test, y_test), max_drop=-1)
    with pytest.raises(keras_qat.ConfigError, match="sensitivities: rows for"):
        search_mixed_precision(
            float_model,
            CONFIG,
            x[:256],
            (x_test, y_test),
            sensitivities=[LayerChoice("x", 1, 0, 1)],
        )
    int4 = {n: {"retrain_data_config": {"dst_type": "INT4"}} for n in CONFIG}
    with pytest.raises(keras_qat.ConfigError, match="no enabled INT8 layer"):
        search_mixed_precision(float_model, int4, x[:256], (x_test, y_test))


@pytest.mark.slow  # ~80 s: a search with fine-tuning, through the CLI
def test_cli_search_writes_a_config_with_a_fine_tuned_budget(float_model, digits, tmp_path, capsys):
    x, y, x_test, y_test = digits
    model_file, config = tmp_path / "m.keras", tmp_path / "c.json"
    float_model.save(model_file)
    config.write_text(json.dumps(CONFIG))
    arrays = {"cal": x[:256], "x": x_test, "y": y_test, "tx": x[:512], "ty": y[:512]}
    for name, array in arrays.items():
        np.save(tmp_path / f"{name}.npy", array)
    out = tmp_path / "searched.json"
    argv = ["search", str(model_file), str(config), "--calibration", str(tmp_path / "cal.npy"),
            "--eval", str(tmp_path / "x.npy"), str(tmp_path / "y.npy"),
            "--fine-tune", str(tmp_path / "tx.npy"), str(tmp_path / "ty.npy"), "--from-logits",
            "--max-drop", "2", "-o", str(out), "--plot", str(tmp_path / "s.png")]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "sensitivity" in printed and "conv1" in printed
    assert (tmp_path / "s.png").read_bytes().startswith(b"\x89PNG")
    assert main(["validate", str(model_file), str(out)]) == 0
