"""tf.distribute and mixed precision: MirroredStrategy over two logical CPUs, one mixed-precision step."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from conftest import REPO
from keras_derain import training
from keras_derain.presets import resolve

TINY = {"base_channels": 4, "crop_size": 32, "batch_size": 4, "steps_per_epoch": 2}

# Runs in a fresh interpreter: logical devices must be set before TensorFlow's first op.
MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from keras_derain import training
    from keras_derain.presets import resolve

    config = resolve("pix2pix", epochs=1, base_channels=4, crop_size=32, batch_size=4)
    rng = np.random.default_rng(0)
    rainy = rng.uniform(-1, 1, (8, 32, 32, 3)).astype("float32")
    clean = np.clip(rainy * 0.5 + 0.1, -1, 1).astype("float32")

    def final_weights(strategy):
        with strategy.scope():
            generator, discriminator = training.build_models(config)
            # No dropout randomness: replicas would draw other masks than one device.
            for layer in generator.layers:
                if isinstance(layer, keras.layers.Dropout):
                    layer.rate = 0.0
            gan = training.DerainGAN(generator, discriminator)
            # Plain SGD: the update is proportional to the gradient, so a gradient
            # averaged wrongly over replicas shows (Adam's first steps hide scale).
            gan.compile(keras.optimizers.SGD(0.05), keras.optimizers.SGD(0.05), l1_weight=100.0)
        dataset = tf.data.Dataset.from_tensor_slices((rainy, clean)).batch(4)
        history = gan.fit(dataset, epochs=1, verbose=0, shuffle=False).history
        weights = [v.numpy() for v in gan.generator.weights + gan.discriminator.weights]
        return weights, history["d_loss"][0], history["g_loss"][0]

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    one = final_weights(tf.distribute.get_strategy())
    two = final_weights(mirrored)
    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(one[0], two[0]))
    scale = max(float(np.max(np.abs(a))) for a in one[0])
    print(json.dumps({"replicas": mirrored.num_replicas_in_sync, "max_difference": difference,
                      "max_weight": scale, "d_loss": [one[1], two[1]], "g_loss": [one[2], two[2]]}))
    """
)


def test_mirrored_strategy_matches_one_device():
    result = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    # Same weights after one epoch (two steps, global batch 4 split 2 + 2), within float tolerance.
    assert report["max_difference"] < 1e-4, report
    assert report["d_loss"][0] == pytest.approx(report["d_loss"][1], rel=1e-4)
    assert report["g_loss"][0] == pytest.approx(report["g_loss"][1], rel=1e-4)


def test_one_mixed_precision_step_on_cpu():
    config = resolve("pix2pix", epochs=1, **TINY)
    gan = training.build_gan(config, mixed_precision=True)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    assert isinstance(gan.g_optimizer, keras.optimizers.LossScaleOptimizer)
    assert isinstance(gan.d_optimizer, keras.optimizers.LossScaleOptimizer)
    assert gan.generator.layers[2].compute_dtype == "float16"
    rng = np.random.default_rng(0)
    rainy = rng.uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    before = [v.numpy().copy() for v in gan.generator.trainable_variables]
    history = gan.fit(rainy, rainy, batch_size=4, epochs=1, verbose=0).history
    assert gan.generator.output.dtype == "float32"
    assert gan.generator(rainy).dtype == "float32"
    assert np.isfinite(history["g_loss"][0]) and np.isfinite(history["d_loss"][0])
    assert any(not np.array_equal(a, b.numpy()) for a, b in zip(before, gan.generator.trainable_variables))


def test_switches_resolve_to_off_on_a_cpu():
    if training.has_gpu():
        pytest.skip("a GPU is present")
    assert training.resolve_switch("jit", "auto") is False
    assert training.resolve_switch("jit", "on") is True
    with pytest.raises(ValueError, match="--jit must be one of"):
        training.resolve_switch("jit", "maybe")
    with pytest.raises(ValueError, match="--strategy 'tpu' is unknown"):
        training.make_strategy("tpu")
