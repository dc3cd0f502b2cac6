"""Latency of one 720x480 photo through Derainer with Keras, SavedModel and onnxruntime.

Builds the default Pix2Pix generator (32 base channels, depth 8, instance
norm; random weights: latency does not depend on them), exports it with
keras_derain.export (which also verifies parity), then times
``Derainer.derain`` on a uint8 720x480 photo for each format: the same
pre- and post-processing, the whole photo in one run (padded to 768x512 in
the graph). Rounds interleave the formats so that load from other processes
on a shared CPU falls on all of them alike.

    python benchmarks/bench_inference.py [--rounds 3] [--repeats 5]
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

from keras_derain.export import export_generator
from keras_derain.inference import Derainer
from keras_derain.models import pix2pix_generator

HEIGHT, WIDTH = 480, 720


def machine():
    cpu = "unknown CPU"
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    import onnxruntime

    return (
        f"{os.cpu_count()} CPU cores ({cpu}), no GPU used, Python {platform.python_version()}, "
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, onnxruntime {onnxruntime.__version__}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5, help="timed photos per format per round")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    generator = pix2pix_generator(base_channels=32)
    photo = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as folder:
        generator.save(Path(folder) / "generator.keras")
        report = export_generator(Path(folder) / "generator.keras", Path(folder) / "out", "all")
        derainers = {
            "Keras (.keras)": Derainer(Path(folder) / "generator.keras", tile_size=1024),
            "SavedModel": Derainer(report["savedmodel"]["path"], tile_size=1024),
            "onnxruntime": Derainer(report["onnx"]["path"], tile_size=1024),
        }
        for derainer in derainers.values():
            derainer.derain(photo)  # warm-up: tracing, session start
        times = {name: [] for name in derainers}
        for round_index in range(args.rounds):
            for name, derainer in derainers.items():
                for _ in range(args.repeats):
                    started = time.perf_counter()
                    derainer.derain(photo)
                    times[name].append(time.perf_counter() - started)
            print(f"round {round_index + 1}: " + ", ".join(
                f"{name} {statistics.median(values[-args.repeats:]):.3f} s" for name, values in times.items()))
    load_after = os.getloadavg()

    keras_median = statistics.median(times["Keras (.keras)"])
    print(f"\n{machine()}")
    print(f"load average before {load_before[0]:.2f}, {load_before[1]:.2f}, {load_before[2]:.2f}; "
          f"after {load_after[0]:.2f}, {load_after[1]:.2f}, {load_after[2]:.2f}")
    print(f"parity (max |difference| vs Keras): " + ", ".join(
        f"{name} {result['max_abs_diff']:.1e}" for name, result in report.items()))
    print(f"\n| format | median s / photo | best s | ratio to Keras (median) |\n| --- | --- | --- | --- |")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.3f} | {min(values):.3f} | {median / keras_median:.2f} |")


if __name__ == "__main__":
    main()
