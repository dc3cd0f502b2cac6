"""Derain photos of any size with a trained generator: `Derainer`.

A `Derainer` loads a ``.keras`` generator, a SavedModel folder or an ``.onnx``
file written by `keras_derain.export`, and maps a uint8 RGB photo to a uint8
RGB photo of the same size. Sizes that are not multiples of the generator's
stride are reflect-padded (centred) and cropped back, inside the graph for
every format (`keras_derain.export.PaddedGenerator`). Photos larger than
``tile_size`` run in overlapping tiles whose overlaps are blended with linear
ramps. Memory is bounded by design: the photo stays uint8 (input and output,
6 bytes a pixel); tiles are cut from it one batch at a time and blended into
a float32 band one tile high and one photo wide, which is turned into uint8
rows as soon as no later tile reaches them. A file over ``max_pixels`` is
refused from its header, before it is decoded. A fixed-size generator (the
study's cGAN) always runs in tiles of its size.

Every model is checked when it is loaded: one RGB input, and a first output
that is an RGB photo of the input's size (a later output, e.g. a drop mask, is
ignored), so a classifier or a discriminator is refused in one line.

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
generator (the study's Pix2Pix, built-in ``pix2pix``) normalises each tile with the tile's own
statistics, so its tiled output differs everywhere, not only at seams (mean
0.12 for that random network with 64-pixel tiles; not measured for a trained
generator). It was trained on crops, so neither output is more "correct";
give ``tile_size`` larger than the photo to run it whole when memory allows.
"""

import contextlib
import functools
import json
import zipfile
from pathlib import Path

import numpy as np

DEFAULT_WEIGHTS_DIR = Path(__file__).parent / "weights"
# Looked up in this order in DEFAULT_WEIGHTS_DIR; shipping any one makes Derainer() work.
DEFAULT_WEIGHT_NAMES = ("generator.keras", "generator.f16.npz", "generator.onnx", "generator_savedmodel")
# Photos larger than this are refused from their header: 150 MP admits 12000x9000
# (108 MP, measured in the README) and refuses a 13000x13000 file by default.
DEFAULT_MAX_PIXELS = 150_000_000
_ORIENTATION = 0x0112  # the EXIF tag phones use to mark a rotated photo


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


def builtin_models():
    """``{name: path}`` of the generators shipped in ``keras_derain/weights/``.

    A file's name up to its first dot names it (``lens.f16.npz`` is ``lens``);
    the one `default_model_path` loads is ``default``.

    Example:
        >>> sorted(builtin_models())  # doctest: +SKIP
        ['default', 'dry-safe', 'lens', 'pix2pix', 'restoration']
    """
    models = {}
    for path in sorted(DEFAULT_WEIGHTS_DIR.iterdir()) if DEFAULT_WEIGHTS_DIR.is_dir() else []:
        if path.suffix in (".keras", ".npz", ".onnx") or (path / "saved_model.pb").is_file():
            name = path.name.split(".")[0]
            if name != "generator" and name != "generator_savedmodel":
                models.setdefault(name, path)
    with contextlib.suppress(InferenceError):
        models = {"default": default_model_path(), **models}
    return models


def model_path(model=None):
    """The file for ``model``: None is the default generator; a built-in name (``default``, ``lens``) its file.

    An existing path always wins over a built-in name.

    Example:
        >>> model_path("lens").name  # doctest: +SKIP
        'lens.f16.npz'
    """
    if model is None:
        return default_model_path()
    path = Path(model)
    if not path.exists() and not path.suffix:
        builtin = builtin_models()
        if str(model) in builtin:
            return builtin[str(model)]
        raise InferenceError(
            f"{model}: no such model file or folder, nor a built-in model ({', '.join(builtin) or 'none shipped'})"
        )
    return path


def _load_keras(path, output="derained"):
    import keras

    if not zipfile.is_zipfile(path):
        raise InferenceError(f"{path}: not a .keras file (a .keras file is a zip archive, this is not)")
    return _keras_runner(keras.saving.load_model(str(path), compile=False), path, output)


def _load_compact(path, output="derained"):
    from keras_derain.compact import load_compact

    return _keras_runner(load_compact(path), path, output)


def _check_keras_shapes(model, path):
    """One RGB photo in, an RGB photo first out: refuse classifiers and discriminators before tracing them."""
    if len(model.inputs) != 1:
        raise InferenceError(
            f"{path}: takes {len(model.inputs)} inputs, not a generator (a generator takes one photo; "
            "a discriminator takes two)"
        )
    rainy, generated = tuple(model.inputs[0].shape), tuple(model.outputs[0].shape)
    if len(rainy) != 4 or rainy[-1] != 3:
        raise InferenceError(f"{path}: takes input of shape {rainy}, not RGB photos (batch, height, width, 3)")
    if len(generated) != 4 or generated[-1] != 3:
        raise InferenceError(f"{path}: returns shape {generated}, not an RGB photo (batch, height, width, 3)")


def _keras_runner(generator, path, output="derained"):
    import keras
    import tensorflow as tf

    from keras_derain.export import PaddedGenerator, metadata
    from keras_derain.models import float32_copy
    from keras_derain.models.restoration import has_mask, mask_image_model

    _check_keras_shapes(generator, path)
    generator = float32_copy(generator)  # a mixed_float16 model computes in float32 here
    if output == "mask":
        if not has_mask(generator):
            raise InferenceError(f"{path}: has no drop-mask head, so no mask to save (the restoration generator has one)")
        generator = mask_image_model(generator)
    if len(generator.outputs) > 1:  # the derained photo first; a later output (a drop mask) is not used here
        generator = keras.Model(generator.inputs, generator.outputs[0])
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


def physical_cores():
    """CPU cores without their hyper-threads (Linux's /proc/cpuinfo), else ``os.cpu_count()``."""
    import os

    cores = set()
    with contextlib.suppress(OSError):
        physical = None
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "physical id":
                physical = value.strip()
            elif key.strip() == "core id":
                cores.add((physical, value.strip()))
    return len(cores) or os.cpu_count() or 1


def onnx_session(path):
    """An onnxruntime CPU session with the settings measured in benchmarks/results/inference.md.

    All graph optimisations (``ORT_ENABLE_ALL``: fusions and the NCHWc
    convolution layout), one intra-op thread per physical core (hyper-threads
    share a core's vector units), and idle threads that sleep instead of
    spinning for work (spinning steals the CPU from the rest of the process and
    from other processes on a shared machine).
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = physical_cores()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def reflect_pad_array(rainy, multiple):
    """Reflect-pad an NHWC or HWC array, centred, to the next multiple of ``multiple`` (numpy's reflect).

    The padding `keras_derain.export.PaddedGenerator` does inside a graph, and
    the one an ONNX file exported by `keras_derain.export` expects outside it.

    Returns:
        ``(padded, (top, left))``: the padded array and where the image starts in it.
    """
    height, width = rainy.shape[-3:-1]
    pad_height, pad_width = (-height) % multiple, (-width) % multiple
    top, left = pad_height // 2, pad_width // 2
    pads = [(top, pad_height - top), (left, pad_width - left), (0, 0)]
    pads = [(0, 0)] * (rainy.ndim - 3) + pads
    return np.pad(rainy, pads, mode="reflect"), (top, left)


def padded_outside(run, multiple):
    """Wrap ``run`` (NHWC float32 batches of multiples) to take any size: reflect-pad, run, crop."""
    if multiple <= 1:
        return run

    def run_any_size(rainy):
        height, width = rainy.shape[1:3]
        if height % multiple == 0 and width % multiple == 0:
            return run(rainy)
        padded, (top, left) = reflect_pad_array(rainy, multiple)
        return run(padded)[:, top : top + height, left : left + width]

    return run_any_size


def _load_onnx(path):
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        raise InferenceError(f"{path}: running ONNX needs onnxruntime: pip install 'keras-derain[onnx]'") from None
    session = onnx_session(path)
    if len(session.get_inputs()) != 1:
        raise InferenceError(f"{path}: takes {len(session.get_inputs())} inputs, not a generator (one photo)")
    rainy = session.get_inputs()[0]
    stored = session.get_modelmeta().custom_metadata_map
    if "required_multiple" in stored:
        info = {key: json.loads(value) for key, value in stored.items() if key in _INFO_KEYS}
    else:
        info = _info_from_shape(rainy.shape[1:3])
    output = session.get_outputs()[0].name

    def run(batch):
        return session.run([output], {rainy.name: batch})[0]

    if json.loads(stored.get("padding", '"inside"')) == "outside" and not info["fixed_size"]:
        run = padded_outside(run, int(info["required_multiple"]))  # files from export.py since issue #14
    return run, info


_INFO_KEYS = ("required_multiple", "fixed_size")


def _info_from_shape(size):
    """Metadata for an export without ours: fixed if its input size is; no tile alignment."""
    height, width = size
    fixed = isinstance(height, int) and isinstance(width, int)
    return {"required_multiple": 1, "fixed_size": [height, width] if fixed else None}


MASK_FORMATS = (".keras", ".npz")


def load_runner(path, output="derained"):
    """``(run, info)`` for a model file: ``run`` maps float32 NHWC in [-1, 1] to the same.

    ``info["fixed_size"]`` is the generator's fixed ``(height, width)``, or
    None if it takes any size (padding inside the graph);
    ``info["required_multiple"]`` the stride its tiles are aligned to.

    The model is run once on a blank photo: one whose output is not an RGB
    photo of the input's size is refused.

    ``output="mask"`` runs the drop-mask head of a generator that has one
    (`keras_derain.models.restoration.mask_image_model`): a grey RGB image,
    -1 dry and 1 drop. Only ``.keras`` and ``.npz`` generators keep the head.

    Raises:
        InferenceError: missing path, unknown kind of file, a load failure, or
            not a generator; one line naming the file.
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
    if output not in ("derained", "mask"):
        raise InferenceError(f"output must be 'derained' or 'mask', got {output!r}")
    if output == "mask":
        if path.suffix not in MASK_FORMATS:
            raise InferenceError(f"{path}: a drop mask comes only from a .keras or .npz generator with a mask head")
        loader = functools.partial(loader, output="mask")
    try:
        run, info = loader(path)
    except InferenceError:
        raise
    except Exception as error:  # each runtime raises its own types for a bad file
        raise InferenceError(f"{path}: cannot be loaded ({one_line(error)})") from None
    _check_output(run, info, path)
    return run, info


def _check_output(run, info, path):
    """Run a blank photo through the model: an RGB photo of the same size must come out."""
    multiple = int(info["required_multiple"])
    height, width = info["fixed_size"] or [multiple * -(-32 // multiple)] * 2
    blank = np.zeros((1, height, width, 3), np.float32)
    try:
        generated = np.asarray(run(blank))
    except Exception as error:
        raise InferenceError(f"{path}: fails on a {height}x{width} RGB photo ({one_line(error)})") from None
    if generated.shape != blank.shape:
        raise InferenceError(
            f"{path}: turns a photo of shape {blank.shape} into {generated.shape}; "
            "a generator returns an RGB photo of the same size"
        )


def one_line(error, limit=300):
    """An exception as one short line: its type (unless ours) and its first words."""
    from keras_derain.data.images import DatasetError

    text = " ".join(str(error).split())
    if not isinstance(error, (InferenceError, DatasetError)):
        text = f"{type(error).__name__}: {text}" if text else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def photo_size(path):
    """``(width, height)`` of an image file from its header, without decoding it (any size)."""
    from PIL import Image

    from keras_derain.data.images import DatasetError

    try:
        with pillow_limit(None), Image.open(path) as image:
            return image.size
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such file") from None
    except Exception as error:  # PIL raises many types for a bad header
        raise DatasetError(f"{path}: unreadable or corrupt image ({one_line(error)})") from None


def read_photo(path, max_pixels=DEFAULT_MAX_PIXELS):
    """Read an image file as a uint8 RGB array (read-only), refusing from its header one over ``max_pixels``.

    The same pixels as `keras_derain.data.read_rgb` (EXIF orientation applied,
    grayscale, palette and 16-bit made RGB), with less memory for RGB photos.

    Raises:
        InferenceError: over the cap, or smaller than 2x2; the message names the file.
        DatasetError: unreadable, truncated or corrupt (`keras_derain.data.read_rgb`).

    Example:
        >>> from PIL import Image
        >>> from keras_derain.inference import read_photo
        >>> Image.new("RGB", (300, 200)).save("photo.png")
        >>> read_photo("photo.png").shape
        (200, 300, 3)
        >>> read_photo("photo.png", max_pixels=50_000)
        Traceback (most recent call last):
        ...
        keras_derain.inference.InferenceError: photo.png: 300x200 is 60,000 pixels, over the cap of 50,000; ...
    """
    from PIL import Image

    from keras_derain.data.images import check_image, read_rgb

    check_pixels(path, *photo_size(path), max_pixels)
    # Pillow's own bomb limit (a warning over 89 MP, an error over 179 MP) follows ours.
    with pillow_limit(max_pixels):
        check_image(path)  # a full decode: a truncated or corrupt file is named here
        with Image.open(path) as image:
            if image.mode == "RGB" and image.getexif().get(_ORIENTATION, 1) == 1:
                # Most photos: Pillow's image and one uint8 array at the peak (read_rgb's
                # copies for rotation and conversion would double it: 15 bytes a pixel).
                return np.asarray(image)
        return read_rgb(path)


def check_pixels(path, width, height, max_pixels):
    """InferenceError naming ``path`` if a ``width`` x ``height`` photo is over the cap or under 2x2."""
    if width * height > max_pixels:
        raise InferenceError(
            f"{path}: {width}x{height} is {width * height:,} pixels, over the cap of {max_pixels:,}; "
            "raise it with --max-pixels (max_pixels=) if memory allows"
        )
    if min(width, height) < 2:
        raise InferenceError(f"{path}: image of {width}x{height} pixels is too small (at least 2x2)")


@contextlib.contextmanager
def pillow_limit(max_pixels):
    """Within the block, Pillow's decompression-bomb limit is ``max_pixels`` (None: off). Not thread-safe."""
    from PIL import Image

    saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = saved


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
            (from export.py), or a built-in name: ``"default"`` (the
            mask-guided restoration generator: windows, windscreens and lenses),
            ``"dry-safe"`` (the same network trained with more dry pairs: dry
            photos pass through), ``"lens"`` (drops on a camera lens),
            ``"restoration"`` (the first mask-guided model) or ``"pix2pix"``
            (the study's); None: the
            default generator shipped in ``keras_derain/weights/``.
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
        max_pixels: image files with more pixels are refused from their
            header, before decoding (arrays are already in memory and are not
            checked).
        output: ``"derained"``, or ``"mask"``: the drop mask that a
            generator with a mask head (the restoration generator) predicts,
            as a grey RGB photo (0 dry, 255 drop), tiled like a derained one.

    Example:
        >>> from keras_derain.inference import Derainer
        >>> derainer = Derainer("runs/demo/best.keras", tile_size=512)  # doctest: +SKIP
        >>> derainer.derain("rainy.jpg").shape  # doctest: +SKIP
        (3000, 4000, 3)
    """

    def __init__(self, path=None, *, tile_size=DEFAULT_TILE_SIZE, overlap=32, batch_size=1,
                 max_pixels=DEFAULT_MAX_PIXELS, output="derained"):
        if not isinstance(tile_size, int) or tile_size < 16:
            raise InferenceError(f"tile_size must be an integer of at least 16, got {tile_size!r}")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise InferenceError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(max_pixels, int) or max_pixels < 4:
            raise InferenceError(f"max_pixels must be an integer of at least 4, got {max_pixels!r}")
        self.path = model_path(path)
        self._run, info = load_runner(self.path, output)
        self.fixed_size = tuple(info["fixed_size"]) if info["fixed_size"] else None
        self.multiple = int(info["required_multiple"])
        # Tiles of a multiple of the stride need no padding inside the graph.
        self.tile_size = -(-tile_size // self.multiple) * self.multiple
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        smallest_tile = min(self.fixed_size) if self.fixed_size else self.tile_size
        if not isinstance(overlap, int) or not 0 <= overlap <= smallest_tile // 2:
            raise InferenceError(f"overlap must be an integer in [0, {smallest_tile // 2}], got {overlap!r}")
        self.overlap = overlap

    def derain(self, image):
        """Derain one photo: a uint8 HxWx3 array or an image file -> uint8 HxWx3, same size.

        Raises:
            InferenceError: not uint8 RGB, under 2x2, or a file over ``max_pixels``
                (the message names the file).
            DatasetError: an unreadable file.
        """
        if isinstance(image, (str, Path)):
            image = read_photo(image, self.max_pixels)
        rainy = _checked(image)
        return self._generate(rainy, np.empty(rainy.shape, np.uint8))

    def derain_many(self, images):
        """`derain` each photo in turn (arrays or paths), yielding results; photos may differ in size."""
        for image in images:
            yield self.derain(image)

    def derain_float(self, rainy):
        """Derain one float32 HxWx3 photo in [-1, 1], returning float32 in [-1, 1]."""
        rainy = np.asarray(rainy, np.float32)
        return self._generate(rainy, np.empty(rainy.shape, np.float32))

    def _generate(self, rainy, derained):
        """Fill ``derained`` (uint8, or float32 in [-1, 1]) from ``rainy`` of the same dtype, tile by tile."""
        height, width = rainy.shape[:2]
        if self.fixed_size:
            padded = (max(height, self.fixed_size[0]), max(width, self.fixed_size[1]))
            offsets, tile, align = (0, 0), self.fixed_size, 1  # padded at the bottom and right
        elif height <= self.tile_size and width <= self.tile_size:
            _store(self._run(_signed(rainy)[None])[0], derained)  # whole: the graph pads to the stride
            return derained
        else:
            # Pad (by index, never copying the photo) as the graph would pad the whole photo.
            padded = (height + (-height) % self.multiple, width + (-width) % self.multiple)
            offsets = ((padded[0] - height) // 2, (padded[1] - width) // 2)
            tile, align = (self.tile_size, self.tile_size), self._alignment()
        rows, cols = (reflect_indices(size, top, total) for size, top, total in zip((height, width), offsets, padded))
        tile = (min(tile[0], padded[0]), min(tile[1], padded[1]))
        self._tiled(rainy, rows, cols, tile, align, offsets, derained)
        return derained

    def _alignment(self):
        """Tile offsets' multiple: the stride, unless the overlap is smaller (see the module doc)."""
        power_of_two = 1 << max(0, self.overlap.bit_length() - 1)
        return min(self.multiple, power_of_two)

    def _tiled(self, rainy, rows, cols, tile, align, offsets, derained):
        """Blend tiles row by row into a band one tile high; rows no later tile reaches go to ``derained``.

        ``rows``/``cols`` map padded coordinates to the photo's; the photo
        starts at ``offsets`` in the padded one. Blend weights are outer
        products of ramps on a grid of tiles, so their sum is the outer
        product of per-row and per-column sums: no full-size weight array.
        """
        (tile_height, tile_width), (top, left) = tile, offsets
        height, width = derained.shape[:2]
        row_ramp, col_ramp = ramp(tile_height, self.overlap), ramp(tile_width, self.overlap)
        weights = np.outer(row_ramp, col_ramp)[..., None]
        row_starts = tile_starts(len(rows), tile_height, self.overlap, align)
        col_starts = tile_starts(len(cols), tile_width, self.overlap, align)
        row_total, col_total = _coverage(row_ramp, row_starts, len(rows)), _coverage(col_ramp, col_starts, len(cols))
        band = np.zeros((tile_height, len(cols), 3), np.float32)
        for index, start in enumerate(row_starts):
            tile_rows = rows[start : start + tile_height, None]
            for first in range(0, len(col_starts), self.batch_size):
                batch = col_starts[first : first + self.batch_size]
                tiles = np.stack([rainy[tile_rows, cols[None, edge : edge + tile_width]] for edge in batch])
                for left_edge, generated in zip(batch, self._run(_signed(tiles))):
                    band[:, left_edge : left_edge + tile_width] += weights * generated
            done = (row_starts[index + 1] if index + 1 < len(row_starts) else len(rows)) - start
            first_row, last_row = max(start, top), min(start + done, top + height)
            if first_row < last_row:
                block = band[first_row - start : last_row - start, left : left + width]
                block /= row_total[first_row:last_row, None, None]
                block /= col_total[None, left : left + width, None]
                _store(block, derained[first_row - top : last_row - top])
            band[: tile_height - done] = band[done:]
            band[tile_height - done :] = 0


def reflect_indices(length, before, total):
    """Indices into ``length`` pixels that reflect-pad them to ``total``, ``before`` of them in front.

    numpy's ``np.pad(mode="reflect")`` as an index, repeated reflections and all,
    so tiles are cut from the unpadded photo.

    Example:
        >>> reflect_indices(3, 2, 8).tolist()
        [2, 1, 0, 1, 2, 1, 0, 1]
    """
    position = np.arange(total) - before
    if length == 1:
        return np.zeros(total, np.intp)
    period = 2 * (length - 1)
    position = np.mod(position, period)
    return np.where(position < length, position, period - position).astype(np.intp)


def _coverage(weights, starts, length):
    """Sum of ``weights`` laid at each start along ``length`` pixels."""
    total = np.zeros(length, np.float32)
    for start in starts:
        total[start : start + len(weights)] += weights
    return total


def _signed(rainy):
    """uint8 [0, 255] or float32 [-1, 1] -> float32 [-1, 1] (a new array for uint8 only)."""
    return rainy.astype(np.float32) / 127.5 - 1.0 if rainy.dtype == np.uint8 else rainy


def _store(generated, derained):
    """Write float32 [-1, 1] into ``derained``: rounded to uint8, or as it is. May change ``generated``."""
    if derained.dtype == np.uint8:
        generated += 1.0
        generated *= 127.5
        np.clip(np.round(generated, out=generated), 0, 255, out=generated)
    derained[...] = generated


def _checked(image):
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise InferenceError(f"expected a uint8 HxWx3 RGB image, got {image.dtype} {image.shape}")
    if min(image.shape[:2]) < 2:
        raise InferenceError(f"image of {image.shape[0]}x{image.shape[1]} pixels is too small (at least 2x2)")
    return image


__all__ = [
    "Derainer", "InferenceError", "DEFAULT_MAX_PIXELS", "default_model_path", "load_runner", "read_photo",
    "tile_starts",
]
