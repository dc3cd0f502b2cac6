"""The study's and the papers' training defaults, in one place.

- ``cgan``: the study's conditional GAN: BCE only, Adam lr 1e-3 for both
  networks, batch 8, 20 epochs, 32 base channels, 128-d latent.
- ``pix2pix``: Isola et al.: BCE-with-logits + 100 x L1, Adam lr 2e-4 with
  beta_1 = 0.5, batch 8, 50 epochs (the study's count).
- ``restoration``: ours, the mask-guided residual generator
  (`keras_derain.models.restoration_generator`) against Pix2Pix's PatchGAN
  (with twice the generator's base channels), with the study's soft labels and
  faster generator, Charbonnier + 1 - SSIM + FFT L1 + mask BCE beside a light
  adversarial term (weight 1 against 100 for the pixel term: AttentiveGAN's
  ratio), trained on the renderer's exact masks.
- ``PENALTIES``: the study's answer to a discriminator that overpowers the
  generator: soft labels 0.9 / 0.1 and a faster generator (G lr 5e-4, D lr 2e-4).

Example:
    >>> from keras_derain.presets import resolve
    >>> config = resolve("pix2pix", penalties=True, epochs=5)
    >>> config["g_lr"], config["real_label"], config["epochs"]
    (0.0005, 0.9, 5)
"""

import copy

# Options every preset has; train.py exposes each as a flag.
PRESETS = {
    "cgan": {
        "arch": "cgan",
        "epochs": 20,
        "batch_size": 8,
        "g_lr": 1e-3,
        "d_lr": 1e-3,
        "beta_1": 0.5,
        "l1_weight": 0.0,
        "real_label": 1.0,
        "fake_label": 0.0,
        "label_flip": 0.0,
        "g_steps": 1,
        "crop_size": 256,
        "base_channels": 32,
        "latent_dim": 128,
        "steps_per_epoch": None,
        "seed": 0,
    },
    "pix2pix": {
        "arch": "pix2pix",
        "epochs": 50,
        "batch_size": 8,
        "g_lr": 2e-4,
        "d_lr": 2e-4,
        "beta_1": 0.5,
        "l1_weight": 100.0,
        "real_label": 1.0,
        "fake_label": 0.0,
        "label_flip": 0.0,
        "g_steps": 1,
        "crop_size": 256,
        "base_channels": 32,
        "latent_dim": None,
        "steps_per_epoch": None,
        "seed": 0,
    },
}

# Weights of the generator's loss terms (keras_derain.losses). The study's
# models use only the adversarial term and L1; the others are 0 there.
LOSS_WEIGHTS = {
    "adversarial_weight": 1.0,
    "charbonnier_weight": 0.0,
    "ssim_weight": 0.0,
    "fft_weight": 0.0,
    "mask_weight": 0.0,
    "nce_weight": 0.0,
    "ungated_weight": 0.0,
}
for _preset in PRESETS.values():
    _preset.update(LOSS_WEIGHTS)
    # Momentum of the exponential moving average of the generator's weights
    # (Polyak averaging, Keras' ``use_ema``); 0: off, as in the study.
    _preset["ema_momentum"] = 0.0
    # The restoration generator's local affine head (``restoration_generator(affine=True)``).
    _preset["affine"] = False
    # The restoration generator's global head (``restoration_generator(global_head=True)``).
    _preset["global_head"] = False
    # Train only the generator's layers whose names start with this (None: all of them).
    _preset["train_only"] = None

PRESETS["restoration"] = {
    "arch": "restoration",
    "epochs": 50,
    "batch_size": 8,
    "g_lr": 5e-4,
    "d_lr": 2e-4,
    "beta_1": 0.5,
    "l1_weight": 0.0,
    "real_label": 0.9,
    "fake_label": 0.1,
    "label_flip": 0.0,
    "g_steps": 1,
    "crop_size": 128,
    "base_channels": 16,
    "latent_dim": None,
    "steps_per_epoch": None,
    "seed": 0,
    "adversarial_weight": 1.0,
    "charbonnier_weight": 100.0,
    "ssim_weight": 40.0,
    "fft_weight": 10.0,
    "mask_weight": 20.0,
    "nce_weight": 0.0,
    "ungated_weight": 0.0,
    "ema_momentum": 0.0,
    "affine": False,
    "global_head": False,
    "train_only": None,
}

PENALTIES = {"real_label": 0.9, "fake_label": 0.1, "g_lr": 5e-4, "d_lr": 2e-4}

# The built-in synthetic default is a demo: 128x128 crops, 16 steps per epoch
# (800 steps for Pix2Pix); about 10 minutes on an earlier 2-core AVX-512 CPU,
# about 20 on the current AVX2 one (README, Quickstart).
# In so few steps the plain preset (lr 2e-4) does not yet beat the rainy input
# (measured: -0.06 dB), while the study's penalties do (about +1.5 dB at 800
# steps), so the Pix2Pix demo uses them. Applied only when no --data or --clean-dir is
# given, and a flag still overrides each value.
BUILTIN_DATA_DEFAULTS = {
    "pix2pix": {"crop_size": 128, "steps_per_epoch": 16, **PENALTIES},
    "cgan": {"crop_size": 128, "steps_per_epoch": 16},
    "restoration": {"crop_size": 128, "steps_per_epoch": 16},
}


def resolve(arch, *, penalties=False, builtin_data=False, **overrides):
    """The preset for ``arch``, with penalties and the user's overrides applied.

    ``None`` overrides are ignored (an unset flag). Returns a new dict.

    Raises:
        ValueError: an unknown ``arch`` or option name.
    """
    if arch not in PRESETS:
        raise ValueError(f"unknown arch {arch!r}; choose one of {', '.join(PRESETS)}")
    config = copy.deepcopy(PRESETS[arch])
    if penalties:
        config.update(PENALTIES)
    if builtin_data:
        config.update(BUILTIN_DATA_DEFAULTS[arch])
    for name, value in overrides.items():
        if name not in config:
            raise ValueError(f"unknown option {name!r} for arch {arch!r}")
        if value is not None:
            config[name] = value
    return config


def differences(config):
    """Options of ``config`` that differ from the plain preset of its arch: ``{name: preset_value}``."""
    preset = PRESETS[config["arch"]]
    return {name: preset[name] for name in preset if config.get(name) != preset[name]}
