"""benchmarks/sim2real.py: an old renderer drawn through today's pipeline (``--renderer-commit``)."""

import subprocess
from unittest import mock

import numpy as np
import pytest
from conftest import REPO, benchmark_module

# The first-generation renderer: the sim2real baseline.
V1 = "5781748"


def _has_commit(rev):
    result = subprocess.run(["git", "-C", str(REPO), "cat-file", "-e", f"{rev}:keras_derain/data/raindrops.py"],
                            capture_output=True)
    return result.returncode == 0


needs_v1 = pytest.mark.skipif(not _has_commit(V1), reason=f"commit {V1} is not in this checkout's history")


@needs_v1
def test_the_old_renderer_feeds_todays_dataset_with_drops_and_exact_copies_outside_its_mask():
    sim2real = benchmark_module("sim2real")
    from keras_derain.data import synthetic
    from keras_derain.data.synthetic import clean_image_paths, synthetic_dataset

    photos = clean_image_paths()[:2]

    old = mock.patch.object(synthetic.raindrops, "render_raindrops", sim2real.legacy_renderer(V1))
    with old:
        dataset = synthetic_dataset(photos, crop_size=32, batch_size=2, seed=3, raindrop_options={}, lens_fraction=0.0,
                                    return_mask=True)
    rainy, clean, mask = [tensor.numpy() for tensor in next(iter(dataset))]
    outside = mask[..., 0] == 0.0
    assert 0.0 < outside.mean() < 1.0
    assert np.array_equal(rainy[outside], clean[outside])


def test_an_unknown_renderer_commit_is_refused_naming_the_flag():
    sim2real = benchmark_module("sim2real")
    with pytest.raises(ValueError, match="--renderer-commit 0000000"):
        sim2real.legacy_renderer("0000000")


def test_the_old_renderer_refuses_todays_options(tmp_path, capsys):
    sim2real = benchmark_module("sim2real")
    code = sim2real.main(["--label", "x", "--renderer-commit", V1, "--options", '{"density": 0.3}',
                          "--lens-fraction", "0", "--out", str(tmp_path / "out.md")])
    assert code == 2
    assert "--renderer-commit" in capsys.readouterr().err
    assert not (tmp_path / "out.md").exists()
