"""Fine-tuning: --init, real and synthetic pairs mixed, colour matching, validation on real pairs, the lens split."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import train as train_script
from conftest import REPO, random_image, write_raindrop_layout
from keras_derain import training
from keras_derain.data import find_pairs, paired_dataset
from keras_derain.data.pairs import colour_match
from keras_derain.gan import DerainGAN
from keras_derain.models import cgan_generator, pix2pix_discriminator, pix2pix_generator, restoration_generator

TINY = {"base_channels": 4, "crop_size": 32, "batch_size": 2, "steps_per_epoch": 2}
RAINY = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)


def outputs(generator):
    return keras.ops.convert_to_numpy(generator(RAINY, training=False))


@pytest.fixture
def tiny_generator(tmp_path):
    """A trained-looking tiny Pix2Pix generator (weights drawn with another seed than any run's) in a .keras file."""
    keras.utils.set_random_seed(123)
    generator = pix2pix_generator(base_channels=4, depth=5)
    path = tmp_path / "tiny.keras"
    generator.save(path)
    return path, generator


# -- --init ---------------------------------------------------------------------------------


def test_init_restores_the_generator_exactly(tiny_generator):
    path, generator = tiny_generator
    config = training.init_config(path, **TINY)
    gan = training.build_gan(config, init=path)  # zero steps
    np.testing.assert_array_equal(outputs(gan.generator), outputs(generator))
    assert gan.discriminator.name == "pix2pix_discriminator"  # a fresh one


def test_a_run_that_learns_nothing_keeps_the_init_outputs(tiny_generator, tmp_path):
    # Learning rates 0: the run's steps change no weight, so its generators must equal the init's.
    path, generator = tiny_generator
    run = tmp_path / "runs" / "zero"
    argv = ["--init", str(path), "--epochs", "1", "--steps-per-epoch", "1", "--batch-size", "2", "--crop-size", "32",
            "--g-lr", "0", "--d-lr", "0", "--runs-dir", str(tmp_path / "runs"), "--name", "zero", "--quiet"]
    assert train_script.main(argv) == 0
    for name in ("last.keras", "best.keras"):
        np.testing.assert_array_equal(outputs(keras.saving.load_model(run / name)), outputs(generator))
    record = json.loads((run / "config.json").read_text())
    assert record["start"]["init"]["model"] == str(path) and record["start"]["init"]["discriminator"] == "fresh"
    assert record["config"]["base_channels"] == 4


def test_a_whole_gan_brings_its_discriminator(tmp_path):
    keras.utils.set_random_seed(7)
    gan = DerainGAN(pix2pix_generator(base_channels=4, depth=5), pix2pix_discriminator(base_channels=4))
    gan.save(tmp_path / "gan.keras")
    init = training.load_init(tmp_path / "gan.keras")
    assert init.arch == "pix2pix" and init.discriminator is not None
    built = training.build_gan(training.init_config(init, **TINY), init=init)
    pair = [RAINY, RAINY]
    np.testing.assert_array_equal(built.discriminator(pair), gan.discriminator(pair))
    np.testing.assert_array_equal(outputs(built.generator), outputs(gan.generator))


def test_init_by_builtin_name_uses_the_shipped_file():
    default = training.load_init("default")
    assert default.path.name == "generator.f16.npz" and default.arch == "restoration"
    pix2pix = training.load_init("pix2pix")  # the study's generator, which the lens model was fine-tuned from
    assert pix2pix.path.name == "pix2pix.f16.npz" and pix2pix.arch == "pix2pix" and pix2pix.base_channels == 32
    builtin = training.builtin_models()  # the names Derainer and export.py know too
    assert builtin["default"] == default.path and builtin["lens"].name == "lens.f16.npz"
    assert training.load_init("lens").path == builtin["lens"]
    with pytest.raises(ValueError, match=r"--init nosuchmodel: neither a built-in model \(default"):
        training.load_init("nosuchmodel")


def test_init_under_mixed_precision_computes_in_float16(tiny_generator):
    path, generator = tiny_generator
    gan = training.build_gan(training.init_config(path, **TINY), init=path, mixed_precision=True)
    assert gan.generator.layers[1].compute_dtype == "float16"
    assert gan.generator.output.dtype == "float32"
    np.testing.assert_allclose(outputs(gan.generator), outputs(generator), atol=2e-2)


def test_a_cgan_init_brings_its_image_size_and_latent(tmp_path):
    cgan_generator(image_size=32, base_channels=4, latent_dim=8).save(tmp_path / "cgan.keras")
    config = training.init_config(tmp_path / "cgan.keras", epochs=1)
    assert (config["arch"], config["crop_size"], config["base_channels"], config["latent_dim"]) == ("cgan", 32, 4, 8)
    with pytest.raises(ValueError, match="--crop-size 64 contradicts --init .*takes 32x32 images"):
        training.init_config(tmp_path / "cgan.keras", crop_size=64)


def test_a_restoration_init_brings_its_affine_head(tmp_path, capsys):
    keras.utils.set_random_seed(0)
    restoration_generator(base_channels=4, depth=training.RESTORATION_DEPTH, affine=True).save(tmp_path / "a.keras")
    restoration_generator(base_channels=4, depth=training.RESTORATION_DEPTH).save(tmp_path / "plain.keras")
    assert training.init_config(tmp_path / "a.keras", epochs=1)["affine"] is True
    assert training.init_config(tmp_path / "plain.keras", epochs=1)["affine"] is False
    runs = tmp_path / "runs"
    assert train_script.main(["--init", str(tmp_path / "plain.keras"), "--affine", "--runs-dir", str(runs)]) == 2
    error = capsys.readouterr().err.strip()
    assert error == f"error: --affine on contradicts --init {tmp_path / 'plain.keras'}: its generator has no affine head"
    assert train_script.main(["--arch", "pix2pix", "--affine", "--runs-dir", str(runs)]) == 2
    assert capsys.readouterr().err.strip() == "error: --affine is an option of --arch restoration, not pix2pix"
    assert not runs.exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--arch", "cgan"], "--arch cgan contradicts --init {path}: it holds a pix2pix generator"),
        (["--base-channels", "8"], "--base-channels 8 contradicts --init {path}: its generator has 4"),
        (["--crop-size", "48"], "--crop-size 48 must be a multiple of 32 for the generator of --init {path}"),
    ],
)
def test_a_flag_that_contradicts_the_init_file_fails(tiny_generator, tmp_path, capsys, argv, message):
    path, _ = tiny_generator
    runs = tmp_path / "runs"
    assert train_script.main(["--init", str(path), *argv, "--runs-dir", str(runs)]) == 2
    error = capsys.readouterr().err.strip()
    assert error == f"error: {message.format(path=path)}"
    assert not runs.exists()  # nothing was started


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--init", "missing.keras"], "error: --init missing.keras: no such file"),
        (["--init", "nosuchmodel"], "error: --init nosuchmodel: neither a built-in model"),
        (["--real-fraction", "0.5"], "error: --real-fraction needs --data"),
        (["--color-match"], "error: --color-match needs --data"),
        (["--data", "x", "--real-fraction", "0"], "error: --real-fraction must be in (0, 1]"),
        (["--lens-fraction", "2"], "error: --lens-fraction must be in [0, 1]"),
        (["--patience", "0"], "error: --patience must be a positive integer"),
        (["--arch", "pix2pix", "--ungated-weight", "1"],
         "error: --ungated-weight is an option of --arch restoration, not pix2pix"),
        (["--arch", "restoration", "--ungated-weight", "-1"], "error: --ungated-weight must be >= 0, got -1.0"),
    ],
)
def test_bad_finetune_flags_fail_in_one_line(tmp_path, capsys, argv, message):
    assert train_script.main([*argv, "--runs-dir", str(tmp_path / "runs")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith(message) and len(error.splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_an_unreadable_or_foreign_init_file_is_named(tmp_path):
    (tmp_path / "broken.keras").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"--init .*broken.keras: cannot be loaded"):
        training.load_init(tmp_path / "broken.keras")
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)], name="classifier").save(tmp_path / "other.keras")
    with pytest.raises(ValueError, match=r"holds a model named 'classifier', not one of the generators"):
        training.load_init(tmp_path / "other.keras")


# -- real and synthetic pairs mixed ---------------------------------------------------------

REAL_LEVEL = 7  # real clean images here are one flat grey; no crop of a photo is


def write_flat_pairs(root, count):
    (root / "data").mkdir(parents=True)
    (root / "gt").mkdir(parents=True)
    for index in range(count):
        Image.fromarray(random_image(40, 40, seed=index)).save(root / "data" / f"{index}_rain.png")
        Image.fromarray(np.full((40, 40, 3), REAL_LEVEL, np.uint8)).save(root / "gt" / f"{index}_clean.png")
    return root


@pytest.mark.parametrize("real_fraction", [0.25, 0.75])
def test_mixing_honours_the_real_fraction(tmp_path, real_fraction):
    data = write_flat_pairs(tmp_path / "pairs", 4)
    config = training.resolve("pix2pix", **{**TINY, "batch_size": 8, "steps_per_epoch": 1})
    train, steps, _, description = training.build_data(config, data, real_fraction=real_fraction)
    assert description["kind"] == "mixed" and description["real_fraction"] == real_fraction
    flat = (REAL_LEVEL / 127.5) - 1.0
    real = total = 0
    for _, clean in train.take(40):  # 320 pairs
        real += int(np.sum(np.all(np.abs(clean.numpy() - flat) < 1e-6, axis=(1, 2, 3))))
        total += clean.shape[0]
    # Binomial: the standard deviation of the share is 0.024 here; 0.08 is over 3 of them.
    assert total == 320 and abs(real / total - real_fraction) < 0.08, real / total


def test_mixed_data_carries_masks_for_a_mask_term(tmp_path):
    data = write_flat_pairs(tmp_path / "pairs", 4)
    config = training.resolve("restoration", **{**TINY, "batch_size": 4})
    train, _, _, _ = training.build_data(config, data, real_fraction=0.5, colour_match=True)
    rainy, clean, mask = next(iter(train))
    assert mask.shape == (4, 32, 32, 1) and float(tf.reduce_min(mask)) >= 0.0


def test_default_steps_make_one_pass_over_the_real_pairs(tmp_path):
    data = write_flat_pairs(tmp_path / "pairs", 6)
    config = training.resolve("pix2pix", **{**TINY, "steps_per_epoch": None})
    assert training.build_data(config, data, real_fraction=0.5)[1] == 6  # 6 real pairs / (2 x 0.5) a step


# -- colour matching ------------------------------------------------------------------------


def on_levels(image):
    return np.round((np.clip(image, -1, 1) + 1) * 127.5) / 127.5 - 1


DROPS = ((4, 4), (20, 30), (34, 10))  # top-left corners of 8x8 blotches


def drop_pair(seed=0, size=48):
    """A clean image, and a rainy one: the same with three bright blotches (drops)."""
    clean = on_levels(random_image(size, size, seed) / 127.5 - 1).astype(np.float32)
    rainy = clean.copy()
    for top, left in DROPS:
        rainy[top : top + 8, left : left + 8] = on_levels(rainy[top : top + 8, left : left + 8] * 0.3 + 0.6)
    return rainy, clean


def away_from_drops(size=48, margin=3):
    outside = np.ones((size, size), bool)
    for top, left in DROPS:
        outside[max(0, top - margin) : top + 8 + margin, max(0, left - margin) : left + 8 + margin] = False
    return outside


def test_colour_match_leaves_a_pair_of_matching_colours_unchanged():
    rainy, clean = drop_pair()
    matched = colour_match(tf.constant(rainy), tf.constant(clean)).numpy()
    np.testing.assert_array_equal(matched, clean)


def test_colour_match_corrects_a_global_gain_and_offset():
    rainy, clean = drop_pair()
    # The rainy camera sees everything at 0.8 x the clean one's levels, plus 20, in red only a gain.
    shot = (clean + 1) * 127.5
    darker = shot * np.array([0.8, 0.8, 0.9]) + np.array([0.0, 20.0, 20.0])
    rainy = on_levels(np.where(rainy != clean, (rainy + 1) * 127.5, darker) / 127.5 - 1).astype(np.float32)
    outside = away_from_drops()
    matched = colour_match(tf.constant(rainy), tf.constant(clean)).numpy()
    before = np.abs(clean - rainy)[outside].max() * 127.5
    after = np.abs(matched - rainy)[outside].max() * 127.5
    assert before > 15 and after < 1.01, (before, after)  # both images rounded to levels: 1 level at most


def test_colour_matched_pairs_in_the_pipeline(tmp_path):
    data = write_raindrop_layout(tmp_path / "pairs", count=2, size=(32, 32))
    plain = [clean.numpy() for _, clean in paired_dataset(data)]
    matched = [clean.numpy() for _, clean in paired_dataset(data, colour_match=True)]
    assert not np.array_equal(plain, matched)  # two unrelated images: the match moves the clean one
    same = tmp_path / "same"
    (same / "data").mkdir(parents=True)
    (same / "gt").mkdir()
    for name in ("0",):
        (same / "data" / f"{name}_rain.png").write_bytes((data / "gt" / "0_clean.png").read_bytes())
        (same / "gt" / f"{name}_clean.png").write_bytes((data / "gt" / "0_clean.png").read_bytes())
    for (rainy, clean), (_, plain_clean) in zip(paired_dataset(same, colour_match=True), paired_dataset(same)):
        np.testing.assert_array_equal(clean.numpy(), plain_clean.numpy())


# -- validation on real pairs ---------------------------------------------------------------


def test_val_picks_the_best_epoch_by_real_pair_psnr_y(tmp_path, monkeypatch):
    data = write_raindrop_layout(tmp_path / "pairs", count=2, size=(32, 32))
    scores = iter([20.0, 23.0, 21.0, 22.0])
    saved = {}

    def scripted(self, epoch, logs=None):  # the validation scores of four epochs, as if measured
        logs["val_psnr_y"], logs["val_ssim_y"] = next(scores), 0.5
        saved[epoch + 1] = outputs(self.model.generator)

    monkeypatch.setattr(training.PairValidation, "on_epoch_end", scripted)
    config = training.resolve("pix2pix", epochs=4, **TINY)
    summary = training.train(config, tmp_path / "run", data=data, val=data, verbose=0)
    assert summary["best_epoch"] == 2 and not summary["stopped_early"]
    assert json.loads((tmp_path / "run" / "best.json").read_text()) == {"val_psnr_y": 23.0, "epoch": 2}
    np.testing.assert_array_equal(outputs(keras.saving.load_model(tmp_path / "run" / "best.keras")), saved[2])
    header = (tmp_path / "run" / "history.csv").read_text().splitlines()[0].split(",")
    assert {"val_psnr_y", "val_ssim_y", "val_psnr"} <= set(header)
    assert {"rainy_psnr_y", "derained_psnr_y", "rainy_ssim_y", "derained_ssim_y"} <= set(summary)


def test_patience_stops_the_run(tmp_path, monkeypatch):
    data = write_raindrop_layout(tmp_path / "pairs", count=2, size=(32, 32))
    scores = iter([20.0, 23.0, 21.0, 22.0, 30.0, 30.0])

    def scripted(self, epoch, logs=None):
        logs["val_psnr_y"], logs["val_ssim_y"] = next(scores), 0.5

    monkeypatch.setattr(training.PairValidation, "on_epoch_end", scripted)
    config = training.resolve("pix2pix", epochs=6, **TINY)
    summary = training.train(config, tmp_path / "run", data=data, val=data, verbose=0, patience=2)
    assert summary["best_epoch"] == 2 and summary["stopped_early"]
    assert len((tmp_path / "run" / "history.csv").read_text().splitlines()) == 1 + 4  # epochs 1-4
    assert not (tmp_path / "run" / "backup").exists()  # an early stop ends the run


def test_pair_validation_scores_as_evaluate_does(tmp_path):
    from keras_derain.callbacks import PairValidation
    from keras_derain.evaluate import quality

    data = write_raindrop_layout(tmp_path / "pairs", count=2, size=(40, 24))
    rainy, clean = training.real_pairs(data)
    generator = pix2pix_generator(base_channels=4, depth=3)
    validation = PairValidation(rainy, clean)
    derained = validation.derain(generator)
    assert derained[0].shape == (24, 40, 3) and derained[0].dtype == np.uint8
    summary = validation.summary(generator)
    expected = np.mean([quality(image, target)["psnr_y"] for image, target in zip(derained, clean)])
    assert summary["derained_psnr_y"] == pytest.approx(expected, abs=1e-4)


# -- the lens split -------------------------------------------------------------------------


def test_lens_split_by_origin(shared_data, tmp_path):
    lens = shared_data / "raindrop_real_lens"
    if not lens.is_dir():
        pytest.skip("../shared/data/raindrop_real_lens is absent")
    out = tmp_path / "split.json"
    folders = tmp_path / "lens_split"
    subprocess.run([sys.executable, str(REPO / "benchmarks" / "lens_split.py"), "--data", str(lens),
                    "--out", str(out), "--materialise", str(folders)], check=True, capture_output=True)
    split = json.loads(out.read_text())
    assert (len(split["train"]), len(split["val"])) == (80, 20)
    assert not set(split["train_origins"]) & set(split["val_origins"])
    assert split == json.loads((REPO / "benchmarks" / "results" / "lens_split.json").read_text())  # deterministic
    assert len(find_pairs(folders / "train")) == 80 and len(find_pairs(folders / "val")) == 20


def test_a_killed_finetune_resumes_with_its_init_and_data_options(tiny_generator, tmp_path, monkeypatch):
    from test_training import epochs_logged, spy_on_train, train_until_killed

    path, _ = tiny_generator
    data = write_flat_pairs(tmp_path / "pairs", 4)
    run = tmp_path / "runs" / "run"
    options = dict(init=path, data=data, val=data, real_fraction=0.5, colour_match=True, lens_fraction=1.0,
                   patience=5, keep_epochs=True)
    train_until_killed(training.init_config(path, epochs=3, **TINY), run, monkeypatch, **options)
    resumed = spy_on_train(monkeypatch)
    assert train_script.main(["--resume", "--name", "run", "--runs-dir", str(tmp_path / "runs"), "--quiet"]) == 0
    names = ("real_fraction", "colour_match", "lens_fraction", "patience", "keep_epochs")
    assert {name: resumed[name] for name in names} == {
        "real_fraction": 0.5, "colour_match": True, "lens_fraction": 1.0, "patience": 5, "keep_epochs": True}
    assert resumed["init"] == str(path) and resumed["data"] == data and resumed["val"] == data
    assert epochs_logged(run) == [0, 1, 2]
    # --keep-epochs: each epoch's generator, before and after the kill; the newest is last.keras.
    assert sorted(file.name for file in (run / "epochs").iterdir()) == ["ep001.keras", "ep002.keras", "ep003.keras"]
    newest, last = (keras.saving.load_model(run / name) for name in ("epochs/ep003.keras", "last.keras"))
    for kept, saved in zip(newest.weights, last.weights):
        np.testing.assert_array_equal(kept.numpy(), saved.numpy())
    first = keras.saving.load_model(run / "epochs" / "ep001.keras")
    assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(first.weights, last.weights))


def test_a_global_head_is_added_at_zero_and_trained_alone_across_a_resume(tmp_path, capsys, monkeypatch):
    from test_training import train_until_killed

    from keras_derain.compact import load_compact, save_compact
    from keras_derain.models.restoration import has_global_head

    keras.utils.set_random_seed(7)
    plain = restoration_generator(base_channels=4, depth=training.RESTORATION_DEPTH)
    plain.get_layer("mask_logits").bias.assign([0.0])  # a trained-looking mask: half on everywhere
    plain.get_layer("correction").bias.assign([0.05, 0.0, -0.05])
    plain.save(tmp_path / "plain.keras")
    np.testing.assert_allclose(outputs(training.with_global_head(plain)), outputs(plain), atol=1e-6)
    runs = tmp_path / "runs"
    argv = ["--init", str(tmp_path / "plain.keras"), "--global-head", "--crop-size", "32", "--batch-size", "2",
            "--steps-per-epoch", "3", "--epochs", "1", "--runs-dir", str(runs), "--quiet"]
    assert train_script.main([*argv, "--train-only", "nosuch_", "--name", "bad"]) == 2
    assert capsys.readouterr().err.strip().startswith("error: --train-only nosuch_: no layer of generator")
    # Killed in its second epoch and resumed: the freezing comes back from config.json.
    config = training.init_config(tmp_path / "plain.keras", epochs=2, global_head=True, train_only="global_",
                                  crop_size=32, batch_size=2, steps_per_epoch=3, g_lr=1e-2)
    train_until_killed(config, runs / "head", monkeypatch, epoch=1, init=tmp_path / "plain.keras")
    assert train_script.main(["--resume", "--name", "head", "--runs-dir", str(runs), "--quiet"]) == 0
    trained = keras.saving.load_model(runs / "head" / "last.keras")
    assert has_global_head(trained)
    before = {layer.name: layer.get_weights() for layer in plain.layers}
    for layer in trained.layers:  # the init generator's layers did not move
        for kept, start in zip(layer.get_weights(), before.get(layer.name, [])):
            np.testing.assert_array_equal(kept, start)
    assert np.abs(trained.get_layer("global_offset").get_weights()[0]).max() > 0  # the new head, from zero, did
    # A file of that run starts a new run fully trainable, with its head; the shipped copy carries no freezing.
    config = training.init_config(runs / "head" / "last.keras", epochs=1)
    assert config["global_head"] is True and config["train_only"] is None
    assert all(layer.trainable for layer in training.load_init(runs / "head" / "last.keras").generator.layers)
    frozen = [layer.name for layer in trained.layers if not layer.trainable]
    assert "stem" in frozen and "global_offset" not in frozen  # the run's file remembers its freezing ...
    save_compact(trained, tmp_path / "head.f16.npz")
    assert all(layer.trainable for layer in load_compact(tmp_path / "head.f16.npz").layers)  # ... the shipped one not
    assert not any(trained.get_layer(name).trainable for name in frozen)  # and the model saved is left as it was
    deeper = restoration_generator(base_channels=4, depth=2, blocks=2)
    np.testing.assert_allclose(outputs(training.with_global_head(deeper)), outputs(deeper), atol=1e-6)
