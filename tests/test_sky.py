"""Procedural cloudy skies (`keras_derain.data.sky`) and `synthetic_dataset(sky_fraction=...)`."""

import numpy as np
import pytest
import tensorflow as tf

from keras_derain.data import synthetic_dataset
from keras_derain.data.sky import cloudy_sky


def photos(batch=8, size=48):
    # Dark, textured "ground": anything the sky paints differs from it.
    return tf.random.stateless_uniform([batch, size, size, 3], [3, 4], 0.0, 0.15)


def test_the_same_seed_paints_the_same_sky_and_another_seed_another():
    seed = tf.constant([5, 6], tf.int64)
    first, again = cloudy_sky(photos(), seed, 1.0), cloudy_sky(photos(), seed, 1.0)
    other = cloudy_sky(photos(), tf.constant([5, 7], tf.int64), 1.0)
    np.testing.assert_array_equal(first.numpy(), again.numpy())
    assert np.abs(first.numpy() - other.numpy()).mean() > 0.05


def test_a_sky_over_the_top_down_to_a_horizon_and_the_photo_below_untouched():
    images = photos(batch=32)
    skies = cloudy_sky(images, tf.constant([1, 2], tf.int64), 1.0).numpy()
    changed = np.any(skies != images.numpy(), axis=(2, 3))  # [batch, rows]
    assert changed[:, 0].all()  # the top row is sky in every image
    # Each image is sky down to its horizon and untouched photo below it: changed rows only ever turn into
    # unchanged ones going down, give or take the ragged horizon's few rows.
    first_untouched = np.where(changed.all(axis=1), changed.shape[1], np.argmin(changed, axis=1))
    for rows, start in zip(changed, first_untouched):
        assert not rows[start + 6:].any()
    # The horizon falls anywhere from 30% of the height to below the bottom edge.
    assert first_untouched.min() >= 0.2 * changed.shape[1] and (first_untouched == changed.shape[1]).any()
    assert (first_untouched < changed.shape[1]).any()
    # Sky is bright (blue or cloud) over this dark ground, and in range.
    assert skies[:, 0].mean() > 0.4 and skies.min() >= 0.0 and skies.max() <= 1.0


def test_clouds_are_whiter_than_the_blue_around_them():
    skies = cloudy_sky(tf.zeros([16, 64, 64, 3]), tf.constant([9, 9], tf.int64), 1.0).numpy()[:, :16]
    saturation = skies.max(-1) - skies.min(-1)  # blue sky is saturated, cloud is grey-white
    brightest = skies.mean(-1) >= np.quantile(skies.mean(-1), 0.9)
    assert saturation[brightest].mean() < saturation[~brightest].mean()


def test_only_the_chosen_share_is_painted_and_the_rest_is_exact():
    images = photos(batch=64)
    skies = cloudy_sky(images, tf.constant([7, 8], tf.int64), 0.25).numpy()
    painted = np.any(skies != images.numpy(), axis=(1, 2, 3))
    assert 6 <= painted.sum() <= 26  # about a quarter of 64
    np.testing.assert_array_equal(skies[~painted], images.numpy()[~painted])
    np.testing.assert_array_equal(cloudy_sky(images, tf.constant([7, 8], tf.int64), 0.0).numpy(), images.numpy())


@pytest.mark.parametrize("fraction", [-0.1, 1.5, True, "0.2", float("nan")])
def test_a_bad_fraction_is_refused(fraction):
    with pytest.raises(ValueError, match="sky_fraction must be a number in \\[0, 1\\]"):
        cloudy_sky(photos(), tf.constant([1, 1], tf.int64), fraction)
    with pytest.raises(ValueError, match="sky_fraction must be a number in \\[0, 1\\]"):
        synthetic_dataset(crop_size=32, batch_size=2, seed=1, sky_fraction=fraction)


def test_synthetic_pairs_with_skies_stay_exact_where_dry_and_repeatable():
    options = {"dry_fraction": 1.0}
    make = lambda sky: synthetic_dataset(crop_size=48, batch_size=4, seed=3, raindrop_options=options,
                                         sky_fraction=sky)
    rainy, clean = next(iter(make(1.0)))
    np.testing.assert_array_equal(rainy.numpy(), clean.numpy())  # dry pairs stay exactly equal
    plain_rainy, plain_clean = next(iter(make(0.0)))
    assert np.abs(clean.numpy()[:, 0] - plain_clean.numpy()[:, 0]).mean() > 0.05  # the top is sky now
    again_rainy, again_clean = next(iter(make(1.0)))
    np.testing.assert_array_equal(again_clean.numpy(), clean.numpy())


def test_drops_are_rendered_over_the_sky():
    options = {"dry_fraction": 0.0, "density": 0.5}
    dataset = synthetic_dataset(crop_size=48, batch_size=4, seed=3, raindrop_options=options, sky_fraction=1.0,
                                return_mask=True)
    rainy, clean, mask = next(iter(dataset))
    outside = mask.numpy()[..., 0] == 0
    np.testing.assert_array_equal(rainy.numpy()[outside], clean.numpy()[outside])  # exact copies outside the mask
    assert mask.numpy().mean() > 0.01 and np.abs(rainy.numpy() - clean.numpy()).max() > 0.05


def test_some_skies_are_storms_grey_clouds_against_a_burnt_out_sky():
    skies = cloudy_sky(tf.zeros([48, 64, 64, 3]), tf.constant([4, 2], tf.int64), 1.0).numpy()[:, :14]
    brightness, saturation = skies.mean(-1), skies.max(-1) - skies.min(-1)
    grey = saturation < 0.08  # cloud, or a sky burnt out to white
    storm = [np.any(grey[i] & (brightness[i] < 0.45)) and np.any(grey[i] & (brightness[i] > 0.88))
             for i in range(len(skies))]
    assert 4 <= sum(storm) <= 28  # dark grey cloud and near-white in one sky: about 30% (STORM_SHARE)


def test_the_storm_share_sets_how_many_skies_are_washed_out_storms():
    seed = tf.constant([4, 2], tf.int64)
    saturation = {}
    for share in (0.0, 1.0):
        skies = cloudy_sky(tf.zeros([24, 48, 48, 3]), seed, 1.0, storm_share=share).numpy()[:, :10]
        saturation[share] = (skies.max(-1) - skies.min(-1)).mean(axis=(1, 2))
    # The same draws but the storm switch: every storm sky is burnt out paler than its blue twin.
    assert (saturation[1.0] < saturation[0.0]).mean() > 0.9
    with pytest.raises(ValueError, match="storm_share must be a number in \\[0, 1\\]"):
        cloudy_sky(photos(), seed, 1.0, storm_share=1.5)


def test_storms_can_be_kept_to_the_lens_batches():
    def cleans(lens_fraction, storm_share, lens_storm_share):
        dataset = synthetic_dataset(crop_size=48, batch_size=4, seed=3, sky_fraction=1.0, lens_fraction=lens_fraction,
                                    raindrop_options={"dry_fraction": 1.0}, lens_options={"dry_fraction": 1.0},
                                    storm_share=storm_share, lens_storm_share=lens_storm_share)
        return next(iter(dataset))[1].numpy()

    stormy, calm = cleans(1.0, 1.0, 1.0), cleans(1.0, 0.0, 0.0)
    assert np.abs(stormy - calm).mean() > 0.01
    np.testing.assert_array_equal(cleans(1.0, 0.0, 1.0), stormy)  # lens batches: the lens share
    np.testing.assert_array_equal(cleans(0.0, 0.0, 1.0), cleans(0.0, 0.0, 0.0))  # window batches: no storms
    with pytest.raises(ValueError, match="lens_storm_share must be a number in \\[0, 1\\]"):
        synthetic_dataset(crop_size=32, batch_size=2, seed=1, sky_fraction=0.5, lens_storm_share=-0.1)
