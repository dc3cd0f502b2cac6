"""DerainGAN.fit against a plain tf.function + GradientTape loop, side by side in one run.

The plain loop is the TensorFlow Pix2Pix tutorial's way to train: one
``tf.function`` with two tapes, BCE-with-logits + 100 x L1 for the generator,
BCE(real) + BCE(fake) for the discriminator, one Adam each. Both train the same
architecture (fresh weights from the same seed) on the same in-memory pairs
(a repeated ``tf.data`` of random images, so the input pipeline costs nothing),
alternating repeats so that load on the machine hits both alike. A repeat of
``fit`` is one whole ``fit`` call of three epochs, ``--steps`` steps in all, its
start-up included.

Example:
    python benchmarks/bench_trainer.py --size 128 --steps 20
    python benchmarks/bench_trainer.py --size 256 --steps 8 --out benchmarks/results/trainer.md
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--base-channels", type=int, default=32)
    parser.add_argument("--steps", type=int, default=30, help="timed steps per repeat (one fit epoch)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="append a markdown table here")
    return parser.parse_args(argv)


def build(size, base_channels):
    import keras

    from keras_derain.models import pix2pix_discriminator, pix2pix_generator
    from keras_derain.training import unet_depth

    keras.utils.set_random_seed(0)
    generator = pix2pix_generator(base_channels=base_channels, depth=unet_depth(size))
    discriminator = pix2pix_discriminator(base_channels=base_channels)
    return generator, discriminator


def data(size, batch):
    import numpy as np
    import tensorflow as tf

    rng = np.random.default_rng(0)
    rainy = rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32")
    clean = rng.uniform(-1, 1, (batch, size, size, 3)).astype("float32")
    return tf.data.Dataset.from_tensors((rainy, clean)).repeat()


def plain_loop(size, batch, base_channels):
    """The tutorial's step; returns ``run(steps) -> seconds``."""
    import keras
    import tensorflow as tf

    generator, discriminator = build(size, base_channels)
    g_optimizer = keras.optimizers.Adam(2e-4, beta_1=0.5)
    d_optimizer = keras.optimizers.Adam(2e-4, beta_1=0.5)
    bce = keras.losses.BinaryCrossentropy(from_logits=True)

    @tf.function
    def step(rainy, clean):
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            generated = generator(rainy, training=True)
            real = discriminator([rainy, clean], training=True)
            fake = discriminator([rainy, generated], training=True)
            g_loss = bce(tf.ones_like(fake), fake) + 100.0 * tf.reduce_mean(tf.abs(clean - generated))
            d_loss = bce(tf.ones_like(real), real) + bce(tf.zeros_like(fake), fake)
        g_optimizer.apply(g_tape.gradient(g_loss, generator.trainable_variables), generator.trainable_variables)
        d_optimizer.apply(
            d_tape.gradient(d_loss, discriminator.trainable_variables), discriminator.trainable_variables
        )
        return g_loss, d_loss

    iterator = iter(data(size, batch))

    def run(steps):
        start = time.perf_counter()
        for _ in range(steps):
            g_loss, _ = step(*next(iterator))
        float(g_loss)  # wait for the last step
        return time.perf_counter() - start

    return run


def derain_gan(size, batch, base_channels, metrics=None):
    """DerainGAN.fit with the Pix2Pix preset; returns ``run(steps) -> seconds``.

    ``metrics=[]`` leaves out the per-step PSNR/SSIM, which the plain loop lacks.
    """
    import keras

    from keras_derain.callbacks import StopOnNaN
    from keras_derain.gan import DerainGAN

    generator, discriminator = build(size, base_channels)
    gan = DerainGAN(generator, discriminator)
    gan.compile(keras.optimizers.Adam(2e-4, beta_1=0.5), keras.optimizers.Adam(2e-4, beta_1=0.5), metrics=metrics)
    dataset = data(size, batch)

    def run(steps):
        start = time.perf_counter()
        # Three epochs in one call, as a training run has them (fit's start-up is per
        # call), with train.py's per-batch NaN guard.
        gan.fit(dataset, steps_per_epoch=max(1, steps // 3), epochs=3, verbose=0, shuffle=False, callbacks=[StopOnNaN()])
        return time.perf_counter() - start

    return run


def main(argv=None):
    args = parse_args(argv)
    import tensorflow as tf

    rows = []
    for size in args.size:
        runners = {"plain tf.function loop": plain_loop(size, args.batch, args.base_channels),
                   "DerainGAN.fit": derain_gan(size, args.batch, args.base_channels),
                   "DerainGAN.fit, metrics=[]": derain_gan(size, args.batch, args.base_channels, metrics=[])}
        for run in runners.values():
            run(3)  # trace and warm up
        best = {name: float("inf") for name in runners}
        for _ in range(args.repeats):
            for name, run in runners.items():
                best[name] = min(best[name], run(args.steps))
        rates = {name: args.batch * args.steps / seconds for name, seconds in best.items()}
        ratio = rates["DerainGAN.fit"] / rates["plain tf.function loop"]
        for name, rate in rates.items():
            print(f"{size}x{size} batch {args.batch}: {name}: {rate:.2f} pairs/s")
        bare = rates["DerainGAN.fit, metrics=[]"] / rates["plain tf.function loop"]
        print(f"{size}x{size}: DerainGAN.fit / plain loop = {ratio:.3f} (without PSNR/SSIM: {bare:.3f})")
        rows.append((size, rates["plain tf.function loop"], rates["DerainGAN.fit"],
                     rates["DerainGAN.fit, metrics=[]"], ratio, bare))

    machine = (f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
               f"TensorFlow {tf.__version__}, load average {os.getloadavg()[0]:.2f} at the end")
    print(machine)
    if args.out:
        lines = ["", f"Pix2Pix, {args.base_channels} base channels, batch {args.batch}, "
                 f"best of {args.repeats} x {args.steps} steps; {machine}.", "",
                 "| crop | plain loop | DerainGAN.fit | DerainGAN.fit, metrics=[] | fit / plain | fit, metrics=[] / plain |",
                 "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {size} | {plain:.2f} | {fit:.2f} | {bare_fit:.2f} | {ratio:.3f} | {bare:.3f} |"
                  for size, plain, fit, bare_fit, ratio, bare in rows]
        with open(args.out, "a") as handle:
            handle.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
