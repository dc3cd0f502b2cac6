"""Synthetic adherent raindrops, rendered with TensorFlow ops only (second generation).

A drop on the glass is a thick, fish-eye lens: it shows an inverted and
strongly minified view of a wide part of the scene (often the bright sky), with
a dark rim where light is totally reflected inside it, and the camera (focused
on the scene) sees it more or less out of focus. The renderer follows the
sphere-section model of ``RAINDROPS.md`` with fixed shapes and no Python loop per
drop or per image, so it runs inside a ``tf.data`` map and on a GPU:

1. Drops live on jittered grids at three size bands (log-uniform radii, so
   small drops are many); each grid cell holds at most one candidate drop,
   small enough to reach only the 3x3 cells around it, so every pixel
   evaluates nine candidates per band.
2. Each candidate adds a compact metaball ``(1 - d^2)^2`` whose outline is
   perturbed by random 2- and 3-fold harmonics (non-circular footprints);
   drops may trail a narrowing drip downward, and touching drops merge. The
   summed field gives a spherical-cap height field.
3. Refraction: each pixel's ray leaves the cap deviated by Snell's law and
   travels ``focal_length`` (the camera's focal length in units of the short
   side) to the scene, so a drop of radius 10 px on a 720x480 frame shows a
   region some 250 px wide, upside down. The view is taken from the **whole
   photo** (``environment``), not from the crop, so a crop's drops see the sky
   above it; tilted glass shifts each drop's view upward (``view_tilt_range``).
   Past the critical angle (48.8 degrees) the rim is dark.
4. Shading: gain, contrast reduction toward the local mean, haze, Fresnel rim
   darkening and an optional specular highlight. Drops over dark scenes come
   out brighter than their surround and, over bright ones, darker.
5. Defocus per drop: the drop layer and its alpha are blurred by compact tent
   kernels at four radii and each pixel blends the two nearest, by the blur
   its drop drew (larger drops draw more); an optional downward smear (lens
   style). ``rainy = blur(alpha*drop) + (1 - blur(alpha))*clean``.
6. Dry pairs: a share ``dry_fraction`` of the images get no drop at all.

Every kernel has compact support, so pixels outside every drop's blurred
footprint keep their input value exactly; the returned mask is zero exactly there.

Two styles: ``"window"`` (the defaults: drops on a window or windscreen, as in
the Raindrop dataset) and ``"lens"`` (drops on a lens close to the camera, as in
RobotCar-rainy: huge, strongly defocused, smeared); see :data:`STYLES`.
"""

import dataclasses
import math

import tensorflow as tf

# Metaball support radius / footprint radius: the margin in which neighbours merge.
_SUPPORT = 1.25
_WATER_INDEX = 1.33
_SIZE_BANDS = 3
# Images are rendered at a short side of _WORK_SIDE to 2*_WORK_SIDE - 1 px and
# enlarged: 720x480 frames at full size, so drops of a few pixels stay sharp.
_WORK_SIDE = 256
_LOCAL_MEAN_SHRINK = 16
# Without an environment the refracted view comes from the image itself,
# shrunk this many times (it is minified anyway; the shrink is its pre-blur).
_SOURCE_SHRINK = 2
# Per-drop defocus blends blurred copies at this many radii.
_BLUR_LEVELS = 4
# Reach of the glow around drops, fraction of the short side.
_GLOW_REACH = 0.05
# Light from the upper left, toward the camera: the half-vector for highlights.
_HALF_VECTOR = (-0.25, -0.3, 1.0)
_SHININESS = 40.0


@dataclasses.dataclass(frozen=True)
class RaindropOptions:
    """How the rendered drops look; the defaults resemble the Raindrop dataset (Qian et al. 2018).

    Sizes are fractions of the image's short side (or of ``reference_side``),
    so a 256 crop and a 720x480 photo get drops of the same relative size. A
    ``*_range`` is a ``(min, max)`` pair; each drop draws uniformly from it.

    Args:
        density: expected fraction of the image covered by drop footprints,
            counting overlaps twice, in ``[0, 1]``.
        radius_range: footprint radius, fraction of the short side, within
            ``(0.002, 0.5)``; drawn log-uniformly, so small drops are many
            (the default 0.015-0.22 is 7-106 px on a 720x480 frame).
        shape_noise: how far outlines depart from ellipses (random 2- and
            3-fold harmonics of the radius), ``[0, 0.5]``.
        elongation: largest ratio of the vertical to the horizontal axis, ``[1, 3]``.
        tail: largest extra length of a drop's lower half, which narrows into
            a drip, ``[0, 2]``.
        contact_angle_range: contact angle of the spherical cap in degrees,
            within ``[10, 60]``; steeper caps refract more and have wider dark rims.
        focal_length: the camera's focal length as a multiple of the short
            side, ``[0, 3]``: how far the refracted rays travel, so how wide a view
            of the scene each drop shows, inverted (0 disables refraction).
        view_tilt_range: upward shift of each drop's view (tilted glass looks
            up, toward the sky), fraction of the short side, within ``[0, 1]``.
        gain_range: brightness gain of the drop (it gathers light from a wide
            cone), within ``[0.5, 3]``.
        contrast_range: contrast kept from the refracted view, within ``[0, 1]``;
            the rest is mixed toward the local mean colour.
        haze_range: how far the drop's colour is washed toward white, within ``[0, 1]``.
        opacity_range: opacity at a drop's centre, within ``[0, 1]``.
        softness_range: width of the soft edge as a fraction of the radius,
            within ``[0.01, 1]``.
        rim_darkening: how much darker the rim is (Fresnel), ``[0, 1]``.
        highlight: strength of the specular highlight, ``[0, 1]``.
        blur_range: defocus blur radius (compact tent kernel), fraction of the
            short side, within ``[0, 0.1]``. Defocus depends on how far the glass
            is, so each image draws its focus from this range (all its drops
            nearly sharp, or all blurred) and each drop varies it by up to 40%.
        smear: length of a downward smear of the drops (water running on a
            lens), fraction of the short side, ``[0, 0.3]``.
        glow: strength of the soft glow around drops (light scattered by
            out-of-focus water brightens their surround toward white), ``[0, 0.5]``.
        veil_range: strength of a veiling glare over the **whole** frame,
            drawn per image within ``[0, 0.5]``: water on a lens scatters light
            from the bright parts of the scene onto every pixel, lifting the
            blacks and lowering contrast, ``rainy = (1 - v) * clean + v * light``
            with ``light`` between the scene's mean colour and white. Real lens
            pairs show it even where no drop is (a fit of rainy on clean Y over
            the quietest half of the pixels, full-range Y in 0-255, has slope
            0.93 and offset 14.7, medians of 100 RobotCar pairs); window pairs
            do not (slope 0.98, offset -0.9), so the window style has none.
        dry_fraction: share of images left without any drop (rainy == clean),
            so a model learns to leave dry photos alone, ``[0, 1]``.
        halo: strength of a halo that brightens the scene round each drop by a
            gain, ``clean * (1 + halo * b)``, ``[0, 1]``; ``b`` is the drops'
            alpha smoothed by a bell-shaped kernel (two tent passes) reaching
            ``halo_reach``. Unlike ``glow`` (a wash toward white) it keeps the
            scene's texture, as the real Raindrop pairs show round their drops
            (``benchmarks/results/realism.md``). The returned mask covers the
            halo too, so a model is taught to repair it. 0 (the default): none.
        halo_reach: how far the halo reaches beyond a drop's edge, fraction of
            the short side, ``[0, 0.1]``.
        halo_mode: how the halo changes the surround. ``"gain"`` (the default):
            the lift above. ``"wash"``: a blend toward a light,
            ``(1 - s) * clean + s * light`` with ``s = halo * b`` and ``light``
            drawn per image between the scene's mean colour and white, as the
            veil's. It lifts dark pixels most and leaves bright ones nearly as
            they are, never past white, which is what the real Raindrop pairs
            show round their drops (``benchmarks/results/realism.md``, session
            18); the gain lifts bright pixels most and saturates them.
            ``"capped"``: the gain, but no pixel is lifted past the wash's
            light, ``min(clean * (1 + halo * b), max(clean, light))``: the
            gain's lift of the scene's texture without clipping bright ground
            to white (a model taught on the plain gain darkens near-white dry
            ground beside drops, ``benchmarks/results/restoration.md``,
            session 18).
        focus: how the defocus blur is drawn. ``"image"`` (the default): each
            image draws its focus from ``blur_range`` and each drop varies it,
            as above. ``"batch"``: one radius for the whole call and one tent
            kernel for every drop, as the first renderer (5781748) drew it; kept
            to compare the two in ``benchmarks/sim2real.py``.

    Example:
        >>> options = RaindropOptions(density=0.6)
        >>> options.density
        0.6
    """

    density: float = 0.45
    radius_range: tuple = (0.015, 0.22)
    shape_noise: float = 0.15
    elongation: float = 1.3
    tail: float = 0.4
    contact_angle_range: tuple = (25.0, 50.0)
    focal_length: float = 1.5
    view_tilt_range: tuple = (0.0, 0.1)
    gain_range: tuple = (0.95, 1.2)
    contrast_range: tuple = (0.5, 0.9)
    haze_range: tuple = (0.05, 0.25)
    opacity_range: tuple = (0.85, 1.0)
    softness_range: tuple = (0.05, 0.4)
    rim_darkening: float = 0.6
    highlight: float = 0.15
    blur_range: tuple = (0.01, 0.06)
    smear: float = 0.0
    glow: float = 0.1
    veil_range: tuple = (0.0, 0.0)
    dry_fraction: float = 0.1
    halo: float = 0.0
    halo_reach: float = 0.02
    halo_mode: str = "gain"
    focus: str = "image"

    def __post_init__(self):
        _check_number("density", self.density, 0.0, 1.0)
        _check_range("radius_range", self.radius_range, 0.002, 0.5)
        _check_number("shape_noise", self.shape_noise, 0.0, 0.5)
        _check_number("elongation", self.elongation, 1.0, 3.0)
        _check_number("tail", self.tail, 0.0, 2.0)
        _check_range("contact_angle_range", self.contact_angle_range, 10.0, 60.0)
        _check_number("focal_length", self.focal_length, 0.0, 3.0)
        _check_range("view_tilt_range", self.view_tilt_range, 0.0, 1.0)
        _check_range("gain_range", self.gain_range, 0.5, 3.0)
        _check_range("contrast_range", self.contrast_range, 0.0, 1.0)
        _check_range("haze_range", self.haze_range, 0.0, 1.0)
        _check_range("opacity_range", self.opacity_range, 0.0, 1.0)
        _check_range("softness_range", self.softness_range, 0.01, 1.0)
        _check_number("rim_darkening", self.rim_darkening, 0.0, 1.0)
        _check_number("highlight", self.highlight, 0.0, 1.0)
        _check_range("blur_range", self.blur_range, 0.0, 0.1)
        _check_number("smear", self.smear, 0.0, 0.3)
        _check_number("glow", self.glow, 0.0, 0.5)
        _check_range("veil_range", self.veil_range, 0.0, 0.5)
        _check_number("dry_fraction", self.dry_fraction, 0.0, 1.0)
        _check_number("halo", self.halo, 0.0, 1.0)
        _check_number("halo_reach", self.halo_reach, 0.0, 0.1)
        if self.halo_mode not in _HALO_MODES:
            raise ValueError(f"raindrop option halo_mode must be one of {_HALO_MODES}, got {self.halo_mode!r}")
        if self.focus not in _FOCUS_MODES:
            raise ValueError(f"raindrop option focus must be one of {_FOCUS_MODES}, got {self.focus!r}")


_HALO_MODES = ("gain", "wash", "capped")
_FOCUS_MODES = ("image", "batch")


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


# Drops on a lens a few centimetres from the camera (RobotCar-rainy, Porav et
# al. 2019): few, huge and strongly defocused, covering much of the frame,
# smeared downward where water runs, with bright glare and dark rims.
LENS_STYLE = RaindropOptions(
    density=0.7,
    radius_range=(0.05, 0.3),
    shape_noise=0.25,
    elongation=1.5,
    tail=0.6,
    contact_angle_range=(30.0, 55.0),
    focal_length=1.5,
    view_tilt_range=(0.0, 0.1),
    gain_range=(0.8, 1.4),
    contrast_range=(0.3, 0.8),
    haze_range=(0.0, 0.25),
    opacity_range=(0.8, 1.0),
    softness_range=(0.1, 0.5),
    rim_darkening=0.7,
    highlight=0.3,
    blur_range=(0.02, 0.08),
    smear=0.06,
    glow=0.15,
    veil_range=(0.0, 0.12),
    dry_fraction=0.1,
)

STYLES = {"window": RaindropOptions(), "lens": LENS_STYLE}


def raindrop_options(options=None, **overrides):
    """A :class:`RaindropOptions` from ``options`` (the defaults, a style name or a dict) with keyword overrides.

    Raises:
        ValueError: an option is out of range, or an unknown style (the message names it).
        TypeError: an unknown option name.

    Example:
        >>> raindrop_options(density=0.5).density
        0.5
        >>> raindrop_options("lens").smear > 0
        True
    """
    if options is None:
        options = RaindropOptions()
    elif isinstance(options, str):
        if options not in STYLES:
            raise ValueError(f"unknown raindrop style {options!r}; choose one of: {', '.join(STYLES)}")
        options = STYLES[options]
    elif isinstance(options, dict):
        options = raindrop_options(None, **options)
    known = {field.name for field in dataclasses.fields(RaindropOptions)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TypeError(f"unknown raindrop option(s) {unknown}; known: {sorted(known)}")
    return dataclasses.replace(options, **overrides)


# Plain TensorFlow ops with no control flow on tensors: tf.data's map need not run
# autograph over it, which took half of a dataset's build time (measured: 18 s -> 9 s).
@tf.autograph.experimental.do_not_convert
def render_raindrops(
    clean,
    *,
    seed,
    return_mask=False,
    options=None,
    reference_side=None,
    environment=None,
    window=None,
    **overrides,
):
    """Render adherent raindrops onto clean photos.

    Args:
        clean: float32 image(s) in ``[0, 1]``, HxWx3 or NxHxWx3.
        seed: an int or an int tensor of shape ``[2]``; the same seed gives the
            same drops, a different seed different ones.
        return_mask: also return the drop mask.
        options: a :class:`RaindropOptions`, a dict of its fields, or a style
            name (``"window"``, ``"lens"``); the window defaults if ``None``.
        reference_side: the short side, in pixels, that the size options are
            fractions of. ``None``: the image's own short side. Give it when the
            images are crops of larger photos, so drops keep the size they have
            on the whole photo (e.g. 480 for Raindrop's 720x480 frames).
        environment: the whole photo(s) that ``clean`` was cut from, float32 in
            ``[0, 1]`` (a small copy is enough, e.g. 96x144), one per image: the
            drops refract a wide view of it. ``None``: the image itself.
        window: where each image lies in its environment, ``[N, 4]`` (or ``[4]``)
            as ``(top, left, height, width)`` fractions of the environment's
            sides. ``None``: the whole environment.
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
        >>> lens = render_raindrops(clean, seed=1, options="lens")
    """
    options = raindrop_options(options, **overrides)
    clean = tf.convert_to_tensor(clean, tf.float32)
    single = clean.shape.rank == 3
    if single:
        clean = clean[tf.newaxis]
    if environment is not None:
        environment = tf.convert_to_tensor(environment, tf.float32)
        environment = environment[tf.newaxis] if environment.shape.rank == 3 else environment
    if window is not None:
        window = tf.reshape(tf.cast(window, tf.float32), [-1, 4])
    if reference_side is not None and not reference_side > 0:
        raise ValueError(f"reference_side must be a positive number of pixels, got {reference_side!r}")
    rainy, mask = _render(clean, _as_seed(seed), options, reference_side, environment, window)
    if single:
        rainy, mask = rainy[0], mask[0]
    return (rainy, mask) if return_mask else rainy


def _as_seed(seed):
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if seed.shape.rank == 0:
        seed = tf.stack([seed, tf.constant(0x5EED, tf.int64)])
    return seed


def _render(clean, seed, options, reference_side=None, environment=None, window=None):
    shape = tf.shape(clean)
    batch, height, width = shape[0], shape[1], shape[2]
    # Drops are rendered at a short side of _WORK_SIDE to 2*_WORK_SIDE - 1 px
    # and enlarged: the cost per image stays flat with its size.
    shrink = tf.maximum(1, tf.minimum(height, width) // _WORK_SIDE)
    work_size = tf.stack([(height + shrink - 1) // shrink, (width + shrink - 1) // shrink])
    background = tf.image.resize(clean, work_size, method="area")
    if reference_side is None:
        short_side = tf.cast(tf.minimum(work_size[0], work_size[1]), tf.float32)
    else:
        short_side = tf.cast(reference_side, tf.float32) / tf.cast(shrink, tf.float32)
    if environment is None:
        environment = _area_shrink(background, _SOURCE_SHRINK)
    if window is None:
        window = tf.tile(tf.constant([[0.0, 0.0, 1.0, 1.0]]), [batch, 1])
    layers = _drop_layers(background, environment, window, seed, options, short_side)
    layers = tf.image.resize(layers, tf.stack([height, width]), method="bilinear")

    premultiplied, mask = layers[..., :3], tf.clip_by_value(layers[..., 3:4], 0.0, 1.0)
    if options.halo > 0.0:
        # The halo changes what shows between the drops, and the mask covers it.
        spread = tf.clip_by_value(layers[..., 4:], 0.0, 1.0)
        if options.halo_mode == "wash":
            strength = options.halo * spread
            below = (1.0 - strength) * clean + strength * _halo_light(environment, seed)
        else:
            below = clean * (1.0 + options.halo * spread)
            if options.halo_mode == "capped":
                below = tf.minimum(below, tf.maximum(clean, _halo_light(environment, seed)))
        rainy = premultiplied + (1.0 - mask) * below
        mask = 1.0 - (1.0 - mask) * (1.0 - spread)
    else:
        rainy = premultiplied + (1.0 - mask) * clean
    # Every kernel above has compact support and non-negative weights, so the
    # mask is exactly 0 away from the drops; this makes those pixels exact copies.
    rainy = tf.where(mask > 0.0, tf.clip_by_value(rainy, 0.0, 1.0), clean)
    return rainy, mask


# The field-weighted drop parameters, in the order _band_fields stacks them.
_PARAMETERS = ("radius", "cot_angle", "gain", "contrast", "haze", "opacity", "softness", "blur", "tilt")


def _drop_layers(clean, environment, window, seed, options, short_side):
    """Defocused ``[alpha * drops, alpha]`` (4 channels); sizes are fractions of ``short_side`` px."""
    shape = tf.shape(clean)
    batch, height, width = shape[0], shape[1], shape[2]
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, _SIZE_BANDS + 1))

    sums = _drop_fields(batch, height, width, short_side, seeds[:_SIZE_BANDS], options)
    field, weighted = sums[..., 0], sums[..., 1:]
    radius, cot_angle, gain, contrast, haze, opacity, softness, blur, tilt = tf.unstack(
        tf.math.divide_no_nan(weighted, sums[..., :1]), axis=-1
    )

    # Where metaballs merge the field exceeds one drop's peak: treat it as the interior.
    rho2 = tf.clip_by_value(_SUPPORT**2 * (1.0 - tf.sqrt(field)), 0.0, 1.0)
    height_field = radius * (tf.sqrt(1.0 + cot_angle**2 - rho2) - cot_angle)

    drops, shade = _refracted_view(environment, window, height_field, tilt, short_side, options)
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
    wet = 1.0
    if options.dry_fraction > 0.0:
        wet = tf.cast(tf.random.stateless_uniform([batch], seeds[-1]) >= options.dry_fraction, tf.float32)
        alpha = alpha * wet[:, None, None]
    alpha = alpha[..., None]
    layers = tf.concat([alpha * drops, alpha], axis=-1)
    if options.focus == "batch":
        # One radius and one tent kernel for the whole call (the first renderer's defocus).
        radius = tf.random.stateless_uniform(
            [], tf.random.experimental.stateless_fold_in(seeds[-1], 17), options.blur_range[0],
            options.blur_range[1] + 1e-9,
        )
        layers = _tent_blur(layers, tf.cast(tf.round(radius * short_side), tf.int32))
    else:
        layers = _defocus(layers, alpha, blur, options.blur_range[1] * short_side)
    if options.glow > 0.0:
        # A wide, faint glow toward white around the drops: their defocused halo.
        reach = tf.cast(tf.round(_GLOW_REACH * short_side), tf.int32)
        halo = options.glow * _pyramid_blur(alpha, reach)
        layers = layers + tf.concat([halo, halo, halo, halo], axis=-1) * (1.0 - layers[..., 3:])
    if options.smear > 0.0:
        layers = _smear_down(layers, tf.cast(tf.round(options.smear * short_side), tf.int32))
    if options.halo > 0.0:  # from the drops' alpha alone: the veil covers the whole frame
        spread = _halo_spread(layers[..., 3:4], options.halo_reach * short_side)
    if options.veil_range[1] > 0.0:
        layers = _veil(layers, environment, wet, seeds[-1], options)
    if options.halo > 0.0:
        layers = tf.concat([layers, spread], axis=-1)
    return layers


def _halo_spread(alpha, reach):
    """The drops' ``alpha`` smoothed by two tent passes of half ``reach`` px each: a bell-shaped falloff.

    Two tents make a smooth (quadratic-spline-like) kernel, so the halo fades
    without the pyramid blur's piecewise-linear steps. The kernels sum to 1,
    so inside a drop much wider than ``reach`` it reads the drop's alpha, and
    it is exactly 0 beyond ``reach`` (at least 2 px) from every drop
    (non-negative, compact kernels).
    """
    half = tf.maximum(tf.cast(tf.round(reach / 2.0), tf.int32), 1)
    return tf.clip_by_value(_tent_blur(_tent_blur(alpha, half), half), 0.0, 1.0)


def _halo_light(environment, seed):
    """Per image, the light a ``"wash"`` halo blends toward (the veil's kind of light), ``[B, 1, 1, 3]``."""
    draw = tf.random.stateless_uniform([tf.shape(environment)[0]], tf.random.experimental.stateless_fold_in(seed, 13))
    return _scattered_light(environment, draw)


def _scattered_light(environment, draw):
    """Per image, a light from the scene's mean colour toward white, set by ``draw`` in [0, 1): ``[B, 1, 1, 3]``.

    Scattered light comes mostly from the bright parts of the scene, so it
    lies at least halfway from the scene's mean to white.
    """
    scene = tf.reduce_mean(environment, axis=[1, 2])
    return (scene + (0.5 + 0.5 * draw[:, None]) * (1.0 - scene))[:, None, None, :]


def _veil(layers, environment, wet, seed, options):
    """Veiling glare over the whole frame, composited over the drops: ``(1 - v) * below + v * light``.

    ``v`` is drawn per image from ``veil_range`` (0 for dry images); ``light``
    lies between the scene's mean colour and white (scattered light comes
    mostly from the bright parts of the scene).
    """
    batch = tf.shape(layers)[0]
    draws = tf.random.stateless_uniform([2, batch], tf.random.experimental.stateless_fold_in(seed, 11))
    strength = (_lerp(options.veil_range, draws[0]) * wet)[:, None, None, None]
    light = _scattered_light(environment, draws[1])
    colour = (1.0 - strength) * layers[..., :3] + strength * light
    alpha = layers[..., 3:] + strength * (1.0 - layers[..., 3:])
    return tf.concat([colour, alpha], axis=-1)


def _defocus(layers, alpha, blur, largest):
    """Blur each drop by its own radius ``blur`` (px): blend blurred copies at a few radii.

    The copies are blurred at radii ``largest * (k / (K - 1))^2``; a pixel's
    blur is the alpha-weighted blur of the drops that reach it (smoothed by the
    largest kernel, so halos know it too), and it blends the two copies whose
    radii bracket it. All weights are non-negative and the kernels compact, so
    the result is exactly 0 where no drop reaches.
    """
    largest = tf.maximum(tf.cast(largest, tf.float32), 0.0)
    reach = tf.cast(tf.math.ceil(largest), tf.int32)
    spread = _pyramid_blur(tf.concat([alpha * blur[..., None], alpha], axis=-1), reach)
    pixel_blur = tf.math.divide_no_nan(spread[..., :1], spread[..., 1:])
    # Continuous level index: radius = largest * (level / (K - 1))^2.
    level = (_BLUR_LEVELS - 1) * tf.sqrt(tf.clip_by_value(tf.math.divide_no_nan(pixel_blur, largest), 0.0, 1.0))
    blended = 0.0
    for index in range(_BLUR_LEVELS):
        radius = tf.cast(tf.round(largest * (index / (_BLUR_LEVELS - 1)) ** 2), tf.int32)
        copy = layers if index == 0 else _pyramid_blur(layers, radius)
        blended += tf.nn.relu(1.0 - tf.abs(level - index)) * copy
    return blended


def _smear_down(layers, length):
    """Streak each drop downward by up to ``length`` px (one-sided, fading box kernel)."""
    offsets = tf.cast(tf.range(-length, length + 1), tf.float32)
    # Weights only above the pixel: each value spreads downward, fading out.
    weights = tf.where(offsets <= 0.0, tf.cast(length, tf.float32) + 1.0 + offsets, 0.0)
    weights = weights / tf.reduce_sum(weights)
    channels = layers.shape[-1]
    kernel = tf.tile(weights[:, None, None, None], [1, 1, channels, 1])
    return tf.nn.depthwise_conv2d(layers, kernel, [1, 1, 1, 1], "SAME")


def _drop_fields(batch, height, width, short_side, seeds, options):
    """Summed metaball fields, channel 0, and field-weighted drop parameters."""
    low, high = options.radius_range
    bounds = [low * (high / low) ** (band / _SIZE_BANDS) for band in range(_SIZE_BANDS + 1)]
    # One focus per image, shared by its drops of every size band.
    focus = tf.random.stateless_uniform([batch, 1, 1], tf.random.experimental.stateless_fold_in(seeds[0], 7))
    sums = 0.0
    for band, seed in enumerate(seeds):
        sums += _band_fields(
            batch, height, width, bounds[band] * short_side, bounds[band + 1] * short_side, seed, options,
            short_side, focus,
        )
    return sums


def _band_fields(batch, height, width, radius_low, radius_high, seed, options, short_side, focus):
    """One size band: a grid of candidate drops; each pixel sees its cell's 3x3 neighbours."""
    radius_low = tf.maximum(radius_low, 0.5)
    radius_high = tf.maximum(radius_high, radius_low)
    stretch = math.sqrt(options.elongation) * (1.0 + options.tail) * (1.0 + options.shape_noise)
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

    draws = tf.random.stateless_uniform([18, batch, rows + 2, cols + 2], seed)
    (active, size, aspect, tail, centre_x, centre_y, angle, gain, contrast, haze, opacity, softness,
     blur, tilt, *harmonics) = tf.unstack(draws)
    radius = radius_low * (radius_high / radius_low) ** size
    aspect = 1.0 + (options.elongation - 1.0) * aspect
    support_up = _SUPPORT * radius * tf.sqrt(aspect)
    # Defocus depends on the glass's distance, so it is mostly set per photo
    # (one focus per image: every drop sharp, or every drop blurred); each drop
    # then varies it by up to 40%.
    drop_blur = _lerp(options.blur_range, focus) * (0.6 + 0.4 * blur)
    # Inactive candidates are moved far away, so their field is 0 with no extra op.
    far = tf.where(active < active_probability, 0.0, 1e6)
    cells = tf.stack(
        [
            centre_y * cell_float - far,
            centre_x * cell_float,
            _SUPPORT * radius / tf.sqrt(aspect),
            support_up,
            support_up * (1.0 + options.tail * tail**2),
            # 2- and 3-fold outline harmonics; |sum| <= shape_noise.
            *[(2.0 * value - 1.0) * (options.shape_noise / 4.0) for value in harmonics],
            # The drop parameters, summed weighted by the field; the ones give the field.
            tf.ones_like(radius),
            radius,
            1.0 / tf.tan(_lerp(options.contact_angle_range, angle) * (math.pi / 180.0)),
            _lerp(options.gain_range, gain),
            _lerp(options.contrast_range, contrast),
            _lerp(options.haze_range, haze),
            _lerp(options.opacity_range, opacity),
            _lerp(options.softness_range, softness),
            drop_blur * short_side,
            _lerp(options.view_tilt_range, tilt) * short_side,
        ],
        axis=-1,
    )
    geometry = 9  # channels before the field-weighted parameters
    # Each cell's 3x3 neighbourhood in one op: [batch, rows, cols, 9, channels].
    neighbours = tf.image.extract_patches(cells, [1, 3, 3, 1], [1, 1, 1, 1], [1, 1, 1, 1], "VALID")
    neighbours = tf.reshape(neighbours, [batch, rows, cols, 9, cells.shape[-1]])
    parameters = neighbours[..., geometry:]
    # Broadcast over the pixels of a cell: [batch, rows, 1, cols, 1, 9].
    neighbours = neighbours[:, :, None, :, None]
    (centre_y, centre_x, support_x, support_up, support_down, cos2, sin2, cos3, sin3) = tf.unstack(
        neighbours[..., :geometry], axis=-1
    )

    # Pixel position relative to a neighbour's cell corner: local position
    # plus one cell per step of the neighbour's row or column.
    # A cell larger than the image (large drops, small crops) is only
    # evaluated where the image is: then there is one row (column) of cells.
    local_rows = tf.minimum(cell, height)
    local_cols = tf.minimum(cell, width)
    neighbour_step = tf.constant([1.0, 0.0, -1.0])
    step_y = tf.repeat(neighbour_step, 3) * cell_float
    step_x = tf.tile(neighbour_step, [3]) * cell_float
    local_x = tf.range(tf.cast(local_cols, tf.float32)) + 0.5
    local_y = tf.range(tf.cast(local_rows, tf.float32)) + 0.5
    across = (tf.reshape(local_x, [1, 1, 1, 1, -1, 1]) + step_x - centre_x) / support_x
    down = tf.reshape(local_y, [1, 1, -1, 1, 1, 1]) + step_y - centre_y
    below = down > 0.0
    down = down / tf.where(below, support_down, support_up)
    # A long lower half narrows into a drip.
    drip = tf.clip_by_value(support_down / support_up - 1.0, 0.0, 1.0)
    across = across / (1.0 - 0.6 * drip * tf.clip_by_value(down, 0.0, 1.0))
    distance2 = across**2 + down**2
    inverse = tf.math.rsqrt(distance2 + 1e-12)
    unit_x, unit_y = across * inverse, down * inverse
    outline = 1.0 + (
        cos2 * (unit_x**2 - unit_y**2)
        + sin2 * 2.0 * unit_x * unit_y
        + cos3 * unit_x * (unit_x**2 - 3.0 * unit_y**2)
        + sin3 * unit_y * (3.0 * unit_x**2 - unit_y**2)
    )
    weight = tf.nn.relu(1.0 - distance2 / outline**2) ** 2
    sums = tf.einsum("nicjdk,nijkp->nicjdp", weight, parameters)
    sums = tf.reshape(sums, [batch, rows * local_rows, cols * local_cols, parameters.shape[-1]])
    return sums[:, :height, :width]


def _refracted_view(environment, window, height_field, tilt, short_side, options):
    """Sample what each drop pixel sees through the lens, from the environment; also its transmission."""
    grad_y, grad_x = _central_differences(height_field)
    slope = tf.sqrt(grad_x**2 + grad_y**2)
    incidence = tf.atan(slope)
    refracted_sine = _WATER_INDEX * tf.sin(incidence)
    deviation = tf.asin(tf.minimum(refracted_sine, 1.0)) - incidence
    distance = options.focal_length * short_side * tf.tan(deviation)
    # Uphill: toward the drop's centre and past it, which inverts the view.
    step_x = tf.math.divide_no_nan(grad_x, slope) * distance
    step_y = tf.math.divide_no_nan(grad_y, slope) * distance - tilt

    shape = tf.shape(height_field)
    work_height, work_width = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
    environment_shape = tf.cast(tf.shape(environment)[1:3], tf.float32)
    top, left, window_height, window_width = [value[:, None, None] for value in tf.unstack(window, axis=-1)]
    rows = tf.range(work_height)[None, :, None]
    cols = tf.range(work_width)[None, None, :]
    # Pixel centres -> fractions of the environment -> its pixel coordinates.
    sample_y = (top + (rows + step_y + 0.5) / work_height * window_height) * environment_shape[0] - 0.5
    sample_x = (left + (cols + step_x + 0.5) / work_width * window_width) * environment_shape[1] - 0.5
    drops = _bilinear_reflect(environment, sample_y, sample_x)

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


def _lerp(bounds, fraction):
    return bounds[0] + (bounds[1] - bounds[0]) * fraction


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


def _pyramid_blur(images, radius):
    """Blur [N, H, W, C] over about ``radius`` pixels: area-shrink by ``radius``, enlarge bilinearly.

    Several times cheaper than a convolution of that reach, and just as
    compact: both resizes have non-negative weights of finite support, so where
    every input near a pixel is 0 the output is exactly 0. Radius 0 or 1 is
    the identity.
    """
    shape = tf.shape(images)
    factor = tf.cast(tf.maximum(radius, 1), tf.int32)
    small = tf.image.resize(images, tf.maximum((shape[1:3] + factor - 1) // factor, 1), method="area")
    return tf.image.resize(small, shape[1:3], method="bilinear")


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
