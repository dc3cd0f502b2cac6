"""Derainer: any size in, same size out; tiles agree with the whole photo away from seams."""

import numpy as np
import pytest

from conftest import random_image
from keras_derain.export import reflect_pad_array
from keras_derain.inference import Derainer, InferenceError, default_model_path, ramp, tile_starts

DEPTH = 3  # stride 8
SEAM_MARGIN = 16  # pixels from a tile edge beyond which a depth-3 U-Net sees no tile border


def tiny_generator(norm="none", depth=DEPTH, seed=0):
    """A 4-channel U-Net with He-scaled random weights, so outputs span [-1, 1] (N(0, 0.02) gives ~0)."""
    import keras

    from keras_derain.models import pix2pix_generator

    keras.utils.set_random_seed(seed)
    generator = pix2pix_generator(base_channels=4, depth=depth, norm=norm, dropout=0)
    rng = np.random.default_rng(seed)
    for weight in generator.weights:
        if weight.path.endswith("kernel"):
            fan_in = np.prod(weight.shape[:2]) * (weight.shape[3] if "upconv" in weight.path else weight.shape[2])
            weight.assign(rng.normal(0, 1 / np.sqrt(fan_in), weight.shape).astype("float32"))
    return generator


@pytest.fixture(scope="module")
def tiny_keras(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    tiny_generator().save(path)
    return path


def as_float(image):
    return image.astype(np.float32) / 127.5 - 1.0


def test_tile_starts_cover_and_align():
    assert tile_starts(50, 64, 16) == [0]
    starts = tile_starts(304, 64, 16, align=8)
    assert all(start % 8 == 0 for start in starts) and starts[-1] + 64 == 304
    assert all(later - earlier <= 64 - 16 for earlier, later in zip(starts, starts[1:]))
    assert ramp(8, 3).min() > 0 and ramp(8, 3).max() == 1.0


def test_any_size_same_size_uint8(tiny_keras):
    derainer = Derainer(tiny_keras, tile_size=64)
    for height, width in [(2, 2), (37, 53), (100, 150)]:
        derained = derainer.derain(random_image(height, width))
        assert derained.shape == (height, width, 3) and derained.dtype == np.uint8


def seam_distance(length, tile, overlap, align, offset, count):
    """Per pixel of the photo, the distance to the nearest tile edge inside the padded photo."""
    padded_length = length + (-length) % align
    starts = tile_starts(padded_length, tile, overlap, align)
    edges = {start for start in starts if start > 0} | {start + tile for start in starts if start + tile < padded_length}
    positions = np.arange(padded_length)
    distance = np.min([np.abs(positions - edge) for edge in edges], axis=0)
    return distance[offset : offset + count]


def test_tiles_match_whole_photo_away_from_seams(tiny_keras):
    """300x220 photo, 64-pixel tiles: exact beyond SEAM_MARGIN of a tile edge, close everywhere.

    Measured on this random network: largest difference 0.06 and mean 0.002
    in [-1, 1] (8 and 0.3 uint8 levels) with overlap 16. A trained network is
    smoother; these bounds only guard against a broken blend.
    """
    photo = as_float(random_image(220, 300, seed=3))
    whole = Derainer(tiny_keras, tile_size=512).derain_float(photo)
    tiled = Derainer(tiny_keras, tile_size=64, overlap=16, batch_size=3).derain_float(photo)
    assert tiled.shape == whole.shape == (220, 300, 3)
    difference = np.abs(tiled - whole).max(axis=-1)

    _, (top, left) = reflect_pad_array(photo, 8)
    rows = seam_distance(220, 64, 16, 8, top, 220) >= SEAM_MARGIN
    cols = seam_distance(300, 64, 16, 8, left, 300) >= SEAM_MARGIN
    away = rows[:, None] & cols[None, :]
    assert away.sum() > 100
    assert difference[away].max() < 1e-5
    assert difference.max() < 0.1 and difference.mean() < 0.005


def test_instance_norm_tiles_differ_everywhere(tmp_path):
    """Instance norm normalises each tile with its own statistics, so tiles differ even far from seams.

    Measured here (random weights, noise photo, 64-pixel tiles): mean difference
    0.12 in [-1, 1]. This documents the behaviour; a large ``tile_size`` avoids it.
    """
    path = tmp_path / "instance.keras"
    tiny_generator(norm="instance").save(path)
    photo = as_float(random_image(160, 200, seed=4))
    whole = Derainer(path, tile_size=512).derain_float(photo)
    tiled = Derainer(path, tile_size=64, overlap=16).derain_float(photo)
    _, (top, left) = reflect_pad_array(photo, 8)
    rows = seam_distance(160, 64, 16, 8, top, 160) >= SEAM_MARGIN
    cols = seam_distance(200, 64, 16, 8, left, 200) >= SEAM_MARGIN
    away = rows[:, None] & cols[None, :]
    assert away.any() and np.abs(tiled - whole).max(axis=-1)[away].mean() > 1e-3
    assert np.isfinite(tiled).all() and np.abs(tiled).max() <= 1.0


def test_fixed_size_generator_tiles_at_its_size(tmp_path):
    from keras_derain.models import cgan_generator

    path = tmp_path / "cgan.keras"
    cgan_generator(image_size=32, base_channels=4, latent_dim=8).save(path)
    derainer = Derainer(path, overlap=8)
    assert derainer.fixed_size == (32, 32)
    for height, width in [(20, 25), (70, 45)]:
        assert derainer.derain(random_image(height, width)).shape == (height, width, 3)


def test_reads_paths(tiny_keras, tmp_path):
    from PIL import Image

    Image.fromarray(random_image(30, 40)).save(tmp_path / "rainy.png")
    assert Derainer(tiny_keras).derain(tmp_path / "rainy.png").shape == (30, 40, 3)


def test_clear_errors(tiny_keras, tmp_path):
    with pytest.raises(InferenceError, match="no such model"):
        Derainer(tmp_path / "missing.keras")
    (tmp_path / "model.h5").write_bytes(b"x")
    with pytest.raises(InferenceError, match="unknown model kind"):
        Derainer(tmp_path / "model.h5")
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(InferenceError, match="cannot be loaded"):
        Derainer(tmp_path / "broken.keras")
    with pytest.raises(InferenceError, match="uint8"):
        Derainer(tiny_keras).derain(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(InferenceError, match="overlap"):
        Derainer(tiny_keras, tile_size=64, overlap=40)


def test_default_model_missing_is_explained(monkeypatch, tmp_path):
    import keras_derain.inference as inference

    monkeypatch.setattr(inference, "DEFAULT_WEIGHTS_DIR", tmp_path)
    with pytest.raises(InferenceError, match="no default generator"):
        Derainer()
    tiny_generator().save(tmp_path / "generator.keras")
    assert default_model_path() == tmp_path / "generator.keras"


def test_compact_float16_bundle_round_trip(tmp_path):
    """The shipped-weights format: architecture + float16 weights, loaded back as float32."""
    import keras

    from keras_derain.compact import load_compact, save_compact
    from keras_derain.inference import Derainer
    from keras_derain.models import pix2pix_generator

    keras.utils.set_random_seed(0)
    generator = pix2pix_generator(base_channels=4, depth=3)
    path = tmp_path / "generator.f16.npz"
    save_compact(generator, path)
    restored = load_compact(path)
    assert all(weight.dtype == "float32" for weight in restored.get_weights())
    rainy = np.random.default_rng(0).uniform(-1, 1, (1, 24, 32, 3)).astype("float32")
    expected = generator.predict(rainy, verbose=0)
    got = restored.predict(rainy, verbose=0)
    assert 0 < np.max(np.abs(got - expected)) < 1e-2  # float16 rounding: small, not nothing
    photo = (np.random.default_rng(1).uniform(0, 255, (21, 35, 3))).astype("uint8")
    assert Derainer(path).derain(photo).shape == photo.shape
