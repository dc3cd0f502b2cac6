"""The study's conditional GAN: an encoder-decoder generator through a dense latent code.

Unlike the Pix2Pix U-Net, the generator has no skip connections: everything it
keeps of the rainy image passes through a ``latent_dim`` vector, so it works
at one fixed image size. Its discriminator judges whole images, conditioned
on the rainy one.
"""

import keras

from keras_derain.models.layers import check_norm, conv_initializer, down_conv, norm_layer, up_conv

MAX_CHANNEL_MULTIPLIER = 8
BOTTLENECK_SIZE = 4


def _levels(image_size):
    """Stride-2 levels from ``image_size`` down to the bottleneck (at most 4 pixels, or odd)."""
    if image_size < 2 * BOTTLENECK_SIZE or image_size % 2:
        raise ValueError(f"image_size must be even and at least 8, got {image_size}")
    levels, size = 0, image_size
    while size > BOTTLENECK_SIZE and size % 2 == 0:
        levels, size = levels + 1, size // 2
    return levels, size


def _channels(base_channels, level):
    return base_channels * min(2 ** (level - 1), MAX_CHANNEL_MULTIPLIER)


def _encoder(images, base_channels, levels, norm, prefix):
    """4x4 stride-2 convolutions, norm (not on the first), LeakyReLU 0.2."""
    features = images
    for level in range(1, levels + 1):
        normalized = norm != "none" and level > 1
        conv = down_conv(_channels(base_channels, level), not normalized, f"{prefix}_{level}_conv")
        features = conv(features)
        if normalized:
            features = norm_layer(norm, f"{prefix}_{level}_norm")(features)
        features = keras.layers.LeakyReLU(0.2, name=f"{prefix}_{level}_lrelu")(features)
    return features


def cgan_generator(*, image_size=256, base_channels=32, latent_dim=128, norm="instance"):
    """cGAN generator: rainy image -> encoder -> dense latent code -> decoder -> derained.

    The encoder halves the image with 4x4 stride-2 convolutions (LeakyReLU
    0.2) down to 4x4 pixels (256 -> 4: six levels), a Dense layer maps the
    flattened features to a ``latent_dim`` code, a second Dense layer maps it
    back to the bottleneck, and 4x4 stride-2 transposed convolutions (norm,
    ReLU) double it up to the image; tanh output in [-1, 1]. Channels are
    ``base_channels * 2^level``, capped at ``8 * base_channels``.

    The default configuration (256x256, 32 base channels, latent 128,
    instance norm) has 6,629,859 parameters.

    Args:
        image_size: side of the square input and output images; even, at
            least 8 (halved until 4 pixels or odd, so 96 -> 3x3 bottleneck).
        base_channels: channels of the outermost convolution.
        latent_dim: size of the latent code.
        norm: "instance", "batch", or "none".

    Returns:
        A functional ``keras.Model`` named "cgan_generator".

    Example:
        >>> import numpy as np
        >>> generator = cgan_generator(image_size=32, base_channels=4, latent_dim=8)
        >>> generator.predict(np.zeros((2, 32, 32, 3), "float32"), verbose=0).shape
        (2, 32, 32, 3)

    Reference:
        Mirza and Osindero, "Conditional Generative Adversarial Nets",
        arXiv:1411.1784, 2014.
    """
    check_norm(norm)
    levels, bottleneck = _levels(image_size)
    rainy = keras.Input(shape=(image_size, image_size, 3), name="rainy")

    # --- Encoder to the latent code.
    features = _encoder(rainy, base_channels, levels, norm, "encoder")
    features = keras.layers.Flatten(name="encoder_flatten")(features)
    latent = keras.layers.Dense(
        latent_dim, kernel_initializer=conv_initializer(), name="latent"
    )(features)

    # --- Decoder from the latent code.
    channels = _channels(base_channels, levels)
    features = keras.layers.Dense(
        bottleneck * bottleneck * channels,
        kernel_initializer=conv_initializer(),
        name="decoder_dense",
    )(latent)
    features = keras.layers.Reshape((bottleneck, bottleneck, channels), name="decoder_reshape")(
        features
    )
    features = keras.layers.ReLU(name="decoder_dense_relu")(features)
    for level in range(levels, 1, -1):
        prefix = f"decoder_{level}"
        conv = up_conv(_channels(base_channels, level - 1), norm == "none", f"{prefix}_upconv")
        features = conv(features)
        if norm != "none":
            features = norm_layer(norm, f"{prefix}_norm")(features)
        features = keras.layers.ReLU(name=f"{prefix}_relu")(features)
    features = up_conv(3, True, "decoder_1_upconv")(features)
    derained = keras.layers.Activation("tanh", dtype="float32", name="derained")(features)
    return keras.Model(rainy, derained, name="cgan_generator")


def cgan_discriminator(*, image_size=256, base_channels=32, norm="instance"):
    """cGAN discriminator: one real/fake logit for a whole image, given the rainy one.

    Called as ``discriminator([rainy, candidate])``: the pair is concatenated
    along channels, encoded as in `cgan_generator` down to 4x4 pixels,
    flattened, and a Dense layer gives one logit (no sigmoid) per image.

    The default configuration (256x256, 32 base channels, instance norm) has
    2,794,401 parameters.

    Args:
        image_size: side of the square images.
        base_channels: channels of the first convolution.
        norm: "instance", "batch", or "none".

    Returns:
        A functional ``keras.Model`` with inputs ``[rainy, candidate]``, named
        "cgan_discriminator".

    Example:
        >>> import numpy as np
        >>> discriminator = cgan_discriminator(image_size=32, base_channels=4)
        >>> pair = [np.zeros((2, 32, 32, 3), "float32")] * 2
        >>> discriminator.predict(pair, verbose=0).shape
        (2, 1)

    Reference:
        Mirza and Osindero, "Conditional Generative Adversarial Nets",
        arXiv:1411.1784, 2014.
    """
    check_norm(norm)
    levels, _ = _levels(image_size)
    shape = (image_size, image_size, 3)
    rainy = keras.Input(shape=shape, name="rainy")
    candidate = keras.Input(shape=shape, name="candidate")
    features = keras.layers.Concatenate(name="pair")([rainy, candidate])
    features = _encoder(features, base_channels, levels, norm, "block")
    features = keras.layers.Flatten(name="flatten")(features)
    features = keras.layers.Dense(1, kernel_initializer=conv_initializer(), name="logit")(
        features
    )
    logits = keras.layers.Activation("linear", dtype="float32", name="logits")(features)
    return keras.Model([rainy, candidate], logits, name="cgan_discriminator")
