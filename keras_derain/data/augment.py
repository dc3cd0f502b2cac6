"""Training-time geometry: random crops, flips and resize jitter, as pure TensorFlow ops.

A rainy image and its clean partner are stacked along the channel axis
(HxWx6) before these ops run, so both are cut by the *same* window and
flipped together by construction. Randomness is stateless, driven by a
``[2]`` int seed per element, so a pipeline is reproducible given its seed.
"""

import tensorflow as tf


def to_signed(image):
    """uint8 (or float in [0, 255]) -> float32 in [-1, 1]."""
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def random_crop_flip(image, crop_size, seed, *, flip=True, resize_jitter=1.0):
    """Random crop (and horizontal flip) of a float image, HxWxC -> crop x crop x C.

    Args:
        image: float32 tensor HxWxC (any C: stack paired images along channels).
        crop_size: side of the square crop in pixels.
        seed: int tensor of shape ``[2]`` for the stateless random ops.
        flip: flip left-right with probability 0.5.
        resize_jitter: before cropping, scale the image by a random factor in
            ``[1, resize_jitter]`` (Pix2Pix's 286 -> 256 jitter is about 1.12).
            Images whose short side is below ``crop_size`` are always scaled up
            to fit.

    Example:
        >>> import tensorflow as tf
        >>> pair = tf.zeros([480, 720, 6])
        >>> random_crop_flip(pair, 256, tf.constant([1, 2])).shape
        TensorShape([256, 256, 6])
    """
    scale_seed, crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    short_side = tf.cast(tf.minimum(height, width), tf.float32)
    fit = tf.maximum(1.0, crop_size / short_side)
    scale = fit
    if resize_jitter > 1.0:
        scale = fit * tf.random.stateless_uniform([], scale_seed, 1.0, resize_jitter)
    new_size = tf.cast(
        tf.math.ceil(tf.cast(tf.stack([height, width]), tf.float32) * scale), tf.int32
    )
    new_size = tf.maximum(new_size, crop_size)
    image = tf.cond(
        scale > 1.0,
        lambda: tf.image.resize(image, new_size, method="bilinear"),
        lambda: image,
    )
    channels = image.shape[-1]
    image = tf.image.stateless_random_crop(image, [crop_size, crop_size, channels], crop_seed)
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    return image


def random_crop_window(image, crop_size, seed, *, flip=True, resize_jitter=1.0):
    """Like :func:`random_crop_flip`, and also where the crop lies in the (flipped) image.

    The flip is applied to the whole image before cropping, so the window
    refers to the flipped image: ``tf.image.flip_left_right(image)`` when
    ``flipped`` is true.

    Returns:
        ``(crop, window, flipped)``: the crop, ``[top, left, height, width]`` as
        fractions of the image's sides (float32), and whether it was flipped.

    Example:
        >>> import tensorflow as tf
        >>> crop, window, flipped = random_crop_window(tf.zeros([480, 720, 3]), 240, tf.constant([1, 2]))
        >>> crop.shape, [round(float(value), 3) for value in window[2:]]
        (TensorShape([240, 240, 3]), [0.5, 0.333])
    """
    scale_seed, crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    flipped = tf.constant(False)
    if flip:
        flipped = tf.random.stateless_uniform([], flip_seed) < 0.5
        image = tf.cond(flipped, lambda: tf.image.flip_left_right(image), lambda: image)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    short_side = tf.cast(tf.minimum(height, width), tf.float32)
    scale = tf.maximum(1.0, crop_size / short_side)
    if resize_jitter > 1.0:
        scale = scale * tf.random.stateless_uniform([], scale_seed, 1.0, resize_jitter)
    new_size = tf.maximum(
        tf.cast(tf.math.ceil(tf.cast(tf.stack([height, width]), tf.float32) * scale), tf.int32), crop_size
    )
    image = tf.cond(scale > 1.0, lambda: tf.image.resize(image, new_size, method="bilinear"), lambda: image)
    size = tf.shape(image)[:2]
    corner = tf.random.stateless_uniform([2], crop_seed, 0, tf.int32.max, dtype=tf.int32) % (size - crop_size + 1)
    crop = image[corner[0] : corner[0] + crop_size, corner[1] : corner[1] + crop_size]
    crop.set_shape([crop_size, crop_size, image.shape[-1]])
    size = tf.cast(size, tf.float32)
    window = tf.stack([tf.cast(corner[0], tf.float32) / size[0], tf.cast(corner[1], tf.float32) / size[1],
                       crop_size / size[0], crop_size / size[1]])
    return crop, window, flipped


def element_seeds(seed):
    """An endless dataset of ``[2]`` int64 seeds, new each epoch, reproducible given ``seed``.

    Zip it with a dataset to give each element its own stateless seed.
    """
    return tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
