"""Pix2Pix networks: the U-Net generator and the PatchGAN discriminator.

Both follow the reference PyTorch code of Isola et al. (``UnetGenerator`` and
``NLayerDiscriminator``) layer for layer: 4x4 kernels, stride 2, LeakyReLU 0.2
in the encoder, ReLU in the decoder, N(0, 0.02) weights.
"""

import math

import keras

from keras_derain.models.layers import check_norm, down_conv, norm_layer, up_conv

DEFAULT_DEPTH = 8  # the reference "unet_256": 256 -> 1x1 at the bottleneck
MAX_CHANNEL_MULTIPLIER = 8
DROPOUT_BLOCKS = 3


def _channels(base_channels, level):
    """Channels of encoder level ``level`` (1 = outermost): base * 2^(level-1), capped at 8x."""
    return base_channels * min(2 ** (level - 1), MAX_CHANNEL_MULTIPLIER)


def _resolve_depth(depth, input_shape):
    height, width = input_shape[0], input_shape[1]
    static = height is not None and width is not None
    if depth is None:
        if not static:
            return DEFAULT_DEPTH
        # A static size: the deepest U-Net (at most 8) whose bottleneck is whole.
        common = math.gcd(height, width)
        depth = 0
        while depth < DEFAULT_DEPTH and common % 2 ** (depth + 1) == 0:
            depth += 1
    if depth < 2:
        raise ValueError(f"depth must be at least 2 (H, W multiples of 4), got {depth}")
    if static and (height % 2**depth or width % 2**depth):
        raise ValueError(f"input_shape {input_shape}: H and W must be multiples of {2**depth}")
    return depth


def pix2pix_generator(
    *,
    base_channels=32,
    depth=None,
    norm="instance",
    dropout=0.5,
    input_shape=(None, None, 3),
):
    """Pix2Pix U-Net generator: rainy image in [-1, 1] -> derained image in [-1, 1].

    ``depth`` 4x4 stride-2 convolutions (LeakyReLU 0.2, no norm on the
    outermost and the innermost) halve the image down to the bottleneck;
    as many 4x4 stride-2 transposed convolutions (ReLU before, norm after)
    double it back, each taking the encoder activation of its level
    concatenated with the decoder's (skip connections); tanh output.
    Channels are ``base_channels * 2^level``, capped at ``8 * base_channels``.
    Dropout follows the norm in the three decoder blocks next to the innermost
    one (the reference ``unet_256``; its ``unet_128`` has two).

    The network is fully convolutional but its input's height and width must
    be multiples of ``2 ** depth`` (256 at the default depth 8; see
    `required_multiple`); padding other sizes is the inference path's job.
    ``depth=None`` picks 8, the reference ``unet_256``, unless ``input_shape``
    gives a static size: then the deepest U-Net (at most 8) that divides it,
    which is 7, the reference ``unet_128`` (1x1 bottleneck), for 128x128
    crops. A model trained on 128 crops with depth 7 needs inputs padded to
    multiples of 128 only.

    The default configuration (depth 8, 32 base channels, instance norm)
    has 13,608,547 parameters (``base_channels=64``, the paper's, 54,414,531).

    Args:
        base_channels: channels of the outermost level (the reference ``ngf``).
        depth: number of stride-2 levels; ``None`` resolves as above.
        norm: "instance" (``GroupNormalization(groups=-1)``, with affine; the
            reference's choice for Pix2Pix), "batch", or "none".
        dropout: dropout rate in the three blocks next to the bottleneck
            (inactive at inference, ``training=False``); 0 disables it.
        input_shape: ``(height, width, 3)``; ``None`` sizes for any input.

    Returns:
        A functional ``keras.Model`` named "pix2pix_generator".

    Example:
        >>> import numpy as np
        >>> generator = pix2pix_generator(base_channels=8, depth=5)
        >>> generator.predict(np.zeros((1, 64, 96, 3), "float32"), verbose=0).shape
        (1, 64, 96, 3)

    Reference:
        Isola et al., "Image-to-Image Translation with Conditional Adversarial
        Networks", CVPR 2017 (U-Net: Ronneberger et al., MICCAI 2015).
    """
    check_norm(norm)
    depth = _resolve_depth(depth, input_shape)
    has_norm = norm != "none"
    dropout_levels = set(range(depth - 1, max(depth - 1 - DROPOUT_BLOCKS, 1), -1))

    rainy = keras.Input(shape=input_shape, name="rainy")

    # --- Encoder: level 1 (no norm) ... level `depth` (the bottleneck, no norm).
    skips = []
    features = rainy
    for level in range(1, depth + 1):
        prefix = f"encoder_{level}"
        if level > 1:
            features = keras.layers.LeakyReLU(0.2, name=f"{prefix}_lrelu")(features)
        normalized = has_norm and 1 < level < depth
        features = down_conv(_channels(base_channels, level), not normalized, f"{prefix}_conv")(
            features
        )
        if normalized:
            features = norm_layer(norm, f"{prefix}_norm")(features)
        skips.append(features)

    # --- Decoder: level `depth` up to level 2, each output concatenated with the
    # encoder activation of the level above it.
    for level in range(depth, 1, -1):
        prefix = f"decoder_{level}"
        features = keras.layers.ReLU(name=f"{prefix}_relu")(features)
        features = up_conv(_channels(base_channels, level - 1), not has_norm, f"{prefix}_upconv")(
            features
        )
        if has_norm:
            features = norm_layer(norm, f"{prefix}_norm")(features)
        if dropout and level in dropout_levels:
            features = keras.layers.Dropout(dropout, name=f"{prefix}_dropout")(features)
        features = keras.layers.Concatenate(name=f"{prefix}_skip")([skips[level - 2], features])

    # --- Output: level 1 back to full size and 3 channels.
    features = keras.layers.ReLU(name="decoder_1_relu")(features)
    features = up_conv(input_shape[-1], True, "decoder_1_upconv")(features)
    derained = keras.layers.Activation("tanh", dtype="float32", name="derained")(features)
    return keras.Model(rainy, derained, name="pix2pix_generator")


def required_multiple(generator):
    """The number that a generator's input height and width must be multiples of.

    The product of the strides of its strided convolutions (``2 ** depth`` for
    `pix2pix_generator`); read from the layers, so it works on a reloaded model.

    Example:
        >>> required_multiple(pix2pix_generator(base_channels=4, depth=5))
        32
    """
    multiple = 1
    for layer in generator.layers:
        if isinstance(layer, keras.layers.Conv2D):
            multiple *= layer.strides[0]
    return multiple


def patchgan_receptive_field(n_layers=3):
    """Side in pixels of the input patch that one PatchGAN logit sees (70 for 3 layers).

    Example:
        >>> patchgan_receptive_field(3)
        70
    """
    strides = [2] * n_layers + [1, 1]
    field = 1
    for stride in reversed(strides):
        field = (field - 1) * stride + 4
    return field


def pix2pix_discriminator(
    *, base_channels=32, n_layers=3, norm="instance", input_shape=(None, None, 3)
):
    """PatchGAN discriminator on (rainy, candidate) pairs: one logit per image patch.

    Called as ``discriminator([rainy, candidate])``; the two images are
    concatenated along channels, then ``n_layers`` 4x4 stride-2 convolutions
    and two 4x4 stride-1 ones (each padded by 1 pixel, as in the reference
    ``NLayerDiscriminator``; LeakyReLU 0.2; norm on all but the first and the
    last) give a map of logits (no sigmoid) whose receptive field is 70x70
    pixels for ``n_layers=3`` (see `patchgan_receptive_field`): 30x30 logits
    for a 256x256 pair.

    The default configuration (32 base channels, 3 layers, instance norm) has
    696,225 parameters (``base_channels=64``, the paper's, 2,768,705).

    Args:
        base_channels: channels of the first convolution (the reference ``ndf``).
        n_layers: number of stride-2 convolutions.
        norm: "instance", "batch", or "none".
        input_shape: shape of each of the two images.

    Returns:
        A functional ``keras.Model`` with inputs ``[rainy, candidate]``, named
        "pix2pix_discriminator".

    Example:
        >>> import numpy as np
        >>> discriminator = pix2pix_discriminator(base_channels=8)
        >>> pair = [np.zeros((1, 256, 256, 3), "float32")] * 2
        >>> discriminator.predict(pair, verbose=0).shape
        (1, 30, 30, 1)

    Reference:
        Isola et al., "Image-to-Image Translation with Conditional Adversarial
        Networks", CVPR 2017.
    """
    check_norm(norm)
    has_norm = norm != "none"
    rainy = keras.Input(shape=input_shape, name="rainy")
    candidate = keras.Input(shape=input_shape, name="candidate")
    features = keras.layers.Concatenate(name="pair")([rainy, candidate])

    # (channels, stride, normalised) of each convolution but the last.
    plan = [(base_channels, 2, False)]
    plan += [(_channels(base_channels, n + 1), 2, has_norm) for n in range(1, n_layers)]
    plan += [(_channels(base_channels, n_layers + 1), 1, has_norm)]
    for index, (filters, strides, normalized) in enumerate(plan, start=1):
        prefix = f"block_{index}"
        features = keras.layers.ZeroPadding2D(1, name=f"{prefix}_pad")(features)
        conv = down_conv(filters, not normalized, f"{prefix}_conv", strides, "valid")
        features = conv(features)
        if normalized:
            features = norm_layer(norm, f"{prefix}_norm")(features)
        features = keras.layers.LeakyReLU(0.2, name=f"{prefix}_lrelu")(features)

    features = keras.layers.ZeroPadding2D(1, name="logits_pad")(features)
    features = down_conv(1, True, "logits_conv", 1, "valid")(features)
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(features)
    return keras.Model([rainy, candidate], logits, name="pix2pix_discriminator")


__all__ = [
    "pix2pix_generator",
    "pix2pix_discriminator",
    "required_multiple",
    "patchgan_receptive_field",
]
