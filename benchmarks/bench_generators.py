"""Latency of generators side by side on a 720x480 photo: by default the shipped `pix2pix` against `default`.

One 720x480 photo (random pixels), batch 1, float32 on the CPU, each model
compiled once (`tf.function`) and warmed up; the rounds interleave the models
so both see the same machine load, and the median of the rounds is reported.

The first model is the baseline of the ratio column. A model is a built-in name
(`pix2pix`, `default`, `lens`, ...) or a .keras / .npz file.

Usage:
    python benchmarks/bench_generators.py --rounds 15
    python benchmarks/bench_generators.py --models pix2pix ~/runs/x/generator.keras   # a trained one
"""

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parent.parent

from machine import describe  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--models", nargs="+", default=["pix2pix", "default"],
                        help="built-in names or .keras / .npz files; the first is the ratio's baseline")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "generators.md")
    args = parser.parse_args(argv)

    import numpy as np
    import tensorflow as tf

    from keras_derain.compact import load_compact
    from keras_derain.export import PaddedGenerator
    from keras_derain.inference import model_path

    import keras

    def load(model):
        path = model_path(model)
        generator = load_compact(path) if path.suffix == ".npz" else keras.saving.load_model(path, compile=False)
        return f"`{model}`" if not Path(model).exists() else path.name, generator

    models = dict(load(model) for model in args.models)
    photo = tf.constant(np.random.default_rng(0).uniform(-1, 1, (1, 480, 720, 3)).astype("float32"))
    runs = {}
    for name, model in models.items():
        if model.outputs and len(model.outputs) > 1:
            model = keras.Model(model.inputs, model.outputs[0])
        padded = PaddedGenerator(model)  # pads to the stride in the graph, as Derainer runs a photo
        runs[name] = tf.function(lambda x, padded=padded: padded(x, training=False))
        for _ in range(3):
            runs[name](photo).numpy()
    seconds = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            run(photo).numpy()
            seconds[name].append(time.perf_counter() - started)
    base = statistics.median(seconds[next(iter(models))])
    lines = [
        "# Generator latency, side by side",
        "",
        f"`python benchmarks/bench_generators.py --rounds {args.rounds} --models {' '.join(args.models)}`: one 720x480",
        "photo, batch 1, float32,",
        "`tf.function`, rounds interleaved, median. Machine: " + describe(load=True) + ".",
        "",
        "| generator | parameters | median s | ratio to the first |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, model in models.items():
        median = statistics.median(seconds[name])
        lines.append(f"| {name} | {model.count_params():,} | {median:.4f} | {median / base:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
