"""One training run, from a resolved config to a folder of results (what train.py calls).

A run folder ``runs/NAME/`` holds:

- ``config.json``: the resolved options, what differs from the preset, the data,
  the versions and the command;
- ``history.csv``: one row per epoch (Keras ``CSVLogger``);
- ``best.keras`` (best validation PSNR) and ``last.keras``: the generator (with
  ``--ema-momentum``, the moving average of its weights, which is also what is validated);
- ``samples/epoch_NNN.png``: rainy | generated | clean on a fixed validation batch;
- ``plots.png``: G and D losses, PSNR, discriminator accuracy, L1;
- ``summary.json``: the validation PSNR of the rainy input and of the best generator;
- ``backup/`` while training (Keras ``BackupAndRestore``), so ``--resume``
  continues a killed run from its last completed epoch.

Under ``--strategy multiworker`` every worker trains, but only the chief writes
these files; the other workers keep just their own ``backup-worker-N/``, so that
a shared file system is never written by two processes at once and every worker
can resume.

With ``init`` a run starts from a trained generator instead of random weights
(fine-tuning): see :func:`load_init` and :func:`init_config`.

Example:
    >>> from keras_derain.presets import resolve
    >>> from keras_derain.training import train
    >>> config = resolve("pix2pix", builtin_data=True, epochs=1, steps_per_epoch=2)
    >>> summary = train(config, "runs/demo")  # doctest: +SKIP
"""

import dataclasses
import json
import math
import platform
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from keras_derain import __version__
from keras_derain.atomic import atomic_output
from keras_derain.callbacks import (
    GeneratorCheckpoint,
    GeneratorEMA,
    HistoryPlots,
    PairValidation,
    SampleGrid,
    StopOnNaN,
    to_uint8,
)
from keras_derain.gan import DerainGAN
from keras_derain.metrics import psnr
from keras_derain.models import float32_copy, required_multiple
from keras_derain.models.restoration import has_global_head
from keras_derain.presets import LOSS_WEIGHTS, PRESETS, differences, resolve

VALIDATION_SEED = 20180618  # fixed: every run and every epoch validates on the same pairs
VALIDATION_PAIRS = 32
# The restoration generator's levels below half resolution: inputs are multiples of 2**(4 + 1).
RESTORATION_DEPTH = 4
RESTORATION_MULTIPLE = 2 ** (RESTORATION_DEPTH + 1)
SAMPLE_ROWS = 4


class TrainingError(RuntimeError):
    """A run that cannot go on: NaN losses, a resume without a run, ..."""


def check_config(config):
    """Raise ValueError, naming the flag, for an option no run can use."""
    positive = ("epochs", "batch_size", "crop_size", "base_channels", "g_steps")
    for name in positive:
        value = config[name]
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value!r}")
    if config["steps_per_epoch"] is not None and config["steps_per_epoch"] <= 0:
        raise ValueError(f"--steps-per-epoch must be a positive integer, got {config['steps_per_epoch']!r}")
    for name in ("g_lr", "d_lr"):
        if not config[name] >= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {config[name]!r}")
    for name in ("real_label", "fake_label"):
        if not 0.0 <= config[name] <= 1.0:
            raise ValueError(f"--{name.replace('_', '-')} must be in [0, 1], got {config[name]!r}")
    if not 0.0 <= config["label_flip"] <= 0.5:
        raise ValueError(f"--label-flip must be in [0, 0.5], got {config['label_flip']!r}")
    for name in ("affine", "global_head", "ungated_weight"):
        if config.get(name, False) and config["arch"] != "restoration":
            raise ValueError(f"--{name.replace('_', '-')} is an option of --arch restoration, not {config['arch']}")
    train_only = config.get("train_only")
    if train_only is not None and (not isinstance(train_only, str) or not train_only):
        raise ValueError(f"--train-only must be a non-empty layer-name prefix, got {train_only!r}")
    if not 0.0 <= config.get("ema_momentum", 0.0) < 1.0:
        raise ValueError(f"--ema-momentum must be in [0, 1), got {config['ema_momentum']!r}")
    if not 0.0 <= config["beta_1"] < 1.0:
        raise ValueError(f"--beta-1 must be in [0, 1), got {config['beta_1']!r}")
    if not isinstance(config["seed"], int) or not 0 <= config["seed"] < 2**32:
        raise ValueError(f"--seed must be an integer in [0, 2**32), got {config['seed']!r}")
    for name in ("l1_weight", *LOSS_WEIGHTS):
        if not config.get(name, 0.0) >= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0, got {config[name]!r}")
    multiple = RESTORATION_MULTIPLE if config["arch"] == "restoration" else 16
    if config["crop_size"] < multiple or config["crop_size"] % multiple:
        raise ValueError(
            f"--crop-size must be a multiple of {multiple} (at least {multiple}) for --arch {config['arch']}, "
            f"got {config['crop_size']}"
        )


def unet_depth(crop_size):
    """The deepest U-Net (at most Pix2Pix's 8) whose bottleneck is whole for ``crop_size``."""
    depth = 0
    while depth < 8 and crop_size % 2 ** (depth + 1) == 0:
        depth += 1
    return depth


def build_models(config, init=None):
    """The generator and discriminator that ``config["arch"]`` names.

    With ``init`` (a :class:`InitModel`) the generator is its generator, and
    the discriminator its discriminator if it holds one, else a fresh one.
    """
    from keras_derain import models

    keras.utils.set_random_seed(config["seed"])
    discriminator = init.discriminator if init is not None else None
    if config["arch"] == "restoration":
        generator = None if init else models.restoration_generator(
            base_channels=config["base_channels"], depth=RESTORATION_DEPTH, affine=config.get("affine", False),
            global_head=config.get("global_head", False),
        )
        if init is not None and config.get("global_head", False) and not has_global_head(init.generator):
            generator = with_global_head(init.generator)
        discriminator = discriminator or models.pix2pix_discriminator(base_channels=2 * config["base_channels"])
    elif config["arch"] == "pix2pix":
        generator = None if init else models.pix2pix_generator(
            base_channels=config["base_channels"], depth=unet_depth(config["crop_size"])
        )
        discriminator = discriminator or models.pix2pix_discriminator(base_channels=config["base_channels"])
    else:
        generator = None if init else models.cgan_generator(
            image_size=config["crop_size"],
            base_channels=config["base_channels"],
            latent_dim=config["latent_dim"],
        )
        discriminator = discriminator or models.cgan_discriminator(
            image_size=config["crop_size"], base_channels=config["base_channels"]
        )
    return generator or init.generator, discriminator


def with_global_head(generator):
    """A copy of a restoration ``generator`` with the global head added, zero-initialised.

    Every layer of ``generator`` keeps its weights, so the copy computes exactly
    what ``generator`` does until its new head is trained (``train.py --init
    MODEL --global-head``).

    Example:
        >>> import numpy as np
        >>> from keras_derain.models import restoration_generator
        >>> plain = restoration_generator(base_channels=4, depth=2)
        >>> rainy = np.random.uniform(-1, 1, (1, 32, 32, 3)).astype("float32")
        >>> bool(np.allclose(with_global_head(plain)(rainy), plain(rainy)))
        True
    """
    from keras_derain import models
    from keras_derain.models.restoration import has_affine_head

    names = {layer.name for layer in generator.layers}
    depth = sum(1 for name in names if name.startswith("down"))
    blocks = sum(1 for name in names if name.startswith("enc0_block") and name.endswith("_add"))
    grown = models.restoration_generator(
        base_channels=int(generator.get_layer(FIRST_LAYERS["restoration"]).filters), depth=depth, blocks=blocks,
        affine=has_affine_head(generator), global_head=True, name=generator.name,
    )
    for layer in generator.layers:
        grown.get_layer(layer.name).set_weights(layer.get_weights())
    return grown


def freeze_except(generator, prefix):
    """Let only the layers of ``generator`` whose names start with ``prefix`` train (``--train-only``).

    Raises:
        ValueError: no layer's name starts with ``prefix``.
    """
    if not any(layer.name.startswith(prefix) and layer.weights for layer in generator.layers):
        raise ValueError(f"--train-only {prefix}: no layer of generator {generator.name!r} with weights starts with it")
    for layer in generator.layers:
        layer.trainable = layer.name.startswith(prefix)


def all_trainable(model):
    """Set every layer of ``model`` trainable again (a file remembers ``--train-only``'s freezing)."""
    for layer in model.layers:
        layer.trainable = True
    return model


# -- starting from a trained generator ----------------------------------------------------

# Generators this trainer builds, by the model name their builders give them.
GENERATOR_ARCHS = {"pix2pix_generator": "pix2pix", "cgan_generator": "cgan", "restoration_generator": "restoration"}
# The layer whose filters are a generator's base channels, per arch.
FIRST_LAYERS = {"pix2pix": "encoder_1_conv", "cgan": "encoder_1_conv", "restoration": "stem"}


@dataclasses.dataclass
class InitModel:
    """What a run starts from: a generator, maybe a discriminator, and what they are.

    Attributes:
        source: as given: ``"default"``, a built-in name, or a path.
        path: the file it was read from.
        generator: the generator (float32).
        discriminator: the discriminator of a whole saved ``DerainGAN``, else None.
        arch, base_channels: the preset and base channels the generator was built with.
        image_size: a cGAN generator's fixed input side, else None.
        latent_dim: a cGAN generator's latent size, else None.
    """

    source: str
    path: Path
    generator: keras.Model
    discriminator: keras.Model
    arch: str
    base_channels: int
    image_size: int = None
    latent_dim: int = None

    @property
    def multiple(self):
        """What crop sides must be multiples of (the generator's stride)."""
        return required_multiple(self.generator)


def builtin_models():
    """``{name: path}`` of the shipped generators (`keras_derain.inference.builtin_models`)."""
    from keras_derain.inference import builtin_models as shipped

    return shipped()


def init_path(init):
    """The file that ``--init`` names: a built-in name (``default``, ``lens``, ...) or a ``.keras`` / ``.npz`` path."""
    path = Path(init)
    if path.suffix in (".keras", ".npz"):
        if not path.is_file():
            raise ValueError(f"--init {init}: no such file")
        return path
    builtin = builtin_models()
    if str(init) in builtin:
        return builtin[str(init)]
    raise ValueError(
        f"--init {init}: neither a built-in model ({', '.join(sorted(builtin)) or 'none shipped'}) "
        "nor a .keras or .npz file"
    )


def load_init(init):
    """Read the generator (and, from a whole saved ``DerainGAN``, the discriminator) to start from.

    Args:
        init: ``"default"`` (the shipped generator), a built-in name (any
            ``NAME.f16.npz`` in ``keras_derain/weights``), a ``.keras`` file (a
            generator or a whole ``DerainGAN``) or a compact ``.npz``
            (`keras_derain.compact`); an :class:`InitModel` is returned as it is.

    Returns:
        An :class:`InitModel`; its architecture is read from the file.

    Raises:
        ValueError: one line naming ``--init`` and the file: missing, unreadable,
            or not a generator this trainer builds.

    Example:
        >>> from keras_derain.models import pix2pix_generator
        >>> pix2pix_generator(base_channels=4, depth=5).save("tiny.keras")
        >>> init = load_init("tiny.keras")
        >>> init.arch, init.base_channels, init.multiple, init.discriminator
        ('pix2pix', 4, 32, None)
    """
    if isinstance(init, InitModel):
        return init
    from keras_derain.compact import load_compact
    from keras_derain.inference import one_line

    path = init_path(init)
    try:
        model = load_compact(path) if path.suffix == ".npz" else keras.saving.load_model(path, compile=False)
    except Exception as error:  # zip, JSON, HDF5 and Keras each raise their own types for a bad file
        raise ValueError(f"--init {path}: cannot be loaded ({one_line(error)})") from None
    discriminator = None
    if isinstance(model, DerainGAN):
        model, discriminator = model.generator, float32_copy(model.discriminator)
    arch = GENERATOR_ARCHS.get(model.name)
    if arch is None:
        raise ValueError(
            f"--init {path}: holds a model named {model.name!r}, not one of the generators this trainer builds "
            f"({', '.join(GENERATOR_ARCHS)})"
        )
    generator = all_trainable(float32_copy(model))
    cgan = arch == "cgan"
    return InitModel(
        source=str(init), path=path, generator=generator, discriminator=discriminator, arch=arch,
        base_channels=int(generator.get_layer(FIRST_LAYERS[arch]).filters),
        image_size=int(generator.input_shape[1]) if cgan else None,
        latent_dim=int(generator.get_layer("latent").units) if cgan else None,
    )


def check_init(config, init):
    """Raise ValueError, naming the flag, where ``config`` contradicts the generator in ``init``."""
    if config["arch"] != init.arch:
        raise ValueError(f"--arch {config['arch']} contradicts --init {init.source}: it holds a {init.arch} generator")
    from keras_derain.models.restoration import has_affine_head

    if init.arch == "restoration" and has_global_head(init.generator) and not config.get("global_head", False):
        raise ValueError(f"--global-head off contradicts --init {init.source}: its generator has a global head")
    if init.arch == "restoration" and config.get("affine", False) != has_affine_head(init.generator):
        raise ValueError(
            f"--affine {'on' if config.get('affine') else 'off'} contradicts --init {init.source}: its generator "
            f"{'has' if has_affine_head(init.generator) else 'has no'} affine head"
        )
    if config["base_channels"] != init.base_channels:
        raise ValueError(
            f"--base-channels {config['base_channels']} contradicts --init {init.source}: "
            f"its generator has {init.base_channels}"
        )
    if init.image_size is not None and config["crop_size"] != init.image_size:
        raise ValueError(
            f"--crop-size {config['crop_size']} contradicts --init {init.source}: "
            f"its cgan generator takes {init.image_size}x{init.image_size} images"
        )
    if config["crop_size"] % init.multiple:
        raise ValueError(
            f"--crop-size {config['crop_size']} must be a multiple of {init.multiple} "
            f"for the generator of --init {init.source}"
        )
    if init.latent_dim is not None and config.get("latent_dim") != init.latent_dim:
        raise ValueError(
            f"latent_dim {config.get('latent_dim')} contradicts --init {init.source}: "
            f"its generator has {init.latent_dim}"
        )


def init_config(init, arch=None, *, penalties=False, builtin_data=False, **overrides):
    """The resolved options of a run starting from ``init``: the preset of its arch, its base channels.

    Like :func:`keras_derain.presets.resolve`, with the architecture read from
    the file: ``arch`` and the overrides may only repeat what the file says.

    Args:
        init: what :func:`load_init` takes, or an :class:`InitModel`.
        arch: the preset, or None for the file's.
        penalties, builtin_data, overrides: as for ``resolve``.

    Raises:
        ValueError: a flag that contradicts the file, naming the flag.

    Example:
        >>> from keras_derain.models import pix2pix_generator
        >>> pix2pix_generator(base_channels=4, depth=5).save("tiny.keras")
        >>> config = init_config("tiny.keras", epochs=2, crop_size=64)
        >>> config["arch"], config["base_channels"], config["crop_size"]
        ('pix2pix', 4, 64)
        >>> init_config("tiny.keras", base_channels=8)
        Traceback (most recent call last):
        ValueError: --base-channels 8 contradicts --init tiny.keras: its generator has 4
    """
    init = load_init(init)
    if arch is not None and arch != init.arch:
        raise ValueError(f"--arch {arch} contradicts --init {init.source}: it holds a {init.arch} generator")
    from_file = {"base_channels": init.base_channels}
    if init.arch == "cgan":
        from_file.update(crop_size=init.image_size, latent_dim=init.latent_dim)
    if init.arch == "restoration":
        from keras_derain.models.restoration import has_affine_head

        from_file["affine"] = has_affine_head(init.generator)
        if has_global_head(init.generator):
            from_file["global_head"] = True
    given = {name: value for name, value in overrides.items() if value is not None}
    config = resolve(init.arch, penalties=penalties, builtin_data=builtin_data, **{**from_file, **given})
    check_init(config, init)
    return config


def _policy_copy(model, policy):
    """A clone of a float32 ``model`` computing under ``policy``, its output layers kept float32 (as built)."""
    outputs = {tensor._keras_history.operation.name for tensor in model.outputs}

    def rebuild(layer):
        dtype = "float32" if layer.name in outputs else policy
        return layer.__class__.from_config({**layer.get_config(), "dtype": dtype})

    copy = keras.models.clone_model(model, clone_function=rebuild)
    copy.set_weights(model.get_weights())
    return copy


def _materialise(dataset, pairs, skip_dry=False, max_tries=20):
    """The first ``pairs`` pairs of a dataset, as two numpy arrays.

    ``skip_dry`` drops synthetic pairs whose crop caught no drop (rainy == clean):
    their input PSNR is infinite and they measure nothing.
    """
    rainy, clean = [], []
    for rainy_image, clean_image in dataset.unbatch().take(pairs * (max_tries if skip_dry else 1)):
        rainy_image, clean_image = rainy_image.numpy(), clean_image.numpy()
        if skip_dry and np.array_equal(rainy_image, clean_image):
            continue
        rainy.append(rainy_image)
        clean.append(clean_image)
        if len(rainy) == pairs:
            break
    if not rainy:
        raise ValueError("no validation pair has raindrops; raise the raindrop density or --crop-size")
    return np.stack(rainy), np.stack(clean)


def wants_mask(config):
    """Whether the training data must carry drop masks (a mask term is weighed in)."""
    return config.get("mask_weight", 0.0) > 0


def build_data(config, data=None, val=None, clean_dir=None, *, real_fraction=None, colour_match=False,
               lens_fraction=None, drop_options=None, lens_drop_options=None, reference_side=None,
               lens_reference_side=None, sky_fraction=None, storm_share=None, lens_storm_share=None):
    """Training dataset, fixed validation arrays and a description of the data.

    Args:
        config: resolved options.
        data, val: folders of real pairs (``find_pairs``); None for synthetic drops only.
        clean_dir: clean photos to render drops on (None: the built-in photos).
        real_fraction: with ``data``, the share of real pairs in the stream; the
            rest are synthetic drops on ``clean_dir``. None: 0.5 when
            ``clean_dir`` is given, else 1 (real pairs only).
        colour_match: match each real clean image's colour to its rainy partner
            (`keras_derain.data.pairs.colour_match`).
        lens_fraction: share of synthetic batches in the lens style
            (``synthetic_dataset``'s option; None: its default, 0.25).
        drop_options: a dict of window-style ``RaindropOptions`` overrides for the
            rendered drops (None: the defaults). The lens style is unchanged.
        lens_drop_options: a dict of overrides of the lens style
            (``raindrops.LENS_STYLE``) for the lens batches (None: the style as it is).
        reference_side: the short side (px) that the rendered drops' sizes are
            fractions of (``synthetic_dataset``'s option; None: its default, 480,
            Raindrop's frames). A larger side draws larger, blurrier drops.
        lens_reference_side: the same for the lens batches alone (None: as
            ``reference_side``): drops on a lens sit closer to the camera.
        sky_fraction: share of the rendered crops given a procedural cloudy sky
            (``synthetic_dataset``'s option; None: 0, none).
        storm_share, lens_storm_share: share of those skies that are storms, in
            all batches and in the lens batches (``synthetic_dataset``'s options;
            None: ``sky.STORM_SHARE``, and the lens batches as the others).

    Returns:
        ``(train_dataset, steps_per_epoch, (val_rainy, val_clean), description)``.
    """
    from keras_derain.data import find_pairs, paired_dataset
    from keras_derain.data.synthetic import DEFAULT_LENS_FRACTION, clean_image_paths, synthetic_dataset

    crop, batch, seed = config["crop_size"], config["batch_size"], config["seed"]
    steps = config["steps_per_epoch"]
    mask = wants_mask(config)
    rendering = {"return_mask": mask, "lens_fraction": lens_fraction, "lens_options": lens_drop_options or None}
    for name, side in (("reference_side", reference_side), ("lens_reference_side", lens_reference_side)):
        if side is None:
            continue
        if isinstance(side, bool) or not isinstance(side, int) or side < 32:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"{flag} must be a whole number of pixels, at least 32, got {side!r}")
        rendering[name] = side
    skies = {"sky_fraction": sky_fraction, "storm_share": storm_share, "lens_storm_share": lens_storm_share}
    for name, share in skies.items():
        if share is not None:
            from keras_derain.data.sky import check_sky_fraction

            check_sky_fraction(share, "--" + name.replace("_", "-"))
            rendering[name] = share
    if drop_options:
        # With options, synthetic_dataset's lens share would default to 0: keep its usual default.
        rendering.update(raindrop_options=drop_options,
                         lens_fraction=DEFAULT_LENS_FRACTION if lens_fraction is None else lens_fraction)
    if data is not None:
        if real_fraction is None:
            real_fraction = 0.5 if clean_dir is not None else 1.0
        if not 0.0 < real_fraction <= 1.0:
            raise ValueError(f"--real-fraction must be in (0, 1], got {real_fraction!r}")
        mixed = real_fraction < 1.0
        data = Path(data)
        split = "train" if (data / "train").is_dir() else None
        if val is None and (data / "test_a").is_dir():
            val, val_split = data, "test_a"
        elif val is None:
            val, val_split = data, split
            print(f"warning: no --val given and {data} has no test_a/; validating on the training pairs")
        else:
            val_split = "test_a" if (Path(val) / "test_a").is_dir() else None
        train_pairs = len(find_pairs(data, split))
        train = paired_dataset(
            data, split, crop_size=crop, batch_size=batch, shuffle=True, augment=True,
            seed=seed, repeat=steps is not None or mixed, return_mask=mask, colour_match=colour_match,
        )
        if steps is None and train_pairs < batch and not mixed:
            raise ValueError(f"--data {data}: {train_pairs} pairs, fewer than --batch-size {batch}")
        validation = paired_dataset(val, val_split, crop_size=crop, batch_size=1, seed=VALIDATION_SEED)
        val_pairs = len(find_pairs(val, val_split))
        description = {"kind": "pairs", "train": str(data), "train_split": split, "train_pairs": train_pairs,
                       "val": str(val), "val_split": val_split, "colour_match": colour_match}
        if mixed:
            paths = clean_image_paths(clean_dir)
            rendered = synthetic_dataset(paths, crop_size=crop, batch_size=batch, seed=seed, **rendering)
            train = mix(train, rendered, real_fraction, batch, seed)
            # One pass over the real pairs per epoch, on average.
            steps = steps or max(1, math.ceil(train_pairs / (batch * real_fraction)))
            description.update(kind="mixed", real_fraction=real_fraction, lens_fraction=lens_fraction,
                               drop_options=drop_options or None, lens_drop_options=lens_drop_options or None,
                               reference_side=reference_side, lens_reference_side=lens_reference_side,
                               sky_fraction=sky_fraction, storm_share=storm_share, lens_storm_share=lens_storm_share,
                               clean=str(clean_dir) if clean_dir else "built-in",
                               train_images=[path.name for path in paths])
    else:
        paths = clean_image_paths(clean_dir)
        held_out = max(1, len(paths) // 8) if len(paths) > 1 else 0
        train_paths, val_paths = paths[: len(paths) - held_out], paths[len(paths) - held_out :] or paths
        train = synthetic_dataset(train_paths, crop_size=crop, batch_size=batch, seed=seed, **rendering)
        validation = synthetic_dataset(val_paths, crop_size=crop, batch_size=1, seed=VALIDATION_SEED)
        steps = steps or max(1, math.ceil(len(train_paths) / batch))
        val_pairs = VALIDATION_PAIRS
        description = {"kind": "synthetic", "clean": str(clean_dir) if clean_dir else "built-in",
                       "lens_fraction": lens_fraction, "drop_options": drop_options or None,
                       "lens_drop_options": lens_drop_options or None, "reference_side": reference_side,
                       "lens_reference_side": lens_reference_side, "sky_fraction": sky_fraction,
                       "storm_share": storm_share, "lens_storm_share": lens_storm_share,
                       "train_images": [path.name for path in train_paths],
                       "val_images": [path.name for path in val_paths]}
    val_rainy, val_clean = _materialise(
        validation, min(val_pairs, VALIDATION_PAIRS), skip_dry=description["kind"] == "synthetic"
    )
    description["val_pairs"] = len(val_rainy)
    return train, steps, (val_rainy, val_clean), description


def mix(real, rendered, real_fraction, batch_size, seed):
    """Batches drawn pair by pair from two batched streams: real with probability ``real_fraction``.

    Both streams must repeat and yield the same structure (``(rainy, clean)``
    or ``(rainy, clean, mask)``); the draw is seeded, so a run sees the same mix again.

    Example:
        >>> import tensorflow as tf
        >>> ones = tf.data.Dataset.from_tensors(tf.ones([4, 2])).repeat()
        >>> zeros = tf.data.Dataset.from_tensors(tf.zeros([4, 2])).repeat()
        >>> batch = next(iter(mix(ones, zeros, 0.5, 8, seed=0)))
        >>> batch.shape
        TensorShape([8, 2])
    """
    mixed = tf.data.Dataset.sample_from_datasets(
        [real.unbatch(), rendered.unbatch()], weights=[real_fraction, 1.0 - real_fraction], seed=seed
    )
    return mixed.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def real_pairs(root, split=None):
    """The pairs under ``root`` as two lists of whole uint8 photos (validation on real pairs)."""
    from keras_derain.data import find_pairs, read_rgb

    pairs = find_pairs(root, split)
    return [read_rgb(rainy) for rainy, _ in pairs], [read_rgb(clean) for _, clean in pairs]


STRATEGIES = ("default", "mirrored", "multiworker")
SWITCHES = ("auto", "on", "off")


def has_gpu():
    return bool(tf.config.list_physical_devices("GPU"))


def make_strategy(name):
    """A ``tf.distribute`` strategy by name.

    ``multiworker`` reads the cluster from the ``TF_CONFIG`` environment variable
    (see the README); it must be created before any other TensorFlow op.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"--strategy {name!r} is unknown; choose one of: {', '.join(STRATEGIES)}")


def worker_index(distribution):
    """``None`` on the chief (or without a cluster), else this worker's index in ``TF_CONFIG``.

    The chief is the ``chief`` task if the cluster names one, else worker 0, as in
    TensorFlow's multi-worker guide.
    """
    resolver = getattr(distribution, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return None
    if resolver.task_type == "chief":
        return None
    if resolver.task_type == "worker" and resolver.task_id == 0 and "chief" not in resolver.cluster_spec().jobs:
        return None
    return int(resolver.task_id)


def resolve_switch(name, value):
    """``auto`` -> on with a GPU, off on a CPU (XLA was measured slower on a 2-core CPU)."""
    if value not in SWITCHES:
        raise ValueError(f"--{name} must be one of {', '.join(SWITCHES)}, got {value!r}")
    return has_gpu() if value == "auto" else value == "on"


class _BackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore; a saved state that cannot be read is a TrainingError naming it."""

    def on_train_begin(self, logs=None):
        try:
            super().on_train_begin(logs)
        except (OSError, ValueError) as error:  # h5py's OSError; JSONDecodeError is a ValueError
            detail = (str(error).strip().splitlines() or [type(error).__name__])[0]
            raise TrainingError(
                f"{self.backup_dir}: the saved training state cannot be read ({detail}); "
                "start a new run with another --name"
            ) from None


class ReplicaLossScaleOptimizer(keras.optimizers.LossScaleOptimizer):
    """Keras' dynamic loss scaling, with one skip-or-apply decision for all replicas.

    Keras' LossScaleOptimizer checks the gradients for inf/NaN before they are
    summed across replicas, then (in the merge-call path TensorFlow takes on
    CPUs) trusts replica 0's answer: an overflow on another replica goes into
    the weights as NaN, and on GPUs the replicas could take different branches
    around the all-reduce. Here the replicas agree first (an all-reduce of the
    flag), so all of them skip the step and halve the scale together.
    """

    def check_finite(self, grads):
        finite = super().check_finite(grads)
        context = tf.distribute.get_replica_context()
        if context is None or context.num_replicas_in_sync == 1:
            return finite
        # tf.distribute reduces by SUM or MEAN only: count the replicas that overflowed.
        overflowed = context.all_reduce("SUM", tf.cast(tf.logical_not(finite), tf.float32))
        return overflowed < 0.5


def _optimizers(config, mixed_precision):
    # Keras' own weight averaging: the g optimizer keeps the moving average; GeneratorEMA swaps it in.
    ema = config.get("ema_momentum", 0.0)
    g_optimizer = keras.optimizers.Adam(config["g_lr"], beta_1=config["beta_1"], use_ema=ema > 0,
                                        ema_momentum=ema if ema > 0 else 0.99)
    d_optimizer = keras.optimizers.Adam(config["d_lr"], beta_1=config["beta_1"])
    if mixed_precision:
        # Dynamic loss scaling in both, so small float16 gradients do not vanish.
        return ReplicaLossScaleOptimizer(g_optimizer), ReplicaLossScaleOptimizer(d_optimizer)
    return g_optimizer, d_optimizer


def build_gan(config, *, mixed_precision=False, jit_compile=False, init=None):
    """Models, DerainGAN and its compile, in the current strategy's scope.

    With ``mixed_precision`` the layers compute in float16 under the
    ``mixed_float16`` policy, while the generator's output (its final tanh
    layer has dtype float32), the logits fed to the losses, and the losses stay
    in float32. ``init`` (what :func:`load_init` takes) gives the starting networks;
    under ``mixed_precision`` they are cloned to compute in float16 the same way.
    """
    if init is not None:
        init = load_init(init)
        check_init(config, init)
    previous_policy = keras.config.dtype_policy()
    policy = "mixed_float16" if mixed_precision else "float32"
    keras.config.set_dtype_policy(policy)
    try:
        generator, discriminator = build_models(config, init)
        if init is not None and mixed_precision:
            generator = _policy_copy(generator, policy)
            if init.discriminator is not None:
                discriminator = _policy_copy(discriminator, policy)
    finally:
        keras.config.set_dtype_policy(previous_policy)
    if config.get("train_only"):
        freeze_except(generator, config["train_only"])
    gan = DerainGAN(generator, discriminator, seed=config["seed"])
    g_optimizer, d_optimizer = _optimizers(config, mixed_precision)
    gan.compile(
        g_optimizer,
        d_optimizer,
        l1_weight=config["l1_weight"],
        real_label=config["real_label"],
        fake_label=config["fake_label"],
        label_flip_rate=config["label_flip"],
        g_steps=config["g_steps"],
        jit_compile=jit_compile,
        **{name: config.get(name, default) for name, default in LOSS_WEIGHTS.items()},
    )
    return gan


def _versions():
    return {"keras_derain": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "python": platform.python_version()}


def write_config(run_dir, config, description, runtime=None, start=None):
    """``config.json``: resolved options, what differs from the preset, data, runtime, versions, command.

    ``start`` says what the run started from and how it stops: ``{"init": ..., "patience": ...}``.
    """
    record = {
        "config": config,
        "start": start or {"init": None, "patience": None},
        "runtime": runtime or {},
        "differs_from_preset": {
            name: {"value": config[name], "preset": preset} for name, preset in differences(config).items()
        },
        "data": description,
        "versions": _versions(),
        "command": " ".join(sys.argv),
    }
    with atomic_output(Path(run_dir) / "config.json") as path:
        path.write_text(json.dumps(record, indent=2, default=str) + "\n")


def read_config(run_dir):
    """The resolved options of an earlier run (for ``--resume``)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise TrainingError(f"{run_dir}: no config.json; not a run folder")
    return json.loads(path.read_text())


def extend_run(run_dir, epochs):
    """Give an unfinished run ``epochs`` epochs in all, in its ``config.json``; returns the new record.

    The one change a resume takes: a run that is still improving goes on. The change is written
    to the record (``extended``), and fewer epochs than are already done is refused.

    Example::

        record = extend_run("runs/restoration-20261130", 30)
    """
    record = read_config(run_dir)
    if epochs <= 0:
        raise TrainingError(f"--epochs must be a positive integer, got {epochs}")
    done = _epochs_logged(run_dir)
    if epochs < done:
        raise TrainingError(f"--epochs {epochs}: {run_dir} has already done {done} epochs")
    before = record["config"]["epochs"]
    if epochs != before:
        record["config"]["epochs"] = epochs
        record.setdefault("extended", []).append({"epochs": [before, epochs], "after_epoch": done,
                                                  "date": time.strftime("%Y-%m-%d %H:%M:%S")})
        preset = record.get("differs_from_preset", {}).get("epochs", {}).get("preset")
        if preset is not None:
            record["differs_from_preset"]["epochs"]["value"] = epochs
        with atomic_output(Path(run_dir) / "config.json") as path:
            path.write_text(json.dumps(record, indent=2, default=str) + "\n")
    return record


def mean_psnr(generated, clean):
    """Mean PSNR (dB, RGB) of [-1, 1] images."""
    return float(np.mean(psnr((np.asarray(generated) + 1) / 2, (np.asarray(clean) + 1) / 2, 1.0)))


def train(
    config,
    run_dir,
    *,
    data=None,
    val=None,
    clean_dir=None,
    resume=False,
    verbose="auto",
    strategy="default",
    mixed_precision="auto",
    jit="auto",
    init=None,
    real_fraction=None,
    colour_match=False,
    lens_fraction=None,
    drop_options=None,
    patience=None,
    lens_drop_options=None,
    keep_epochs=False,
    reference_side=None,
    lens_reference_side=None,
    sky_fraction=None,
    storm_share=None,
    lens_storm_share=None,
):
    """Train a DerainGAN as ``config`` says and write the run folder ``run_dir``.

    Args:
        config: resolved options (see :func:`keras_derain.presets.resolve`, or
            :func:`init_config` with ``init``).
        run_dir: the run folder; created if missing.
        data, val: Raindrop-layout folders of pairs (see ``find_pairs``); ``None``
            for synthetic drops on ``clean_dir`` or on the built-in photos. With
            real pairs to validate on, the best generator is the one with the
            highest PSNR-Y on the whole ``val`` photos (`PairValidation`).
        clean_dir: a folder of clean photos to render drops on.
        resume: continue from the last completed epoch in ``run_dir/backup``.
        strategy: "default", "mirrored" (all local GPUs) or "multiworker"
            (``TF_CONFIG``); ``batch_size`` is the global batch, split across replicas.
        mixed_precision, jit: "auto" (on with a GPU, off on a CPU), "on" or "off".
        init: start from this generator (see :func:`load_init`) instead of
            random weights; the discriminator starts fresh unless it is a whole
            saved ``DerainGAN``.
        real_fraction, colour_match, lens_fraction, drop_options, lens_drop_options,
        reference_side, lens_reference_side, sky_fraction, storm_share,
        lens_storm_share: see :func:`build_data`.
        patience: stop after this many epochs without a better validation score.
        keep_epochs: keep every epoch's generator as ``run_dir/epochs/epNNN.keras``
            (for averaging the last few, ``benchmarks/average_checkpoints.py``).

    Returns:
        dict with the validation PSNR of the rainy input and of the best
        generator; with real pairs also PSNR-Y and SSIM-Y on the whole photos.

    Raises:
        TrainingError: the losses became NaN (the best model so far is kept).
    """
    check_config(config)
    if patience is not None and (not isinstance(patience, int) or patience <= 0):
        raise ValueError(f"--patience must be a positive integer, got {patience!r}")
    if init is not None:
        init = load_init(init)
        check_init(config, init)
    distribution = make_strategy(strategy)
    mixed_precision = resolve_switch("mixed-precision", mixed_precision)
    jit_compile = resolve_switch("jit", jit)
    replicas = distribution.num_replicas_in_sync
    if config["batch_size"] % replicas:
        raise ValueError(f"--batch-size {config['batch_size']} must be a multiple of the {replicas} replicas")
    run_dir = Path(run_dir)
    worker = worker_index(distribution)
    chief = worker is None
    backup = run_dir / ("backup" if chief else f"backup-worker-{worker}")
    ended = (run_dir / "summary.json").exists() or _epochs_logged(run_dir) > 0
    if resume and not backup.exists():
        if ended:
            raise TrainingError(f"{run_dir}: nothing to resume (no {backup.name}/: the run has ended)")
        print(f"{run_dir}: no epoch was completed; starting from the first")
    if not resume and backup.exists():
        raise TrainingError(f"{run_dir} holds an unfinished run; continue it with --resume or pick a new --name")
    if not resume and chief and ended:
        raise TrainingError(f"{run_dir} holds the results of a run; pick a new --name")
    run_dir.mkdir(parents=True, exist_ok=True)
    train_data, steps, (val_rainy, val_clean), description = build_data(
        config, data, val, clean_dir, real_fraction=real_fraction, colour_match=colour_match,
        lens_fraction=lens_fraction, drop_options=drop_options, lens_drop_options=lens_drop_options,
        reference_side=reference_side, lens_reference_side=lens_reference_side, sky_fraction=sky_fraction,
        storm_share=storm_share, lens_storm_share=lens_storm_share,
    )
    runtime = {"strategy": strategy, "replicas": replicas, "mixed_precision": mixed_precision,
               "jit_compile": jit_compile, "gpus": len(tf.config.list_physical_devices("GPU"))}
    start = {"init": None, "patience": patience, "keep_epochs": keep_epochs}
    if init is not None:
        start["init"] = {"model": init.source, "path": str(init.path), "arch": init.arch,
                         "discriminator": "from the file" if init.discriminator is not None else "fresh"}
    if chief and (not resume or not (run_dir / "config.json").exists()):
        write_config(run_dir, config, description, runtime, start)

    with distribution.scope():
        gan = build_gan(config, mixed_precision=mixed_precision, jit_compile=jit_compile, init=init)
    generator = gan.generator
    pair_validation = None
    if description["kind"] != "synthetic":
        # Whole photos, as evaluate.py scores them; a fixed-size generator gets the validation crops.
        whole = generator.input_shape[1] is None
        pair_validation = PairValidation(
            *(real_pairs(description["val"], description["val_split"]) if whole
              else (list(to_uint8(val_rainy)), list(to_uint8(val_clean))))
        )
    validation = tf.data.Dataset.from_tensor_slices((val_rainy, val_clean)).batch(config["batch_size"])
    # Each worker reads its share of the batches: the pipelines are built from
    # tensors, not files, so shard by data (said outright, without the AUTO
    # policy's failed attempt to shard by file and its warning).
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    train_data, validation = train_data.with_options(options), validation.with_options(options)
    stop_on_nan = StopOnNaN()
    callbacks = [
        # Restores weights, optimizer states and the epoch counter on --resume.
        # double_checkpoint keeps the previous epoch's state beside the latest,
        # so a kill while the latest is being written still resumes.
        _BackupAndRestore(str(backup), double_checkpoint=True, delete_checkpoint=True),
        stop_on_nan,
    ]
    if config.get("ema_momentum", 0.0) > 0:
        # After the backup (it keeps the raw weights), before what validates and saves the generator.
        callbacks.append(GeneratorEMA())
    monitor = "val_psnr"
    if pair_validation is not None:
        callbacks.append(pair_validation)  # before the callbacks that read its scores from the logs
        monitor = "val_psnr_y"
    # On every worker, so that --patience stops them all at one epoch; only the chief writes.
    checkpoint = GeneratorCheckpoint(run_dir, monitor=monitor, patience=patience, save=chief,
                                     keep_epochs=keep_epochs)
    if chief:
        callbacks += [
            keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
            checkpoint,
            SampleGrid(val_rainy[:SAMPLE_ROWS], val_clean[:SAMPLE_ROWS], run_dir / "samples"),
            HistoryPlots(run_dir / "history.csv", run_dir / "plots.png"),
        ]
    else:
        callbacks.append(checkpoint)
    started = time.time()
    gan.fit(
        train_data,
        epochs=config["epochs"],
        steps_per_epoch=steps,
        validation_data=validation,
        callbacks=callbacks,
        shuffle=False,  # the tf.data pipeline shuffles
        verbose=verbose,
    )
    if stop_on_nan.stopped:
        raise TrainingError(
            f"training stopped: {stop_on_nan.stopped}; try a lower --g-lr/--d-lr "
            f"(the best generator so far is in {run_dir / 'best.keras'})"
        )

    best_path = run_dir / "best.keras"
    best = keras.saving.load_model(best_path) if chief and best_path.exists() else generator
    # Plain calls, not predict: under a multi-worker strategy predict would shard
    # the pairs across workers.
    generated = np.concatenate([
        keras.ops.convert_to_numpy(best(val_rainy[start : start + config["batch_size"]], training=False))
        for start in range(0, len(val_rainy), config["batch_size"])
    ])
    summary = {
        "val_pairs": len(val_rainy),
        "rainy_psnr": mean_psnr(val_rainy, val_clean),
        "derained_psnr": mean_psnr(generated, val_clean),
        "train_seconds": round(time.time() - started, 1),
    }
    summary["gain_db"] = summary["derained_psnr"] - summary["rainy_psnr"]
    if pair_validation is not None:
        summary.update(pair_validation.summary(best))
    if chief and checkpoint.best_epoch is not None:
        summary["best_epoch"] = checkpoint.best_epoch
        summary["stopped_early"] = checkpoint.stopped_epoch is not None
    if chief:
        with atomic_output(run_dir / "summary.json") as path:
            path.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _epochs_logged(run_dir):
    """How many epochs ``history.csv`` records (0 without one)."""
    path = Path(run_dir) / "history.csv"
    if not path.exists():
        return 0
    return max(0, sum(1 for line in path.read_text().splitlines() if line.strip()) - 1)


def newest_run(runs_dir="runs"):
    """The most recently modified run folder under ``runs_dir`` that can be resumed.

    That is one with a ``backup/``, or one that ended before its first epoch
    (a config but no epoch in ``history.csv``).
    """
    candidates = [
        path.parent for path in Path(runs_dir).glob("*/config.json")
        if (path.parent / "backup").is_dir() or _epochs_logged(path.parent) == 0
    ]
    if not candidates:
        raise TrainingError(f"{runs_dir}: no unfinished run to resume")
    return max(candidates, key=lambda path: path.stat().st_mtime)


__all__ = ["train", "build_models", "build_data", "check_config", "TrainingError", "PRESETS", "InitModel",
           "load_init", "init_config", "mix"]
