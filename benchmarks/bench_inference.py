"""Latency of one photo through Derainer: Keras, SavedModel, ONNX float32 and ONNX int8, side by side.

Exports a generator (default: the shipped one) with keras_derain.export (which
verifies each format), then times ``Derainer.derain`` on a uint8 photo of
720x480 and of 1920x1080 (a built-in photo enlarged), batch 1, each run whole
(``tile_size`` above the photo; the formats pad to the stride as Derainer
does). Rounds interleave sizes and formats, so that load from other processes
on a shared CPU falls on all of them alike; the table gives the median over
rounds and repeats, and its ratio to Keras of the same size.

Also reported: the ONNX graph before issue #14 (the padded generator as
``model.export`` wrote it) and now, as node counts and op histograms; the
int8 file's PSNR-Y against the float file's on real pairs (``--pairs``,
official protocol of keras_derain.evaluate); with ``--settings``, onnxruntime
session settings timed on the float file.

    python benchmarks/bench_inference.py [--model default] [--rounds 5] [--repeats 3]
        [--pairs ../shared/data/raindrop_real] [--settings]
"""

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from PIL import Image

from keras_derain.data.images import read_rgb
from keras_derain.export import _BUILTIN, _input_spec, export_generator, load_generator, serving_model
from keras_derain.inference import Derainer, physical_cores
from keras_derain.onnx_graph import op_histogram

SIZES = ((480, 720), (1080, 1920))


def machine():
    cpu = "unknown CPU"
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import onnxruntime

    return (
        f"{os.cpu_count()} CPU cores ({physical_cores()} physical, {cpu}), no GPU used, "
        f"Python {platform.python_version()}, TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"onnxruntime {onnxruntime.__version__}"
    )


def photo(height, width):
    """A built-in photo resized to ``width`` x ``height`` (real content: int8 ranges depend on it)."""
    image = Image.fromarray(read_rgb(_BUILTIN / "kodim05.jpg"))
    return np.asarray(image.resize((width, height), Image.BICUBIC))


def graph_before(generator, folder):
    """The ONNX graph as exported before issue #14: the padding generator, tf2onnx's output as it is."""
    path = Path(folder) / "before.onnx"
    serving_model(generator).export(str(path), format="onnx", input_signature=[_input_spec(generator, tf.float32)],
                                    verbose=False)
    return op_histogram(path)


def histogram_line(ops):
    return f"{sum(ops.values())} nodes: " + ", ".join(f"{name} {count}" for name, count in ops.items())


def psnr_y(derainer, pairs_dir):
    from keras_derain.data.pairs import find_pairs
    from keras_derain.evaluate import quality

    scores = []
    for rainy, clean in find_pairs(pairs_dir):
        scores.append(quality(derainer.derain(rainy), read_rgb(clean))["psnr_y"])
    return statistics.mean(scores), len(scores)


def session_settings(path, rainy, repeats):
    """Median seconds of the float file under a few onnxruntime settings, interleaved."""
    import onnxruntime

    from keras_derain.inference import reflect_pad_array

    levels = onnxruntime.GraphOptimizationLevel
    grid = {
        f"{level_name}, {threads} thread(s), spinning {'on' if spin else 'off'}": (level, threads, spin)
        for level_name, level in (("basic", levels.ORT_ENABLE_BASIC), ("extended", levels.ORT_ENABLE_EXTENDED),
                                  ("all", levels.ORT_ENABLE_ALL))
        for threads in sorted({1, physical_cores()})
        for spin in (False, True)
    }
    padded = reflect_pad_array(rainy[None].astype(np.float32) / 127.5 - 1, 128)[0]
    sessions = {}
    for name, (level, threads, spin) in grid.items():
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = level
        options.intra_op_num_threads = threads
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        sessions[name] = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        sessions[name].run(None, {"rainy": padded})
    times = {name: [] for name in sessions}
    for _ in range(repeats):
        for name, session in sessions.items():
            started = time.perf_counter()
            session.run(None, {"rainy": padded})
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="built-in name, .keras or .npz (default: default)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="timed photos per format, size and round")
    parser.add_argument("--pairs", type=Path, help="real (rainy, clean) pairs for the int8 PSNR-Y check")
    parser.add_argument("--settings", action="store_true", help="also time onnxruntime session settings")
    args = parser.parse_args()

    generator = load_generator(args.model)
    photos = {size: photo(*size) for size in SIZES}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        before = graph_before(generator, folder)
        report = export_generator(args.model, Path(folder) / "out", ["savedmodel", "onnx", "onnx-int8", "keras"])
        derainers = {
            "Keras (.keras)": report["keras"]["path"],
            "SavedModel": report["savedmodel"]["path"],
            "ONNX float32": report["onnx"]["path"],
            "ONNX int8": report["onnx-int8"]["path"],
        }
        derainers = {name: Derainer(path, tile_size=2048) for name, path in derainers.items()}
        for derainer in derainers.values():
            for image in photos.values():
                derainer.derain(image)  # warm-up: tracing, session start
        times = {(size, name): [] for size in SIZES for name in derainers}
        for round_index in range(args.rounds):
            for size, image in photos.items():
                for name, derainer in derainers.items():
                    for _ in range(args.repeats):
                        started = time.perf_counter()
                        derainer.derain(image)
                        times[size, name].append(time.perf_counter() - started)
            print(f"round {round_index + 1}: " + ", ".join(
                f"{size[1]}x{size[0]} {name} {statistics.median(values[-args.repeats:]):.3f} s"
                for (size, name), values in times.items()), flush=True)
        quality = {}
        if args.pairs:
            for name in ("ONNX float32", "ONNX int8"):
                quality[name] = psnr_y(derainers[name], args.pairs)
        settings = session_settings(report["onnx"]["path"], photos[SIZES[0]], 3 * args.repeats) if args.settings else {}
    load_after = os.getloadavg()

    print(f"\n{machine()}")
    print(f"load average before {load_before[0]:.2f}, {load_before[1]:.2f}, {load_before[2]:.2f}; "
          f"after {load_after[0]:.2f}, {load_after[1]:.2f}, {load_after[2]:.2f}")
    print(f"ONNX graph before: {histogram_line(before)}")
    print(f"ONNX graph now:    {histogram_line(report['onnx']['ops'])}")
    print(f"ONNX int8 graph:   {histogram_line(report['onnx-int8']['ops'])}")
    print("parity (max |difference| vs Keras): " + ", ".join(
        f"{name} {result['max_abs_diff']:.1e}" for name, result in report.items()))
    print(f"ONNX float32 in OpenCV DNN: {report['onnx']['opencv_max_abs_diff']}; "
          f"int8 PSNR against Keras {report['onnx-int8']['psnr']:.1f} dB")
    for name, (score, count) in quality.items():
        print(f"PSNR-Y on {count} real pairs ({args.pairs}): {name} {score:.2f} dB")
    print("\n| photo | format | median s | best s | ratio to Keras |\n| --- | --- | --- | --- | --- |")
    for size in SIZES:
        keras_median = statistics.median(times[size, "Keras (.keras)"])
        for name in derainers:
            values = times[size, name]
            print(f"| {size[1]}x{size[0]} | {name} | {statistics.median(values):.3f} | {min(values):.3f} | "
                  f"{statistics.median(values) / keras_median:.2f} |")
    if settings:
        print("\n| onnxruntime settings (720x480, float32) | median s |\n| --- | --- |")
        for name, seconds in sorted(settings.items(), key=lambda item: item[1]):
            print(f"| {name} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
