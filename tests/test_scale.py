"""tf.distribute and mixed precision: MirroredStrategy over two logical CPUs, one mixed-precision step."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from conftest import REPO
from keras_derain import training
from keras_derain.callbacks import GeneratorCheckpoint
from keras_derain.models.precision import is_mixed
from keras_derain.presets import resolve

TINY = {"base_channels": 4, "crop_size": 32, "batch_size": 4, "steps_per_epoch": 2}

# Runs in a fresh interpreter: logical devices and TF_CONFIG must be set before
# TensorFlow's first op. argv: the strategy ("default", "mirrored" over two
# logical CPUs, or "multiworker" from TF_CONFIG) and a .npz path for the result.
STRATEGY_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import tensorflow as tf
    name, out = sys.argv[1], sys.argv[2]
    if name == "mirrored":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from keras_derain import training
    from keras_derain.presets import resolve

    strategy = {"default": tf.distribute.get_strategy,
                "mirrored": lambda: tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]),
                "multiworker": tf.distribute.MultiWorkerMirroredStrategy}[name]()
    config = resolve("pix2pix", epochs=1, base_channels=4, crop_size=32, batch_size=4)
    rng = np.random.default_rng(0)
    rainy = rng.uniform(-1, 1, (8, 32, 32, 3)).astype("float32")
    clean = np.clip(rainy * 0.5 + 0.1, -1, 1).astype("float32")
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
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    dataset = tf.data.Dataset.from_tensor_slices((rainy, clean)).batch(4).with_options(options)
    history = gan.fit(dataset, epochs=1, verbose=0, shuffle=False).history
    weights = [v.numpy() for v in gan.generator.weights + gan.discriminator.weights]
    np.savez(out, replicas=strategy.num_replicas_in_sync, d_loss=history["d_loss"][0],
             g_loss=history["g_loss"][0], **{f"w{i}": w for i, w in enumerate(weights)})
    """
)


def run_strategy(name, out, tf_config=None):
    """Start the script; returns the process (wait on it with ``finish``)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen([sys.executable, "-c", STRATEGY_SCRIPT, name, str(out)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process, out):
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, stderr[-3000:]
    with np.load(out) as result:
        return {key: result[key] for key in result.files}


def assert_same_training(one, other):
    """Same weights (within float tolerance) and the same epoch losses."""
    weights = sorted((key for key in one if key.startswith("w")), key=lambda key: int(key[1:]))
    assert len(weights) > 10 and weights == sorted((k for k in other if k.startswith("w")), key=lambda k: int(k[1:]))
    difference = max(float(np.max(np.abs(one[key] - other[key]))) for key in weights)
    moved = max(float(np.max(np.abs(one[key]))) for key in weights)
    assert moved > 0
    assert difference < 1e-4, difference
    assert float(one["d_loss"]) == pytest.approx(float(other["d_loss"]), rel=1e-4)
    assert float(one["g_loss"]) == pytest.approx(float(other["g_loss"]), rel=1e-4)


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    out = tmp_path_factory.mktemp("default") / "default.npz"
    return finish(run_strategy("default", out), out)


def test_mirrored_strategy_matches_one_device(one_device, tmp_path):
    # One epoch: two steps, global batch 4 split 2 + 2 over two logical CPUs.
    out = tmp_path / "mirrored.npz"
    mirrored = finish(run_strategy("mirrored", out), out)
    assert int(mirrored["replicas"]) == 2
    assert_same_training(one_device, mirrored)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


def test_multiworker_strategy_matches_one_device(one_device, tmp_path):
    # Two worker processes on this host, as on two machines: TF_CONFIG names the
    # cluster, each worker reads its shard of every global batch of 4.
    workers = [f"localhost:{port}" for port in free_ports(2)]
    outs = [tmp_path / f"worker{index}.npz" for index in range(2)]
    processes = [
        run_strategy("multiworker", out, {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        for index, out in enumerate(outs)
    ]
    results = [finish(process, out) for process, out in zip(processes, outs)]
    for result in results:
        assert int(result["replicas"]) == 2
        assert_same_training(one_device, result)


OVERFLOW_SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from keras_derain import training
    from keras_derain.presets import resolve

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    config = resolve("pix2pix", epochs=1, base_channels=4, crop_size=32, batch_size=4)
    with strategy.scope():
        gan = training.build_gan(config, mixed_precision=True)
    rainy = np.random.default_rng(0).uniform(-1, 1, (4, 32, 32, 3)).astype("float32")
    clean = rainy.copy()
    rainy[2:] *= 1e5  # only the second replica's half overflows float16 (max 65504)
    networks = {"generator": (gan.generator, gan.g_optimizer), "discriminator": (gan.discriminator, gan.d_optimizer)}
    before = {name: [v.numpy().copy() for v in model.trainable_variables] for name, (model, _) in networks.items()}
    scales = {name: float(optimizer.dynamic_scale.numpy()) for name, (_, optimizer) in networks.items()}
    gan.fit(tf.data.Dataset.from_tensors((rainy, clean)), epochs=1, verbose=0)
    report = {}
    for name, (model, optimizer) in networks.items():
        after = [v.numpy() for v in model.trainable_variables]
        report[name] = {"unchanged": all(np.array_equal(a, b) for a, b in zip(before[name], after)),
                        "scale": [scales[name], float(optimizer.dynamic_scale.numpy())]}
    print(json.dumps(report))
    """
)


def test_overflow_on_one_replica_skips_the_step_on_all():
    # Mixed precision over two replicas: an inf gradient on one replica must skip
    # the update everywhere and halve the loss scale (Keras' own optimizer trusts
    # replica 0 and writes NaN into the weights).
    result = subprocess.run([sys.executable, "-c", OVERFLOW_SCRIPT], cwd=REPO, capture_output=True, text=True,
                            timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for name in ("generator", "discriminator"):
        assert report[name]["unchanged"], report
        before, after = report[name]["scale"]
        assert after == before / 2, report


@pytest.mark.parametrize("count", [1, 2])
def test_train_py_with_workers_writes_one_run_folder(tmp_path, count):
    # train.py as the README launches it on several machines, here processes: all
    # train, only the chief (worker 0) writes the run folder. A cluster of one is
    # a usual first try, and Keras treats it as no cluster.
    workers = [f"localhost:{port}" for port in free_ports(count)]
    argv = [sys.executable, "train.py", "--strategy", "multiworker", "--name", "shared", "--runs-dir",
            str(tmp_path), "--base-channels", "4", "--crop-size", "32", "--batch-size", "4",
            "--steps-per-epoch", "2", "--epochs", "2", "--quiet"]
    processes = []
    for index in range(count):
        tf_config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "CUDA_VISIBLE_DEVICES": ""}
        processes.append(subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True))
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    for process, output in zip(processes, outputs):
        assert process.returncode == 0, output[-3000:]
        assert "validation PSNR (32 pairs, RGB)" in output
    run = tmp_path / "shared"
    assert json.loads((run / "config.json").read_text())["runtime"]["replicas"] == count
    assert len((run / "history.csv").read_text().splitlines()) == 3  # header + 2 epochs, written once
    assert sorted(path.name for path in (run / "samples").iterdir()) == ["epoch_001.png", "epoch_002.png"]
    assert (run / "best.keras").is_file() and (run / "summary.json").is_file()
    # Both workers' backups are gone after a finished run.
    assert not list(run.glob("backup*"))


def test_one_mixed_precision_step_on_cpu(tmp_path):
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

    # The run folder holds the generator as float32 (same weights), not as a float16 model.
    checkpoint = GeneratorCheckpoint(tmp_path)
    checkpoint.set_model(gan)
    checkpoint.on_epoch_end(0, {"val_psnr": 20.0})
    saved = keras.saving.load_model(tmp_path / "best.keras")
    assert is_mixed(gan.generator) and not is_mixed(saved)
    for a, b in zip(gan.generator.get_weights(), saved.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(saved.predict(rainy, verbose=0), gan.generator.predict(rainy, verbose=0), atol=0.02)


def test_switches_resolve_to_off_on_a_cpu():
    if training.has_gpu():
        pytest.skip("a GPU is present")
    assert training.resolve_switch("jit", "auto") is False
    assert training.resolve_switch("jit", "on") is True
    with pytest.raises(ValueError, match="--jit must be one of"):
        training.resolve_switch("jit", "maybe")
    with pytest.raises(ValueError, match="--strategy 'tpu' is unknown"):
        training.make_strategy("tpu")
