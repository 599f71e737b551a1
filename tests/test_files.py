"""Files: nothing a user wrote is overwritten unasked, half-written, or littered around."""

import os

import numpy as np
import pytest

import keras_qat
import keras_qat.export
from keras_qat.cli import main
from keras_qat.demo import build_demo_model


@pytest.fixture(scope="module")
def qat_and_data():
    x = np.random.default_rng(0).random((32, 8, 8, 1)).astype(np.float32)
    return keras_qat.apply_retrain_config(build_demo_model(), {"conv1": {}, "logits": {}}, x), x


def test_demo_refuses_an_earlier_demo_directory_without_force(tmp_path, capsys):
    (tmp_path / "config.json").write_text("my edits")
    (tmp_path / "saved_model").mkdir()
    assert main(["demo", "--output-dir", str(tmp_path)]) == 1
    assert "config.json already exists" in capsys.readouterr().err
    assert (tmp_path / "config.json").read_text() == "my edits"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "saved_model"]


def test_tflite_and_record_are_replaced_both_or_neither(qat_and_data, tmp_path, monkeypatch):
    qat, x = qat_and_data
    path = tmp_path / "m.tflite"
    record = tmp_path / "m.quant_record.json"
    keras_qat.export_tflite(qat, path)
    before = path.read_bytes(), record.read_bytes()
    real_replace = os.replace
    failures = []

    def fail_on_record(src, dst):
        if os.fspath(dst) == os.fspath(record) and not failures:
            failures.append(dst)
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_record)
    with pytest.raises(OSError, match="disk full"):
        keras_qat.export_tflite(qat, path, x, overwrite=True)
    monkeypatch.undo()
    assert (path.read_bytes(), record.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.quant_record.json", "m.tflite"]


def test_existing_record_is_refused_before_conversion(qat_and_data, tmp_path, monkeypatch):
    qat, _ = qat_and_data
    (tmp_path / "m.quant_record.json").write_text("{}")

    def no_conversion(*args):
        raise AssertionError("converted before the overwrite check")

    monkeypatch.setattr(keras_qat.export, "tflite_ready_copy", no_conversion)
    with pytest.raises(FileExistsError, match=r"m\.quant_record\.json already exists"):
        keras_qat.export_tflite(qat, tmp_path / "m.tflite")
    assert [p.name for p in tmp_path.iterdir()] == ["m.quant_record.json"]


def test_missing_parent_directory_is_named(qat_and_data, tmp_path):
    qat, _ = qat_and_data
    missing = tmp_path / "nope"
    for call in (
        lambda: keras_qat.export_tflite(qat, missing / "m.tflite"),
        lambda: keras_qat.export_saved_model(qat, missing / "saved"),
        lambda: keras_qat.create_quant_retrain_config(missing / "c.json", build_demo_model()),
    ):
        with pytest.raises(FileNotFoundError, match=f"directory {missing} does not exist"):
            call()
    assert list(tmp_path.iterdir()) == []


def test_saved_model_replaces_a_regular_file_only_when_asked(qat_and_data, tmp_path):
    qat, _ = qat_and_data
    target = tmp_path / "saved"
    target.write_text("mine")
    with pytest.raises(FileExistsError):
        keras_qat.export_saved_model(qat, target)
    assert target.read_text() == "mine"
    keras_qat.export_saved_model(qat, target, overwrite=True)
    assert (target / "saved_model.pb").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["saved"]  # no .old litter


def test_replacing_a_directory_or_a_link_leaves_no_litter(tmp_path):
    from keras_qat.atomic import write_dir_atomic, write_file_atomic

    (tmp_path / "was_dir").mkdir()
    (tmp_path / "was_dir" / "inside").write_text("x")
    write_file_atomic(tmp_path / "was_dir", "now a file", overwrite=True)
    assert (tmp_path / "was_dir").read_text() == "now a file"
    target = tmp_path / "target"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    write_dir_atomic(tmp_path / "link", lambda d: open(f"{d}/f", "w").close(), overwrite=True)
    assert (tmp_path / "link" / "f").exists() and not (tmp_path / "link").is_symlink()
    assert target.is_dir()  # the link's target is not touched
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "link").stat().st_mode & 0o777 == 0o777 & ~umask  # not mkdtemp's 0700
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "target", "was_dir"]
