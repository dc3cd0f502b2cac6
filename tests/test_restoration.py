"""The mask-guided residual generator, its losses, mask supervision, and the restoration preset."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_derain import losses
from keras_derain.data.pairs import difference_mask
from keras_derain.gan import DerainGAN
from keras_derain.models import (
    has_mask,
    mask_model,
    pix2pix_discriminator,
    pix2pix_generator,
    required_multiple,
    restoration_generator,
    ungated_model,
)

SIZE = 32


def tiny_generator(seed=0):
    keras.utils.set_random_seed(seed)
    return restoration_generator(base_channels=4, depth=2)


def test_identity_at_initialisation_on_any_size():
    generator = tiny_generator()
    for height, width in ((32, 32), (48, 80)):
        rainy = np.random.default_rng(1).uniform(-1, 1, (2, height, width, 3)).astype("float32")
        np.testing.assert_array_equal(generator(rainy).numpy(), rainy)
    assert required_multiple(generator) == 8


def test_no_transposed_convolution_and_a_named_mask():
    generator = tiny_generator()
    assert not any(isinstance(layer, keras.layers.Conv2DTranspose) for layer in generator.layers)
    assert has_mask(generator) and not has_mask(pix2pix_generator(base_channels=4, depth=5))
    both = mask_model(generator)
    rainy = np.zeros((1, SIZE, SIZE, 3), "float32")
    derained, mask = both(rainy)
    assert derained.shape == (1, SIZE, SIZE, 3) and mask.shape == (1, SIZE, SIZE, 1)
    assert 0.0 < float(tf.reduce_min(mask)) and float(tf.reduce_max(mask)) < 1.0
    # The mask model shares the generator's weights.
    generator.get_layer("mask_logits").bias.assign([5.0])
    assert float(tf.reduce_min(both(rainy)[1])) > 0.99
    with pytest.raises(ValueError, match="no 'drop_mask' layer"):
        mask_model(pix2pix_generator(base_channels=4, depth=5))


def test_gated_correction_changes_only_masked_pixels():
    generator = tiny_generator()
    generator.get_layer("correction").bias.assign([0.5, 0.5, 0.5])
    generator.get_layer("mask_logits").bias.assign([-30.0])  # mask ~ 0 everywhere
    rainy = np.full((1, SIZE, SIZE, 3), -0.2, "float32")
    np.testing.assert_allclose(generator(rainy).numpy(), rainy, atol=1e-6)
    generator.get_layer("mask_logits").bias.assign([30.0])  # mask ~ 1
    np.testing.assert_allclose(generator(rainy).numpy(), rainy + 0.5, atol=1e-5)


def test_affine_head_starts_as_the_identity_and_scales_the_rainy_pixels_under_the_mask():
    keras.utils.set_random_seed(0)
    generator = restoration_generator(base_channels=4, depth=2, affine=True)
    rainy = np.random.default_rng(2).uniform(-0.5, 0.5, (1, SIZE, SIZE, 3)).astype("float32")
    np.testing.assert_array_equal(generator(rainy).numpy(), rainy)
    generator.get_layer("correction_gain").bias.assign([0.5, 0.5, 0.5])  # gain - 1 = 0.5: rainy * 1.5
    generator.get_layer("correction").bias.assign([0.1, 0.1, 0.1])
    generator.get_layer("mask_logits").bias.assign([30.0])
    np.testing.assert_allclose(generator(rainy).numpy(), np.clip(1.5 * rainy + 0.1, -1, 1), atol=1e-5)
    generator.get_layer("mask_logits").bias.assign([-30.0])
    np.testing.assert_allclose(generator(rainy).numpy(), rainy, atol=1e-6)
    # Without the option there is no gain head: the shipped architecture is unchanged.
    assert "correction_gain" not in {layer.name for layer in tiny_generator().layers}


def test_losses_against_hand_computations():
    rng = np.random.default_rng(0)
    clean = rng.uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    generated = rng.uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    difference = clean - generated
    np.testing.assert_allclose(
        losses.charbonnier(clean, generated), np.mean(np.sqrt(difference**2 + 1e-6)), rtol=1e-5
    )
    spectrum = lambda images: np.fft.rfft2(np.transpose(images, (0, 3, 1, 2))) / 16.0  # noqa: E731
    expected_fft = np.mean(np.concatenate([np.abs((spectrum(clean) - spectrum(generated)).real),
                                           np.abs((spectrum(clean) - spectrum(generated)).imag)], axis=-1))
    np.testing.assert_allclose(losses.fft_l1(clean, generated), expected_fft, rtol=1e-4)
    assert float(losses.ssim_loss(clean, clean)) == pytest.approx(0.0, abs=1e-5)
    from skimage.metrics import structural_similarity

    expected_ssim = np.mean([
        structural_similarity((clean[i] + 1) / 2, (generated[i] + 1) / 2, data_range=1.0, channel_axis=-1)
        for i in range(2)
    ])
    np.testing.assert_allclose(losses.ssim_loss(clean, generated), 1.0 - expected_ssim, atol=1e-3)
    target = rng.uniform(0, 1, (2, 8, 8, 1)).astype("float32")
    predicted = rng.uniform(0.05, 0.95, (2, 8, 8, 1)).astype("float32")
    expected_bce = -np.mean(target * np.log(predicted) + (1 - target) * np.log(1 - predicted))
    np.testing.assert_allclose(losses.mask_bce(target, predicted), expected_bce, rtol=1e-5)


def test_contrastive_loss_is_lower_for_a_matching_pair_than_for_a_shuffled_one():
    rng = np.random.default_rng(3)
    clean = rng.normal(size=(2, 8, 8, 16)).astype("float32")
    rainy = rng.normal(size=(2, 8, 8, 16)).astype("float32")
    matching = losses.patch_nce(clean + 0.1 * rng.normal(size=clean.shape), clean, rainy, patches=32, seed=0)
    shuffled_features = np.roll(clean.reshape(2, 64, 16), 17, axis=1).reshape(2, 8, 8, 16)
    shuffled = losses.patch_nce(shuffled_features, clean, rainy, patches=32, seed=0)
    like_rainy = losses.patch_nce(rainy, clean, rainy, patches=32, seed=0)
    assert float(matching) < float(shuffled) and float(matching) < float(like_rainy)


def test_difference_mask_of_real_pairs():
    clean = np.zeros((1, 24, 24, 3), "float32")
    rainy = clean.copy()
    rainy[:, 6:18, 6:18] = 0.8  # a drop: 0.8 * 127.5 * 3 = 306 levels summed
    rainy[:, 0, 0] = 0.05  # noise below AttentiveGAN's 35 levels
    mask = difference_mask(tf.constant(rainy), tf.constant(clean)).numpy()
    assert mask.shape == (1, 24, 24, 1)
    assert mask[0, 12, 12, 0] == 1.0 and mask[0, 0, 0, 0] == 0.0 and mask[0, 22, 22, 0] == 0.0


def drop_pairs(count=4, seed=0):
    """Flat images with one bright square drop each, and its exact mask."""
    rng = np.random.default_rng(seed)
    clean = np.repeat(rng.uniform(-0.6, 0.0, (count, 1, 1, 3)), SIZE, 1).repeat(SIZE, 2).astype("float32")
    rainy, mask = clean.copy(), np.zeros((count, SIZE, SIZE, 1), "float32")
    for index in range(count):
        top, left = rng.integers(2, SIZE - 14, 2)
        rainy[index, top : top + 12, left : left + 12] = 0.9
        mask[index, top : top + 12, left : left + 12] = 1.0
    return rainy, clean, mask


def test_mask_supervision_reaches_the_mask_head():
    rainy, clean, mask = drop_pairs()
    generator = tiny_generator()
    keras.utils.set_random_seed(0)
    gan = DerainGAN(generator, pix2pix_discriminator(base_channels=4, n_layers=2), seed=0)
    gan.compile(keras.optimizers.Adam(3e-3), keras.optimizers.Adam(1e-4), adversarial_weight=0.0,
                charbonnier_weight=1.0, mask_weight=1.0)
    before = float(losses.mask_bce(mask, mask_model(generator)(rainy)[1]))
    history = gan.fit(tf.data.Dataset.from_tensors((rainy, clean, mask)).repeat(), epochs=1,
                      steps_per_epoch=150, verbose=0)
    predicted = mask_model(generator)(rainy)[1].numpy()
    after = float(losses.mask_bce(mask, predicted))
    assert after < 0.5 * before, (before, after)
    assert predicted[mask > 0].mean() > 0.7 and predicted[mask == 0].mean() < 0.3
    assert "g_mask" in history.history


def test_mask_term_is_skipped_without_masks_and_without_a_mask_head():
    rainy, clean, _ = drop_pairs(count=2)
    keras.utils.set_random_seed(0)
    gan = DerainGAN(pix2pix_generator(base_channels=4, depth=5), pix2pix_discriminator(base_channels=4, n_layers=2))
    gan.compile(keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3), mask_weight=1.0, ssim_weight=1.0,
                fft_weight=1.0, nce_weight=0.1)
    logs = gan.fit(tf.data.Dataset.from_tensors((rainy, clean)).repeat(), epochs=1, steps_per_epoch=2,
                   verbose=0).history
    assert logs["g_mask"] == [0.0] and logs["g_ssim"][0] > 0 and logs["g_nce"][0] > 0
    rainy_input, candidate = keras.Input((None, None, 3)), keras.Input((None, None, 3))
    logits = keras.layers.Conv2D(1, 4, strides=4)(keras.layers.Concatenate()([rainy_input, candidate]))
    plain = DerainGAN(pix2pix_generator(base_channels=4, depth=5), keras.Model([rainy_input, candidate], logits))
    with pytest.raises(ValueError, match="nce_weight"):
        plain.compile(keras.optimizers.Adam(), keras.optimizers.Adam(), nce_weight=0.1)
    with pytest.raises(ValueError, match="ssim_weight"):
        gan.compile(keras.optimizers.Adam(), keras.optimizers.Adam(), ssim_weight=-1.0)


def perturbed_generator(seed=0):
    """A tiny restoration generator with random (He-scaled) kernels: no longer the identity."""
    from conftest import randomise_kernels

    return randomise_kernels(tiny_generator(seed), seed)


@pytest.fixture(scope="module")
def perturbed_keras(tmp_path_factory):
    path = tmp_path_factory.mktemp("restoration") / "restoration.keras"
    perturbed_generator().save(path)
    return path


def test_tiles_match_the_whole_photo_away_from_seams(perturbed_keras):
    from test_inference import as_float, seam_distance

    from conftest import random_image
    from keras_derain.export import reflect_pad_array
    from keras_derain.inference import Derainer

    photo = as_float(random_image(150, 230, seed=4))
    whole = Derainer(perturbed_keras, tile_size=512).derain_float(photo)
    tiled = Derainer(perturbed_keras, tile_size=96, overlap=16, batch_size=2).derain_float(photo)
    assert tiled.shape == whole.shape == photo.shape
    assert np.abs(whole - photo).mean() > 0.01  # the random network does change the photo
    difference = np.abs(tiled - whole).max(axis=-1)
    _, (top, left) = reflect_pad_array(photo, 8)
    margin = 32  # beyond half the receptive field of a depth-2 restoration generator (about 44-56 px)
    rows = seam_distance(150, 96, 16, 8, top, 150) >= margin
    cols = seam_distance(230, 96, 16, 8, left, 230) >= margin
    away = rows[:, None] & cols[None, :]
    assert away.sum() > 100
    # Away from seams only float rounding differs (1e-7 at most pixels); the per-pixel LayerNorm
    # magnifies it where this random network's channels nearly agree (measured: 2.2e-4 at most).
    assert np.median(difference[away]) < 1e-6 and difference[away].max() < 1e-3
    # Near seams tiles see reflected borders: 0.013 on average here; a misplaced or unnormalised
    # blend is off by the output's own scale (tenths).
    assert difference.mean() < 0.05


def test_predict_saves_the_mask_beside_the_photo(perturbed_keras, tmp_path, capsys):
    from PIL import Image

    from conftest import random_image
    from keras_derain.data.images import read_rgb
    from keras_derain.inference import Derainer
    from keras_derain.predict import main

    photo = random_image(40, 48, seed=2)  # a multiple of the stride: the model runs it unpadded
    Image.fromarray(photo).save(tmp_path / "wet.png")
    out = tmp_path / "out"
    assert main([str(tmp_path / "wet.png"), "--model", str(perturbed_keras), "--out", str(out), "--save-mask"]) == 0
    saved = np.asarray(Image.open(out / "wet_mask.png"))
    assert saved.shape == (40, 48) and saved.dtype == np.uint8
    # The mask head's own output, as 0-255 grey.
    mask = mask_model(keras.saving.load_model(perturbed_keras))(photo[None].astype("float32") / 127.5 - 1)[1]
    expected = np.round(mask.numpy()[0, ..., 0] * 255)
    assert np.abs(saved.astype(float) - expected).max() <= 1
    assert saved.std() > 0  # not a constant image
    np.testing.assert_array_equal(read_rgb(out / "wet_derained.png"), Derainer(perturbed_keras).derain(photo))
    # A second run refuses to replace either output, and our mask is never an input.
    assert main([str(tmp_path / "wet.png"), "--model", str(perturbed_keras), "--out", str(out), "--save-mask"]) == 2
    assert main([str(out), "--model", str(perturbed_keras), "--out", str(tmp_path / "again")]) == 2
    assert "no images to derain" in capsys.readouterr().err


def test_save_mask_needs_a_mask_head(tmp_path, capsys):
    from PIL import Image

    from conftest import random_image
    from keras_derain.predict import main

    path = tmp_path / "pix2pix.keras"
    pix2pix_generator(base_channels=4, depth=3).save(path)
    Image.fromarray(random_image(20, 20)).save(tmp_path / "wet.png")
    assert main([str(tmp_path / "wet.png"), "--model", str(path), "--out", str(tmp_path / "out"), "--save-mask"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--save-mask" in lines[0] and "no drop-mask head" in lines[0]
    assert not (tmp_path / "out" / "wet_derained.png").exists()


def test_global_head_starts_as_the_identity_and_adds_one_gain_and_offset_per_photo_under_the_mask():
    keras.utils.set_random_seed(0)
    generator = restoration_generator(base_channels=4, depth=2, global_head=True)
    rng = np.random.default_rng(3)
    rainy = rng.uniform(-0.5, 0.5, (2, SIZE, SIZE, 3)).astype("float32")
    rainy[1] = rainy[1] * 0.5 + 0.2  # another photo, brighter and flatter
    np.testing.assert_array_equal(generator(rainy).numpy(), rainy)
    generator.get_layer("global_gain").bias.assign([0.5, 0.5, 0.5])  # rainy * 1.5
    generator.get_layer("global_offset").bias.assign([0.1, -0.1, 0.0])
    generator.get_layer("mask_logits").bias.assign([30.0])
    np.testing.assert_allclose(generator(rainy).numpy(), np.clip(1.5 * rainy + [0.1, -0.1, 0.0], -1, 1), atol=1e-5)
    # It reads the whole photo: with trained weights the offset differs per photo, and is one value per photo.
    generator.get_layer("global_gain").bias.assign([0.0, 0.0, 0.0])
    generator.get_layer("global_offset").kernel.assign(rng.normal(0, 0.05, (8, 3)).astype("float32"))
    shift = generator(rainy).numpy() - rainy
    per_photo = shift.reshape(2, -1, 3)
    np.testing.assert_allclose(per_photo, np.broadcast_to(per_photo[:, :1], per_photo.shape), atol=1e-5)  # the same at every pixel of a photo
    assert np.abs(per_photo[0, 0] - per_photo[1, 0]).max() > 1e-3  # and not the same for both photos
    generator.get_layer("mask_logits").bias.assign([-30.0])  # a dry photo (mask 0) passes through
    np.testing.assert_allclose(generator(rainy).numpy(), rainy, atol=1e-6)
    assert "global_gain" not in {layer.name for layer in tiny_generator().layers}


def test_ungated_model_is_the_correction_without_its_mask():
    generator = perturbed_generator()
    rainy = np.random.default_rng(2).uniform(-1, 1, (2, 32, 32, 3)).astype("float32")
    derained, mask, ungated = (output.numpy() for output in ungated_model(generator)(rainy))
    correction = ungated - rainy
    assert np.abs(correction).max() > 0.01
    np.testing.assert_allclose(np.clip(rainy + mask * correction, -1, 1), derained, atol=1e-5)
    with pytest.raises(ValueError, match="gated_correction"):
        ungated_model(pix2pix_generator(base_channels=4, depth=5))


def _dry_error_after_training(ungated_weight):
    """|rainy + correction - clean| on the dry pixels of drop_pairs after a short training, and the logs."""
    rainy, clean, mask = drop_pairs()
    generator = tiny_generator()
    keras.utils.set_random_seed(0)
    gan = DerainGAN(generator, pix2pix_discriminator(base_channels=4, n_layers=2), seed=0)
    gan.compile(keras.optimizers.Adam(3e-3), keras.optimizers.Adam(1e-4), adversarial_weight=0.0,
                charbonnier_weight=1.0, mask_weight=1.0, ungated_weight=ungated_weight)
    logs = gan.fit(tf.data.Dataset.from_tensors((rainy, clean, mask)).repeat(), epochs=1, steps_per_epoch=120,
                   verbose=0).history
    ungated = ungated_model(generator)(rainy)[2].numpy()
    dry = np.broadcast_to(mask == 0, ungated.shape)
    return float(np.abs(ungated - clean)[dry].mean()), logs


def test_ungated_term_makes_the_correction_right_where_there_is_no_drop():
    without, logs_without = _dry_error_after_training(0.0)
    with_term, logs_with = _dry_error_after_training(1.0)
    assert "g_ungated" in logs_with and "g_ungated" not in logs_without
    assert with_term < 0.5 * without, (with_term, without)


def test_ungated_term_is_the_charbonnier_of_the_ungated_output():
    rainy, clean, _ = drop_pairs(count=2)
    gan = DerainGAN(tiny_generator(), pix2pix_discriminator(base_channels=4, n_layers=2))
    gan.compile(keras.optimizers.Adam(), keras.optimizers.Adam(), ungated_weight=2.0)
    ungated = rainy + 0.25
    terms = gan.restoration_terms(rainy, clean, rainy, ungated=ungated)
    hand = np.mean(np.sqrt((clean - ungated) ** 2 + 1e-3**2))
    np.testing.assert_allclose(float(terms["ungated"]), hand, rtol=1e-5)
    with pytest.raises(ValueError, match="gated_correction"):
        plain = DerainGAN(pix2pix_generator(base_channels=4, depth=5), pix2pix_discriminator(base_channels=4, n_layers=2))
        plain.compile(keras.optimizers.Adam(), keras.optimizers.Adam(), ungated_weight=1.0)
