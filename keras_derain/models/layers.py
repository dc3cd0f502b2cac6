"""Blocks shared by the Pix2Pix and cGAN builders.

Only stock Keras layers: instance norm is ``GroupNormalization(groups=-1)`` and
upsampling is ``Conv2DTranspose``. Custom replacements (a ``tf.nn.moments``
instance norm, a conv + pixel-shuffle transposed convolution) compute the same
functions but were no faster on CPU with TensorFlow 2.21 and oneDNN; see
``benchmarks/results/pix2pix_speed.md``.
"""

import keras

# Pix2Pix (Isola et al.) draws every convolution kernel from N(0, 0.02).
CONV_INIT_STDDEV = 0.02
NORMS = ("instance", "batch", "none")


def conv_initializer():
    """A fresh N(0, 0.02) initializer (one per layer, so layers do not share draws)."""
    return keras.initializers.RandomNormal(mean=0.0, stddev=CONV_INIT_STDDEV)


def check_norm(norm):
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def norm_layer(norm, name):
    """A normalisation layer for ``norm``, or None for "none".

    "instance": per sample and channel over H and W, with a per-channel affine
    ``gamma``, ``beta`` (``GroupNormalization(groups=-1)``); epsilon 1e-5 as
    PyTorch's ``InstanceNorm2d`` in the reference Pix2Pix (Keras' default is
    1e-3). "batch": as the reference code, gamma ~ N(1, 0.02), PyTorch's
    momentum 0.1 (0.9 in Keras' convention) and epsilon 1e-5.
    """
    check_norm(norm)
    if norm == "instance":
        return keras.layers.GroupNormalization(groups=-1, epsilon=1e-5, name=name)
    if norm == "batch":
        return keras.layers.BatchNormalization(
            momentum=0.9,
            epsilon=1e-5,
            gamma_initializer=keras.initializers.RandomNormal(1.0, CONV_INIT_STDDEV),
            name=name,
        )
    return None


def down_conv(filters, use_bias, name, strides=2, padding="same"):
    """4x4 convolution, stride 2 by default, N(0, 0.02) kernel."""
    return keras.layers.Conv2D(
        filters,
        4,
        strides=strides,
        padding=padding,
        use_bias=use_bias,
        kernel_initializer=conv_initializer(),
        name=name,
    )


def up_conv(filters, use_bias, name):
    """4x4 stride-2 transposed convolution doubling H and W (PyTorch's padding=1)."""
    return keras.layers.Conv2DTranspose(
        filters,
        4,
        strides=2,
        padding="same",
        use_bias=use_bias,
        kernel_initializer=conv_initializer(),
        name=name,
    )
