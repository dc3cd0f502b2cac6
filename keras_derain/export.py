"""Export a trained generator as a SavedModel, an ONNX file and a ``.keras`` copy, verified.

The exported graphs take images of any height and width: a Pix2Pix U-Net
needs multiples of ``2 ** depth`` (`required_multiple`), so the graph
reflect-pads the batch to the next multiple (centred), runs the generator and
crops the result back (`PaddedGenerator`). The study's cGAN generator has a
fixed input size; its exports keep that size, and `keras_derain.inference`
tiles larger photos.

Input contract:

- SavedModel, signature ``derain`` (also ``serving_default``): input ``rainy``,
  uint8 ``[N, H, W, 3]`` RGB; output ``derained``, uint8 ``[N, H, W, 3]``.
- SavedModel, signature ``derain_float``: input ``rainy``, float32
  ``[N, H, W, 3]`` in [-1, 1]; output ``derained``, float32 in [-1, 1].
- ONNX: input ``rainy``, float32 ``[batch, height, width, 3]`` in [-1, 1];
  output ``derained``, float32 in [-1, 1] (the ``derain_float`` contract).
- ``.keras``: the generator itself; its input must already be a multiple
  (`keras_derain.inference.Derainer` pads it).

Every export is written beside its destination, reloaded and compared with
the Keras generator on the same photos (two sizes that are not multiples,
321x481 and 480x720), and moved into place only if it agrees within
``TOLERANCE``; otherwise nothing is replaced and `ExportError` says which
format differed by how much.

Example:
    >>> from keras_derain.export import export_generator
    >>> report = export_generator("runs/demo/best.keras", "exported")  # doctest: +SKIP
    >>> report["onnx"]["max_abs_diff"] < 1e-4  # doctest: +SKIP
    True
"""

import contextlib
import json
import os
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_derain.atomic import atomic_output
from keras_derain.data.images import read_rgb
from keras_derain.models import float32_copy, required_multiple

FORMATS = ("savedmodel", "onnx", "keras")
TOLERANCE = 1e-4  # largest absolute difference allowed, float32 in [-1, 1]
NAME = "generator"
# (height, width) of the verification photos: neither is a multiple of 32.
VERIFY_SIZES = ((321, 481), (480, 720))
_BUILTIN = Path(__file__).parent / "data" / "builtin"


class ExportError(RuntimeError):
    """An export that cannot be written or that does not match the Keras generator."""


def fixed_size(generator):
    """The ``(height, width)`` a generator insists on, or None if it takes any multiple."""
    height, width = generator.input_shape[1:3]
    return None if height is None or width is None else (height, width)


def metadata(generator):
    """What `keras_derain.inference` needs to tile a generator's exports like the generator itself."""
    return {"required_multiple": required_multiple(generator), "fixed_size": fixed_size(generator)}


def reflect_pad_to_multiple(rainy, multiple):
    """Reflect-pad an NHWC batch, centred, to the next multiple of ``multiple``.

    TensorFlow's REFLECT mode pads at most ``size - 1`` pixels per side, so
    small images are padded in up to ``multiple.bit_length()`` rounds, each
    reflecting what the previous one produced (the same result as numpy's
    ``np.pad(mode="reflect")``). Images need at least 2x2 pixels.

    Returns:
        ``(padded, (top, left))``: the padded batch and where the image starts in it.
    """
    shape = tf.shape(rainy)
    height, width = shape[1], shape[2]
    # (m - h % m) % m, not (-h) % m: tf2onnx's FloorMod gets negative operands wrong.
    pad_height = (multiple - height % multiple) % multiple
    pad_width = (multiple - width % multiple) % multiple
    top, left = pad_height // 2, pad_width // 2
    remaining = [top, pad_height - top, left, pad_width - left]
    padded = rainy
    for _ in range(max(1, int(multiple).bit_length())):
        size = tf.shape(padded)
        limits = [size[1] - 1, size[1] - 1, size[2] - 1, size[2] - 1]
        step = [tf.minimum(pad, limit) for pad, limit in zip(remaining, limits)]
        padded = tf.pad(padded, [[0, 0], step[0:2], step[2:4], [0, 0]], mode="REFLECT")
        remaining = [pad - taken for pad, taken in zip(remaining, step)]
    return padded, (top, left)


def reflect_pad_array(rainy, multiple):
    """numpy twin of `reflect_pad_to_multiple` for an NHWC or HWC array: the same pixels."""
    height, width = rainy.shape[-3:-1]
    pad_height, pad_width = (-height) % multiple, (-width) % multiple
    top, left = pad_height // 2, pad_width // 2
    pads = [(top, pad_height - top), (left, pad_width - left), (0, 0)]
    pads = [(0, 0)] * (rainy.ndim - 3) + pads
    return np.pad(rainy, pads, mode="reflect"), (top, left)


class PaddedGenerator(keras.Model):
    """A generator that takes any height and width: reflect-pad, generate, crop back.

    The graph exported as SavedModel and ONNX, and what
    `keras_derain.inference.Derainer` runs for a ``.keras`` generator. It runs
    the generator with ``training=False`` (no dropout, batch norm's moving
    statistics).

    Args:
        generator: a generator that needs multiples of `required_multiple`.

    Example:
        >>> import numpy as np
        >>> from keras_derain.models import pix2pix_generator
        >>> padded = PaddedGenerator(pix2pix_generator(base_channels=4, depth=3))
        >>> padded(np.zeros((1, 21, 30, 3), "float32")).shape
        TensorShape([1, 21, 30, 3])
    """

    def __init__(self, generator, **kwargs):
        super().__init__(name=kwargs.pop("name", "padded_generator"), **kwargs)
        self.generator = generator
        self.multiple = required_multiple(generator)

    def call(self, rainy):
        shape = tf.shape(rainy)
        padded, (top, left) = reflect_pad_to_multiple(rainy, self.multiple)
        generated = self.generator(padded, training=False)
        return generated[:, top : top + shape[1], left : left + shape[2], :]


def serving_model(generator):
    """The model whose graph is exported: `PaddedGenerator`, or the generator if fixed-size."""
    if fixed_size(generator):
        return generator
    model = PaddedGenerator(generator)
    model(np.zeros((1, 2, 2, 3), "float32"))  # Keras exports only a model that has been called
    return model


def _input_spec(generator, dtype):
    height, width = fixed_size(generator) or (None, None)
    return tf.TensorSpec((None, height, width, 3), dtype, name="rainy")


def to_uint8(generated):
    """[-1, 1] float -> uint8 (rounded, clipped); works on numpy arrays and tensors."""
    scaled = (generated + 1.0) * 127.5
    if isinstance(generated, np.ndarray):
        return np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    return tf.cast(tf.clip_by_value(tf.round(scaled), 0.0, 255.0), tf.uint8)


def export_savedmodel(generator, path):
    """Write a SavedModel with the signatures ``derain`` (uint8) and ``derain_float``."""
    model = serving_model(generator)
    archive = keras.export.ExportArchive()
    archive.track(model)

    def derain(rainy):
        generated = model(tf.cast(rainy, tf.float32) / 127.5 - 1.0)
        return {"derained": to_uint8(generated)}

    def derain_float(rainy):
        return {"derained": model(rainy)}

    # The first endpoint added also becomes "serving_default".
    archive.add_endpoint("derain", derain, [_input_spec(generator, tf.uint8)])
    archive.add_endpoint("derain_float", derain_float, [_input_spec(generator, tf.float32)])
    archive.write_out(str(path), verbose=False)
    # assets.extra/ is SavedModel's place for files that loading ignores.
    (Path(path) / "assets.extra").mkdir(exist_ok=True)
    (Path(path) / "assets.extra" / "keras_derain.json").write_text(json.dumps(metadata(generator)) + "\n")


def export_onnx(generator, path, opset=None):
    """Write an ONNX file: ``rainy`` float32 [batch, height, width, 3] -> ``derained``.

    Uses Keras' own ``model.export(format="onnx")`` (tf2onnx underneath), then
    names the dynamic axes and the output.
    """
    try:
        import onnx
        import onnxruntime  # noqa: F401  (the export is verified with it)
    except ImportError as error:
        raise ExportError(f"ONNX export needs tf2onnx, onnx and onnxruntime: pip install 'keras-derain[onnx]' ({error})") from None
    model = serving_model(generator)
    try:
        model.export(
            str(path),
            format="onnx",
            input_signature=[_input_spec(generator, tf.float32)],
            opset_version=opset,
            verbose=False,
        )
    except ImportError as error:
        raise ExportError(f"ONNX export needs tf2onnx: pip install 'keras-derain[onnx]' ({error})") from None
    except Exception as error:  # tf2onnx raises many types, e.g. for an opset it cannot target
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ExportError(f"--format onnx: the conversion failed (opset {opset or 'default'}): {first_line}") from None
    graph_model = onnx.load(str(path))
    graph = graph_model.graph
    old_output = graph.output[0].name
    for node in graph.node:
        node.output[:] = ["derained" if name == old_output else name for name in node.output]
    graph.output[0].name = "derained"
    for value in (graph.input[0], graph.output[0]):
        for dim, axis in zip(value.type.tensor_type.shape.dim, ("batch", "height", "width")):
            if not dim.HasField("dim_value"):
                dim.dim_param = axis
    onnx.helper.set_model_props(graph_model, {key: json.dumps(value) for key, value in metadata(generator).items()})
    onnx.save(graph_model, str(path))


def export_keras(generator, path):
    """Write the generator as a ``.keras`` file (input sizes must be multiples)."""
    generator.save(str(path))


def verification_photos(generator):
    """Float32 batches in [-1, 1] to compare exports on: a built-in photo cut or mirrored to size.

    The values are exact uint8 levels, so the uint8 signature sees the same photo.
    """
    photo = read_rgb(_BUILTIN / "kodim01.jpg")
    sizes = [fixed_size(generator)] * 2 if fixed_size(generator) else VERIFY_SIZES
    batches = []
    for height, width in sizes:
        pad_height, pad_width = max(0, height - photo.shape[0]), max(0, width - photo.shape[1])
        image = np.pad(photo, [(0, pad_height), (0, pad_width), (0, 0)], mode="reflect")
        image = image[:height, :width]
        batches.append((image[None].astype("float32") / 127.5 - 1.0))
    # A batch of two (the photo and its mirror) exercises the dynamic batch axis.
    batches[0] = np.concatenate([batches[0], batches[0][:, ::-1, ::-1]])
    return batches


def reference_output(generator, rainy):
    """The Keras generator on a float batch of any size, padded in numpy (independent of the graph)."""
    if fixed_size(generator):
        return keras.ops.convert_to_numpy(generator(rainy, training=False))
    height, width = rainy.shape[1:3]
    padded, (top, left) = reflect_pad_array(rainy, required_multiple(generator))
    generated = keras.ops.convert_to_numpy(generator(padded, training=False))
    return generated[:, top : top + height, left : left + width]


def _run_savedmodel(path):
    loaded = tf.saved_model.load(str(path))
    derain_float = loaded.signatures["derain_float"]
    derain = loaded.signatures["derain"]

    def run(rainy):
        generated = derain_float(rainy=tf.constant(rainy))["derained"].numpy()
        as_uint8 = to_uint8(rainy)
        generated_uint8 = derain(rainy=tf.constant(as_uint8))["derained"].numpy()
        return generated, generated_uint8

    return run


def _run_onnx(path):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda rainy: session.run(["derained"], {"rainy": rainy})[0]


def _run_keras(path):
    reloaded = keras.saving.load_model(str(path), compile=False)
    return lambda rainy: reference_output(reloaded, rainy)


def verify(generator, paths, log=print):
    """Compare written exports with the Keras generator; return the largest differences.

    Args:
        generator: the Keras generator.
        paths: ``{format: path}`` of written exports.
        log: where to print one line per format.

    Returns:
        ``{format: largest absolute difference}``, float32 in [-1, 1].

    Raises:
        ExportError: a format differs by more than ``TOLERANCE``, or the
            SavedModel's uint8 signature by more than one level.
    """
    photos = verification_photos(generator)
    references = [reference_output(generator, rainy) for rainy in photos]
    loaders = {"savedmodel": _run_savedmodel, "onnx": _run_onnx, "keras": _run_keras}
    differences, failures = {}, []
    for format_name, path in paths.items():
        largest, largest_uint8 = 0.0, 0
        load = loaders[format_name]
        try:
            run = load(path)
            outputs = [run(rainy) for rainy in photos]
        except Exception as error:  # a converter can write a file its runtime rejects
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            first_line = first_line.replace(str(path), "the exported file")  # a temporary, already removed
            failures.append(f"--format {format_name}: the export cannot be run ({first_line})")
            continue
        for rainy, reference, generated in zip(photos, references, outputs):
            if format_name == "savedmodel":
                generated, generated_uint8 = generated
                # The uint8 signature rounds: one level apart at most.
                step = np.abs(generated_uint8.astype(int) - to_uint8(reference).astype(int)).max()
                largest_uint8 = max(largest_uint8, int(step))
            if generated.shape != reference.shape:
                raise ExportError(f"{format_name}: output shape {generated.shape}, expected {reference.shape}")
            largest = max(largest, float(np.abs(generated - reference).max()))
        differences[format_name] = largest
        sizes = ", ".join(f"{rainy.shape[1]}x{rainy.shape[2]}" for rainy in photos)
        extra = f"; uint8 signature within {largest_uint8} level(s)" if format_name == "savedmodel" else ""
        log(f"verify {format_name:<10} max |difference| {largest:.2e} on {sizes}{extra}")
        if largest > TOLERANCE or largest_uint8 > 1:
            failures.append(f"{format_name} differs from the Keras generator by {largest:.2e} (tolerance {TOLERANCE:g})")
    if failures:
        raise ExportError("; ".join(failures) + "; nothing was replaced")
    return differences


def check_formats(formats):
    """``"all"``, one name or a list of names -> a tuple of known formats, or ExportError."""
    if isinstance(formats, str):
        formats = FORMATS if formats == "all" else (formats,)
    unknown = [name for name in formats if name not in FORMATS]
    if unknown:
        raise ExportError(f"--format {unknown[0]!r} is unknown; choose one of: {', '.join(FORMATS)}, all")
    return tuple(formats)


def output_paths(out_dir, formats, name=NAME):
    """Where each format goes: ``NAME_savedmodel/``, ``NAME.onnx``, ``NAME.keras`` in ``out_dir``."""
    out_dir = Path(out_dir)
    names = {"savedmodel": f"{name}_savedmodel", "onnx": f"{name}.onnx", "keras": f"{name}.keras"}
    return {format_name: out_dir / names[format_name] for format_name in formats}


def check_out_dir(out_dir):
    """Create ``out_dir`` and check that files can be written there, or raise ExportError."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        raise ExportError(f"--out {out_dir}: not a writable folder ({error.strerror or error})") from None


def newest_run_model(runs_dir="runs"):
    """``best.keras`` of the newest run in ``runs_dir`` (newest ``config.json``)."""
    runs_dir = Path(runs_dir)
    configs = list(runs_dir.glob("*/config.json"))
    if not configs:
        raise ExportError(f"{runs_dir}: no training runs (no {runs_dir}/*/config.json); train one or pass --model")
    newest = max(configs, key=lambda path: path.stat().st_mtime).parent
    best = newest / "best.keras"
    if not best.is_file():
        raise ExportError(f"{newest}: the newest run has no best.keras yet; pass --model")
    return best


def load_generator(path):
    """Load a ``.keras`` generator, or raise ExportError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"--model {path}: no such file")
    if path.suffix != ".keras":
        raise ExportError(f"--model {path}: expected a .keras generator (what train.py writes)")
    try:
        model = keras.saving.load_model(str(path), compile=False)
    except Exception as error:  # Keras raises many types for a bad archive
        raise ExportError(f"--model {path}: cannot be loaded as a Keras model ({error})") from None
    return float32_copy(model)  # a mixed_float16 generator is exported computing in float32


def export_generator(model_path, out_dir, formats="all", *, opset=None, name=NAME, log=print):
    """Export ``model_path`` to ``out_dir`` in ``formats``, verified, replacing nothing on failure.

    All formats are written to temporary paths beside their destinations and
    verified together; only if every one agrees within ``TOLERANCE`` are they
    moved into place, so an earlier good export is never overwritten by a
    broken one.

    Args:
        model_path: a ``.keras`` generator (e.g. ``runs/NAME/best.keras``).
        out_dir: the folder to write into (created if missing).
        formats: "all", one of ``FORMATS``, or a list of them.
        opset: ONNX opset (None: tf2onnx's default).
        name: file name stem of the exports.
        log: where progress lines go.

    Returns:
        ``{format: {"path": Path, "max_abs_diff": float}}``.

    Raises:
        ExportError: missing or unloadable model, unknown format, unwritable
            folder, or an export that does not match.

    Example:
        >>> report = export_generator("runs/demo/best.keras", "exported", "onnx")  # doctest: +SKIP
    """
    formats = check_formats(formats)
    generator = load_generator(model_path)
    check_out_dir(out_dir)
    writers = {
        "savedmodel": export_savedmodel,
        "onnx": lambda model, path: export_onnx(model, path, opset),
        "keras": export_keras,
    }
    destinations = output_paths(out_dir, formats, name)
    with contextlib.ExitStack() as stack:
        temporary = {}
        for format_name, destination in destinations.items():
            temporary[format_name] = stack.enter_context(atomic_output(destination))
            log(f"writing {format_name} -> {destination}")
            writers[format_name](generator, temporary[format_name])
        differences = verify(generator, temporary, log)
    # Leaving the stack moved every temporary onto its destination.
    return {
        format_name: {"path": destinations[format_name], "max_abs_diff": differences[format_name]}
        for format_name in formats
    }


__all__ = [
    "export_generator",
    "PaddedGenerator",
    "ExportError",
    "FORMATS",
    "TOLERANCE",
    "newest_run_model",
    "reflect_pad_to_multiple",
]
