"""DerainGAN: what each optimizer updates, soft and flipped labels, g_steps, and that it learns."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_derain.gan import DerainGAN
from keras_derain.metrics import psnr
from keras_derain.models import pix2pix_discriminator, pix2pix_generator

SIZE = 32


def tiny_models(seed=0):
    keras.utils.set_random_seed(seed)
    generator = pix2pix_generator(base_channels=4, depth=5)
    discriminator = pix2pix_discriminator(base_channels=4, n_layers=2)
    return generator, discriminator


def constant_discriminator(logit):
    """A discriminator whose logits are ``logit`` everywhere (zero kernel, constant bias)."""
    rainy = keras.Input((None, None, 3))
    candidate = keras.Input((None, None, 3))
    pair = keras.layers.Concatenate()([rainy, candidate])
    logits = keras.layers.Conv2D(
        1, 4, strides=4, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(logit)
    )(pair)
    return keras.Model([rainy, candidate], logits)


def pairs(count=2, seed=0):
    """Smooth clean images, and rainy copies with a few bright round spots."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1.0)
    clean = np.stack(
        [
            np.stack([np.sin(3 * xx + i) / 2, np.cos(2 * yy + i) / 2, (xx - yy) / 2], axis=-1)
            for i in range(count)
        ]
    ).astype(np.float32)
    rainy = clean.copy()
    for image in rainy:
        for _ in range(4):
            row, col, radius = rng.integers(4, SIZE - 4), rng.integers(4, SIZE - 4), rng.integers(2, 5)
            image[(yy * (SIZE - 1) - row) ** 2 + (xx * (SIZE - 1) - col) ** 2 < radius**2] = 0.8
    return rainy, clean


def bce(target, logit):
    probability = 1 / (1 + math.exp(-logit))
    return -(target * math.log(probability) + (1 - target) * math.log(1 - probability))


def compiled(generator, discriminator, g_lr=2e-4, d_lr=2e-4, **kwargs):
    gan = DerainGAN(generator, discriminator, seed=0)
    gan.compile(keras.optimizers.Adam(g_lr, beta_1=0.5), keras.optimizers.Adam(d_lr, beta_1=0.5), **kwargs)
    return gan


def one_step(gan, batch_size=2):
    rainy, clean = pairs(batch_size)
    return gan.fit(rainy, clean, batch_size=batch_size, epochs=1, verbose=0).history


@pytest.mark.parametrize("real_label, fake_label", [(1.0, 0.0), (0.9, 0.1)])
def test_soft_labels_reach_the_loss(real_label, fake_label):
    generator, _ = tiny_models()
    logit = 0.7
    gan = compiled(generator, constant_discriminator(logit), real_label=real_label, fake_label=fake_label)
    history = one_step(gan)
    expected = 0.5 * (bce(real_label, logit) + bce(fake_label, logit))
    assert history["d_loss"][0] == pytest.approx(expected, rel=1e-5)
    # The generator's adversarial target stays 1, whatever the discriminator's labels.
    assert history["g_adv"][0] == pytest.approx(bce(1.0, logit), rel=1e-5)


def candidate_discriminator():
    """A discriminator whose logit is 3x the mean of the candidate: real and fake logits differ."""
    rainy = keras.Input((None, None, 3))
    candidate = keras.Input((None, None, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(candidate)
    logits = keras.layers.Dense(1, kernel_initializer=keras.initializers.Constant(1.0))(pooled)
    return keras.Model([rainy, candidate], logits)


def mean_bce(target, logits):
    return float(np.mean([bce(target, float(logit)) for logit in np.ravel(logits)]))


@pytest.mark.parametrize("flip_rate", [0.0, 1.0])
def test_label_flip_swaps_targets(flip_rate):
    keras.utils.set_random_seed(0)
    generator = pix2pix_generator(base_channels=4, depth=5, dropout=0.0)
    discriminator = candidate_discriminator()
    gan = compiled(generator, discriminator, real_label=0.9, fake_label=0.1, label_flip_rate=flip_rate)
    rainy, clean = (tf.constant(images) for images in pairs(2))
    real_logits = discriminator([rainy, clean]).numpy()
    fake_logits = discriminator([rainy, generator(rainy, training=True)]).numpy()
    unflipped = 0.5 * (mean_bce(0.9, real_logits) + mean_bce(0.1, fake_logits))
    flipped = 0.5 * (mean_bce(0.1, real_logits) + mean_bce(0.9, fake_logits))
    assert abs(flipped - unflipped) > 1e-2  # the logits differ enough for the test to tell
    history = one_step(gan)
    assert history["d_loss"][0] == pytest.approx(flipped if flip_rate else unflipped, rel=1e-4)


def weights(model):
    return [variable.numpy().copy() for variable in model.trainable_variables]


def changed(before, model):
    return any(not np.array_equal(old, new.numpy()) for old, new in zip(before, model.trainable_variables))


def test_each_optimizer_updates_only_its_model():
    generator, discriminator = tiny_models()
    gan = compiled(generator, discriminator, g_lr=0.0, d_lr=1e-3)
    g_before, d_before = weights(generator), weights(discriminator)
    one_step(gan)
    assert not changed(g_before, generator)
    assert changed(d_before, discriminator)

    generator, discriminator = tiny_models()
    gan = compiled(generator, discriminator, g_lr=1e-3, d_lr=0.0)
    g_before, d_before = weights(generator), weights(discriminator)
    one_step(gan)
    assert changed(g_before, generator)
    assert not changed(d_before, discriminator)


@pytest.mark.parametrize("g_steps", [1, 2, 3])
def test_g_steps(g_steps):
    generator, discriminator = tiny_models()
    gan = compiled(generator, discriminator, g_steps=g_steps)
    one_step(gan)
    assert int(gan.g_optimizer.iterations.numpy()) == g_steps
    assert int(gan.d_optimizer.iterations.numpy()) == 1


def test_history_and_validation_keys():
    generator, discriminator = tiny_models()
    gan = compiled(generator, discriminator)
    rainy, clean = pairs(4)
    dataset = tf.data.Dataset.from_tensor_slices((rainy, clean)).batch(2)
    history = gan.fit(dataset, validation_data=dataset, epochs=2, verbose=0).history
    for key in ("d_loss", "g_loss", "g_adv", "g_l1", "d_acc", "psnr", "ssim", "val_psnr", "val_ssim", "val_l1"):
        assert len(history[key]) == 2, key
    assert 0.0 <= history["d_acc"][-1] <= 1.0
    results = gan.evaluate(dataset, verbose=0, return_dict=True)
    assert set(results) == {"psnr", "ssim", "l1"}
    generated = gan.predict(rainy, verbose=0)
    np.testing.assert_allclose(generated, generator(rainy, training=False).numpy(), atol=1e-5)
    expected_l1 = np.mean(np.abs(generated - clean))
    assert results["l1"] == pytest.approx(expected_l1, rel=1e-4)


def test_invalid_compile_arguments():
    generator, discriminator = tiny_models()
    gan = DerainGAN(generator, discriminator)
    optimizers = (keras.optimizers.Adam(), keras.optimizers.Adam())
    for kwargs, name in [
        ({"g_steps": 0}, "g_steps"),
        ({"label_flip_rate": 1.5}, "label_flip_rate"),
        ({"real_label": -0.1}, "real_label"),
        ({"l1_weight": -1}, "l1_weight"),
    ]:
        with pytest.raises(ValueError, match=name):
            gan.compile(*optimizers, **kwargs)


def test_generator_saves_and_loads(tmp_path):
    generator, discriminator = tiny_models()
    gan = compiled(generator, discriminator)
    one_step(gan)
    path = tmp_path / "generator.keras"
    generator.save(path)
    restored = keras.saving.load_model(path)
    rainy, _ = pairs(2)
    np.testing.assert_allclose(restored.predict(rainy, verbose=0), gan.predict(rainy, verbose=0), atol=1e-6)


def test_whole_gan_saves_and_loads(tmp_path):
    # DerainGAN is registered, so a .keras of the whole GAN (both networks) loads
    # back as a DerainGAN with the trained weights of both.
    gan = compiled(*tiny_models())
    one_step(gan)
    path = tmp_path / "gan.keras"
    gan.save(path)
    restored = keras.saving.load_model(path, compile=False)
    assert isinstance(restored, DerainGAN)
    for network in ("generator", "discriminator"):
        saved = getattr(gan, network).get_weights()
        loaded = getattr(restored, network).get_weights()
        assert len(saved) == len(loaded) > 0
        for a, b in zip(saved, loaded):
            np.testing.assert_array_equal(a, b)


def test_tiny_pix2pix_overfits_two_pairs():
    keras.utils.set_random_seed(1)
    generator = pix2pix_generator(base_channels=8, depth=5)
    discriminator = pix2pix_discriminator(base_channels=8, n_layers=2)
    gan = compiled(generator, discriminator, g_lr=2e-3, d_lr=2e-4)
    rainy, clean = pairs(2, seed=3)
    to_unit = lambda images: (np.asarray(images) + 1) / 2  # noqa: E731
    before = float(np.mean(psnr(to_unit(gan.predict(rainy, verbose=0)), to_unit(clean), 1.0)))
    dataset = tf.data.Dataset.from_tensors((rainy, clean)).repeat(300)
    gan.fit(dataset, epochs=1, verbose=0)
    after = float(np.mean(psnr(to_unit(gan.predict(rainy, verbose=0)), to_unit(clean), 1.0)))
    assert after > before + 5.0, (before, after)
