"""Time and profile a plain Pix2Pix train step of keras-derain's models on CPU.

The step is the TensorFlow Pix2Pix tutorial's: one ``tf.function`` with two
``GradientTape``s, generator loss ``BCE-with-logits + 100 * L1``, discriminator
loss ``BCE(real) + BCE(fake)``, Adam(2e-4, beta_1=0.5) for each network, on
random pairs in [-1, 1] (no input pipeline: this measures the models).

The models use stock Keras layers. ``--norm moments`` and ``--upconv
subpixel`` swap in prototypes that compute the same functions (an instance
norm from one ``tf.nn.moments``; a transposed convolution as a stride-1 conv +
``depth_to_space``), with the same weights, print the largest output change,
and time them. ``--profile`` times forward and backward of every layer of both
networks at the shapes it sees in the step and sums them by layer type.
``--intra``, ``--inter``, ``--jit`` and ``--grappler`` set TensorFlow's knobs.

Example:
    python benchmarks/profile_pix2pix.py --size 256 --batch 8 --steps 5
    python benchmarks/profile_pix2pix.py --size 128 --upconv subpixel --profile

Results with the machine they ran on: ``benchmarks/results/pix2pix_speed.md``.
"""

import argparse
import collections
import os
import sys
import time


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=256, help="square crop side")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--base-channels", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--norm", choices=("group", "moments"), default="group",
                        help="the models' GroupNormalization(groups=-1) or a tf.nn.moments one")
    parser.add_argument("--upconv", choices=("transpose", "subpixel"), default="transpose",
                        help="the models' Conv2DTranspose or a conv + depth_to_space one")
    parser.add_argument("--intra", type=int, default=None, help="intra-op threads (TF default)")
    parser.add_argument("--inter", type=int, default=None, help="inter-op threads (TF default)")
    parser.add_argument("--grappler", action="append", default=[], metavar="OPTION=0|1",
                        help="tf.config.optimizer experimental option, e.g. remapping=0")
    parser.add_argument("--jit", action="store_true", help="compile the step with XLA")
    parser.add_argument("--profile", action="store_true", help="per-layer-type profile")
    return parser.parse_args(argv)


def configure(intra, inter, grappler):
    """Threads and graph optimizer options; must run before TensorFlow's first op."""
    import tensorflow as tf

    tf.config.optimizer.set_experimental_options(
        {key: bool(int(value)) for key, value in (item.split("=") for item in grappler)}
    )
    if intra is not None:
        tf.config.threading.set_intra_op_parallelism_threads(intra)
    if inter is not None:
        tf.config.threading.set_inter_op_parallelism_threads(inter)


def _variant_layers():
    """Prototype replacements for the stock layers; each computes the same function."""
    import keras
    import tensorflow as tf

    class MomentsInstanceNorm(keras.layers.Layer):
        """GroupNormalization(groups=-1) as one tf.nn.moments over [1, 2] and x * a + b."""

        def __init__(self, epsilon, **kwargs):
            super().__init__(**kwargs)
            self.epsilon = epsilon

        def build(self, input_shape):
            self.gamma = self.add_weight(shape=input_shape[-1:], initializer="ones", name="gamma")
            self.beta = self.add_weight(shape=input_shape[-1:], initializer="zeros", name="beta")

        def call(self, inputs):
            mean, variance = tf.nn.moments(inputs, axes=[1, 2], keepdims=True)
            multiplier = tf.math.rsqrt(variance + self.epsilon) * self.gamma
            return inputs * multiplier + (self.beta - mean * multiplier)

    class SubpixelConv2DTranspose(keras.layers.Layer):
        """Conv2DTranspose(k=4, s=2, "same") as a 2x2 stride-1 conv + depth_to_space.

        Output pixel (2i + a, 2j + b) sees input pixels (i-1+a .. i+a, j-1+b .. j+b)
        through kernel taps (3-a-2u, 3-b-2v): the four phases' 2x2 kernels are
        stacked as 4 * filters output channels of one convolution of the 1-padded
        input, each phase is cropped, and depth_to_space interleaves them.
        Same kernel (4, 4, filters, in) as Conv2DTranspose.
        """

        def __init__(self, filters, use_bias, **kwargs):
            super().__init__(**kwargs)
            self.filters, self.use_bias = filters, use_bias

        def build(self, input_shape):
            self.kernel = self.add_weight(
                shape=(4, 4, self.filters, input_shape[-1]), name="kernel"
            )
            self.bias = (
                self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")
                if self.use_bias
                else None
            )

        def call(self, inputs):
            flipped = tf.reverse(self.kernel, axis=[0, 1])  # [3 - y, 3 - x]
            taps = tf.reshape(flipped, (2, 2, 2, 2, self.filters, -1))  # [u, a, v, b, out, in]
            taps = tf.transpose(taps, (0, 2, 5, 1, 3, 4))  # [u, v, in, a, b, out]
            kernel = tf.reshape(taps, (2, 2, -1, 4 * self.filters))
            padded = tf.pad(inputs, [[0, 0], [1, 1], [1, 1], [0, 0]])
            phases = tf.nn.conv2d(padded, kernel, strides=1, padding="VALID")
            height, width, f = tf.shape(inputs)[1], tf.shape(inputs)[2], self.filters
            crops = [
                phases[:, a : a + height, b : b + width, (2 * a + b) * f : (2 * a + b + 1) * f]
                for a in (0, 1)
                for b in (0, 1)
            ]
            upsampled = tf.nn.depth_to_space(tf.concat(crops, axis=-1), 2)
            return upsampled if self.bias is None else tf.nn.bias_add(upsampled, self.bias)

    return MomentsInstanceNorm, SubpixelConv2DTranspose


def with_variant_layers(model, norm="group", upconv="transpose"):
    """The same network and weights with prototype layers; prints the largest output change."""
    import keras
    import numpy as np

    moments_norm, subpixel = _variant_layers()

    def clone(layer):
        config = layer.get_config()
        if norm == "moments" and isinstance(layer, keras.layers.GroupNormalization):
            return moments_norm(layer.epsilon, name=layer.name)
        if upconv == "subpixel" and isinstance(layer, keras.layers.Conv2DTranspose):
            return subpixel(layer.filters, layer.use_bias, name=layer.name)
        return layer.__class__.from_config(config)

    variant = keras.models.clone_model(model, clone_function=clone)
    variant.set_weights(model.get_weights())
    probe = [np.random.default_rng(0).uniform(-1, 1, (2, *x.shape[1:])) for x in model.inputs]
    probe = probe if len(probe) > 1 else probe[0]
    change = np.abs(variant.predict(probe, verbose=0) - model.predict(probe, verbose=0)).max()
    print(f"{model.name}: norm {norm} upconv {upconv}, max |output change| {change:.2e}")
    return variant


def build_models(size, base_channels, norm="group", upconv="transpose"):
    from keras_derain.models import pix2pix_discriminator, pix2pix_generator

    shape = (size, size, 3)
    generator = pix2pix_generator(base_channels=base_channels, input_shape=shape)
    discriminator = pix2pix_discriminator(base_channels=base_channels, input_shape=shape)
    if (norm, upconv) != ("group", "transpose"):
        generator = with_variant_layers(generator, norm, upconv)
        discriminator = with_variant_layers(discriminator, norm, upconv)
    return generator, discriminator


def make_train_step(generator, discriminator, jit=False):
    import keras
    import tensorflow as tf

    bce = keras.losses.BinaryCrossentropy(from_logits=True)
    g_optimizer = keras.optimizers.Adam(2e-4, beta_1=0.5)
    d_optimizer = keras.optimizers.Adam(2e-4, beta_1=0.5)
    g_optimizer.build(generator.trainable_variables)
    d_optimizer.build(discriminator.trainable_variables)

    @tf.function(jit_compile=jit)
    def train_step(rainy, clean):
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            generated = generator(rainy, training=True)
            real_logits = discriminator([rainy, clean], training=True)
            fake_logits = discriminator([rainy, generated], training=True)
            g_loss = bce(tf.ones_like(fake_logits), fake_logits) + 100.0 * tf.reduce_mean(
                tf.abs(clean - generated)
            )
            d_loss = bce(tf.ones_like(real_logits), real_logits) + bce(
                tf.zeros_like(fake_logits), fake_logits
            )
        g_grads = g_tape.gradient(g_loss, generator.trainable_variables)
        d_grads = d_tape.gradient(d_loss, discriminator.trainable_variables)
        g_optimizer.apply(g_grads, generator.trainable_variables)
        d_optimizer.apply(d_grads, discriminator.trainable_variables)
        return g_loss, d_loss

    return train_step


def random_pairs(batch, size):
    import tensorflow as tf

    rainy = tf.random.uniform([batch, size, size, 3], -1.0, 1.0, seed=1)
    clean = tf.random.uniform([batch, size, size, 3], -1.0, 1.0, seed=2)
    return rainy, clean


def time_train(args):
    """Pairs per second and CPU seconds per pair (all threads) of each repeat.

    Each repeat runs ``steps`` steps, after ``warmup`` steps. CPU time per pair
    is less disturbed than wall time by other processes on the machine.
    """
    generator, discriminator = build_models(args.size, args.base_channels, args.norm, args.upconv)
    train_step = make_train_step(generator, discriminator, args.jit)
    rainy, clean = random_pairs(args.batch, args.size)
    for _ in range(args.warmup):
        [loss.numpy() for loss in train_step(rainy, clean)]
    rates, cpu_seconds = [], []
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            [loss.numpy() for loss in train_step(rainy, clean)]
        rates.append(args.batch * args.steps / (time.perf_counter() - start))
        cpu_seconds.append((time.process_time() - cpu_start) / (args.batch * args.steps))
    return rates, cpu_seconds, generator, discriminator


def time_generator_forward(generator, rainy, steps):
    """Pairs per second of the generator alone in inference mode, best of 3 repeats."""
    import tensorflow as tf

    forward = tf.function(lambda images: generator(images, training=False))
    forward(rainy).numpy()
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(steps):
            forward(rainy).numpy()
        rates.append(rainy.shape[0] * steps / (time.perf_counter() - start))
    return max(rates)


def _layer_inputs(model, batch):
    """(layer, input shapes) for every computing layer of a functional model."""
    for layer in model.layers:
        if not layer.weights and layer.__class__.__name__ in ("InputLayer",):
            continue
        node = layer._inbound_nodes[0]
        shapes = [tuple([batch, *t.shape[1:]]) for t in node.input_tensors]
        yield layer, shapes


def profile_layers(models, batch, repeats=3):
    """Milliseconds of forward and of forward+backward per layer type, summed.

    Each layer runs alone in a ``tf.function`` (training mode) on random inputs
    of the shapes it sees in the step; backward = gradient of a random
    projection of its output w.r.t. its inputs and weights. A discriminator
    layer runs twice per step (real and fake pairs): it is counted twice.
    """
    import tensorflow as tf

    totals = collections.defaultdict(lambda: [0.0, 0.0, 0])
    for model, calls_per_step in models:
        for layer, shapes in _layer_inputs(model, batch):
            inputs = [tf.random.normal(shape) for shape in shapes]
            argument = inputs if len(inputs) > 1 else inputs[0]
            upstream = tf.random.normal([batch, *layer.output.shape[1:]])

            @tf.function
            def forward(argument=argument, layer=layer):
                return layer(argument, training=True)

            @tf.function
            def backward(argument=argument, layer=layer, upstream=upstream):
                with tf.GradientTape() as tape:
                    tape.watch(argument)
                    loss = tf.reduce_sum(layer(argument, training=True) * upstream)
                return tape.gradient(loss, [argument, layer.trainable_variables])

            row = totals[layer.__class__.__name__]
            for index, function in enumerate((forward, backward)):
                tf.nest.map_structure(lambda t: t.numpy() if t is not None else t, function())
                best = float("inf")
                for _ in range(repeats):
                    start = time.perf_counter()
                    tf.nest.map_structure(
                        lambda t: t.numpy() if t is not None else t, function()
                    )
                    best = min(best, time.perf_counter() - start)
                row[index] += 1000 * best * calls_per_step
            row[2] += calls_per_step
    return dict(totals)


def main(argv=None):
    args = parse_args(argv)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    configure(args.intra, args.inter, args.grappler)
    import keras
    import tensorflow as tf

    load = os.getloadavg()
    rates, cpu_seconds, generator, discriminator = time_train(args)
    print(
        f"tf {tf.__version__} keras {keras.__version__} cpus {os.cpu_count()} "
        f"intra {tf.config.threading.get_intra_op_parallelism_threads()} "
        f"inter {tf.config.threading.get_inter_op_parallelism_threads()} "
        f"onednn {os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'default(on)')} jit {args.jit} "
        f"grappler {args.grappler}"
    )
    print(
        f"size {args.size} batch {args.batch} base {args.base_channels} norm {args.norm} upconv {args.upconv} "
        f"params G {generator.count_params():,} D {discriminator.count_params():,}"
    )
    print(f"load before {load[0]:.2f} after {os.getloadavg()[0]:.2f}")
    print("pairs/s " + " ".join(f"{rate:.2f}" for rate in rates) + f"  best {max(rates):.2f}")
    print("cpu s/pair " + " ".join(f"{cpu:.3f}" for cpu in cpu_seconds) + f"  min {min(cpu_seconds):.3f}")
    rainy, _ = random_pairs(args.batch, args.size)
    print(f"generator forward (inference) pairs/s {time_generator_forward(generator, rainy, args.steps):.2f}")
    if args.profile:
        totals = profile_layers([(generator, 1), (discriminator, 2)], args.batch)
        print("\n| layer type | count/step | forward ms | forward+backward ms |")
        print("| --- | --- | --- | --- |")
        for name, (forward, both, count) in sorted(totals.items(), key=lambda kv: -kv[1][1]):
            print(f"| {name} | {count} | {forward:.0f} | {both:.0f} |")
        print(f"| total | | {sum(v[0] for v in totals.values()):.0f} | "
              f"{sum(v[1] for v in totals.values()):.0f} |")


if __name__ == "__main__":
    main()
