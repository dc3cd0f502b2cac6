"""The generator shipped in keras_derain/weights: it loads without a path and beats the rainy input."""

import numpy as np
import pytest

from keras_derain.data import builtin_clean_images, read_rgb
from keras_derain.inference import Derainer, default_model_path
from keras_derain.metrics import psnr


@pytest.fixture(scope="module")
def derainer():
    return Derainer()


def test_default_generator_is_shipped_and_derains_any_size(derainer):
    assert default_model_path().name == "generator.f16.npz"
    photo = read_rgb(builtin_clean_images()[0])[:101, :157]
    derained = derainer.derain(photo)
    assert derained.shape == photo.shape and derained.dtype == np.uint8


def test_beats_the_rainy_input_on_real_pairs(derainer, shared_data):
    root = shared_data / "raindrop_real"
    gains = []
    for index in (0, 1):
        rainy = read_rgb(root / "data" / f"{index}_rain.png")
        clean = read_rgb(root / "gt" / f"{index}_clean.png")
        derained = derainer.derain(rainy)
        gains.append(float(psnr(derained, clean, 255, y_channel=True)) - float(psnr(rainy, clean, 255, y_channel=True)))
    assert np.mean(gains) > 0.5, gains


@pytest.fixture(scope="module")
def restoration():
    return Derainer("restoration")


def test_restoration_model_leaves_dry_photos_far_more_alone(restoration):
    # Dry photos in, the same photos out: the mask-guided model changes them far less than Pix2Pix.
    study = Derainer("pix2pix")
    for path in builtin_clean_images():
        photo = read_rgb(path)
        kept = float(psnr(restoration.derain(photo), photo, 255))
        pix2pix = float(psnr(study.derain(photo), photo, 255))
        assert kept > pix2pix + 3.0, (path.name, kept, pix2pix)


@pytest.fixture(scope="module")
def dry_safe():
    return Derainer("dry-safe")


@pytest.mark.parametrize("loaded", ["derainer", "dry_safe"])  # the module's fixtures
def test_default_and_dry_safe_pass_dry_photos_through(loaded, request):
    # Issue #12's dry bar: a photo without drops comes back within 38 dB of itself.
    model = request.getfixturevalue(loaded)
    for path in builtin_clean_images():
        photo = read_rgb(path)
        assert float(psnr(model.derain(photo), photo, 255)) >= 38.0, path.name


@pytest.mark.parametrize("loaded", ["derainer", "restoration", "dry_safe"])  # the module's fixtures
def test_mask_guided_models_keep_ssim_above_the_input_on_each_real_pair(loaded, shared_data, request):
    from keras_derain.metrics import ssim

    model = request.getfixturevalue(loaded)
    root = shared_data / "raindrop_real"
    for index in (0, 1):
        rainy = read_rgb(root / "data" / f"{index}_rain.png")
        clean = read_rgb(root / "gt" / f"{index}_clean.png")
        derained = model.derain(rainy)
        before = float(ssim(rainy, clean, 255, y_channel=True))
        after = float(ssim(derained, clean, 255, y_channel=True))
        assert after > before, (index, before, after)
        assert float(psnr(derained, clean, 255, y_channel=True)) > float(psnr(rainy, clean, 255, y_channel=True))
