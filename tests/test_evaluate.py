"""evaluate: its scores match OpenCV + scikit-image recomputed from the saved outputs; reports, modes, errors."""

import csv

import cv2
import keras
import numpy as np
import pytest
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from conftest import random_image, write_raindrop_layout
from keras_derain.data import find_pairs
from keras_derain.evaluate import MEASURES, compare, evaluate, main

PSNR_TOL, SSIM_TOL = 0.01, 0.001


def independent(image, clean):
    """The Raindrop papers' protocol without our code: OpenCV's uint8 Y, scikit-image's defaults; and RGB."""
    image_y = cv2.cvtColor(image, cv2.COLOR_RGB2YCrCb)[..., 0]
    clean_y = cv2.cvtColor(clean, cv2.COLOR_RGB2YCrCb)[..., 0]
    return {
        "psnr_y": peak_signal_noise_ratio(clean_y, image_y),
        "ssim_y": structural_similarity(clean_y, image_y),
        "psnr_rgb": peak_signal_noise_ratio(clean, image),
        "ssim_rgb": structural_similarity(clean, image, channel_axis=-1),
    }


def load(path):
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def assert_close(ours, theirs):
    for key in MEASURES:
        tolerance = PSNR_TOL if key.startswith("psnr") else SSIM_TOL
        assert abs(float(ours[key]) - theirs[key]) < tolerance, (key, ours[key], theirs[key])


def side(row, prefix):
    return {key: float(row[f"{prefix}_{key}"]) for key in MEASURES}


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two tiny generators with the Pix2Pix defaults (instance norm, dropout), saved as .keras."""
    from keras_derain.models import pix2pix_generator

    folder = tmp_path_factory.mktemp("models")
    paths = []
    for seed, name in enumerate(["first", "second"]):
        keras.utils.set_random_seed(seed)
        path = folder / f"{name}.keras"
        pix2pix_generator(base_channels=4, depth=3).save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def raindrop(tmp_path_factory):
    return write_raindrop_layout(tmp_path_factory.mktemp("raindrop"), count=3, size=(48, 40))


def test_scores_match_an_independent_computation_on_the_saved_outputs(models, raindrop, tmp_path, capsys):
    out = tmp_path / "out"
    tiling = ["--tile-size", "32", "--overlap", "8"]  # 48x40 photos in four tiles
    assert main(["--model", str(models[0]), "--data", str(raindrop), "--out", str(out), *tiling]) == 0
    rows = read_csv(out / "metrics.csv")
    images, mean = rows[:-1], rows[-1]
    assert [row["image"] for row in images] == ["0_rain", "1_rain", "2_rain"] and mean["image"] == "mean"
    recomputed = {"input": [], "model": []}
    for row in images:
        derained, rainy, clean = load(row["derained"]), load(row["rainy"]), load(row["clean"])
        assert derained.shape == (40, 48, 3) and row["derained"] == str(out / f"{row['image']}_derained.png")
        recomputed["input"].append(independent(rainy, clean))
        recomputed["model"].append(independent(derained, clean))
        assert_close(side(row, "input"), recomputed["input"][-1])
        assert_close(side(row, "model"), recomputed["model"][-1])
    for prefix, values in recomputed.items():
        assert_close(side(mean, prefix), {key: np.mean([value[key] for value in values]) for key in MEASURES})

    printed = capsys.readouterr().out
    summary = (out / "summary.md").read_text()
    for text in (printed, summary):
        assert "| rainy input |" in text and f"| {models[0].stem} |" in text
    assert "0_rain: PSNR-Y" in printed
    assert str(models[0]) in summary and "OpenCV" in summary and str(raindrop) in summary
    assert (out / "grid.jpg").stat().st_size > 0


def test_library_call_is_deterministic_any_size_generic_layout(models, tmp_path):
    for folder, seed in (("rainy", 0), ("clean", 50)):
        (tmp_path / folder).mkdir()
        for index, (height, width) in enumerate([(37, 53), (64, 90)]):
            Image.fromarray(random_image(height, width, seed=seed + index)).save(tmp_path / folder / f"p{index}.png")
    pairs = find_pairs(tmp_path)
    first = evaluate(models[0], pairs, tile_size=32, overlap=8)
    again = evaluate(models[0], pairs, tile_size=32, overlap=8, out_dir=tmp_path / "out")
    assert first["means"] == again["means"]  # no dropout or batch statistics at test time
    assert [row["derained"] for row in first["images"]] == [None, None]
    for row in again["images"]:
        derained, clean = load(row["derained"]), load(row["clean"])
        assert derained.shape == clean.shape
        assert_close(side(row, "model"), independent(derained, clean))


def test_no_reference_writes_outputs_and_grid(models, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    for index in range(2):
        Image.fromarray(random_image(40, 48, seed=index)).save(photos / f"photo{index}.png")
    out = tmp_path / "out"
    assert main(["--model", str(models[0]), "--data", str(photos), "--no-reference", "--out", str(out)]) == 0
    assert sorted(path.name for path in out.iterdir()) == ["grid.jpg", "photo0_derained.png", "photo1_derained.png"]


def test_several_models_give_one_table(models, raindrop, tmp_path, capsys):
    out = tmp_path / "out"
    command = ["--data", str(raindrop), "--out", str(out), "--names", "cGAN,Pix2Pix"]
    assert main(["--model", str(models[0]), "--model", str(models[1]), *command]) == 0
    printed = capsys.readouterr().out
    table = [line for line in (out / "summary.md").read_text().splitlines() if line.startswith("|")]
    assert [line.split("|")[1].strip() for line in table] == ["", "---", "rainy input", "cGAN", "Pix2Pix"]
    assert "\n".join(table) in printed
    for name in ("cGAN", "Pix2Pix"):
        assert len(read_csv(out / name / "metrics.csv")) == 4
    report = compare(models, find_pairs(raindrop), names=["cGAN", "Pix2Pix"])
    assert report["table"] == "\n".join(table)


def test_bad_inputs_give_one_clear_line(models, raindrop, tmp_path, capsys):
    def error(*argv):
        assert main([*argv, "--out", str(tmp_path / "out")]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ")
        return lines[0]

    assert "none.keras: no such model" in error("--model", str(tmp_path / "none.keras"), "--data", str(raindrop))
    (tmp_path / "empty").mkdir()
    assert "no pairs found" in error("--model", str(models[0]), "--data", str(tmp_path / "empty"))
    assert "one name per --model" in error("--model", str(models[0]), "--data", str(raindrop), "--names", "a,b")
    mismatched = write_raindrop_layout(tmp_path / "mismatched", count=1)
    Image.fromarray(random_image(20, 20)).save(mismatched / "gt" / "0_clean.png")
    assert "its partner" in error("--model", str(models[0]), "--data", str(mismatched))
    assert not (tmp_path / "out").exists()


def test_real_raindrop_baseline(shared_data, models, tmp_path):
    pairs = find_pairs(shared_data / "raindrop_real")
    result = evaluate(models[0], pairs, out_dir=tmp_path)
    for row, (rainy, clean) in zip(result["images"], pairs):
        clean = load(clean)
        assert_close(side(row, "input"), independent(load(rainy), clean))
        assert_close(side(row, "model"), independent(load(row["derained"]), clean))


def test_photos_too_small_for_ssim_are_refused_before_anything_is_written(models, tmp_path, capsys):
    data = write_raindrop_layout(tmp_path / "data", count=3, size=(48, 40))
    for index, (width, height) in ((1, (6, 30)), (2, (20, 3))):
        for folder, kind in (("data", "rain"), ("gt", "clean")):
            Image.fromarray(random_image(height, width, seed=index)).save(data / folder / f"{index}_{kind}.png")
    assert main(["--model", str(models[0]), "--data", str(data), "--out", str(tmp_path / "out")]) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line == (
        f"error: 2 pair(s) smaller than SSIM's 7x7 window: {data / 'data' / '1_rain.png'} (6x30), "
        f"{data / 'data' / '2_rain.png'} (20x3)"
    )
    assert not (tmp_path / "out").exists()


def test_pixel_cap_and_unwritable_out_before_any_work(models, raindrop, tmp_path, capsys):
    def error(*argv):
        assert main(["--model", str(models[0]), "--data", str(raindrop), *argv]) == 2
        [line] = capsys.readouterr().err.strip().splitlines()
        return line

    assert error("--out", str(tmp_path / "out"), "--max-pixels", "1000") == (
        f"error: {raindrop / 'data' / '0_rain.png'}: 48x40 is 1,920 pixels, over the cap of 1,000; "
        "raise it with --max-pixels (max_pixels=) if memory allows"
    )
    assert not (tmp_path / "out").exists()
    (tmp_path / "file").write_text("")
    assert error("--out", str(tmp_path / "file" / "out")) == (
        f"error: --out {tmp_path / 'file' / 'out'}: cannot write there (not a folder: {tmp_path / 'file'})"
    )


def test_no_reference_goes_on_after_a_bad_photo(models, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(random_image(40, 48)).save(photos / "good.png")
    (photos / "bad.png").write_bytes(b"\x89PNG truncated")
    out = tmp_path / "out"
    assert main(["--model", str(models[0]), "--data", str(photos), "--no-reference", "--out", str(out)]) == 1
    captured = capsys.readouterr()
    [line] = captured.err.strip().splitlines()
    assert line.startswith(f"failed: {photos / 'bad.png'}: unreadable or corrupt image")
    assert sorted(path.name for path in out.iterdir()) == ["good_derained.png", "grid.jpg"]
    assert "1 failed" in captured.out


def test_a_failure_while_deraining_names_the_photo(models, raindrop, tmp_path, capsys, monkeypatch):
    from keras_derain.inference import Derainer

    def out_of_memory(self, image):
        raise MemoryError("Unable to allocate 1.9 GiB")

    monkeypatch.setattr(Derainer, "derain", out_of_memory)
    assert main(["--model", str(models[0]), "--data", str(raindrop), "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {raindrop / 'data' / '0_rain.png'}: MemoryError: Unable to allocate 1.9 GiB"
    ]
