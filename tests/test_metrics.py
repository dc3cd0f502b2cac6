"""PSNR/SSIM against an independent reference: OpenCV's YCrCb and scikit-image, as the papers do."""

import math

import cv2
import keras
import numpy as np
import pytest
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from conftest import random_image
from keras_derain.data import read_rgb
from keras_derain.metrics import PSNR, SSIM, psnr, ssim

PSNR_TOL, SSIM_TOL = 0.01, 0.001


def reference(clean, candidate, y_channel, crop_border=0):
    """The official Raindrop protocol: OpenCV Y (uint8), then scikit-image defaults."""
    if crop_border:
        clean = clean[crop_border:-crop_border, crop_border:-crop_border]
        candidate = candidate[crop_border:-crop_border, crop_border:-crop_border]
    if y_channel:
        clean = cv2.cvtColor(clean, cv2.COLOR_RGB2YCrCb)[..., 0]
        candidate = cv2.cvtColor(candidate, cv2.COLOR_RGB2YCrCb)[..., 0]
        return peak_signal_noise_ratio(clean, candidate), structural_similarity(clean, candidate)
    return (
        peak_signal_noise_ratio(clean, candidate),
        structural_similarity(clean, candidate, channel_axis=-1),
    )


def noisy_pair(seed, shape=(37, 53, 3), sigma=20):
    rng = np.random.default_rng(seed)
    clean = random_image(shape[0], shape[1], seed=seed)
    noise = rng.normal(0, sigma, shape)
    return clean, np.clip(clean + noise, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("y_channel", [False, True])
@pytest.mark.parametrize("crop_border", [0, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_images_match_reference(seed, y_channel, crop_border):
    clean, candidate = noisy_pair(seed, sigma=5 + 15 * seed)
    want_psnr, want_ssim = reference(clean, candidate, y_channel, crop_border)
    got_psnr = float(psnr(candidate, clean, 255, y_channel=y_channel, crop_border=crop_border))
    got_ssim = float(ssim(candidate, clean, 255, y_channel=y_channel, crop_border=crop_border))
    assert abs(got_psnr - want_psnr) < PSNR_TOL
    assert abs(got_ssim - want_ssim) < SSIM_TOL


@pytest.mark.parametrize("y_channel", [False, True])
def test_real_pairs_match_reference(shared_data, y_channel):
    root = shared_data / "raindrop_real"
    for index in (0, 1):
        rainy = read_rgb(root / "data" / f"{index}_rain.png")
        clean = read_rgb(root / "gt" / f"{index}_clean.png")
        want_psnr, want_ssim = reference(clean, rainy, y_channel)
        assert abs(float(psnr(rainy, clean, 255, y_channel=y_channel)) - want_psnr) < PSNR_TOL
        assert abs(float(ssim(rainy, clean, 255, y_channel=y_channel)) - want_ssim) < SSIM_TOL


def test_float_inputs_agree_with_uint8_on_rgb():
    clean, candidate = noisy_pair(4)
    as_float = float(psnr(candidate / 255.0, clean / 255.0, 1.0))
    assert abs(as_float - float(psnr(candidate, clean, 255))) < 1e-4
    want = structural_similarity(clean / 255.0, candidate / 255.0, channel_axis=-1, data_range=1.0)
    assert abs(float(ssim(candidate / 255.0, clean / 255.0, 1.0)) - want) < SSIM_TOL


def test_batch_gives_one_value_per_image():
    pairs = [noisy_pair(seed) for seed in range(3)]
    clean = np.stack([pair[0] for pair in pairs])
    candidate = np.stack([pair[1] for pair in pairs])
    values = psnr(candidate, clean, 255).numpy()
    assert values.shape == (3,)
    for index in range(3):
        assert abs(values[index] - reference(clean[index], candidate[index], False)[0]) < PSNR_TOL
    assert ssim(candidate, clean, 255).numpy().shape == (3,)


def test_identical_images():
    image = random_image(16, 16)
    assert math.isinf(float(psnr(image, image, 255)))
    assert float(ssim(image, image, 255)) == pytest.approx(1.0)


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match="different shapes"):
        psnr(random_image(16, 16), random_image(16, 17), 255)
    with pytest.raises(ValueError, match="different shapes"):
        ssim(random_image(16, 16), random_image(17, 16), 255)


def test_metric_classes_average_over_batches():
    pairs = [noisy_pair(seed) for seed in range(4)]
    to_signed = lambda image: image.astype(np.float32) / 127.5 - 1.0  # noqa: E731
    metric, ssim_metric = PSNR(), SSIM(y_channel=True)
    for clean, candidate in pairs:
        metric.update_state(to_signed(clean)[None], to_signed(candidate)[None])
        ssim_metric.update_state(to_signed(clean)[None], to_signed(candidate)[None])
    want = np.mean([reference(clean, candidate, False)[0] for clean, candidate in pairs])
    assert abs(float(metric.result()) - want) < PSNR_TOL
    # Float Y (not rounded) differs from the uint8 protocol by far less than the tolerance.
    want_ssim = np.mean([reference(clean, candidate, True)[1] for clean, candidate in pairs])
    assert abs(float(ssim_metric.result()) - want_ssim) < 5 * SSIM_TOL
    metric.reset_state()
    assert float(metric.result()) == 0.0


def test_psnr_metric_caps_identical_images_so_the_mean_stays_finite():
    # A restoring generator copies a dry pair exactly: infinite PSNR, which would make the epoch's mean inf.
    clean, candidate = noisy_pair(0)
    to_signed = lambda image: image.astype(np.float32) / 127.5 - 1.0  # noqa: E731
    metric = PSNR(max_db=60.0)
    metric.update_state(to_signed(clean)[None], to_signed(candidate)[None])
    metric.update_state(to_signed(clean)[None], to_signed(clean)[None])
    want = (reference(clean, candidate, False)[0] + 60.0) / 2
    assert abs(float(metric.result()) - want) < PSNR_TOL
    assert np.isinf(float(psnr(clean, clean, 255)))  # the plain function stays uncapped
    restored = keras.metrics.deserialize(keras.metrics.serialize(metric))
    assert restored.max_db == 60.0


def test_metric_config_round_trip():
    metric = SSIM(y_channel=True, crop_border=2, value_range=(0, 1))
    restored = keras.metrics.deserialize(keras.metrics.serialize(metric))
    assert isinstance(restored, SSIM)
    assert (restored.y_channel, restored.crop_border, restored.value_range) == (True, 2, (0, 1))
