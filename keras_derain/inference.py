"""Derain photos of any size with a trained generator: `Derainer`.

A `Derainer` loads a ``.keras`` generator, a SavedModel folder or an ``.onnx``
file written by `keras_derain.export`, and maps a uint8 RGB photo to a uint8
RGB photo of the same size. Sizes that are not multiples of the generator's
stride are reflect-padded (centred) and cropped back, inside the graph for
every format (`keras_derain.export.PaddedGenerator`). Photos larger than
``tile_size`` run in overlapping tiles whose overlaps are blended with linear
ramps, so memory stays bounded (one batch of tiles plus float32 copies of the
photo: about 200 MB for 4000x3000). A fixed-size generator (the study's cGAN)
always runs in tiles of its size.

Tiles are cut from the photo padded as the whole-photo graph pads it, at
offsets that are multiples of ``min(stride, overlap rounded down to a power
of two)``: when ``overlap`` is at least the stride, a strided U-Net sees each
tile on the same pixel grid as the whole photo (a smaller overlap trades that
for fewer tiles: aligning a depth-8 U-Net's 512-pixel tiles to its stride of
256 would leave steps of 256 pixels, 2.6 times the tiles).

Tiled versus whole-photo output, then: without a norm (``norm="none"``) or
with batch norm (moving statistics at inference) they agree exactly at
pixels farther than the receptive field from every tile edge (16 pixels for
a depth-3 U-Net), and the blend keeps the seams small; in
tests/test_inference.py a random depth-3 network with 64-pixel tiles and
overlap 16 differs by at most 0.06 in [-1, 1] (mean 0.002). An instance-norm
generator (the Pix2Pix default) normalises each tile with the tile's own
statistics, so its tiled output differs everywhere, not only at seams (mean
0.12 for that random network with 64-pixel tiles; not measured for a trained
generator). It was trained on crops, so neither output is more "correct";
give ``tile_size`` larger than the photo to run it whole when memory allows.
"""

import json
from pathlib import Path

import numpy as np

DEFAULT_WEIGHTS_DIR = Path(__file__).parent / "weights"
# Looked up in this order in DEFAULT_WEIGHTS_DIR; shipping any one makes Derainer() work.
DEFAULT_WEIGHT_NAMES = ("generator.keras", "generator.f16.npz", "generator.onnx", "generator_savedmodel")


class InferenceError(ValueError):
    """A model that cannot be loaded, or an image that cannot be derained."""


def default_model_path():
    """The generator shipped with the package, or InferenceError if none is.

    Example:
        >>> default_model_path()  # doctest: +SKIP
        PosixPath('.../keras_derain/weights/generator.keras')
    """
    for name in DEFAULT_WEIGHT_NAMES:
        path = DEFAULT_WEIGHTS_DIR / name
        if path.exists():
            return path
    raise InferenceError(
        f"no default generator is shipped yet ({DEFAULT_WEIGHTS_DIR}/{DEFAULT_WEIGHT_NAMES[0]} is missing); "
        "pass a model: a .keras file, a SavedModel folder or an .onnx file"
    )


def _load_keras(path):
    import keras

    return _keras_runner(keras.saving.load_model(str(path), compile=False))


def _load_compact(path):
    from keras_derain.compact import load_compact

    return _keras_runner(load_compact(path))


def _keras_runner(generator):
    import tensorflow as tf

    from keras_derain.export import PaddedGenerator, metadata
    from keras_derain.models import float32_copy

    generator = float32_copy(generator)  # a mixed_float16 model computes in float32 here
    info = metadata(generator)
    model = generator if info["fixed_size"] else PaddedGenerator(generator)
    spec = tf.TensorSpec((None, *(info["fixed_size"] or (None, None)), 3), tf.float32)
    # One traced graph for every tile shape, instead of Keras retracing per size.
    run = tf.function(lambda rainy: model(rainy, training=False), input_signature=[spec])
    return (lambda rainy: run(rainy).numpy()), info


def _load_savedmodel(path):
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    if "derain_float" not in loaded.signatures:
        raise InferenceError(f"{path}: a SavedModel without a 'derain_float' signature; export it with export.py")
    signature = loaded.signatures["derain_float"]
    info_file = path / "assets.extra" / "keras_derain.json"
    info = json.loads(info_file.read_text()) if info_file.is_file() else _info_from_shape(
        signature.structured_input_signature[1]["rainy"].shape[1:3]
    )
    return (lambda rainy: signature(rainy=tf.constant(rainy))["derained"].numpy()), info


def _load_onnx(path):
    try:
        import onnxruntime
    except ImportError:
        raise InferenceError(f"{path}: running ONNX needs onnxruntime: pip install 'keras-derain[onnx]'") from None
    options = onnxruntime.SessionOptions()
    # Idle threads that spin for work steal the CPU on a shared machine: 30% slower here.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    rainy = session.get_inputs()[0]
    stored = session.get_modelmeta().custom_metadata_map
    if "required_multiple" in stored:
        info = {key: json.loads(value) for key, value in stored.items() if key in _INFO_KEYS}
    else:
        info = _info_from_shape(rainy.shape[1:3])
    output = session.get_outputs()[0].name
    return (lambda batch: session.run([output], {rainy.name: batch})[0]), info


_INFO_KEYS = ("required_multiple", "fixed_size")


def _info_from_shape(size):
    """Metadata for an export without ours: fixed if its input size is; no tile alignment."""
    height, width = size
    fixed = isinstance(height, int) and isinstance(width, int)
    return {"required_multiple": 1, "fixed_size": [height, width] if fixed else None}


def load_runner(path):
    """``(run, info)`` for a model file: ``run`` maps float32 NHWC in [-1, 1] to the same.

    ``info["fixed_size"]`` is the generator's fixed ``(height, width)``, or
    None if it takes any size (padding inside the graph);
    ``info["required_multiple"]`` the stride its tiles are aligned to.

    Raises:
        InferenceError: missing path, unknown kind of file, or a load failure.
    """
    path = Path(path)
    if not path.exists():
        raise InferenceError(f"{path}: no such model file or folder")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise InferenceError(f"{path}: a folder but not a SavedModel (no saved_model.pb)")
        loader = _load_savedmodel
    elif path.suffix == ".keras":
        loader = _load_keras
    elif path.suffix == ".onnx":
        loader = _load_onnx
    elif path.suffix == ".npz":
        loader = _load_compact
    else:
        raise InferenceError(
            f"{path}: unknown model kind; use a .keras file, a SavedModel folder, an .onnx file "
            "or a compact .npz (keras_derain.compact)"
        )
    try:
        return loader(path)
    except InferenceError:
        raise
    except Exception as error:  # each runtime raises its own types for a bad file
        raise InferenceError(f"{path}: cannot be loaded ({type(error).__name__}: {error})") from None


def tile_starts(length, tile, overlap, align=1):
    """Start offsets of tiles of ``tile`` pixels covering ``length``, overlapping by at least ``overlap``.

    Starts are multiples of ``align`` (when ``length`` and ``tile`` are, the
    last one too), so a strided network sees each tile on the same pixel grid
    as the whole photo. The last tile ends at the edge.

    Example:
        >>> tile_starts(300, 64, 16)
        [0, 48, 96, 144, 192, 236]
        >>> tile_starts(304, 64, 16, align=8)
        [0, 48, 96, 144, 192, 240]
    """
    if length <= tile:
        return [0]
    step = max(align, (tile - overlap) // align * align)
    return list(range(0, length - tile, step)) + [length - tile]


def ramp(length, overlap):
    """Blend weights along one tile side: rising linearly over ``overlap`` pixels at both ends.

    Never zero, so a pixel that only one tile covers (at the photo's border)
    keeps that tile's value after normalising.
    """
    position = np.arange(length, dtype=np.float32)
    rising = (position + 1) / (overlap + 1)
    return np.minimum(1.0, np.minimum(rising, rising[::-1]))


# Whole Raindrop frames (720x480) run in one piece: an instance-normalised
# generator sees the same statistics as a whole photo. Larger photos are tiled.
DEFAULT_TILE_SIZE = 1024


class Derainer:
    """Remove raindrops from photos of any size with a trained generator.

    Args:
        path: a ``.keras`` generator, a SavedModel folder or an ``.onnx`` file
            (from export.py); None: the generator shipped in
            ``keras_derain/weights/`` (`default_model_path`).
        tile_size: photos taller or wider than this run in overlapping
            tiles of this side (ignored for a fixed-size generator, which
            tiles at its own size). Keep it a multiple of the generator's
            stride (512 and 1024 suit every Pix2Pix depth up to 9) to avoid padding
            each tile.
        overlap: pixels shared by neighbouring tiles (at least), blended
            linearly; at most half a tile. Tiles sit on the network's pixel
            grid when it is at least the stride (`required_multiple`).
        batch_size: tiles run together (more is faster on a GPU and needs
            more memory).

    Example:
        >>> from keras_derain.inference import Derainer
        >>> derainer = Derainer("runs/demo/best.keras", tile_size=512)  # doctest: +SKIP
        >>> derainer.derain("rainy.jpg").shape  # doctest: +SKIP
        (3000, 4000, 3)
    """

    def __init__(self, path=None, *, tile_size=DEFAULT_TILE_SIZE, overlap=32, batch_size=1):
        if not isinstance(tile_size, int) or tile_size < 16:
            raise InferenceError(f"tile_size must be an integer of at least 16, got {tile_size!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InferenceError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.path = Path(path) if path is not None else default_model_path()
        self._run, info = load_runner(self.path)
        self.fixed_size = tuple(info["fixed_size"]) if info["fixed_size"] else None
        self.multiple = int(info["required_multiple"])
        # Tiles of a multiple of the stride need no padding inside the graph.
        self.tile_size = -(-tile_size // self.multiple) * self.multiple
        self.batch_size = batch_size
        smallest_tile = min(self.fixed_size) if self.fixed_size else self.tile_size
        if not isinstance(overlap, int) or not 0 <= overlap <= smallest_tile // 2:
            raise InferenceError(f"overlap must be an integer in [0, {smallest_tile // 2}], got {overlap!r}")
        self.overlap = overlap

    def derain(self, image):
        """Derain one photo: a uint8 HxWx3 array or an image file -> uint8 HxWx3, same size."""
        rainy = self._as_array(image)
        generated = self.derain_float(rainy.astype(np.float32) / 127.5 - 1.0)
        return np.clip(np.round((generated + 1.0) * 127.5), 0, 255).astype(np.uint8)

    def derain_many(self, images):
        """`derain` each photo in turn (arrays or paths), yielding results; photos may differ in size."""
        for image in images:
            yield self.derain(image)

    def derain_float(self, rainy):
        """Derain one float32 HxWx3 photo in [-1, 1], returning float32 in [-1, 1]."""
        height, width = rainy.shape[:2]
        if self.fixed_size:
            padded, (top, left) = _pad_to_at_least(rainy, *self.fixed_size), (0, 0)
            tile, align = self.fixed_size, 1
        elif height <= self.tile_size and width <= self.tile_size:
            return self._run(rainy[None])[0]  # whole: the graph pads to the stride
        else:
            from keras_derain.export import reflect_pad_array

            # Pad as the graph would for the whole photo, and tile on its grid.
            padded, (top, left) = reflect_pad_array(rainy, self.multiple)
            tile, align = (self.tile_size, self.tile_size), self._alignment()
        tile = (min(tile[0], padded.shape[0]), min(tile[1], padded.shape[1]))
        generated = self._tiled(padded, tile, align)
        return generated[top : top + height, left : left + width]

    def _alignment(self):
        """Tile offsets' multiple: the stride, unless the overlap is smaller (see the module doc)."""
        power_of_two = 1 << max(0, self.overlap.bit_length() - 1)
        return min(self.multiple, power_of_two)

    def _tiled(self, rainy, tile, align):
        (height, width), (tile_height, tile_width) = rainy.shape[:2], tile
        weights = np.outer(ramp(tile_height, self.overlap), ramp(tile_width, self.overlap))[..., None]
        boxes = [
            (top, left)
            for top in tile_starts(height, tile_height, self.overlap, align)
            for left in tile_starts(width, tile_width, self.overlap, align)
        ]
        blended = np.zeros((height, width, 3), np.float32)
        total = np.zeros((height, width, 1), np.float32)
        for first in range(0, len(boxes), self.batch_size):
            batch = boxes[first : first + self.batch_size]
            tiles = np.stack([rainy[top : top + tile_height, left : left + tile_width] for top, left in batch])
            for (top, left), generated in zip(batch, self._run(tiles)):
                blended[top : top + tile_height, left : left + tile_width] += weights * generated
                total[top : top + tile_height, left : left + tile_width] += weights
        return blended / total

    @staticmethod
    def _as_array(image):
        if isinstance(image, (str, Path)):
            from keras_derain.data.images import read_rgb

            image = read_rgb(image)  # DatasetError naming the file if unreadable
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise InferenceError(f"expected a uint8 HxWx3 RGB image, got {image.dtype} {image.shape}")
        if min(image.shape[:2]) < 2:
            raise InferenceError(f"image of {image.shape[0]}x{image.shape[1]} pixels is too small (at least 2x2)")
        return image


def _pad_to_at_least(rainy, height, width):
    """Reflect-pad an HxWx3 array at the bottom and right up to ``height`` x ``width``."""
    pad_height, pad_width = max(0, height - rainy.shape[0]), max(0, width - rainy.shape[1])
    if not (pad_height or pad_width):
        return rainy
    return np.pad(rainy, [(0, pad_height), (0, pad_width), (0, 0)], mode="reflect")


__all__ = ["Derainer", "InferenceError", "default_model_path", "load_runner", "tile_starts"]
