"""Throughput of ``synthetic_dataset``: (rainy, clean) pairs per second, 256x256 crops, batch 8.

Times the whole pipeline (decode from cache, crop and flip, render drops, scale to
[-1, 1]) on the built-in photos after a warm-up, and the renderer alone on a
fixed batch; prints both with the machine and writes them to
``benchmarks/results/synthetic.md``. Other processes on the machine lower the figures:
the load average is recorded with them. Run:

    python benchmarks/bench_synthetic.py [--batches 60] [--repeats 3]
"""

from pathlib import Path
import argparse
import os
import platform
import sys
import time

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "synthetic.md"

from machine import cpu_name  # noqa: E402  (benchmarks/ is on sys.path when run as a script)
CROP = 256
BATCH = 8


def pipeline_rate(batches, repeats):
    """Best of ``repeats`` runs of ``batches`` batches, in pairs per second."""
    from keras_derain.data.synthetic import synthetic_dataset

    iterator = iter(synthetic_dataset(crop_size=CROP, batch_size=BATCH, seed=0))
    for _ in range(10):  # warm-up: tracing, cache fill, autotuning
        next(iterator)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        rates.append(batches * BATCH / (time.perf_counter() - start))
    return max(rates)


def renderer_rate(batches, repeats):
    """The renderer alone on one fixed batch (a compiled ``tf.function``), pairs per second."""
    import tensorflow as tf
    from keras_derain.data.raindrops import render_raindrops

    clean = tf.random.stateless_uniform([BATCH, CROP, CROP, 3], [0, 0])
    render = tf.function(lambda images, seed: render_raindrops(images, seed=seed))
    render(clean, tf.constant([0, 0])).numpy()
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for index in range(batches):
            render(clean, tf.constant([1, index])).numpy()
        rates.append(batches * BATCH / (time.perf_counter() - start))
    return max(rates)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(REPO))
    import tensorflow as tf

    pipeline = pipeline_rate(args.batches, args.repeats)
    renderer = renderer_rate(args.batches, args.repeats)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    machine = (
        f"{os.cpu_count()} CPU cores ({cpu_name()}), no GPU used, "
        f"TensorFlow {tf.__version__}, Python {platform.python_version()}, load average {load}"
    )
    lines = [
        "# synthetic_dataset throughput",
        "",
        f"Measured by `benchmarks/bench_synthetic.py` ({CROP}x{CROP} crops, batch {BATCH}, built-in photos,",
        f"default raindrop options; best of {args.repeats} runs of {args.batches} batches after a warm-up).",
        "",
        "| what | pairs/s |",
        "| --- | --- |",
        f"| `synthetic_dataset` (decode from cache, crop, flip, render, scale) | {pipeline:.0f} |",
        f"| `render_raindrops` alone (one batch, `tf.function`) | {renderer:.0f} |",
        "",
        f"Machine: {machine}.",
        "",
    ]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
