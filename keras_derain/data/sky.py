"""Procedural cloudy skies: backgrounds that teach a model that clouds are not drops.

Real photos are full of bright, soft, white shapes that are not raindrops:
clouds. Our clean photos (Kodak, CBSD68, ...) have few of them, and a model
trained on them reads a cloud, above all one over dark trees, as a large
defocused drop and darkens it (`benchmarks/results/restoration.md`, session 23:
the lens clean frames under 38 dB are all cloudy skies). :func:`cloudy_sky`
paints a procedural sky over the top of a share of the clean crops, down to a
ragged horizon, before the drops are rendered. Those crops then carry drops or
stay dry like any other, so the model sees clouds with and without drops on
them.

The sky is fractal noise (a sum of upsampled random grids, "fBm") thresholded
into clouds, shaded grey underneath, over a blue-to-pale gradient; its cover
runs from a few wisps to overcast. The clouds run from white to storm grey,
and the sky between them from deep blue to burnt out (a camera exposed for
the ground): dark grey clouds against a white sky are as common in rain as
white clouds against a blue one, and a model that has only seen the latter
reads a dark cloud next to a bright gap as a drop. Everything is a stateless TensorFlow op, so
a batch is the same for the same seed, and the crops not chosen are returned
exactly.
"""

import tensorflow as tf

# Cells across the crop of each octave of the cloud field, coarse to fine.
CLOUD_OCTAVES = (3, 6, 12, 24, 48, 96)
SHADE_OCTAVES = (6, 12, 24)
HORIZON_OCTAVES = (4, 16, 64)
# Share of the skies that are storms: grey clouds against a sky burnt out to white.
STORM_SHARE = 0.3


def check_sky_fraction(fraction, name="sky_fraction"):
    """Raise ``ValueError`` (naming ``name``) unless ``fraction`` is a number in ``[0, 1]``."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1], got {fraction!r}")


def cloudy_sky(images, seed, fraction, storm_share=STORM_SHARE):
    """Paint a cloudy sky over the top of a share of a batch of photos.

    Args:
        images: ``[batch, height, width, 3]`` float32 in ``[0, 1]``.
        seed: int ``[2]`` tensor, the stateless seed of the batch.
        fraction: share of the images that get a sky, in ``[0, 1]`` (a Python
            number). Each chosen image gets its own sky, cover and horizon; the
            horizon lies between 30% of the height and below the bottom edge
            (the whole crop is sky).
        storm_share: share of the skies that are storms (grey clouds against
            a sky burnt out to white), in ``[0, 1]``: a Python number, or a
            scalar tensor (``synthetic_dataset`` passes a different share for
            its lens batches). Default ``STORM_SHARE``.

    Returns:
        The batch, float32 in ``[0, 1]``: chosen images with their top part
        replaced by the sky, the others exactly as given.

    Raises:
        ValueError: ``fraction``, or a numeric ``storm_share``, outside ``[0, 1]``.

    Example:
        >>> import tensorflow as tf
        >>> photos = tf.zeros([4, 32, 32, 3])
        >>> skies = cloudy_sky(photos, tf.constant([1, 2]), fraction=1.0)
        >>> top = tf.reduce_mean(skies[:, 0], axis=[1, 2])  # the top row of each image
        >>> bool(tf.reduce_all(top > 0.2))  # is sky, in every image: bright over the black photo
        True
    """
    check_sky_fraction(fraction)
    if not tf.is_tensor(storm_share):
        check_sky_fraction(storm_share, "storm_share")
    images = tf.convert_to_tensor(images, tf.float32)
    if fraction == 0.0:
        return images
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    # One seed per draw: two draws from one seed would be correlated (the same uniforms underneath).
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 19)

    def uniform(index, low, high, size=None):
        return tf.random.stateless_uniform(size or [batch, 1, 1, 1], seeds[index], low, high)

    # The cloud field, in standard deviations; the cover threshold runs from wisps (2) to overcast (-1).
    field = _fbm(seeds[0], batch, height, width, CLOUD_OCTAVES, persistence=uniform(1, 0.45, 0.65))
    field = field / (tf.math.reduce_std(field, axis=[1, 2, 3], keepdims=True) + 1e-6)
    cover = uniform(2, -1.0, 2.0)
    softness = uniform(3, 0.2, 1.2)
    cloud = tf.clip_by_value((field - cover) / softness, 0.0, 1.0)
    # Cloud undersides are grey: darker where a second field is high and the cloud is thick.
    shade = tf.clip_by_value(_fbm(seeds[4], batch, height, width, SHADE_OCTAVES) + 0.5, 0.0, 1.0)
    # A share of the skies are storms: grey clouds against a sky burnt out to white (a camera exposed for
    # the ground). The others have white clouds against blue, the sky a little hazy at most.
    storm = uniform(16, 0.0, 1.0) < tf.cast(storm_share, tf.float32)
    tone = tf.where(storm, uniform(5, 0.4, 0.75), uniform(5, 0.8, 1.0))
    white = tone * (1.0 - uniform(6, 0.0, 0.6) * shade * cloud)
    # The blue: deep overhead, pale at the horizon, of any brightness from dim to hazy.
    zenith = tf.concat([uniform(7, 0.15, 0.55), uniform(12, 0.35, 0.7), uniform(13, 0.65, 1.0)], axis=-1)
    zenith = tf.clip_by_value(zenith * uniform(8, 0.7, 1.2), 0.0, 1.0)
    pale = zenith + (uniform(9, 0.75, 1.0) - zenith) * uniform(10, 0.2, 0.8)
    rows = tf.reshape(tf.linspace(0.0, 1.0, height), [1, height, 1, 1])
    blue = zenith + (pale - zenith) * rows
    washout = tf.where(storm, uniform(17, 0.6, 1.0), 0.5 * tf.square(uniform(17, 0.0, 1.0)))
    blue = blue + (uniform(18, 0.9, 1.0) - blue) * washout
    sky = tf.clip_by_value(blue + (white - blue) * cloud, 0.0, 1.0)
    # A ragged horizon (a tree line, roofs): smooth swells and a fine jagged edge.
    level = uniform(11, 0.3, 1.1)
    ragged = _fbm(seeds[14], batch, 1, width, HORIZON_OCTAVES, persistence=0.6, line=True)
    horizon = level + 0.06 * ragged
    below = tf.cast(rows > horizon, tf.float32)
    painted = images * below + sky * (1.0 - below)
    chosen = tf.random.stateless_uniform([batch], seeds[15]) < fraction
    return tf.where(chosen[:, None, None, None], painted, images)


def _fbm(seed, batch, height, width, octaves, persistence=0.55, line=False):
    """Fractal noise ``[batch, height, width, 1]``: random grids of ``octaves`` cells upsampled and summed.

    ``line``: one row (``height`` 1) of noise along the width.
    """
    total, weight, norm = 0.0, 1.0, 0.0
    aspect = 1.0 if line else tf.cast(width, tf.float32) / tf.cast(height, tf.float32)
    for index, cells in enumerate(octaves):
        rows = 1 if line else cells
        columns = tf.maximum(1, tf.cast(tf.round(cells * aspect), tf.int32))
        grid = tf.random.stateless_normal(
            tf.stack([batch, rows, columns, 1]), tf.random.experimental.stateless_fold_in(seed, index)
        )
        total += weight * tf.image.resize(grid, tf.stack([height, width]), method="bicubic")
        norm += weight
        weight = weight * persistence
    return total / norm
