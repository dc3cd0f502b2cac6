"""Export a trained generator as a SavedModel, ONNX files and a ``.keras`` copy, verified.

The exported graphs take images of any height and width. A Pix2Pix U-Net
needs multiples of ``2 ** depth`` (`required_multiple`): the SavedModel
reflect-pads the batch to the next multiple (centred) inside the graph, runs
the generator and crops the result back (`PaddedGenerator`); the ONNX files
leave that padding to the caller (see below), so that their graph is
convolutions and standard ops only (`keras_derain.onnx_graph`). The study's
cGAN generator has a fixed input size; its exports keep that size, and
`keras_derain.inference` tiles larger photos.

Input contract:

- SavedModel, signature ``derain`` (also ``serving_default``): input ``rainy``,
  uint8 ``[N, H, W, 3]`` RGB; output ``derained``, uint8 ``[N, H, W, 3]``.
- SavedModel, signature ``derain_float``: input ``rainy``, float32
  ``[N, H, W, 3]`` in [-1, 1]; output ``derained``, float32 in [-1, 1].
- ONNX (``onnx``, float32, and ``onnx-int8``, int8 QDQ): input ``rainy``,
  float32 ``[batch, height, width, 3]`` (NHWC, RGB) in [-1, 1]; output
  ``derained``, the same shape, in [-1, 1]. Height and width must be multiples
  of the ``required_multiple`` stored in the file's metadata (128 for the
  shipped generator): reflect-pad the photo, centred (numpy's ``np.pad(...,
  mode="reflect")``, OpenCV's ``BORDER_REFLECT_101``), run, and crop the same
  margins off (`reflect_pad_array`). `keras_derain.inference.Derainer` does
  this for you; the metadata key ``padding`` = ``"outside"`` marks such files.
- ``.keras``: the generator itself; its input must already be a multiple
  (`keras_derain.inference.Derainer` pads it).

Every export is written beside its destination, reloaded and compared with
the Keras generator on the same photos (two sizes that are not multiples,
321x481 and 480x720), and moved into place only if it agrees within
``TOLERANCE``; otherwise nothing is replaced and `ExportError` says which
format differed by how much. The float ONNX file is also run in OpenCV's DNN
module when OpenCV is installed, within ``OPENCV_TOLERANCE``. The int8 file
cannot match to 1e-4: it is checked for PSNR against the Keras generator's
output (``INT8_MIN_PSNR``); its quality on real photos is measured in
``benchmarks/results/inference.md``.

Example:
    >>> from keras_derain.export import export_generator
    >>> report = export_generator("runs/demo/best.keras", "exported")  # doctest: +SKIP
    >>> report["onnx"]["max_abs_diff"] < 1e-4  # doctest: +SKIP
    True
"""

import collections
import contextlib
import json
import os
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_derain.atomic import atomic_output
from keras_derain.data.images import read_rgb
from keras_derain.inference import reflect_pad_array  # noqa: F401  (numpy twin of the graph's padding)
from keras_derain.models import float32_copy, required_multiple

FORMATS = ("savedmodel", "onnx", "onnx-int8", "keras")
# What "all" writes: int8 is opt-in (it calibrates, and its quality is a trade-off).
ALL_FORMATS = ("savedmodel", "onnx", "keras")
TOLERANCE = 1e-4  # largest absolute difference allowed, float32 in [-1, 1]
OPENCV_TOLERANCE = 1e-3  # the float ONNX file in OpenCV's DNN module, which computes differently
INT8_MIN_PSNR = 25.0  # dB between the int8 file's output and the Keras generator's ([-1, 1], range 2)
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


def _single_output(generator):
    """The generator with its first output only (a restoration generator's drop mask is not exported)."""
    if len(generator.outputs) == 1:
        return generator
    return keras.Model(generator.inputs, generator.outputs[0], name=generator.name)


def _onnx_error(error, opset, format_name="onnx"):
    first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return ExportError(f"--format {format_name}: the conversion failed (opset {opset or 'default'}): {first_line}")


def export_onnx(generator, path, opset=None):
    """Write a clean ONNX file: ``rainy`` float32 [batch, height, width, 3] -> ``derained``.

    Keras' own ``model.export(format="onnx")`` (tf2onnx underneath) converts
    `keras_derain.onnx_graph.export_twin` of the generator (the same function
    in layers tf2onnx spells plainly); `keras_derain.onnx_graph.simplify` then
    turns what is left of run-time size arithmetic into standard ops. Height
    and width must be multiples of ``required_multiple`` (metadata), padded by
    the caller (see the module doc).

    Returns:
        ``{op type: count}`` of the written graph.
    """
    try:
        import onnx
        import onnxruntime  # noqa: F401  (the export is verified with it)

        from keras_derain.onnx_graph import export_twin, op_histogram, simplify
    except ImportError as error:
        raise ExportError(f"ONNX export needs tf2onnx, onnx and onnxruntime: pip install 'keras-derain[onnx]' ({error})") from None
    generator = _single_output(generator)
    twin = export_twin(generator)
    try:
        twin.export(
            str(path),
            format="onnx",
            input_signature=[_input_spec(generator, tf.float32)],
            opset_version=opset,
            verbose=False,
        )
        graph_model, _ = simplify(onnx.load(str(path)), twin)
    except ImportError as error:
        raise ExportError(f"ONNX export needs tf2onnx: pip install 'keras-derain[onnx]' ({error})") from None
    except Exception as error:  # tf2onnx raises many types, e.g. for an opset it cannot target
        raise _onnx_error(error, opset) from None
    graph = graph_model.graph
    old_output = graph.output[0].name
    for node in graph.node:
        node.output[:] = ["derained" if name == old_output else name for name in node.output]
    graph.output[0].name = "derained"
    for value in (graph.input[0], graph.output[0]):
        for dim, axis in zip(value.type.tensor_type.shape.dim, ("batch", "height", "width")):
            if not dim.HasField("dim_value"):
                dim.dim_param = axis
    properties = {key: json.dumps(value) for key, value in metadata(generator).items()}
    properties["padding"] = json.dumps("outside")
    onnx.helper.set_model_props(graph_model, properties)
    onnx.save(graph_model, str(path))
    return op_histogram(graph_model)


# int8 calibration: crops of the built-in photos, a multiple of every Pix2Pix stride up to 128.
CALIBRATION_SIZE = (256, 384)
CALIBRATION_COUNT = None  # photos used; None: all of them


def calibration_photos(generator, count=None, seed=0):
    """Float32 [1, H, W, 3] batches in [-1, 1]: the built-in photos with rendered raindrops.

    What int8 quantisation calibrates on: real scenes with the drops the
    generator was trained to remove (`keras_derain.data.raindrops`, drops
    sized for a 480-pixel short side as on Raindrop's frames), cut centred to
    ``CALIBRATION_SIZE`` (to the generator's size if it is fixed).
    """
    from keras_derain.data.raindrops import render_raindrops

    paths = sorted(_BUILTIN.glob("*.jpg"))[: count or CALIBRATION_COUNT]
    height, width = fixed_size(generator) or CALIBRATION_SIZE
    photos = []
    for index, path in enumerate(paths):
        clean = read_rgb(path).astype(np.float32) / 255.0
        clean = np.pad(clean, [(0, max(0, height - clean.shape[0])), (0, max(0, width - clean.shape[1])), (0, 0)],
                       mode="reflect")
        top, left = (clean.shape[0] - height) // 2, (clean.shape[1] - width) // 2
        clean = clean[top : top + height, left : left + width]
        rainy = keras.ops.convert_to_numpy(render_raindrops(clean, seed=seed + index, reference_side=480))
        photos.append(rainy[None].astype(np.float32) * 2.0 - 1.0)
    return photos


# What int8 quantises: the convolutions, except the outermost ones (see export_onnx_int8).
INT8_OPS = ("Conv", "ConvTranspose")


def outer_convolutions(model):
    """Names of the convolutions next to the image: with no convolution upstream, or none downstream.

    The first layer reads the photo and the last ones write the derained
    pixels (or the drop mask), so their rounding error is not averaged away by
    later layers. ``model``: an ``onnx.ModelProto``.
    """
    nodes = list(model.graph.node)
    producers = {output: node for node in nodes for output in node.output}
    consumers = collections.defaultdict(list)
    for node in nodes:
        for name in node.input:
            consumers[name].append(node)

    def reaches_a_convolution(start, step):
        seen, stack = set(), list(step(start))
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if node.op_type in INT8_OPS:
                return True
            stack.extend(step(node))
        return False

    def upstream(node):
        return [producers[name] for name in node.input if name in producers]

    def downstream(node):
        return [consumer for name in node.output for consumer in consumers[name]]

    return [node.name for node in nodes if node.op_type in INT8_OPS
            and not (reaches_a_convolution(node, upstream) and reaches_a_convolution(node, downstream))]


def export_onnx_int8(generator, path, opset=None, float_path=None):
    """Write an int8 ONNX file (static QDQ quantisation, onnxruntime.quantization), same contract as ONNX.

    The float file of `export_onnx` is quantised with per-channel int8
    weights and uint8 activations whose ranges are calibrated (min-max) on
    `calibration_photos`. Only the convolutions are quantised (norms and
    activations compute in float on dequantised inputs), and the outermost
    ones stay float (`outer_convolutions`): on the shared real Raindrop pairs
    this costs the shipped generator 0.03 dB against the float file, where
    quantising every op cost 0.39 dB (``benchmarks/results/inference.md``).
    Verified against the Keras generator by PSNR only.
    ``float_path``: an already written float file to quantise (else one is written).
    """
    try:
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as error:
        raise ExportError(f"int8 export needs onnxruntime: pip install 'keras-derain[onnx]' ({error})") from None

    class Photos(CalibrationDataReader):
        def __init__(self, batches):
            self.batches = iter(batches)

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {"rainy": batch}

    with tempfile.TemporaryDirectory(dir=Path(path).parent) as folder:
        prepared = Path(folder) / "prepared.onnx"
        if float_path is None:
            float_path = Path(folder) / "float.onnx"
            export_onnx(generator, float_path, opset)
        try:
            quant_pre_process(str(float_path), str(prepared), skip_symbolic_shape=True)
            import onnx

            quantize_static(
                str(prepared), str(path), Photos(calibration_photos(generator)),
                quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                op_types_to_quantize=list(INT8_OPS),
                nodes_to_exclude=outer_convolutions(onnx.load(str(prepared))),
            )
        except Exception as error:  # the quantiser raises many types
            raise _onnx_error(error, opset, "onnx-int8") from None
    # The quantiser keeps the model's metadata (required_multiple, padding).
    from keras_derain.onnx_graph import op_histogram

    return op_histogram(str(path))


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
    from keras_derain.inference import _load_onnx

    return _load_onnx(path)[0]  # the session Derainer uses, padding outside the graph as it does


def _run_opencv(path):
    """OpenCV's DNN module on the ONNX file, padded outside the graph like onnxruntime."""
    import cv2

    from keras_derain.inference import padded_outside

    net = cv2.dnn.readNetFromONNX(str(path))
    multiple = json.loads(_onnx_properties(path).get("required_multiple", "1"))

    def run(rainy):
        net.setInput(np.ascontiguousarray(rainy))
        return np.asarray(net.forward())

    return padded_outside(run, multiple)


def _onnx_properties(path):
    import onnx

    return {prop.key: prop.value for prop in onnx.load(str(path), load_external_data=False).metadata_props}


def _run_keras(path):
    reloaded = keras.saving.load_model(str(path), compile=False)
    return lambda rainy: reference_output(reloaded, rainy)


def _psnr(generated, reference):
    """PSNR in dB of float images in [-1, 1] (data range 2)."""
    mse = float(np.mean((generated.astype(np.float64) - reference) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(4.0 / mse))


def _opencv_available():
    try:
        import cv2

        return hasattr(cv2, "dnn")
    except ImportError:
        return False


def verify(generator, paths, log=print):
    """Compare written exports with the Keras generator; return what each check measured.

    Args:
        generator: the Keras generator.
        paths: ``{format: path}`` of written exports.
        log: where to print one line per check.

    Returns:
        ``{format: {"max_abs_diff": float, ...}}``, float32 in [-1, 1]; the
        float ONNX also has ``"opencv_max_abs_diff"`` (None without OpenCV),
        the int8 ONNX ``"psnr"`` (dB against the Keras generator's output).

    Raises:
        ExportError: a format differs by more than ``TOLERANCE`` (the float
            ONNX in OpenCV by more than ``OPENCV_TOLERANCE``, the int8 ONNX
            below ``INT8_MIN_PSNR``), or the SavedModel's uint8 signature by
            more than one level.
    """
    photos = verification_photos(generator)
    references = [reference_output(generator, rainy) for rainy in photos]
    sizes = ", ".join(f"{rainy.shape[1]}x{rainy.shape[2]}" for rainy in photos)
    checks = [(name, name, globals()[_LOADERS[name]]) for name in paths]
    if "onnx" in paths and _opencv_available():
        checks.append(("onnx", "onnx in OpenCV DNN", _run_opencv))
    results, failures = {name: {} for name in paths}, []
    for format_name, label, load in checks:
        path = paths[format_name]
        largest, largest_uint8, psnrs = 0.0, 0, []
        try:
            run = load(path)
            outputs = [run(rainy) for rainy in photos]
        except Exception as error:  # a converter can write a file its runtime rejects
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
            first_line = first_line.replace(str(path), "the exported file")  # a temporary, already removed
            failures.append(f"--format {format_name}: the export cannot be run{' in OpenCV' * (label != format_name)} "
                            f"({first_line})")
            continue
        for reference, generated in zip(references, outputs):
            if format_name == "savedmodel":
                generated, generated_uint8 = generated
                # The uint8 signature rounds: one level apart at most.
                step = np.abs(generated_uint8.astype(int) - to_uint8(reference).astype(int)).max()
                largest_uint8 = max(largest_uint8, int(step))
            if generated.shape != reference.shape:
                raise ExportError(f"{label}: output shape {generated.shape}, expected {reference.shape}")
            largest = max(largest, float(np.abs(generated - reference).max()))
            psnrs.append(_psnr(generated, reference))
        if label != format_name:
            results[format_name]["opencv_max_abs_diff"] = largest
            tolerance = OPENCV_TOLERANCE
        else:
            results[format_name]["max_abs_diff"] = largest
            tolerance = TOLERANCE
        extra = f"; uint8 signature within {largest_uint8} level(s)" if format_name == "savedmodel" else ""
        if format_name == "onnx-int8":
            results[format_name]["psnr"] = min(psnrs)
            log(f"verify {label:<10} PSNR {min(psnrs):.1f} dB against Keras (max |difference| {largest:.2e}) on {sizes}")
            if min(psnrs) < INT8_MIN_PSNR:
                failures.append(f"onnx-int8 is {min(psnrs):.1f} dB from the Keras generator (at least {INT8_MIN_PSNR:g})")
            continue
        log(f"verify {label:<10} max |difference| {largest:.2e} on {sizes}{extra}")
        if largest > tolerance or largest_uint8 > 1:
            failures.append(f"{label} differs from the Keras generator by {largest:.2e} (tolerance {tolerance:g})")
    if "onnx" in results:
        results["onnx"].setdefault("opencv_max_abs_diff", None)
    if failures:
        raise ExportError("; ".join(failures) + "; nothing was replaced")
    return results


# By name, so that a test can replace one runtime.
_LOADERS = {"savedmodel": "_run_savedmodel", "onnx": "_run_onnx", "onnx-int8": "_run_onnx", "keras": "_run_keras"}


def check_formats(formats):
    """``"all"``, one name or a list of names -> a tuple of known formats, or ExportError."""
    if isinstance(formats, str):
        formats = ALL_FORMATS if formats == "all" else (formats,)
    unknown = [name for name in formats if name not in FORMATS]
    if unknown:
        raise ExportError(f"--format {unknown[0]!r} is unknown; choose one of: {', '.join(FORMATS)}, "
                          f"all ({', '.join(ALL_FORMATS)})")
    return tuple(formats)


def output_paths(out_dir, formats, name=NAME):
    """Where each format goes in ``out_dir``: ``NAME_savedmodel/``, ``NAME.onnx``, ``NAME.int8.onnx``, ``NAME.keras``."""
    out_dir = Path(out_dir)
    names = {"savedmodel": f"{name}_savedmodel", "onnx": f"{name}.onnx", "onnx-int8": f"{name}.int8.onnx",
             "keras": f"{name}.keras"}
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


def _model_choices():
    from keras_derain.inference import builtin_models

    names = ", ".join(builtin_models()) or "none shipped"
    return f"pass --model NAME (built in: {names}), a .keras or a compact .npz generator"


def newest_run_model(runs_dir="runs"):
    """``best.keras`` of the newest run in ``runs_dir`` (newest ``config.json``)."""
    runs_dir = Path(runs_dir)
    configs = list(runs_dir.glob("*/config.json"))
    if not configs:
        raise ExportError(f"{runs_dir}: no training runs (no {runs_dir}/*/config.json); {_model_choices()}")
    newest = max(configs, key=lambda path: path.stat().st_mtime).parent
    best = newest / "best.keras"
    if not best.is_file():
        raise ExportError(f"{newest}: the newest run has no best.keras yet; {_model_choices()}")
    return best


def resolve_model(model):
    """A built-in generator's name (``default``, ...) -> its file; a path is returned as it is."""
    from keras_derain.inference import builtin_models

    builtin = builtin_models()
    if isinstance(model, str) and model in builtin:
        return builtin[model]
    path = Path(model)
    if not path.exists() and path.suffix not in (".keras", ".npz") and len(path.parts) == 1:
        raise ExportError(f"--model {model}: neither a built-in generator nor a file; {_model_choices()}")
    return path


def load_generator(path):
    """Load a generator: a built-in name, a ``.keras`` file or a compact ``.npz``; ExportError names the file."""
    path = resolve_model(path)
    if not path.is_file():
        raise ExportError(f"--model {path}: no such file")
    if path.suffix not in (".keras", ".npz"):
        raise ExportError(f"--model {path}: expected a .keras or a compact .npz generator; {_model_choices()}")
    try:
        if path.suffix == ".npz":
            from keras_derain.compact import load_compact

            model = load_compact(path)
        else:
            model = keras.saving.load_model(str(path), compile=False)
    except Exception as error:  # Keras and numpy raise many types for a bad archive
        raise ExportError(f"--model {path}: cannot be loaded as a Keras generator ({error})") from None
    return float32_copy(model)  # a mixed_float16 generator is exported computing in float32


def export_generator(model_path, out_dir, formats="all", *, opset=None, name=NAME, log=print):
    """Export ``model_path`` to ``out_dir`` in ``formats``, verified, replacing nothing on failure.

    All formats are written to temporary paths beside their destinations and
    verified together; only if every one passes are they moved into place, so
    an earlier good export is never overwritten by a broken one.

    Args:
        model_path: a built-in generator's name (``"default"``), a ``.keras``
            generator (e.g. ``runs/NAME/best.keras``) or a compact ``.npz``.
        out_dir: the folder to write into (created if missing).
        formats: "all" (``ALL_FORMATS``), one of ``FORMATS``, or a list of them.
        opset: ONNX opset (None: tf2onnx's default).
        name: file name stem of the exports.
        log: where progress lines go.

    Returns:
        ``{format: {"path": Path, "max_abs_diff": float, ...}}`` (see `verify`;
        ONNX formats also give ``"ops"``, their op histogram).

    Raises:
        ExportError: missing or unloadable model, unknown format, unwritable
            folder, or an export that does not pass its check.

    Example:
        >>> report = export_generator("default", "exported", "onnx")  # doctest: +SKIP
    """
    formats = check_formats(formats)
    generator = load_generator(model_path)
    check_out_dir(out_dir)
    writers = {
        "savedmodel": export_savedmodel,
        "onnx": lambda model, path: export_onnx(model, path, opset),
        # Quantises the float file when both are written.
        "onnx-int8": lambda model, path: export_onnx_int8(model, path, opset, temporary.get("onnx")),
        "keras": export_keras,
    }
    destinations = output_paths(out_dir, formats, name)
    ops = {}
    with contextlib.ExitStack() as stack:
        temporary = {}
        for format_name, destination in destinations.items():
            temporary[format_name] = stack.enter_context(atomic_output(destination))
            log(f"writing {format_name} -> {destination}")
            ops[format_name] = writers[format_name](generator, temporary[format_name])
        results = verify(generator, temporary, log)
    # Leaving the stack moved every temporary onto its destination.
    report = {}
    for format_name in formats:
        report[format_name] = {"path": destinations[format_name], **results[format_name]}
        if format_name.startswith("onnx"):
            report[format_name]["ops"] = ops[format_name]
    return report


__all__ = [
    "export_generator",
    "PaddedGenerator",
    "ExportError",
    "FORMATS",
    "TOLERANCE",
    "newest_run_model",
    "reflect_pad_to_multiple",
    "resolve_model",
]
