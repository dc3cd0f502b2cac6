"""PSNR and SSIM, as the deraining literature computes them, for tensors and for ``fit``.

Conventions (say which one a number uses):

- **Y channel** (``y_channel=True``), the Raindrop papers' convention: the
  official evaluation converts uint8 RGB to OpenCV's *full-range* YCrCb
  (``Y = 0.299 R + 0.587 G + 0.114 B``, rounded to uint8) and runs
  scikit-image's ``peak_signal_noise_ratio`` / ``structural_similarity`` with
  their default settings on the uint8 Y images. Here, integer inputs are
  rounded to integer Y exactly so; float inputs keep a float Y.
- **RGB** (``y_channel=False``): PSNR over all pixels and channels; SSIM per
  channel, then averaged (scikit-image with ``channel_axis=-1``).
- SSIM is scikit-image's default: a 7x7 uniform window, sample covariance,
  ``K1 = 0.01``, ``K2 = 0.03``, averaged over the window positions that lie
  inside the image. (``tf.image.ssim`` uses an 11x11 Gaussian window and gives
  other numbers; it is not used.)
- ``crop_border`` pixels are removed from every side first (BasicSR's option).
- Identical images give ``PSNR = inf``; inputs of different shapes raise.

Functions take HxWxC or NxHxWxC tensors in ``[0, max_val]`` and return one
value per image (a scalar for a single image).

Example:
    >>> import numpy as np
    >>> from keras_derain.metrics import psnr
    >>> a = np.zeros((8, 8, 3), np.uint8); b = a.copy(); b[0, 0, 0] = 255
    >>> round(float(psnr(a, b, 255)), 2)
    22.83
"""

import keras
import tensorflow as tf

_Y_WEIGHTS = (0.299, 0.587, 0.114)
_SSIM_WINDOW = 7
_SSIM_K1, _SSIM_K2 = 0.01, 0.03


def _prepare(a, b, crop_border, y_channel):
    a = tf.convert_to_tensor(a)
    b = tf.convert_to_tensor(b)
    if a.shape.rank is not None and b.shape.rank is not None and a.shape != b.shape:
        raise ValueError(f"images have different shapes: {a.shape} and {b.shape}")
    tf.debugging.assert_equal(tf.shape(a), tf.shape(b), message="images have different shapes")
    single = a.shape.rank == 3
    if a.shape.rank not in (3, 4):
        raise ValueError(f"expected HxWxC or NxHxWxC images, got shape {a.shape}")
    if single:
        a, b = a[None], b[None]
    integer = a.dtype.is_integer
    # Integer images (the evaluation path) in float64, so Y rounds exactly as
    # OpenCV's; float images (every training step) in float32, which is fast.
    dtype = tf.float64 if integer or a.dtype == tf.float64 else tf.float32
    a = tf.cast(a, dtype)
    b = tf.cast(b, dtype)
    if crop_border:
        a = a[:, crop_border:-crop_border, crop_border:-crop_border, :]
        b = b[:, crop_border:-crop_border, crop_border:-crop_border, :]
    if y_channel:
        a, b = rgb_to_y(a, integer), rgb_to_y(b, integer)
    return a, b, single


def rgb_to_y(rgb, rounded=False):
    """OpenCV's full-range Y of an RGB tensor (..., 3) -> (..., 1).

    Args:
        rgb: float tensor, any range.
        rounded: round to integers, as OpenCV does for uint8 images.
    """
    weights = tf.constant(_Y_WEIGHTS, dtype=rgb.dtype)
    y = tf.reduce_sum(rgb * weights, axis=-1, keepdims=True)
    return tf.round(y) if rounded else y


def psnr(a, b, max_val, *, y_channel=False, crop_border=0):
    """Peak signal-to-noise ratio in dB, per image.

    Args:
        a, b: images HxWx3 or NxHxWx3 in ``[0, max_val]`` (uint8 or float).
        max_val: the peak value, e.g. 255 for uint8 or 1.0 for [0, 1] floats.
        y_channel: measure on the Y channel (the Raindrop papers' convention).
        crop_border: pixels removed from each side first.

    Returns:
        float32 tensor: a scalar for one image, ``[N]`` for a batch; ``inf`` where
        the images are identical.

    Example:
        >>> import numpy as np
        >>> from keras_derain.metrics import psnr
        >>> clean = np.full((4, 4, 3), 100, np.uint8)
        >>> float(psnr(clean, clean + 10, 255))  # doctest: +ELLIPSIS
        28.13...
    """
    a, b, single = _prepare(a, b, crop_border, y_channel)
    mse = tf.reduce_mean(tf.square(a - b), axis=[1, 2, 3])
    max_val = tf.cast(max_val, mse.dtype)
    value = tf.cast(10.0 * tf.math.log(max_val * max_val / mse) / tf.math.log(tf.constant(10.0, mse.dtype)), tf.float32)
    return value[0] if single else value


def ssim(a, b, max_val, *, y_channel=False, crop_border=0):
    """Structural similarity (scikit-image's default settings), per image.

    Args:
        a, b: images HxWx3 or NxHxWx3 in ``[0, max_val]``; at least 7x7.
        max_val: the data range, e.g. 255 for uint8 or 1.0 for [0, 1] floats.
        y_channel: measure on the Y channel (the Raindrop papers' convention).
        crop_border: pixels removed from each side first.

    Returns:
        float32 tensor: a scalar for one image, ``[N]`` for a batch.

    Example:
        >>> import numpy as np
        >>> from keras_derain.metrics import ssim
        >>> image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
        >>> float(ssim(image, image, 255))
        1.0
    """
    a, b, single = _prepare(a, b, crop_border, y_channel)
    # float32 on [0, 1] data: within 1e-4 of a float64 computation, and ~100x
    # faster on a CPU (this runs on every training step).
    max_val = tf.cast(max_val, a.dtype)
    a = tf.cast(a / max_val, tf.float32)
    b = tf.cast(b / max_val, tf.float32)
    # The mean of a uniform window over each fully-inside position: the same
    # values as scikit-image's uniform_filter once its 3-pixel border is cropped.
    # One depthwise convolution filters all five maps at once.
    stacked = tf.concat([a, b, a * a, b * b, a * b], axis=-1)
    window = tf.ones([_SSIM_WINDOW, _SSIM_WINDOW, stacked.shape[-1], 1], tf.float32) / _SSIM_WINDOW**2
    means = tf.nn.depthwise_conv2d(stacked, window, strides=[1, 1, 1, 1], padding="VALID")
    mean_a, mean_b, mean_aa, mean_bb, mean_ab = tf.split(means, 5, axis=-1)

    covariance_norm = _SSIM_WINDOW**2 / (_SSIM_WINDOW**2 - 1.0)
    var_a = covariance_norm * (mean_aa - mean_a * mean_a)
    var_b = covariance_norm * (mean_bb - mean_b * mean_b)
    cov_ab = covariance_norm * (mean_ab - mean_a * mean_b)
    c1 = _SSIM_K1**2
    c2 = _SSIM_K2**2
    ssim_map = ((2 * mean_a * mean_b + c1) * (2 * cov_ab + c2)) / (
        (mean_a**2 + mean_b**2 + c1) * (var_a + var_b + c2)
    )
    value = tf.cast(tf.reduce_mean(ssim_map, axis=[1, 2, 3]), tf.float32)
    return value[0] if single else value


def _to_unit_range(images, value_range):
    low, high = value_range
    images = tf.cast(images, tf.float32)
    return tf.clip_by_value((images - low) / (high - low), 0.0, 1.0)


class _ImageQuality(keras.metrics.Mean):
    """Mean of a per-image quality measure over everything seen this epoch."""

    measure = None

    def __init__(self, name, value_range=(-1.0, 1.0), y_channel=False, crop_border=0, **kwargs):
        super().__init__(name=name, **kwargs)
        self.value_range = tuple(value_range)
        self.y_channel = y_channel
        self.crop_border = crop_border

    def _measure(self, y_true, y_pred):
        return type(self).measure(
            _to_unit_range(y_true, self.value_range),
            _to_unit_range(y_pred, self.value_range),
            1.0,
            y_channel=self.y_channel,
            crop_border=self.crop_border,
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(self._measure(y_true, y_pred), sample_weight=sample_weight)

    def get_config(self):
        config = super().get_config()
        config.update(
            value_range=self.value_range, y_channel=self.y_channel, crop_border=self.crop_border
        )
        return config


@keras.saving.register_keras_serializable(package="keras_derain")
class PSNR(_ImageQuality):
    """Mean PSNR (dB) for ``fit``/``evaluate``; images in ``value_range`` (default [-1, 1]).

    Each image's PSNR is capped at ``max_db`` (default 100 dB) before the mean:
    identical images (a dry training pair that a restoring generator copies) have an
    infinite PSNR, which would make the whole epoch's mean ``inf``. The plain
    function :func:`psnr` is not capped.

    Example:
        >>> import numpy as np
        >>> from keras_derain.metrics import PSNR
        >>> metric = PSNR()
        >>> metric.update_state(np.zeros((2, 8, 8, 3)), np.zeros((2, 8, 8, 3)))
        >>> float(metric.result())
        100.0
    """

    measure = staticmethod(psnr)

    def __init__(self, name="psnr", max_db=100.0, **kwargs):
        super().__init__(name=name, **kwargs)
        self.max_db = float(max_db)

    def update_state(self, y_true, y_pred, sample_weight=None):
        values = tf.minimum(self._measure(y_true, y_pred), self.max_db)
        return keras.metrics.Mean.update_state(self, values, sample_weight=sample_weight)

    def get_config(self):
        return {**super().get_config(), "max_db": self.max_db}


@keras.saving.register_keras_serializable(package="keras_derain")
class SSIM(_ImageQuality):
    """Mean SSIM for ``fit``/``evaluate``; images in ``value_range`` (default [-1, 1]).

    Example:
        >>> from keras_derain.metrics import SSIM
        >>> metric = SSIM()
    """

    measure = staticmethod(ssim)

    def __init__(self, name="ssim", **kwargs):
        super().__init__(name=name, **kwargs)
