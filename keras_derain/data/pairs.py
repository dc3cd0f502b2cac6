"""Paired (rainy, clean) photos on disk: finding them, checking them, and a tf.data pipeline.

Two layouts are read:

- The Raindrop dataset (Qian et al., CVPR 2018): ``root/data/N_rain.png`` with
  ``root/gt/N_clean.png`` (PNG or JPEG). ``root`` may also be the dataset folder
  holding ``train/``, ``test_a/`` and ``test_b/``, chosen by ``split``.
- A generic layout: two folders (``rainy/`` and ``clean/``, or ``input/`` and
  ``target/``, ...) whose files match by stem, e.g. ``rainy/0042.jpg`` with
  ``clean/0042.png``.
"""

from pathlib import Path
import re

import tensorflow as tf

from keras_derain.data.augment import element_seeds, random_crop_flip, to_signed
from keras_derain.data.images import DatasetError, check_images, decode_rgb, exif_orientation, list_images, natural_key

RAINDROP_SPLITS = ("train", "test_a", "test_b")
# Folder names of the generic layout, as (rainy, clean).
GENERIC_FOLDERS = (("rainy", "clean"), ("rain", "clean"), ("input", "target"), ("input", "gt"))
_RAINDROP_NAME = re.compile(r"^(?P<key>.+?)_(?P<kind>rain|clean)$", re.IGNORECASE)


def _raindrop_key(path, kind):
    match = _RAINDROP_NAME.match(path.stem)
    if not match or match.group("kind").lower() != kind:
        raise DatasetError(f"{path}: expected a name like N_{kind}{path.suffix} in the Raindrop layout")
    return match.group("key")


def _by_key(files, key_of):
    """``{key: path}``; two files with one key (``1.jpg`` and ``1.png``) are an error, not a silent pick."""
    by_key = {}
    for path in files:
        key = key_of(path)
        if key in by_key:
            raise DatasetError(f"{path}: same name as {by_key[key].name}; keep one of the two")
        by_key[key] = path
    return by_key


def _match(rainy_files, clean_files, rainy_key, clean_key):
    rainy_by_key = _by_key(rainy_files, rainy_key)
    clean_by_key = _by_key(clean_files, clean_key)
    for key, path in rainy_by_key.items():
        if key not in clean_by_key:
            raise DatasetError(f"{path}: no clean partner in {clean_files[0].parent}")
    for key, path in clean_by_key.items():
        if key not in rainy_by_key:
            raise DatasetError(f"{path}: no rainy partner in {rainy_files[0].parent}")
    keys = sorted(rainy_by_key, key=natural_key)
    return [(rainy_by_key[key], clean_by_key[key]) for key in keys]


def _resolve_root(root, split):
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: no such folder")
    if not root.is_dir():
        raise DatasetError(f"{root}: not a folder")
    if split is not None:
        split_root = root / split
        if not split_root.is_dir():
            present = [name for name in RAINDROP_SPLITS if (root / name).is_dir()]
            raise DatasetError(
                f"{root}: no split {split!r} here (found: {', '.join(present) or 'none'})"
            )
        return split_root
    if not (root / "data").is_dir() and any((root / name).is_dir() for name in RAINDROP_SPLITS):
        present = [name for name in RAINDROP_SPLITS if (root / name).is_dir()]
        raise DatasetError(f"{root}: holds splits {', '.join(present)}; give one of them, e.g. {root / present[0]}")
    return root


def find_pairs(root, split=None):
    """List the (rainy, clean) file pairs under ``root``, in natural order.

    Args:
        root: a Raindrop-layout folder (``data/`` + ``gt/``), the dataset folder
            holding ``train/``, ``test_a/``, ``test_b/`` (then give ``split``), or a
            generic folder with ``rainy/`` + ``clean/`` (or ``input/`` + ``target/``)
            whose files match by stem.
        split: sub-folder of ``root`` to read, e.g. ``"test_a"``.

    Returns:
        list of ``(rainy_path, clean_path)`` tuples of ``pathlib.Path``, sorted by
        the number in the name (``2`` before ``10``).

    Raises:
        DatasetError: the folder does not exist, holds no pairs, or a file has no partner.

    Example:
        >>> from keras_derain.data import find_pairs
        >>> pairs = find_pairs("Raindrop", split="test_a")  # doctest: +SKIP
        >>> pairs[0]  # doctest: +SKIP
        (PosixPath('Raindrop/test_a/data/0_rain.png'), PosixPath('Raindrop/test_a/gt/0_clean.png'))
    """
    folder = _resolve_root(root, split)
    if (folder / "data").is_dir() or (folder / "gt").is_dir():
        for name in ("data", "gt"):
            if not (folder / name).is_dir():
                raise DatasetError(f"{folder}: Raindrop layout needs both data/ and gt/; {name}/ is missing")
        rainy_files = list_images(folder / "data")
        clean_files = list_images(folder / "gt")
        return _match(
            rainy_files,
            clean_files,
            lambda path: _raindrop_key(path, "rain"),
            lambda path: _raindrop_key(path, "clean"),
        )
    for rainy_name, clean_name in GENERIC_FOLDERS:
        if (folder / rainy_name).is_dir() and (folder / clean_name).is_dir():
            rainy_files = list_images(folder / rainy_name)
            clean_files = list_images(folder / clean_name)
            return _match(rainy_files, clean_files, lambda path: path.stem, lambda path: path.stem)
    layouts = ", ".join(f"{rainy}/+{clean}/" for rainy, clean in GENERIC_FOLDERS)
    raise DatasetError(f"{folder}: no pairs found; expected data/+gt/ (Raindrop layout) or {layouts}")


def check_pairs(pairs):
    """Decode every image once and check that both images of each pair have one size.

    Returns:
        list of ``(height, width)``, one per pair.

    Raises:
        DatasetError: an unreadable or corrupt file, or a pair of two sizes.
    """
    if not pairs:
        raise DatasetError("no pairs to read")
    files = [path for pair in pairs for path in pair]
    sizes = check_images(files)
    shapes = []
    for (rainy, clean), rainy_size, clean_size in zip(pairs, sizes[0::2], sizes[1::2]):
        if rainy_size != clean_size:
            raise DatasetError(
                f"{rainy} is {rainy_size[0]}x{rainy_size[1]} but its partner {clean} is "
                f"{clean_size[0]}x{clean_size[1]}"
            )
        # read_rgb (evaluation, prediction) turns images upright by their EXIF tag,
        # tf.data (training) does not: the two must agree for both paths to see a pair.
        if exif_orientation(rainy) != exif_orientation(clean):
            raise DatasetError(f"{rainy} and its partner {clean} have different EXIF orientations; save both upright")
        shapes.append((rainy_size[1], rainy_size[0]))
    return shapes


# AttentiveGAN's rule marks a pixel whose |rainy - clean|, summed over the
# channels (0-255 each), is at least 35. On real pairs that differ in exposure
# it marks 38-95% of the frame (RESTORATION.md), so the mask is soft: 0 at 35,
# rising to 1 at 3 x 35, then closed and opened by 5x5 (as AttentiveGAN's code).
MASK_LOW, MASK_HIGH, MASK_MORPHOLOGY = 35.0, 105.0, 5


def difference_mask(rainy, clean):
    """A soft drop mask of a real pair: ``[..., H, W, 1]`` in [0, 1], from images in [-1, 1].

    The channel-summed ``|rainy - clean|`` (in 0-255 levels) is mapped linearly
    from 0 at ``MASK_LOW`` (AttentiveGAN's threshold, 35) to 1 at ``MASK_HIGH``
    (105), then closed and opened with a 5x5 square (grey-level max and min
    pooling), which fills pinholes and removes thin lines that misalignment
    leaves at edges.

    Example:
        >>> import tensorflow as tf
        >>> rainy = tf.zeros([1, 8, 8, 3]); clean = tf.zeros([1, 8, 8, 3])
        >>> float(tf.reduce_max(difference_mask(rainy, clean)))
        0.0
    """
    levels = tf.reduce_sum(tf.abs(rainy - clean), axis=-1, keepdims=True) * 127.5
    mask = tf.clip_by_value((levels - MASK_LOW) / (MASK_HIGH - MASK_LOW), 0.0, 1.0)
    single = mask.shape.rank == 3
    if single:
        mask = mask[tf.newaxis]

    def dilate(image):
        return tf.nn.max_pool2d(image, MASK_MORPHOLOGY, 1, "SAME")

    def erode(image):
        return -tf.nn.max_pool2d(-image, MASK_MORPHOLOGY, 1, "SAME")

    mask = dilate(erode(erode(dilate(mask))))  # close, then open
    return mask[0] if single else mask


# Rounds of colour_match: fit on all pixels but the drops of the last round's mask.
COLOUR_MATCH_ROUNDS = 3
# Below this share of the frame left outside the mask, fit on every pixel instead.
COLOUR_MATCH_MIN_SHARE = 0.05
# A gain is fitted as (cov + EPS) / (var + EPS): a flat channel keeps gain 1.
_COLOUR_MATCH_EPS = 1e-4


def _affine_fit(rainy, clean, weights):
    """Per-channel ``gain, offset`` minimising ``sum(weights * (gain * clean + offset - rainy) ** 2)``."""
    total = tf.reduce_sum(weights, axis=[-3, -2], keepdims=True)
    mean_clean = tf.reduce_sum(weights * clean, axis=[-3, -2], keepdims=True) / total
    mean_rainy = tf.reduce_sum(weights * rainy, axis=[-3, -2], keepdims=True) / total
    centred = clean - mean_clean
    covariance = tf.reduce_sum(weights * centred * (rainy - mean_rainy), axis=[-3, -2], keepdims=True) / total
    variance = tf.reduce_sum(weights * centred * centred, axis=[-3, -2], keepdims=True) / total
    gain = (covariance + _COLOUR_MATCH_EPS) / (variance + _COLOUR_MATCH_EPS)
    return gain, mean_rainy - gain * mean_clean


def colour_match(rainy, clean):
    """The clean image with its global colour matched to the rainy one outside the drops.

    For pairs shot by two cameras, or at two exposures (the lens pairs), the
    clean target differs from the rainy photo everywhere, not only under the
    drops, and a generator trained on it learns to repaint the whole frame.
    This fits, per channel, ``clean' = gain * clean + offset`` by least squares
    on the pixels outside the drops and returns ``clean'``. The drops are the
    :func:`difference_mask` of the pair, found again after each of
    ``COLOUR_MATCH_ROUNDS`` fits (the first fit uses the unmatched pair's mask,
    which over-marks a pair in other colours; each round marks less). The fit
    uses the pixels where the mask is 0. The result is rounded to 8-bit levels,
    as the photo was, and a pixel whose level the match does not change is
    returned as it came, so a pair whose colours already match (a fit within
    half a level of the identity) comes back unchanged, bit for bit.

    Args:
        rainy, clean: ``[..., H, W, 3]`` float images in [-1, 1] on 8-bit levels.

    Returns:
        The matched clean image, same shape, in [-1, 1].

    Example:
        >>> import tensorflow as tf
        >>> clean = tf.random.stateless_uniform([8, 8, 3], [0, 1], -0.5, 0.5)
        >>> clean = tf.round((clean + 1) * 127.5) / 127.5 - 1  # on 8-bit levels
        >>> bool(tf.reduce_all(colour_match(clean, clean) == clean))
        True
        >>> darker = tf.round((0.8 * clean + 1) * 127.5) / 127.5 - 1
        >>> float(tf.reduce_max(tf.abs(colour_match(darker, clean) - darker))) < 2 / 127.5
        True
    """
    pixels = tf.cast(tf.reduce_prod(tf.shape(clean)[-3:-1]), tf.float32)
    matched = clean
    for _ in range(COLOUR_MATCH_ROUNDS):
        weights = tf.cast(difference_mask(rainy, matched) == 0.0, tf.float32)
        share = tf.reduce_sum(weights, axis=[-3, -2], keepdims=True) / pixels
        weights = tf.where(share < COLOUR_MATCH_MIN_SHARE, tf.ones_like(weights), weights)
        gain, offset = _affine_fit(rainy, clean, weights)
        matched = gain * clean + offset
    levels = tf.round((tf.clip_by_value(matched, -1.0, 1.0) + 1.0) * 127.5)
    return tf.where(levels == tf.round((clean + 1.0) * 127.5), clean, levels / 127.5 - 1.0)


_colour_match = colour_match  # paired_dataset's argument of that name hides the function


def paired_dataset(
    root,
    split=None,
    *,
    crop_size=None,
    batch_size=1,
    shuffle=False,
    augment=False,
    resize_jitter=1.0,
    seed=None,
    cache=False,
    repeat=False,
    drop_remainder=None,
    return_mask=False,
    colour_match=False,
):
    """A ``tf.data.Dataset`` of ``(rainy, clean)`` batches, float32 in [-1, 1], NHWC.

    Every file is decoded once in Python first (:func:`check_pairs`), so a
    missing partner, a corrupt file or a pair of two sizes fails here, naming the
    file, and not later inside the graph. The pipeline itself is pure TensorFlow:
    parallel decoding (``AUTOTUNE``) and ``prefetch``.

    Args:
        root, split: where the pairs are; see :func:`find_pairs`.
        crop_size: side of a random square crop, cut from the *same* window of both
            images (training). ``None`` keeps whole images (evaluation); then all
            images must have one size when ``batch_size > 1``.
        batch_size: images per batch.
        shuffle: shuffle the pairs each epoch.
        augment: random horizontal flip (of both images together).
        resize_jitter: scale both images by a random factor in ``[1, resize_jitter]``
            before cropping (needs ``crop_size``).
        seed: makes shuffling, crops and flips reproducible.
        cache: keep decoded images in memory after the first epoch.
        repeat: repeat forever (for ``fit(steps_per_epoch=...)``).
        drop_remainder: drop a last short batch; defaults to ``crop_size is not None``.
        return_mask: also yield the drop mask of each pair, ``(rainy, clean, mask)``
            (see :func:`difference_mask`), to supervise a generator's mask head.
        colour_match: match each clean image's global colour to its rainy
            partner outside the drops (see :func:`colour_match`), on the whole
            image before cropping; the mask is then taken from the matched pair.

    Example:
        >>> from keras_derain.data import paired_dataset
        >>> train = paired_dataset("Raindrop", "train", crop_size=256, batch_size=8,
        ...                        shuffle=True, augment=True, seed=0)  # doctest: +SKIP
        >>> rainy, clean = next(iter(train))  # doctest: +SKIP
        >>> rainy.shape  # doctest: +SKIP
        TensorShape([8, 256, 256, 3])
    """
    if crop_size is not None and (not isinstance(crop_size, int) or crop_size <= 0):
        raise ValueError(f"crop_size must be a positive integer or None, got {crop_size!r}")
    if not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if resize_jitter < 1.0:
        raise ValueError(f"resize_jitter must be >= 1, got {resize_jitter!r}")
    if resize_jitter > 1.0 and crop_size is None:
        raise ValueError("resize_jitter needs crop_size (whole images keep their size)")

    pairs = find_pairs(root, split)
    shapes = check_pairs(pairs)
    if crop_size is None and batch_size > 1 and len(set(shapes)) > 1:
        sizes = ", ".join(f"{w}x{h}" for h, w in sorted(set(shapes)))
        raise DatasetError(
            f"{root}: images of several sizes ({sizes}) cannot be batched whole; "
            "use batch_size=1 or crop_size"
        )
    if drop_remainder is None:
        drop_remainder = crop_size is not None

    rainy_paths = [str(rainy) for rainy, _ in pairs]
    clean_paths = [str(clean) for _, clean in pairs]
    dataset = tf.data.Dataset.from_tensor_slices((rainy_paths, clean_paths))
    def decode(rainy_path, clean_path):
        rainy, clean = decode_rgb(rainy_path), decode_rgb(clean_path)
        if colour_match:
            matched = _colour_match(to_signed(rainy)[tf.newaxis], to_signed(clean)[tf.newaxis])[0]
            clean = tf.cast(tf.round((matched + 1.0) * 127.5), tf.uint8)
        return tf.concat([rainy, clean], axis=-1)

    dataset = dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(len(pairs), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()

    if crop_size is not None or augment:

        def transform(seeds, stacked):
            stacked = tf.cast(stacked, tf.float32)
            if crop_size is None:
                return tf.image.stateless_random_flip_left_right(stacked, seeds)
            return random_crop_flip(
                stacked, crop_size, seeds, flip=augment, resize_jitter=resize_jitter
            )

        dataset = tf.data.Dataset.zip(element_seeds(seed), dataset)
        dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE)

    def split_pair(stacked):
        rainy, clean = to_signed(stacked[..., :3]), to_signed(stacked[..., 3:])
        if return_mask:
            return rainy, clean, difference_mask(rainy, clean)
        return rainy, clean

    dataset = dataset.map(split_pair, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
    return dataset.prefetch(tf.data.AUTOTUNE)
