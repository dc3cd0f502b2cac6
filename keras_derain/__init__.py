"""keras-derain: remove adherent raindrops from photographs with conditional GANs.

The package root stays light: it checks the Keras backend and re-exports a few
names lazily, so ``import keras_derain`` never imports every submodule (one
broken optional import must not break the rest).

Example:
    >>> import keras_derain
    >>> keras_derain.__version__
    '0.1.0'
"""

import importlib
import os

__version__ = "0.1.0"

# TensorFlow's C++ log level is read once, when it loads (checking the backend
# loads it). Without an NVIDIA driver, CUDA builds log an error-level
# "failed call to cuInit" on every run: hide errors there too, not only info
# and warnings. A user's own TF_CPP_MIN_LOG_LEVEL wins.
_HAS_NVIDIA_DRIVER = os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidiactl")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if _HAS_NVIDIA_DRIVER else "3")

from keras_derain._backend import check_backend

check_backend()

# Public name -> module that defines it. Resolved on first access (PEP 562).
_EXPORTS = {
    "DerainGAN": "keras_derain.gan",
    "Derainer": "keras_derain.inference",
    "find_pairs": "keras_derain.data",
    "paired_dataset": "keras_derain.data",
    "synthetic_dataset": "keras_derain.data",
    "render_raindrops": "keras_derain.data",
    "DatasetError": "keras_derain.data",
    "psnr": "keras_derain.metrics",
    "ssim": "keras_derain.metrics",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'keras_derain' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
