"""find_pairs / paired_dataset: layouts, shapes, ranges, shared crop windows, and bad input."""

import numpy as np
import pytest
from PIL import Image

from conftest import random_image, write_raindrop_layout
from keras_derain.data import DatasetError, find_pairs, paired_dataset, read_rgb


def batches(dataset):
    return [(rainy.numpy(), clean.numpy()) for rainy, clean in dataset]


# --- layouts -------------------------------------------------------------------------------


def test_raindrop_layout_sorted_by_number(tmp_path):
    write_raindrop_layout(tmp_path, count=12)
    pairs = find_pairs(tmp_path)
    assert [rainy.name for rainy, _ in pairs][:3] == ["0_rain.png", "1_rain.png", "2_rain.png"]
    assert [rainy.name for rainy, _ in pairs][-2:] == ["10_rain.png", "11_rain.png"]
    assert all(clean.name == rainy.name.replace("rain", "clean") for rainy, clean in pairs)


def test_raindrop_splits_and_mixed_suffixes(tmp_path):
    write_raindrop_layout(tmp_path / "train", count=2)
    write_raindrop_layout(tmp_path / "test_b", count=3, suffix=".jpg")
    assert len(find_pairs(tmp_path, split="train")) == 2
    test_b = find_pairs(tmp_path, split="test_b")
    assert len(test_b) == 3 and test_b[0][0].suffix == ".jpg"
    with pytest.raises(DatasetError, match="holds splits .*give one of them"):
        find_pairs(tmp_path)
    with pytest.raises(DatasetError, match="no split 'test_a'"):
        find_pairs(tmp_path, split="test_a")


def test_generic_layout_matches_by_stem(tmp_path):
    (tmp_path / "rainy").mkdir()
    (tmp_path / "clean").mkdir()
    for stem in ("b", "a", "c"):
        Image.fromarray(random_image(16, 16)).save(tmp_path / "rainy" / f"{stem}.jpg")
        Image.fromarray(random_image(16, 16)).save(tmp_path / "clean" / f"{stem}.png")
    pairs = find_pairs(tmp_path)
    assert [(rainy.name, clean.name) for rainy, clean in pairs] == [
        ("a.jpg", "a.png"), ("b.jpg", "b.png"), ("c.jpg", "c.png")
    ]


# --- the real pairs ------------------------------------------------------------------------


def test_real_raindrop_pairs(shared_data):
    root = shared_data / "raindrop_real"
    assert len(find_pairs(root)) == 2
    whole = batches(paired_dataset(root))
    assert len(whole) == 2
    for rainy, clean in whole:
        assert rainy.shape == clean.shape == (1, 480, 720, 3)
        assert rainy.dtype == np.float32
        assert -1.0 <= rainy.min() < rainy.max() <= 1.0
    expected = read_rgb(root / "data" / "0_rain.png").astype(np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(whole[0][0][0], expected, atol=1e-6)

    crops = batches(paired_dataset(root, crop_size=128, batch_size=2, augment=True, seed=3))
    assert crops[0][0].shape == crops[0][1].shape == (2, 128, 128, 3)


# --- crops and determinism -----------------------------------------------------------------


def self_paired(tmp_path, count=4, size=(90, 70)):
    """Each rainy image paired with an identical clean copy."""
    width, height = size
    (tmp_path / "data").mkdir()
    (tmp_path / "gt").mkdir()
    for index in range(count):
        image = Image.fromarray(random_image(height, width, seed=index))
        image.save(tmp_path / "data" / f"{index}_rain.png")
        image.save(tmp_path / "gt" / f"{index}_clean.png")
    return tmp_path


@pytest.mark.parametrize("resize_jitter", [1.0, 1.3])
def test_crop_window_is_shared(tmp_path, resize_jitter):
    root = self_paired(tmp_path)
    dataset = paired_dataset(
        root, crop_size=32, batch_size=2, shuffle=True, augment=True, resize_jitter=resize_jitter, seed=7
    )
    for _ in range(3):  # several epochs, several random windows
        for rainy, clean in batches(dataset):
            np.testing.assert_array_equal(rainy, clean)
            assert rainy.shape == (2, 32, 32, 3)


def test_crop_comes_from_the_image(tmp_path):
    """Without jitter a crop is an exact window (maybe flipped) of the decoded image."""
    root = self_paired(tmp_path, count=1)
    image = read_rgb(root / "data" / "0_rain.png").astype(np.float32) / 127.5 - 1.0
    rainy = batches(paired_dataset(root, crop_size=24, augment=True, seed=1))[0][0][0]
    found = False
    for top in range(image.shape[0] - 23):
        for left in range(image.shape[1] - 23):
            window = image[top : top + 24, left : left + 24]
            if np.array_equal(window, rainy) or np.array_equal(window[:, ::-1], rainy):
                found = True
    assert found


def test_deterministic_given_seed(tmp_path):
    root = self_paired(tmp_path)

    def first_epoch(seed):
        dataset = paired_dataset(root, crop_size=32, batch_size=2, shuffle=True, augment=True, seed=seed)
        return np.concatenate([rainy for rainy, _ in batches(dataset)])

    np.testing.assert_array_equal(first_epoch(5), first_epoch(5))
    assert not np.array_equal(first_epoch(5), first_epoch(6))


def test_epochs_differ(tmp_path):
    root = self_paired(tmp_path)
    dataset = paired_dataset(root, crop_size=32, batch_size=4, augment=True, seed=2)
    first, second = batches(dataset)[0][0], batches(dataset)[0][0]
    assert not np.array_equal(first, second)


def test_small_images_are_scaled_up_to_the_crop(tmp_path):
    root = self_paired(tmp_path, count=2, size=(20, 16))
    rainy, clean = batches(paired_dataset(root, crop_size=32, batch_size=2, seed=0))[0]
    assert rainy.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(rainy, clean)


def test_repeat_and_cache(tmp_path):
    root = self_paired(tmp_path, count=3)
    dataset = paired_dataset(root, crop_size=16, batch_size=2, cache=True, repeat=True, seed=0)
    assert len(list(dataset.take(5))) == 5


# --- image modes -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "I;16"])
def test_modes_become_8bit_rgb(tmp_path, mode):
    (tmp_path / "data").mkdir()
    (tmp_path / "gt").mkdir()
    rgb = random_image(20, 24)
    if mode == "I;16":
        image = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    elif mode == "P":
        image = Image.fromarray(rgb).convert("P")
    else:
        image = Image.fromarray(rgb).convert(mode)
    image.save(tmp_path / "data" / "0_rain.png")
    Image.fromarray(rgb).save(tmp_path / "gt" / "0_clean.png")
    rainy, _ = batches(paired_dataset(tmp_path))[0]
    assert rainy.shape == (1, 20, 24, 3)
    expected = read_rgb(tmp_path / "data" / "0_rain.png").astype(np.float32) / 127.5 - 1.0
    np.testing.assert_allclose(rainy[0], expected, atol=1e-6)
    if mode in ("L", "I;16"):
        np.testing.assert_array_equal(rainy[0, ..., 0], rainy[0, ..., 2])
    if mode == "I;16":
        np.testing.assert_array_equal(read_rgb(tmp_path / "data" / "0_rain.png")[..., 0], rgb[..., 0])


def test_read_rgb_applies_exif_orientation(tmp_path):
    rgb = random_image(20, 24)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; viewers rotate 90 degrees clockwise
    Image.fromarray(rgb).save(tmp_path / "phone.png", exif=exif)
    upright = read_rgb(tmp_path / "phone.png")
    np.testing.assert_array_equal(upright, np.rot90(rgb, k=-1))


def test_image_too_large_to_decode_safely(tmp_path, monkeypatch):
    Image.fromarray(random_image(20, 24)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 480 pixels > 2 x the limit
    with pytest.raises(DatasetError, match="huge.png: too large to decode safely"):
        read_rgb(tmp_path / "huge.png")


# --- bad input: one clear DatasetError naming the file ------------------------------------------


def test_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="nowhere: no such folder"):
        paired_dataset(tmp_path / "nowhere")


def test_empty_folder(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "gt").mkdir()
    with pytest.raises(DatasetError, match=r"data: no images"):
        paired_dataset(tmp_path)


def test_folder_without_pairs(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(DatasetError, match="no pairs found"):
        find_pairs(tmp_path)


def test_missing_partner(tmp_path):
    write_raindrop_layout(tmp_path, count=3)
    (tmp_path / "gt" / "1_clean.png").unlink()
    with pytest.raises(DatasetError, match=r"1_rain\.png: no clean partner"):
        paired_dataset(tmp_path)


def _save(data, name, **options):
    """A new rainy file ``name`` in ``data/``: random pixels, PIL ``mode``/``format`` options."""
    mode = options.pop("mode", None)
    image = Image.fromarray(random_image(40, 48))
    (image.convert(mode) if mode else image).save(data / name, **options)


def _rotated():
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned by 90 degrees
    return exif


def _replace_bmp(mode):
    def damage(data):
        (data / "1_rain.png").unlink()
        _save(data, "1_rain.bmp", mode=mode)

    return damage


BAD_FILES = {
    "tiff named .png": (lambda data: _save(data, "1_rain.png", format="TIFF"),
                        r"1_rain\.png: unsupported image format TIFF"),
    "badly named": (lambda data: _save(data, "photo.png"), r"photo\.png: expected a name like N_rain"),
    "two files, one name": (lambda data: _save(data, "1_rain.jpg"),
                            r"1_rain\.(jpg|png): same name as 1_rain\.(png|jpg)"),
    # TensorFlow fails on 1-bit BMPs and reads palette BMPs with wrong colours.
    "rotated rainy file": (lambda data: _save(data, "1_rain.png", exif=_rotated()),
                           r"1_rain\.png and its partner .*1_clean\.png have different EXIF orientations"),
    "palette bmp": (_replace_bmp("P"), r"1_rain\.bmp: a P-mode BMP, which TensorFlow misreads"),
    "1-bit bmp": (_replace_bmp("1"), r"1_rain\.bmp: a 1-mode BMP, which TensorFlow misreads"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_file_is_named(tmp_path, case):
    write_raindrop_layout(tmp_path, count=2)
    damage, message = BAD_FILES[case]
    damage(tmp_path / "data")
    with pytest.raises(DatasetError, match=message):
        paired_dataset(tmp_path)


def test_missing_gt_folder(tmp_path):
    write_raindrop_layout(tmp_path, count=1)
    for path in (tmp_path / "gt").iterdir():
        path.unlink()
    (tmp_path / "gt").rmdir()
    with pytest.raises(DatasetError, match="gt/ is missing"):
        find_pairs(tmp_path)


def test_sizes_differ(tmp_path):
    write_raindrop_layout(tmp_path, count=2)
    Image.fromarray(random_image(30, 40)).save(tmp_path / "gt" / "1_clean.png")
    with pytest.raises(DatasetError, match=r"1_rain\.png is 48x40 but its partner .*1_clean\.png is 40x30"):
        paired_dataset(tmp_path)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_file(tmp_path, damage):
    write_raindrop_layout(tmp_path, count=2)
    path = tmp_path / "data" / "1_rain.png"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:-200])
    else:
        path.write_bytes(b"this is not an image")
    with pytest.raises(DatasetError, match=r"1_rain\.png: unreadable or corrupt"):
        paired_dataset(tmp_path)


def test_whole_images_of_several_sizes_need_batch_1(tmp_path):
    write_raindrop_layout(tmp_path / "a", count=1, size=(32, 32))
    write_raindrop_layout(tmp_path / "b", count=1, size=(40, 32))
    for name in ("data", "gt"):
        (tmp_path / "b" / name / f"0_{'rain' if name == 'data' else 'clean'}.png").rename(
            tmp_path / "a" / name / f"1_{'rain' if name == 'data' else 'clean'}.png"
        )
    with pytest.raises(DatasetError, match="several sizes"):
        paired_dataset(tmp_path / "a", batch_size=2)
    assert len(batches(paired_dataset(tmp_path / "a", batch_size=1))) == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"crop_size": 0}, "crop_size"),
        ({"batch_size": -1}, "batch_size"),
        ({"resize_jitter": 0.5, "crop_size": 16}, "resize_jitter"),
        ({"resize_jitter": 1.2}, "resize_jitter needs crop_size"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    write_raindrop_layout(tmp_path, count=1)
    with pytest.raises(ValueError, match=message):
        paired_dataset(tmp_path, **kwargs)
