import json

import pytest

from keras_qat.cli import main
from keras_qat.demo import build_demo_model


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "model.keras"
    build_demo_model().save(path)
    return path


def test_create_then_validate_round_trip(model_file, tmp_path, capsys):
    config = tmp_path / "config.json"
    assert main(["create-config", str(model_file), "-o", str(config)]) == 0
    assert json.loads(config.read_text())["conv1"]["retrain_enable"] is True
    assert main(["validate", str(model_file), str(config)]) == 0
    out = capsys.readouterr().out
    assert "valid, 5 layer(s) enabled" in out
    assert "conv1_relu" not in out and "True (graph)" in out


def test_create_with_definition_and_force(model_file, tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text("{}")
    definition = tmp_path / "definition.json"
    definition.write_text(json.dumps({"skip_layers": ["logits"]}))
    args = ["create-config", str(model_file), "-o", str(config), "--definition", str(definition)]
    assert main(args) == 1
    assert "already exists" in capsys.readouterr().err
    assert config.read_text() == "{}"
    assert main([*args, "--force"]) == 0
    assert json.loads(config.read_text())["logits"]["retrain_enable"] is False


def test_validate_lists_errors_one_per_line(model_file, tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"conv1": {"retrain_enable": "yes"}, "logit": {}, "batch_num": 0}))
    assert main(["validate", str(model_file), str(config)]) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3
    assert all(line.startswith(f"error: {config}: ") for line in lines)
    assert any("Did you mean 'logits'?" in line for line in lines)


def test_unloadable_model_file(tmp_path, capsys):
    (tmp_path / "junk.keras").write_text("not a model")
    assert main(["validate", str(tmp_path / "junk.keras"), str(tmp_path / "c.json")]) == 1
    assert "cannot load model" in capsys.readouterr().err


@pytest.mark.slow  # the README's first command runs the same demo
def test_demo_trains_quantizes_exports_and_compares(tmp_path, capsys):
    import re

    out_dir = tmp_path / "demo"
    assert main(["demo", "--output-dir", str(out_dir)]) == 0
    out = capsys.readouterr().out
    accuracies = {
        name: float(re.search(rf"{re.escape(name)}\s+([0-9.]+)", out).group(1))
        for name in ("float (Keras)", "QAT INT8 (Keras)", "int8 TFLite (LiteRT)")
    }
    assert accuracies["float (Keras)"] > 0.9, out
    assert accuracies["QAT INT8 (Keras)"] >= accuracies["float (Keras)"] - 0.01, out
    assert float(re.search(r"agreement ([0-9.]+)%", out).group(1)) >= 99.5, out
    written = {"float_model.keras", "config.json", "saved_model", "model.tflite"}
    assert written <= {p.name for p in out_dir.iterdir()}


def test_demo_without_fashion_mnist_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    import keras_qat.datasets

    monkeypatch.setattr(
        keras_qat.datasets.load_fashion_mnist, "__defaults__", (str(tmp_path / "none"),)
    )
    assert main(["demo", "--dataset", "fashion-mnist", "--output-dir", str(tmp_path)]) == 1
    assert "apt-get install dataset-fashion-mnist" in capsys.readouterr().err


def test_report_prints_a_table(tmp_path, capsys):
    import numpy as np

    import keras_qat

    model = build_demo_model()
    qat = keras_qat.apply_retrain_config(
        model, {"conv1": {}, "pool2": {}}, np.zeros((4, 8, 8, 1), np.float32)
    )
    qat.save(tmp_path / "qat.keras")
    capsys.readouterr()  # drop the calibration progress bar
    assert main(["report", str(tmp_path / "qat.keras")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["layer", "data", "fixed_min", "clip_min", "clip_max", "weights",
                                "scale", "range"]  # fmt: skip
    assert lines[1].startswith("conv1") and "arq_retrain INT8 per-channel" in lines[1]
    assert lines[2].startswith("pool2") and lines[2].split()[2] == "True"


def test_export_of_a_two_input_model_from_npz(tmp_path, capsys):
    import numpy as np

    import keras_qat
    from keras_qat._keras import keras

    keras.utils.set_random_seed(0)
    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    joined = keras.layers.Concatenate()([a, b])
    model = keras.Model([a, b], keras.layers.Dense(2, name="d")(joined))
    rng = np.random.default_rng(0)
    data = {"a": rng.normal(size=(32, 4)), "b": 10 * rng.normal(size=(32, 3))}
    data = {name: array.astype(np.float32) for name, array in data.items()}
    keras_qat.apply_retrain_config(model, {"d": {}}, data).save(tmp_path / "qat.keras")
    np.savez(tmp_path / "x.npz", **data)
    out, x = str(tmp_path / "m.tflite"), str(tmp_path / "x.npz")
    capsys.readouterr()
    args = ["export", str(tmp_path / "qat.keras"), "-o", out, "--representative", x, "--check", x]
    assert main(args) == 0
    assert "check on 32 samples: top-1 agreement" in capsys.readouterr().out


def test_export_with_check(trained, digits, tmp_path, capsys):
    import numpy as np

    import keras_qat

    x = digits[0][:256]
    qat = keras_qat.apply_retrain_config(trained, {"conv1": {}, "logits": {}}, x)
    qat.save(tmp_path / "qat.keras")
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "m.tflite"
    args = ["export", str(tmp_path / "qat.keras"), "-o", str(out)]
    extra = ["--representative", str(tmp_path / "x.npy"), "--check", str(tmp_path / "x.npy")]
    capsys.readouterr()
    assert main([*args, *extra, "--saved-model", str(tmp_path / "saved")]) == 0
    printed = capsys.readouterr().out
    assert "check on 256 samples: top-1 agreement" in printed
    assert out.exists() and (tmp_path / "saved" / "saved_model.pb").exists()
    assert main(args) == 1  # exists: not overwritten without --force
    assert "already exists" in capsys.readouterr().err
    assert main([*args, *extra, "--force", "--min-agreement", "1.01"]) == 1
    assert "below --min-agreement 101.00%" in capsys.readouterr().err


@pytest.fixture(scope="module")
def saved_qat(tmp_path_factory):
    import numpy as np

    import keras_qat

    directory = tmp_path_factory.mktemp("saved_qat")
    x = np.random.default_rng(0).random((32, 8, 8, 1)).astype(np.float32)
    qat = keras_qat.apply_retrain_config(build_demo_model(), {"conv1": {}, "logits": {}}, x)
    qat.save(directory / "qat.keras")
    np.save(directory / "x.npy", x)
    return directory


def _one_error_line(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_user_mistakes_give_one_error_line_and_write_nothing(
    saved_qat, model_file, tmp_path, capsys
):
    import numpy as np

    np.save(tmp_path / "flat.npy", np.zeros((4, 64), np.float32))
    model, out = str(saved_qat / "qat.keras"), str(tmp_path / "out" / "m.tflite")
    export = ["export", model, "-o", str(tmp_path / "m.tflite")]
    assert main([*export, "--representative", str(tmp_path / "flat.npy")]) == 1
    assert "expects shape (None, 8, 8, 1)" in _one_error_line(capsys)
    assert main([*export, "--check", str(tmp_path / "flat.npy")]) == 1  # before any writing
    assert "--check" in _one_error_line(capsys)
    assert main(["export", model, "-o", out]) == 1
    assert "does not exist" in _one_error_line(capsys)
    nested = tmp_path / "nested.json"
    nested.write_text("[" * 100_000 + "]" * 100_000)
    assert main(["validate", str(model_file), str(nested)]) == 1
    assert "nested too deeply" in _one_error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat.npy", "model.keras", "nested.json"]


def test_a_npy_for_a_two_input_model_is_explained(tmp_path, capsys):
    import numpy as np

    import keras_qat
    from keras_qat._keras import keras

    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    model = keras.Model([a, b], keras.layers.Dense(2, name="d")(keras.layers.Concatenate()([a, b])))
    data = [np.ones((8, 4), np.float32), np.ones((8, 3), np.float32)]
    keras_qat.apply_retrain_config(model, {"d": {}}, data).save(tmp_path / "qat.keras")
    np.save(tmp_path / "x.npy", data[0])
    args = ["export", str(tmp_path / "qat.keras"), "-o", str(tmp_path / "m.tflite")]
    assert main([*args, "--representative", str(tmp_path / "x.npy")]) == 1
    assert "the model has 2 inputs ['a', 'b']" in _one_error_line(capsys)
    assert not (tmp_path / "m.tflite").exists()


def test_float_model_is_refused_by_export_and_report(model_file, tmp_path, capsys):
    assert main(["report", str(model_file)]) == 1
    assert "holds no keras_qat quantizer" in _one_error_line(capsys)
    assert main(["export", str(model_file), "-o", str(tmp_path / "m.tflite")]) == 1
    assert "holds no keras_qat quantizer" in _one_error_line(capsys)
    assert not (tmp_path / "m.tflite").exists()


def test_help_imports_no_tensorflow_and_commands_are_quiet(model_file, tmp_path):
    import subprocess
    import sys

    probe = (
        "import sys\nfrom keras_qat.cli import main\ntry:\n    main(['--help'])\n"
        "except SystemExit:\n    pass\nassert 'tensorflow' not in sys.modules, 'imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "usage: keras-qat" in done.stdout
    config = tmp_path / "c.json"
    command = "from keras_qat.cli import main; raise SystemExit(main())"
    args = [sys.executable, "-c", command, "create-config", str(model_file), "-o", str(config)]
    quiet = subprocess.run(args, capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


def test_export_options_are_checked_before_writing(saved_qat, tmp_path, capsys):
    import keras_qat
    from keras_qat._keras import keras

    model, x = str(saved_qat / "qat.keras"), str(saved_qat / "x.npy")
    args = ["export", model, "-o", str(tmp_path / "m.tflite"), "--check", x]
    assert main([*args, "--decisive-output", "scores"]) == 1
    assert "decisive_output must be one of the model's outputs ['logits']" in _one_error_line(
        capsys
    )
    inputs = keras.Input((4,), name="x")
    one = keras.Model(inputs, keras.layers.Dense(1, name="score")(inputs))
    data = __import__("numpy").ones((8, 4), "float32")
    keras_qat.apply_retrain_config(one, {"score": {}}, data).save(tmp_path / "one.keras")
    __import__("numpy").save(tmp_path / "d.npy", data)
    args = ["export", str(tmp_path / "one.keras"), "-o", str(tmp_path / "m.tflite")]
    assert main([*args, "--check", str(tmp_path / "d.npy"), "--measure", "top1"]) == 1
    assert "one value along its last axis" in _one_error_line(capsys)
    assert not (tmp_path / "m.tflite").exists()
