"""Training speed with and without mixed precision and XLA, as train.py builds the GAN.

Each of the four combinations of ``--mixed-precision`` and ``--jit`` gets a
fresh Pix2Pix ``DerainGAN`` from ``keras_derain.training.build_gan`` (the code
path of train.py), trained with ``fit`` on a repeated in-memory batch, so that
the input pipeline costs nothing. Tracing and XLA compilation happen in an
untimed warm-up; the figure is the best of ``--repeats`` timed ``fit`` calls of
``--steps`` steps, the combinations taking turns so that load hits all alike.
The device and the versions are printed and written with the table.

Example:
    python benchmarks/bench_scale.py --size 128 --steps 12 --repeats 2
    python benchmarks/bench_scale.py --size 256 --batch 32 --out benchmarks/results/scale.md   # on a GPU
"""

import argparse
import itertools
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--base-channels", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="append a markdown table here")
    return parser.parse_args(argv)


def device_name():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"{len(gpus)} x {details.get('device_name', 'GPU')} (compute capability {details.get('compute_capability')})"
    return f"CPU only: {os.cpu_count()} cores ({platform.processor() or platform.machine()})"


def runner(size, batch, base_channels, mixed_precision, jit_compile):
    """A fresh GAN as train.py builds it; returns ``run(steps) -> seconds``."""
    import keras

    from bench_trainer import data
    from keras_derain.presets import resolve
    from keras_derain.training import build_gan

    keras.utils.set_random_seed(0)
    config = resolve("pix2pix", crop_size=size, batch_size=batch, base_channels=base_channels)
    gan = build_gan(config, mixed_precision=mixed_precision, jit_compile=jit_compile)
    dataset = data(size, batch)

    def run(steps):
        start = time.perf_counter()
        history = gan.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False).history
        seconds = time.perf_counter() - start
        if not all(value == value for value in history["g_loss"]):  # NaN check
            raise RuntimeError(f"NaN loss with mixed_precision={mixed_precision}, jit={jit_compile}")
        return seconds

    return run


def main(argv=None):
    args = parse_args(argv)
    import keras
    import tensorflow as tf

    device = device_name()
    print(device)
    rows = []
    for size in args.size:
        combinations = list(itertools.product((False, True), (False, True)))
        runners = {combo: runner(size, args.batch, args.base_channels, *combo) for combo in combinations}
        for run in runners.values():
            run(3)  # trace, compile, warm up
        best = {combo: float("inf") for combo in combinations}
        for _ in range(args.repeats):
            for combo, run in runners.items():
                best[combo] = min(best[combo], run(args.steps))
        base = args.batch * args.steps / best[(False, False)]
        for (mixed, jit), seconds in best.items():
            rate = args.batch * args.steps / seconds
            print(f"{size}x{size} batch {args.batch}: mixed precision {'on ' if mixed else 'off'}, "
                  f"XLA {'on ' if jit else 'off'}: {rate:8.2f} pairs/s ({rate / base:.2f}x)")
            rows.append((size, mixed, jit, rate, rate / base))

    machine = (f"{device}; TensorFlow {tf.__version__}, Keras {keras.__version__}, "
               f"load average {os.getloadavg()[0]:.2f} at the end")
    print(machine)
    if args.out:
        lines = ["", f"Pix2Pix (U-Net depth for the crop, {args.base_channels} base channels), batch {args.batch}, "
                 f"`DerainGAN.fit` as train.py builds it, best of {args.repeats} x {args.steps} steps; {machine}.", "",
                 "| crop | mixed precision | XLA | pairs/s | vs both off |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {size} | {'on' if mixed else 'off'} | {'on' if jit else 'off'} | {rate:.2f} | {ratio:.2f}x |"
                  for size, mixed, jit, rate, ratio in rows]
        with open(args.out, "a") as handle:
            handle.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
