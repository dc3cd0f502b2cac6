"""Export to SavedModel, ONNX and .keras: verified parity, any size, nothing replaced on failure."""

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import random_image
from test_inference import tiny_generator

import keras_derain.export as export
from keras_derain.export import ExportError, export_generator, newest_run_model, reference_output
from keras_derain.inference import Derainer


def load_script(name):
    """The thin script ``name`` at the repository root, as a module."""
    path = Path(__file__).resolve().parents[1] / name
    spec = importlib.util.spec_from_file_location(path.stem + "_script", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


export_cli = load_script("export.py")


@pytest.fixture(scope="module")
def generator():
    return tiny_generator(norm="instance", seed=1)


@pytest.fixture(scope="module")
def exported(generator, tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    generator.save(root / "best.keras")
    report = export_generator(root / "best.keras", root / "out", "all", log=lambda line: None)
    return root, report


def test_all_formats_written_and_verified(exported):
    root, report = exported
    assert set(report) == {"savedmodel", "onnx", "keras"}
    for result in report.values():
        assert result["path"].exists() and result["max_abs_diff"] < export.TOLERANCE
    assert sorted(path.name for path in (root / "out").iterdir()) == [
        "generator.keras", "generator.onnx", "generator_savedmodel"
    ]


def test_reloaded_exports_agree_on_odd_size(exported, generator):
    root, report = exported
    photo = random_image(37, 53, seed=5)
    reference = reference_output(generator, photo[None].astype(np.float32) / 127.5 - 1)[0]
    assert np.abs(reference).max() > 0.1  # outputs that say something
    for result in report.values():
        generated = Derainer(result["path"]).derain_float(photo.astype(np.float32) / 127.5 - 1)
        assert generated.shape == (37, 53, 3)
        assert np.abs(generated - reference).max() < 1e-4, result["path"]


def test_savedmodel_uint8_signature_takes_any_batch_and_size(exported):
    import tensorflow as tf

    root, report = exported
    loaded = tf.saved_model.load(str(report["savedmodel"]["path"]))
    batch = np.stack([random_image(21, 30, seed=seed) for seed in range(3)])
    derained = loaded.signatures["derain"](rainy=tf.constant(batch))["derained"]
    assert derained.dtype == tf.uint8 and derained.shape == (3, 21, 30, 3)
    assert "serving_default" in loaded.signatures


def test_failed_verification_keeps_the_good_file(exported, generator, monkeypatch, tmp_path):
    root, report = exported
    good = report["onnx"]["path"].read_bytes()
    run_onnx = export._run_onnx
    # An ONNX runtime that is off by 1e-3: the export must be refused.
    monkeypatch.setattr(export, "_run_onnx", lambda path: (lambda rainy: run_onnx(path)(rainy) + 1e-3))
    other = tiny_generator(norm="instance", seed=2)
    other.save(tmp_path / "other.keras")
    with pytest.raises(ExportError, match="onnx differs"):
        export_generator(tmp_path / "other.keras", root / "out", ["onnx", "keras"], log=lambda line: None)
    assert report["onnx"]["path"].read_bytes() == good
    assert not [path for path in (root / "out").iterdir() if path.name.startswith(".")]


def test_fixed_size_generator_exports_at_its_size(tmp_path):
    from keras_derain.models import cgan_generator

    cgan_generator(image_size=32, base_channels=4, latent_dim=8).save(tmp_path / "cgan.keras")
    report = export_generator(tmp_path / "cgan.keras", tmp_path / "out", "onnx", log=lambda line: None)
    derainer = Derainer(report["onnx"]["path"], overlap=8)
    assert derainer.fixed_size == (32, 32)
    assert derainer.derain(random_image(40, 50)).shape == (40, 50, 3)


def test_newest_run_is_found_by_config_time(tmp_path):
    for name, age in [("older", 100), ("newer", 0)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "best.keras").write_bytes(b"")
        config = tmp_path / name / "config.json"
        config.write_text("{}")
        os.utime(config, (config.stat().st_mtime - age,) * 2)
    assert newest_run_model(tmp_path) == tmp_path / "newer" / "best.keras"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--format", "tflite"], "--format 'tflite' is unknown"),
        (["--model", "{tmp}/missing.keras"], "missing.keras: no such file"),
        (["--runs-dir", "{tmp}/runs"], "no training runs"),
        (["--model", "{model}", "--out", "{tmp}/a_file/out"], "not a writable folder"),
        (["--model", "{model}", "--format", "onnx", "--opset", "1", "--out", "{tmp}/out"],
         "--format onnx: the export cannot be run"),
    ],
)
def test_cli_errors_are_one_line(flags, message, exported, tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    root, _ = exported
    flags = [flag.format(tmp=tmp_path, model=root / "best.keras") for flag in flags]
    assert export_cli.main(flags) == 2
    error = capsys.readouterr().err.strip()
    assert message in error and len(error.splitlines()) == 1
