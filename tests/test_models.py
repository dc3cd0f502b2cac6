"""Tests of the Pix2Pix and cGAN builders on tiny configurations."""

import numpy as np
import pytest

import keras
import tensorflow as tf

from keras_derain.models import (
    cgan_discriminator,
    cgan_generator,
    patchgan_receptive_field,
    pix2pix_discriminator,
    pix2pix_generator,
    required_multiple,
)
from keras_derain.models.layers import norm_layer


def images(batch=2, size=32, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (batch, size, size, 3)).astype("float32")


# --- Parameter counts stated in the docstrings (default configurations).


@pytest.mark.parametrize(
    "builder, kwargs, expected",
    [
        (pix2pix_generator, {}, 13_608_547),
        (pix2pix_generator, {"base_channels": 64}, 54_414_531),
        (pix2pix_discriminator, {}, 696_225),
        (pix2pix_discriminator, {"base_channels": 64}, 2_768_705),
        (cgan_generator, {}, 6_629_859),
        (cgan_discriminator, {}, 2_794_401),
    ],
)
def test_default_parameter_counts(builder, kwargs, expected):
    assert builder(**kwargs).count_params() == expected
    assert f"{expected:,}" in builder.__doc__


# --- Pix2Pix generator.


def test_generator_shape_range_and_rectangular_input():
    generator = pix2pix_generator(base_channels=4, depth=5)
    rainy = np.concatenate([images(size=64)[:, :32], images(size=64, seed=1)[:, :32]], axis=0)
    derained = generator.predict(rainy * 50.0, verbose=0)  # large input saturates tanh
    assert derained.shape == (4, 32, 64, 3)
    assert np.all(np.abs(derained) <= 1.0)


def test_generator_depth_default_and_required_multiple():
    assert required_multiple(pix2pix_generator(base_channels=4)) == 256
    assert required_multiple(pix2pix_generator(base_channels=4, input_shape=(128, 128, 3))) == 128
    assert required_multiple(pix2pix_generator(base_channels=4, input_shape=(96, 64, 3))) == 32
    with pytest.raises(ValueError):
        pix2pix_generator(norm="layer")
    with pytest.raises(ValueError):
        pix2pix_generator(depth=6, input_shape=(96, 96, 3))


def test_generator_structure_follows_reference():
    generator = pix2pix_generator(base_channels=4, depth=8)
    names = {layer.name for layer in generator.layers}
    # No norm on the outermost and innermost encoder convolutions.
    assert "encoder_1_norm" not in names and "encoder_8_norm" not in names
    assert {f"encoder_{level}_norm" for level in range(2, 8)} <= names
    dropouts = sorted(layer.name for layer in generator.layers if "dropout" in layer.name)
    assert dropouts == ["decoder_5_dropout", "decoder_6_dropout", "decoder_7_dropout"]
    assert generator.get_layer("encoder_8_conv").filters == 32  # capped at 8x base


def test_dropout_inactive_at_inference():
    generator = pix2pix_generator(base_channels=4, depth=5, norm="batch")
    rainy = images()
    np.testing.assert_array_equal(
        generator.predict(rainy, verbose=0), generator.predict(rainy, verbose=0)
    )
    trained = [generator(rainy, training=True).numpy() for _ in range(2)]
    assert not np.allclose(trained[0], trained[1])


def test_instance_norm_is_per_sample_per_channel():
    layer = norm_layer("instance", "norm")
    features = np.random.default_rng(0).normal(3.0, 2.0, (2, 5, 7, 4)).astype("float32")
    normalized = layer(features).numpy()
    mean = features.mean(axis=(1, 2), keepdims=True)
    variance = features.var(axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(normalized, (features - mean) / np.sqrt(variance + 1e-5), atol=1e-5)
    assert len(layer.trainable_weights) == 2  # affine gamma, beta


def test_weights_drawn_from_normal_002():
    kernel = pix2pix_generator(base_channels=8, depth=5).get_layer("encoder_3_conv").kernel
    assert abs(float(np.std(kernel.numpy())) - 0.02) < 0.002


# --- PatchGAN.


def test_patchgan_shape_two_inputs():
    discriminator = pix2pix_discriminator(base_channels=4)
    assert len(discriminator.inputs) == 2
    logits = discriminator.predict([images(), images(seed=1)], verbose=0)
    assert logits.shape == (2, 2, 2, 1)  # 32 -> 16 -> 8 -> 4 -> 3 -> 2


def test_patchgan_receptive_field_is_70():
    assert patchgan_receptive_field(3) == 70
    discriminator = pix2pix_discriminator(base_channels=4, norm="none")
    rainy = tf.constant(images(batch=1, size=160))
    candidate = tf.constant(images(batch=1, size=160, seed=1))
    with tf.GradientTape() as tape:
        tape.watch(candidate)
        logits = discriminator([rainy, candidate])
        centre = logits.shape[1] // 2
        logit = logits[0, centre, centre, 0]
    gradient = tape.gradient(logit, candidate).numpy()[0]
    rows, cols = np.nonzero(np.abs(gradient).sum(axis=-1))
    assert rows.min() > 0 and rows.max() < 159  # the field lies inside the image
    assert rows.max() - rows.min() + 1 == 70
    assert cols.max() - cols.min() + 1 == 70


# --- cGAN.


def test_cgan_shapes():
    generator = cgan_generator(image_size=32, base_channels=4, latent_dim=8)
    discriminator = cgan_discriminator(image_size=32, base_channels=4)
    rainy = images()
    derained = generator.predict(rainy, verbose=0)
    assert derained.shape == (2, 32, 32, 3) and np.all(np.abs(derained) <= 1.0)
    assert generator.get_layer("latent").units == 8
    assert discriminator.predict([rainy, derained], verbose=0).shape == (2, 1)
    assert cgan_generator(image_size=24, base_channels=4, latent_dim=8).output_shape == (
        None, 24, 24, 3,
    )
    with pytest.raises(ValueError):
        cgan_generator(image_size=31)


# --- Serialisation round trips.

TINY_MODELS = {
    "pix2pix_generator": (lambda: pix2pix_generator(base_channels=4, depth=5), 1),
    "pix2pix_discriminator": (lambda: pix2pix_discriminator(base_channels=4), 2),
    "cgan_generator": (lambda: cgan_generator(image_size=32, base_channels=4, latent_dim=8), 1),
    "cgan_discriminator": (lambda: cgan_discriminator(image_size=32, base_channels=4), 2),
}


@pytest.mark.parametrize("name", sorted(TINY_MODELS))
def test_config_and_keras_file_round_trip(name, tmp_path):
    build, n_inputs = TINY_MODELS[name]
    model = build()
    inputs = [images(seed=seed) for seed in range(n_inputs)]
    inputs = inputs if n_inputs > 1 else inputs[0]
    expected = model.predict(inputs, verbose=0)

    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_array_equal(clone.predict(inputs, verbose=0), expected)

    path = tmp_path / f"{name}.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(reloaded.predict(inputs, verbose=0), expected)
    assert reloaded.count_params() == model.count_params()
