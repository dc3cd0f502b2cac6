"""Generators and discriminators: the Pix2Pix U-Net and PatchGAN, and the study's cGAN.

Each builder returns a functional ``keras.Model`` of stock Keras layers (shared
blocks in `keras_derain.models.layers`), so ``.keras`` files load without
custom objects.
"""

from keras_derain.models.cgan import cgan_discriminator, cgan_generator
from keras_derain.models.precision import float32_copy
from keras_derain.models.restoration import has_mask, mask_model, restoration_generator, ungated_model
from keras_derain.models.pix2pix import (
    patchgan_receptive_field,
    pix2pix_discriminator,
    pix2pix_generator,
    required_multiple,
)

__all__ = [
    "pix2pix_generator",
    "pix2pix_discriminator",
    "cgan_generator",
    "cgan_discriminator",
    "required_multiple",
    "patchgan_receptive_field",
    "float32_copy",
    "restoration_generator",
    "mask_model",
    "ungated_model",
    "has_mask",
]
