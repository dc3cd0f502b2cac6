"""Synthetic adherent raindrops, rendered with TensorFlow ops only.

A drop on the glass is a small thick lens: it shows an inverted, minified and
blurred view of the scene around it, brighter and lower in contrast than the
scene, with a darker rim where light leaves at grazing angles, and the camera
(focused on the scene) sees it out of focus. The renderer follows the recipe in
RAINDROPS.md with fixed shapes and no Python loop per drop or per image, so it
runs inside a ``tf.data`` map and on a GPU:

1. Drops live on jittered grids at three size bands; each grid cell holds at
   most one candidate drop, small enough to reach only the 3x3 cells around
   it, so every pixel evaluates nine candidates per band.
2. Each candidate adds a compact metaball ``(1 - d^2)^2``; their sum gives
   round, oval, teardrop and merged footprints, and a spherical-cap height field.
3. Refraction moves each pixel's sample point uphill by ``f tan(delta)``
   (Snell's law on the cap's slope), which inverts and shrinks the view; the
   sample is a bilinear gather, with reflection at the borders, from a
   pre-blurred quarter-size copy of the photo.
4. Shading: gain, contrast reduction toward the local mean, a darker rim
   (Fresnel, total internal reflection) and an optional specular highlight.
5. Defocus: the drop layer and its alpha are blurred by the same compact
   (tent) kernel, then ``rainy = blur(alpha*drop) + (1 - blur(alpha))*clean``.

Every kernel has compact support, so pixels outside every drop's blurred
footprint keep their input value exactly; the returned mask is zero exactly there.
"""

import dataclasses
import math

import tensorflow as tf

# Metaball support radius / footprint radius: the margin in which neighbours merge.
_SUPPORT = 1.25
_FOOTPRINT_LEVEL = (1.0 - 1.0 / _SUPPORT**2) ** 2
_WATER_INDEX = 1.33
_SIZE_BANDS = 3
# The refracted view is minified several times, so it is sampled from a copy
# this many times smaller (which is also its pre-blur).
_SOURCE_SHRINK = 4
_LOCAL_MEAN_SHRINK = 16
_WORK_SIDE = 128
# Light from the upper left, toward the camera: the half-vector for highlights.
_HALF_VECTOR = (-0.25, -0.3, 1.0)
_SHININESS = 40.0


@dataclasses.dataclass(frozen=True)
class RaindropOptions:
    """How the rendered drops look; the defaults resemble the Raindrop dataset (Qian et al. 2018).

    Sizes are fractions of the image's short side, so a 256 crop and a
    720x480 photo get drops of the same relative size. A ``*_range`` is a
    ``(min, max)`` pair; each drop (each call, for ``blur_range``) draws
    uniformly from it.

    Args:
        density: expected fraction of the image covered by drop footprints,
            counting overlaps twice, in ``[0, 1]``. Visible coverage (see
            ``benchmarks/raindrop_coverage.py``) grows with it: about 0.04 at
            0.1, 0.17 at the default 0.4 (the two real pairs: 0.09 and 0.30),
            0.25 at 0.6.
        radius_range: footprint radius, fraction of the short side, within
            ``(0.002, 0.25)``; drawn log-uniformly, so small drops are many.
        elongation: largest ratio of the vertical to the horizontal axis, ``[1, 3]``.
        tail: largest extra length of a drop's lower half (teardrops), ``[0, 1]``.
        contact_angle_range: contact angle of the spherical cap in degrees,
            within ``[10, 60]``; steeper caps refract more.
        focal_length: distance (fraction of the short side) over which the
            refracted rays travel, ``[0, 3]``: it sets how wide a view of the
            scene each drop shows, inverted (0 disables refraction).
        gain_range: brightness gain of the drop, within ``[0.5, 3]``.
        contrast_range: contrast kept from the refracted view, within ``[0, 1]``;
            the rest is mixed toward the local mean colour.
        haze_range: how far the drop's colour is washed toward white, within ``[0, 1]``.
        opacity_range: opacity at a drop's centre, within ``[0, 1]``.
        softness_range: width of the soft edge as a fraction of the radius,
            within ``[0.01, 1]``.
        rim_darkening: how much darker the rim is, ``[0, 1]``.
        highlight: strength of the specular highlight, ``[0, 1]``.
        blur_range: defocus blur radius (compact tent kernel), fraction of the
            short side, within ``[0, 0.1]``; drawn once per call (per batch).

    Example:
        >>> options = RaindropOptions(density=0.6)
        >>> options.density
        0.6
    """

    density: float = 0.4
    radius_range: tuple = (0.01, 0.12)
    elongation: float = 1.3
    tail: float = 0.15
    contact_angle_range: tuple = (30.0, 45.0)
    focal_length: float = 1.5
    gain_range: tuple = (1.1, 1.4)
    contrast_range: tuple = (0.35, 0.7)
    haze_range: tuple = (0.05, 0.3)
    opacity_range: tuple = (0.75, 1.0)
    softness_range: tuple = (0.15, 0.6)
    rim_darkening: float = 0.5
    highlight: float = 0.15
    blur_range: tuple = (0.005, 0.025)

    def __post_init__(self):
        _check_number("density", self.density, 0.0, 1.0)
        _check_range("radius_range", self.radius_range, 0.002, 0.25)
        _check_number("elongation", self.elongation, 1.0, 3.0)
        _check_number("tail", self.tail, 0.0, 1.0)
        _check_range("contact_angle_range", self.contact_angle_range, 10.0, 60.0)
        _check_number("focal_length", self.focal_length, 0.0, 3.0)
        _check_range("gain_range", self.gain_range, 0.5, 3.0)
        _check_range("contrast_range", self.contrast_range, 0.0, 1.0)
        _check_range("haze_range", self.haze_range, 0.0, 1.0)
        _check_range("opacity_range", self.opacity_range, 0.0, 1.0)
        _check_range("softness_range", self.softness_range, 0.01, 1.0)
        _check_number("rim_darkening", self.rim_darkening, 0.0, 1.0)
        _check_number("highlight", self.highlight, 0.0, 1.0)
        _check_range("blur_range", self.blur_range, 0.0, 0.1)


def _check_number(name, value, low, high):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"raindrop option {name} must be a number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"raindrop option {name}={value!r} is outside [{low}, {high}]")


def _check_range(name, pair, low, high):
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(f"raindrop option {name} must be a (min, max) pair, got {pair!r}")
    for value in pair:
        _check_number(name, value, low, high)
    if pair[0] > pair[1]:
        raise ValueError(f"raindrop option {name}={tuple(pair)!r}: min is greater than max")


def raindrop_options(options=None, **overrides):
    """A :class:`RaindropOptions` from ``options`` (or the defaults) with keyword overrides.

    Raises:
        ValueError: an option is out of range (the message names it).
        TypeError: an unknown option name.

    Example:
        >>> raindrop_options(density=0.5).density
        0.5
    """
    options = options if options is not None else RaindropOptions()
    if isinstance(options, dict):
        options = RaindropOptions(**options)
    known = {field.name for field in dataclasses.fields(RaindropOptions)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown raindrop option(s) {unknown}; known: {sorted(known)}")
    return dataclasses.replace(options, **overrides)


def render_raindrops(clean, *, seed, return_mask=False, options=None, reference_side=None, **overrides):
    """Render adherent raindrops onto clean photos.

    Args:
        clean: float32 image(s) in ``[0, 1]``, HxWx3 or NxHxWx3.
        seed: an int or an int tensor of shape ``[2]``; the same seed gives the
            same drops, a different seed different ones.
        return_mask: also return the drop mask.
        options: a :class:`RaindropOptions` (or dict); defaults if ``None``.
        reference_side: the short side, in pixels, that the size options are
            fractions of. ``None``: the image's own short side. Give it when the
            images are crops of larger photos, so drops keep the size they have
            on the whole photo (e.g. 480 for Raindrop's 720x480 frames).
        **overrides: any :class:`RaindropOptions` field, e.g. ``density=0.5``.

    Returns:
        ``rainy`` (same shape as ``clean``, in ``[0, 1]``), or ``(rainy, mask)``
        where ``mask`` (shape ``...xHxWx1``) is the defocused drop opacity:
        exactly 0 where ``rainy == clean``.

    Raises:
        ValueError: an option is out of range (the message names it).

    Example:
        >>> import tensorflow as tf
        >>> clean = tf.random.uniform([2, 64, 64, 3])
        >>> rainy, mask = render_raindrops(clean, seed=1, return_mask=True, density=0.4)
        >>> rainy.shape, mask.shape
        (TensorShape([2, 64, 64, 3]), TensorShape([2, 64, 64, 1]))
    """
    options = raindrop_options(options, **overrides)
    clean = tf.convert_to_tensor(clean, tf.float32)
    single = clean.shape.rank == 3
    if single:
        clean = clean[tf.newaxis]
    if reference_side is not None and not reference_side > 0:
        raise ValueError(f"reference_side must be a positive number of pixels, got {reference_side!r}")
    rainy, mask = _render(clean, _as_seed(seed), options, reference_side)
    if single:
        rainy, mask = rainy[0], mask[0]
    return (rainy, mask) if return_mask else rainy


def _as_seed(seed):
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, tf.constant(0x5EED, tf.int64)])
    return seed


def _render(clean, seed, options, reference_side=None):
    shape = tf.shape(clean)
    height, width = shape[1], shape[2]
    # Drops are smooth and defocused, so they are rendered at a short side of
    # 128-255 px and enlarged: the cost per image stays flat with its size.
    shrink = tf.maximum(1, tf.minimum(height, width) // _WORK_SIDE)
    work_size = tf.stack([(height + shrink - 1) // shrink, (width + shrink - 1) // shrink])
    background = tf.image.resize(clean, work_size, method="area")
    if reference_side is None:
        short_side = tf.cast(tf.minimum(work_size[0], work_size[1]), tf.float32)
    else:
        short_side = tf.cast(reference_side, tf.float32) / tf.cast(shrink, tf.float32)
    layers = _drop_layers(background, seed, options, short_side)
    layers = tf.image.resize(layers, tf.stack([height, width]), method="bilinear")

    premultiplied, mask = layers[..., :3], tf.clip_by_value(layers[..., 3:], 0.0, 1.0)
    rainy = premultiplied + (1.0 - mask) * clean
    # Every kernel above has compact support and non-negative weights, so the
    # mask is exactly 0 away from the drops; this makes those pixels exact copies.
    rainy = tf.where(mask > 0.0, tf.clip_by_value(rainy, 0.0, 1.0), clean)
    return rainy, mask


def _drop_layers(clean, seed, options, short_side):
    """Defocused ``[alpha * drops, alpha]`` (4 channels); sizes are fractions of ``short_side`` px."""
    shape = tf.shape(clean)
    batch, height, width = shape[0], shape[1], shape[2]
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, _SIZE_BANDS + 1))

    sums = _drop_fields(batch, height, width, short_side, seeds[:_SIZE_BANDS], options)
    field, weighted = sums[..., 0], sums[..., 1:]
    radius, cot_angle, gain, contrast, haze, opacity, softness = tf.unstack(
        tf.math.divide_no_nan(weighted, sums[..., :1]), axis=-1
    )

    # Where metaballs merge the field exceeds one drop's peak: treat it as the interior.
    rho2 = tf.clip_by_value(_SUPPORT**2 * (1.0 - tf.sqrt(field)), 0.0, 1.0)
    height_field = radius * (tf.sqrt(1.0 + cot_angle**2 - rho2) - cot_angle)

    drops, shade = _refracted_view(clean, height_field, short_side, options)
    local_mean = _shrunk(clean, _LOCAL_MEAN_SHRINK, height, width)
    contrast = contrast[..., None]
    drops = gain[..., None] * (contrast * drops + (1.0 - contrast) * local_mean)
    # Light gathered from a wide cone washes the drop out toward white.
    drops = drops + haze[..., None] * (1.0 - drops)
    # Fresnel transmission falls toward the rim; a smooth power of rho stands in for it.
    shade = shade * (1.0 - options.rim_darkening * rho2**6)
    drops = tf.clip_by_value(drops * shade[..., None], 0.0, 1.0)

    edge = tf.clip_by_value(tf.math.divide_no_nan(1.0 - rho2, softness), 0.0, 1.0)
    alpha = opacity * edge * edge * (3.0 - 2.0 * edge)  # smoothstep: exactly 0 outside
    alpha = alpha[..., None]

    # One blur per batch: one depthwise kernel (per-image kernels would need
    # gathers or a loop, which cost more than all the drops).
    blur_radius = tf.random.stateless_uniform(
        [], seeds[-1], options.blur_range[0], options.blur_range[1] + 1e-9
    )
    blur_pixels = tf.cast(tf.round(blur_radius * short_side), tf.int32)
    return _tent_blur(tf.concat([alpha * drops, alpha], axis=-1), blur_pixels)


def _drop_fields(batch, height, width, short_side, seeds, options):
    """Summed metaball fields, channel 0, and field-weighted drop parameters."""
    low, high = options.radius_range
    bounds = [low * (high / low) ** (band / _SIZE_BANDS) for band in range(_SIZE_BANDS + 1)]
    sums = 0.0
    for band, seed in enumerate(seeds):
        sums += _band_fields(
            batch, height, width, bounds[band] * short_side, bounds[band + 1] * short_side, seed, options
        )
    return sums


def _band_fields(batch, height, width, radius_low, radius_high, seed, options):
    """One size band: a grid of candidate drops; each pixel sees its cell's 3x3 neighbours."""
    radius_low = tf.maximum(radius_low, 0.5)
    radius_high = tf.maximum(radius_high, radius_low)
    stretch = math.sqrt(options.elongation) * (1.0 + options.tail)
    # Cells as large as the largest support: a drop centred anywhere in its
    # cell then reaches only the 3x3 cells around it.
    cell = tf.cast(tf.math.ceil(_SUPPORT * radius_high * stretch), tf.int32)
    cell_float = tf.cast(cell, tf.float32)
    rows = (height + cell - 1) // cell
    cols = (width + cell - 1) // cell

    # E[a^2] of a log-uniform radius; a tail (mean tail/2) lengthens only the lower half.
    log_ratio = tf.maximum(tf.math.log(radius_high / radius_low), 1e-6)
    mean_area = math.pi * (radius_high**2 - radius_low**2) / (2.0 * log_ratio)
    mean_area = tf.where(log_ratio > 1e-5, mean_area, math.pi * radius_low**2) * (1.0 + options.tail / 4.0)
    active_probability = options.density / _SIZE_BANDS * cell_float**2 / mean_area

    draws = tf.random.stateless_uniform([12, batch, rows + 2, cols + 2], seed)
    (active, size, aspect, tail, centre_x, centre_y, angle, gain, contrast, haze, opacity, softness) = (
        tf.unstack(draws)
    )
    radius = radius_low * (radius_high / radius_low) ** size
    aspect = 1.0 + (options.elongation - 1.0) * aspect
    support_up = _SUPPORT * radius * tf.sqrt(aspect)
    # Inactive candidates are moved far away, so their field is 0 with no extra op.
    far = tf.where(active < active_probability, 0.0, 1e6)
    cells = tf.stack(
        [
            centre_y * cell_float - far,
            centre_x * cell_float,
            _SUPPORT * radius / tf.sqrt(aspect),
            support_up,
            support_up * (1.0 + options.tail * tail),
            # The drop parameters, summed weighted by the field; the ones give the field.
            tf.ones_like(radius),
            radius,
            1.0 / tf.tan(_lerp(options.contact_angle_range, angle) * (math.pi / 180.0)),
            _lerp(options.gain_range, gain),
            _lerp(options.contrast_range, contrast),
            _lerp(options.haze_range, haze),
            _lerp(options.opacity_range, opacity),
            _lerp(options.softness_range, softness),
        ],
        axis=-1,
    )
    # Each cell's 3x3 neighbourhood in one op: [batch, rows, cols, 9, channels].
    neighbours = tf.image.extract_patches(cells, [1, 3, 3, 1], [1, 1, 1, 1], [1, 1, 1, 1], "VALID")
    neighbours = tf.reshape(neighbours, [batch, rows, cols, 9, cells.shape[-1]])
    parameters = neighbours[..., 5:]
    # Broadcast over the pixels of a cell: [batch, rows, 1, cols, 1, 9].
    neighbours = neighbours[:, :, None, :, None]
    centre_y, centre_x, support_x, support_up, support_down = tf.unstack(neighbours[..., :5], axis=-1)

    # Pixel position relative to a neighbour's cell corner: local position
    # plus one cell per step of the neighbour's row or column.
    local = tf.range(cell_float) + 0.5
    neighbour_step = tf.constant([1.0, 0.0, -1.0])
    step_y = tf.repeat(neighbour_step, 3) * cell_float
    step_x = tf.tile(neighbour_step, [3]) * cell_float
    across = (tf.reshape(local, [1, 1, 1, 1, -1, 1]) + step_x - centre_x) / support_x
    down = tf.reshape(local, [1, 1, -1, 1, 1, 1]) + step_y - centre_y
    down = down / tf.where(down > 0.0, support_down, support_up)
    weight = tf.nn.relu(1.0 - across**2 - down**2) ** 2
    sums = tf.einsum("nicjdk,nijkp->nicjdp", weight, parameters)
    sums = tf.reshape(sums, [batch, rows * cell, cols * cell, parameters.shape[-1]])
    return sums[:, :height, :width]


def _lerp(bounds, fraction):
    return bounds[0] + (bounds[1] - bounds[0]) * fraction


def _refracted_view(clean, height_field, short_side, options):
    """Sample what each drop pixel sees through the lens; also its transmission."""
    grad_y, grad_x = _central_differences(height_field)
    slope = tf.sqrt(grad_x**2 + grad_y**2)
    incidence = tf.atan(slope)
    refracted_sine = _WATER_INDEX * tf.sin(incidence)
    deviation = tf.asin(tf.minimum(refracted_sine, 1.0)) - incidence
    distance = options.focal_length * short_side * tf.tan(deviation)
    step_x = tf.math.divide_no_nan(grad_x, slope) * distance
    step_y = tf.math.divide_no_nan(grad_y, slope) * distance

    shape = tf.shape(clean)
    source = _area_shrink(clean, _SOURCE_SHRINK)
    rows = tf.cast(tf.range(shape[1]), tf.float32)[None, :, None]
    cols = tf.cast(tf.range(shape[2]), tf.float32)[None, None, :]
    # Pixel centres map to the shrunk copy's coordinates.
    sample_y = (rows + step_y + 0.5) / _SOURCE_SHRINK - 0.5
    sample_x = (cols + step_x + 0.5) / _SOURCE_SHRINK - 0.5
    drops = _bilinear_reflect(source, sample_y, sample_x)

    # Past the critical angle light is totally reflected inside the drop: dark.
    transmission = 1.0 - tf.clip_by_value((refracted_sine - 0.93) / 0.07, 0.0, 1.0)
    if options.highlight > 0.0:
        half = tf.constant(_HALF_VECTOR) / tf.norm(tf.constant(_HALF_VECTOR))
        # Surface normal (-dh/dx, -dh/dy, 1) normalised, against the half-vector.
        cosine = (half[2] - half[0] * grad_x - half[1] * grad_y) / tf.sqrt(1.0 + slope**2)
        specular = options.highlight * tf.nn.relu(cosine) ** _SHININESS
        specular = tf.where(slope > 0.0, specular, 0.0)
        drops = drops + specular[..., None]
    return drops, transmission


def _central_differences(field):
    padded = tf.pad(field, [[0, 0], [1, 1], [1, 1]], mode="SYMMETRIC")
    grad_y = (padded[:, 2:, 1:-1] - padded[:, :-2, 1:-1]) / 2.0
    grad_x = (padded[:, 1:-1, 2:] - padded[:, 1:-1, :-2]) / 2.0
    return grad_y, grad_x


def _area_shrink(images, factor):
    shape = tf.shape(images)
    size = tf.maximum(shape[1:3] // factor, 1)
    return tf.image.resize(images, size, method="area")


def _shrunk(images, factor, height, width):
    """A blurred copy: shrink by ``factor`` with area averaging, then enlarge again."""
    return tf.image.resize(_area_shrink(images, factor), tf.stack([height, width]), method="bilinear")


def _reflect(coordinate, size):
    """Fold a coordinate into ``[0, size - 1]`` by mirroring at the borders."""
    last = tf.maximum(tf.cast(size, tf.float32) - 1.0, 1.0)
    folded = tf.math.floormod(coordinate, 2.0 * last)
    return tf.minimum(last - tf.abs(folded - last), tf.cast(size, tf.float32) - 1.0)


def _bilinear_reflect(source, sample_y, sample_x):
    """Bilinear samples of ``source`` [N, h, w, C] at float coordinates [N, H, W]."""
    shape = tf.shape(source)
    source_height, source_width = shape[1], shape[2]
    sample_y = _reflect(sample_y, source_height)
    sample_x = _reflect(sample_x, source_width)
    top = tf.floor(sample_y)
    left = tf.floor(sample_x)
    weight_y = (sample_y - top)[..., None]
    weight_x = (sample_x - left)[..., None]
    top = tf.cast(top, tf.int32)
    left = tf.cast(left, tf.int32)
    bottom = tf.minimum(top + 1, source_height - 1)
    right = tf.minimum(left + 1, source_width - 1)
    flat = tf.reshape(source, [shape[0], -1, shape[3]])

    def gather(row, col):
        return tf.gather(flat, row * source_width + col, batch_dims=1)

    upper = gather(top, left) * (1.0 - weight_x) + gather(top, right) * weight_x
    lower = gather(bottom, left) * (1.0 - weight_x) + gather(bottom, right) * weight_x
    return upper * (1.0 - weight_y) + lower * weight_y


def _tent_blur(images, radius):
    """Blur [N, H, W, C] by a separable tent kernel reaching ``radius`` pixels.

    A depthwise convolution with non-negative weights: where every input in
    the window is 0 the output is exactly 0 (no cumulative-sum differences to
    round), and outside the image counts as zero.
    """
    offsets = tf.cast(tf.range(-radius, radius + 1), tf.float32)
    tent = tf.cast(radius, tf.float32) + 1.0 - tf.abs(offsets)
    tent = tent / tf.reduce_sum(tent)
    channels = images.shape[-1]
    tent = tf.tile(tent[:, None, None], [1, channels, 1])
    images = tf.nn.depthwise_conv2d(images, tent[:, None], [1, 1, 1, 1], "SAME")
    return tf.nn.depthwise_conv2d(images, tent[None], [1, 1, 1, 1], "SAME")
