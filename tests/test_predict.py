"""keras-derain command: folders and files in, NAME_derained.png out, bad files reported and skipped."""

import numpy as np
import pytest
from PIL import Image

from conftest import random_image
from test_inference import tiny_generator

from keras_derain.data.images import read_rgb
from keras_derain.predict import main


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.keras"
    tiny_generator().save(path)
    return path


def write_photos(folder, sizes):
    folder.mkdir(parents=True, exist_ok=True)
    for index, (height, width) in enumerate(sizes):
        Image.fromarray(random_image(height, width, seed=index)).save(folder / f"photo{index}.png")
    return folder


def test_folder_with_a_corrupt_file(model, tmp_path, capsys):
    photos = write_photos(tmp_path / "photos", [(30, 41), (64, 90)])
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    status = main([str(photos), "--model", str(model), "--out", str(tmp_path / "out"), "--tile-size", "64"])
    captured = capsys.readouterr()
    assert status == 1
    failed = [line for line in captured.err.splitlines() if line.startswith("failed:")]
    assert len(failed) == 1 and "broken.jpg" in failed[0]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "photo0_derained.png", "photo1_derained.png"
    ]
    assert read_rgb(tmp_path / "out" / "photo1_derained.png").shape == (64, 90, 3)
    assert "derained 2 of 3" in captured.out


def test_files_and_same_folder_output(model, tmp_path):
    photos = write_photos(tmp_path, [(20, 20)])
    status = main([str(photos / "photo0.png"), "--model", str(model), "--out", str(tmp_path)])
    assert status == 0
    assert read_rgb(tmp_path / "photo0.png").shape == (20, 20, 3)  # the input is untouched
    derained = read_rgb(tmp_path / "photo0_derained.png")
    assert derained.dtype == np.uint8 and derained.shape == (20, 20, 3)


def test_missing_model_and_missing_input(model, tmp_path, capsys):
    photos = write_photos(tmp_path / "photos", [(20, 20)])
    assert main([str(photos), "--model", str(tmp_path / "none.keras"), "--out", str(tmp_path / "out")]) == 2
    assert "none.keras: no such model" in capsys.readouterr().err
    assert main([str(tmp_path / "nothing"), "--model", str(model)]) == 2
    assert "nothing: no such file or folder" in capsys.readouterr().err


def test_summary_counts_every_input(model, tmp_path, capsys):
    """A missing input is a failure among the inputs: never 'derained 1 of 1; 1 failed'."""
    photos = write_photos(tmp_path / "photos", [(20, 20)])
    out = tmp_path / "out"
    assert main([str(photos / "photo0.png"), str(tmp_path / "gone.png"), "--model", str(model), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.err.strip().splitlines() == [f"failed: {tmp_path / 'gone.png'}: no such file or folder"]
    assert captured.out.splitlines()[-1] == f"derained 1 of 2 photo(s) into {out}; 1 failed"
