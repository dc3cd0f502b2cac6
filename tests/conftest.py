"""Shared test helpers: tiny image folders, and the optional ../shared data."""

import importlib.util
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))  # train.py and export.py live at the top of the repository


def benchmark_module(name):
    """``benchmarks/NAME.py`` imported as a module (the benchmarks are scripts, not a package).

    ``benchmarks/`` goes on ``sys.path``, as it is for a script run from there, so a
    benchmark can import another (``from headroom import RIGHT_LEVELS``).
    """
    if str(REPO / "benchmarks") not in sys.path:
        sys.path.append(str(REPO / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def shared_data():
    """``../shared/data``, or skip: a fresh clone has no ``../shared``."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (a fresh clone has none)")
    return SHARED_DATA


def random_image(height, width, seed=0):
    """A uint8 RGB array with structure (a gradient plus noise)."""
    rng = np.random.default_rng(seed)
    gradient = np.linspace(0, 200, width)[None, :, None] + np.linspace(0, 50, height)[:, None, None]
    noise = rng.integers(0, 56, (height, width, 3))
    return np.clip(gradient + noise, 0, 255).astype(np.uint8)


def write_raindrop_layout(root, count=3, size=(48, 40), suffix=".png"):
    """Write ``count`` pairs as ``root/data/N_rain`` + ``root/gt/N_clean``; returns root."""
    width, height = size
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "gt").mkdir(parents=True, exist_ok=True)
    for index in range(count):
        Image.fromarray(random_image(height, width, seed=index)).save(root / "data" / f"{index}_rain{suffix}")
        Image.fromarray(random_image(height, width, seed=100 + index)).save(root / "gt" / f"{index}_clean{suffix}")
    return root


def randomise_kernels(model, seed=0, fan_in=None):
    """Give every kernel He-scaled normal weights, so an untrained model's outputs span [-1, 1].

    ``fan_in(weight)`` defaults to the product of all but the last axis (a
    Conv2D kernel's inputs per output).
    """
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        if weight.path.endswith("kernel"):
            inputs = fan_in(weight) if fan_in else np.prod(weight.shape[:-1])
            weight.assign(rng.normal(0, 1 / np.sqrt(inputs), weight.shape).astype("float32"))
    return model
