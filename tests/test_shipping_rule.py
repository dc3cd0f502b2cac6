"""The shipping rule of benchmarks/results/restoration.md: its candidate (`average_checkpoints.py`) and its verdict
(`score_checkpoints.verdict`)."""

import pytest
from conftest import REPO, benchmark_module

verdict = benchmark_module("score_checkpoints").verdict
average_checkpoints = benchmark_module("average_checkpoints")


def _save_random_generator(path, seed):
    """A tiny restoration generator with random weights drawn from ``seed``, saved at ``path``; its weights."""
    import numpy as np

    from keras_derain.models import restoration_generator

    generator = restoration_generator(base_channels=4, depth=2, affine=True)
    generator.set_weights([np.random.default_rng(seed).normal(size=w.shape).astype(w.dtype)
                           for w in generator.get_weights()])
    generator.save(path)
    return generator.get_weights()


def test_the_candidate_is_the_mean_of_the_newest_epochs_weights(tmp_path):
    import keras
    import numpy as np

    epochs = tmp_path / "epochs"
    epochs.mkdir()
    # ep010 sorts after ep003: three digits keep the order
    saved = [_save_random_generator(epochs / f"ep{epoch:03d}.keras", epoch) for epoch in (1, 2, 3, 10)]
    out = tmp_path / "mean.keras"
    assert average_checkpoints.main([str(epochs), "--last", "2", "--out", str(out)]) == 0
    mean = keras.saving.load_model(out, compile=False).get_weights()
    for got, third, tenth in zip(mean, saved[2], saved[3]):
        np.testing.assert_allclose(got, (third + tenth) / 2, rtol=1e-6, atol=1e-6)
    assert average_checkpoints.main([str(epochs), "--last", "5", "--out", str(tmp_path / "none.keras")]) == 2
    assert not (tmp_path / "none.keras").exists()


def test_two_named_generators_are_averaged_and_a_missing_one_is_named(tmp_path, capsys):
    import keras
    import numpy as np

    saved = [_save_random_generator(tmp_path / f"g{seed}.keras", seed) for seed in (1, 2)]
    out = tmp_path / "wise.keras"
    assert average_checkpoints.main([str(tmp_path / "g1.keras"), str(tmp_path / "g2.keras"), "--out", str(out)]) == 0
    for got, first, second in zip(keras.saving.load_model(out, compile=False).get_weights(), *saved):
        np.testing.assert_allclose(got, (first + second) / 2, rtol=1e-6, atol=1e-6)
    capsys.readouterr()
    missing = tmp_path / "nowhere.keras"
    assert average_checkpoints.main([str(tmp_path / "g1.keras"), str(missing), "--out", str(tmp_path / "x.keras")]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "x.keras").exists()
    assert average_checkpoints.main([str(tmp_path / "g1.keras"), "--out", str(tmp_path / "x.keras")]) == 2


def row(window=20.72, lens=13.95, each=((0.80, 0.81), (0.78, 0.79)), lens_ssim=0.589,
        builtin=27.9, window_dry=50.7, lens_dry=32.7):
    return {"window_input_psnr_y": 18.98, "window_model_psnr_y": window,
            "lens_input_psnr_y": 13.43, "lens_model_psnr_y": lens,
            "lens_input_ssim_y": 0.570, "lens_model_ssim_y": lens_ssim,
            "window_ssim_each": [list(pair) for pair in each],
            "dry_builtin": {"min": builtin}, "dry_window": {"min": window_dry}, "dry_lens": {"min": lens_dry}}


DEFAULT = row()


def test_a_better_model_on_both_sets_with_a_higher_dry_minimum_replaces_the_default():
    assert verdict(row(window=20.80, lens=14.00, builtin=30.0), DEFAULT)[0] == "default"


def test_losing_on_one_set_blocks_the_default_but_a_dry_safe_model_close_behind_ships_named():
    candidate = row(window=20.80, lens=13.90, builtin=56.5, window_dry=float("inf"), lens_dry=44.7)
    name, reasons = verdict(candidate, DEFAULT)
    assert name == "dry-safe"
    assert any("lens: -0.05 dB" in reason for reason in reasons)


def test_a_higher_score_without_a_higher_builtin_dry_minimum_is_not_the_default():
    assert verdict(row(window=20.80, lens=14.00, builtin=27.9), DEFAULT)[0] == "none"


def test_the_bars_rule_asks_every_lens_clean_frame_over_the_bar_not_a_higher_builtin_minimum():
    better = dict(window=20.80, lens=14.00, window_dry=90.0, lens_dry=45.0)
    clear = {**row(**better, builtin=48.0), "dry_lens_all": {"min": 39.9, "under_bar": 0}}
    assert verdict(clear, DEFAULT)[0] == "default"  # 48.0 > 27.9, so the old rule agrees here
    assert verdict(clear, {**DEFAULT, "dry_builtin": {"min": 50.4}})[0] != "default"  # W10's case, old rule
    assert verdict(clear, {**DEFAULT, "dry_builtin": {"min": 50.4}}, rule="bars")[0] == "default"
    one_under = {**clear, "dry_lens_all": {"min": 37.1, "under_bar": 1}}
    assert verdict(one_under, DEFAULT, rule="bars")[0] != "default"
    assert verdict(row(**better, builtin=48.0), DEFAULT, rule="bars")[0] != "default"  # no count of the 100: fails
    low_builtin = {**row(**better, builtin=37.0), "dry_lens_all": {"min": 39.9, "under_bar": 0}}
    assert verdict(low_builtin, DEFAULT, rule="bars")[0] != "default"
    with pytest.raises(ValueError, match="rule"):
        verdict(clear, DEFAULT, rule="lenient")


@pytest.mark.parametrize("change", [
    {"lens_dry": 37.9},                         # one dry group under the 38 dB bar
    {"window": 20.72 - 0.51},                   # more than 0.5 dB under the default on the Raindrop pairs
    {"lens": 13.95 - 0.51},                     # ... or on the lens pairs
    {"each": ((0.80, 0.81), (0.79, 0.78))},     # SSIM-Y under the input on one Raindrop pair
    {"lens_ssim": 0.570},                       # lens SSIM-Y not above the input
])
def test_each_condition_of_the_dry_safe_branch_can_fail_it(change):
    passing = dict(window=20.61, lens=13.87, builtin=56.5, window_dry=94.5, lens_dry=44.7)
    assert verdict(row(**passing), DEFAULT)[0] == "dry-safe"
    assert verdict(row(**{**passing, **change}), DEFAULT)[0] == "none"


def test_ssim_under_the_input_also_blocks_the_default():
    better = dict(window=21.0, lens=14.2, builtin=60.0, window_dry=90.0, lens_dry=45.0)
    assert verdict(row(**better), DEFAULT)[0] == "default"
    assert verdict(row(**better, each=((0.80, 0.79), (0.78, 0.79))), DEFAULT)[0] == "none"


def test_dry_scores_count_the_photos_under_the_bar_and_the_table_shows_all_lens_frames():
    import numpy as np

    module = benchmark_module("score_checkpoints")
    photos = sorted((REPO / "keras_derain" / "data" / "builtin").glob("*.jpg"))[:2]

    class Shifts:  # brightens the first photo by 10 levels (PSNR 28.1 dB), passes the second through
        calls = 0

        def derain(self, image):
            self.calls += 1
            return np.clip(image.astype(np.int16) + (10 if self.calls == 1 else 0), 0, 255).astype(np.uint8)

    scores = module.dry_scores(Shifts(), photos)
    assert scores["n"] == 2 and scores["under_bar"] == 1
    assert scores["min"] == pytest.approx(20 * np.log10(255 / 10), abs=0.3)  # a few pixels clip at 255
    row = {"model": "m", "window_model_psnr_y": 21.0, "window_model_ssim_y": 0.82, "window_input_psnr_y": 19.0,
           "lens_model_psnr_y": 14.0, "lens_input_psnr_y": 13.4, "lens_model_ssim_y": 0.59, "lens_input_ssim_y": 0.57,
           "window_ssim_each": [[0.80, 0.81]], "dry_builtin": {"min": 47.8}, "dry_window": {"min": 91.0},
           "dry_lens": {"min": 38.1}}
    assert module.line(row).endswith("| 47.8 / 91.0 / 38.1 | - |")  # a row cached before all 100 were scored
    row["dry_lens_all"] = {"min": 30.26, "under_bar": 5}
    assert module.line(row).endswith("| 47.8 / 91.0 / 38.1 | 30.3 (5 under 38) |")
