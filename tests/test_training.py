"""train.py and keras_derain.training: run folders, presets, resume after a kill, bad flags, NaN."""

import csv
import json
import warnings

import keras
import numpy as np
import pytest

import train as train_script
from conftest import write_raindrop_layout
from keras_derain import training
from keras_derain.callbacks import StopOnNaN
from keras_derain.presets import PENALTIES, PRESETS, differences, resolve

TINY = {"base_channels": 4, "crop_size": 32, "batch_size": 2, "steps_per_epoch": 2}


def epochs_logged(run_dir):
    with open(run_dir / "history.csv", newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def test_presets_and_penalties():
    assert resolve("cgan")["g_lr"] == 1e-3 and resolve("cgan")["epochs"] == 20
    pix2pix = resolve("pix2pix")
    assert (pix2pix["g_lr"], pix2pix["l1_weight"], pix2pix["epochs"], pix2pix["batch_size"]) == (2e-4, 100.0, 50, 8)
    penalised = resolve("pix2pix", penalties=True, g_lr=1e-4)
    assert penalised["real_label"] == 0.9 and penalised["fake_label"] == 0.1 and penalised["d_lr"] == 2e-4
    assert penalised["g_lr"] == 1e-4  # a flag beats the penalty preset
    assert differences(penalised) == {"real_label": 1.0, "fake_label": 0.0, "g_lr": 2e-4}
    assert set(PENALTIES) <= set(PRESETS["pix2pix"])
    with pytest.raises(ValueError, match="unknown arch 'unet'"):
        resolve("unet")


@pytest.mark.parametrize("arch", ["pix2pix", "cgan"])
def test_run_folder(tmp_path, arch):
    config = resolve(arch, builtin_data=True, epochs=2, **TINY)
    summary = training.train(config, tmp_path / "run", verbose=0)
    run = tmp_path / "run"
    for name in ("config.json", "history.csv", "best.keras", "last.keras", "plots.png", "summary.json",
                 "samples/epoch_001.png", "samples/epoch_002.png"):
        assert (run / name).exists(), name
    assert not (run / "backup").exists()  # removed once training finished
    record = json.loads((run / "config.json").read_text())
    assert record["config"]["epochs"] == 2
    assert record["differs_from_preset"]["epochs"] == {"value": 2, "preset": PRESETS[arch]["epochs"]}
    assert "base_channels" in record["differs_from_preset"]
    assert record["data"]["kind"] == "synthetic"
    assert epochs_logged(run) == [0, 1]
    assert np.isfinite(summary["rainy_psnr"]) and np.isfinite(summary["derained_psnr"])
    generator = keras.saving.load_model(run / "best.keras")
    assert generator.output_shape[-1] == 3


def test_real_pairs_layout(tmp_path):
    data = tmp_path / "Raindrop"
    write_raindrop_layout(data / "train", count=4, size=(48, 40))
    write_raindrop_layout(data / "test_a", count=2, size=(48, 40))
    config = resolve("pix2pix", epochs=1, **{**TINY, "steps_per_epoch": None})
    summary = training.train(config, tmp_path / "run", data=data, verbose=0)
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["data"]["train_split"] == "train" and record["data"]["val_split"] == "test_a"
    assert summary["val_pairs"] == 2


class KillAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt  # what a Ctrl-C or a kill looks like to fit


def spy_on_train(monkeypatch):
    """Record the keyword arguments train.py passes to ``training.train``: returns the dict they fill."""
    resumed = {}
    original_train = training.train

    def spy(*args, **kwargs):
        resumed.update(kwargs)
        return original_train(*args, **kwargs)

    monkeypatch.setattr(training, "train", spy)
    return resumed


def train_until_killed(config, run, monkeypatch, epoch=2, **options):
    """Start a run (``options`` go to ``train``) and kill it as epoch ``epoch`` begins."""
    original_fit = keras.Model.fit

    def fit_with_kill(self, *args, callbacks=(), **kwargs):
        return original_fit(self, *args, callbacks=[*callbacks, KillAtEpoch(epoch)], **kwargs)

    monkeypatch.setattr(keras.Model, "fit", fit_with_kill)
    with pytest.raises(KeyboardInterrupt):
        training.train(config, run, verbose=0, **options)
    monkeypatch.setattr(keras.Model, "fit", original_fit)
    assert (run / "backup").exists() and epochs_logged(run) == list(range(epoch))


def half_written(path):
    """What a kill halfway through writing ``path`` leaves."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_resume_continues_from_the_last_completed_epoch(tmp_path, monkeypatch):
    config = resolve("pix2pix", builtin_data=True, epochs=3, **TINY)
    run = tmp_path / "run"
    train_until_killed(config, run, monkeypatch)
    best_before = (run / "best.keras").read_bytes()
    assert best_before

    with pytest.raises(training.TrainingError, match="--resume"):
        training.train(config, run, verbose=0)  # no silent restart over an unfinished run

    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Skipping variable loading")  # optimizer state lost
        training.train(config, run, resume=True, verbose=0)
    assert epochs_logged(run) == [0, 1, 2]
    assert not (run / "backup").exists()

    # The run has finished: neither a second resume nor a new run may train over it.
    with pytest.raises(training.TrainingError, match="nothing to resume"):
        training.train(config, run, resume=True, verbose=0)
    with pytest.raises(training.TrainingError, match="holds the results of a run"):
        training.train(config, run, verbose=0)
    assert epochs_logged(run) == [0, 1, 2]
    with pytest.raises(training.TrainingError, match="no unfinished run"):
        training.newest_run(tmp_path)


def test_resume_with_epochs_extends_a_run_and_records_it(tmp_path, monkeypatch, capsys):
    config = resolve("pix2pix", builtin_data=True, epochs=3, **TINY)
    run = tmp_path / "run"
    train_until_killed(config, run, monkeypatch)  # killed after epochs 0 and 1
    flags = ["--resume", "--name", "run", "--runs-dir", str(tmp_path), "--quiet"]
    assert train_script.main([*flags, "--epochs", "1"]) == 2  # fewer than are done
    assert "has already done 2 epochs" in capsys.readouterr().err
    assert json.loads((run / "config.json").read_text())["config"]["epochs"] == 3  # untouched
    assert train_script.main([*flags, "--epochs", "4"]) == 0
    assert epochs_logged(run) == [0, 1, 2, 3]
    record = json.loads((run / "config.json").read_text())
    assert record["config"]["epochs"] == 4
    assert record["extended"][0]["epochs"] == [3, 4] and record["extended"][0]["after_epoch"] == 2
    assert record["differs_from_preset"]["epochs"]["value"] == 4


def test_resume_keeps_the_reference_side_and_the_skies(tmp_path, monkeypatch):
    config = resolve("pix2pix", builtin_data=True, epochs=3, **TINY)
    run = tmp_path / "run"
    train_until_killed(config, run, monkeypatch, reference_side=640, lens_reference_side=960, sky_fraction=0.2,
                       storm_share=0.0, lens_storm_share=0.5)
    data = json.loads((run / "config.json").read_text())["data"]
    assert data["reference_side"] == 640 and data["lens_reference_side"] == 960 and data["sky_fraction"] == 0.2
    assert data["storm_share"] == 0.0 and data["lens_storm_share"] == 0.5
    seen, original = {}, training.train

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(training, "train", spy)
    assert train_script.main(["--resume", "--name", "run", "--runs-dir", str(tmp_path), "--quiet"]) == 0
    assert seen["reference_side"] == 640 and seen["lens_reference_side"] == 960 and seen["sky_fraction"] == 0.2
    assert seen["storm_share"] == 0.0 and seen["lens_storm_share"] == 0.5
    assert epochs_logged(run) == [0, 1, 2]


def test_a_run_killed_in_its_first_epoch_can_start_again(tmp_path, monkeypatch, capsys):
    # Nothing to restore yet (no backup/, no history.csv): --resume and a plain rerun both train it.
    config = resolve("pix2pix", builtin_data=True, epochs=1, **TINY)
    run = tmp_path / "run"
    original_fit = keras.Model.fit

    def fit_with_kill(self, *args, callbacks=(), **kwargs):
        return original_fit(self, *args, callbacks=[*callbacks, KillAtEpoch(0)], **kwargs)

    monkeypatch.setattr(keras.Model, "fit", fit_with_kill)
    with pytest.raises(KeyboardInterrupt):
        training.train(config, run, verbose=0)
    monkeypatch.setattr(keras.Model, "fit", original_fit)
    assert (run / "config.json").exists() and not (run / "backup").exists()
    assert training.newest_run(tmp_path) == run
    training.train(config, run, resume=True, verbose=0)
    assert "no epoch was completed; starting from the first" in capsys.readouterr().out
    assert epochs_logged(run) == [0]


def test_resume_after_a_kill_while_the_backup_was_written(tmp_path, monkeypatch):
    config = resolve("pix2pix", builtin_data=True, epochs=3, **TINY)
    run = tmp_path / "run"
    train_until_killed(config, run, monkeypatch)
    half_written(run / "backup" / "latest.weights.h5")
    training.train(config, run, resume=True, verbose=0)  # from the previous epoch's state
    assert epochs_logged(run)[-2:] == [1, 2]  # epoch 1 again, then 2
    assert not (run / "backup").exists()


def test_resume_keeps_the_runs_precision(tmp_path, monkeypatch, capsys):
    # A mixed-precision run (as on a GPU) resumed with train.py's default --mixed-precision auto
    # on this CPU: it must go on with loss scaling, or the optimizer state could not be loaded.
    config = resolve("pix2pix", builtin_data=True, epochs=3, **TINY)
    run = tmp_path / "run"
    train_until_killed(config, run, monkeypatch, mixed_precision="on")
    resumed = spy_on_train(monkeypatch)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Skipping variable loading")  # optimizer state lost
        assert train_script.main(["--resume", "--name", "run", "--runs-dir", str(tmp_path), "--quiet"]) == 0
    assert resumed["mixed_precision"] == "on"
    assert epochs_logged(run) == [0, 1, 2]


def test_unreadable_backup_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    config = resolve("pix2pix", builtin_data=True, epochs=3, **TINY)
    run = tmp_path / "run"
    train_until_killed(config, run, monkeypatch)
    for path in (run / "backup").glob("*.weights.h5*"):
        half_written(path)
    assert train_script.main(["--resume", "--name", "run", "--runs-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert error.startswith(f"error: {run / 'backup'}: the saved training state cannot be read")
    assert (run / "best.keras").exists()  # nothing was lost


def test_optimizer_state_survives_a_resume(tmp_path):
    """BackupAndRestore's weights file carries both optimizers (their step counters)."""
    generator, discriminator = training.build_models(resolve("pix2pix", **TINY))
    gan = training.DerainGAN(generator, discriminator)
    gan.compile(keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3), g_steps=2)
    rainy = np.zeros((2, 32, 32, 3), np.float32)
    gan.fit(rainy, rainy, batch_size=2, epochs=1, verbose=0)
    gan.save_weights(tmp_path / "gan.weights.h5")
    generator, discriminator = training.build_models(resolve("pix2pix", **TINY))
    fresh = training.DerainGAN(generator, discriminator)
    fresh.compile(keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3), g_steps=2)
    fresh.load_weights(tmp_path / "gan.weights.h5")
    assert int(fresh.g_optimizer.iterations.numpy()) == 2
    assert int(fresh.d_optimizer.iterations.numpy()) == 1


def test_stop_on_nan_names_the_loss():
    callback = StopOnNaN()
    callback.set_model(keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)]))
    callback.on_epoch_begin(4)
    callback.on_train_batch_end(6, {"d_loss": 0.5, "g_loss": float("nan")})
    assert callback.model.stop_training
    assert callback.stopped == "g_loss became nan at epoch 5, batch 7"


def test_nan_losses_stop_the_run_with_a_clear_error(tmp_path):
    config = resolve("pix2pix", builtin_data=True, epochs=2, g_lr=1e30, d_lr=1e30, **TINY)
    with pytest.raises(training.TrainingError, match=r"training stopped: (d_loss|g_loss) became nan"):
        training.train(config, tmp_path / "run", verbose=0)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--arch", "unet"], "--arch 'unet' is unknown"),
        (["--epochs", "-1"], "--epochs must be a positive integer"),
        (["--batch-size", "0"], "--batch-size must be a positive integer"),
        (["--label-flip", "0.8"], "--label-flip must be in"),
        (["--real-label", "1.5"], "--real-label must be in"),
        (["--crop-size", "100"], "--crop-size must be a multiple of 16"),
        (["--data", "missing-folder"], "missing-folder: no such folder"),
        (["--strategy", "multiworker"], "--strategy multiworker needs --name"),
        (["--beta-1", "1.0"], "--beta-1 must be in [0, 1)"),
        (["--seed", "-1"], "--seed must be an integer in [0, 2**32)"),
        (["--ema-momentum", "1.0"], "--ema-momentum must be in [0, 1)"),
        (["--drops", '{"density": 7}'], "--drops: raindrop option density=7 is outside"),
        (["--drops", '{"sizes": 1}'], "--drops: unknown raindrop option(s) ['sizes']"),
        (["--drops", "density=0.5"], "--drops: Expecting value"),
        (["--lens-drops", '{"blur_range": [0.2, 0.1]}'], "--lens-drops: raindrop option blur_range"),
        (["--lens-drops", "[1]"], "--lens-drops: not a JSON object"),
        (["--reference-side", "8"], "--reference-side must be at least 32 pixels, got 8"),
        (["--reference-side", "640", "--data", "pairs"], "--reference-side sizes rendered drops: it needs"),
        (["--lens-reference-side", "0"], "--lens-reference-side must be at least 32 pixels, got 0"),
        (["--lens-reference-side", "960", "--data", "pairs"], "--lens-reference-side sizes rendered drops: it needs"),
        (["--sky-fraction", "1.5"], "--sky-fraction must be in [0, 1], got 1.5"),
        (["--sky-fraction", "nan"], "--sky-fraction must be in [0, 1], got nan"),
        (["--sky-fraction", "0.2", "--data", "pairs"], "--sky-fraction paints the photos that drops are rendered on"),
        (["--sky-fraction", "0.2", "--storm-share", "2"], "--storm-share must be in [0, 1], got 2.0"),
        (["--sky-fraction", "0.2", "--lens-storm-share", "nan"], "--lens-storm-share must be in [0, 1], got nan"),
        (["--lens-storm-share", "0.5"], "--lens-storm-share is a share of the painted skies: it needs --sky-fraction"),
    ],
)
def test_bad_flags_fail_before_training(tmp_path, capsys, argv, message):
    assert train_script.main([*argv, "--runs-dir", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and message in error
    assert len(error.splitlines()) == 1
    assert not any(tmp_path.iterdir())  # nothing was started


def test_drop_options_reach_the_renderer_and_the_record(tmp_path):
    config = resolve("restoration", builtin_data=True, **TINY)
    # All dry (window style only): every rendered pair is its clean image, which the defaults never give.
    train, _, _, description = training.build_data(config, drop_options={"dry_fraction": 1.0}, lens_fraction=0.0)
    rainy, clean, mask = next(iter(train))
    np.testing.assert_array_equal(rainy.numpy(), clean.numpy())
    assert float(np.max(mask)) == 0.0
    assert description["drop_options"] == {"dry_fraction": 1.0} and description["lens_fraction"] == 0.0


def test_lens_drop_options_reach_the_lens_batches_and_the_record():
    config = resolve("restoration", builtin_data=True, **TINY)
    # Lens batches only, all dry by the lens override; the window options say nothing of dryness.
    train, _, _, description = training.build_data(config, lens_fraction=1.0, lens_drop_options={"dry_fraction": 1.0})
    rainy, clean, mask = next(iter(train))
    np.testing.assert_array_equal(rainy.numpy(), clean.numpy())
    assert float(np.max(mask)) == 0.0
    assert description["lens_drop_options"] == {"dry_fraction": 1.0}
    # Without the override the same lens batches carry drops.
    train, _, _, _ = training.build_data(config, lens_fraction=1.0)
    rainy, clean, _ = next(iter(train))
    assert not np.array_equal(rainy.numpy(), clean.numpy())
    rainy, clean, _ = next(iter(training.build_data(config)[0]))
    assert not np.array_equal(rainy.numpy(), clean.numpy())  # the defaults render drops


def test_reference_side_sizes_the_rendered_drops_and_is_recorded():
    config = resolve("restoration", builtin_data=True, **{**TINY, "crop_size": 64})
    options = {"dry_fraction": 0.0, "density": 0.3}
    edge_per_area = {}
    for side in (None, 1920):
        train, _, _, description = training.build_data(config, drop_options=options, lens_fraction=0.0,
                                                       reference_side=side)
        assert description["reference_side"] == side
        masks = np.concatenate([batch[2].numpy() for _, batch in zip(range(4), train)])
        edges = np.abs(np.diff(masks, axis=1)).sum() + np.abs(np.diff(masks, axis=2)).sum()
        edge_per_area[side] = edges / masks.sum()
    # Drops sized for a frame 4x larger than 480 px: fewer, larger drops, so less outline per unit of area.
    assert edge_per_area[1920] < 0.5 * edge_per_area[None], edge_per_area
    with pytest.raises(ValueError, match="--reference-side must be a whole number of pixels"):
        training.build_data(config, reference_side=10.5)


def test_lens_reference_side_sizes_the_lens_batches_alone():
    config = resolve("restoration", builtin_data=True, **{**TINY, "crop_size": 64})
    window, lens = {"dry_fraction": 0.0, "density": 0.3}, {"dry_fraction": 0.0, "density": 0.3}

    def masks(lens_fraction, lens_side):
        train, _, _, description = training.build_data(config, drop_options=window, lens_drop_options=lens,
                                                       lens_fraction=lens_fraction, lens_reference_side=lens_side)
        assert description["lens_reference_side"] == lens_side
        return np.concatenate([batch[2].numpy() for _, batch in zip(range(4), train)])

    def edge_per_area(masks):
        return (np.abs(np.diff(masks, axis=1)).sum() + np.abs(np.diff(masks, axis=2)).sum()) / masks.sum()

    # Lens batches drawn against a frame 4x larger than 480 px: larger drops, less outline per unit of area
    # (0.58 times as much here; the lens style's glow and veil spread the mask beyond the outlines).
    assert edge_per_area(masks(1.0, 1920)) < 0.75 * edge_per_area(masks(1.0, None))
    # Window batches do not see it.
    np.testing.assert_array_equal(masks(0.0, 1920), masks(0.0, None))
    with pytest.raises(ValueError, match="--lens-reference-side must be a whole number of pixels"):
        training.build_data(config, lens_reference_side=True)


def test_build_data_paints_skies_on_the_rendered_crops_only_when_asked():
    config = resolve("restoration", builtin_data=True, **{**TINY, "crop_size": 48})
    dry = {"dry_fraction": 1.0}

    def clean_tops(sky_fraction):
        train, _, _, description = training.build_data(config, drop_options=dry, lens_drop_options=dry,
                                                       sky_fraction=sky_fraction)
        assert description["sky_fraction"] == sky_fraction
        return np.concatenate([batch[1].numpy()[:, :4] for _, batch in zip(range(3), train)])

    plain, skies = clean_tops(None), clean_tops(1.0)
    assert np.abs(plain - skies).mean() > 0.05  # every crop's top is sky now
    np.testing.assert_array_equal(clean_tops(0.0), plain)  # 0 is no sky at all: the stream is unchanged
    with pytest.raises(ValueError, match="--sky-fraction must be a number in \\[0, 1\\], got 2"):
        training.build_data(config, sky_fraction=2)


def test_data_folder_without_pairs(tmp_path, capsys):
    (tmp_path / "photos").mkdir()
    assert train_script.main(["--data", str(tmp_path / "photos"), "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "no pairs found" in capsys.readouterr().err


def test_resume_of_the_restoration_preset(tmp_path, monkeypatch):
    config = resolve("restoration", builtin_data=True, epochs=3, **TINY)
    run = tmp_path / "run"
    train_until_killed(config, run, monkeypatch)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Skipping variable loading")  # optimizer state lost
        training.train(config, run, resume=True, verbose=0)
    assert epochs_logged(run) == [0, 1, 2]
    history = (run / "history.csv").read_text().splitlines()[0].split(",")
    assert {"g_mask", "g_charbonnier", "g_ssim", "g_fft"} <= set(history)
    generator = keras.saving.load_model(run / "best.keras")
    assert any(layer.name == "drop_mask" for layer in generator.layers)


class WeightsSeen(keras.callbacks.Callback):
    """The generator's first kernel as each training step begins and ends."""

    def __init__(self):
        super().__init__()
        self.begin, self.end = [], []

    def _kernel(self):
        return keras.ops.convert_to_numpy(self.model.generator.trainable_variables[0]).copy()

    def on_train_batch_begin(self, batch, logs=None):
        self.begin.append(self._kernel())

    def on_train_batch_end(self, batch, logs=None):
        self.end.append(self._kernel())


def test_generator_ema_validates_the_average_and_trains_the_raw_weights():
    from keras_derain.callbacks import GeneratorEMA

    config = resolve("pix2pix", ema_momentum=0.5, **TINY)
    gan = training.build_gan(config)
    rng = np.random.default_rng(0)
    rainy, clean = rng.uniform(-1, 1, (2, 2, 32, 32, 3)).astype(np.float32)
    seen = WeightsSeen()
    gan.fit(rainy, clean, batch_size=2, epochs=2, verbose=0, callbacks=[GeneratorEMA(), seen])
    raw = seen.end  # one step an epoch
    # Each step starts from the previous step's raw weights, not from the average swapped in at the epoch's end.
    np.testing.assert_array_equal(seen.begin[1], raw[0])
    # Keras' average: the first step's weights, then 0.5 * average + 0.5 * weights.
    average = 0.5 * raw[0] + 0.5 * raw[1]
    final = keras.ops.convert_to_numpy(gan.generator.trainable_variables[0])
    np.testing.assert_allclose(final, average, atol=1e-6)
    assert np.abs(final - raw[1]).max() > 1e-4  # the average is not the last weights


def test_a_run_with_ema_resumes_with_its_average(tmp_path, monkeypatch):
    config = resolve("pix2pix", builtin_data=True, epochs=2, ema_momentum=0.9, **TINY)
    run = tmp_path / "run"
    train_until_killed(config, run, monkeypatch, epoch=1)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Skipping variable loading")  # the average was not restored
        training.train(config, run, resume=True, verbose=0)
    assert epochs_logged(run) == [0, 1]
    assert json.loads((run / "config.json").read_text())["config"]["ema_momentum"] == 0.9
