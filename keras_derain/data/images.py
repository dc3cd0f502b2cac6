"""Image files: listing, checking and decoding, shared by the paired and synthetic datasets.

Every check runs in Python *before* a ``tf.data`` pipeline is built, so bad
input fails with a :class:`DatasetError` that names the file instead of a
TensorFlow stack trace from inside the graph. Decoding inside the pipeline is
pure TensorFlow (``tf.io.decode_image``), with no Python per image.
"""

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import os
import re

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Formats that both PIL (the checks) and tf.io.decode_image (the pipeline) read.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_TF_FORMATS = {"PNG", "JPEG", "BMP", "GIF", "MPO"}


class DatasetError(ValueError):
    """Bad dataset input: a missing partner, an unreadable file, mismatched sizes, ..."""


def natural_key(path):
    """Sort key that orders ``2_rain.png`` before ``10_rain.png``."""
    parts = re.split(r"(\d+)", Path(path).name)
    return [int(part) if part.isdigit() else part.lower() for part in parts]


def list_images(folder, *, recursive=False):
    """Image files in ``folder``, in natural order; hidden files and folders are skipped.

    Args:
        folder: the folder to list.
        recursive: also list the images in its subfolders (photo libraries are
            nested), in natural order of their relative paths. Symbolic links to
            folders are not followed, so a link loop cannot trap the walk.

    Raises:
        DatasetError: the folder does not exist, is not a folder, or holds no image.
    """
    folder = Path(folder)
    if not folder.exists():
        raise DatasetError(f"{folder}: no such folder")
    if not folder.is_dir():
        raise DatasetError(f"{folder}: not a folder")
    if recursive:
        candidates = []
        for root, folders, names in os.walk(folder):
            folders[:] = [name for name in folders if not name.startswith(".")]
            candidates += [Path(root) / name for name in names]
    else:
        candidates = list(folder.iterdir())
    files = [
        path
        for path in candidates
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")
    ]
    if not files:
        where = "in this folder or its subfolders" if recursive else "in this folder"
        raise DatasetError(f"{folder}: no images ({', '.join(IMAGE_SUFFIXES)}) {where}")
    return sorted(files, key=lambda path: [natural_key(part) for part in path.relative_to(folder).parts])


def check_image(path):
    """Fully decode one image with PIL and return its ``(width, height)``.

    Raises:
        DatasetError: the file is missing, unreadable, truncated or corrupt, or in
            a format that ``tf.io.decode_image`` cannot read.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    try:
        with Image.open(path) as image:
            if image.format not in _TF_FORMATS:
                raise DatasetError(
                    f"{path}: unsupported image format {image.format}; use PNG, JPEG, BMP or GIF"
                )
            if image.format == "BMP" and image.mode not in ("RGB", "RGBA", "L"):
                # TensorFlow fails on 1- and 4-bit BMPs and reads palette BMPs as
                # gray indices (wrong colours, no error): checked with TF 2.21.
                raise DatasetError(f"{path}: a {image.mode}-mode BMP, which TensorFlow misreads; save it as PNG")
            image.load()  # a full decode: catches truncated and corrupt files
            return image.size
    except DatasetError:
        raise
    except Image.DecompressionBombError as error:
        raise DatasetError(f"{path}: too large to decode safely ({error})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        raise DatasetError(f"{path}: unreadable or corrupt image ({error})") from None


def exif_orientation(path):
    """The EXIF orientation tag of an image file (1, upright, when it has none)."""
    with Image.open(path) as image:
        return int(image.getexif().get(0x0112, 1))


def check_images(paths, workers=None):
    """:func:`check_image` for many files in parallel; returns their sizes in order.

    PIL releases the GIL while decoding, so threads help on a multi-core machine.
    """
    paths = list(paths)
    workers = workers or min(8, os.cpu_count() or 1)
    if len(paths) < 4 or workers == 1:
        return [check_image(path) for path in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(check_image, paths))


def read_rgb(path):
    """Read an image file as an 8-bit RGB ``numpy`` array (HxWx3, uint8).

    Grayscale, RGBA, palette and 16-bit images become 8-bit RGB, as in the
    ``tf.data`` pipeline. An EXIF orientation (phone photos) is applied, so
    the array is upright as photo viewers show the file.

    Example:
        >>> from keras_derain.data.images import read_rgb
        >>> read_rgb("photo.png").shape  # doctest: +SKIP
        (480, 720, 3)
    """
    path = Path(path)
    check_image(path)
    with Image.open(path) as opened:
        image = ImageOps.exif_transpose(opened)
        if image.mode.startswith("I;16"):
            # 16-bit grayscale: keep the high byte, as tf.io.decode_image does.
            gray = (np.asarray(image, dtype=np.uint32) >> 8).astype(np.uint8)
            return np.repeat(gray[..., None], 3, axis=-1)
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


def decode_rgb(path):
    """TensorFlow op: read and decode an image file to a uint8 HxWx3 tensor.

    Used inside ``tf.data`` maps; grayscale, RGBA, palette and 16-bit images
    become 8-bit RGB.
    """
    import tensorflow as tf

    data = tf.io.read_file(path)
    image = tf.io.decode_image(data, channels=3, dtype=tf.uint8, expand_animations=False)
    image.set_shape([None, None, 3])
    return image
