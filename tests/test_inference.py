"""Derainer: any size in, same size out; tiles agree with the whole photo away from seams."""

import re

import numpy as np
import pytest

from conftest import random_image, randomise_kernels
from keras_derain.export import reflect_pad_array
from keras_derain.inference import (
    Derainer, InferenceError, default_model_path, ramp, read_photo, reflect_indices, tile_starts,
)

DEPTH = 3  # stride 8
SEAM_MARGIN = 16  # pixels from a tile edge beyond which a depth-3 U-Net sees no tile border


def tiny_generator(norm="none", depth=DEPTH, seed=0):
    """A 4-channel U-Net with He-scaled random weights, so outputs span [-1, 1] (N(0, 0.02) gives ~0)."""
    import keras

    from keras_derain.models import pix2pix_generator

    keras.utils.set_random_seed(seed)
    generator = pix2pix_generator(base_channels=4, depth=depth, norm=norm, dropout=0)
    # A transposed convolution's kernel is (h, w, out, in).
    return randomise_kernels(generator, seed, lambda weight: np.prod(weight.shape[:2]) * (
        weight.shape[3] if "upconv" in weight.path else weight.shape[2]))


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
    with pytest.raises(InferenceError, match="broken.keras: not a .keras file"):
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


def reference_blend(derainer, photo, tile, align, multiple):
    """The plain algorithm the band replaces: pad the whole photo, full-size float32 sums, divide."""
    padded, (top, left) = reflect_pad_array(photo.astype(np.float32) / 127.5 - 1, multiple)
    height, width = min(tile, padded.shape[0]), min(tile, padded.shape[1])
    weights = np.outer(ramp(height, derainer.overlap), ramp(width, derainer.overlap))[..., None]
    blended, total = np.zeros(padded.shape, np.float32), np.zeros(padded.shape[:2] + (1,), np.float32)
    for row in tile_starts(padded.shape[0], height, derainer.overlap, align):
        for col in tile_starts(padded.shape[1], width, derainer.overlap, align):
            generated = derainer._run(padded[None, row : row + height, col : col + width])[0]
            blended[row : row + height, col : col + width] += weights * generated
            total[row : row + height, col : col + width] += weights
    generated = (blended / total)[top : top + photo.shape[0], left : left + photo.shape[1]]
    return np.clip(np.round((generated + 1) * 127.5), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("size", [(150, 100), (37, 200), (130, 5)])
def test_band_blend_equals_whole_photo_sums(tiny_keras, size):
    """Rows leave the one-tile band as soon as no later tile reaches them: same pixels as full-size sums."""
    derainer = Derainer(tiny_keras, tile_size=64, overlap=16, batch_size=2)
    photo = random_image(*size, seed=sum(size))
    expected = reference_blend(derainer, photo, 64, derainer._alignment(), 8)
    assert np.array_equal(derainer.derain(photo), expected)


def test_reflect_indices_pad_like_numpy():
    for length in (2, 3, 17):
        for before, after in ((0, 0), (3, 5), (40, 1)):
            pixels = np.arange(length)
            padded = np.pad(pixels, (before, after), mode="reflect")
            assert np.array_equal(pixels[reflect_indices(length, before, length + before + after)], padded)


def test_memory_is_a_few_bytes_a_pixel(tiny_keras):
    """A 600x800 uint8 photo in 64-pixel tiles: numpy's peak is the uint8 output plus a band, not float copies.

    Measured: 2.7 MB (output 1.44 MB, band 64x800x3 float32 0.6 MB, a batch of
    tiles); the whole-photo float32 blend this replaced peaked at 25 MB.
    """
    import tracemalloc

    derainer = Derainer(tiny_keras, tile_size=64, overlap=16)
    photo = random_image(600, 800)
    derainer.derain(photo[:100, :100])  # trace the graph outside the measurement
    tracemalloc.start()
    derainer.derain(photo)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 3 * photo.nbytes, f"{peak / 1e6:.1f} MB"


def test_pixel_cap_is_checked_from_the_header(tmp_path, tiny_keras, monkeypatch):
    """A 16000x16000 file (tiny as a 1-bit PNG, 256 MP: past Pillow's own limit too) is refused undecoded."""
    from PIL import Image

    import keras_derain.data.images as images

    Image.new("1", (16000, 16000)).save(tmp_path / "huge.png")
    monkeypatch.setattr(images, "read_rgb", lambda path: pytest.fail("decoded a photo over the cap"))
    over_cap = "huge.png: 16000x16000 is 256,000,000 pixels, over the cap of 150,000,000; raise it with --max-pixels"
    with pytest.raises(InferenceError, match=over_cap):
        Derainer(tiny_keras).derain(tmp_path / "huge.png")
    with pytest.raises(InferenceError, match=r"huge.png: 16000x16000 .* over the cap of 1,000"):
        read_photo(tmp_path / "huge.png", max_pixels=1000)
    with pytest.raises(InferenceError, match="tiny.png: image of 1x1 pixels is too small"):
        Image.new("RGB", (1, 1)).save(tmp_path / "tiny.png")
        Derainer(tiny_keras).derain(tmp_path / "tiny.png")


def not_generators(folder):
    """Models that load but do not derain, with what the error must say."""
    import keras

    from keras_derain.models import pix2pix_discriminator

    rgb, gray = keras.Input((None, None, 3)), keras.Input((None, None, 1))
    fixed = keras.Input((32, 32, 3))
    models = {
        "classifier": (keras.Model(fixed, keras.layers.Dense(10)(keras.layers.Flatten()(fixed))),
                       r"returns shape \(None, 10\), not an RGB photo"),
        "discriminator": (pix2pix_discriminator(base_channels=4), "takes 2 inputs, not a generator"),
        "gray": (keras.Model(gray, keras.layers.Conv2D(3, 3, padding="same")(gray)),
                 r"takes input of shape \(None, None, None, 1\), not RGB photos"),
        "mask": (keras.Model(rgb, keras.layers.Conv2D(1, 3, padding="same")(rgb)),
                 r"returns shape \(None, None, None, 1\), not an RGB photo"),
        "halving": (keras.Model(rgb, keras.layers.Conv2D(3, 3, strides=2, padding="same")(rgb)),
                    r"turns a photo of shape \(1, 32, 32, 3\) into \(1, 16, 16, 3\)"),
    }
    for name, (model, message) in models.items():
        model.save(folder / f"{name}.keras")
        yield folder / f"{name}.keras", message


def test_models_are_checked_when_loaded(tmp_path):
    for path, message in not_generators(tmp_path):
        with pytest.raises(InferenceError, match=f"^{re.escape(str(path))}: {message}") as error:
            Derainer(path)
        assert "\n" not in str(error.value)


def test_a_second_output_after_the_photo_is_allowed(tmp_path):
    """A generator that also returns a drop mask: the first output is the derained photo."""
    import keras

    rgb = keras.Input((None, None, 3))
    features = keras.layers.Conv2D(4, 4, strides=2, padding="same")(rgb)
    photo = keras.layers.Conv2DTranspose(3, 4, strides=2, padding="same", activation="tanh")(features)
    mask = keras.layers.Conv2DTranspose(1, 4, strides=2, padding="same", activation="sigmoid")(features)
    keras.Model(rgb, [photo, mask]).save(tmp_path / "with_mask.keras")
    derainer = Derainer(tmp_path / "with_mask.keras", tile_size=32, overlap=8)
    assert derainer.derain(random_image(45, 70)).shape == (45, 70, 3)


def test_read_photo_reads_as_read_rgb(tmp_path):
    """The low-memory path for plain RGB files gives read_rgb's pixels; rotated, gray and 16-bit files too."""
    from PIL import Image

    from keras_derain.data import read_rgb

    photo = random_image(30, 40)
    Image.fromarray(photo).save(tmp_path / "rgb.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: viewers show it upright, 30 wide
    Image.fromarray(photo).save(tmp_path / "rotated.jpg", exif=exif)
    Image.fromarray(photo[..., 0]).save(tmp_path / "gray.png")
    Image.fromarray(photo[..., 0].astype(np.uint16) * 257).save(tmp_path / "deep.png")
    for name in ("rgb.png", "rotated.jpg", "gray.png", "deep.png"):
        assert np.array_equal(read_photo(tmp_path / name), read_rgb(tmp_path / name)), name
    assert read_photo(tmp_path / "rotated.jpg").shape == (40, 30, 3)


def test_builtin_names_resolve_to_shipped_files(tmp_path, monkeypatch):
    from keras_derain.inference import model_path

    monkeypatch.chdir(tmp_path)  # a file named like a built-in in the working folder wins over it
    default, lens = model_path("default"), model_path("lens")
    assert default == default_model_path() and default.is_file()
    assert lens.name == "lens.f16.npz" and lens.is_file() and lens != default
    with pytest.raises(InferenceError, match="wet: no such model file or folder, nor a built-in model .*lens"):
        model_path("wet")
    (tmp_path / "lens").mkdir()
    assert model_path("lens") == tmp_path.joinpath("lens").relative_to(tmp_path)
