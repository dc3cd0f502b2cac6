"""Tests for synthetic_dataset: shapes, range, determinism, and bad input folders."""

import numpy as np
import pytest
from PIL import Image

from keras_derain.data import raindrops
from keras_derain.data.images import DatasetError
from keras_derain.data.synthetic import builtin_clean_images, clean_image_paths, synthetic_dataset

from conftest import random_image


def write_images(folder, count=3, size=(48, 40)):
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    for index in range(count):
        Image.fromarray(random_image(height, width, seed=index)).save(folder / f"{index}.png")
    return folder


def take(dataset, count):
    return [(rainy.numpy(), clean.numpy()) for rainy, clean in dataset.take(count)]


def test_builtin_images_exist_and_fit_256_crops():
    paths = builtin_clean_images()
    assert 8 <= len(paths) <= 12
    assert sum(path.stat().st_size for path in paths) < 3_000_000
    for path in paths:
        with Image.open(path) as image:
            assert min(image.size) >= 256


def test_shapes_and_range(tmp_path):
    dataset = synthetic_dataset(write_images(tmp_path / "clean"), crop_size=32, batch_size=2, seed=1)
    for rainy, clean in take(dataset, 2):
        assert rainy.shape == clean.shape == (2, 32, 32, 3)
        assert rainy.dtype == clean.dtype == np.float32
        assert rainy.min() >= -1.0 and rainy.max() <= 1.0
        assert clean.min() >= -1.0 and clean.max() <= 1.0


def test_same_seed_same_pairs_other_seed_other_pairs(tmp_path):
    folder = write_images(tmp_path / "clean")

    def pairs(seed):
        return take(synthetic_dataset(folder, crop_size=32, batch_size=2, seed=seed), 3)

    first = pairs(5)
    for (rainy, clean), (rainy_again, clean_again) in zip(first, pairs(5)):
        np.testing.assert_array_equal(rainy, rainy_again)
        np.testing.assert_array_equal(clean, clean_again)
    assert not all(np.array_equal(a[0], b[0]) for a, b in zip(first, pairs(6)))


def test_builtin_default_and_list_of_paths(tmp_path):
    rainy, clean = take(synthetic_dataset(crop_size=64, batch_size=2, seed=0), 1)[0]
    assert rainy.shape == (2, 64, 64, 3)
    paths = [str(path) for path in sorted((write_images(tmp_path / "clean")).iterdir())]
    one_pass = synthetic_dataset(paths, crop_size=32, batch_size=2, seed=0, repeat=False)
    assert [rainy.shape[0] for rainy, _ in take(one_pass, 5)] == [2, 1]


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "notes.txt").write_text("no photos yet")
    with pytest.raises(DatasetError, match="no images"):
        synthetic_dataset(tmp_path / "photos")
    with pytest.raises(DatasetError, match="empty list"):
        synthetic_dataset([])


def test_corrupt_image_is_named(tmp_path):
    folder = write_images(tmp_path / "clean")
    (folder / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match="broken.png"):
        synthetic_dataset(folder)


def test_stray_non_image_file_is_skipped_with_a_warning(tmp_path):
    folder = write_images(tmp_path / "clean", count=2)
    (folder / "notes.txt").write_text("shot in the rain")
    with pytest.warns(UserWarning, match="notes.txt"):
        paths = clean_image_paths(folder)
    assert [path.name for path in paths] == ["0.png", "1.png"]


def test_bad_raindrop_option_is_named():
    with pytest.raises(ValueError, match="density"):
        synthetic_dataset(raindrop_options={"density": 2.0})


def test_nested_folders_are_read(tmp_path):
    library = tmp_path / "library"
    write_images(library / "2024" / "june", count=2)
    write_images(library / "2025", count=1)
    write_images(library / ".thumbnails", count=1)  # hidden: skipped
    paths = clean_image_paths(library)
    assert [str(path.relative_to(library)) for path in paths] == ["2024/june/0.png", "2024/june/1.png", "2025/0.png"]
    rainy, _ = take(synthetic_dataset(library, crop_size=32, batch_size=2, seed=0), 1)[0]
    assert rainy.shape == (2, 32, 32, 3)


def test_dry_pairs_appear_and_are_exact(tmp_path):
    folder = write_images(tmp_path / "clean", count=4)
    dataset = synthetic_dataset(folder, crop_size=32, batch_size=4, seed=2,
                                raindrop_options={"dry_fraction": 0.5, "density": 0.6})
    dry = wet = 0
    for rainy, clean in take(dataset, 6):
        for rainy_image, clean_image in zip(rainy, clean):
            if np.array_equal(rainy_image, clean_image):
                dry += 1
            else:
                wet += 1
    assert dry >= 3 and wet >= 3, (dry, wet)


def test_lens_fraction_is_checked_and_mixes_styles(tmp_path):
    with pytest.raises(ValueError, match="lens_fraction"):
        synthetic_dataset(lens_fraction=1.5)
    folder = write_images(tmp_path / "clean", count=2, size=(48, 48))

    def batches(lens_fraction, options=None):
        dataset = synthetic_dataset(folder, crop_size=32, batch_size=2, seed=3, lens_fraction=lens_fraction,
                                    raindrop_options=options)
        return [rainy for rainy, _ in take(dataset, 8)]

    window, lens = batches(0.0), batches(0.0, raindrops.LENS_STYLE)
    assert all(np.array_equal(a, b) for a, b in zip(batches(1.0), lens))
    mixed = batches(0.5)
    from_lens = sum(np.array_equal(a, b) for a, b in zip(mixed, lens))
    from_window = sum(np.array_equal(a, b) for a, b in zip(mixed, window))
    assert from_lens + from_window == 8 and from_lens >= 1 and from_window >= 1, (from_lens, from_window)


def test_wide_view_gives_the_renderer_the_whole_photo_and_crop_view_the_crop_alone(tmp_path):
    from unittest import mock

    from keras_derain.data import synthetic

    folder = write_images(tmp_path / "clean", count=2)
    seen = {}
    for wide in (True, False):
        calls = []
        real = raindrops.render_raindrops

        def spy(*args, **kwargs):
            calls.append(kwargs)
            return real(*args, **kwargs)

        with mock.patch.object(synthetic.raindrops, "render_raindrops", spy):
            dataset = synthetic_dataset(folder, crop_size=32, batch_size=2, seed=4, wide_view=wide,
                                        raindrop_options={"dry_fraction": 0.0, "density": 0.6}, reference_side=None)
        seen[wide] = take(dataset, 1)[0]
        assert calls and all((call["environment"] is None) == (not wide) for call in calls)
        assert all((call["window"] is None) == (not wide) for call in calls)
    np.testing.assert_array_equal(seen[True][1], seen[False][1])       # the same crops
    assert not np.array_equal(seen[True][0], seen[True][1])            # with drops
    assert not np.array_equal(seen[True][0], seen[False][0])           # drops that see other things
