"""A mask-guided residual restoration generator: it repairs the drops and leaves the rest alone.

Pix2Pix's U-Net re-synthesises every pixel, so on real photos it shifts
colours where there was no drop and leaves checkerboard texture from its
transposed convolutions. This generator instead predicts, from one small U-Net
trunk,

- a drop mask ``m`` in ``[0, 1]`` (a sigmoid head, supervised by the renderer's
  exact mask when the trainer has one), and
- a correction ``c`` (a linear head),

and returns ``derained = clip(rainy + m * c)``: where the mask is 0 the rainy
pixel passes through unchanged. With ``affine=True`` a third head predicts a
per-pixel gain ``g`` and the correction is ``g * rainy + c``, a local affine
map of the rainy pixels (as a guided filter). With ``global_head=True`` a
fourth head reads the whole photo (the trunk's deepest features, averaged) and
adds a per-photo gain and offset to the correction: the veiling glare of water
on a lens, which lifts the whole frame toward the scattered light, is set by
the whole scene, which no local feature sees. The correction head starts at zero, so the
untrained generator is exactly the identity (as NAFNet's zero-initialised
residual scales). Upsampling is nearest-neighbour resize + convolution (Odena
et al.'s remedy: no transposed convolution, so no checkerboard; Keras'
bilinear ``UpSampling2D`` cannot take the dynamic sizes that tiling needs). Its only
normalisation is a per-pixel LayerNorm over channels (pre-norm in each residual
block and before the heads): it uses no spatial statistics, so a tile gives the
same pixels as the whole photo, and it exports as ONNX ``LayerNormalization``. The mask is a named
layer, ``drop_mask``: :func:`mask_model` gives a model that returns it.

References:
    Qian et al., "Attentive Generative Adversarial Network for Raindrop Removal
    from a Single Image", CVPR 2018 (mask-supervised attention);
    Chen et al., "Simple Baselines for Image Restoration" (NAFNet), ECCV 2022
    (residual output, zero-initialised scales);
    Odena et al., "Deconvolution and Checkerboard Artifacts", Distill 2016.
"""

import keras

MASK_LAYER = "drop_mask"
GAIN_LAYER = "correction_gain"
# The mask times the correction; its second input is the correction itself (ungated).
GATED_LAYER = "gated_correction"
# The global head's layers all start with this; ``train.py --train-only global_`` fits it alone.
GLOBAL_PREFIX = "global_"
GLOBAL_LAYER = "global_gain"


def _conv(filters, name, kernel_size=3, strides=1, zero=False):
    return keras.layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        kernel_initializer="zeros" if zero else "he_normal",
        name=name,
    )


def _norm(name):
    """Per-pixel LayerNorm over channels (NAFNet's LayerNorm2d): no spatial statistics, so tiles equal the whole."""
    return keras.layers.LayerNormalization(axis=-1, epsilon=1e-6, name=name)


def _residual_block(features, filters, name):
    """norm - conv - LeakyReLU - conv, added to the input; the second conv starts at zero (identity block).

    The pre-norm keeps the residual stream's growth from feeding back into
    each block: without it the activations of this trunk grew without bound
    under the restoration preset (to 1e6 by 2,000 steps, with the mask head
    saturated at 0, i.e. a generator stuck at the identity).
    """
    update = _conv(filters, f"{name}_conv1")(_norm(f"{name}_norm")(features))
    update = keras.layers.LeakyReLU(0.2, name=f"{name}_act")(update)
    update = _conv(filters, f"{name}_conv2", zero=True)(update)
    return keras.layers.Add(name=f"{name}_add")([features, update])


def restoration_generator(base_channels=16, depth=4, blocks=1, affine=False, global_head=False,
                          name="restoration_generator"):
    """Build the mask-guided residual generator, rainy -> derained, images in ``[-1, 1]``.

    The trunk works from half resolution down (a 4x4 stride-2 stem, as
    Pix2Pix's first layer), which keeps a 720x480 photo as cheap as the
    Pix2Pix generator; the two heads see the trunk's features enlarged back to
    full resolution next to the rainy pixels themselves.

    Args:
        base_channels: channels at half resolution; doubled at each level down.
        depth: levels of 2x downsampling below half resolution (inputs must be
            multiples of ``2**(depth + 1)``; `keras_derain.inference.Derainer`
            pads as needed).
        blocks: residual blocks per level (and in the bottleneck).
        affine: also predict a per-pixel gain ``g`` (a second zero-initialised
            head), so the correction is ``g * rainy + c``: a local affine map of
            the rainy pixels, as a guided filter or HDRNet's local affine
            model, rather than an offset alone. A defocused drop is a veil,
            ``rainy = (1 - a) clean + a light``, undone by a gain and an offset
            that vary as slowly as the drop, while an offset alone must carry
            the background's own detail. Off: the correction is ``c``.
        global_head: also add a per-photo gain and offset to the correction,
            ``G * rainy + o`` with ``G`` and ``o`` (3 each) read from the trunk's
            deepest features averaged over the photo (a zero-initialised head,
            so it starts as the generator without it). Water on a lens veils
            the whole frame, ``rainy = (1 - v) clean + v light``, by an amount
            and a light set by the whole scene; local features cannot see
            them. Like the other heads it is gated by the mask, so a dry photo
            (mask 0) still passes through. A photo larger than
            `keras_derain.inference.Derainer`'s tile is the one case where
            tiles differ from the whole: each tile reads its own average.
        name: the model's name.

    Returns:
        A functional ``keras.Model`` with one output, the derained image (the
        same contract as `pix2pix_generator`); its layer ``drop_mask`` holds the
        predicted mask (see :func:`mask_model`).

    Example:
        >>> import numpy as np
        >>> generator = restoration_generator(base_channels=8, depth=2)
        >>> rainy = np.random.uniform(-1, 1, (1, 32, 32, 3)).astype("float32")
        >>> bool(np.allclose(generator(rainy), rainy))  # the identity until trained
        True
    """
    if depth < 1 or blocks < 1 or base_channels < 1:
        raise ValueError(f"base_channels, depth and blocks must be positive, got {base_channels}, {depth}, {blocks}")
    rainy = keras.Input((None, None, 3), name="rainy")

    # -- trunk: a small U-Net from half resolution down, skips added ----------------------
    features = _conv(base_channels, "stem", kernel_size=4, strides=2)(rainy)
    features = keras.layers.LeakyReLU(0.2, name="stem_act")(features)
    skips = []
    filters = base_channels
    for level in range(depth):
        for block in range(blocks):
            features = _residual_block(features, filters, f"enc{level}_block{block}")
        skips.append(features)
        filters *= 2
        features = _conv(filters, f"down{level}", kernel_size=2, strides=2)(features)
    for block in range(blocks):
        features = _residual_block(features, filters, f"middle_block{block}")
    deepest = features
    for level in reversed(range(depth)):
        filters //= 2
        features = keras.layers.UpSampling2D(2, interpolation="nearest", name=f"up{level}_resize")(features)
        features = _conv(filters, f"up{level}_conv")(features)
        features = keras.layers.Add(name=f"up{level}_skip")([features, skips[level]])
        for block in range(blocks):
            features = _residual_block(features, filters, f"dec{level}_block{block}")
    features = _norm("head_norm")(features)  # bounded features for the heads
    features = keras.layers.UpSampling2D(2, interpolation="nearest", name="full_resize")(features)
    features = keras.layers.Concatenate(name="with_rainy")([features, rainy])

    # -- heads: the drop mask and a correction, blended into the rainy image ---------------
    mask_logits = keras.layers.Conv2D(
        1, 3, padding="same", bias_initializer=keras.initializers.Constant(-2.0), name="mask_logits"
    )(features)
    mask = keras.layers.Activation("sigmoid", name=MASK_LAYER)(mask_logits)
    correction = _conv(3, "correction", zero=True)(features)
    if affine:
        gain = _conv(3, GAIN_LAYER, zero=True)(features)
        gained = keras.layers.Multiply(name="gained_rainy")([gain, rainy])
        correction = keras.layers.Add(name="affine_correction")([correction, gained])
    if global_head:
        context = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{GLOBAL_PREFIX}pool")(deepest)
        context = keras.layers.Dense(2 * base_channels, name=f"{GLOBAL_PREFIX}dense")(_norm(f"{GLOBAL_PREFIX}norm")(context))
        context = keras.layers.LeakyReLU(0.2, name=f"{GLOBAL_PREFIX}act")(context)
        global_gain = keras.layers.Dense(3, kernel_initializer="zeros", name=GLOBAL_LAYER)(context)  # [B, 1, 1, 3]
        global_offset = keras.layers.Dense(3, kernel_initializer="zeros", name=f"{GLOBAL_PREFIX}offset")(context)
        gained = keras.layers.Multiply(name=f"{GLOBAL_PREFIX}gained_rainy")([global_gain, rainy])
        correction = keras.layers.Add(name=f"{GLOBAL_PREFIX}correction")([correction, gained, global_offset])
    mask3 = keras.layers.Concatenate(name="mask_rgb")([mask, mask, mask])
    gated = keras.layers.Multiply(name=GATED_LAYER)([mask3, correction])
    derained = keras.layers.Add(name="residual")([rainy, gated])
    derained = keras.layers.Activation("hard_tanh", name="derained", dtype="float32")(derained)
    return keras.Model(rainy, derained, name=name)


def has_mask(generator):
    """Whether a generator has a drop-mask head (a layer named ``drop_mask``)."""
    return any(layer.name == MASK_LAYER for layer in generator.layers)


def has_affine_head(generator):
    """Whether a generator has the local affine head (``restoration_generator(affine=True)``)."""
    return any(layer.name == GAIN_LAYER for layer in generator.layers)


def has_global_head(generator):
    """Whether a generator has the global head (``restoration_generator(global_head=True)``)."""
    return any(layer.name == GLOBAL_LAYER for layer in generator.layers)


def mask_model(generator):
    """A model ``rainy -> (derained, mask)`` sharing the generator's weights.

    Raises:
        ValueError: the generator has no ``drop_mask`` layer.

    Example:
        >>> generator = restoration_generator(base_channels=4, depth=2)
        >>> both = mask_model(generator)
        >>> [tuple(output.shape) for output in both.outputs]
        [(None, None, None, 3), (None, None, None, 1)]
    """
    if not has_mask(generator):
        raise ValueError(f"generator {generator.name!r} has no '{MASK_LAYER}' layer (no mask head)")
    return keras.Model(
        generator.input, [generator.outputs[0], generator.get_layer(MASK_LAYER).output],
        name=f"{generator.name}_with_mask",
    )


def ungated_model(generator):
    """A model ``rainy -> (derained, mask, rainy + correction)`` sharing the generator's weights.

    The third output is the correction applied in full, as if the mask were 1
    everywhere. The blend ``rainy + mask * correction`` leaves the correction
    free wherever the mask is near 0, so a soft or false mask applies part of a
    drop's correction to pixels that were right; `DerainGAN`'s ``ungated_weight``
    supervises this output against the clean image too, so the correction is
    right where there is no drop.

    Raises:
        ValueError: the generator has no mask-gated correction.

    Example:
        >>> generator = restoration_generator(base_channels=4, depth=2)
        >>> [tuple(output.shape) for output in ungated_model(generator).outputs]
        [(None, None, None, 3), (None, None, None, 1), (None, None, None, 3)]
    """
    if not any(layer.name == GATED_LAYER for layer in generator.layers):
        raise ValueError(f"generator {generator.name!r} has no mask-gated correction (no '{GATED_LAYER}' layer)")
    correction = generator.get_layer(GATED_LAYER).input[1]
    ungated = keras.layers.Add(name="ungated", dtype="float32")([generator.input, correction])
    return keras.Model(generator.input, [*mask_model(generator).outputs, ungated], name=f"{generator.name}_ungated")


def mask_image_model(generator):
    """A model ``rainy -> drop mask as an RGB image in [-1, 1]`` (-1: dry, 1: drop), sharing the weights.

    The mask, grey and three channels wide, keeps the photo-in, photo-out
    contract, so `keras_derain.inference.Derainer` tiles and writes it like a
    derained photo (``Derainer(path, output="mask")``, ``predict --save-mask``).
    Only the mask head is computed, not the correction.

    Raises:
        ValueError: the generator has no ``drop_mask`` layer.

    Example:
        >>> generator = restoration_generator(base_channels=4, depth=2)
        >>> tuple(mask_image_model(generator).outputs[0].shape)
        (None, None, None, 3)
    """
    if not has_mask(generator):
        raise ValueError(f"generator {generator.name!r} has no '{MASK_LAYER}' layer (no mask head)")
    mask = generator.get_layer(MASK_LAYER).output
    grey = keras.layers.Concatenate(name="mask_grey")([mask, mask, mask])
    signed = keras.layers.Rescaling(2.0, offset=-1.0, name="mask_signed", dtype="float32")(grey)
    return keras.Model(generator.inputs, signed, name=f"{generator.name}_mask")
