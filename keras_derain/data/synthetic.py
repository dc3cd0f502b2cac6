"""Synthetic training pairs: clean photos with raindrops rendered on the fly.

The clean photos are checked in Python before the pipeline is built (a bad file
fails with a :class:`DatasetError` that names it); inside the pipeline every
step is a TensorFlow op: decode, crop and flip per image, then raindrops are
rendered once per batch, which vectorises best.
"""

from pathlib import Path
import warnings

import tensorflow as tf

from keras_derain.data.augment import element_seeds, random_crop_window
from keras_derain.data.images import (
    IMAGE_SUFFIXES,
    DatasetError,
    check_images,
    decode_rgb,
    list_images,
    natural_key,
)
from keras_derain.data import raindrops
from keras_derain.data.sky import STORM_SHARE, check_sky_fraction, cloudy_sky

BUILTIN_FOLDER = Path(__file__).resolve().parent / "builtin"
# The whole photo, as small as the drops need it: they show it minified.
ENVIRONMENT_SIZE = (96, 144)
DEFAULT_LENS_FRACTION = 0.25


def builtin_clean_images():
    """Paths of the built-in clean photos (ten Kodak images, 512x341 JPEG; see ``builtin/README.md``).

    Example:
        >>> len(builtin_clean_images())
        10
    """
    return list_images(BUILTIN_FOLDER)


def clean_image_paths(clean_source=None):
    """Resolve and check the clean photos of :func:`synthetic_dataset`.

    Args:
        clean_source: ``None`` (the built-in photos), a folder (read with its
            subfolders), or a list of image paths. In a folder, files without an image suffix
            (``.png .jpg .jpeg .bmp .gif``) are skipped with a warning that names
            them, since stray notes and thumbnails are common there; hidden
            files are skipped silently.

    Returns:
        The list of paths, every one fully decoded once by PIL.

    Raises:
        DatasetError: a missing or empty folder, an empty list, or a file that
            is not a readable image (the message names it).

    Example:
        >>> paths = clean_image_paths()  # the built-in photos
        >>> paths[0].suffix
        '.jpg'
    """
    if clean_source is None:
        paths = builtin_clean_images()
    elif isinstance(clean_source, (str, Path)):
        folder = Path(clean_source)
        paths = list_images(folder, recursive=True)
        skipped = sorted(
            (
                str(path.relative_to(folder))
                for path in folder.rglob("*")
                if path.is_file()
                and not any(part.startswith(".") for part in path.relative_to(folder).parts)
                and path.suffix.lower() not in IMAGE_SUFFIXES
            ),
            key=natural_key,
        )
        if skipped:
            warnings.warn(
                f"{folder}: skipping {len(skipped)} file(s) that are not images by suffix: "
                f"{', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}",
                stacklevel=3,
            )
    else:
        paths = [Path(path) for path in clean_source]
        if not paths:
            raise DatasetError("clean_source is an empty list of images")
    check_images(paths)
    return paths


def synthetic_dataset(
    clean_source=None,
    *,
    crop_size=256,
    batch_size=8,
    seed=None,
    repeat=True,
    shuffle=True,
    raindrop_options=None,
    reference_side=480,
    resize_jitter=1.0,
    cache=True,
    lens_fraction=None,
    return_mask=False,
    lens_options=None,
    lens_reference_side=None,
    sky_fraction=0.0,
    storm_share=None,
    lens_storm_share=None,
    wide_view=True,
):
    """A ``tf.data.Dataset`` of ``(rainy, clean)`` batches with raindrops rendered on the fly.

    Each element is a random ``crop_size`` square (flipped at random) of a clean
    photo; drops from :func:`~keras_derain.data.raindrops.render_raindrops` are
    drawn anew every time, so no two epochs see the same pairs. The drops
    refract a wide view of the whole photo, not only of the crop, and a share
    of the pairs are dry (``RaindropOptions.dry_fraction``: rainy == clean).

    Args:
        clean_source: ``None`` for the built-in photos, a folder, or a list of
            paths (see :func:`clean_image_paths`).
        crop_size: side of the square crops; smaller photos are scaled up.
        batch_size: pairs per batch.
        seed: an int makes the whole stream reproducible; ``None`` is random.
        repeat: cycle forever (training); if ``False``, one pass over the
            photos, one crop each, the last batch possibly smaller.
        shuffle: shuffle the photos (every pass).
        raindrop_options: a ``RaindropOptions`` or a dict of its fields.
        reference_side: the short side (px) that the drop sizes are fractions
            of. The default, 480, draws drops as large in pixels as on a 720x480
            Raindrop photo whatever the crop size, so a model trained on small
            crops meets drops of the right size on whole photos. ``None``
            sizes them relative to each crop instead.
        resize_jitter: scale each photo by a random factor in ``[1, resize_jitter]``
            before cropping.
        cache: keep the decoded photos in memory (small sets); turn off for
            large folders.
        lens_fraction: share of the batches whose drops are rendered in the
            lens style (``raindrops.LENS_STYLE``: huge, defocused, smeared drops
            on a lens close to the camera), in ``[0, 1]``. ``None``: 0.25 with
            the default options (training data for windows and lenses alike),
            0 when ``raindrop_options`` is given.
        lens_options: the lens batches' drops: ``None`` for
            ``raindrops.LENS_STYLE``, or a ``RaindropOptions`` or a dict of
            overrides of the lens style (e.g. ``{"blur_range": (0.0, 0.03)}``).
        lens_reference_side: ``reference_side`` for the lens batches alone
            (``None``: the same as the window batches'). Drops on a lens sit
            closer to the camera than drops on a window, so they can be drawn
            against a larger frame: larger and blurrier in pixels, with the
            lens style's options unchanged.
        sky_fraction: share of the crops whose top part is painted over with a
            procedural cloudy sky before the drops are rendered
            (:func:`keras_derain.data.sky.cloudy_sky`), in ``[0, 1]``; those
            crops carry drops or stay dry like the others, so the model learns
            that clouds are not drops. 0 (the default) leaves the photos as
            they are.
        storm_share: share of the skies that are storms (grey clouds against
            a sky burnt out to white), in ``[0, 1]``; ``None``:
            ``keras_derain.data.sky.STORM_SHARE``.
        lens_storm_share: the same for the lens batches' skies (``None``: as
            ``storm_share``). With 0 for ``storm_share``, only the lens batches
            see storms.
        wide_view: the drops refract a view of the whole photo (the default,
            as real drops do: a crop's drops see the sky above it). ``False``:
            a view of the crop alone, mirrored at its borders, as the
            first-generation renderer drew them (for comparisons).
        return_mask: also yield the renderer's exact drop mask,
            ``(rainy, clean, mask)`` with mask ``[batch, crop, crop, 1]`` in [0, 1]
            (0 exactly where rainy == clean), to supervise a mask head.

    Returns:
        Batches of ``(rainy, clean)``, float32 in ``[-1, 1]``, shape
        ``[batch, crop_size, crop_size, 3]``.

    Raises:
        DatasetError: no images, or a file that is not a readable image.
        ValueError: a bad raindrop option (the message names it).

    Example:
        >>> dataset = synthetic_dataset(crop_size=64, batch_size=2, seed=1)
        >>> rainy, clean = next(iter(dataset))
        >>> rainy.shape
        TensorShape([2, 64, 64, 3])
    """
    if crop_size < 1 or batch_size < 1:
        raise ValueError(f"crop_size and batch_size must be positive, got {crop_size}, {batch_size}")
    if resize_jitter < 1.0:
        raise ValueError(f"resize_jitter must be >= 1, got {resize_jitter}")
    if lens_fraction is None:
        lens_fraction = DEFAULT_LENS_FRACTION if raindrop_options is None else 0.0
    if not 0.0 <= lens_fraction <= 1.0:
        raise ValueError(f"lens_fraction must be in [0, 1], got {lens_fraction!r}")
    if lens_reference_side is None:
        lens_reference_side = reference_side
    elif not lens_reference_side > 0:
        raise ValueError(f"lens_reference_side must be a positive number of pixels, got {lens_reference_side!r}")
    check_sky_fraction(sky_fraction)
    storm_share = STORM_SHARE if storm_share is None else storm_share
    lens_storm_share = storm_share if lens_storm_share is None else lens_storm_share
    check_sky_fraction(storm_share, "storm_share")
    check_sky_fraction(lens_storm_share, "lens_storm_share")
    options = _resolve_options(raindrop_options)
    lens_style = _resolve_options(lens_options, base="lens")
    paths = [str(path) for path in clean_image_paths(clean_source)]

    def decode(path):
        photo = decode_rgb(path)
        # A small copy of the whole photo, made once (and cached with it, the
        # photo as uint8): the drops refract a wide view of it.
        return photo, tf.image.resize(tf.cast(photo, tf.float32) / 255.0, ENVIRONMENT_SIZE, method="area")

    photos = tf.data.Dataset.from_tensor_slices(paths).map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        photos = photos.cache()
    if shuffle:
        photos = photos.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        photos = photos.repeat()

    def crop(photos_and_environments, element_seed):
        photo, environment = photos_and_environments
        photo = tf.cast(photo, tf.float32) / 255.0
        clean, window, flipped = random_crop_window(photo, crop_size, element_seed, resize_jitter=resize_jitter)
        environment = tf.cond(flipped, lambda: tf.image.flip_left_right(environment), lambda: environment)
        return clean, environment, window, element_seed

    def render(style_options, side, clean, environment, window, drop_seed):
        return raindrops.render_raindrops(
            clean, seed=drop_seed, options=style_options, reference_side=side,
            environment=environment if wide_view else None, window=window if wide_view else None,
            return_mask=True,
        )

    def add_drops(clean, environment, window, batch_seeds):
        # One render per batch; its seed comes from the batch's first element,
        # folded so it does not repeat that element's crop seed.
        drop_seed = tf.random.experimental.stateless_fold_in(batch_seeds[0], 1)
        style_draw = tf.random.stateless_uniform([], tf.random.experimental.stateless_fold_in(batch_seeds[0], 2))
        lens_batch = style_draw < lens_fraction
        if sky_fraction > 0.0:
            storms = tf.where(lens_batch, lens_storm_share, storm_share)
            clean = cloudy_sky(clean, tf.random.experimental.stateless_fold_in(batch_seeds[0], 3), sky_fraction,
                               storm_share=storms)
        arguments = (clean, environment, window, drop_seed)
        if lens_fraction > 0.0:
            rainy, mask = tf.cond(
                lens_batch,
                lambda: render(lens_style, lens_reference_side, *arguments),
                lambda: render(options, reference_side, *arguments),
            )
        else:
            rainy, mask = render(options, reference_side, *arguments)
        if return_mask:
            return rainy * 2.0 - 1.0, clean * 2.0 - 1.0, mask
        return rainy * 2.0 - 1.0, clean * 2.0 - 1.0

    pairs = tf.data.Dataset.zip(photos, element_seeds(seed))
    pairs = pairs.map(crop, num_parallel_calls=tf.data.AUTOTUNE)
    pairs = pairs.batch(batch_size, drop_remainder=repeat)
    pairs = pairs.map(add_drops, num_parallel_calls=tf.data.AUTOTUNE)
    return pairs.prefetch(tf.data.AUTOTUNE)


def _resolve_options(options, base=None):
    """``options`` as ``RaindropOptions``; a dict overrides ``base`` (a style name; None: the defaults)."""
    if isinstance(options, dict):
        return raindrops.raindrop_options(base, **options)
    return raindrops.raindrop_options(base if options is None else options)
