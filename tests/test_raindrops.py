"""Tests for the raindrop renderer: determinism, exactness outside drops, options."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from keras_derain.data.raindrops import RaindropOptions, raindrop_options, render_raindrops

from conftest import random_image

REPO = Path(__file__).resolve().parents[1]


def clean_batch(count=2, height=48, width=64):
    return np.float32([random_image(height, width, seed=index) / 255.0 for index in range(count)])


def test_batch_and_single_image_shapes_and_range():
    clean = clean_batch()
    rainy, mask = render_raindrops(clean, seed=1, return_mask=True)
    assert rainy.shape == (2, 48, 64, 3) and mask.shape == (2, 48, 64, 1)
    single, single_mask = render_raindrops(clean[0], seed=1, return_mask=True)
    assert single.shape == (48, 64, 3) and single_mask.shape == (48, 64, 1)
    for image in (rainy, mask, single):
        assert image.dtype == tf.float32
        assert 0.0 <= float(tf.reduce_min(image)) and float(tf.reduce_max(image)) <= 1.0
    assert float(tf.reduce_max(mask)) > 0.0, "the defaults must draw some drops"


def test_same_seed_same_drops_other_seed_other_drops():
    clean = clean_batch()
    first = render_raindrops(clean, seed=7).numpy()
    np.testing.assert_array_equal(first, render_raindrops(clean, seed=7).numpy())
    np.testing.assert_array_equal(first, render_raindrops(clean, seed=tf.constant([7, 0x5EED])).numpy())
    assert not np.array_equal(first, render_raindrops(clean, seed=8).numpy())


def test_pixels_outside_the_drops_are_exact_copies():
    clean = clean_batch(count=3)
    rainy, mask = render_raindrops(clean, seed=3, return_mask=True, density=0.3)
    rainy, mask = rainy.numpy(), mask.numpy()[..., 0]
    outside = mask == 0.0
    assert outside.any() and (~outside).any()
    np.testing.assert_array_equal(rainy[outside], clean[outside])
    changed = np.any(rainy != clean, axis=-1)
    assert not np.any(changed & outside), "the mask must cover every changed pixel"


def test_zero_density_changes_nothing():
    clean = clean_batch()
    rainy, mask = render_raindrops(clean, seed=1, return_mask=True, density=0.0)
    np.testing.assert_array_equal(rainy.numpy(), clean)
    assert float(tf.reduce_max(mask)) == 0.0


def test_coverage_grows_with_density():
    clean = clean_batch(count=2, height=64, width=64)
    coverages = []
    for density in (0.05, 0.2, 0.4, 0.8):
        _, mask = render_raindrops(clean, seed=11, return_mask=True, density=density)
        coverages.append(float(tf.reduce_mean(tf.cast(mask > 0.05, tf.float32))))
    assert coverages == sorted(coverages) and coverages[0] < coverages[-1], coverages


def test_runs_inside_a_tf_data_map():
    clean = clean_batch(count=4, height=32, width=32)
    dataset = tf.data.Dataset.from_tensor_slices(clean).batch(2)
    dataset = dataset.map(lambda batch: render_raindrops(batch, seed=tf.constant([1, 2])))
    batches = list(dataset)
    assert [tuple(batch.shape) for batch in batches] == [(2, 32, 32, 3)] * 2


@pytest.mark.parametrize(
    "name, value",
    [
        ("density", -0.1),
        ("density", 1.5),
        ("radius_range", (-0.01, 0.1)),
        ("radius_range", (0.1, 0.02)),
        ("blur_range", (0.03, 0.01)),
        ("elongation", 0.5),
        ("gain_range", (1.2,)),
        ("rim_darkening", float("nan")),
    ],
)
def test_bad_options_raise_naming_the_option(name, value):
    with pytest.raises(ValueError, match=name):
        render_raindrops(clean_batch(count=1), seed=0, **{name: value})
    with pytest.raises(ValueError, match=name):
        RaindropOptions(**{name: value})


def test_unknown_option_is_a_type_error():
    with pytest.raises(TypeError, match="densty"):
        raindrop_options(densty=0.2)


def test_options_object_and_overrides_combine():
    options = raindrop_options(RaindropOptions(density=0.1), blur_range=(0.0, 0.0))
    assert options.density == 0.1 and options.blur_range == (0.0, 0.0)
    clean = clean_batch(count=1)
    np.testing.assert_array_equal(
        render_raindrops(clean, seed=2, options=options).numpy(),
        render_raindrops(clean, seed=2, density=0.1, blur_range=(0.0, 0.0)).numpy(),
    )


def test_default_coverage_is_within_the_real_range(shared_data):
    """Rendered onto the real pairs' clean images, measured as the real pairs are."""
    spec = importlib.util.spec_from_file_location("raindrop_coverage", REPO / "benchmarks" / "raindrop_coverage.py")
    coverage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(coverage)
    pairs = coverage.real_pairs(shared_data / "raindrop_real")
    real = [coverage.coverage(rainy, clean) for rainy, clean in pairs]
    rendered = coverage.rendered_coverages([clean for _, clean in pairs], seeds=[0])
    assert min(real) <= np.mean(rendered) <= max(real), (real, rendered)


@pytest.mark.parametrize(
    "name, value",
    [
        ("shape_noise", 0.8),
        ("tail", -0.1),
        ("view_tilt_range", (0.5, 0.1)),
        ("smear", 0.5),
        ("glow", -0.2),
        ("dry_fraction", 1.5),
        ("radius_range", (0.01, 0.6)),
        ("veil_range", (0.0, 0.7)),
        ("veil_range", (0.2, 0.1)),
        ("halo", 1.5),
        ("halo", -0.1),
        ("halo_reach", 0.2),
    ],
)
def test_new_options_are_range_checked(name, value):
    with pytest.raises(ValueError, match=name):
        RaindropOptions(**{name: value})


def test_unknown_style_is_named():
    with pytest.raises(ValueError, match="fisheye"):
        raindrop_options("fisheye")


def test_dry_pairs_are_exactly_equal_and_counted():
    clean = clean_batch(count=16, height=32, width=32)
    rainy, mask = render_raindrops(clean, seed=4, return_mask=True, dry_fraction=0.5, density=0.6)
    rainy, mask = rainy.numpy(), mask.numpy()
    dry = [np.array_equal(rainy[index], clean[index]) for index in range(16)]
    assert 3 <= sum(dry) <= 13, dry
    for index in np.flatnonzero(dry):
        assert mask[index].max() == 0.0
    everything_dry = render_raindrops(clean, seed=4, dry_fraction=1.0).numpy()
    np.testing.assert_array_equal(everything_dry, clean)


def test_veil_lifts_every_pixel_toward_a_bright_light_and_is_in_the_mask():
    clean = clean_batch(count=3, height=40, width=40)
    rainy, mask = render_raindrops(clean, seed=2, return_mask=True, density=0.0, dry_fraction=0.0,
                                   veil_range=(0.1, 0.1))
    rainy, mask = rainy.numpy(), mask.numpy()
    np.testing.assert_allclose(mask, 0.1, atol=1e-6)
    # rainy = 0.9 * clean + 0.1 * light: the same light at every pixel of an image.
    light = (rainy - 0.9 * clean) / 0.1
    spread = light.max(axis=(1, 2)) - light.min(axis=(1, 2))
    assert spread.max() < 1e-3, spread
    light = light.mean(axis=(1, 2))
    scene = clean.mean(axis=(1, 2))
    assert np.all(light >= scene - 0.02) and np.all(light <= 1.0 + 1e-5), (light, scene)
    # No veil on the window style, none on dry images.
    np.testing.assert_array_equal(render_raindrops(clean, seed=2, density=0.0).numpy(), clean)
    dry = render_raindrops(clean, seed=2, options="lens", dry_fraction=1.0).numpy()
    np.testing.assert_array_equal(dry, clean)


def test_halo_lifts_the_surround_by_a_gain_inside_a_wider_mask():
    clean = clean_batch(count=3, height=64, width=64)
    common = dict(seed=6, return_mask=True, dry_fraction=0.0, density=0.15)
    plain, plain_mask = (t.numpy() for t in render_raindrops(clean, **common))
    rainy, mask = (t.numpy() for t in render_raindrops(clean, halo=0.4, halo_reach=0.05, **common))
    again = render_raindrops(clean, halo=0.4, halo_reach=0.05, **common)[0].numpy()
    np.testing.assert_array_equal(rainy, again)  # deterministic per seed
    # The mask grows to cover the halo, and outside it every pixel is an exact copy.
    assert np.all(mask >= plain_mask - 1e-6) and (mask > 0).mean() > (plain_mask > 0).mean()
    outside = mask[..., 0] == 0.0
    assert outside.any()
    np.testing.assert_array_equal(rainy[outside], clean[outside])
    # In the halo ring (in the new mask, not the drops') the scene is brighter by a gain of at most 1 + halo.
    ring = (plain_mask[..., 0] == 0.0) & (mask[..., 0] > 0.05)
    assert ring.any()
    ratio = rainy[ring] / np.maximum(clean[ring], 1e-3)
    bright = clean[ring] > 0.05
    assert np.all(ratio[bright] >= 1.0 - 1e-5) and np.all(ratio[bright] <= 1.4 + 1e-4)
    assert rainy[ring].mean() > clean[ring].mean()
    # halo 0 is the renderer without a halo, to the bit.
    np.testing.assert_array_equal(render_raindrops(clean, halo=0.0, **common)[0].numpy(), plain)
    # The halo grows round the drops, not round a veil: far from them, a veiled render is unchanged by it.
    veiled = dict(common, veil_range=(0.1, 0.1))
    with_veil = render_raindrops(clean, **veiled)[0].numpy()
    with_both = render_raindrops(clean, halo=0.4, halo_reach=0.05, **veiled)[0].numpy()
    np.testing.assert_array_equal(with_both[outside], with_veil[outside])


def test_wash_halo_blends_the_surround_toward_one_light_and_lifts_dark_pixels_most():
    clean = clean_batch(count=3, height=64, width=64)
    common = dict(seed=6, return_mask=True, dry_fraction=0.0, density=0.15, halo=0.4, halo_reach=0.05)
    plain_mask = render_raindrops(clean, seed=6, return_mask=True, dry_fraction=0.0, density=0.15)[1].numpy()
    rainy, mask = (t.numpy() for t in render_raindrops(clean, halo_mode="wash", **common))
    np.testing.assert_array_equal(rainy, render_raindrops(clean, halo_mode="wash", **common)[0].numpy())
    gain_mask = render_raindrops(clean, **common)[1].numpy()
    np.testing.assert_array_equal(mask, gain_mask)  # the same halo footprint as the gain's
    outside = mask[..., 0] == 0.0
    assert outside.any()
    np.testing.assert_array_equal(rainy[outside], clean[outside])
    for index in range(3):
        ring = (plain_mask[index, ..., 0] == 0.0) & (mask[index, ..., 0] > 0.05)
        assert ring.any()
        before, after = clean[index][ring], rainy[index][ring]
        # rainy = (1 - s) * clean + s * light with one light per image: every ring pixel moves toward it
        # and stops short of it; the light lies between the scene's mean and white.
        strength = np.clip(0.4 * mask[index][ring], 0.0, 0.4)  # s <= halo
        step = after - before
        light = before + step / np.maximum(strength, 1e-6)
        scene = clean[index].mean(axis=(0, 1))
        dark = before < scene[None, :] - 0.1
        assert np.all(step[dark] > 0.0)  # dark pixels are lifted
        firm = strength[:, 0] > 0.02
        guess = np.median(light[firm], axis=0)
        np.testing.assert_allclose(light[firm], np.broadcast_to(guess, light[firm].shape), atol=1e-3)
        assert np.all(guess >= scene - 1e-3) and np.all(guess <= 1.0 + 1e-3), (guess, scene)
        # Unlike the gain, the wash lifts dark pixels more than bright ones.
        luma = before.mean(axis=-1)
        low, high = luma < np.quantile(luma, 0.3), luma > np.quantile(luma, 0.7)
        assert step[low].mean() > step[high].mean()
    with pytest.raises(ValueError, match="halo_mode"):
        RaindropOptions(halo_mode="glare")
    with pytest.raises(ValueError, match="'gain', 'wash', 'capped'"):
        RaindropOptions(halo_mode="cap")


def test_batch_focus_blurs_every_drop_of_the_call_by_one_tent_kernel():
    from keras_derain.data.raindrops import _tent_blur

    clean = clean_batch(count=3, height=64, width=64)
    common = dict(seed=4, return_mask=True, dry_fraction=0.0, glow=0.0, density=0.3)
    sharp = render_raindrops(clean, blur_range=(0.0, 0.0), **common)[1]
    # Without blur the two modes draw the same drops.
    np.testing.assert_allclose(render_raindrops(clean, blur_range=(0.0, 0.0), focus="batch", **common)[1], sharp)
    # With one radius (0.05 of 64 px: 3 px), every image's mask is the sharp one under the same tent.
    rainy, mask = render_raindrops(clean, blur_range=(0.05, 0.05), focus="batch", **common)
    np.testing.assert_allclose(mask.numpy(), _tent_blur(sharp, 3).numpy(), atol=1e-6)
    # Today's focus varies per drop, so it is not that kernel.
    per_drop = render_raindrops(clean, blur_range=(0.05, 0.05), **common)[1].numpy()
    assert np.abs(per_drop - mask.numpy()).max() > 0.05
    outside = mask.numpy()[..., 0] == 0.0
    assert outside.any()
    np.testing.assert_array_equal(rainy.numpy()[outside], clean[outside])
    np.testing.assert_array_equal(
        rainy.numpy(), render_raindrops(clean, blur_range=(0.05, 0.05), focus="batch", **common)[0].numpy()
    )
    with pytest.raises(ValueError, match="focus"):
        RaindropOptions(focus="drop")


def test_capped_halo_is_the_gain_stopped_at_the_wash_light():
    # Lifted toward white so that the plain gain passes the light somewhere.
    clean = 0.3 + 0.7 * clean_batch(count=3, height=64, width=64)
    common = dict(seed=6, return_mask=True, dry_fraction=0.0, density=0.15, glow=0.0, halo=0.8, halo_reach=0.05)
    passed = checked = 0
    gain, mask = (t.numpy() for t in render_raindrops(clean, **common))
    capped, capped_mask = (t.numpy() for t in render_raindrops(clean, halo_mode="capped", **common))
    np.testing.assert_array_equal(capped, render_raindrops(clean, halo_mode="capped", **common)[0].numpy())
    np.testing.assert_array_equal(capped_mask, mask)  # the gain's footprint
    outside = mask[..., 0] == 0.0
    np.testing.assert_array_equal(capped[outside], clean[outside])
    wash = render_raindrops(clean, halo_mode="wash", **common)[0].numpy()
    plain_mask = render_raindrops(clean, seed=6, return_mask=True, dry_fraction=0.0, density=0.15, glow=0.0)[1].numpy()
    for index in range(3):
        ring = (plain_mask[index, ..., 0] == 0.0) & (mask[index, ..., 0] > 0.05)
        before, lifted, kept = clean[index][ring], gain[index][ring], capped[index][ring]
        # The wash's light, read back from the wash render where it moved a pixel far enough.
        strength = np.clip(0.8 * mask[index][ring], 0.0, 0.8)
        firm = strength[:, 0] > 0.05
        if firm.sum() < 10:
            continue
        checked += 1
        light = np.median((before + (wash[index][ring] - before) / np.maximum(strength, 1e-6))[firm], axis=0)
        # Never lifted past the light nor darkened; where the gain stays under the light, it is the gain.
        assert np.all(kept >= before - 1e-6)
        assert np.all(kept <= np.maximum(before, light) + 1e-3)
        under = lifted < light - 1e-3
        np.testing.assert_allclose(kept[under], lifted[under], atol=1e-5)
        passed += np.sum(lifted > np.maximum(before, light) + 0.01)
    assert checked >= 2 and passed > 0  # the plain gain does pass the light, so the cap changes something


def test_lens_style_drops_are_larger_and_cover_more():
    clean = clean_batch(count=4, height=96, width=96)
    _, window = render_raindrops(clean, seed=5, return_mask=True, dry_fraction=0.0, reference_side=480)
    _, lens = render_raindrops(clean, seed=5, return_mask=True, options="lens", dry_fraction=0.0, reference_side=480)
    assert float(tf.reduce_mean(tf.cast(lens > 0.05, tf.float32))) > float(
        tf.reduce_mean(tf.cast(window > 0.05, tf.float32))
    )


def test_drops_refract_a_wide_view_of_the_environment():
    """A crop's drops show the whole photo: a red environment turns drops red on a grey crop."""
    clean = np.full((2, 64, 64, 3), 0.5, np.float32)
    red = np.zeros((2, 24, 36, 3), np.float32)
    red[..., 0] = 1.0
    options = dict(seed=6, return_mask=True, dry_fraction=0.0, haze_range=(0.0, 0.0), contrast_range=(1.0, 1.0),
                   gain_range=(1.0, 1.0), highlight=0.0, glow=0.0, density=0.6)
    window = [[0.3, 0.3, 0.2, 0.2]] * 2
    rainy, mask = render_raindrops(clean, environment=red, window=window, **options)
    inside = mask.numpy()[..., 0] > 0.5
    assert inside.any()
    drops = rainy.numpy()[inside]
    assert drops[:, 0].mean() > drops[:, 1].mean() + 0.2, "the drops must show the environment's red"
    # Without an environment the drops show the grey crop itself.
    grey, _ = render_raindrops(clean, **options)
    assert abs(grey.numpy()[inside][:, 0].mean() - grey.numpy()[inside][:, 1].mean()) < 0.02


def test_blur_is_drawn_per_image_and_changes_the_drops():
    clean = clean_batch(count=2, height=64, width=64)
    sharp = render_raindrops(clean, seed=8, blur_range=(0.0, 0.0), dry_fraction=0.0).numpy()
    blurred = render_raindrops(clean, seed=8, blur_range=(0.05, 0.05), dry_fraction=0.0).numpy()
    assert not np.array_equal(sharp, blurred)

    def edge_energy(images):
        return float(np.abs(np.diff(images, axis=1)).mean() + np.abs(np.diff(images, axis=2)).mean())

    assert edge_energy(blurred - clean) < edge_energy(sharp - clean)
